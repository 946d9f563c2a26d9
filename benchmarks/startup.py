"""Startup of the valbench command, side by side in one run (median of --repeats, each a
fresh process): ``valbench --version``, ``valbench plugins``, and the time from launching
``valbench run --valuers random --datasets adult --corruptions labels --seeds 1`` (a fresh
store each time) to its first job start (the ``job_started`` hook, recorded by a plugin
module given in VALBENCH_PLUGINS), beside the goal of 2 s.

    python benchmarks/startup.py --repeats 5 [--quick]

On a shared machine wall times are noisy: the medians are reported, with the main
process' CPU seconds up to the first job start (less sensitive to neighbours).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row  # noqa: E402

GOAL_S = 2.0
PROBE = '''
import resource, time
from valbench import hookimpl
_seen = []

@hookimpl
def job_started(job):
    if not _seen:
        _seen.append(1)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        with open(__file__ + ".out", "w") as fh:
            fh.write(f"{time.time()} {ru.ru_utime + ru.ru_stime}")
'''
RUN = ["run", "--valuers", "random", "--datasets", "adult", "--corruptions", "labels", "--seeds", "1"]


def _wall(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "valbench", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def first_job(tmp: Path, env: dict, k: int) -> tuple[float, float, float]:
    """(seconds to the first job start, main-process CPU seconds by then, whole run)."""
    out = tmp / "startup_probe.py.out"
    out.unlink(missing_ok=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "valbench", *RUN, "--results", str(tmp / f"r{k}.sqlite")], env=env,
                   check=True, capture_output=True)
    total = time.time() - t0
    started, cpu = map(float, out.read_text().split())
    return started - t0, cpu, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    args = ap.parse_args()
    reps = 3 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "startup_probe.py").write_text(PROBE)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp), os.environ.get("PYTHONPATH")]))}
        probe_env = {**env, "VALBENCH_PLUGINS": "startup_probe"}
        first_job(tmp, probe_env, -1)  # warm-up: the data cache and the OS page cache
        version, plugins, start, cpu, total = [], [], [], [], []
        for k in range(reps):  # interleaved, so that a change of load hits every row alike
            version.append(_wall(["--version"], env))
            plugins.append(_wall(["plugins"], env))
            s, c, t = first_job(tmp, probe_env, k)
            start.append(s), cpu.append(c), total.append(t)
    med = {name: statistics.median(v) for name, v in
           [("version", version), ("plugins", plugins), ("start", start), ("cpu", cpu), ("total", total)]}
    load = os.getloadavg()[0]
    print(f"valbench startup, median of {reps} fresh processes ({os.cpu_count()} cores, load {load:.1f}: "
          "noisy on a shared machine)")
    print(f"  valbench --version                 {med['version']:6.2f} s")
    print(f"  valbench plugins                   {med['plugins']:6.2f} s")
    print(f"  run: launch to first job start     {med['start']:6.2f} s  ({med['start'] / GOAL_S:.2f}x the {GOAL_S:g} s "
          f"goal; main process CPU {med['cpu']:.2f} s)")
    print(f"  run: whole one-job run             {med['total']:6.2f} s")
    emit("startup", [
        row("valbench run: launch to first job start", med["start"], "goal 2 s", GOAL_S),
        row("valbench run: main-process CPU to first job start", med["cpu"], "goal 2 s", GOAL_S),
        row("valbench plugins", med["plugins"], "valbench --version (interpreter + CLI floor)", med["version"]),
    ], repeats=reps, load=round(load, 2))


if __name__ == "__main__":
    main()
