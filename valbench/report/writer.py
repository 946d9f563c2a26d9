"""`valbench report`: every table and figure a store allows, in one folder, with provenance.

The folder holds ``index.md`` (what is where, and where every number came from), each
table as markdown, LaTeX and CSV, each figure as PNG and PDF, and with ``html`` a
self-contained ``leaderboard.html``. It is built in a temporary folder beside the target
and moved into place at the end, so a failure leaves nothing behind and an earlier
report is replaced whole. Only the store is read (no plugin, no torch).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from valbench.errors import ConfigError, StoreError
from valbench.report.tables import render, rows
from valbench.results import jobs_frame, metric_info, paper_frame
from valbench.store import open_existing

MANIFEST = ".valbench-report"  # the files a report wrote, one per line
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv"}


def check_target(out: Path) -> None:
    """Refuse a file, or a folder that holds anything but an earlier valbench report (its
    files are listed in MANIFEST: a file a user added there is never deleted)."""
    if out.is_file():
        raise ConfigError(f"{out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        ours = set(manifest.read_text().split()) | {MANIFEST} if manifest.is_file() else set()
        others = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if others:
            what = "other files" if not ours else "files that are not part of the earlier report there"
            raise ConfigError(f"{out} holds {what} (e.g. {others[0]}); give a new or empty folder "
                              "(an earlier valbench report there is replaced)")
    if not out.parent.exists():
        raise ConfigError(f"the folder of {out} does not exist")


def provenance(jobs: pd.DataFrame) -> dict[str, str]:
    """Where the numbers came from, from the provenance every attempt recorded."""
    recs = [json.loads(p) for p in jobs["provenance"].dropna()]
    out: dict[str, str] = {}
    for key, label in (("valbench", "valbench"), ("git_commit", "commit"), ("python", "Python"),
                       ("torch", "torch"), ("numpy", "numpy"), ("device", "device"), ("device_name", "processor"),
                       ("cuda", "CUDA"), ("torch_threads", "torch threads"), ("platform", "platform")):
        values = sorted({str(r[key]) for r in recs if r.get(key) is not None})
        if values:
            out[label] = ", ".join(values)
    ok = jobs[jobs["status"] == "ok"]
    out["jobs"] = f"{len(jobs)} ({len(ok)} ok" + "".join(
        f", {n} {s}" for s, n in jobs["status"][jobs["status"] != "ok"].value_counts().items()) + ")"
    out["seeds"] = ", ".join(map(str, sorted(jobs["seed"].unique())))
    out["valuers"] = ", ".join(sorted(jobs["valuer_label"].unique()))
    stopped = sorted(ok.loc[ok["stopped_early"], "valuer_label"].unique())
    out["budget-stopped"] = ", ".join(stopped) if stopped else "none"
    if "finished" in jobs:
        done = pd.to_datetime(jobs["finished"].dropna(), unit="s", utc=True)
        if len(done):
            out["run between"] = f"{done.min():%Y-%m-%d %H:%M} and {done.max():%Y-%m-%d %H:%M} UTC"
    return out


@dataclass(frozen=True)
class Table:
    """One of Tables 1-3 as a store gives it (valbench.report.tables.rows)."""

    number: int
    numbers: pd.DataFrame
    shown: list[str]  # the row-group columns the table shows
    caption: str

    @property
    def name(self) -> str:
        return f"table{self.number}"

    def text(self, fmt: str) -> str:
        return render(self.numbers, self.shown, self.caption, self.number, fmt)


def tables(jobs: pd.DataFrame, metrics: pd.DataFrame, paper: pd.DataFrame) -> tuple[list[Table], dict[int, str]]:
    """Every table the store allows, and why not for the others."""
    made, missing = [], {}
    for number in (1, 2, 3):
        try:
            made.append(Table(number, *rows(jobs, number, metrics, paper)))
        except (StoreError, ConfigError) as exc:
            missing[number] = str(exc)
    return made, missing


def write_report(results: str | Path, out: str | Path, html: bool = False) -> Path:
    """Write the report of the store at ``results`` into the folder ``out``."""
    from valbench.report import figures as figs

    out = Path(out).resolve()  # '.' has no name to put a temporary folder beside
    check_target(out)
    with open_existing(results) as store:
        jobs, metrics, paper = jobs_frame(store), metric_info(store), paper_frame(store)
        if jobs.empty:
            raise StoreError(f"{results} holds no jobs; nothing to report")
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            made, missing = tables(jobs, metrics, paper)
            for table in made:
                for fmt, ext in EXTENSIONS.items():
                    (tmp / f"{table.name}.{ext}").write_text(table.text(fmt))
            drawn = figs.draw(jobs, tmp, store)
            prov = provenance(jobs)
            (tmp / "index.md").write_text(index(results, made, missing, drawn, prov, html))
            if html:
                from valbench.report.html import page

                shown = [(page_caption(t.caption), page_table(t)) for t in made]
                pictures = [(name, paths[0]) for name, paths in drawn.items() if not isinstance(paths, str)]
                (tmp / "leaderboard.html").write_text(page("valbench leaderboard", shown, pictures, prov,
                                                           notes=f"From {Path(results).name}."))
            (tmp / MANIFEST).write_text("\n".join(sorted(p.name for p in tmp.iterdir())) + "\n")
            _swap(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def page_caption(caption: str) -> str:
    """A table's caption as the page shows it: columns instead of '±', a marks column instead of bold."""
    return (caption.replace("mean ± std over seeds (n); best first and in bold",
                                              "mean and std over seeds (n); best first, marked 'best'")
            .replace("; best first and in bold;", "; best first, marked 'best';"))


def page_table(table: Table) -> pd.DataFrame:
    """A table's numbers as the leaderboard page shows them (marks in a column of their own)."""
    t = table.numbers
    page = t[table.shown + ["valuer"]].rename(columns={"dataset_label": "dataset", "corruption_label": "corruption"})
    marks = ["best" if b else "" for b in t["best"]]  # beside the valuer: a wide table scrolls
    marks = [f"{m} *".strip() if s else m for m, s in zip(marks, t["stopped"])]
    page["marks"] = [f"{m} {note}".strip() for m, note in zip(marks, t["note"])]
    cols = ["n", "jobs", "mean", "std", "paper_mean", "paper_std"]
    cols += [c for c in ("p_vs_best", "total_mean", "fits_max") if c in t]
    page = page.join(t[cols])
    for col in ("mean", "std", "paper_mean", "paper_std", "p_vs_best", "total_mean"):
        if col in page:  # four significant digits: 9.571e-05 s reads as 0.0000957 on the page
            page[col] = page[col].map(lambda v: float(f"{v:.4g}") if pd.notna(v) else v)
    if "total_mean" in t:  # Table 3: say the unit
        page = page.rename(columns={"mean": "valuation_s", "std": "std_s", "paper_mean": "paper_s",
                                    "total_mean": "total_s"}).drop(columns="paper_std")
    return page


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished report in place: the earlier report's files out, the new ones in
    (file by file: ``out`` itself may be the current folder)."""
    out.mkdir(exist_ok=True)
    manifest = out / MANIFEST
    for name in (manifest.read_text().split() if manifest.is_file() else []):
        (out / name).unlink(missing_ok=True)
    for p in tmp.iterdir():
        os.replace(p, out / p.name)
    tmp.rmdir()


def index(results, made, missing, drawn, prov, html: bool) -> str:
    lines = [f"# valbench report of `{Path(results).name}`", ""]
    lines += ["## Provenance", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in prov.items()] + [""]
    lines += ["## Tables", ""]
    for t in made:
        lines += [f"### Table {t.number}", "", f"[markdown]({t.name}.md) · [LaTeX]({t.name}.tex) · [CSV]({t.name}.csv)",
                  "", t.text("markdown"), ""]
    lines += [f"- Table {n}: not in this store ({why})" for n, why in missing.items()] + [""]
    lines += ["## Figures", ""]
    for name, paths in drawn.items():
        if isinstance(paths, str):
            lines.append(f"- {name}: {paths}")
        else:
            png = next((p for p in paths if p.suffix == ".png"), paths[0])
            pdf = next((p for p in paths if p.suffix == ".pdf"), None)
            lines += [f"### {name}", "", f"![{name}]({png.name})" + (f" ([PDF]({pdf.name}))" if pdf else ""), ""]
    if html:
        lines += ["", "The same as a page to open in a browser: [leaderboard.html](leaderboard.html)."]
    return "\n".join(lines) + "\n"
