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
import statistics
import sys
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from valbench_plugins.valuers.tmc_shapley import TMCShapleyValuer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _exp1 import exp1_task  # noqa: E402
from _summary import emit, row as summary_row  # noqa: E402
from batched_training import port_fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-fits", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--permutations-per-batch", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="seed 0, 80 fits, eager")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.max_fits, args.no_compile = [0], 80, True
    per_fit, widths = [], []
    record_widths(widths)
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
        per_fit.append(out.info["seconds"] / max(out.fits, 1))
    import torch

    from valbench.training.models import build_model, tensor

    # a fit's cost grows with its rows, and TMC's prefix fits are mostly short: the port
    # trains as many rows as TMC's fits did on average
    width = max(1, round(statistics.mean(widths)))
    x, y = tensor(task.source.x[:width], torch.float32, "cpu"), tensor(task.source.y[:width], torch.long, "cpu")
    port = []
    for _ in range(2):  # the same utility fit, one model at a time as the DVGS port trains it
        t = time.perf_counter()
        port_fit(build_model(task.learner, task.seed), x, y, 200, 1e-4)
        port.append(time.perf_counter() - t)
    print(f"DVGS port, one model at a time on {width} rows (the mean of TMC's fits): "
          f"{statistics.median(port):.3f} s per fit; TMC here {statistics.median(per_fit):.3f} s per fit "
          f"(full-data models and compilation included)")
    emit("tmc_budget", [summary_row("TMC-Shapley exp1, s per fit", statistics.median(per_fit),
                                    f"DVGS port, one model at a time on as many rows ({width})",
                                    statistics.median(port))])


def record_widths(widths: list[int]) -> None:
    """Append the number of rows of every fit the utility makes to ``widths`` (this process)."""
    from valbench.training.utility import Utility

    scores = Utility.scores

    def recording(self, index, weight, *args, **kwargs):
        widths.extend((weight > 0).sum(dim=1).tolist())
        return scores(self, index, weight, *args, **kwargs)

    Utility.scores = recording


if __name__ == "__main__":
    main()
