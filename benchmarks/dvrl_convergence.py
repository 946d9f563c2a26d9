"""How DVRL's corrupted-label AUROC grows with its outer iterations (exp1: ADULT, 20% flipped).

Runs the ``dvrl`` valuer on the same prepared cells as ``valbench run`` (paired seeds) and
records AUROC(corrupted, -values) every ``--every`` iterations, plus the wall time per
iteration (exp1: docs/protocol.md). Usage:

    python benchmarks/dvrl_convergence.py --seeds 0 --iterations 2000 --every 100
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from valbench.grid import build_experiment, expand
from valbench.plugins import build_registry
from valbench.runner import CellCache, task_for
from valbench_plugins.valuers.dvrl import DVRLValuer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402

PAPER_S_PER_ITERATION = 9.9 * 60 / 2000  # the DVGS paper: 9.9 min for 2000 iterations on one RTX 3090


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="adult")
    ap.add_argument("--corruption", default="labels")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", default="fixed")
    ap.add_argument("--quick", action="store_true", help="seed 0, 10 iterations")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.iterations, args.every = "0", 10, 5
    per_iteration = []
    torch.set_num_threads(args.threads)
    registry = build_registry()
    for seed in (int(s) for s in args.seeds.split(",")):
        (job,) = expand(build_experiment({"datasets": args.dataset, "corruptions": args.corruption,
                                          "valuers": "random", "seeds": [seed]}), registry, "cpu")
        cell = CellCache().cell(job)
        task, truth = task_for(job, cell), np.asarray(cell.truth.values)
        start = time.perf_counter()

        def record(i: int, values) -> None:
            if i % args.every == 0:
                auroc = roc_auc_score(truth, -values())
                print(f"seed {seed} iteration {i:5d} auroc {auroc:.4f} "
                      f"elapsed {time.perf_counter() - start:7.1f} s", flush=True)

        out = DVRLValuer(iterations=args.iterations, baseline=args.baseline).value(task, on_iteration=record)
        wall = time.perf_counter() - start
        print(f"seed {seed} final auroc {roc_auc_score(truth, -out.values):.4f} fits {out.fits} "
              f"wall {wall:.1f} s ({wall / max(out.info['iterations'], 1):.3f} s/iteration) info {out.info}", flush=True)
        per_iteration.append(wall / max(out.info["iterations"], 1))
    emit("dvrl_convergence", [summary_row("DVRL exp1, s per outer iteration", float(np.median(per_iteration)),
                                          "paper: one RTX 3090 (stated, not measured here)", PAPER_S_PER_ITERATION)])


if __name__ == "__main__":
    main()
