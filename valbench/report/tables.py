"""The paper's Tables 1-3, regenerated from the store.

Table 1: the score of the metric that declares ``paper_table = 1`` (corrupted-label
AUROC), one row per dataset. Table 2: the ``paper_table = 2`` metric (noise Spearman),
one row per dataset and learning mode. Table 3: valuation runtime, one row per
experiment (dataset x corruption). One column per valuer; cells are mean ± 1 population
std over seeds (the paper's Table 1 shows ± 2 population std, as the authors' code
computed it, though its caption says ± std: docs/protocol.md §3 and §6); the best cell
of each row is bold.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from tabulate import tabulate

from valbench.errors import ConfigError, StoreError
from valbench.params import parse_spec
from valbench.plugins import Registry, option

FORMATS = ("markdown", "latex", "csv")


def metric_for_table(registry: Registry, number: int) -> str:
    names = [p.name for p in registry.all() if p.kind == "metric" and option(p, "paper_table") == number]
    if not names:
        raise ConfigError(f"no registered metric provides table {number}")
    if len(names) > 1:
        raise ConfigError(f"metrics {', '.join(names)} all claim table {number}; pick one with --metric")
    return names[0]


def _score_text(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _sig(x: float, digits: int) -> str:
    return np.format_float_positional(x, precision=digits, fractional=False, trim="-")


def _time_text(mean: float, std: float) -> str:
    return f"{_sig(mean, 3)} ± {_sig(std, 2)} s ({mean / 60:.2f} min)"


def _cells(df: pd.DataFrame, rows: list[str], column: str, text) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(means, cells, counts) indexed by ``rows``, one column per valuer label."""
    grouped = df.groupby(rows + ["valuer_label"])[column]
    stats = grouped.agg(mean="mean", std=lambda s: float(np.std(s, ddof=0)), n="count").reset_index()
    stats["text"] = [text(m, s) for m, s in zip(stats["mean"], stats["std"])]
    means = stats.pivot_table(index=rows, columns="valuer_label", values="mean", aggfunc="first")
    cells = stats.pivot_table(index=rows, columns="valuer_label", values="text", aggfunc="first")
    ns = stats.pivot_table(index=rows, columns="valuer_label", values="n", aggfunc="first")
    return means, cells, ns


def _fits_text(fits: pd.Series, stopped: pd.Series) -> str:
    fits = fits.dropna()
    if fits.empty:
        return ""
    lo, hi = int(fits.min()), int(fits.max())
    text = f"{lo:,} fits" if lo == hi else f"{lo:,}-{hi:,} fits"
    return f" · {text}{'*' if stopped.fillna(0).astype(bool).any() else ''}"


def _with_fits(df: pd.DataFrame, rows: list[str], cells: pd.DataFrame) -> pd.DataFrame:
    """Append the number of model fits (and a budget-stop mark) to each Table 3 cell."""
    if "fits" not in df.columns:
        return cells
    stopped = df["stopped_early"] if "stopped_early" in df.columns else pd.Series(0, index=df.index)
    extra = {k: _fits_text(g["fits"], stopped.loc[g.index]) for k, g in df.groupby(rows + ["valuer_label"])}
    out = cells.copy()
    for key in out.index:
        for v in out.columns:
            full = (*(key if isinstance(key, tuple) else (key,)), v)
            if not pd.isna(out.loc[key, v]):
                out.loc[key, v] = out.loc[key, v] + extra.get(full, "")
    return out


def _stopped(df: pd.DataFrame, rows: list[str]) -> set[tuple]:
    """The (row..., valuer) cells in which a budget stopped at least one seed's valuation."""
    if "stopped_early" not in df.columns:
        return set()
    cut = df[df["stopped_early"].fillna(0).astype(bool)]
    return {tuple(r) for r in cut[rows + ["valuer_label"]].itertuples(index=False, name=None)}


def build(df: pd.DataFrame, number: int, metric: str | None, higher_is_better: bool = True
          ) -> tuple[list[str], list[list[str]], list[list[bool]], str]:
    """Header, body cells, bold flags and a caption for table ``number`` (``higher_is_better``:
    the metric's orientation, which decides the best cell of tables 1 and 2)."""
    if number in (1, 2):
        if metric not in df.columns or df[metric].notna().sum() == 0:
            raise StoreError(f"the store has no '{metric}' results for table {number}; run a corruption it scores")
        df = df[df[metric].notna()]
        rows = ["dataset_label"] if number == 1 else ["dataset_label", "mode"]
        if number == 1 and df.groupby("dataset_label")["corruption_label"].nunique().max() > 1:
            rows.append("corruption_label")
        means, cells, ns = _cells(df, rows, metric, _score_text)
        best_is_max = higher_is_better
        caption = (f"Table {number}: {metric}, mean ± std over seeds (n); best in bold; "
                   f"{'higher' if higher_is_better else 'lower'} is better; * = a budget stopped the valuer "
                   "before it finished in at least one seed (a score of unfinished work, never bold).")
    elif number == 3:
        if df.empty:
            raise StoreError("the store has no finished jobs for table 3")
        rows = ["dataset_label", "corruption_label"]
        if df["mode"].nunique() > 1:
            rows.append("mode")
        means, cells, ns = _cells(df, rows, "wall_s", _time_text)
        cells = _with_fits(df, rows, cells)
        best_is_max = False
        caption = ("Table 3: valuation runtime (wall clock of value(task)), mean ± std over seeds (n), and the "
                   "model fits the valuer reported (range over seeds; * = a budget stopped it early); fastest in bold.")
    else:
        raise ConfigError(f"there is no table {number}; choose 1, 2 or 3")
    stopped = _stopped(df, rows)
    valuers = list(cells.columns)
    header = [{"dataset_label": "dataset", "corruption_label": "corruption"}.get(r, r) for r in rows] + ["n"] + valuers
    body, bold = [], []
    for key in cells.index:
        key = key if isinstance(key, tuple) else (key,)
        m = means.loc[key if len(key) > 1 else key[0]]
        eligible = m[[v for v in m.index if number == 3 or (*key, v) not in stopped]]  # unfinished work is no best
        best = eligible.max() if best_is_max else eligible.min()
        n = ns.loc[key if len(key) > 1 else key[0]].dropna().astype(int)
        n_text = str(n.max()) if n.min() == n.max() else f"{n.min()}-{n.max()}"
        row = [*map(str, key), n_text]
        flags = [False] * len(row)
        for v in valuers:
            text = cells.loc[key if len(key) > 1 else key[0], v]
            if pd.isna(text):
                row.append("NA")
                flags.append(False)
                continue
            if n.get(v, 0) != n.max():
                text += f" (n={n[v]})"
            cut = (*key, v) in stopped
            if cut and number in (1, 2):
                text += " *"
            row.append(text)
            flags.append(bool(np.isclose(m[v], best)) and not (cut and number in (1, 2)))
        body.append(row)
        bold.append(flags)
    return header, body, bold, caption


def render(header: list[str], body: list[list[str]], bold: list[list[bool]], caption: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":
        buf = io.StringIO()
        pd.DataFrame(body, columns=header).to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "markdown":
        marked = [[f"**{c}**" if b else c for c, b in zip(r, f)] for r, f in zip(body, bold)]
        return caption + "\n\n" + tabulate(marked, headers=header, tablefmt="pipe", disable_numparse=True) + "\n"
    def tex(c: str) -> str:
        return c.replace("±", r"$\pm$").replace("_", r"\_")
    marked = [[rf"\textbf{{{tex(c)}}}" if b else tex(c) for c, b in zip(r, f)] for r, f in zip(body, bold)]
    table = tabulate(marked, headers=[tex(h) for h in header], tablefmt="latex_raw", disable_numparse=True)
    return f"% {caption}\n{table}\n"


def table(df: pd.DataFrame, number: int, registry: Registry, fmt: str = "markdown", metric: str | None = None) -> str:
    if number in (1, 2) and metric is None:
        metric = metric_for_table(registry, number)
    higher = True
    if number in (1, 2):
        higher = bool(option(registry.get("metric", parse_spec(metric).name), "higher_is_better"))
    return render(*build(df, number, metric, higher), fmt)
