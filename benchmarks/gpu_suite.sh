#!/usr/bin/env bash
# valbench's GPU check, in one go on a machine that has never seen the repo (no network).
#
#   OUT=/some/empty/folder bash benchmarks/gpu_suite.sh          # on the GPU machine, from the repo root
#   OUT=/tmp/gpu-out PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh --cpu   # rehearsal, tiny sizes
#
# Parts, each under its own time limit; one that fails or times out is logged and the
# suite goes on: install (pip, offline) -> environment -> pytest -m gpu -> DVGS engine speed
# (benchmarks/dvgs_speed.py) -> exp1 on ADULT (20% flipped labels, 1000 source / 400 target)
# with every built-in valuer that runs on it (cheap ones on 5 seeds, retraining ones on
# seed 0 under stated budgets) -> exp4 (feature noise) -> seed 1 of the retraining ones if
# time is left -> valbench table 1, 2, 3.
# Writes into $OUT (at most 6 files): summary.md and summary.json (environment, every
# part's status, exit code and seconds, pytest's result, DVGS step times, per valuer:
# scores, times, fits, budget stops, GPU peak, engine/training used, errors), logs.txt
# (every part's full output), tables.md, gpu-exp1.sqlite (the results store) and
# gpu-exp1.values.tgz (its values folder; unpack beside the store). The summary is
# rewritten after every part, so $OUT is useful even if the suite is killed.
# Knobs: PYTHON (default python3), GPU_SUITE_DEVICE=cpu (same as --cpu),
# GPU_SUITE_BUDGET_S (default 390: the suite's wall-clock budget; late parts shrink or are skipped).
# Exit status 1 if any part failed or timed out (the summary says which), else 0.
set -u  # no -e: a failing part must not end the suite
: "${OUT:?set OUT to the (empty) folder for the results}"
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)  # absolute: the suite runs from the repo root
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_SUITE_DEVICE:-cuda}
[[ ${1:-} == --cpu ]] && DEVICE=cpu
BUDGET=${GPU_SUITE_BUDGET_S:-390}
RESERVE=20  # seconds kept back for the tables and the summary
WORK=$(mktemp -d)  # the store and per-part logs live here; $OUT gets copies (no many-file folders in $OUT)
trap 'rm -rf "$WORK"' EXIT
STORE=$WORK/gpu-exp1.sqlite
export PYTHONUNBUFFERED=1  # a part stopped at its limit still leaves its output in the log
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} VALBENCH_OFFLINE=1 VALBENCH_CACHE=$WORK/cache
VB=("$PY" -m valbench.cli)  # not the console script: its folder may not be on PATH
NPROC=$(nproc)

if [[ $DEVICE == cuda ]]; then
  DATA=adult  # defaults are exp1: 1000 source, 400 target; labels: rate 0.2
  CHEAP_SEEDS=5
  CHEAP="random,knn-shapley,target-loss,confident-learning,data-oob,data-oob[learner=logistic],dvgs"
  # retraining valuers: stated budgets (max_seconds stops cleanly between fits and is recorded);
  # loo before tmc-shapley in the one worker: it pays the torch.compile that tmc-shapley reuses
  COMPILED_DVRL="dvrl[iterations=500,compile=true,max_seconds=25]"  # seed 0 only: the parts' limits hold no more
  RETRAIN="dvrl[iterations=500,max_seconds=25],loo[max_seconds=45],tmc-shapley[max_fits=1000,max_seconds=30],data-oob[learner=mlp,max_seconds=20]"
  EXP4="dvgs[restarts=10],random"
  JOB_TIMEOUT=90  # hard stop per job (the budgets above are the soft ones)
  SPEED=(--device cuda --threads "$NPROC" --repeats 3 --sizes 1000,10000,100000 --engines opacus)
  PYTEST=(-q -m gpu -p no:cacheprovider)
else  # rehearsal: the same parts and code paths, tiny sizes (the retraining valuers compile off, to keep it short; dvrl[compile=true] rehearses its compiled step)
  DATA="adult[n_source=200,n_target=100]"
  CHEAP_SEEDS=2
  CHEAP="random,knn-shapley,target-loss,confident-learning,data-oob,data-oob[learner=logistic,n_bags=50],dvgs[epochs=10]"
  COMPILED_DVRL="dvrl[iterations=5,inner_epochs=5,compile=true,max_seconds=30]"
  RETRAIN="dvrl[iterations=5,inner_epochs=5,max_seconds=30],loo[steps=20,compile=false,max_seconds=30],tmc-shapley[steps=20,max_fits=300,compile=false,max_seconds=30],data-oob[learner=mlp,n_bags=10,steps=20,max_seconds=20]"
  EXP4="dvgs[restarts=2,epochs=10],random"
  JOB_TIMEOUT=60
  SPEED=(--device cpu --threads "$NPROC" --repeats 1 --sizes 1000 --engines opacus --ae-source 500)
  PYTEST=(-q -m gpu -p no:cacheprovider --collect-only)  # the gpu tests need CUDA: only collected here
fi

summarize() { "$PY" benchmarks/gpu_suite_report.py summarize "$WORK" "$STORE" "$OUT" || echo "(summary failed)"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$WORK/parts.tsv"; summarize; }

# part NAME CAP CMD...: run CMD for at most CAP seconds (less when the budget runs out; skipped
# under 20 s), its output in $WORK/NAME.log and appended to $OUT/logs.txt, its outcome recorded.
part() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - RESERVE - SECONDS)) t0=$SECONDS rc status note=""
  local limit=$((cap < left ? cap : left))
  if ((limit < 20)); then record "$name" skipped "" 0 "only ${left} s of the budget left"; return; fi
  echo ">>> [${SECONDS}s] $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    1) [[ $name == exp* ]] && status=partial note="some jobs did not finish ok" || status=failed ;;
    124 | 137) status=timeout note="stopped at its limit of ${limit} s" ;;
    *) status=failed ;;
  esac
  # a failure's note: the last line of its output (the one-line error, or pytest's result)
  [[ $status == failed ]] && note=$(grep -v '^[[:space:]]*$' "$WORK/$name.log" | tail -n 1 | tr '\t|' '  ' | cut -c1-200)
  { printf '\n===== %s: %s (exit %s, %s s)\n' "$name" "$*" "$rc" "$((SECONDS - t0))"; cat "$WORK/$name.log"; } >> "$OUT/logs.txt"
  tail -n 3 "$WORK/$name.log" | cut -c1-200
  record "$name" "$status" "$rc" "$((SECONDS - t0))" "$note"
}

# valbench run into the store, then a copy of the store (and its values as one tgz) into $OUT
exp() {
  local name=$1 cap=$2; shift 2
  part "$name" "$cap" "${VB[@]}" run --device "$DEVICE" --workers 1 --timeout "$JOB_TIMEOUT" --results "$STORE" "$@"
  "$PY" benchmarks/gpu_suite_report.py snapshot "$STORE" "$OUT" || echo "(snapshot failed)"
}

: > "$OUT/logs.txt"
echo "valbench GPU suite: device $DEVICE, budget ${BUDGET}s, python $PY, work $WORK"

# 1. install without network or dependencies (they are on the machine; opacus is not, and is
#    imported only by dvgs[engine=opacus]); a plain install where editable fails; else into a
#    folder of our own on PYTHONPATH; else (no pip at all) the source tree on PYTHONPATH with
#    setuptools' metadata beside it (plugins are found through the distribution's entry points)
PIP=(timeout 180 "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --no-index)
install() {
  "${PIP[@]}" -e . && return 0
  echo "editable install failed; trying a plain one"
  "${PIP[@]}" . && return 0
  echo "plain install failed; installing into $WORK/site"
  "${PIP[@]}" --target "$WORK/site" . && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH} && return 0
  echo "pip failed; using the source tree on PYTHONPATH with setuptools' egg-info"
  mkdir -p "$WORK/shim" && ln -sfn "$PWD/plugins" "$WORK/shim/valbench_plugins" &&
    timeout 120 "$PY" -c "from setuptools import setup; setup()" -q egg_info --egg-base "$WORK/shim" || return 1
  export PYTHONPATH=$PWD:$WORK/shim${PYTHONPATH:+:$PYTHONPATH}
}
t0=$SECONDS
install > "$WORK/install.log" 2>&1
rc=$?
"${VB[@]}" plugins >> "$WORK/install.log" 2>&1 || rc=$((rc ? rc : 1))
{ printf '\n===== install (exit %s)\n' "$rc"; cat "$WORK/install.log"; } >> "$OUT/logs.txt"
record install "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" "$((SECONDS - t0))" \
  "$(grep -o 'installing into.*\|trying a plain one\|using the source tree.*' "$WORK/install.log" | tail -n 1)"

# 2. environment (nvidia-smi -L, torch, CUDA, GPU, CPUs) into env.json, then the summary
part env 60 "$PY" benchmarks/gpu_suite_report.py env "$WORK/env.json"

# 3. the tests marked gpu
part pytest-gpu 150 "$PY" -m pytest "${PYTEST[@]}"

# 4. DVGS engine speed (timings CUDA-synchronised inside: valbench.timing.timed)
part dvgs-speed 90 "$PY" benchmarks/dvgs_speed.py "${SPEED[@]}"

# 5. exp1: every built-in valuer that runs on ADULT (apc needs LINCS' replicate annotation:
#    valbench refuses it on adult before any work, so it is not run)
exp exp1-cheap 120 --datasets "$DATA" --corruptions labels --seeds "$CHEAP_SEEDS" --valuers "$CHEAP"
exp exp1-retrain-seed0 180 --datasets "$DATA" --corruptions labels --seeds 1 --valuers "$RETRAIN,$COMPILED_DVRL"
exp exp4-features 60 --datasets "$DATA" --corruptions features --seeds "$CHEAP_SEEDS" --valuers "$EXP4"
exp exp1-retrain-seed1 120 --datasets "$DATA" --corruptions labels --seeds 2 --valuers "$RETRAIN"  # seed 0 is skipped: done

# 6. tables, and the final summary (also printed: the end of the output is what one sees first)
RESERVE=0 BUDGET=$((SECONDS + 30))  # the tables always run, in the time kept back for them
part tables 30 "$PY" benchmarks/gpu_suite_report.py tables "$STORE" "$OUT/tables.md"
"$PY" benchmarks/gpu_suite_report.py snapshot "$STORE" "$OUT" || echo "(snapshot failed)"
summarize
rm -f "$OUT"/*.tmp
echo
cat "$OUT/summary.md" 2>/dev/null
echo "suite done in ${SECONDS}s; files in $OUT:"
ls -la "$OUT"
! cut -f2 "$WORK/parts.tsv" | grep -qx 'failed\|timeout'  # exit 1 if any part failed or timed out
