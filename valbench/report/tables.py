"""The paper's Tables 1-3 from the store alone (no plugin, no torch).

One row per experiment cell (dataset, corruption, mode) and valuer, best first, so that
a column of published numbers and a paired test fit beside ours (the paper prints one
column per valuer; with a dozen valuers and a paper column each, that layout no longer
reads).

- Table 1 / 2: the score of the metric recorded with ``paper_table`` 1 (corrupted-label
  AUROC) or 2 (noise Spearman); mean ± 1 population std over seeds (the paper's Table 1
  printed ± 2 std: docs/protocol.md §3), the number of seeds n, the published value where
  the experiment is one of the paper's, and a two-sided Wilcoxon signed-rank test of each
  valuer against the row group's best over the seeds both finished (paired: every valuer
  of a cell sees the same split, corruption and initialisation per seed).
- Table 3: valuation time (``value(task)`` alone), total time with scoring (filtering
  retrains included, as the paper's minutes were), model fits, and the paper's minutes.

Coverage is marked in every table, never shown as a plain number: ``*`` = a budget
stopped the valuation before it finished in at least one seed (never best); "k/n"
seeds = some jobs failed, timed out or ran out of memory (named in the note); a cell
without any finished job shows its failures and no number. A one-seed cell shows no ±.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from tabulate import tabulate

from valbench.errors import ConfigError, StoreError

FORMATS = ("markdown", "latex", "csv")
GROUP = {"dataset_label": "dataset", "corruption_label": "corruption", "mode": "mode"}
STOPPED = "* = a budget stopped the valuation before it finished in at least one seed (a score of unfinished work, never best)"


PAPER_METRICS = {1: "corruption-auroc", 2: "noise-spearman"}  # the paper's own scores win a table


def metric_for_table(metrics: pd.DataFrame, number: int) -> str:
    """The label of the recorded metric that fills table ``number`` (the paper's own
    metric where another one claims the table too)."""
    names = list(metrics.index[metrics["paper_table"] == number]) if len(metrics) else []
    if not names:
        raise StoreError(f"the store has no results of a metric for table {number} (runs record the metrics "
                         "they scored); run a corruption such a metric scores, or choose one with --metric")
    if len(names) > 1:
        if PAPER_METRICS[number] in names:
            return PAPER_METRICS[number]
        raise ConfigError(f"metrics {', '.join(names)} all fill table {number}; pick one with --metric")
    return names[0]


def _check_metric(jobs: pd.DataFrame, metric: str, number: int, recorded: list[str]) -> None:
    """A one-line error naming what is wrong with ``--metric`` (``recorded``: the metric
    labels the runs recorded, for a suggestion)."""
    if metric in jobs.columns and jobs[metric].notna().any():
        return
    import difflib

    points = [c for c in jobs.columns if isinstance(c, str) and c.startswith(metric + ":")]
    if points:
        raise ConfigError(f"'{metric}' is a curve ({points[0]}, ...), not one score per job; tables show single "
                          "scores (valbench report draws the curves, valbench export lists them)")
    close = difflib.get_close_matches(metric, recorded, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise StoreError(f"the store has no '{metric}' results for table {number}{hint}; run a corruption it scores")


def _sig(x: float, digits: int = 3) -> str:
    return np.format_float_positional(x, precision=digits, fractional=False, trim="-")


def _wilcoxon(a: pd.Series, b: pd.Series) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired scores (by seed); None under 2 pairs."""
    from scipy.stats import wilcoxon

    pairs = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(pairs) < 2:
        return None
    d = pairs.iloc[:, 0] - pairs.iloc[:, 1]
    if np.allclose(d, 0):
        return 1.0
    return float(wilcoxon(pairs.iloc[:, 0], pairs.iloc[:, 1]).pvalue)


def _coverage(jobs: pd.DataFrame) -> str:
    bad = jobs["status"][jobs["status"] != "ok"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in bad.items())


def rows(jobs: pd.DataFrame, number: int, metrics: pd.DataFrame, paper: pd.DataFrame | None = None,
         metric: str | None = None) -> tuple[pd.DataFrame, list[str], str]:
    """The numbers of table ``number``: one row per (group..., valuer) with mean, std, n and
    the rest; also the group columns and a caption. ``jobs``: valbench.results.jobs_frame;
    ``metrics``: recorded metric info by label; ``paper``: published values (dataset_label,
    corruption_label, mode, valuer, metric, mean, std, minutes)."""
    if number not in (1, 2, 3):
        raise ConfigError(f"there is no table {number}; choose 1, 2 or 3")
    if jobs.empty:
        raise StoreError("the store has no jobs")
    higher = True
    if number in (1, 2):
        metric = metric or metric_for_table(metrics, number)
        _check_metric(jobs, metric, number, list(metrics.index))
        if metric in metrics.index:
            higher = bool(metrics.loc[metric, "higher_is_better"])
        scored = jobs.loc[jobs[metric].notna(), ["dataset_label", "corruption_label", "mode"]].drop_duplicates()
        jobs = jobs.merge(scored, on=list(scored.columns))  # the cells this metric scores, failures included
        value = metric
    else:
        jobs = jobs.assign(total_s=jobs["wall_s"] + jobs["metric_s"].fillna(0.0))
        value, higher = "wall_s", False
    group = ["dataset_label", "corruption_label", "mode"]
    out = []
    for key, cell in jobs.groupby(group, sort=True):
        stats = []
        for valuer, vj in cell.groupby("valuer_label", sort=False):
            ok = vj[vj["status"] == "ok"]
            x = pd.to_numeric(ok.set_index("seed")[value], errors="coerce").dropna()
            stats.append(dict(zip(group, key), valuer=valuer, valuer_name=vj["valuer"].iloc[0], n=len(x),
                              jobs=len(vj), mean=x.mean() if len(x) else np.nan,
                              std=float(np.std(x, ddof=0)) if len(x) else np.nan,
                              stopped=bool(ok["stopped_early"].any()), note=_coverage(vj), _x=x,
                              **({} if number != 3 else _times(ok))))
        eligible = [s for s in stats if not s["stopped"] and s["n"] and s["n"] == s["jobs"]]
        best = (max if higher else min)(eligible, key=lambda s: s["mean"], default=None)
        for s in stats:
            s["best"] = best is not None and np.isclose(s["mean"], best["mean"]) and s in eligible
            if number != 3:
                s["p_vs_best"] = None if best is None or s is best else _wilcoxon(s["_x"], best["_x"])
        stats.sort(key=lambda s: (np.isnan(s["mean"]), -s["mean"] if higher else s["mean"]))
        out += stats
    table = pd.DataFrame(out).drop(columns="_x")
    _add_paper(table, paper, metric if number != 3 else None)
    shown = [g for g in group if g == "dataset_label" or table[g].nunique() > 1 or (g == "mode" and number == 2)]
    what = {1: f"{metric}", 2: f"{metric}", 3: "valuation time"}[number]
    caption = (f"Table {number}: {what}, mean ± std over seeds (n); best first and in bold"
               + ("" if number == 3 else f" ({'higher' if higher else 'lower'} is better); p = two-sided Wilcoxon "
                  "signed-rank test against the best over paired seeds")
               + ("; total = valuation + scoring (filtering retrains); fits = models the valuer trained"
                  if number == 3 else "")
               + "; paper = as published (DVGS paper" + ("; its Table 1 ± is 2 std, ours 1" if number == 1 else "")
               + f"); {STOPPED}; k/n = k of n seeds finished.")
    return table, shown, caption


def _times(ok: pd.DataFrame) -> dict:
    fits = ok["fits"].dropna()
    total = ok["total_s"].dropna()
    return dict(total_mean=total.mean() if len(total) else np.nan,
                total_std=float(np.std(total, ddof=0)) if len(total) else np.nan,
                fits_min=fits.min() if len(fits) else np.nan, fits_max=fits.max() if len(fits) else np.nan)


def _add_paper(table: pd.DataFrame, paper: pd.DataFrame | None, metric: str | None) -> None:
    table["paper_mean"] = np.nan
    table["paper_std"] = np.nan
    if paper is None or paper.empty:
        return
    ref = paper if metric is None else paper[paper["metric"] == metric.split("[")[0]]
    for i, r in table.iterrows():
        hit = ref[(ref["dataset_label"] == r["dataset_label"]) & (ref["corruption_label"] == r["corruption_label"])
                  & (ref["mode"] == r["mode"]) & (ref["valuer"] == r["valuer_name"])]
        if len(hit):
            if metric is None:
                table.loc[i, "paper_mean"] = hit["minutes"].iloc[0] * 60.0  # Table 3: seconds, like ours
            else:
                table.loc[i, ["paper_mean", "paper_std"]] = hit[["mean", "std"]].iloc[0].to_numpy(dtype=float)


def _pm(mean: float, std: float, n: int, fmt=lambda v: f"{v:.3f}") -> str:
    if np.isnan(mean):
        return "—"
    return fmt(mean) if n <= 1 or np.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def _time(mean: float, std: float, n: int) -> str:
    """A time and its spread in one unit chosen by the mean: ms, s or min."""
    if np.isnan(mean):
        return "—"
    scale, unit = (1e-3, "ms") if mean < 1 else (1.0, "s") if mean < 120 else (60.0, "min")
    text = f"{_sig(mean / scale)} {unit}"
    return text if n <= 1 or np.isnan(std) else f"{_sig(mean / scale)} ± {_sig(std / scale, 2)} {unit}"


def _cells(table: pd.DataFrame, shown: list[str], number: int) -> tuple[list[str], list[list[str]], list[bool]]:
    header = [GROUP[g] for g in shown] + ["valuer", "n"]
    header += ["score", "paper", "p"] if number != 3 else ["valuation", "total", "fits", "paper"]
    header.append("note")
    body, bold = [], []
    for _, r in table.iterrows():
        n = f"{r['n']}" if r["n"] == r["jobs"] else f"{r['n']}/{r['jobs']}"
        star = " *" if r["stopped"] else ""
        row = [str(r[g]) for g in shown] + [str(r["valuer"]), n]
        if number != 3:
            p = "best" if r["best"] else ("" if pd.isna(r["p_vs_best"]) else f"{r['p_vs_best']:.3f}")
            row += [_pm(r["mean"], r["std"], r["n"]) + star, _pm(r["paper_mean"], r["paper_std"], 2), p]
        else:
            fits = "" if np.isnan(r["fits_min"]) else (f"{int(r['fits_min']):,}" if r["fits_min"] == r["fits_max"]
                                                        else f"{int(r['fits_min']):,}-{int(r['fits_max']):,}")
            row += [_time(r["mean"], r["std"], r["n"]) + star, _time(r["total_mean"], r["total_std"], r["n"]),
                    fits + star if fits else "", "" if np.isnan(r["paper_mean"]) else f"{_sig(r['paper_mean'] / 60)} min"]  # as printed
        row.append(r["note"])
        body.append(row)
        bold.append(bool(r["best"]))
    return header, body, bold


def render(table: pd.DataFrame, shown: list[str], caption: str, number: int, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":  # numbers in columns of their own, for programs
        cols = shown + ["valuer", "n", "jobs", "mean", "std", "paper_mean", "paper_std", "best", "stopped", "note"]
        cols += ["total_mean", "total_std", "fits_min", "fits_max"] if number == 3 else ["p_vs_best"]
        buf = io.StringIO()
        table.rename(columns=GROUP)[[GROUP.get(c, c) for c in cols]].to_csv(buf, index=False)
        return buf.getvalue()
    header, body, bold = _cells(table, shown, number)
    score_cols = (len(shown) + 2,)  # the score (tables 1, 2) or the valuation time (table 3)
    if fmt == "markdown":
        marked = [[f"**{c}**" if b and j in score_cols and c else c for j, c in enumerate(r)]
                  for r, b in zip(body, bold)]
        return caption + "\n\n" + tabulate(marked, headers=header, tablefmt="pipe", disable_numparse=True) + "\n"

    def tex(c: str) -> str:
        return c.replace("±", r"$\pm$").replace("_", r"\_").replace("—", "--")
    marked = [[rf"\textbf{{{tex(c)}}}" if b and j in score_cols and c else tex(c) for j, c in enumerate(r)]
              for r, b in zip(body, bold)]
    return f"% {caption}\n" + tabulate(marked, headers=[tex(h) for h in header], tablefmt="latex_raw",
                                       disable_numparse=True) + "\n"


def table(jobs: pd.DataFrame, number: int, metrics: pd.DataFrame, fmt: str = "markdown", metric: str | None = None,
          paper: pd.DataFrame | None = None) -> str:
    """Table ``number`` as text (markdown, latex or csv)."""
    t, shown, caption = rows(jobs, number, metrics, paper, metric)
    return render(t, shown, caption, number, fmt)
