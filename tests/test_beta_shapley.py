"""beta-shapley against the exact Beta Shapley value, enumerated over every subset of a
7-sample source set with the valuer's own utility; Beta(1, 1) against exact Data Shapley."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from valbench.training import utility as utility_module
from valbench.training.permutations import Game, run_permutations
from valbench_plugins.valuers.beta_shapley import BetaShapleyValuer, cardinality_weights, horizon
from tests.baseline_helpers import (exact_semivalue, exact_shapley, one_thread, subsets_of,  # noqa: F401 (fixture)
                                    tiny_task, utility_table)

pytestmark = pytest.mark.usefixtures("one_thread")

N, STEPS, LR = 7, 10, 1e-2
FAST = dict(steps=STEPS, lr=LR, full_models=1, dropout="off", compile=False, threshold=1e-12,
            permutations_per_batch=1000, models_per_batch=5000)


@pytest.mark.parametrize("alpha,beta", [(16, 1), (4, 1), (1, 1), (0.5, 2.5)])
def test_cardinality_weights_are_the_papers_beta_integral(alpha, beta):
    """p_k = C(n-1, k) int t^k (1-t)^(n-1-k) Beta(t; beta, alpha) dt (Kwon & Zou's w(k+1) C(n-1,k) / n)."""
    n = 9
    density = stats.beta(beta, alpha).pdf
    want = [math.comb(n - 1, k) * integrate.quad(lambda t: t ** k * (1 - t) ** (n - 1 - k) * density(t), 0, 1)[0]
            for k in range(n)]
    assert np.allclose(cardinality_weights(n, alpha, beta), want, atol=1e-7)


def test_beta_one_one_weights_are_data_shapleys():
    n = 8
    per_subset = cardinality_weights(n, 1, 1) / [math.comb(n - 1, k) for k in range(n)]
    shapley = [math.factorial(k) * math.factorial(n - 1 - k) / math.factorial(n) for k in range(n)]
    assert np.allclose(per_subset, shapley)
    assert horizon(cardinality_weights(1000, 1, 1), 1e-3) == 1000  # every position walked


def test_horizon_drops_only_the_tail_weight():
    p = cardinality_weights(1000, 16, 1)
    k = horizon(p, 1e-3)
    assert p[k:].sum() < 1e-3 <= p[k - 1:].sum() and 300 < k < 400
    assert horizon(p, 0.0) == 1000


def test_engine_converges_to_the_exact_semivalue_of_a_known_game():
    """Position weights n p_k on permutation marginals estimate the semivalue (no training)."""
    labels = np.array([0, 1, 0, 1, 1, 0])
    w = np.array([0.30, 0.05, -0.1, 0.2, 0.15, 0.02])

    def v(s):
        s = list(s)
        return 0.5 if len(set(labels[s])) < 2 else 0.5 + 0.4 * np.tanh(w[s].sum()) + 0.05 * len(s) / 6

    p = cardinality_weights(6, 16, 1)
    exact = exact_semivalue(range(6), v, p)
    res = run_permutations(lambda index, weight: np.array([v(s) for s in subsets_of(index, weight)]), 6, labels,
                           0.5, v(range(6)), seed=0, games=[Game(np.arange(6), weights=6 * p)], tolerance=0.0,
                           max_permutations=4000, permutations_per_batch=500, threshold=1e-12)
    assert np.abs(exact).max() > 0.02
    assert np.abs(res.values - exact).max() < 0.003, (res.values, exact)
    shapley = exact_shapley(6, v)
    assert np.abs(shapley - exact).max() > 0.01  # the weights matter: Beta(16, 1) is not Shapley here


@pytest.fixture(scope="module")
def task_and_v():
    """The tiny task and its utility on every subset (2^7 fits), with the valuers' class
    condition: a subset lacking a class scores v(empty)."""
    task = tiny_task(n_source=N)
    table = utility_table(task, STEPS, LR)
    labels = np.asarray(task.source.y)
    empty = 0.5  # AUROC of a model that learned nothing

    def v(s):
        s = tuple(sorted(s))
        return table[s] if len(set(labels[list(s)])) == 2 else empty
    return task, v


def test_valuer_converges_to_exact_beta_shapley(task_and_v):
    task, v = task_and_v
    exact = exact_semivalue(range(N), v, cardinality_weights(N, 16, 1))
    got = BetaShapleyValuer(alpha=16, beta=1, tail=0, max_permutations=1000, **FAST).value(task)
    assert got.info["permutations"] == 1000 and got.info["horizon"] == N and not got.stopped_early
    assert np.abs(exact).max() > 0.03
    assert np.abs(got.values - exact).max() < 0.015, (got.values, exact)
    assert np.corrcoef(got.values, exact)[0, 1] > 0.95


def test_beta_one_one_converges_to_exact_data_shapley(task_and_v):
    task, v = task_and_v
    exact = exact_shapley(N, v)
    got = BetaShapleyValuer(alpha=1, beta=1, max_permutations=600, **FAST).value(task)
    assert np.abs(exact).max() > 0.1
    assert np.abs(got.values - exact).max() < 0.02, (got.values, exact)
    assert np.corrcoef(got.values, exact)[0, 1] > 0.98


def test_a_budget_stops_cleanly_and_is_recorded():
    task = tiny_task(n_source=30)
    got = BetaShapleyValuer(steps=5, full_models=2, max_fits=25, models_per_batch=8, compile=False).value(task)
    assert got.fits <= 25 and got.stopped_early and got.info["permutations"] >= 1
    assert np.isfinite(got.values).all() and np.abs(got.values).sum() > 0


@pytest.mark.parametrize("bad", [dict(alpha=0), dict(beta=-1.0), dict(alpha="16"), dict(beta=float("nan")),
                                 dict(alpha=True), dict(tail=1.0), dict(tail=-0.1), dict(max_fits=2, full_models=2)])
def test_bad_parameters_are_one_line_errors_before_any_work(bad, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a utility was built before the parameters were checked")

    monkeypatch.setattr(utility_module.Utility, "__init__", no_work)
    with pytest.raises(ValueError) as err:
        BetaShapleyValuer(**bad).value(tiny_task())
    assert "\n" not in str(err.value) and str(next(iter(bad))) in str(err.value), str(err.value)
