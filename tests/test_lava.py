"""LAVA: the OT potentials agree with the exact linear program, the calibrated gradient is the
derivative of the OT cost under a mass shift, the label-feature cost is the hand-computed
one, and a flipped label is valued lowest on a separable toy."""
import sys

import numpy as np
import pytest

from valbench.testing import easy_task, unsupervised_task
from valbench.types import Learner, Split, ValuationTask
from valbench_plugins.valuers import lava
from valbench_plugins.valuers.lava import LavaValuer, calibrated_gradient, ground_cost, label_distances, solve_ot


@pytest.fixture
def ot():
    return pytest.importorskip("ot", reason="the lava valuer's solver POT is an optional extra: "
                                            "pip install 'valbench[lava]'")


def generic_problem(n=7, m=5, seed=0):
    """Random cost and random (non-uniform) weights: the LP is non-degenerate, so its dual
    is unique up to a constant and the OT cost is linear near the weights."""
    g = np.random.default_rng(seed)
    return g.random((n, m)) * 3, g.dirichlet(np.ones(n)), g.dirichlet(np.ones(m))


def centred(f):
    return f - f.mean()


def shift(n, i):
    """Direction of moving mass onto sample i from every other sample equally."""
    d = np.full(n, -1.0 / (n - 1))
    d[i] = 1.0
    return d


def test_exact_potentials_are_the_lp_duals(ot):
    M, a, b = generic_problem()
    value, f, g, error, converged = solve_ot(M, a, b, None)
    plan, log = ot.emd(a, b, M, log=True)
    assert value == pytest.approx(float((plan * M).sum()), abs=1e-12) and error < 1e-12 and converged
    np.testing.assert_allclose(centred(f), centred(log["u"]), atol=1e-10)
    # they are duals: feasible (f_i + g_j <= M_ij) and tight on the plan's support
    slack = M - f[:, None] - g[None, :]
    assert slack.min() > -1e-10 and np.abs(slack[plan > 1e-12]).max() < 1e-10


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # POT's first iterates at reg 0.001
def test_entropic_potentials_tend_to_the_lp_duals(ot):
    M, a, b = generic_problem()
    _, log = ot.emd(a, b, M, log=True)
    gaps = [np.abs(centred(solve_ot(M, a, b, reg, max_iter=200000, tol=1e-12)[1]) - centred(log["u"])).max()
            for reg in (0.1, 0.01, 0.001)]
    assert gaps[-1] < 0.02 and gaps[0] > gaps[1] > gaps[2]


def test_calibrated_gradient_is_the_exact_costs_derivative_under_a_mass_shift(ot):
    M, a, b = generic_problem(seed=1)
    _, f, *_ = solve_ot(M, a, b, None)
    grad = calibrated_gradient(f)
    h = 1e-6
    for i in range(len(a)):
        fd = (ot.emd2(a + h * shift(len(a), i), b, M) - ot.emd2(a, b, M)) / h
        assert grad[i] == pytest.approx(fd, abs=1e-5), i
    # the closed form is f_i minus the mean of the other potentials
    assert grad[2] == pytest.approx(f[2] - np.delete(f, 2).mean())


def test_calibrated_gradient_is_the_entropic_costs_derivative_under_a_mass_shift(ot):
    """The KL-regularised value is smooth: central differences, non-uniform weights (so the
    potentials' log-weight term matters)."""
    M, a, b = generic_problem(seed=2)
    reg, h = 0.2, 1e-5
    _, f, *_ = solve_ot(M, a, b, reg, tol=1e-13, max_iter=100000)
    grad = calibrated_gradient(f)
    for i in range(len(a)):
        d = h * shift(len(a), i)
        up, down = (solve_ot(M, a + s * d, b, reg, tol=1e-13, max_iter=100000)[0] for s in (1, -1))
        assert grad[i] == pytest.approx((up - down) / (2 * h), abs=1e-5), i


# A 1-D toy whose exact class distances are obvious (ground cost (x - x')^2 / 2, and each
# class moves monotonically): source class 0 = {0, 2}, class 1 = {10}; target class 0 =
# {1}, class 1 = {11, 13}.
XS, YS = np.array([[0.0], [10.0], [2.0]]), np.array([0, 1, 0])
XT, YT = np.array([[11.0], [1.0], [13.0]]), np.array([1, 0, 1])


def test_label_distances_by_hand(ot):
    W, error, converged = label_distances(XS, YS, XT, YT, 2, None, np.asarray)
    # W00: 0 -> 1, 2 -> 1 (1/2 each); W01: 0 -> 11, 2 -> 13 (121/2 each); W10: 10 -> 1 (81/2);
    # W11: half of 10 to 11 (1/2) and half to 13 (9/2)
    np.testing.assert_allclose(W, [[0.5, 60.5], [40.5, 2.5]])
    assert error < 1e-12 and converged


def test_ground_cost_by_hand(ot):
    W = np.array([[0.5, 60.5], [40.5, 2.5]])
    C = ground_cost(XS, YS, XT, YT, W, feature_weight=1.0, label_weight=2.0, to=np.asarray)
    # (x - x')^2 / 2 + 2 W(y, y') / 2, rows source (0, c0), (10, c1), (2, c0); columns
    # target (11, c1), (1, c0), (13, c1)
    expected = [[60.5 + 60.5, 0.5 + 0.5, 84.5 + 60.5],
                [0.5 + 2.5, 40.5 + 40.5, 4.5 + 2.5],
                [40.5 + 60.5, 0.5 + 0.5, 60.5 + 60.5]]
    np.testing.assert_allclose(C, expected)
    C0 = ground_cost(XS, YS, XT, YT, W, feature_weight=0.0, label_weight=1.0, to=np.asarray)
    np.testing.assert_allclose(C0, W[YS][:, YT] / 2)


def separable_task(flipped=(3, 4)):
    """Two far-apart classes in 2-D, 20 source and 20 target samples; source labels
    ``flipped`` (by default one each way, so the classes stay balanced: LAVA's potentials
    also value every sample of a class the source has too much of low)."""
    g = np.random.default_rng(0)
    y = np.arange(20) % 2

    def x():
        return (0.3 * g.standard_normal((20, 2)) + 3.0 * y[:, None]).astype(np.float32)

    xs, xt = x(), x()
    ys = y.copy()
    ys[list(flipped)] = 1 - ys[list(flipped)]
    return ValuationTask(Split(xs, ys).frozen(), Split(xt, y.copy()).frozen(), 2, Learner("mlp", 2, 2), "auroc", 0)


@pytest.mark.parametrize("params", [{}, {"method": "exact"}, {"standardize": True}])
def test_a_flipped_label_is_valued_lowest(ot, params):
    out = LavaValuer(**params).value(separable_task())
    assert set(np.argsort(out.values)[:2]) == {3, 4}, out.values
    assert out.fits == 0 and out.info["marginal_error"] < 1e-4


def test_finds_the_flipped_labels_of_the_kit_task(ot):
    from sklearn.metrics import roc_auc_score

    task, mask = easy_task(n_source=150, n_target=100)
    values = LavaValuer(method="exact").value(task).values
    assert roc_auc_score(mask, -values) > 0.65  # corruption-auroc's orientation: low value = corrupted


@pytest.mark.parametrize("params, message", [
    ({"method": "emd"}, "method must be"),
    ({"reg": 0.0}, "reg must be"),
    ({"reg": float("nan")}, "reg must be"),
    ({"tol": -1e-9}, "tol must be"),
    ({"label_weight": -1.0}, "label_weight must be"),
    ({"feature_weight": float("inf")}, "feature_weight must be"),
    ({"feature_weight": 0.0, "label_weight": 0.0}, "both 0"),
    ({"max_iter": 0}, "max_iter must be"),
])
def test_invalid_parameters_are_one_line_errors(params, message):
    with pytest.raises(ValueError, match=message) as exc:
        LavaValuer(**params).validate()
    assert "\n" not in str(exc.value)


def test_bad_tasks_are_refused_before_any_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the task was checked")

    monkeypatch.setattr(lava, "label_distances", no_work)
    with pytest.raises(ValueError, match="lava needs labels") as exc:
        LavaValuer().value(unsupervised_task())
    assert "\n" not in str(exc.value)
    task = separable_task()
    one = ValuationTask(task.source.take(np.array([0])), task.target, 2, task.learner, "auroc", 0)
    with pytest.raises(ValueError, match="at least 2 source samples"):
        LavaValuer().value(one)
    with pytest.raises(ValueError, match="reg must be"):
        LavaValuer(reg=-1.0).value(task)


def test_missing_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot now raises ImportError
    with pytest.raises(ValueError) as exc:
        LavaValuer().check(separable_task())
    assert "pip install 'valbench[lava]'" in str(exc.value) and "\n" not in str(exc.value)


def test_a_sinkhorn_cut_short_by_max_iter_says_so(ot):
    task = separable_task()
    assert LavaValuer(max_iter=10).value(task).stopped_early
    # two far-apart clusters make Sinkhorn slow (tol 1e-9 takes more than 10000 iterations here)
    assert not LavaValuer(reg=1.0, tol=1e-6).value(task).stopped_early
    assert not LavaValuer(method="exact", max_iter=1).value(task).stopped_early  # max_iter is Sinkhorn's


def test_the_torch_backend_gives_the_numpy_values(ot, monkeypatch):
    """On a GPU the arrays are torch tensors; the same computation on CPU tensors must agree."""
    import torch

    task = separable_task()
    want = LavaValuer(reg=1.0, tol=1e-6).value(task).values
    monkeypatch.setattr(LavaValuer, "_to", staticmethod(lambda device: lambda a: torch.as_tensor(np.asarray(a, float))))
    got = LavaValuer(reg=1.0, tol=1e-6).value(task).values
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
