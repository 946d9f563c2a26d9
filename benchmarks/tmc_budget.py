"""How TMC-Shapley's corrupted-label AUROC grows with its budget on ADULT exp1.

One run per seed with a cap; after every wave of permutations it prints the
permutations, model fits and seconds so far and the AUROC(corrupted, -values) of the
values at that point. Permutations are drawn from the seed's stream and the utility is
deterministic (shared dropout masks), so the values after P permutations are exactly
what a run capped at P permutations would return: one run gives the whole curve.

    .venv/bin/python benchmarks/tmc_budget.py --seeds 0 --max-fits 10000 [--max-seconds S] [--tolerance 0.01]
        [--permutations-per-batch 4] [--no-compile]

A fit budget (not seconds) makes the curve independent of the machine's load.
exp1 (ADULT, 20% flipped labels) is described in docs/protocol.md.
"""
from __future__ import annotations

import argparse
import time

from sklearn.metrics import roc_auc_score

from valbench.api import plan
from valbench.grid import build_experiment
from valbench.plugins import build_registry
from valbench.runner import task_for
from valbench_plugins.valuers.tmc_shapley import TMCShapleyValuer


def exp1_task(seed: int):
    exp = build_experiment({"datasets": ["adult"], "corruptions": ["labels"], "valuers": ["random"], "seeds": [seed]})
    jobs, cache = plan(exp, build_registry(), "cpu")
    cell = cache.cell(jobs[0])
    return task_for(jobs[0], cell), cell.truth.values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-fits", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--permutations-per-batch", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    for seed in args.seeds:
        task, truth = exp1_task(seed)
        t0 = time.perf_counter()
        print(f"seed {seed}: tolerance {args.tolerance}, max_fits {args.max_fits}, max_seconds {args.max_seconds}, "
              f"{args.permutations_per_batch} permutations per batch", flush=True)
        print(f"{'perms':>6s} {'fits':>8s} {'seconds':>8s} {'auroc':>7s}", flush=True)

        def report(perms, values, budget):
            print(f"{perms:6d} {budget.fits:8d} {time.perf_counter() - t0:8.0f} {roc_auc_score(truth, -values):7.3f}",
                  flush=True)

        val = TMCShapleyValuer(tolerance=args.tolerance, max_fits=args.max_fits, max_seconds=args.max_seconds,
                               permutations_per_batch=args.permutations_per_batch, compile=not args.no_compile)
        out = val.run(task, on_wave=report)
        print(f"seed {seed} done: {out.info}", flush=True)


if __name__ == "__main__":
    main()
