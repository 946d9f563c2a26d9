"""banzhaf (Data Banzhaf, maximum sample reuse) against the exact Banzhaf value computed by
enumerating every subset of a tiny source set with the same utility."""
import itertools

import numpy as np
import torch

from valbench.testing import easy_task
from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import Utility, msr_values
from valbench_plugins.valuers.banzhaf import BanzhafValuer

STEPS, LR = 20, 5e-2


def tiny():
    task, _ = easy_task(n_source=7, n_target=40, n_features=4)
    return task


def exact_banzhaf(task) -> np.ndarray:
    """beta_i = 2^-(n-1) * sum over subsets S of the others of v(S + i) - v(S): every subset
    of the n source samples trained once (2^n models), from the valuer's own utility."""
    util = Utility(task, FullBatchRecipe(STEPS, LR, "shared", False), models_per_batch=128)
    n = util.n
    subsets = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float32)
    v = util.scores(torch.arange(n), torch.as_tensor(subsets), stream=0)
    value = {tuple(s.astype(int)): x for s, x in zip(subsets, v)}
    beta = np.zeros(n)
    for i in range(n):
        for s in value:
            if s[i] == 0:
                with_i = list(s)
                with_i[i] = 1
                beta[i] += value[tuple(with_i)] - value[s]
    return beta / 2 ** (n - 1)


def test_msr_on_every_subset_once_is_the_exact_banzhaf_value():
    """With each of the 2^n subsets drawn exactly once, MSR's difference of means IS the
    Banzhaf value (each side averages 2^(n-1) subsets): checked on a random set function."""
    n = 5
    masks = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float32)
    v = np.random.default_rng(0).normal(size=len(masks))
    f = {tuple(m.astype(int)): x for m, x in zip(masks, v)}
    beta = [np.mean([f[tuple(np.where(np.arange(n) == i, 1, m))] - f[tuple(np.where(np.arange(n) == i, 0, m))]
                     for m in masks.astype(int) if m[i] == 0]) for i in range(n)]
    assert np.allclose(msr_values(masks, v), beta)


def test_banzhaf_converges_to_the_exact_value_on_seven_samples():
    task = tiny()
    exact = exact_banzhaf(task)
    est = BanzhafValuer(steps=STEPS, lr=LR, samples=3000, models_per_batch=500, compile=False).value(task)
    assert est.fits == 3000 and not est.stopped_early
    # MSR's error per sample is about 2 sd(v) / sqrt(samples); v is an AUROC, so sd(v) <= 0.25 bounds it
    assert np.max(np.abs(est.values - exact)) < 4 * 2 * 0.25 / np.sqrt(3000) + 1e-3, (est.values, exact)
    assert np.corrcoef(est.values, exact)[0, 1] > 0.95


def test_a_budget_stops_cleanly_and_is_recorded():
    task, _ = easy_task(n_source=60, n_target=30)
    out = BanzhafValuer(steps=5, lr=1e-2, samples=400, models_per_batch=100, max_fits=250, compile=False).value(task)
    assert out.fits == 250 and out.stopped_early and out.info["subsets"] == 250  # the last batch cut to the fits left
    assert np.isfinite(out.values).all() and np.abs(out.values).sum() > 0
