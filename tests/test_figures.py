"""valbench.report.figures: the paper's Figures 2-8 from a real (small) store, and from
fabricated job rows for what a cheap run cannot make (a DVGS grid, APC values)."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from valbench.report.figures import NEED, _fig2, _fig8, draw, draw_store
from valbench.report.plotting import Jobs as _Jobs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _written(result, name):
    paths = result[name]
    assert isinstance(paths, list), f"{name}: {paths}"
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 5000, (p, len(data))
        assert data.startswith(PNG_MAGIC if p.suffix == ".png" else b"%PDF-")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real store: synthetic data, two corruptions, random and knn-shapley, filtering curves."""
    from valbench.api import run
    from valbench.grid import build_experiment

    path = tmp_path_factory.mktemp("figs") / "r.sqlite"
    exp = build_experiment({"datasets": "synthetic[n_source=120,n_target=60,n_test=120]",
                            "corruptions": "labels,features", "valuers": "random,knn-shapley", "seeds": 2,
                            "metrics": "corruption-auroc,noise-spearman,filtering[fractions=3,replicates=1]"})
    summary = run(exp, path, device="cpu")
    assert summary.ok == 8
    return path


def test_real_store_figures_and_what_it_cannot_show(store, tmp_path):
    result = draw_store(store, tmp_path / "out")
    assert set(result) == {f"fig{i}" for i in range(2, 9)}
    for name in ("fig2", "fig3", "fig4"):
        _written(result, name)
    for name in ("fig5", "fig6", "fig7", "fig8"):  # no dvgs grid, no apc, no clean data in this store
        assert isinstance(result[name], str) and result[name].startswith(NEED), result[name]
    assert "dvgs and apc" in result["fig5"] and "period" in result["fig8"]
    assert not list((tmp_path / "out").glob("fig[5-8].*"))


def test_figures_module_imports_no_torch():
    import subprocess

    code = "import sys, valbench.report.figures, valbench.report.html; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_failed_and_budget_stopped_jobs_never_look_normal(store, tmp_path):
    from valbench.results import jobs

    df = jobs(store)
    knn = df.index[(df["valuer"] == "knn-shapley") & (df["corruption"] == "labels")]
    df.loc[knn[0], "stopped_early"] = True  # a budget cut one seed short
    failed = df.loc[[knn[1]]].assign(status="failed", seed=7, attempt=999, stopped_early=False)
    failed.loc[:, [c for c in df.columns if c.startswith(("corruption-", "filtering"))]] = np.nan
    timed_out = failed.assign(status="timeout", seed=8, attempt=1000)
    df = pd.concat([df, failed, timed_out], ignore_index=True)
    fig = _fig2(_Jobs(df, None, None))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "knn-shapley *" in labels and "random" in labels
    caption = fig.texts[-1].get_text().replace("\n", " ")
    assert "* = a budget stopped" in caption and "1 failed, 1 timeout" in caption
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections if len(c.get_offsets()))
    assert points == 4  # 2 valuers x 2 ok seeds: the failed and timed-out jobs are not drawn
    result = draw(df, tmp_path)
    _written(result, "fig3")


def _dvgs_rows() -> pd.DataFrame:
    """Job rows as jobs_frame gives them, for a DVGS grid over n_source and period on two seeds."""
    rows = []
    g = np.random.default_rng(0)
    for n in (250, 500, 1000):
        for period in (1, 2, 4):
            for sim in ("cosine", "euclidean"):
                for seed in (0, 1):
                    label = f"dvgs[period={period},similarity={sim}]"
                    rows.append({"dataset": "adult", "dataset_label": f"adult[n_source={n}]", "corruption": "labels",
                                 "corruption_label": "labels", "valuer": "dvgs", "valuer_label": label,
                                 "seed": seed, "mode": "supervised", "device": "cpu", "status": "ok",
                                 "wall_s": n / period / 500 * (1 + 0.1 * seed), "stopped_early": False,
                                 "values_file": None, "dataset.n_source": n, "valuer.period": period,
                                 "valuer.similarity": sim, "corruption-auroc": 0.9 - 0.02 * period + g.normal(0, .01)})
    rows.append(dict(rows[0], seed=5, status="timeout", wall_s=None, **{"corruption-auroc": None}))
    return pd.DataFrame(rows)


def test_dvgs_grid_cdf_and_scalability(tmp_path):
    df = _dvgs_rows()
    result = draw(df, tmp_path)
    for name in ("fig2", "fig6", "fig8"):
        _written(result, name)
    fig = _fig8(_Jobs(df, None, None))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["runtime vs source size", "runtime vs T", "corrupted-label AUROC vs T"]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    assert "1 timeout" in fig.texts[-1].get_text().replace("\n", " ")
    # one configuration at one size and one period: no scalability figure, and it says why
    one = df[(df["dataset.n_source"] == 250) & (df["valuer.period"] == 1)]
    assert draw(one, tmp_path / "one", only=("fig8",))["fig8"].startswith(NEED)


def test_lincs_style_filtering_and_apc_distribution(tmp_path):
    """Figures 5 and 7 from fabricated rows: clean (corruption none) cells valued by dvgs and apc."""
    g = np.random.default_rng(1)
    stored = {}
    rows = []
    for seed in (0, 1):
        apc = g.uniform(-0.2, 1.0, 300)
        for valuer, values in (("apc", apc), ("dvgs", apc + g.normal(0, 0.3, 300)), ("random", g.normal(size=300))):
            name = f"{valuer}-{seed}.npz"
            stored[name] = values
            row = {"dataset": "lincs", "dataset_label": "lincs[high_apc=none]", "corruption": "none",
                   "corruption_label": "none", "valuer": valuer, "valuer_label": valuer, "seed": seed,
                   "mode": "unsupervised", "device": "cpu", "status": "ok", "wall_s": 1.0, "stopped_early": False,
                   "values_file": name}
            for q in (0.0, 0.475, 0.95):
                for direction, sign in (("remove-low", 1), ("remove-high", -1)):
                    bonus = {"dvgs": 0.05, "apc": 0.02, "random": 0.0}[valuer]
                    row[f"filtering[max_fraction=0.95]:{direction}@{q:.3f}"] = 0.5 + sign * bonus * q + 0.01 * seed
            rows.append(row)
    df = pd.DataFrame(rows)
    result = draw(df, tmp_path, values=stored.__getitem__)
    _written(result, "fig5")
    _written(result, "fig7")
    assert result["fig2"].startswith(NEED) and result["fig6"].startswith(NEED)
    without = draw(df, tmp_path / "nv", only=("fig7",))  # values are needed for the APC distribution
    assert "stored values" in without["fig7"]


def test_empty_store_has_no_figures(tmp_path):
    cols = ["dataset", "dataset_label", "corruption", "corruption_label", "valuer", "valuer_label", "seed", "mode",
            "status", "stopped_early", "values_file", "wall_s"]
    result = draw(pd.DataFrame(columns=cols), tmp_path)
    assert all(v.startswith(NEED) for v in result.values())


@pytest.mark.slow
def test_real_lincs_store_with_apc_and_dvgs(tmp_path):
    """Figures 5 and 7 from a real run on small files in the LINCS release layout (about 30 s)."""
    from tests.lincs_files import write_release
    from valbench.api import run
    from valbench.grid import build_experiment

    folder = tmp_path / "lincs"
    write_release(folder, n_sigs=200, cell_types=("trt_cp",))
    exp = build_experiment({"datasets": f"lincs[path={folder},n_source=100,n_target=20,n_test=30,high_apc=none]",
                            "corruptions": "none", "valuers": "apc,dvgs[restarts=1,epochs=5]", "seeds": 2,
                            "metrics": "filtering[fractions=3,replicates=1]", "mode": "unsupervised"})
    assert run(exp, tmp_path / "r.sqlite", device="cpu").ok == 4
    result = draw_store(tmp_path / "r.sqlite", tmp_path / "out")
    _written(result, "fig5")
    _written(result, "fig7")


def test_rows_without_status_columns_and_odd_parameter_values(tmp_path):
    """Hand-made rows need only the labels and scores: missing status means ok; parameter values
    that are None or lists do not break the grouping of Figure 8."""
    df = _dvgs_rows().drop(columns=["status", "stopped_early", "values_file"])
    df["valuer.parameters"] = [["a", "b"]] * len(df)
    df.loc[df["seed"] == 1, "valuer.class_balance"] = None
    result = draw(df, tmp_path, only=("fig6", "fig8"))
    _written(result, "fig6")
    _written(result, "fig8")


def test_a_large_grid_is_pooled_and_many_panels_wrap(tmp_path):
    """The fig6 preset has 144 dvgs settings and the fig8 preset 10 source sizes: Figure 2 pools a
    valuer's settings into one box and lays its panels out at most four to a row."""
    rows = []
    for n in range(10):
        for c in range(30):
            for seed in (0, 1):
                rows.append({"dataset": "adult", "dataset_label": f"adult[n_source={500 + n}]", "corruption": "labels",
                             "corruption_label": "labels", "valuer": "dvgs", "valuer_label": f"dvgs[lr={c}]",
                             "seed": seed, "mode": "supervised", "corruption-auroc": 0.8 + 0.001 * c})
    rows += [dict(r, valuer="random", valuer_label="random", **{"corruption-auroc": 0.5}) for r in rows[:20:2]]
    fig = _fig2(_Jobs(pd.DataFrame(rows), None, None))
    assert len(fig.axes) == 10 and fig.get_figwidth() < 20
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["dvgs (30 configurations)", "random"]
    assert "pooled" in fig.texts[-1].get_text().replace("\n", " ")
