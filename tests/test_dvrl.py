"""DVRL: conformance at small settings, budgets, and bad input before any work."""
import numpy as np
import pytest

from valbench.errors import ConfigError
from valbench.testing import easy_task
from valbench.types import Split, ValuationTask
from valbench_plugins.valuers.dvrl import DVRLValuer, estimator

SMALL = DVRLValuer.test_params


def test_values_are_estimator_probabilities_and_fits_are_counted():
    task, _ = easy_task(n_source=120, n_target=60)
    out = DVRLValuer(iterations=5, inner_epochs=2).value(task)
    assert out.fits == 2 + 5 and not out.stopped_early and out.info["iterations"] == 5
    assert ((out.values > 0) & (out.values < 1)).all()
    assert out.info["trainer"].startswith("flat-mlp")  # the fast trainer, not autograd (native or not: test_native)


def test_the_compiled_inner_training_gives_the_same_values():
    task, _ = easy_task(n_source=120, n_target=60)
    eager = DVRLValuer(iterations=5, inner_epochs=2).value(task)
    compiled = DVRLValuer(iterations=5, inner_epochs=2, compile=True).value(task)
    if compiled.info["trainer"] != "flat-mlp+compile":
        pytest.skip(f"torch.compile does not work here: {compiled.info['trainer']}")
    np.testing.assert_allclose(compiled.values, eager.values, atol=1e-4)


def test_estimator_architecture():
    est = estimator(7, 3)
    widths = [(m.in_features, m.out_features) for m in est.modules() if hasattr(m, "in_features")]
    assert widths == [(10, 100), (100, 100), (100, 10), (13, 10), (10, 1)]


def test_fit_budget_stops_cleanly():
    task, _ = easy_task(n_source=120, n_target=60)
    out = DVRLValuer(iterations=50, inner_epochs=2, max_fits=6).value(task)
    assert out.fits == 6 and out.stopped_early and out.info["iterations"] == 4
    assert np.isfinite(out.values).all() and out.values.shape == (120,)


def test_time_budget_stops_cleanly():
    task, _ = easy_task(n_source=120, n_target=60)
    out = DVRLValuer(iterations=10**6, inner_epochs=1, max_seconds=1.0).value(task)
    assert out.stopped_early and 2 < out.fits < 10**6 and out.info["iterations"] == out.fits - 2


def test_moving_baseline_differs_from_fixed():
    task, _ = easy_task(n_source=120, n_target=60)
    fixed = DVRLValuer(iterations=8, inner_epochs=2).value(task).values
    moving = DVRLValuer(iterations=8, inner_epochs=2, baseline="moving", baseline_window=2).value(task).values
    assert not np.allclose(fixed, moving)


@pytest.mark.parametrize("params, message", [
    ({"max_fits": 2}, "max_fits must be >= 3 for dvrl"),
    ({"iterations": 0}, "iterations must be >= 1"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"max_seconds": -1.0}, "max_seconds must be > 0"),
])
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        DVRLValuer(**params).validate()


def test_single_class_target_refused_for_auroc():
    task, _ = easy_task(n_source=50, n_target=30)
    one = Split(task.target.x, np.zeros(len(task.target), dtype=np.int64))
    bad = ValuationTask(task.source, one, 2, task.learner, "auroc", 0)
    with pytest.raises(ValueError, match="target-set AUROC, which needs all 2 classes in the target set; it has only \\[0\\]"):
        DVRLValuer().check(bad)
    with pytest.raises(ValueError, match="needs all 2 classes"):
        DVRLValuer(iterations=1).value(bad)  # before any fit
    DVRLValuer().check(ValuationTask(task.source, one, 2, task.learner, "accuracy", 0))  # accuracy is fine


def test_unsupervised_mode_refused_before_any_work(registry):
    from valbench.grid import build_experiment, expand

    with pytest.raises(ConfigError, match="valuer 'dvrl' needs labels"):
        expand(build_experiment({"datasets": "synthetic", "corruptions": "features", "valuers": "dvrl",
                                 "seeds": 1, "mode": "unsupervised"}), registry, "cpu")


@pytest.mark.gpu
def test_runs_on_cuda():
    task, mask = easy_task(device="cuda")
    out = DVRLValuer(**SMALL).value(task)
    from sklearn.metrics import roc_auc_score

    assert np.isfinite(out.values).all() and roc_auc_score(mask, -out.values) > 0.6


def test_cli_run_stores_fits_and_budget_stop(tmp_path, capsys):
    from valbench.cli import main
    from valbench.store import open_existing

    res = str(tmp_path / "r.sqlite")
    rc = main(["run", "--valuers", "dvrl[iterations=10,inner_epochs=2,max_fits=5],knn-shapley,target-loss,"
               "confident-learning", "--datasets", "synthetic[n_source=80,n_target=40]", "--corruptions",
               "labels", "--seeds", "1", "--results", res])
    assert rc == 0, capsys.readouterr().err
    with open_existing(res) as store:
        att = store.attempts().set_index("job_key")
        jobs = store.results().set_index("key")
    fits = {jobs.loc[k, "valuer"]: (att.loc[k, "fits"], att.loc[k, "stopped_early"]) for k in jobs.index}
    assert fits == {"dvrl": (5, 1), "knn-shapley": (0, 0), "target-loss": (1, 0), "confident-learning": (1, 0)}
