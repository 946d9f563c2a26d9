"""Wall clock, process CPU time and corrupted-label AUROC of the gradient-based valuers
(``influence``, ``tracin``) on ADULT exp1 (1000 source samples, 20% flipped labels),
with ``target-loss`` (one fit of the learner) as the reference for the cost of a fit.

    .venv/bin/python benchmarks/gradient_valuers.py --seeds 0 1 2 [--valuers 'influence,tracin[score=self]']

On a shared machine prefer the CPU column: wall clock grows with the other jobs' load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from valbench.grid import specs_from
from valbench.params import resolve
from valbench.plugins import build_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _exp1 import exp1_task  # noqa: E402
from _summary import emit, row as summary_row  # noqa: E402

DEFAULT = ("target-loss,influence,influence[solver=arnoldi],influence[solver=arnoldi,score=self],"
           "influence[parameters=last],tracin,tracin[score=self]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--valuers", default=DEFAULT, help="comma-separated valuer specs")
    ap.add_argument("--quick", action="store_true", help="seed 0; target-loss, influence and tracin")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.valuers = [0], "target-loss,influence,tracin"
    torch.set_num_threads(1)
    registry = build_registry()
    configs = [resolve(registry, "valuer", s) for s in specs_from(args.valuers, "valuers")]
    print(f"{'seed':>4s} {'valuer':45s} {'wall s':>7s} {'cpu s':>7s} {'auroc':>6s}", flush=True)
    cpu_s: dict[str, list[float]] = {}
    configs[0].build().value(exp1_task(args.seeds[0])[0])  # untimed: the process' first-call costs
    for seed in args.seeds:
        task, truth = exp1_task(seed)
        for config in configs:
            valuer = config.build()
            t, c = time.perf_counter(), time.process_time()
            out = valuer.value(task)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            auroc = roc_auc_score(truth, -out.values)
            print(f"{seed:4d} {config.label:45s} {wall:7.1f} {cpu:7.1f} {auroc:6.3f}", flush=True)
            cpu_s.setdefault(config.label, []).append(cpu)
    med = {k: statistics.median(v) for k, v in cpu_s.items()}
    if "target-loss" in med:  # each valuer's cost in fits of the learner
        emit("gradient_valuers", [summary_row(f"{k} on exp1, CPU s", v, "target-loss (one fit of the learner)",
                                              med["target-loss"]) for k, v in med.items() if k != "target-loss"])


if __name__ == "__main__":
    main()
