"""DVGS at LINCS size: time per step, memory and growth with n, against FLOP and paper times.

DVGS (fast engine, hand-written passes) values random data of the LINCS shape (n x 978
float32, standard Gaussian like z-scored expression; 2000 target rows, one full target
batch per step, as exp8) on valbench's expression autoencoder 978-250-32 (Mish, no
dropout, no norm; docs/protocol.md), for n = 10k, 50k, 200k and 710k source rows by
default. The data is made directly on the device, once per size, and freed before the
next; it is handed to dvgs() without a copy. Run from the repository root (PYTHONPATH=.
where valbench is not installed):

    PYTHONPATH=. python3 benchmarks/dvgs_scale.py --device cuda --json dvgs_scale.json   # ~1 min on an H200
    PYTHONPATH=. python3 benchmarks/dvgs_scale.py --device cpu --sizes 2000,10000,20000 --steps 1,2  # ~15 s, 2 cores

One table, one row per (n, chunk setting):

- ms/step: one whole DVGS step (target-batch gradient, every source row's similarity,
  Adam step), the time difference between dvgs() runs of k1 and k2 steps divided by
  k2 - k1 (set-up not counted), median of --repeats; src/s: source rows per second;
  TFLOP/s: the FLOP estimate below over that time (CUDA: synchronised by valbench.timing);
- peak MiB: memory above the data, max over the k2 runs (CPU: resident high-water mark
  above the resident size at the call's start; CUDA: torch.cuda.max_memory_allocated
  minus what was allocated before the call, i.e. the data; exact, where the CPU number
  is a lower bound that misses memory the allocator kept from earlier runs); data MiB:
  source + target;
- x1500 / x500: ms/step times 1500 (exp8: 3 restarts x 500 epochs x 1 step) and times
  500 (exp9, the ~710k valuation: 1 restart x 500 epochs x ceil(5000/5000) = 1 step),
  i.e. the measured cost of those valuations if they had this n.

Below it, per chunk setting: the fitted growth exponents (log-log least squares over the
sizes) of time per step against n (goal 1.0; below 1 where the fixed target batch or
per-step overheads weigh at small n) and against n + target rows (what a step passes),
and of peak memory above the data against n (goal ~0: a bounded chunk keeps it flat; the
"auto" chunk on CUDA grows with n until it reaches a quarter of free memory). Then the FLOP
model (see flop_model) and its H200 ceiling for exp8 and the 710k valuation beside the
paper's times, and the measured extrapolation: seconds per step at exp8's 20000 source +
2000 target rows and at 710000 + 5000 rows, times the step counts (the honest number;
the FLOP one is the ceiling). Time per step is taken as a function of the rows a step
passes: a measured n is scaled by the row count, another n interpolated log-log between
the measured neighbours or, outside them, scaled linearly from the nearest. Last, one
line "JSON {...}" with everything (--json PATH also writes it to a file).

--source-batch: rows per source chunk, a comma list of settings measured side by side.
"auto" is the engine's own choice (CPU: 32 MiB of activations, 1678 rows of this model;
CUDA: a quarter of free device memory, i.e. all 710k rows in one chunk on an H200); a
number caps the chunk at that many rows. (The fast engine ignores DVGSConfig.source_batch,
which sizes only materialising engines' chunks; this script imposes the cap by wrapping
the driver's initial_chunk.) Default: "auto" on CPU, "auto,10000" on CUDA, so that both
valbench's real speed and the bounded-memory configuration are seen.
--steps K1,K2 (default: per size, more steps for small n); --repeats (default 3);
--target (target rows, default 2000); --peak-tflops / --efficiency: the FLOP ceiling's
assumptions (default 67 TFLOP/s FP32 dense, the H200's non-tensor-core rate, since
torch's default float32 matmul precision "highest" does not use TF32; 495 with TF32).
Only the fast engine is used: opacus is never imported.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time

# Idle OpenMP threads sleep instead of spinning, as the valbench CLI does (before torch
# loads; export OMP_WAIT_POLICY=ACTIVE to override): on a shared CPU spinning made a
# 10k-row step 8x slower (3.3 s against 0.4 s with 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

import valbench.gradsim.dvgs as dvgs_module
from valbench.gradsim.dvgs import DVGSConfig, dvgs
from valbench.timing import timed
from valbench.training.models import build_model
from valbench.types import Learner, Split, ValuationTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _summary import emit, row as summary_row  # noqa: E402

FEATURES = 978
AE = Learner("mlp-autoencoder", FEATURES, FEATURES, hidden=(250,), latent=32, dropout=0.0, norm=False)
# The paper's runs (docs/protocol.md): step counts, rows per step and published minutes.
EXP8 = {"name": "exp8", "n_source": 20_000, "target_rows": 2000, "steps": 3 * 500 * 1, "paper_min": 41.7,
        "paper": "41.7 min on one RTX 3090 (Table 3; includes the filtering retrains)"}
EXP9 = {"name": "710k", "n_source": 710_000, "target_rows": 5000, "steps": 1 * 500 * 1, "paper_min": 8 * 60,
        "paper": "about 8 h (exp9; the paper's 978-256-64 autoencoder, ~6% more FLOPs)"}
MiB = 2**20


@contextlib.contextmanager
def patched_dvgs(cap: int | None):
    """Device tensors go into dvgs() as they are (its numpy-to-torch copy is skipped), and
    ``cap`` (rows) bounds the source chunk that the driver would choose."""
    real_tensor, real_chunk = dvgs_module.tensor, dvgs_module.initial_chunk

    def tensor(a, dtype, device="cpu"):
        if isinstance(a, torch.Tensor):
            want = torch.device(device)
            if a.dtype == dtype and a.device.type == want.type and want.index in (None, a.device.index):
                return a  # no copy
            return a.to(device=want, dtype=dtype)
        return real_tensor(a, dtype, device)

    def initial_chunk(engine, source_batch, n, act_bytes, device):
        chunk = real_chunk(engine, source_batch, n, act_bytes, device)
        return chunk if cap is None else max(1, min(chunk, cap))

    dvgs_module.tensor, dvgs_module.initial_chunk = tensor, initial_chunk
    try:
        yield
    finally:
        dvgs_module.tensor, dvgs_module.initial_chunk = real_tensor, real_chunk


def flop_model() -> dict:
    """Matmul FLOPs per row of one DVGS step, from the autoencoder's Linear layers.

    Every row (source or target) goes forward (2 in*out per layer) and back (the signal
    at each layer's output: 2 in*out per layer but the first, whose input needs none).
    A source row then costs its per-sample terms, b_i^T (G a_i) through the smaller
    intermediate: one more 2 in*out per layer; a target row instead adds to the weight
    gradient sum_i b_i a_i^T: also 2 in*out per layer. So 6P - 2P1 per row, P = sum of
    in*out, P1 the first layer's. Element-wise work (Mish, loss, norms, biases, Adam) is
    about 1% of this and left out: it costs memory bandwidth, not FLOPs.
    """
    linears = [m for m in build_model(AE, 0, "cpu").modules() if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    p = sum(i * o for i, o in shapes)
    p1 = shapes[0][0] * shapes[0][1]
    return {"layers": shapes, "P": p, "P1": p1, "per_row": 6 * p - 2 * p1}


def make_data(n: int, n_target: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(n)
    xs = torch.randn((n, FEATURES), generator=g, device=device, dtype=torch.float32)
    xt = torch.randn((n_target, FEATURES), generator=g, device=device, dtype=torch.float32)
    return xs, xt


def one_run(task: ValuationTask, steps: int, cap: int | None) -> tuple[float, float, int]:
    """(wall s, bytes above the start, chunk rows) of a dvgs() run of ``steps`` full-batch steps."""
    cfg = DVGSConfig(restarts=1, epochs=steps, target_batch=len(task.target), engine="fast")
    cuda = task.device.startswith("cuda")
    gc.collect()  # the last run's leftovers out of the baseline
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()  # the data (and nothing else of note)
    with patched_dvgs(cap):
        out, t = timed(lambda: dvgs(task, cfg), task.device)
    assert out.info["engine"] == "fast" and out.info["steps"] == steps, out.info
    if cuda:
        peak = t.peak_device_bytes - base
    else:
        peak = (t.peak_rss_bytes or 0) - (t.base_rss_bytes or 0)
    return t.wall_s, peak, int(out.info["chunk"])


def default_steps(n: int, cuda: bool) -> tuple[int, int]:
    """k1, k2: a difference of some 100 ms or more where that is cheap, 2 steps at the largest n."""
    if cuda:
        return 2, 2 + int(min(40, max(4, 2_000_000 // n)))
    return 1, 1 + int(min(4, max(1, 40_000 // n)))


def measure(n: int, n_target: int, device: str, caps: list[int | None], steps: tuple[int, int] | None,
            repeats: int, flops_row: int) -> list[dict]:
    xs, xt = make_data(n, n_target, device)
    task = ValuationTask(Split(xs, xs), Split(xt, xt), None, AE, "r2", 0, device)
    k1, k2 = steps or default_steps(n, device.startswith("cuda"))
    rows = []
    for cap in caps:
        if device.startswith("cuda"):
            one_run(task, 1, cap)  # warm-up: kernels and allocator for this chunk shape (cheap on a GPU)
        diffs, peaks, chunk = [], [], 0
        for _ in range(repeats):
            a, _, _ = one_run(task, k1, cap)
            b, peak, chunk = one_run(task, k2, cap)
            diffs.append(max((b - a) / (k2 - k1), 1e-9))
            peaks.append(peak)
        s = statistics.median(diffs)
        rows.append({"n": n, "target_rows": n_target, "source_batch": "auto" if cap is None else cap,
                     "chunk": chunk, "k1": k1, "k2": k2, "s_per_step": s, "s_per_step_all": diffs,
                     "samples_per_s": n / s,
                     "tflops": flops_row * (n + n_target) / s / 1e12,
                     "peak_above_data_bytes": max(peaks), "data_bytes": (n + n_target) * FEATURES * 4,
                     "x1500_s": s * EXP8["steps"], "x500_s": s * EXP9["steps"]})
    del task, xs, xt
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than 2 sizes or a y <= 0)."""
    if len(xs) < 2 or min(ys) <= 0:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def at_n(rows: list[dict], n: int, target_rows: int) -> tuple[float, str]:
    """Seconds per step at n source + ``target_rows`` target rows, from the measured steps
    taken as a function of the rows they pass (source + target): a measured n scaled by the
    row count (for another target size), else log-log interpolated between the measured
    neighbours, else scaled linearly in rows from the nearest measured n (a fitted
    exponent from a few noisy small sizes extrapolates wildly)."""
    want = n + target_rows
    pts = sorted((r["n"] + r["target_rows"], r["s_per_step"], r["n"]) for r in rows)
    for m, s, n_m in pts:
        if n_m == n:
            return s * want / m, "measured" if m == want else f"measured, x{want / m:.4f} for {target_rows} target rows"
    xs, ss = [p[0] for p in pts], [p[1] for p in pts]
    if xs[0] < want < xs[-1]:
        j = next(k for k in range(len(xs)) if xs[k] > want)
        w = (math.log(want) - math.log(xs[j - 1])) / (math.log(xs[j]) - math.log(xs[j - 1]))
        return math.exp((1 - w) * math.log(ss[j - 1]) + w * math.log(ss[j])), \
            f"interpolated between n={pts[j - 1][2]} and {pts[j][2]}"
    m, s, n_m = pts[0] if want <= xs[0] else pts[-1]
    return s * want / m, f"scaled linearly in rows from n={n_m}"


def expo(e: float | None) -> str:
    return "n/a" if e is None else f"{e:.2f}"


def hms(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    ap.add_argument("--sizes", default="10000,50000,200000,710000", help="source rows, comma-separated")
    ap.add_argument("--steps", default="", help="K1,K2 for every size (default: per size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source-batch", default="",
                    help="chunk settings, comma-separated: auto (the engine's own) or rows "
                         "(default: auto on CPU, auto,10000 on CUDA)")
    ap.add_argument("--target", type=int, default=2000, help="target rows (one full batch per step)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="H200 peak for the FLOP ceiling (default: 67 FP32, or 495 if TF32 matmuls are on)")
    ap.add_argument("--efficiency", type=float, default=0.5, help="fraction of that peak assumed")
    ap.add_argument("--json", default="", help="also write the JSON line to this file")
    ap.add_argument("--quick", action="store_true", help="2k and 10k rows, steps 1,3, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.steps, args.repeats = "2000,10000", "1,3", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        if torch.device(device).index is not None:  # "cuda" alone: the current device
            torch.cuda.set_device(torch.device(device))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    steps = None
    if args.steps:
        steps = tuple(int(s) for s in args.steps.split(","))
        if len(steps) != 2 or not 0 < steps[0] < steps[1]:
            ap.error("--steps takes K1,K2 with 0 < K1 < K2")
    caps = [None if s == "auto" else int(s)
            for s in (args.source_batch or ("auto,10000" if cuda else "auto")).split(",") if s]
    tf32 = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
    peak = args.peak_tflops or (495.0 if tf32 else 67.0)
    fm = flop_model()
    name = torch.cuda.get_device_name() if cuda else f"{os.cpu_count()} CPUs"
    print(f"DVGS at scale: torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}; "
          f"autoencoder 978-250-32, engine fast, {args.target} target rows, median of {args.repeats}")
    t_start = time.perf_counter()
    xs, xt = make_data(500, 100, device)
    one_run(ValuationTask(Split(xs, xs), Split(xt, xt), None, AE, "r2", 0, device), 1, None)  # one-off warm-up
    del xs, xt
    rows = []
    for n in sizes:
        rows += measure(n, args.target, device, caps, steps, args.repeats, fm["per_row"])

    print(f"\n{'n':>8s} {'chunk':>13s} {'k1,k2':>6s} {'ms/step':>9s} {'src/s':>11s} {'TFLOP/s':>8s} "
          f"{'peak MiB':>9s} {'data MiB':>9s} {'x1500':>9s} {'x500':>9s}")
    for r in rows:
        chunk = f"{r['chunk']}" + ("" if r["source_batch"] == "auto" else "*")
        print(f"{r['n']:8d} {chunk:>13s} {r['k1']:>2d},{r['k2']:<3d} {r['s_per_step'] * 1e3:9.2f} "
              f"{r['samples_per_s']:11,.0f} {r['tflops']:8.3f} {r['peak_above_data_bytes'] / MiB:9.1f} "
              f"{r['data_bytes'] / MiB:9.0f} {hms(r['x1500_s']):>9s} {hms(r['x500_s']):>9s}")
    print("  (chunk: rows per source chunk, * = capped by --source-batch; peak: above the data, "
          + ("CUDA allocator peak" if cuda else "resident high-water mark") + ")")

    per_setting = {}
    for cap in caps:
        key = "auto" if cap is None else cap
        rs = [r for r in rows if r["source_batch"] == key]
        ns = [r["n"] for r in rs]
        e_t = slope(ns, [r["s_per_step"] for r in rs])
        e_r = slope([r["n"] + r["target_rows"] for r in rs], [r["s_per_step"] for r in rs])
        e_m = slope(ns, [r["peak_above_data_bytes"] for r in rs])
        s8, how8 = at_n(rs, EXP8["n_source"], EXP8["target_rows"])
        s9, how9 = at_n(rs, EXP9["n_source"], EXP9["target_rows"])
        per_setting[str(key)] = {"time_exponent": e_t, "time_exponent_rows": e_r, "memory_exponent": e_m,
                                 "exp8_s_per_step": s8, "exp8_how": how8, "exp8_s": s8 * EXP8["steps"],
                                 "n710k_s_per_step": s9, "n710k_how": how9, "n710k_s": s9 * EXP9["steps"]}
    print("\ngrowth with n (log-log least squares over the sizes):")
    for key, p in per_setting.items():
        print(f"  source batch {key}: time per step ~ n^{expo(p['time_exponent'])} (goal 1.0), "
              f"~ (n + {args.target} target rows)^{expo(p['time_exponent_rows'])}; "
              f"peak memory above the data ~ n^{expo(p['memory_exponent'])} (goal ~0)")

    shapes = " + ".join(f"{i}x{o}" for i, o in fm["layers"])
    print(f"\nFLOP model: per row 6P - 2P1 = {fm['per_row'] / 1e6:.3f} MFLOP, P = {shapes} = {fm['P']:,} weights, "
          f"P1 = {fm['P1']:,} (first layer): forward 2P + backward signals 2(P - P1) (none into the input) "
          f"+ per-sample terms b_i^T G a_i 2P (target rows: the weight gradient, also 2P); element-wise work "
          f"(about 1%) left out. Per step: (source rows + target batch rows) x that.")
    rate = peak * args.efficiency * 1e12
    why = "TF32 tensor cores" if tf32 else \
        "FP32 dense, no tensor cores: torch float32 matmul precision highest; TF32 would be 495"
    print(f"H200 ceiling at {args.efficiency:.0%} of {peak:g} TFLOP/s ({why}):")
    estimates = {}
    for e in (EXP8, EXP9):
        fl = (e["n_source"] + e["target_rows"]) * fm["per_row"] * e["steps"]
        estimates[e["name"]] = {"flops": fl, "h200_ceiling_s": fl / rate, "paper_s": e["paper_min"] * 60,
                                "steps": e["steps"], "n_source": e["n_source"], "target_rows": e["target_rows"]}
        print(f"  {e['name']:5s} {e['n_source']:,} source + {e['target_rows']} target rows x {e['steps']} steps = "
              f"{fl / 1e12:,.0f} TFLOP -> {hms(fl / rate)}; paper: {e['paper']}")
    print("measured extrapolation (measured seconds per step, scaled to the run's source + target rows, "
          "x steps; set-up per restart not counted):")
    for key, p in per_setting.items():
        print(f"  source batch {key}: exp8 {p['exp8_s_per_step'] * 1e3:.1f} ms x {EXP8['steps']} = "
              f"{hms(p['exp8_s'])} ({p['exp8_how']}); 710k {p['n710k_s_per_step'] * 1e3:.1f} ms x {EXP9['steps']} = "
              f"{hms(p['n710k_s'])} ({p['n710k_how']})")
    print(f"total {time.perf_counter() - t_start:.0f} s")

    out = {"benchmark": "dvgs_scale", "torch": torch.__version__, "device": device, "device_name": name,
           "threads": torch.get_num_threads(), "target_rows": args.target, "repeats": args.repeats,
           "model": "mlp-autoencoder 978-250-32", "rows": rows, "growth": per_setting,
           "flop_model": fm, "assumed_peak_tflops": peak, "efficiency": args.efficiency, "tf32": tf32,
           "estimates": estimates, "wall_s": time.perf_counter() - t_start}
    line = json.dumps(out, separators=(",", ":"))
    print("JSON " + line)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(line + "\n")
    auto = per_setting.get("auto") or next(iter(per_setting.values()))
    emit("dvgs_scale", [
        # a step passes the source rows and the target batch: the growth in those rows is what is linear at best
        summary_row(f"DVGS at scale: growth exponent of time per step in the rows passed "
                    f"({sizes[0]:,}-{sizes[-1]:,} source + {args.target:,} target)",
                    auto["time_exponent_rows"], "goal: linear in the rows (1.0)", 1.0, unit="exponent"),
        summary_row("DVGS exp8 estimate from measured steps (set-up not included)", auto["exp8_s"],
                    f"paper: {EXP8['paper']}", EXP8["paper_min"] * 60),
    ])


if __name__ == "__main__":
    main()
