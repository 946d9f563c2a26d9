"""Speed of DVRL's inner training: valbench.training.repeated's flat trainer (native epoch, Python step) vs an autograd loop.

One DVRL inner fit at exp1 (docs/protocol.md) size: the paper's MLP (108-100-100-2, dropout 0.5, Mish,
LayerNorm), 1000 source rows of which ~70% are selected, minibatches of 256, Adam.
The flat trainer's native epoch (its default on CPU), its Python step (``native=False``)
and the autograd loop run side by side in this process, alternating, ``--repeats`` times;
the script prints the median time per optimizer step and the ratios. Also compares one
vs two intra-op threads for the native epoch (why DVRL pins one thread on CPU).

    python benchmarks/fastfit_speed.py --epochs 10 --repeats 5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from valbench.training.repeated import AutogradTrainer, FlatMLPTrainer, MinibatchRecipe
from valbench.training.models import build_model
from valbench.types import Learner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 2
    g = np.random.default_rng(0)
    x = torch.tensor((g.random((1000, 108)) < 0.13).astype(np.float32))
    y = torch.tensor(g.integers(0, 2, 1000))
    select = g.random(1000) < 0.7
    model = build_model(Learner("mlp", 108, 2), 0)
    recipe = MinibatchRecipe(lr=1e-3, epochs=args.epochs, batch_size=256)
    steps = args.epochs * 4
    runs = {"native, 1 thread": (lambda: FlatMLPTrainer(model, recipe, "cpu"), 1),
            "python step, 1 thread": (lambda: FlatMLPTrainer(model, recipe, "cpu", native=False), 1),
            "autograd, 1 thread": (lambda: AutogradTrainer(model, recipe, "cpu"), 1),
            "native, 2 threads": (lambda: FlatMLPTrainer(model, recipe, "cpu"), 2)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    trainers = {k: make() for k, (make, _) in runs.items()}
    for r in range(args.repeats + 1):
        for k, (_, threads) in runs.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            trainers[k].fit(x, y, np.random.default_rng(r), select=select)
            if r:  # the first round warms up (and builds the native extension if it has to)
                times[k].append((time.perf_counter() - t0) / steps)
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:22s} {v:8.0f} us/step (median of {args.repeats}; {trainers[k].name})")
    print(f"speedup native vs Python step (1 thread): {med['python step, 1 thread'] / med['native, 1 thread']:.2f}x")
    print(f"speedup native vs autograd (1 thread): {med['autograd, 1 thread'] / med['native, 1 thread']:.2f}x")
    print(f"1 vs 2 threads (native): {med['native, 2 threads'] / med['native, 1 thread']:.2f}x")
    print(f"=> one DVRL outer iteration at exp1 size ~ {4 * 100 * med['native, 1 thread'] / 1e6:.2f} s of inner training")
    what = f"DVRL inner fit, flat trainer ({trainers['native, 1 thread'].name}), s per step"
    emit("fastfit_speed", [
        summary_row(what, med["native, 1 thread"] / 1e6, "its Python step (native=False), 1 thread",
                    med["python step, 1 thread"] / 1e6),
        summary_row(what, med["native, 1 thread"] / 1e6, "autograd loop, 1 thread", med["autograd, 1 thread"] / 1e6)])

if __name__ == "__main__":
    main()
