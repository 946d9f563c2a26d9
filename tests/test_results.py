"""valbench.results and `valbench export`: the store as one row per job x score."""
import pandas as pd
import pytest

from valbench import api
from valbench.grid import build_experiment
from valbench.results import export, jobs, results


@pytest.fixture(scope="module")
def store(tmp_path_factory, request):
    from valbench.plugins import build_registry
    from tests import fixture_plugins

    path = tmp_path_factory.mktemp("results") / "r.sqlite"
    exp = build_experiment({"datasets": "synthetic[n_source=60,n_target=30,n_test=30]", "corruptions": "labels",
                            "valuers": "random,boom", "seeds": 2,
                            "metrics": "corruption-auroc,corruption-found,filtering[fractions=2,replicates=1]"})
    api.run(exp, path, registry=build_registry(extra=[fixture_plugins]), device="cpu")
    return path


def test_one_row_per_job_and_score_with_configuration_status_and_timings(store):
    df = results(store)
    ok = df[df.status == "ok"]
    assert set(ok.valuer) == {"random"} and set(ok.seed) == {0, 1}
    per_job = ok.groupby("seed")["metric"].apply(set)
    expected = {"corruption-auroc", *(f"corruption-found:{f / 20:.3f}" for f in range(1, 11)),
                *(f"filtering[fractions=2,replicates=1]:remove-{d}@{q}" for d in ("low", "high") for q in ("0.000", "0.500"))}
    assert all(s == expected for s in per_job)
    assert ok["wall_s"].notna().all() and (ok["metric_s"] > 0).all()  # filtering retrains: scoring time kept apart
    assert (ok["dataset.n_source"] == 60).all() and (ok["corruption.rate"] == 0.2).all()
    failed = df[df.valuer == "boom"]
    assert len(failed) == 2 and set(failed.status) == {"failed"} and failed["metric"].isna().all()
    assert failed["error"].str.contains("boom").all()


def test_jobs_is_wide_and_export_writes_the_same_rows(store, tmp_path):
    wide = jobs(store)
    assert len(wide) == 4 and "corruption-auroc" in wide.columns
    out = tmp_path / "r.csv"
    n = export(store, out, "csv")
    back = pd.read_csv(out)
    assert n == len(back) == len(results(store))
    assert set(back.columns) >= {"key", "valuer_label", "seed", "status", "wall_s", "fits", "metric", "value"}
    pq = tmp_path / "r.parquet"
    pytest.importorskip("pyarrow")
    assert export(store, pq, "parquet") == n and pd.read_parquet(pq).shape == back.shape


def test_export_bad_inputs_are_one_line_errors_and_write_nothing(store, tmp_path, capsys):
    from valbench.cli import main

    for args, message in ((["--results", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "a.csv")], "does not exist"),
                          (["--results", str(store), "-o", str(tmp_path)], "is a folder"),
                          (["--results", str(store), "-o", str(tmp_path / "no" / "a.csv")], "does not exist")):
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
