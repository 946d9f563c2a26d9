"""DVRL's time per outer iteration on exp1 (ADULT, 20% flipped labels, seed 0), steady state.

An outer iteration is one inner fit of the predictor (100 epochs over the selected rows of
the batch) plus the estimator's update; the two setup fits (and compilation, which happens
in them) come before the first iteration and are not counted. Each variant runs in a fresh
process, alternating, ``--rounds`` times; the value of a run is the median time between
consecutive iterations, and the script prints the median over runs:

- ``default``: this checkout's default (on CPU the flat trainer's native epoch, one call per epoch),
- ``python``: the same with ``VALBENCH_NATIVE=0``: the flat trainer's Python step, op by op,
- ``compiled``: ``compile=True`` (the padded step under torch.compile; a CUDA graph on GPU),
- ``--against PYTHON``: that interpreter's valbench (e.g. a venv with an older commit
  installed) with its defaults, the same cell and iterations, side by side.

    python benchmarks/dvrl_speed.py --iterations 40 --rounds 3 [--device cuda] [--against /old/venv/bin/python]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _exp1 import exp1_task  # noqa: E402
from _summary import emit, row as summary_row  # noqa: E402

PAPER_S_PER_ITERATION = 9.9 * 60 / 2000  # the DVGS paper: 9.9 min for 2000 iterations on one RTX 3090


def one_run(variant: str, iterations: int, device: str) -> dict:
    """In this process: DVRL on the exp1 cell of seed 0; the median s per outer iteration."""
    from valbench_plugins.valuers.dvrl import DVRLValuer

    task, _ = exp1_task(0, device)
    stamps: list[float] = []
    params = {"compile": True} if variant == "compiled" else {}
    out = DVRLValuer(iterations=iterations, **params).value(task, on_iteration=lambda i, v: stamps.append(
        time.perf_counter()))
    return {"s_per_iteration": float(np.median(np.diff(stamps))), "trainer": out.info.get("trainer")}


def in_subprocess(python: str, variant: str, iterations: int, device: str) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--one", variant, "--iterations", str(iterations),
           "--device", device]
    env = dict(os.environ, VALBENCH_NATIVE="0" if variant == "python" else os.environ.get("VALBENCH_NATIVE", "1"))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--against", help="another Python whose valbench to time with its defaults, side by side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="12 iterations, 2 rounds")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.iterations, args.device)))
        return
    if args.quick:
        args.iterations, args.rounds = 12, 2
    variants = {"default": (sys.executable, "default"), "python": (sys.executable, "python"),
                "compiled": (sys.executable, "compiled")}
    if args.against:
        variants["against"] = (args.against, "default")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, (python, variant) in variants.items():
            got = in_subprocess(python, variant, args.iterations, args.device)
            times[name].append(got["s_per_iteration"])
            print(f"round {r} {name:9s} {got['s_per_iteration']:.4f} s/iteration ({got['trainer']})", flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:9s} median {v:.4f} s per outer iteration; 2000 iterations ~ {2000 * v / 60:.1f} min")
    what = f"DVRL exp1 on {args.device}, s per outer iteration"
    rows = [summary_row(f"{what} (default)", med["default"], "the flat trainer's Python step (VALBENCH_NATIVE=0)",
                        med["python"]),
            summary_row(f"{what} (compile=True)", med["compiled"], "the default (compile=False)", med["default"]),
            summary_row(f"{what} (default)", med["default"], "paper: one RTX 3090 (stated, not measured here)",
                        PAPER_S_PER_ITERATION)]
    if args.against:
        rows.append(summary_row(f"{what} (default)", med["default"], f"{args.against} (its defaults)",
                                med["against"]))
    emit("dvrl_speed", rows)


if __name__ == "__main__":
    main()
