"""Filtering speed: the paper's minibatch retrains one at a time against every subset's
model trained at once (``filtering[training=batched]``), side by side on one task.

The task is exp1's shape (ADULT: 1000 source rows of 108 features, 20% flipped labels,
the paper's MLP 108-100-100-2 with its recipe, Adam 1e-4, batch 250, 200 epochs) on
synthetic data; values are the ideal ranking, so the curves can be compared too.
Prints per training mode the median wall time of ``--repeats`` scorings (each 19 models
per replicate) and the two curves' largest difference.

    python benchmarks/filtering_speed.py --device cpu --repeats 3
    python benchmarks/filtering_speed.py --device cuda
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from valbench.testing import easy_task
from valbench.types import Learner, Truth
from valbench_plugins.metrics.filtering import Filtering

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--replicates", type=int, default=1)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="1 repeat of 20 epochs")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 20
    task, mask = easy_task(n_source=1000, n_target=100, n_features=108, device=args.device)
    task = task.__class__(**{**task.__dict__, "learner": Learner("mlp", 108, 2, epochs=args.epochs)})
    test = easy_task(seed=1, n_source=10, n_target=2000, n_features=108)[0].target
    values = -mask + 1e-6 * np.arange(len(mask))
    rows = {}
    for training in ("batched", "minibatch"):
        metric = Filtering(training=training, replicates=args.replicates)
        times, out = [], None
        for _ in range(args.repeats):
            torch.manual_seed(0)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = metric.score(values, Truth("mask", mask), task=task, test=test)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        rows[training] = {"median_s": statistics.median(times), "all_s": times, "curve": out}
    diff = max(abs(rows["batched"]["curve"][k] - rows["minibatch"]["curve"][k]) for k in rows["batched"]["curve"])
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"filtering, exp1 shape (1000 x 108, MLP 108-100-100-2, {args.epochs} epochs), {args.replicates} replicate(s), "
          f"19 models each, {name}, median of {args.repeats}:")
    for training, r in rows.items():
        print(f"  {training:9s} {r['median_s']:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in r['all_s'])})")
    print(f"  minibatch / batched: {rows['minibatch']['median_s'] / rows['batched']['median_s']:.1f}x; "
          f"largest difference between the curves: {diff:.3f} (test AUROC)")
    print("JSON " + json.dumps({"device": name, **{k: {"median_s": v["median_s"]} for k, v in rows.items()},
                                 "max_curve_difference": diff}))
    emit("filtering_speed", [summary_row("filtering, batched training, s per scoring", rows["batched"]["median_s"],
                                         "the paper's minibatch retrains, one at a time",
                                         rows["minibatch"]["median_s"])], max_curve_difference=diff)


if __name__ == "__main__":
    main()
