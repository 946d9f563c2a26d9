import numpy as np
import pytest
import torch

from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import Utility
from valbench.training.permutations import Stopping, run_permutations
from valbench_plugins.valuers.tmc_shapley import TMCShapleyValuer
from tests.baseline_helpers import exact_shapley, one_thread, subsets_of, tiny_task  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tmc_core_approaches_exact_shapley_of_a_known_game():
    labels = np.array([0, 1, 0, 1, 1, 0])
    w = np.array([0.30, 0.05, -0.1, 0.2, 0.15, 0.02])

    def v(s):  # v(empty) = 0.5 until both classes are present, as in TMC
        s = list(s)
        return 0.5 if len(set(labels[s])) < 2 else 0.5 + 0.4 * np.tanh(w[s].sum()) + 0.05 * len(s) / 6

    def score(index, weight):
        return np.array([v(s) for s in subsets_of(index, weight)])

    exact = exact_shapley(6, v)
    res = run_permutations(score, 6, labels, 0.5, v(range(6)), seed=0, tolerance=0.0, max_permutations=1500,
                           permutations_per_batch=50, threshold=1e-12)
    assert res.permutations == 1500
    assert np.abs(res.values - exact).max() < 0.006, (res.values, exact)
    assert np.isclose(res.values.sum(), v(range(6)) - 0.5)  # efficiency holds per permutation


def test_tmc_valuer_approaches_exact_shapley_of_the_trained_utility():
    """The real utility (a trained MLP, deterministic for a mask stream) on 5 samples."""
    task = tiny_task(n_source=5)
    params = dict(steps=20, lr=1e-2, full_models=1, dropout="off", compile=False)
    util = Utility(task, FullBatchRecipe(params["steps"], params["lr"], "off"))
    labels = np.asarray(task.source.y)
    cache = {}

    def v(s):
        s = tuple(sorted(s))
        if len(set(labels[list(s)])) < 2:
            return util.empty
        if s not in cache:
            w = torch.zeros(1, 5)
            w[0, list(s)] = 1.0
            cache[s] = util.scores(torch.arange(5), w)[0]
        return cache[s]

    exact = exact_shapley(5, v)
    got = TMCShapleyValuer(**params, tolerance=0.0, max_permutations=400, permutations_per_batch=40,
                           threshold=1e-12).value(task)
    assert got.info["permutations"] == 400
    assert np.abs(exact).max() > 0.02
    assert np.abs(got.values - exact).max() < 0.02, (got.values, exact)
    assert np.corrcoef(got.values, exact)[0, 1] > 0.95


def test_truncation_zeroes_the_tail_and_saves_fits():
    labels = np.arange(40) % 2

    fits = []

    def score(index, weight):  # v reaches v(D) = 1 after 3 samples
        fits.append(len(weight))
        return np.array([min(1.0, 0.5 + 0.25 * (len(s) - 1)) for s in subsets_of(index, weight)])

    res = run_permutations(score, 40, labels, 0.5, 1.0, seed=0, tolerance=0.01, patience=5, max_permutations=10,
                           permutations_per_batch=1, models_per_batch=4)
    truncated_fits = sum(fits)
    assert all(t is not None and t < 20 for t in res.truncated_at)
    fits.clear()
    none = run_permutations(score, 40, labels, 0.5, 1.0, seed=0, tolerance=0.0, max_permutations=10,
                            permutations_per_batch=1, models_per_batch=4)
    assert np.allclose(res.values, none.values)  # here the truncated tail really is zero
    assert truncated_fits < sum(fits) / 2, (truncated_fits, sum(fits))


def test_fit_budget_is_respected_and_recorded():
    task = tiny_task(n_source=12)
    got = TMCShapleyValuer(steps=5, full_models=2, max_fits=9, models_per_batch=4, compile=False).value(task)
    assert got.fits <= 9 and got.stopped_early and got.info["permutations"] >= 1
    with pytest.raises(ValueError, match="needs at least 3 fits"):
        TMCShapleyValuer(full_models=2, max_fits=2).check(task)


def test_reference_stopping_rule():
    s = Stopping("reference", 3, threshold=0.05, min_permutations=100)
    for _ in range(99):
        s.add(np.array([1.0, 2.0, -1.0]))
    assert not s.converged()  # fewer than 100 permutations
    s.add(np.array([1.0, 2.0, -1.0]))
    assert s.converged() and s.statistic == 0.0
    noisy = Stopping("reference", 3, threshold=0.05, min_permutations=100)
    g = np.random.default_rng(0)
    for _ in range(100):
        noisy.add(g.standard_normal(3))
    assert not noisy.converged()


def test_spearman_stopping_rule():
    s = Stopping("spearman", 4, threshold=0.999, min_permutations=10)
    base = np.array([1.0, 2.0, 3.0, 4.0])
    for _ in range(9):
        s.add(base)
    assert not s.converged()
    s.add(base)
    assert s.converged() and s.statistic == pytest.approx(1.0)


