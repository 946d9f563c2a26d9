"""DVGS speed: ms per DVGS step and source samples per second, per engine, side by side.

For the paper's MLP (108-100-100-2) at 1k, 10k and 100k source samples and its MLP
autoencoder (978-250-32) at 10k, one run prints:

- floor: one plain forward + backward pass (with parameter gradients) over the whole
  source set, through the same model DVGS values (same layers, same dropout masks);
  floor+t: the same over the source set and the target batch, the rows every DVGS step
  must pass forward and backward (it matters at 1k source with a 400-row target batch);
- fast / opacus / naive: one whole DVGS step (target mini-batch gradient, every source
  sample's similarity, Adam step), measured inside real ``dvgs()`` calls as the time
  difference between runs of k1 and k2 steps (so set-up is not counted); "fast" takes
  its hand-written passes where the model is a plain layer chain (both cases here),
  "hooks" is the same engine through autograd and module hooks (its general path);
- peak memory of the k2 run (CPU: resident high-water mark above the start; CUDA:
  allocator peak), ratios between engines, and the whole exp1 (docs/protocol.md) valuation on
  real ADULT (3 restarts x 100 full-batch steps, 1000 source samples).

Numbers are medians of --repeats runs. Run with the thread count you report:
    python benchmarks/dvgs_speed.py --threads 2
(--engines picks the engines measured besides fast, opacus being skipped where it is not
installed; --sizes and --ae-source set the cases; benchmarks/gpu_suite.sh runs a short set.)
On a machine shared with other busy processes, OpenMP's default busy-waiting makes
every multi-threaded number erratic (threads spin while their partner is descheduled);
compare with --threads 1, or run with OMP_WAIT_POLICY=PASSIVE in the environment. PASSIVE
is steadier but slower for small operations (a sleeping thread is woken for each one).
This script leaves the policy as it finds it; the valbench CLI sets PASSIVE unless
OMP_WAIT_POLICY is set (README, "OpenMP threads and speed").
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from valbench.gradsim import driver
from valbench.gradsim.dvgs import DVGSConfig, dvgs
from valbench.gradsim.layers import prepare_model
from valbench.gradsim.masks import sample_seeds
from valbench.training.models import build_model, loss_function
from valbench.types import Learner
from valbench.timing import timed
from valbench.types import Split, ValuationTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import emit, row as summary_row  # noqa: E402

NAIVE_LIMIT_S = 60.0  # skip the naive loop where its measurement would take longer
BUDGET_S = 120.0  # time for the repeats of one slow engine on one case


@dataclass
class Case:
    name: str
    learner: Learner
    n_source: int
    n_target: int
    n_classes: int | None


def make_task(case: Case, device: str) -> ValuationTask:
    g = np.random.default_rng(0)
    d = case.learner.in_features

    def split(n):
        x = g.random((n, d), dtype=np.float32)
        y = g.integers(0, case.n_classes, n) if case.n_classes else x
        return Split(x, y)

    return ValuationTask(split(case.n_source), split(case.n_target), case.n_classes, case.learner,
                         "auroc" if case.n_classes else "r2", 0, device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing2:
    wall: float  # seconds
    cpu: float  # process CPU seconds (all threads); on a shared machine closer to an idle one's wall time


def med(samples: list[Timing2]) -> Timing2:
    return Timing2(statistics.median(t.wall for t in samples), statistics.median(t.cpu for t in samples))


def floor_s(task: ValuationTask, repeats: int, with_target: bool = False) -> Timing2:
    """One forward + backward over the whole source set through the valued model (and,
    ``with_target``, the target batch too: the rows a DVGS step cannot avoid touching)."""
    model = build_model(task.learner, 0, task.device)
    ctx, _ = prepare_model(model)
    parts = [task.source] + ([task.target] if with_target else [])
    x = torch.tensor(np.concatenate([p.x for p in parts]), device=task.device)
    y = torch.tensor(np.concatenate([p.y for p in parts]), device=task.device)
    ctx.seeds = sample_seeds(torch.arange(len(x), device=task.device), 1)
    loss_fn = loss_function(task.learner, "none")
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        sync(task.device)
        c0, t0 = time.process_time(), time.perf_counter()
        loss_fn(model(x), y).sum().backward()
        sync(task.device)
        times.append(Timing2(time.perf_counter() - t0, time.process_time() - c0))
        model.zero_grad(set_to_none=True)
    return med(times[1:])


@contextlib.contextmanager
def hooks_only(on: bool):
    """With ``on``, the fast engine runs through autograd and module hooks even where its
    hand-written passes apply (valbench.gradsim.sequential), to compare the two."""
    real = driver.sequential_plan
    if on:
        driver.sequential_plan = lambda model, probe: None
    try:
        yield
    finally:
        driver.sequential_plan = real


def step_s(task: ValuationTask, engine: str, k1: int, k2: int, repeats: int,
           hooks: bool = False) -> tuple[Timing2, float]:
    """(time per DVGS step, peak bytes) from dvgs() runs of k1 and k2 full-batch steps."""
    def run(k):
        cfg = DVGSConfig(restarts=1, epochs=k, target_batch=len(task.target), engine=engine)
        with hooks_only(hooks):
            out, timing = timed(lambda: dvgs(task, cfg), task.device)
        assert out.info["engine"] == engine, out.info
        peak = timing.peak_device_bytes if timing.peak_device_bytes is not None else \
            (timing.peak_rss_bytes or 0) - (timing.base_rss_bytes or 0)
        return timing, peak

    diffs, peaks = [], []
    for _ in range(repeats):
        a, _ = run(k1)
        b, peak = run(k2)
        diffs.append(Timing2(max((b.wall_s - a.wall_s) / (k2 - k1), 1e-9), max((b.cpu_s - a.cpu_s) / (k2 - k1), 1e-9)))
        peaks.append(peak)
    return med(diffs), max(peaks)


def row(name: str, t: Timing2, n: int, floor: Timing2, peak: float | None = None, note: str = "") -> None:
    mb = "" if peak is None else f"{peak / 2**20:.0f}"
    print(f"  {name:8s} {t.wall * 1e3:10.2f} {n / t.wall:12,.0f} {t.cpu * 1e3:10.2f} {mb:>8s} "
          f"{t.wall / floor.wall:8.2f} {t.cpu / floor.cpu:8.2f}{note}")


def bench(case: Case, device: str, repeats: int, engines: tuple[str, ...] = ("opacus", "naive")) -> list[dict]:
    """Prints the case's table; returns its summary rows (run_all.py)."""
    task = make_task(case, device)
    n = case.n_source
    print(f"\n{case.name}: {n:,} source, {case.n_target} target (one full batch), device {device}")
    print(f"  {'':8s} {'ms/step':>10s} {'samples/s':>12s} {'cpu ms':>10s} {'peak MB':>8s} {'x floor':>8s} {'cpu x':>8s}")
    # floor and fast engine interleaved, so that other load on the machine hits both alike
    floors, floors_t, fasts, hookss, peaks = [], [], [], [], []
    for _ in range(repeats):
        floors.append(floor_s(task, 1))
        floors_t.append(floor_s(task, 1, with_target=True))
        t, peak = step_s(task, "fast", 2, 12, 1)
        fasts.append(t)
        peaks.append(peak)
        hookss.append(step_s(task, "fast", 2, 12, 1, hooks=True)[0])
    floor, floor_t, fast, fast_hooks = med(floors), med(floors_t), med(fasts), med(hookss)
    row("floor", floor, n, floor)
    row("floor+t", floor_t, n, floor, note="  (source + target batch rows)")
    row("fast", fast, n, floor, max(peaks))
    row("hooks", fast_hooks, n, floor, note="  (the fast engine through autograd + module hooks)")
    results = {"fast": fast}
    for engine in engines:
        if engine == "opacus" and importlib.util.find_spec("opacus") is None:
            print(f"  {'opacus':8s} skipped: opacus is not installed (pip install opacus)")
            continue
        k1, k2 = 1, 2
        # size the measurement from a 200-sample probe (time is linear in the source size)
        small = Case(case.name, case.learner, min(n, 200), case.n_target, case.n_classes)
        probe = step_s(make_task(small, device), engine, 1, 2, 1)[0].wall / small.n_source
        est = probe * n  # seconds per step
        if engine == "naive" and est * (k1 + k2) > NAIVE_LIMIT_S:
            print(f"  {'naive':8s} skipped: about {est:.0f} s per step (one backward pass per sample, "
                  f"{probe * 1e3:.2f} ms each); measuring it would take minutes")
            continue
        reps = int(max(1, min(repeats, 3, BUDGET_S // max(est * (k1 + k2), 1e-9))))
        t, peak = step_s(task, engine, k1, k2, reps)
        results[engine] = t
        row(engine, t, n, floor, peak, "" if reps == repeats else f"  (median of {reps})")
    f = results["fast"]
    line = [f"fast/floor {f.wall / floor.wall:.2f}x (cpu {f.cpu / floor.cpu:.2f}x)",
            f"fast/(floor+t) {f.wall / floor_t.wall:.2f}x",
            f"hooks/fast {fast_hooks.wall / f.wall:.2f}x"]
    if "opacus" in results:
        line.append(f"opacus/fast {results['opacus'].wall / f.wall:.1f}x (cpu {results['opacus'].cpu / f.cpu:.1f}x)")
    if "naive" in results:
        line.append(f"naive/fast {results['naive'].wall / f.wall:.0f}x")
    print("  ratios: " + ", ".join(line))
    # the floor a step cannot beat: one plain pass over the rows it must pass (source + target batch)
    out = [summary_row(f"DVGS step, {case.name}, {n:,} source: fast engine", f.wall,
                       "one plain forward + backward over the same rows (source + target batch: the floor)",
                       floor_t.wall)]
    if "opacus" in results:
        out.append(summary_row(f"DVGS step, {case.name}, {n:,} source: Opacus", results["opacus"].wall,
                               "the fast engine", f.wall))
    return out


def exp1(device: str, repeats: int) -> list[dict]:
    """Prints the exp1 valuation times; returns its summary row (run_all.py)."""
    from _exp1 import exp1_task

    task, _ = exp1_task(0, device)
    dvgs(task, DVGSConfig(restarts=1, epochs=2))  # one-off imports and allocator warm-up
    print("\nexp1 on ADULT (3 restarts x 100 full-batch steps, 1000 source, 108 features), "
          "whole valuation, the two ways interleaved:")
    runs: dict[bool, list] = {False: [], True: []}
    for _ in range(repeats):
        for hooks in (False, True):
            with hooks_only(hooks):
                out, timing = timed(lambda: dvgs(task, DVGSConfig()), device)
            runs[hooks].append((timing.wall_s, timing.cpu_s, out.info.get("passes", out.info["engine"])))
    for hooks, rs in runs.items():
        times = [r[0] for r in rs]
        print(f"  {rs[0][2]:34s} {statistics.median(times):.2f} s median of {repeats} "
              f"(min {min(times):.2f}, max {max(times):.2f}); process CPU {statistics.median(r[1] for r in rs):.2f} s")
    hand, hooks = (statistics.median(r[0] for r in runs[h]) for h in (False, True))
    return [summary_row("DVGS exp1 valuation (ADULT, 3 x 100 steps)", hand,
                        "the same through autograd + module hooks", hooks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--exp1-only", action="store_true", help="only the whole exp1 valuation (about a minute)")
    ap.add_argument("--engines", default="opacus,naive",
                    help="engines measured besides fast (comma-separated; opacus is skipped where not installed)")
    ap.add_argument("--ae-source", type=int, default=10_000, help="source size of the autoencoder case (0: skip it)")
    ap.add_argument("--quick", action="store_true", help="2 repeats, 1k MLP and 2k autoencoder, opacus only")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.sizes, args.ae_source, args.engines = 2, "1000", 2000, "opacus"
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"medians of {args.repeats} repeats (slow engines: fewer, as noted); "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    rows = exp1(device, args.repeats)
    if args.exp1_only:
        emit("dvgs_speed", rows)
        return
    engines = tuple(e for e in args.engines.split(",") if e)
    unknown = set(engines) - {"opacus", "naive"}
    if unknown:
        ap.error(f"--engines takes opacus and naive, got {', '.join(sorted(unknown))}")
    for n in (int(s) for s in args.sizes.split(",") if s):
        rows += bench(Case("MLP 108-100-100-2", Learner("mlp", 108, 2), n, 400, 2), device, args.repeats, engines)
    if args.ae_source:
        ae = Learner("mlp-autoencoder", 978, 978, hidden=(250,), latent=32, dropout=0.0, norm=False)
        rows += bench(Case("MLP autoencoder 978-250-32", ae, args.ae_source, 2000, None), device, args.repeats, engines)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other processes on the machine slow every number)")
    emit("dvgs_speed", rows)


if __name__ == "__main__":
    main()
