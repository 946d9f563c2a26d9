"""influence-subsample (Feldman & Zhang's subsampled influence) against its exact expectation,
computed by enumerating every subset of the fixed size: on an additive set function and on
a tiny real task with the valuer's own utility."""
import itertools

import numpy as np
import pytest
import torch

from tests.baseline_helpers import assert_refused, one_thread  # noqa: F401 (fixture)
from valbench.testing import easy_task
from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import Utility, msr_values
from valbench_plugins.valuers.influence_subsample import InfluenceSubsampleValuer, fixed_size_masks

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS, LR = 20, 5e-2


def all_subsets(n: int, size: int) -> np.ndarray:
    """Every subset of ``size`` of n items as 0/1 rows."""
    rows = np.zeros((0, n), dtype=bool)
    for members in itertools.combinations(range(n), size):
        row = np.zeros((1, n), dtype=bool)
        row[0, list(members)] = True
        rows = np.vstack([rows, row])
    return rows


def exact_influence(masks: np.ndarray, v: np.ndarray) -> np.ndarray:
    """E[v | i in S] - E[v | i not in S] with S uniform over the rows of ``masks`` (every
    subset of one size): the plain means over the enumeration, written out per sample."""
    return np.array([v[masks[:, i]].mean() - v[~masks[:, i]].mean() for i in range(masks.shape[1])])


def test_fixed_size_masks_draw_uniform_subsets_of_the_size():
    masks = fixed_size_masks(np.random.default_rng(0), 20000, 6, 4)
    assert (masks.sum(axis=1) == 4).all()
    assert np.allclose(masks.mean(axis=0), 4 / 6, atol=0.02)  # every item equally likely
    counts = {}
    for row in masks:
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 15 and max(counts.values()) / min(counts.values()) < 1.3  # all C(6,4) subsets alike


def test_converges_to_the_exact_expectation_on_an_additive_set_function():
    """v(S) = sum of the weights in S + noise: the exact influence is w_i - sum(w_-i)/(n-1),
    and the estimate from random subsets of the size approaches the enumeration's value."""
    n, size = 8, 6
    w = np.array([0.5, -0.3, 0.2, 0.0, 0.9, -0.6, 0.1, 0.4])
    g = np.random.default_rng(1)
    full = all_subsets(n, size)
    exact = exact_influence(full, full @ w)
    assert np.allclose(exact, w - (w.sum() - w) / (n - 1))  # the closed form of the additive case
    masks = fixed_size_masks(g, 20000, n, size)
    est = msr_values(masks, masks @ w + 0.01 * g.standard_normal(len(masks)))
    assert np.max(np.abs(est - exact)) < 0.03, (est, exact)
    assert (np.argsort(est) == np.argsort(w)).all()


def test_converges_to_the_exact_influence_on_seven_samples():
    """fraction 0.7 of 7 samples: subsets of 5; all 21 trained once give the exact value."""
    task, _ = easy_task(n_source=7, n_target=40, n_features=4)
    util = Utility(task, FullBatchRecipe(STEPS, LR, "shared", False), models_per_batch=64)
    full = all_subsets(7, 5)
    exact = exact_influence(full, util.scores(torch.arange(7), torch.as_tensor(full, dtype=torch.float32)))
    est = InfluenceSubsampleValuer(steps=STEPS, lr=LR, samples=1000, models_per_batch=500, compile=False).value(task)
    assert est.fits == 1000 and not est.stopped_early and est.info["subset_size"] == 5
    # the error per sample is about 2 sd(v) / sqrt(samples * 0.21) (0.21 = 0.7 * 0.3); sd(v) of an AUROC <= 0.25
    assert np.max(np.abs(est.values - exact)) < 4 * 2 * 0.25 / np.sqrt(1000 * 0.21) + 1e-3, (est.values, exact)
    assert np.corrcoef(est.values, exact)[0, 1] > 0.95


def test_a_budget_stops_cleanly_and_is_recorded():
    task, _ = easy_task(n_source=60, n_target=30)
    out = InfluenceSubsampleValuer(steps=5, lr=1e-2, samples=400, models_per_batch=100, max_fits=250,
                                   compile=False).value(task)
    assert out.fits == 250 and out.stopped_early and out.info["subsets"] == 250
    assert np.isfinite(out.values).all() and np.abs(out.values).sum() > 0


@pytest.mark.parametrize("params, message", [
    (dict(fraction=1.0), "fraction must be in (0, 1)"),
    (dict(fraction=0.0), "fraction must be in (0, 1)"),
    (dict(samples=1), "samples must be >= 2"),
])
def test_invalid_parameters_are_one_line_errors(params, message):
    assert_refused(InfluenceSubsampleValuer(**params).validate, message)


def test_a_fraction_that_leaves_no_sample_out_is_refused_before_any_work():
    task, _ = easy_task(n_source=7, n_target=20)
    # round(0.95 * 7) = 7: no sample is ever left out
    assert_refused(lambda: InfluenceSubsampleValuer(fraction=0.95).check(task), "gives subsets of 7")
