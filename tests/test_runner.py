import numpy as np
import pytest
import torch

from valbench.grid import build_experiment, expand
from valbench.runner import CellCache, run_job
from valbench.training.models import build_model


def jobs_for(registry, **raw):
    raw = {"datasets": "synthetic", "corruptions": "labels", "valuers": "random", "seeds": 1, **raw}
    return expand(build_experiment(raw), registry, "cpu")


def test_job_key_ignores_order_and_explicit_defaults(registry):
    a = jobs_for(registry, valuers="random", corruptions="labels,features")
    b = jobs_for(registry, valuers="random", corruptions="features,labels[rate=0.2]")
    assert {j.key for j in a} == {j.key for j in b}
    c = jobs_for(registry, corruptions="labels[rate=0.3]")
    assert c[0].key not in {j.key for j in a}


def test_pairing_same_seed_same_data_for_every_valuer(fixture_registry):
    jobs = jobs_for(fixture_registry, valuers="random,centroid", seeds=2)
    by = {(j.valuer.name, j.seed): j for j in jobs}
    for seed in (0, 1):
        # separate caches: pairing must not depend on sharing a process or cache
        ca, cb = CellCache().cell(by["random", seed]), CellCache().cell(by["centroid", seed])
        assert np.array_equal(ca.source.x, cb.source.x) and np.array_equal(ca.source.y, cb.source.y)
        assert np.array_equal(ca.target.x, cb.target.x) and np.array_equal(ca.truth.values, cb.truth.values)
        wa = build_model(ca.learner, seed).state_dict()
        wb = build_model(cb.learner, seed).state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c0, c1 = CellCache().cell(by["random", 0]), CellCache().cell(by["random", 1])
    assert not np.array_equal(c0.truth.values, c1.truth.values)


def test_values_are_reproducible(fixture_registry):
    for name in ("random", "centroid"):
        (job,) = jobs_for(fixture_registry, valuers=name)
        r1, r2 = run_job(job, CellCache()), run_job(job, CellCache())
        assert r1.status == "ok" and np.array_equal(r1.values, r2.values)


def test_centroid_valuer_beats_chance(fixture_registry):
    (job,) = jobs_for(fixture_registry, valuers="centroid")
    r = run_job(job, CellCache())
    assert r.scores["corruption-auroc"] > 0.8
    assert r.timing.wall_s >= 0 and r.timing.threads >= 1


@pytest.mark.parametrize("valuer, message", [
    ("boom", "boom on purpose"),
    ("wrong-shape", "expected (200,)"),
    ("nan-values", "1 of 200 values are NaN"),
])
def test_valuer_failures_are_isolated(fixture_registry, valuer, message):
    (job,) = jobs_for(fixture_registry, valuers=valuer)
    r = run_job(job, CellCache())
    assert r.status == "failed" and message in r.error and r.values is None


def test_inputs_are_read_only(registry):
    (job,) = jobs_for(registry)
    cell = CellCache().cell(job)
    with pytest.raises(ValueError):
        cell.source.x[0, 0] = 1.0


def test_unsupervised_mode_reconstructs_noisy_source(registry):
    (job,) = jobs_for(registry, corruptions="features", mode="unsupervised")
    cell = CellCache().cell(job)
    assert cell.n_classes is None and cell.metric == "r2"
    assert np.array_equal(cell.source.x, cell.source.y)  # target of a noisy sample is itself
    assert not cell.learner.supervised


def test_labels_corruption_refused_without_labels(registry):
    from valbench.errors import ConfigError

    with pytest.raises(ConfigError, match="needs labels"):
        jobs_for(registry, mode="unsupervised")


@pytest.mark.parametrize("via", ["flag", "torch"])
def test_a_valuer_writing_into_its_inputs_fails_loudly_and_changes_no_other_result(fixture_registry, tmp_path, via):
    """Issue: results depended on valuer order. The writer's job fails with the arrays it
    changed; the next valuer of the cell scores exactly what it scores alone."""
    from valbench import api
    from valbench.store import Store

    def centroid_score(valuers, name):
        exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": valuers, "seeds": 1})
        api.run(exp, tmp_path / f"{name}.sqlite", registry=fixture_registry, device="cpu")
        with Store(tmp_path / f"{name}.sqlite") as store:
            ok = store.results()
            attempts = store.attempts()
        return ok.set_index("valuer")["corruption-auroc"].get("centroid"), attempts

    alone, _ = centroid_score("centroid", "alone")
    after, attempts = centroid_score(f"mutator[via={via}],centroid", "after")
    assert after == alone
    failed = attempts[attempts.status == "failed"]
    assert len(failed) == 1 and "changed task.source.x in place" in failed.error.iloc[0]


@pytest.mark.parametrize("via, message", [
    ("flag", "cannot set WRITEABLE flag.*read-only and shared by every job of the cell: work on a copy"),
    ("torch", "killed by signal 11.*a write into the read-only input arrays"),
])
def test_in_a_worker_the_inputs_cannot_be_written_at_all(fixture_registry, tmp_path, via, message):
    """In a worker (the default), the cell's arrays live in read-only memory: the writer is
    stopped at its first write (numpy refuses, torch faults and its worker dies), never
    after the fact, and the valuer after it on the same worker scores what it scores alone."""
    import re

    from valbench import api
    from valbench.store import Store

    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels",
                            "valuers": f"centroid,mutator[via={via}],centroid[sharpness=2.0]", "seeds": 1})
    api.run(exp, tmp_path / "w.sqlite", registry=fixture_registry, device="cpu", workers=1)
    api.run(build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": "centroid[sharpness=2.0]",
                              "seeds": 1}), tmp_path / "alone.sqlite", registry=fixture_registry, device="cpu")
    with Store(tmp_path / "w.sqlite") as w, Store(tmp_path / "alone.sqlite") as alone:
        a = w.attempts()
        got = w.results().set_index("valuer_label")["corruption-auroc"]
        assert got["centroid[sharpness=2.0]"] == alone.results()["corruption-auroc"].iloc[0]
    (error,) = a[a.status == "failed"].error
    assert re.search(message, error), error
    assert (a.status == "ok").sum() == 2
