"""The CLI's OpenMP thread policy, side by side: DVGS's exp1 valuation (ADULT, 1000 source)
under OMP_WAIT_POLICY=PASSIVE / ACTIVE with 2 threads and with 1 thread, on a quiet
machine and beside a busy neighbour (one process spinning on a core), each a fresh
process (the policy is read when torch loads), median of --repeats valuations.

    python benchmarks/thread_policy.py --repeats 3

valbench's rule (valbench/cli.py, _wait_policy): spin (ACTIVE) when the machine is idle
at start (1-minute load average under max(0.5, cores / 4)), else sleep (PASSIVE).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402

ONE = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from valbench.plugins import build_registry
from valbench.api import plan
from valbench.grid import build_experiment
from valbench.runner import task_for
exp = build_experiment({"datasets": "adult", "corruptions": "labels", "valuers": "dvgs", "seeds": 1})
jobs, cache = plan(exp, build_registry(), "cpu")
task, valuer = task_for(jobs[0], cache.cell(jobs[0])), jobs[0].valuer.build()
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); valuer.value(task); times.append(time.perf_counter() - t)
print(sorted(times)[len(times) // 2])
"""
SETTINGS = [("PASSIVE", 2), ("ACTIVE", 2), ("PASSIVE", 1), ("ACTIVE", 1)]


def measure(repeats: int) -> dict[str, float]:
    out = {}
    for policy, threads in SETTINGS:
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        done = subprocess.run([sys.executable, "-c", ONE, str(threads), str(repeats)], env=env,
                              capture_output=True, text=True, check=True)
        out[f"{policy}, {threads} thread(s)"] = float(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 repeat")
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    print(f"DVGS exp1 valuation, seconds (median of {args.repeats}), {os.cpu_count()} cores")
    quiet = measure(args.repeats)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2)
        busy = measure(args.repeats)
    finally:
        neighbour.kill()
    for name in quiet:
        print(f"  {name:22s} quiet {quiet[name]:6.2f}   beside a busy neighbour {busy[name]:6.2f}")
    best = min(quiet.values())
    print(f"  quiet: ACTIVE/2 is {quiet['ACTIVE, 2 thread(s)'] / best:.2f}x the best; busy: PASSIVE/2 is "
          f"{busy['PASSIVE, 2 thread(s)'] / busy['ACTIVE, 2 thread(s)']:.2f}x ACTIVE/2")
    emit("thread_policy", [  # the CLI's rule: ACTIVE when the machine is idle, PASSIVE beside busy neighbours
        summary_row("DVGS exp1, quiet: the rule's choice (ACTIVE, 2 threads)", quiet["ACTIVE, 2 thread(s)"],
                    "best setting, quiet (goal ratio <= 1.15)", best),
        summary_row("DVGS exp1, busy: the rule's choice (PASSIVE, 2 threads)", busy["PASSIVE, 2 thread(s)"],
                    "best setting beside a busy neighbour", min(busy.values())),
    ])


if __name__ == "__main__":
    main()
