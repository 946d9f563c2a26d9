"""Speed of batched vs one-at-a-time training for LOO at exp1 size, side by side.

LOO on ADULT exp1 (docs/protocol.md): 1000 source samples, 108 features, the paper's MLP, each model 200
full-batch Adam steps at lr 1e-4, 1000 leave-one-out models + 10 full-data models.

Paths timed in one process, interleaved, ``--repeats`` times (medians reported):
  one-at-a-time (port)  the DVGS port's loop: nn.Module in train mode, nn.Dropout, Adam
  one-at-a-time (same)  valbench.training.stacked.train_single: same recipe and masks as batched
  batched (native)      valbench.training.stacked.train_stacked, --batch models per computation, as
                        run by default on CPU (the native extension's gradients)
  batched (eager)       the same on the chain passes in Python (VALBENCH_NATIVE=0)
  batched (compiled)    those under torch.compile (compilation time reported apart)
  matrix products only  the GEMMs of the batched path alone: the ceiling of batching here
Each one-at-a-time path trains ``--single`` models per repeat and each batched path one
batch of ``--batch`` models; times per model are extrapolated to the whole LOO run
(1010 models), which the output says plainly. Noisy on a shared machine: read the
ratios, not the absolute times.

    .venv/bin/python benchmarks/batched_training.py [--repeats 3] [--batch 32] [--single 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from valbench.training.stacked import FullBatchRecipe, compile_status, train_single, train_stacked
from valbench_plugins.datasets.adult import Adult
from valbench.training.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402

N_FULL = 10


def port_fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> None:
    """The DVGS port's utility fit (docs/protocol.md, 'The DVGS port'): train mode (dropout on), full batch, Adam."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="models per batched computation")
    ap.add_argument("--single", type=int, default=3, help="one-at-a-time models timed per repeat")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="1 repeat, 1 single model, 16 per batch, 40 steps")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.single, args.batch, args.steps = 1, 1, 16, 40
    torch.set_num_threads(args.threads)

    splits = Adult().load(0)
    x = torch.tensor(np.asarray(splits.source.x), dtype=torch.float32)
    y = torch.tensor(np.asarray(splits.source.y), dtype=torch.long)
    n = len(x)
    learner = splits.learner
    recipe = FullBatchRecipe(steps=args.steps, lr=1e-4, dropout="shared")
    n_models = n + N_FULL
    print(f"LOO at exp1 size: {n} source x {x.shape[1]} features, {args.steps} full-batch steps, "
          f"{n_models} models; torch {torch.__version__}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f}")

    def loo_rows(i: int) -> torch.Tensor:
        return torch.cat([torch.arange(i), torch.arange(i + 1, n)])

    def one_port(rep: int) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        for k in range(args.single):
            rows = loo_rows(rep * args.single + k)
            port_fit(build_model(learner, 0), x[rows], y[rows], args.steps, 1e-4)
        return (time.perf_counter() - t) / args.single, (time.process_time() - c) / args.single

    def one_same(rep: int) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        for k in range(args.single):
            train_single(build_model(learner, 0), x, y, loo_rows(rep * args.single + k), supervised=True,
                         recipe=recipe, seed=0)
        return (time.perf_counter() - t) / args.single, (time.process_time() - c) / args.single

    def batched(compile: bool, native: bool = False):
        rec = FullBatchRecipe(steps=args.steps, lr=1e-4, dropout="shared", compile=compile)

        def run(rep: int) -> tuple[float, float]:
            os.environ["VALBENCH_NATIVE"] = "1" if native else "0"
            start = (rep * args.batch) % n
            m = min(args.batch, n - start)
            weight = torch.ones(m, n)
            weight[torch.arange(m), torch.arange(start, start + m)] = 0.0
            t, c = time.perf_counter(), time.process_time()
            train_stacked(build_model(learner, 0), x, y, torch.arange(n), weight, supervised=True, recipe=rec, seed=0)
            return (time.perf_counter() - t) / m, (time.process_time() - c) / m
        return run

    def gemm_only(rep: int) -> tuple[float, float]:
        """Only the matrix products of one batched training (same shapes, no elementwise
        layers, no optimiser): what batching cannot go below on this CPU. Outputs go to
        buffers allocated once (per step, tens of MB would be faulted in again and again,
        which is allocator time, not arithmetic: no ceiling)."""
        m, dims = args.batch, [x.shape[1]] + [lin.out_features for lin in build_model(learner, 0).modules()
                                              if isinstance(lin, torch.nn.Linear)]
        ws = [torch.randn(m, o, i) * 0.01 for i, o in zip(dims[:-1], dims[1:])]
        xs = x.expand(m, n, dims[0])
        acts = [xs] + [torch.empty(m, n, o) for o in dims[1:]]  # forward outputs
        grads = [torch.empty(m, o, i) for i, o in zip(dims[:-1], dims[1:])]
        sig = [torch.empty(m, n, i) for i in dims[1:-1]]  # backward signals below layers 1..
        g = torch.ones(m, n, dims[-1])
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            for k, w in enumerate(ws):
                torch.bmm(acts[k], w.transpose(1, 2), out=acts[k + 1])
            s = g
            for k in range(len(ws) - 1, -1, -1):  # weight gradients, and input gradients but the first layer's
                torch.bmm(s.transpose(1, 2), acts[k], out=grads[k])
                if k:
                    torch.bmm(s, ws[k], out=sig[k - 1])
                    s = sig[k - 1]
        return (time.perf_counter() - t) / m, (time.process_time() - c) / m

    paths = {"one-at-a-time (port)": one_port, "one-at-a-time (same)": one_same,
             "batched (native)": batched(False, native=True), "batched (eager)": batched(False),
             "batched (compiled)": batched(True),
             "matrix products only": gemm_only}
    # warm-up (and compilation, timed apart)
    t = time.perf_counter()
    small = FullBatchRecipe(steps=2, lr=1e-4, dropout="shared", compile=True)
    os.environ["VALBENCH_NATIVE"] = "0"  # the compiled passes, not the native gradients
    train_stacked(build_model(learner, 0), x, y, torch.arange(n), torch.ones(args.batch, n), supervised=True,
                  recipe=small, seed=0)
    print(f"torch.compile warm-up (one-off per process, not in the timings): {time.perf_counter() - t:.1f} s")
    for fn in paths.values():  # warm-up: first-call costs (allocator, thread pool) not in the timings
        fn(args.repeats)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for rep in range(args.repeats):
        for name, fn in paths.items():
            times[name].append(fn(rep))
    print(f"torch.compile gave up: {compile_status()}" if compile_status() else "torch.compile: in use")
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    for col, label in ((0, "wall clock"), (1, "process CPU time (all threads)")):
        med = {k: statistics.median(t[col] for t in v) for k, v in times.items()}
        base, same = med["one-at-a-time (port)"], med["one-at-a-time (same)"]
        print(f"\n[{label}] seconds per model, median of {args.repeats} repeats")
        print(f"{'path':24s} {'median':>8s} {'repeats':>24s} {'full LOO (extrap.)':>19s} {'vs port':>8s} {'vs same':>8s}")
        for name, ts in times.items():
            reps = " ".join(f"{t[col]:.3f}" for t in ts)
            print(f"{name:24s} {med[name]:8.3f} {reps:>24s} {med[name] * n_models / 60:15.1f} min "
                  f"{base / med[name]:7.1f}x {same / med[name]:7.1f}x")
    print("\n'matrix products only' runs just the GEMMs of a batched training (same shapes, no "
          "activations, normalisation, dropout, loss or Adam): its 'vs port' is about the most "
          "batched fp32 training with torch's CPU matrix kernels can gain on this machine.")
    print(f"Measured {args.single * args.repeats} one-at-a-time models and {args.batch * args.repeats} batched "
          f"models per path; the full-LOO column is extrapolated from the per-model medians, not measured. "
          f"'vs same' compares with one-at-a-time training of the same recipe and dropout masks.")
    best_path = min(("batched (native)", "batched (eager)", "batched (compiled)"), key=wall.__getitem__)
    best = wall[best_path]
    print(f"fastest batched path: {best_path}")
    emit("batched_training", [
        summary_row(f"LOO {best_path}, s per model", best, "DVGS port, one model at a time", wall["one-at-a-time (port)"]),
        summary_row(f"LOO {best_path}, s per model", best, "matrix products only (the CPU ceiling; goal ratio <= 1.67)",
                    wall["matrix products only"]),
    ], steps=args.steps, batch=args.batch)

if __name__ == "__main__":
    main()
