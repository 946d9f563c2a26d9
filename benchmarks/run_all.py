"""Every benchmark in benchmarks/, one table of ratios: each row a measurement beside its
comparison (measured side by side in the same script run, or a stated goal or published
number where the row says so). benchmarks/README.md explains each row.

    python benchmarks/run_all.py [--quick] [--only startup,dvgs_speed] [--out PATH]

Each script runs in its own process (``--quick``: its short mode; about 5 minutes in all
on a quiet 2-core machine) and prints a machine-readable summary as its last line
(benchmarks/_summary.py); nothing is parsed from prose. The table is printed and written to
benchmarks/results/<machine>.md (machine: the GPU's name, else cpu-<cores>core).
Timings from a machine that other processes load are not comparable: the file records
the load average before and after.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _summary import parse  # noqa: E402

# Cheapest first: a failure shows early. gpu_suite.sh (a GPU session's own script) is not here.
SCRIPTS = ["startup", "fastfit_speed", "batched_training", "filtering_speed", "dvgs_speed", "dvgs_scale",
           "tmc_budget", "prefix_fit_cost", "dvrl_speed", "gradient_valuers", "thread_policy"]
TIMEOUT_S = {True: 900, False: 7200}  # per script, --quick or full


def machine_name() -> str:
    """The GPU's name where torch sees one (e.g. nvidia-h200), else cpu-<cores>core."""
    try:
        import torch

        if torch.cuda.is_available():
            return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    except ImportError:
        pass
    return f"cpu-{os.cpu_count()}core"


def processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_one(name: str, quick: bool) -> tuple[dict | None, float, str]:
    """(its summary or None, wall seconds, the tail of its output when it failed)."""
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S[quick])
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t, f"timed out after {TIMEOUT_S[quick]} s"
    wall = time.perf_counter() - t
    summary = parse(done.stdout) if done.returncode == 0 else None
    tail = "" if summary else (done.stdout + done.stderr).strip().splitlines()[-5:]
    return summary, wall, " | ".join(tail) if tail else ""


def fmt(v: float, unit: str) -> str:
    return f"{v:.3g} {unit}".strip() if unit != "s" else (f"{v * 1e3:.3g} ms" if v < 0.1 else f"{v:.3g} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each script's short mode")
    ap.add_argument("--only", default="", help="comma-separated script names (default: all)")
    ap.add_argument("--out", default="", help="the markdown file (default benchmarks/results/<machine>.md)")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or SCRIPTS
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(SCRIPTS)}")
    machine = machine_name()
    out = Path(args.out) if args.out else HERE / "results" / f"{machine}.md"
    load0, start = os.getloadavg()[0], time.perf_counter()
    rows, status = [], []
    for name in names:
        print(f"running {name}{' --quick' if args.quick else ''} ...", flush=True)
        summary, wall, error = run_one(name, args.quick)
        status.append((name, wall, "ok" if summary else f"FAILED: {error}"))
        print(f"  {name}: {status[-1][2]} ({wall:.0f} s)", flush=True)
        for r in (summary or {}).get("rows", []):
            rows.append((name, r))
    load1 = os.getloadavg()[0]
    lines = [f"# Benchmarks on {machine}", "",
             f"`python benchmarks/run_all.py{' --quick' if args.quick else ''}`, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {processor()}, "
             f"{os.cpu_count()} cores; load average {load0:.1f} at the start, {load1:.1f} at the end "
             f"({time.perf_counter() - start:.0f} s in all). Ratio = measurement / comparison (for times: "
             "below 1 is faster than the comparison). What each row compares: benchmarks/README.md.", "",
             "| benchmark | measurement | value | comparison | its value | ratio |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['row']} | {fmt(r['value'], r['unit'])} | {r['comparison']} | "
                     f"{fmt(r['comparison_value'], r['unit'])} | {r['ratio']:.3g} |".replace("| nan |", "| (not measured) |"))
    lines += ["", "| script | wall | status |", "|---|---|---|"]
    lines += [f"| {name} | {wall:.0f} s | {st} |" for name, wall, st in status]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    if any(st != "ok" for _, _, st in status):
        sys.exit(1)


if __name__ == "__main__":
    main()
