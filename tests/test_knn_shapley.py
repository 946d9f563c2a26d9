"""KNN-Shapley: the vectorised closed form equals brute-force Shapley values of the KNN utility."""
import itertools
import math

import numpy as np
import pytest
import torch

from sklearn.metrics import roc_auc_score

from valbench.testing import easy_task
from valbench.types import ValuationTask
from valbench_plugins.valuers.knn_shapley import KNNShapleyValuer, knn_shapley


def knn_utility(subset, xs, ys, x_t, y_t, k):
    """(1/K) * number of the K nearest members of ``subset`` that carry label y_t."""
    if not subset:
        return 0.0
    members = sorted(subset, key=lambda i: (np.linalg.norm(xs[i] - x_t), i))
    return sum(ys[i] == y_t for i in members[:k]) / k


def brute_force_shapley(xs, ys, xt, yt, k):
    n = len(xs)
    total = np.zeros(n)
    for x_t, y_t in zip(xt, yt):
        phi = np.zeros(n)
        for perm in itertools.permutations(range(n)):
            before = []
            for i in perm:
                phi[i] += knn_utility(before + [i], xs, ys, x_t, y_t, k) - knn_utility(before, xs, ys, x_t, y_t, k)
                before.append(i)
        total += phi / math.factorial(n)
    return total / len(xt)


def recursion_loop(xs, ys, xt, yt, k):
    """Jia et al.'s recursion written as a plain loop, one target point at a time."""
    n = len(xs)
    total = np.zeros(n)
    for x_t, y_t in zip(xt, yt):
        order = np.argsort(np.linalg.norm(xs - x_t, axis=1), kind="stable")
        s = np.zeros(n)
        s[order[-1]] = float(ys[order[-1]] == y_t) / n
        for i in range(n - 2, -1, -1):  # 0-based position i is rank i + 1
            a, b = order[i], order[i + 1]
            s[a] = s[b] + (float(ys[a] == y_t) - float(ys[b] == y_t)) / k * min(k, i + 1) / (i + 1)
        total += s
    return total / len(xt)


def tiny(seed=0, n=6, t=3, classes=3):
    g = np.random.default_rng(seed)
    return (g.standard_normal((n, 2)), g.integers(0, classes, n), g.standard_normal((t, 2)), g.integers(0, classes, t))


def closed_form(xs, ys, xt, yt, k):
    f = lambda a: torch.tensor(a, dtype=torch.float32)
    return knn_shapley(f(xs), torch.tensor(ys), f(xt), torch.tensor(yt), k, chunk=2).numpy()


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_closed_form_equals_brute_force_shapley(k):
    xs, ys, xt, yt = tiny(seed=k)
    expected = brute_force_shapley(xs, ys, xt, yt, k)
    assert np.abs(expected).max() > 0.01
    np.testing.assert_allclose(closed_form(xs, ys, xt, yt, k), expected, atol=1e-12)


def test_closed_form_equals_the_recursion_on_a_larger_set():
    g = np.random.default_rng(3)
    xs, ys = g.standard_normal((200, 5)), g.integers(0, 2, 200)
    xt, yt = g.standard_normal((37, 5)), g.integers(0, 2, 37)
    np.testing.assert_allclose(closed_form(xs, ys, xt, yt, 10), recursion_loop(xs, ys, xt, yt, 10), atol=1e-12)
    # efficiency: values sum to the utility of the whole set, averaged over target points
    full = np.mean([knn_utility(list(range(200)), xs, ys, a, b, 10) for a, b in zip(xt, yt)])
    assert closed_form(xs, ys, xt, yt, 10).sum() == pytest.approx(full, abs=1e-12)


def test_fits_and_auroc_on_the_easy_task():
    task, mask = easy_task()
    out = KNNShapleyValuer(k=5).value(task)
    assert out.fits == 0 and out.values.shape == (len(task.source),)
    assert roc_auc_score(mask, -out.values) >= 0.8


def test_k_larger_than_source_is_refused():
    task, _ = easy_task(n_source=20)
    with pytest.raises(ValueError, match="k=21 is larger than the source set \\(20 samples\\)"):
        KNNShapleyValuer(k=21).check(task)
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNShapleyValuer(k=0).validate()


def test_cli_refuses_k_larger_than_source_before_writing(tmp_path, capsys):
    from valbench.cli import main

    res = tmp_path / "r.sqlite"
    rc = main(["run", "--valuers", "knn-shapley[k=5000]", "--datasets", "synthetic", "--corruptions", "labels",
               "--seeds", "1", "--results", str(res)])
    err = capsys.readouterr().err
    assert rc == 2 and "k=5000 is larger than the source set" in err and err.strip().count("\n") == 0
    assert not res.exists()


@pytest.mark.gpu
def test_cuda_equals_cpu():
    task, _ = easy_task()
    cuda = ValuationTask(task.source, task.target, 2, task.learner, task.metric, 0, "cuda")
    np.testing.assert_allclose(KNNShapleyValuer().value(cuda).values, KNNShapleyValuer().value(task).values,
                               atol=1e-9)
