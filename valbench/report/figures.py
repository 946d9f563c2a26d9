"""The paper's Figures 2-8, drawn from a store's jobs (one row per job, as
:func:`valbench.results.jobs_frame` gives them), without torch or any plugin.

``draw(jobs, out_dir)`` writes every figure the jobs allow as PNG and PDF and returns,
per figure, the files written or why it could not be drawn ("not in this store: needs
..."). ``draw_store(path, out_dir)`` does the same for a store file and also reads the
stored values (Figure 7 plots the values of the ``apc`` valuer themselves).

Only jobs whose status is ``ok`` are drawn; each caption counts the jobs of the figure's
cells that failed, timed out or did not finish. A valuer that a budget stopped before it
finished (``stopped_early``) in at least one job is drawn with `` *`` after its name and
the caption says what the star means. Figures are readable in grey-scale: valuers differ
by marker and position as well as colour, directions and datasets by line style.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from valbench.report.plotting import (
    CAPTIONS, COLUMNS, HORIZONTAL, LINESTYLES, MARKERS, MAX_VALUERS, NEED, STAR, Values, Jobs, add_caption,
    new_figure, split_panels, save, short_label, natural_label)


def _fig2(j: Jobs) -> Figure | str:
    auroc = j.score("corruption-auroc")
    if auroc is None:
        return NEED + "corruption-auroc scores (jobs with a label corruption such as 'labels')"
    df, note = j.select(j.kind.eq("mask"))
    df = df.assign(score=auroc[df.index]).dropna(subset=["score"])
    pooled = ""
    if df["valuer_label"].nunique() > MAX_VALUERS:  # e.g. the Figure 6 grid: one box per valuer, not per setting
        configs = df.groupby("valuer")["valuer_label"].nunique()
        df = df.assign(valuer_label=[f"{v} ({configs[v]} configurations)" if configs[v] > 1 else label
                                     for v, label in zip(df["valuer"], df["valuer_label"])])
        pooled = (f" With more than {MAX_VALUERS} valuer settings, the settings of each valuer are pooled into one "
                  "box (one point per job).")
        j.style.update({v: j.style.get(v, dict(color="grey", marker="o")) for v in df["valuer_label"].unique()})
    names, star = j.display(df)
    panels = split_panels(df)
    order = sorted(df["valuer_label"].unique())
    longest = max(len(names[v]) for v in order)
    fig, axes = new_figure(len(panels), width=3.4, height=1.2 + 0.38 * len(order), extra=0.07 * longest, sharey=True)
    for ax, (title, g) in zip(axes, panels):  # valuers on the y axis: long labels stay readable
        data = [g.loc[g["valuer_label"] == v, "score"].to_numpy() for v in order]
        ax.boxplot(data, positions=range(len(order)), widths=0.6, showfliers=False, medianprops={"color": "black"},
                   **HORIZONTAL)
        rng = np.random.default_rng(0)
        for i, v in enumerate(order):
            s = g.loc[g["valuer_label"] == v, "score"]
            ax.scatter(s, i + rng.uniform(-0.15, 0.15, len(s)), s=22, zorder=3, edgecolor="black", linewidth=0.4,
                       **j.style[v])
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, zorder=1)
        ax.set_yticks(range(len(order)), [names.get(v, v) for v in order])
        ax.set_ylim(len(order) - 0.5, -0.5)  # the first valuer on top
        ax.set(title=title, ylabel="", xlabel="AUROC(c, -v)")
    fig.suptitle("Figure 2: corrupted-label detection")
    add_caption(fig, CAPTIONS["fig2"] + " Grey dashed: a random ranking's expected AUROC." + pooled + star + note)
    return fig


def _curve_figure(j: Jobs, df: pd.DataFrame, name: str, title: str, note: str,
                  pairs: pd.DataFrame | None = None) -> Figure:
    """Filtering curves, one panel per dataset; ``pairs`` (Figure 5): dvgs jobs with the values file of
    the apc job of their cell, drawn as DVGS-against-APC scatter panels after the curves."""
    long = j.curves(df)
    names, star = j.display(df)
    panels = split_panels(long)
    scatters = list(pairs.groupby("dataset_label")) if pairs is not None and len(pairs) else []
    fig, axes = new_figure(len(panels) + len(scatters), extra=2.0)
    for ax, (dataset, g) in zip(axes[len(panels):], scatters):
        for v, gv in g.groupby("valuer_label"):
            xy = [(j.values(a), j.values(d)) for a, d in zip(gv["values_file_apc"], gv["values_file"])]
            x, y = (np.concatenate([np.ravel(p[k]) for p in xy if len(p[0]) == len(p[1])]) for k in (0, 1))
            r = np.corrcoef(x, y)[0, 1] if len(x) > 1 else float("nan")
            ax.scatter(x, y, s=10, alpha=0.6, edgecolor="none", label=f"{names[v]}: Pearson r = {r:.2f}",
                       **j.style[v])
        ax.set(title=short_label(dataset), xlabel="APC value", ylabel="DVGS value")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    for ax, (panel, g) in zip(axes, panels):
        for v, gv in g.groupby("valuer_label"):
            for direction, linestyle in (("remove-low", "-"), ("remove-high", "--")):
                stats = gv[gv["direction"] == direction].groupby("q")["score"].agg(["mean", "std", "count"])
                if stats.empty:
                    continue
                ax.plot(stats.index, stats["mean"], linestyle=linestyle, markersize=5, linewidth=1.4, **j.style[v])
                if (stats["count"] > 1).any():
                    sd = stats["std"].fillna(0)
                    ax.fill_between(stats.index, stats["mean"] - sd, stats["mean"] + sd, alpha=0.12,
                                    color=j.style[v]["color"], linewidth=0)
        ylabel = "test R²" if (g["mode"] == "unsupervised").all() else "test score (task's measure)"
        ax.set(title=panel, xlabel="fraction of source samples removed", ylabel=ylabel)
    handles = [Line2D([], [], linestyle="-", label=names[v], **j.style[v]) for v in sorted(names)]
    handles += [Line2D([], [], color="black", linestyle="-", label="remove low values"),
                Line2D([], [], color="black", linestyle="--", label="remove high values")]
    axes[min(len(panels), COLUMNS) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                                               fontsize=8, frameon=False)
    fig.suptitle(title)
    seeds = long.groupby(["dataset_label", "valuer_label"])["seed"].nunique()
    n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    measure = " Test score: AUROC for two classes, accuracy for more." if (long["mode"] != "unsupervised").any() else ""
    right = " Right: DVGS against APC values of the same source samples, pooled over seeds." if scatters else ""
    add_caption(fig, CAPTIONS[name] + f" Mean over {n} seed(s); band = ± 1 std over seeds." + measure + right + star
             + note)
    return fig


def _scored(j: Jobs, mask: pd.Series) -> pd.Series:
    """The ok jobs under ``mask`` that have filtering scores."""
    scored = j.all[list(j.filtering)].notna().any(axis=1) if j.filtering else mask & False
    return mask & j.is_ok & scored


def _filtering(kind: str, name: str, title: str, truth: str) -> Callable[[Jobs], Figure | str]:
    """Figures 3 and 4: the filtering curves of the cells whose corruption's truth is ``kind``."""
    def make(j: Jobs) -> Figure | str:
        if not _scored(j, j.kind.eq(kind)).any():
            return NEED + f"filtering scores (--metrics 'filtering') of jobs with {truth}"
        df, note = j.select(j.kind.eq(kind))
        return _curve_figure(j, df, name, title, note)
    return make


def _fig5(j: Jobs) -> Figure | str:
    clean = j.all["corruption"].eq("none")
    if not {"dvgs", "apc"} <= set(j.all.loc[_scored(j, clean), "valuer"]):
        return NEED + ("filtering scores of valuers dvgs and apc on uncorrupted data "
                       "(--corruptions none --metrics filtering, dataset lincs)")
    cells = j.all.loc[clean & j.all["valuer"].isin(["dvgs", "apc"]), "dataset_label"].unique()
    df, note = j.select(clean & j.all["dataset_label"].isin(cells))
    pairs = None
    if j.values is not None:  # the paper's panels (c-d): DVGS values against APC values, paired by cell
        v, cell = df.dropna(subset=["values_file"]), ["dataset_label", "corruption_label", "mode", "seed"]
        pairs = v[v["valuer"] == "dvgs"].merge(v.loc[v["valuer"] == "apc", cell + ["values_file"]], on=cell,
                                               suffixes=("", "_apc"))
    return _curve_figure(j, df, "fig5", "Figure 5: filtering on DVGS and APC values", note, pairs)


def _fig6(j: Jobs) -> Figure | str:
    auroc = j.score("corruption-auroc")
    dvgs = j.all["valuer"].eq("dvgs") & j.kind.eq("mask")
    if auroc is None or auroc[dvgs & j.is_ok].notna().sum() == 0 \
            or j.all.loc[dvgs & j.is_ok & auroc.notna(), "valuer_label"].nunique() < 2:
        return NEED + "corruption-auroc scores of at least two dvgs configurations (a hyper-parameter grid)"
    df, note = j.select(dvgs)
    df = df.assign(score=auroc[df.index]).dropna(subset=["score"])
    names, star = j.display(df)
    fig, (ax,) = new_figure(1, width=5.2, height=3.8)
    for i, (dataset, g) in enumerate(df.groupby("dataset_label")):
        x = np.sort(g["score"].to_numpy())
        ax.step(np.r_[x[0], x], np.r_[0, np.arange(1, len(x) + 1) / len(x)], where="post", color="black",
                linestyle=LINESTYLES[i % len(LINESTYLES)], label=f"{short_label(dataset)} (n={len(x)})")
    top = df["score"].max()
    share = float((df["score"] >= 0.9 * top).mean())
    ax.axvline(0.9 * top, color="tab:red", linestyle="--", linewidth=1,
               label=f"within 10% of the max: {share:.0%} of jobs")
    ax.set(xlabel="AUROC(c, -v)", ylabel="fraction of jobs ≤ AUROC", ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Figure 6: DVGS robustness to its hyper-parameters")
    add_caption(fig, CAPTIONS["fig6"] + f" {len(df)} jobs (configuration x seed) over {df['valuer_label'].nunique()} "
             "configurations." + star + note)
    return fig


def _fig7(j: Jobs) -> Figure | str:
    apc = j.all["valuer"].eq("apc")
    if not (apc & j.is_ok & j.all["values_file"].notna()).any():
        return NEED + "jobs of valuer apc with stored values (dataset lincs gives the APC annotation)"
    if j.values is None:
        return NEED + "the stored values of the apc jobs (draw_store, or draw(..., values=loader))"
    df, note = j.select(apc)
    star = j.display(df)[1]
    fig, (ax,) = new_figure(1, width=5.2, height=3.8)
    groups = list(df.dropna(subset=["values_file"]).groupby("dataset_label"))
    for i, (dataset, g) in enumerate(groups):
        v = np.concatenate([np.asarray(j.values(f), dtype=float).ravel() for f in g["values_file"]])
        ax.hist(v, bins=40, histtype="step", density=len(groups) > 1, color="black", linewidth=1.3,
                linestyle=LINESTYLES[i % len(LINESTYLES)], label=f"{short_label(dataset)}: {len(v)} values, {len(g)} job(s)")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="APC = 0.5 (high-APC threshold)")
    ax.set(xlabel="APC", ylabel="density" if len(groups) > 1 else "source samples")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    fig.suptitle("Figure 7: APC distribution")
    add_caption(fig, CAPTIONS["fig7"] + " Pooled over the jobs of each dataset (a sample drawn in several seeds "
             "counts once per seed)." + star + note)
    return fig


def _varying(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    """The configuration columns that vary across ``df`` (lines of a figure are keyed by them)."""
    cands = ["dataset", "corruption_label", "mode", "device"] + [
        c for c in df.columns if isinstance(c, str) and c.startswith(("dataset.", "corruption.", "valuer."))
        and not c.endswith(".version")]
    return [c for c in cands if c in df and c not in exclude and df[c].astype(str).nunique() > 1]


def _minor(ax, v: float) -> str:
    """Labels of a log axis's minor ticks: 2 and 5 of each decade, where the axis spans under two decades."""
    lo, hi = ax.get_ylim()
    lead = round(v / 10 ** np.floor(np.log10(v)), 6)
    return f"{v:g}" if lo > 0 and np.log10(hi / lo) < 2 and lead in (2, 5) else ""


def _series(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """The jobs of the configurations (all else equal) that were run at two or more values of ``x``."""
    df = df.dropna(subset=[x])
    keys = _varying(df, {x})
    if keys:  # grouped by text: parameter values may be None, NaN or unhashable
        return df.groupby([df[k].astype(str) for k in keys]).filter(lambda g: g[x].nunique() >= 2)
    return df if df[x].nunique() >= 2 else df.iloc[:0]


def _lines(ax, df: pd.DataFrame, x: str, y: str, pool: bool = False) -> bool:
    """One line per configuration, mean ± std over seeds, legend under the panel; ``pool``:
    over the dataset's parameters (e.g. ten source sizes) too, where they would make over six lines.
    Returns whether it pooled."""
    keys = _varying(df, {x})
    pooled = pool and bool(keys) and df.groupby([df[k].astype(str) for k in keys]).ngroups > 6
    if pooled:
        keys = [k for k in keys if not k.startswith("dataset.")]
    groups = list(df.groupby([df[k].astype(str) for k in keys])) if keys else [((), df)]
    groups.sort(key=lambda kg: natural_label(kg[0]))
    for i, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        stats = g.groupby(x)[y].agg(["mean", "std"]).sort_index()
        label = ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in zip(keys, key)) or "dvgs"
        stopped = " *" if g["stopped_early"].fillna(False).astype(bool).any() else ""
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), color="black", capsize=2,
                    marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=1.2,
                    markersize=5, label=label + stopped)
    xs = np.sort(df[x].astype(float).unique())
    if xs.min() > 0 and xs.max() / xs.min() >= 4:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if len(xs) <= 8:
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return pooled


def _fig8(j: Jobs) -> Figure | str:
    df, note = j.select(j.all["valuer"].eq("dvgs"))
    df = df.dropna(subset=["wall_s"])
    auroc = j.score("corruption-auroc")
    if auroc is not None:
        df = df.assign(auroc=auroc[df.index])
    have = {"n": "dataset.n_source" in df, "t": "valuer.period" in df}
    have["auroc"] = have["t"] and "auroc" in df
    series = {"n": _series(df, "dataset.n_source") if have["n"] else None,
              "t": _series(df, "valuer.period") if have["t"] else None,
              "auroc": _series(df.dropna(subset=["auroc"]), "valuer.period") if have["auroc"] else None}
    panels = [p for p, d in series.items() if d is not None and len(d)]
    if not panels:
        return NEED + "one dvgs configuration run at two or more numbers of source samples (dataset n_source) " \
                      "or periods T (dvgs period)"
    fig, axes = new_figure(len(panels), width=4.4, height=4.6)
    text = {"n": ("dataset.n_source", "wall_s", "source samples", "runtime (s)", "runtime vs source size"),
            "t": ("valuer.period", "wall_s", "period T", "runtime (s)", "runtime vs T"),
            "auroc": ("valuer.period", "auroc", "period T", "AUROC(c, -v)", "corrupted-label AUROC vs T")}
    for ax, p in zip(axes, panels):
        x, y, xlabel, ylabel, title = text[p]
        pooled = _lines(ax, series[p].astype({x: float}), x, y, pool=p == "auroc")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title + ("\n(pooled over dataset sizes)" if pooled else ""))
        if y == "wall_s":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, not 5 x 10^-1
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _, ax=ax: _minor(ax, v)))
    fig.suptitle("Figure 8: DVGS scalability")
    stopped = STAR if df["stopped_early"].fillna(False).astype(bool).any() else ""
    add_caption(fig, CAPTIONS["fig8"] + " Mean ± 1 std over seeds; lines are the configurations that vary "
             "(dvgs and dataset parameters)." + stopped + note)
    return fig


FIGURES = {
    "fig2": _fig2,
    "fig3": _filtering("mask", "fig3", "Figure 3: filtering, corrupted labels", "a label corruption (0/1 mask truth)"),
    "fig4": _filtering("noise", "fig4", "Figure 4: filtering, feature noise", "feature noise (noise-rate truth)"),
    "fig5": _fig5, "fig6": _fig6, "fig7": _fig7, "fig8": _fig8,
}


def draw(jobs: pd.DataFrame, out_dir: str | Path, store=None, *, values: Values | None = None,
         truth_kinds: Mapping[str, str] | None = None, formats: tuple[str, ...] = ("png", "pdf"),
         only: tuple[str, ...] | None = None) -> dict[str, list[Path] | str]:
    """Draw Figures 2-8 from ``jobs`` (:func:`valbench.results.jobs_frame`) into ``out_dir``.

    Returns, for each figure name ('fig2' ... 'fig8'), the files written (one per format,
    ``<out_dir>/<name>.<format>``) or a sentence saying why it is not in this store.
    ``store``: the open :class:`valbench.store.Store` the jobs come from, which gives
    ``values`` and ``truth_kinds`` where they are not given. ``values``: loads a job's
    stored values from its ``values_file`` (Figures 5 and 7); ``truth_kinds``: metric
    label -> truth kind as the runs recorded it (the store's ``metrics`` table), to tell
    label corruption from feature noise for third-party metrics; ``only``: a subset of
    figure names."""
    if store is not None:
        values = values or (lambda f: store.load_values(f)[0])
        if truth_kinds is None:
            info = store.metrics()
            truth_kinds = {r.label: r.truth_kind for r in info.itertuples() if isinstance(r.truth_kind, str)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j = Jobs(jobs, values, truth_kinds)
    result: dict[str, list[Path] | str] = {}
    for name, make in FIGURES.items():
        if only is not None and name not in only:
            continue
        if j.all.empty or not j.is_ok.any():
            result[name] = NEED + "finished (ok) jobs"
            continue
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
            fig = make(j)
            result[name] = fig if isinstance(fig, str) else save(fig, out / name, formats)
    return result


def draw_store(path: str | Path, out_dir: str | Path, **kw) -> dict[str, list[Path] | str]:
    """:func:`draw` for the store file at ``path``."""
    from valbench.results import jobs_frame
    from valbench.store import open_existing

    with open_existing(path) as store:
        return draw(jobs_frame(store), out_dir, store, **kw)
