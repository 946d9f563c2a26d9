"""ame (Lin et al.'s Average Marginal Effect by a cross-validated Lasso): the weights of an
additive set function recovered, and the exact AME of a tiny real task (every subset of 7
source samples trained once with the valuer's own utility) approached."""
import itertools

import numpy as np
import pytest
import torch

from tests.baseline_helpers import assert_refused, one_thread  # noqa: F401 (fixture)
from valbench.testing import easy_task
from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import Utility
from valbench_plugins.valuers.ame import AMEValuer, ame_design, ame_values

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS, LR = 20, 5e-2
GRID = (0.2, 0.4, 0.6, 0.8)


def exact_ame(subsets: np.ndarray, v: np.ndarray, grid=GRID) -> np.ndarray:
    """AME_i = mean over p in the grid of sum over subsets S of the others of
    p^|S| (1-p)^(n-1-|S|) (v(S + i) - v(S)), from v of every subset of n items."""
    n = subsets.shape[1]
    value = {tuple(s): x for s, x in zip(subsets.astype(int), v)}
    ame = np.zeros(n)
    for i in range(n):
        for s in value:
            if s[i]:
                continue
            k = sum(s)
            gain = value[s[:i] + (1,) + s[i + 1:]] - value[s]
            ame[i] += np.mean([p ** k * (1 - p) ** (n - 1 - k) for p in grid]) * gain
    return ame


def test_ame_design_draws_each_p_alike_and_includes_at_rate_p():
    masks, p = ame_design(np.random.default_rng(0), 8000, 50, GRID)
    assert list(p[:8]) == [0.2, 0.4, 0.6, 0.8] * 2
    assert [int((p == q).sum()) for q in GRID] == [2000] * 4
    for q in GRID:
        assert abs(masks[p == q].mean() - q) < 0.01


def test_recovers_the_weights_of_an_additive_set_function():
    """v(S) = sum of the weights in S + noise: every marginal effect is w_i, so AME = w."""
    n = 8
    w = np.array([0.5, -0.3, 0.2, 0.0, 0.9, -0.6, 0.1, 0.4])
    g = np.random.default_rng(1)
    masks, p = ame_design(g, 2000, n, GRID)
    values, alpha = ame_values(masks, p, masks @ w + 0.01 * g.standard_normal(len(masks)), folds=5)
    assert np.max(np.abs(values - w)) < 0.02, values
    assert (np.argsort(values) == np.argsort(w)).all() and alpha > 0


def test_the_rise_of_the_mean_utility_with_p_does_not_hide_the_effects():
    """200 samples: 190 help a little (+0.002 each, so the mean utility rises with p), 10
    harm (-0.02), 400 subsets. Centred within each p the Lasso finds both sizes; centred once
    over all subsets (the paper, OpenDataVal) it shrinks the 10 to about half and the 190 to 0."""
    n = 200
    w = np.full(n, 0.002)
    w[:10] = -0.02
    g = np.random.default_rng(3)
    masks, p = ame_design(g, 400, n, GRID)
    values, _ = ame_values(masks, p, masks @ w + 0.005 * g.standard_normal(len(masks)), folds=5)
    assert set(np.argsort(values)[:10]) == set(range(10))
    assert np.max(np.abs(values[:10] + 0.02)) < 0.005, values[:10]
    assert abs(np.median(values[10:]) - 0.002) < 0.001


def test_approaches_the_exact_ame_on_seven_samples():
    task, _ = easy_task(n_source=7, n_target=40, n_features=4)
    util = Utility(task, FullBatchRecipe(STEPS, LR, "shared", False), models_per_batch=128)
    subsets = np.array(list(itertools.product([0, 1], repeat=7)), dtype=np.float32)
    exact = exact_ame(subsets, util.scores(torch.arange(7), torch.as_tensor(subsets)))
    est = AMEValuer(steps=STEPS, lr=LR, samples=1000, models_per_batch=500, compile=False).value(task)
    assert est.fits == 1000 and not est.stopped_early and est.info["subsets"] == 1000
    # the regression's standard error is about sd(v) sqrt(c / samples), c = E_p[1/(p(1-p))] = 5.2 on
    # the grid; sd(v) of an AUROC <= 0.25
    c = np.mean([1 / (p * (1 - p)) for p in GRID])
    assert np.max(np.abs(est.values - exact)) < 4 * 0.25 * np.sqrt(c / 1000), (est.values, exact)
    assert np.corrcoef(est.values, exact)[0, 1] > 0.95


def test_budgets_stop_cleanly_and_are_recorded():
    task, _ = easy_task(n_source=60, n_target=30)
    out = AMEValuer(steps=5, lr=1e-2, samples=400, models_per_batch=100, max_fits=250, compile=False).value(task)
    assert out.fits == 250 and out.stopped_early and out.info["subsets"] == 250
    assert np.isfinite(out.values).all() and out.info["nonzero"] > 0
    timed = AMEValuer(steps=5, lr=1e-2, samples=400, max_seconds=1e-9, compile=False).value(task)
    assert timed.fits == 0 and timed.stopped_early and not timed.values.any()  # no subsets: no evidence, all 0


@pytest.mark.parametrize("params, message", [
    (dict(probabilities="0.2,1.0"), "probabilities must each be in (0, 1)"),
    (dict(probabilities="0,0.5"), "probabilities must each be in (0, 1)"),
    (dict(probabilities="0.2,x"), "probabilities must be comma-separated numbers"),
    (dict(folds=1), "folds must be >= 2"),
    (dict(samples=4, folds=5), "samples must be >= folds=5"),
])
def test_invalid_parameters_are_one_line_errors(params, message):
    assert_refused(AMEValuer(**params).validate, message)


def test_a_budget_below_the_cross_validation_is_refused_before_any_work():
    task, _ = easy_task(n_source=20, n_target=20)
    assert_refused(lambda: AMEValuer(max_fits=3, folds=5).check(task), "max_fits=3 is too small")
