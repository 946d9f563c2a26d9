"""CPU seconds per utility fit at exp1 size (ADULT, 1000 source) by how many rows a model
trains on: LOO's 1000, beta-shapley's Beta(16, 1) prefixes (mean 177 over its 354-position
walk) and class-wise-shapley's ~500 (half the other class plus the in-class prefix).

    .venv/bin/python benchmarks/prefix_fit_cost.py [--steps 50] [--models 16]

Each line: 16 models trained as one batched fit (compile off) on random row sets of that
width; seconds are scaled from ``--steps`` to the utility's 200 steps. CPU time, not wall
time, so that a machine shared with other jobs distorts it less (it still does).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import Utility

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _exp1 import exp1_task  # noqa: E402
from _summary import emit, row as summary_row  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="20 steps, 8 models")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.models = 20, 8
    task, _ = exp1_task(0)
    util = Utility(task, FullBatchRecipe(args.steps, 1e-4, "shared", False), models_per_batch=args.models)
    g = torch.Generator().manual_seed(0)
    cpu_per_fit = {}
    for label, width in (("loo", 1000), ("beta-shapley", 177), ("class-wise-shapley", 500), ("loo", 1000)):
        index = torch.stack([torch.randperm(util.n, generator=g)[:width] for _ in range(args.models)])
        cpu, wall = time.process_time(), time.perf_counter()
        util.scores(index, torch.ones(args.models, width))
        scale = 200 / args.steps / args.models
        cpu_per_fit[label] = scale * (time.process_time() - cpu)  # the second loo (warm) replaces the first
        print(f"{label:>18s} {width:5d} rows: {scale * (time.process_time() - cpu):6.2f} CPU s per fit, "
              f"{scale * (time.perf_counter() - wall):6.2f} wall s per fit", flush=True)
    emit("prefix_fit_cost", [summary_row(f"{label} fit ({w} rows), CPU s", cpu_per_fit[label],
                                         "a LOO fit (1000 rows), the same batched training", cpu_per_fit["loo"])
                             for label, w in (("beta-shapley", 177), ("class-wise-shapley", 500))])


if __name__ == "__main__":
    main()
