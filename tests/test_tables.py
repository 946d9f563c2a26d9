import pandas as pd
import pytest

from valbench.report.tables import table


def frame():
    rows = []
    for seed in range(3):
        for valuer, auroc, t in (("dvgs", 0.9 + seed * 0.01, 60.0), ("random", 0.5, 0.1)):
            rows.append(dict(dataset_label="adult", corruption_label="labels", valuer_label=valuer, seed=seed,
                             mode="supervised", wall_s=t + seed, **{"corruption-auroc": auroc, "noise-spearman": None}))
    rows.append(dict(dataset_label="blog", corruption_label="labels", valuer_label="random", seed=0,
                     mode="supervised", wall_s=1.0, **{"corruption-auroc": 0.51, "noise-spearman": None}))
    return pd.DataFrame(rows)


def test_table1_layout_and_bold(registry):
    out = table(frame(), 1, registry, "markdown")
    lines = out.splitlines()
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["dataset", "n", "dvgs", "random"]
    adult = next(l for l in lines if l.startswith("| adult"))
    assert "**0.910 ± 0.008**" in adult and "0.500 ± 0.000" in adult and "**0.500" not in adult
    blog = next(l for l in lines if l.startswith("| blog"))
    assert "NA" in blog and "**0.510 ± 0.000**" in blog


def test_table3_fastest_is_bold_and_minutes_shown(registry):
    out = table(frame(), 3, registry, "markdown")
    adult = next(l for l in out.splitlines() if l.startswith("| adult"))
    assert "**1.1 ± 0.82 s (0.02 min)**" in adult and "61 ± 0.82 s (1.02 min)" in adult


def test_csv_and_latex_keep_layout(registry):
    csv = table(frame(), 1, registry, "csv").splitlines()
    assert csv[0] == "dataset,n,dvgs,random" and csv[1] == "adult,3,0.910 ± 0.008,0.500 ± 0.000"
    tex = table(frame(), 1, registry, "latex")
    assert r"\textbf{0.910 $\pm$ 0.008}" in tex and r"\begin{tabular}" in tex


def test_table2_without_results_says_so(registry):
    from valbench.errors import StoreError

    with pytest.raises(StoreError, match="no 'noise-spearman' results"):
        table(frame(), 2, registry)


def test_table3_shows_fits_and_budget_stops(registry):
    df = frame()
    df["fits"] = [1010.0 if v == "dvgs" else None for v in df["valuer_label"]]
    df["stopped_early"] = 0
    df.loc[(df["valuer_label"] == "dvgs") & (df["seed"] == 2), ["fits", "stopped_early"]] = [500.0, 1]
    out = table(df, 3, registry, "markdown")
    adult = next(l for l in out.splitlines() if l.startswith("| adult"))
    assert "61 ± 0.82 s (1.02 min) · 500-1,010 fits*" in adult
    assert "**1.1 ± 0.82 s (0.02 min)**" in adult  # no fits recorded: no fits text
    blog = next(l for l in out.splitlines() if l.startswith("| blog"))
    assert "fits" not in blog


def test_a_budget_stopped_score_is_marked_and_never_bold(registry):
    """Issue: tmc-shapley[max_seconds=30] stored a score of unfinished work that Table 1
    showed as a plain 0.500. A cell with a budget-stopped seed is marked and not bold."""
    df = frame()
    df["stopped_early"] = 0
    df.loc[(df.valuer_label == "dvgs") & (df.seed == 1), "stopped_early"] = 1
    out = table(df, 1, registry, "markdown")
    adult = next(line for line in out.splitlines() if line.startswith("| adult"))
    assert "0.910 ± 0.008 *" in adult and "**0.910" not in adult and "**0.500 ± 0.000**" in adult
    assert "* = a budget stopped the valuer" in out
    assert "*" not in next(line for line in out.splitlines() if line.startswith("| blog")).replace("**", "")
