"""Helper of benchmarks/gpu_suite.sh: the environment, snapshots of the store, tables, summaries.

    python benchmarks/gpu_suite_report.py env ENV_JSON
    python benchmarks/gpu_suite_report.py snapshot STORE OUT      # OUT/<store>, OUT/<store>.values.tgz
    python benchmarks/gpu_suite_report.py tables STORE FILE       # valbench table 1, 2, 3 as markdown
    python benchmarks/gpu_suite_report.py summarize WORK STORE OUT  # OUT/summary.json, OUT/summary.md

``snapshot`` and ``summarize`` use the standard library only (they run after every part
of the suite and must be quick, and work even when valbench or torch is broken).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path


def env(path: str) -> None:
    """What the suite ran on, as JSON (also printed)."""
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "cpu_count": os.cpu_count()}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi_L"] = (out.stdout or out.stderr).strip()
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi_query"] = (out.stdout or out.stderr).strip()
    else:
        info["nvidia_smi_L"] = "nvidia-smi not found"
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                    torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                        gpu_capability=f"{p.major}.{p.minor}")
    except Exception as exc:  # recorded, not fatal: the suite goes on and its parts say what failed
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    for mod in ("valbench", "opacus", "triton", "numpy", "sklearn"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception as exc:
            info[mod] = f"not importable ({type(exc).__name__})"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True) if shutil.which("git") else None
    info["git_commit"] = commit.stdout.strip() if commit is not None and commit.returncode == 0 else None
    Path(path).write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def snapshot(store: str, out: str) -> None:
    """Copy the store into OUT (SQLite's backup: WAL-safe) and its values folder as one tgz
    (OUT may hold only a few files, so the folder of many .npz files travels as one)."""
    src, dest = Path(store), Path(out) / Path(store).name
    if not src.exists():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    a, b = sqlite3.connect(f"file:{src}?mode=ro", uri=True), sqlite3.connect(tmp)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()
    os.replace(tmp, dest)
    values = Path(f"{src}.values")
    if values.is_dir():
        with tarfile.open(Path(out) / f"{src.stem}.values.tgz", "w:gz") as tar:
            tar.add(values, arcname=f"{src.name}.values")  # unpacked beside the store, valbench finds them


def tables(store: str, path: str) -> int:
    """valbench table 1, 2 and 3 (the real CLI, in one process) into one markdown file; exit
    1 if table 1 or 3 failed (table 2 is absent when exp4 was skipped: noted, not a failure)."""
    from contextlib import redirect_stdout
    from io import StringIO

    from valbench.cli import main

    worst, parts = 0, []
    for n in (1, 2, 3):
        buf = StringIO()
        with redirect_stdout(buf):
            rc = main(["table", str(n), "--results", store, "--format", "markdown"])
        worst = max(worst, rc if n != 2 else 0)
        parts.append(f"## Table {n}\n\n{buf.getvalue() if rc == 0 else f'(valbench table {n}: exit {rc}, see logs.txt)'}\n")
    Path(path).write_text("\n".join(parts))
    print(f"wrote tables 1-3 to {path}")
    return worst


def _store_rows(store: Path) -> list[dict]:
    """The last attempt of every job, with its scores."""
    if not store.exists():
        return []
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT a.id, j.corruption, j.valuer_label, j.seed, j.device, a.status, a.wall_s, a.fits, "
            "a.stopped_early, a.peak_device_bytes, a.info, a.error, a.provenance FROM attempts a "
            "JOIN jobs j ON j.key = a.job_key ORDER BY a.id").fetchall()
        scores: dict[int, dict] = {}
        for aid, metric, value in con.execute("SELECT attempt_id, metric, value FROM scores"):
            scores.setdefault(aid, {})[metric] = value
    finally:
        con.close()
    cols = ["id", "corruption", "valuer", "seed", "device", "status", "wall_s", "fits", "stopped_early",
            "peak_device_bytes", "info", "error", "provenance"]
    last: dict[tuple, dict] = {}
    for r in rows:
        d = dict(zip(cols, r))
        d["scores"] = scores.get(d["id"], {})
        last[(d["corruption"], d["valuer"], d["seed"])] = d  # ordered by id: the last attempt wins
    return list(last.values())


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "-"
    return f"{statistics.mean(xs):.3f} ± {statistics.pstdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def _valuers(rows: list[dict]) -> list[dict]:
    """One summary per (corruption, valuer)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["corruption"], r["valuer"]), []).append(r)
    out = []
    for (corruption, valuer), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        metrics = sorted({m for r in ok for m in r["scores"]})
        info = json.loads(ok[0]["info"] or "{}") if ok else {}
        keep = {k: info[k] for k in ("engine", "passes", "training", "trainer", "learner", "iterations",
                                     "permutations", "valued") if k in info}
        walls = [r["wall_s"] for r in ok if r["wall_s"] is not None]
        out.append({
            "corruption": corruption, "valuer": valuer, "jobs": len(rs), "ok": len(ok),
            "statuses": {s: sum(r["status"] == s for r in rs) for s in sorted({r["status"] for r in rs})},
            "seeds": sorted(r["seed"] for r in ok),
            "scores": {m: _mean_std([r["scores"].get(m) for r in ok]) for m in metrics},
            "wall_s_mean": round(statistics.mean(walls), 3) if walls else None,
            "wall_s": [round(w, 3) for w in walls],  # the first job of a worker includes one-off warm-up
            "fits_mean": round(statistics.mean(r["fits"] for r in ok if r["fits"] is not None), 1)
            if any(r["fits"] is not None for r in ok) else None,
            "stopped_early": sum(bool(r["stopped_early"]) for r in ok),
            "peak_device_mib": round(max(r["peak_device_bytes"] for r in ok) / 2**20, 1)
            if any(r["peak_device_bytes"] for r in ok) else None,
            "device": sorted({r["device"] for r in rs}),
            "info": keep,
            "errors": sorted({(r["error"] or "").splitlines()[0][:300] for r in rs if r["status"] != "ok"}),
        })
    return out


def _pytest(log: Path) -> dict:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|errors|skipped|deselected|"
                                                        r"no tests ran|tests? collected)\b", ln)]
    return {"result": lines[-1].strip("= ").strip() if lines else None,
            "failures": [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))][:20]}


def _dvgs_speed(log: Path) -> dict:
    """exp1 medians, and per case: ms per DVGS step of each engine and the ratio line."""
    if not log.exists():
        return {}
    out: dict = {"exp1": [], "cases": {}}
    case = None
    for ln in log.read_text(errors="replace").splitlines():
        if re.search(r"s median of \d+", ln):
            out["exp1"].append(" ".join(ln.split()))
        elif m := re.match(r"(\S.*?): ([\d,]+) source, (\d+) target", ln):
            case = f"{m.group(1)} @ {m.group(2)}"
            out["cases"][case] = {}
        elif case and (m := re.match(r"\s+(floor\+t|floor|fast|hooks|opacus|naive)\s+([\d.]+)\s", ln)):
            out["cases"][case][f"{m.group(1)}_ms_per_step"] = float(m.group(2))
        elif case and "ratios:" in ln:
            out["cases"][case]["ratios"] = ln.split("ratios:", 1)[1].strip()
        elif case and "skipped" in ln:
            out["cases"][case].setdefault("skipped", []).append(" ".join(ln.split()))
    return out


def summarize(work: str, store: str, out: str) -> None:
    w, o = Path(work), Path(out)
    envf = w / "env.json"
    summary: dict = {"environment": json.loads(envf.read_text()) if envf.exists() else {}, "parts": []}
    parts = w / "parts.tsv"
    if parts.exists():
        for ln in parts.read_text().splitlines():
            name, status, rc, seconds, note = (ln.split("\t") + [""] * 5)[:5]
            summary["parts"].append({"part": name, "status": status, "exit_code": int(rc) if rc.lstrip("-").isdigit()
                                     else None, "seconds": int(seconds or 0), "note": note})
    summary["total_seconds"] = sum(p["seconds"] for p in summary["parts"])
    summary["pytest_gpu"] = _pytest(w / "pytest-gpu.log")
    summary["dvgs_speed"] = _dvgs_speed(w / "dvgs-speed.log")
    rows = _store_rows(Path(store))
    summary["valuers"] = _valuers(rows)
    if rows and rows[0]["provenance"]:
        summary["provenance_of_first_job"] = json.loads(rows[0]["provenance"])
    (o / "summary.json").write_text(json.dumps(summary, indent=1))

    e = summary["environment"]
    md = ["# valbench GPU suite", "",
          f"{e.get('gpu', e.get('nvidia_smi_L', '?'))}; torch {e.get('torch')} (CUDA {e.get('torch_cuda')}); "
          f"Python {e.get('python')}; {e.get('cpu_count')} CPUs; opacus {e.get('opacus')}; triton {e.get('triton')}", "",
          "| part | status | exit | seconds | note |", "|---|---|---|---|---|"]
    md += [f"| {p['part']} | {p['status']} | {p['exit_code']} | {p['seconds']} | {p['note']} |" for p in summary["parts"]]
    md += ["", f"pytest -m gpu: {summary['pytest_gpu']['result']}"]
    md += [f"    {f}" for f in summary["pytest_gpu"]["failures"]]
    sp = summary["dvgs_speed"]
    if sp:
        md += ["", "dvgs_speed (ms per DVGS step; exp1 = whole valuation):"]
        md += [f"    exp1 {ln}" for ln in sp["exp1"]]
        for case, d in sp["cases"].items():
            steps = ", ".join(f"{k.replace('_ms_per_step', '')} {v:g}" for k, v in d.items() if k.endswith("_ms_per_step"))
            md.append(f"    {case}: {steps}" + (f"; {d['ratios']}" if "ratios" in d else ""))
            md += [f"      {ln}" for ln in d.get("skipped", [])]
    if summary["valuers"]:
        md += ["", "wall s: value(task) alone, CUDA-synchronised (valbench.timing.timed); a worker's first CUDA job "
               "also pays one-off kernel loading, the first compiled fit torch.compile.",
               "", "| corruption | valuer | ok/jobs | score (mean ± std) | wall s (per seed) | fits | budget-stopped "
               "| peak GPU MiB | info | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for v in summary["valuers"]:
            score = "; ".join(f"{m} {s}" for m, s in v["scores"].items()) or "-"
            info = ", ".join(f"{k}={val}" for k, val in v["info"].items())
            walls = " ".join(f"{x:.2f}" for x in v["wall_s"])
            md.append(f"| {v['corruption']} | `{v['valuer']}` | {v['ok']}/{v['jobs']} | {score} | {walls} | "
                      f"{v['fits_mean']} | {v['stopped_early']} | {v['peak_device_mib']} | {info} | "
                      f"{'; '.join(v['errors']).replace('|', '/')} |")
    (o / "summary.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "tables":
        sys.exit(tables(*args))
    {"env": env, "snapshot": snapshot, "summarize": summarize}[cmd](*args)
