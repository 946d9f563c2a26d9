"""The filtering metric (the paper's Figures 3-5), the detection metrics, and how a run
selects and times metrics."""
import numpy as np
import pytest

from valbench.errors import ConfigError
from valbench.testing import easy_task
from valbench.types import Truth
from valbench_plugins.metrics.corruption_ap import CorruptionAP
from valbench_plugins.metrics.corruption_found import CorruptionFound
from valbench_plugins.metrics.filtering import Filtering


def test_subsets_remove_the_lowest_or_highest_fraction():
    values = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 9.0, 8.0, 7.0, 6.0])
    subsets = Filtering(fractions=3, max_fraction=0.4).subsets(values)
    assert list(subsets) == ["remove-low@0.000", "remove-high@0.000", "remove-low@0.200", "remove-high@0.200",
                             "remove-low@0.400", "remove-high@0.400"]
    assert subsets["remove-low@0.000"].all() and subsets["remove-high@0.000"].all()
    assert set(np.flatnonzero(~subsets["remove-low@0.200"])) == {5, 1}  # values 0 and 1
    assert set(np.flatnonzero(~subsets["remove-high@0.400"])) == {6, 7, 8, 9}  # values 9, 8, 7, 6


def test_removing_the_corrupted_samples_helps_and_removing_clean_ones_hurts():
    """On an easy task with 20% flipped labels, values that rank the flipped samples lowest
    give a rising remove-low curve; the same values reversed give a falling one."""
    task, mask = easy_task(n_source=200, n_target=50)
    test = easy_task(seed=1, n_source=10, n_target=300)[0].target  # clean labels
    ideal = -mask + 1e-6 * np.arange(len(mask))
    metric = Filtering(fractions=2, max_fraction=0.2, replicates=1)
    task = task.__class__(**{**task.__dict__, "learner": task.learner.with_recipe(epochs=30, lr=1e-2, batch_size=50)})
    good = metric.score(ideal, Truth("mask", mask), task=task, test=test)
    bad = metric.score(-ideal, Truth("mask", mask), task=task, test=test)
    assert good["remove-low@0.000"] == bad["remove-low@0.000"]  # same subset, same initialisation and stream
    assert good["remove-low@0.200"] >= good["remove-low@0.000"]  # dropping the flipped ones costs nothing
    assert bad["remove-low@0.200"] < good["remove-low@0.200"] - 0.01  # dropping clean ones does


def test_average_precision_and_fraction_found():
    mask = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)
    perfect = -mask.astype(float)
    assert CorruptionAP().score(perfect, Truth("mask", mask)) == pytest.approx(1.0)
    found = CorruptionFound(step=0.1, max_fraction=0.3).score(perfect + 1e-9 * np.arange(10), Truth("mask", mask))
    assert found == {"0.100": 0.5, "0.200": 1.0, "0.300": 1.0}
    reversed_ = CorruptionFound(step=0.1, max_fraction=0.3).score(-perfect, Truth("mask", mask))
    assert reversed_["0.300"] == 0.0


def test_a_costly_metric_runs_only_when_named_and_none_needs_a_task_metric(registry):
    from valbench.grid import build_experiment, expand

    base = {"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "valuers": "random"}
    jobs = expand(build_experiment({**base, "corruptions": "labels"}), registry, "cpu")
    assert {m.name for m in jobs[0].metrics} == {"corruption-auroc", "corruption-ap", "corruption-found"}
    with pytest.raises(ConfigError, match="no metric scores corruption 'none'.*--metrics, e.g. filtering"):
        expand(build_experiment({**base, "corruptions": "none"}), registry, "cpu")
    jobs = expand(build_experiment({**base, "corruptions": "none", "metrics": "filtering"}), registry, "cpu")
    assert [m.name for m in jobs[0].metrics] == ["filtering"]


def test_a_metric_returning_a_non_finite_number_fails_its_job(tmp_path, registry, monkeypatch):
    from valbench import api
    from valbench.grid import build_experiment

    monkeypatch.setattr(CorruptionFound, "score", lambda self, values, truth: {"0.100": float("nan")})
    exp = build_experiment({"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
                            "valuers": "random", "metrics": "corruption-found"})
    summary = api.run(exp, tmp_path / "r.sqlite", registry=registry, device="cpu")
    assert summary.failed == 1
    from valbench.store import open_existing

    with open_existing(tmp_path / "r.sqlite") as store:
        assert "score 'corruption-found:0.100' is nan" in store.attempts()["error"].iloc[0]


def test_a_metric_named_after_a_job_finished_is_scored_from_its_stored_values(tmp_path, registry):
    """Review finding: a second run naming a new metric skipped the finished jobs and never
    scored it. Now the finished jobs are scored from their stored values, once."""
    from valbench import api
    from valbench.grid import build_experiment
    from valbench.results import jobs

    base = {"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
            "valuers": "random,knn-shapley", "seeds": 2, "metrics": "corruption-auroc"}
    path = tmp_path / "r.sqlite"
    api.run(build_experiment(base), path, registry=registry, device="cpu")
    before = jobs(path)
    more = build_experiment({**base, "metrics": "corruption-auroc,corruption-ap,filtering[fractions=2,replicates=1]"})
    summary = api.run(more, path, registry=registry, device="cpu")
    assert (summary.ok, summary.skipped, summary.rescored) == (0, 4, 4)
    after = jobs(path)
    assert after["corruption-ap"].notna().all() and after["filtering[fractions=2,replicates=1]:remove-low@0.500"].notna().all()
    assert (after["corruption-auroc"] == before["corruption-auroc"]).all() and (after["metric_s"] > before["metric_s"]).all()
    fresh = tmp_path / "fresh.sqlite"  # the same scores as if the metrics had been named from the start
    api.run(more, fresh, registry=registry, device="cpu")
    col = "filtering[fractions=2,replicates=1]:remove-low@0.500"
    assert jobs(fresh)["corruption-ap"].tolist() == after["corruption-ap"].tolist()
    assert jobs(fresh)[col].tolist() == after[col].tolist()  # retrains seeded alike
    assert api.run(more, path, registry=registry, device="cpu").rescored == 0


def test_batched_training_gives_the_same_kind_of_curve():
    """filtering[training=batched] trains every subset's model at once (as LOO does): the
    same names, q = 0 once for both directions, and the same orientation as the default."""
    task, mask = easy_task(n_source=200, n_target=50)
    task = task.__class__(**{**task.__dict__, "learner": task.learner.with_recipe(epochs=60, lr=1e-2, batch_size=50)})
    test = easy_task(seed=1, n_source=10, n_target=300)[0].target
    ideal = -mask + 1e-6 * np.arange(len(mask))
    batched = Filtering(fractions=3, max_fraction=0.4, replicates=2, training="batched")
    good = batched.score(ideal, Truth("mask", mask), task=task, test=test)
    bad = batched.score(-ideal, Truth("mask", mask), task=task, test=test)
    default = Filtering(fractions=3, max_fraction=0.4, replicates=2).score(ideal, Truth("mask", mask), task=task,
                                                                           test=test)
    assert good.keys() == default.keys() and good["remove-low@0.000"] == good["remove-high@0.000"]
    assert good["remove-low@0.000"] == bad["remove-low@0.000"]  # the same subset, initialisation and masks
    assert bad["remove-low@0.400"] < good["remove-low@0.400"] - 0.01
    assert abs(good["remove-low@0.400"] - default["remove-low@0.400"]) < 0.1
    with pytest.raises(ValueError, match="training must be minibatch or batched"):
        Filtering(training="fast").validate()
