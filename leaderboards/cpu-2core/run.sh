#!/usr/bin/env bash
# The CPU leaderboard: what fits on the 2-core development machine (no GPU), then its report.
# Run from the repository root with the venv active: bash leaderboards/cpu-2core/run.sh
# Budgets: TMC-Shapley at 1000 model fits, DVRL at 100 of 2000 outer iterations, LOO on
# 2 seeds, filtering with 1 replicate (the protocol's 2 double its cost); all stated in
# the valuer and metric labels of every table.
set -uo pipefail
HERE=leaderboards/cpu-2core
STORE=$HERE/results.sqlite
run() { echo "+ valbench run $*" >&2; /usr/bin/time -f "%e s" valbench run --results "$STORE" --workers 1 "$@"; }
DETECT="corruption-auroc,corruption-ap,corruption-found,filtering[replicates=1]"
# exp1: ADULT, 20% flipped labels (Table 1, Figures 2-3)
run --datasets adult --corruptions labels --seeds 5 --metrics "$DETECT" \
    --valuers random,dvgs,knn-shapley,target-loss,confident-learning,data-oob
# exp4: ADULT, feature noise max 3 (Table 2, Figure 4)
run --datasets adult --corruptions features --seeds 5 --metrics "noise-spearman,filtering[replicates=1]" \
    --valuers "random,dvgs[restarts=10],knn-shapley,target-loss"
# exp1 with the retraining baselines, at stated budgets
run --datasets adult --corruptions labels --seeds 5 --metrics "$DETECT" --valuers "tmc-shapley[max_fits=1000]"
run --datasets adult --corruptions labels --seeds 3 --metrics "$DETECT" --valuers "dvrl[iterations=100]"
run --datasets adult --corruptions labels --seeds 2 --metrics "$DETECT" --valuers loo
# offline stand-ins: Fashion-MNIST CNN features for CIFAR10 (exp3), PBMC expression for LINCS (exp8)
run --datasets fashion-mnist --corruptions labels --seeds 3 \
    --valuers "random,dvgs[restarts=1,source_batch=100],knn-shapley,target-loss"
run --mode unsupervised --datasets pbmc --corruptions "features[max=5]" --seeds 3 --valuers "random,dvgs"
valbench report --results "$STORE" --out "$HERE/report" --html
valbench export --results "$STORE" -o "$HERE/results.csv"
