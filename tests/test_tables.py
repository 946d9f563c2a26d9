import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from valbench.errors import StoreError
from valbench.report.tables import rows, table

METRICS = pd.DataFrame([("corruption-auroc", "corruption-auroc", 1, 1, "mask"),
                        ("noise-spearman", "noise-spearman", 1, 2, "noise")],
                       columns=["label", "name", "higher_is_better", "paper_table", "truth_kind"]).set_index("label")
DVGS = [0.90, 0.92, 0.91, 0.95, 0.93]
RANDOM = [0.50, 0.52, 0.47, 0.51, 0.49]
PAPER = pd.DataFrame([("adult", "labels", "supervised", "dvgs", "corruption-auroc", 0.896, 0.030, 1.3, "DVGS paper exp1")],
                     columns=["dataset_label", "corruption_label", "mode", "valuer", "metric", "mean", "std", "minutes",
                              "source"])


def job(dataset, valuer, seed, auroc, status="ok", wall=1.0, stopped=False, fits=None, label=None):
    return dict(dataset_label=dataset, corruption_label="labels", mode="supervised", valuer=valuer,
                valuer_label=label or valuer, seed=seed, status=status, wall_s=wall if status == "ok" else None,
                metric_s=2.0 if status == "ok" else None, fits=fits, stopped_early=stopped,
                **{"corruption-auroc": auroc if status == "ok" else None, "noise-spearman": None})


def frame():
    out = [job("adult", "dvgs", s, a, wall=60 + s, fits=3) for s, a in enumerate(DVGS)]
    out += [job("adult", "random", s, a, wall=0.1) for s, a in enumerate(RANDOM)]
    out += [job("blog", "random", 0, 0.51)]
    return pd.DataFrame(out)


def line(text, *starts):
    return next(x for x in text.splitlines() if x.startswith("| " + " | ".join(starts)) or
                all(s in x for s in starts))


def test_table1_long_layout_best_first_with_paper_and_wilcoxon():
    out = table(frame(), 1, METRICS, "markdown", paper=PAPER)
    header = [c.strip() for c in out.splitlines()[2].split("|")[1:-1]]
    assert header == ["dataset", "valuer", "n", "score", "paper", "p", "note"]
    lines = [x for x in out.splitlines() if x.startswith("| adult")]
    assert "dvgs" in lines[0] and "random" in lines[1]  # best first
    assert f"**{np.mean(DVGS):.3f} ± {np.std(DVGS):.3f}**" in lines[0] and "0.896 ± 0.030" in lines[0] and "best" in lines[0]
    p = wilcoxon(DVGS, RANDOM).pvalue
    assert f"{p:.3f}" in lines[1] and "**" not in lines[1]
    blog = line(out, "blog")
    assert "**0.510**" in blog and "±" not in blog  # one seed: no "± 0.000"


def test_csv_gives_numbers_in_their_own_columns():
    csv = pd.read_csv(__import__("io").StringIO(table(frame(), 1, METRICS, "csv", paper=PAPER)))
    assert list(csv.columns[:6]) == ["dataset", "valuer", "n", "jobs", "mean", "std"]
    dvgs = csv[csv.valuer == "dvgs"].iloc[0]
    assert dvgs["mean"] == pytest.approx(np.mean(DVGS)) and dvgs["std"] == pytest.approx(np.std(DVGS))
    assert dvgs["paper_mean"] == 0.896 and dvgs["paper_std"] == 0.030 and dvgs["n"] == 5 and bool(dvgs["best"])
    rnd = csv[(csv.valuer == "random") & (csv.dataset == "adult")].iloc[0]
    assert rnd["p_vs_best"] == pytest.approx(wilcoxon(DVGS, RANDOM).pvalue)


def test_failed_and_budget_stopped_cells_are_marked_never_plain_numbers():
    df = frame()
    df.loc[(df.valuer == "dvgs") & (df.seed == 4), ["status", "corruption-auroc", "wall_s"]] = ["timeout", None, None]
    df = pd.concat([df, pd.DataFrame([job("adult", "loo", s, None, status="failed") for s in range(5)])])
    stop = [job("adult", "tmc-shapley", s, 0.5, stopped=True, label="tmc-shapley[max_seconds=30]") for s in range(5)]
    df = pd.concat([df, pd.DataFrame(stop)], ignore_index=True)
    out = table(df, 1, METRICS, "markdown")
    dvgs = line(out, "adult", "dvgs")
    assert "4/5" in dvgs and "1 timeout" in dvgs and "**" not in dvgs  # an incomplete cell is not best
    loo = line(out, "adult", "loo")
    assert "0/5" in loo and "5 failed" in loo and "—" in loo
    tmc = line(out, "adult", "tmc-shapley")
    assert "0.500 ± 0.000 *" in tmc and "**" not in tmc
    assert "**" in line(out, "adult", "random")  # the only complete, finished cell is best
    t3 = table(df, 3, METRICS, "markdown")
    assert "*" in line(t3, "adult", "tmc-shapley").split("|")[4] and "5 failed" in line(t3, "adult", "loo")


def test_table3_times_total_fits_and_paper_minutes():
    out = table(frame(), 3, METRICS, "markdown", paper=PAPER)
    dvgs = line(out, "adult", "dvgs")
    assert "62 ± 1.4 s" in dvgs and "64 ± 1.4 s" in dvgs and "| 3 " in dvgs and "1.3 min" in dvgs
    assert "**100 ± 0 ms**" in line(out, "adult", "random")


def test_table2_without_results_says_so():
    with pytest.raises(StoreError, match="no 'noise-spearman' results"):
        table(frame(), 2, METRICS)


def test_lower_is_better_metrics_pick_the_lowest():
    m = METRICS.copy()
    m.loc["corruption-auroc", "higher_is_better"] = 0
    t, _, caption = rows(frame(), 1, m)
    adult = t[t.dataset_label == "adult"]
    assert adult.iloc[0]["valuer"] == "random" and bool(adult.iloc[0]["best"]) and "lower is better" in caption


def test_valbench_table_reads_the_store_without_torch(tmp_path):
    """`valbench table` needs nothing but the store: with torch made unimportable it still
    prints every table (the orientation and paper values were recorded by the run)."""
    from valbench.cli import main

    store = str(tmp_path / "r.sqlite")
    assert main(["run", "--datasets", "synthetic", "--corruptions", "labels,features", "--valuers", "random",
                 "--seeds", "2", "--results", store, "--in-process"]) == 0
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "from valbench.cli import main\n"
            f"rc = [main(['table', n, '--results', {store!r}]) for n in ('1', '2', '3')]\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
            "sys.exit(max(rc))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Table 1" in done.stdout and "Table 2" in done.stdout and "Table 3" in done.stdout
    assert "random" in done.stdout


def test_metric_option_errors_say_what_is_wrong():
    from valbench.errors import ConfigError

    df = frame().assign(**{"corruption-found:0.050": 0.2})
    with pytest.raises(ConfigError, match="'corruption-found' is a curve"):
        table(df, 1, METRICS, metric="corruption-found")
    with pytest.raises(StoreError, match="did you mean 'corruption-auroc'"):
        table(df, 1, METRICS, metric="corruption-aurco")
