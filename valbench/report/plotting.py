"""What every figure of valbench.report.figures shares: the jobs as the figures see them
(which are ok, the truth kind of each corruption, the valuers' styles and display names),
panels, captions and saving. Nothing here imports torch or a plugin."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Callable, Mapping

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

NEED = "not in this store: needs "
COLUMNS = 4  # panels to a row
MAX_VALUERS = 24  # Figure 2 pools the configurations of a valuer past this many (a hyper-parameter grid)
STAR = (" * = a budget stopped this valuer before it finished in at least one job: "
        "its results are of unfinished work.")
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
MASK_METRICS = {"corruption-auroc", "corruption-ap", "corruption-found"}  # scored on a 0/1 corruption mask
NOISE_METRICS = {"noise-spearman"}  # scored on per-sample noise rates
KIND_OF_CORRUPTION = {"labels": "mask", "features": "noise", "none": "none"}
FILTERING = re.compile(r"^(?P<label>filtering(?:\[.*\])?):(?P<direction>remove-low|remove-high)@(?P<q>[0-9.]+)$")
CAPTIONS = {
    "fig2": "Figure 2: ability of each valuer to identify corrupted labels: AUROC(c, -v), one point per seed.",
    "fig3": "Figure 3: test performance after filtering on values, label corruption: removing low values "
            "(solid lines) or high values (dashed lines).",
    "fig4": "Figure 4: test performance after filtering on values, feature noise: removing low values "
            "(solid lines) or high values (dashed lines).",
    "fig5": "Figure 5: reconstruction performance (R²) after filtering on DVGS and APC values, no corruption: "
            "removing low values (solid lines) or high values (dashed lines).",
    "fig6": "Figure 6: cumulative distribution of AUROC(c, -v) over the DVGS hyper-parameter grid.",
    "fig7": "Figure 7: distribution of APC (average Pearson correlation of replicates), the values of valuer apc.",
    "fig8": "Figure 8: DVGS runtime (wall clock of the valuation) against the number of source samples and "
            "the period T of the gradient similarities, and its AUROC against T.",
}
HORIZONTAL = {"orientation": "horizontal"} if tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10) \
    else {"vert": False}
Values = Callable[[str], np.ndarray]  # values file name (column values_file) -> the stored values


def base_name(label: str) -> str:
    """A metric label's or column's plugin name: 'filtering[fractions=4]:remove-low@0.5' -> 'filtering'."""
    return label.split(":", 1)[0].split("[", 1)[0]


class Jobs:
    """What every figure needs to know of the jobs: which are ok, the truth kind of each
    corruption, the valuers' display names and styles."""

    def __init__(self, jobs: pd.DataFrame, values: Values | None, truth_kinds: Mapping[str, str] | None):
        defaults = {"status": "ok", "stopped_early": False, "values_file": None, "wall_s": np.nan}
        self.all = jobs.reset_index(drop=True).assign(**{k: v for k, v in defaults.items() if k not in jobs})
        self.values = values
        self.is_ok = self.all["status"].eq("ok")
        kinds = {label: kind for label, kind in (truth_kinds or {}).items() if kind}
        kinds.update({m: "mask" for m in MASK_METRICS if m not in kinds})
        kinds.update({m: "noise" for m in NOISE_METRICS if m not in kinds})
        self.kind = pd.Series("unknown", index=self.all.index, dtype=object)
        for corruption, group in self.all.groupby("corruption_label", sort=False):
            found = {kinds.get(str(col).split(":", 1)[0], kinds.get(base_name(str(col)))) for col in self.all.columns
                     if group.loc[self.is_ok[group.index], col].notna().any()}
            found.discard(None)
            kind = found.pop() if len(found) == 1 else KIND_OF_CORRUPTION.get(group["corruption"].iloc[0], "unknown")
            self.kind[group.index] = kind
        names = sorted(self.all["valuer_label"].unique()) if len(self.all) else []
        palette = sns.color_palette("colorblind", max(len(names), 1))
        self.style = {v: dict(color=palette[i % len(palette)], marker=MARKERS[i % len(MARKERS)])
                      for i, v in enumerate(names)}
        filt = [(c, FILTERING.match(c)) for c in self.all.columns if isinstance(c, str)]
        self.filtering = {c: m for c, m in filt if m}

    def score(self, name: str) -> pd.Series | None:
        """The scores of metric ``name`` (any of its labels), or None if no job has one."""
        cols = [c for c in self.all.columns if isinstance(c, str) and ":" not in c and base_name(c) == name]
        s = self.all[cols].bfill(axis=1).iloc[:, 0] if cols else None
        return s if s is not None and s.notna().any() else None

    def select(self, mask: pd.Series) -> tuple[pd.DataFrame, str]:
        """The ok jobs under ``mask`` and a note on the others (failed, timed out, unfinished)."""
        counts = self.all.loc[mask & ~self.is_ok, "status"].value_counts()
        note = (" Not shown: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + " job(s) of these cells.") \
            if len(counts) else ""
        return self.all[mask & self.is_ok], note

    def display(self, df: pd.DataFrame) -> tuple[dict[str, str], str]:
        """valuer label -> its name in the figure (with ' *' if a budget stopped it), and the star's note."""
        stopped = set(df.loc[df["stopped_early"].fillna(False).astype(bool), "valuer_label"])
        names = {v: v + (" *" if v in stopped else "") for v in df["valuer_label"].unique()}
        return names, STAR if stopped else ""

    def curves(self, df: pd.DataFrame) -> pd.DataFrame:
        """The filtering scores of ``df`` long: one row per job x direction x fraction."""
        cols = [c for c in self.filtering if df[c].notna().any()]  # some, as the figures check first
        long = df[cols].stack().rename("score")
        long = long.rename_axis(["row", "column"]).reset_index(level="column")
        long["direction"] = [self.filtering[c]["direction"] for c in long["column"]]
        long["q"] = [float(self.filtering[c]["q"]) for c in long["column"]]
        return long.join(df.drop(columns=cols))


def new_figure(n_panels: int, width: float = 4.2, height: float = 3.4, extra: float = 0.0,
            sharey: bool = False) -> tuple[Figure, list]:
    """A figure of ``n_panels`` panels, at most COLUMNS to a row."""
    cols = min(n_panels, COLUMNS)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(width * cols + extra, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, axes[:n_panels]


def add_caption(fig: Figure, text: str) -> None:
    """The caption under everything else (the layout is fixed first, then the text goes below it)."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    box = fig.get_tightbbox()
    width = int(box.width * 15)
    fig.text(box.x0 / fig.get_figwidth(), (box.y0 - 0.08) / fig.get_figheight(),
             textwrap.fill(text.strip(), max(width, 60)), ha="left", va="top", fontsize=8)


def short_label(label: str, width: int = 48) -> str:
    """A label for a title or legend: without local file paths, wrapped after commas."""
    label = re.sub(r"(?<=[\[,])path=[^,\]]*(,|(?=\]))", "", str(label)).replace(",]", "]").replace("[]", "")
    return textwrap.fill(label.replace(",", ", "), width, break_on_hyphens=False)


def natural_label(key) -> list:
    """Sort key of a label or tuple of labels: 'adult[n_source=500]' before 'adult[n_source=3777]',
    numbers by value and before text."""
    parts = re.split(r"(\d+(?:\.\d+)?)", " / ".join(map(str, key if isinstance(key, tuple) else (key,))))
    return [(0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)]


def split_panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per dataset (and corruption and mode, where those vary)."""
    keys = ["dataset_label"] + [k for k in ("corruption_label", "mode") if df[k].nunique() > 1]
    return [(short_label(" / ".join(map(str, k if isinstance(k, tuple) else (k,)))), g)
            for k, g in sorted(df.groupby(keys), key=lambda kg: natural_label(kg[0]))]


def save(fig: Figure, stem: Path, formats: tuple[str, ...]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.with_suffix("." + fmt)
        meta = {"Software": None} if fmt == "png" else {"CreationDate": None}  # the same bytes for the same data
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths


