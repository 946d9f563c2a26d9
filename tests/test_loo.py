import numpy as np
import pytest

from valbench.training.stacked import FullBatchRecipe, train_single
from valbench.training.models import build_model, predict
from valbench.training.scoring import performance
from valbench.testing import easy_task
from valbench.training.utility import source_tensors
from valbench_plugins.valuers.loo import LOOValuer
from tests.baseline_helpers import one_thread, tiny_task  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(steps=30, lr=1e-2, full_models=3, compile=False)


@pytest.mark.parametrize("dropout", ["shared", "off"])
def test_loo_equals_brute_force_definition(dropout):
    """value_i = mean_r v(D; masks r) - v(D without i; masks 0), each model trained alone."""
    task = tiny_task()
    x, y = source_tensors(task)
    recipe = FullBatchRecipe(steps=FAST["steps"], lr=FAST["lr"], dropout=dropout)

    def v(rows, stream):
        model = train_single(build_model(task.learner, task.seed), x, y, rows, supervised=True, recipe=recipe,
                             seed=task.seed, stream=stream)
        return performance("auroc", np.asarray(task.target.y), predict(task.learner, model, task.target.x))

    import torch

    n = len(x)
    v_full = np.mean([v(torch.arange(n), r) for r in range(FAST["full_models"])])
    expected = np.array([v_full - v(torch.tensor([j for j in range(n) if j != i]), 0) for i in range(n)])
    got = LOOValuer(**FAST, dropout=dropout).value(task)
    assert np.abs(expected).max() > 1e-3  # the test can fail: values are not all zero
    assert np.allclose(got.values, expected, atol=1e-5), (got.values, expected)
    assert got.fits == n + (FAST["full_models"] if dropout == "shared" else 1) and not got.stopped_early


def test_fit_budget_below_n_is_refused_before_work():
    task = tiny_task()
    with pytest.raises(ValueError, match=r"loo needs 11 fits .* max_fits=10 is too small"):
        LOOValuer(**FAST, max_fits=10).check(task)
    LOOValuer(**FAST, max_fits=11).check(task)


def test_single_class_target_is_refused():
    task = tiny_task()
    one = type(task.target)(task.target.x, np.zeros(len(task.target), dtype=np.int64))
    bad = type(task)(task.source, one.frozen(), 2, task.learner, "auroc", 0, "cpu")
    with pytest.raises(ValueError, match="single class"):
        LOOValuer().check(bad)


def test_time_budget_stops_after_a_batch_and_keeps_its_values(monkeypatch):
    """A clock that advances one second per look: the budget of 2.5 s admits two batches of
    10 leave-one-out models, then stops; values of unvalued samples are 0."""
    from valbench.budget import Budget

    looks = iter(range(1, 100))
    monkeypatch.setattr(Budget, "elapsed", lambda self: float(next(looks)))
    task, _ = easy_task(n_source=60, n_target=30)
    got = LOOValuer(steps=20, full_models=1, models_per_batch=10, max_seconds=2.5, compile=False).value(task)
    assert got.stopped_early and got.info["valued"] == 20 and got.fits == 1 + 20
    assert np.all(got.values[20:] == 0) and np.count_nonzero(got.values[:20]) > 10


def test_full_models_below_one_is_refused():
    from valbench_plugins.valuers.tmc_shapley import TMCShapleyValuer

    for cls in (LOOValuer, TMCShapleyValuer):
        with pytest.raises(ValueError, match="full_models must be >= 1, got 0"):
            cls(full_models=0).validate()
