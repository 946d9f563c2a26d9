"""class-wise-shapley against the exact CS-Shapley value: for each class, the in-class
Shapley value averaged over every out-of-class subset, enumerated over every subset of a
7-sample source set with the valuer's own utility (per-class target accuracies)."""
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from valbench.testing import unsupervised_task
from valbench.training import utility as utility_module
from valbench.training.scoring import batched_class_accuracy
from valbench_plugins.valuers.class_wise_shapley import ClassWiseShapleyValuer, class_wise_utility
from tests.baseline_helpers import exact_shapley, one_thread, tiny_task, utility_table  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

N, STEPS, LR = 7, 10, 1e-2
FAST = dict(steps=STEPS, lr=LR, full_models=1, dropout="off", compile=False, threshold=1e-12,
            permutations_per_batch=1000, models_per_batch=5000)


def test_the_utility_is_in_class_accuracy_times_exp_out_of_class_accuracy():
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    probs = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 1, 0, 2]]), 3).double()  # one model
    acc = batched_class_accuracy(y, probs, 3)
    assert torch.allclose(acc, torch.tensor([[0.5, 2 / 3, 1.0]], dtype=torch.float64))
    u = class_wise_utility(acc, torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64))
    want = [0.5 * np.exp(3 / 4), 2 / 3 * np.exp(2 / 3), 1.0 * np.exp(3 / 5)]  # out of class: (hits)/(others)
    assert np.allclose(u.numpy()[0], want)


def exact_class_wise(labels: np.ndarray, v) -> np.ndarray:
    """CS-Shapley by enumeration: for sample i of class c, the mean over every subset B of
    the other classes of i's Shapley value in the game S -> v(c, S + B) over class c."""
    phi = np.zeros(len(labels))
    for c in np.unique(labels):
        inside, outside = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        bases = [b for r in range(len(outside) + 1) for b in itertools.combinations(outside.tolist(), r)]
        for b in bases:
            game = exact_shapley(len(inside), lambda s: v(c, tuple(inside[list(s)]) + b))
            phi[inside] += game / len(bases)
    return phi


@pytest.fixture(scope="module")
def task_and_v():
    """The tiny task and the class-wise utility of every subset (2^7 fits); a subset lacking
    a class scores 0, as in the valuer."""
    task = tiny_task(n_source=N)
    table = utility_table(task, STEPS, LR, measure=lambda y, out: batched_class_accuracy(y, out, 2))
    labels = np.asarray(task.source.y)
    counts = torch.tensor(np.bincount(task.target.y, minlength=2), dtype=torch.float64)

    def v(c, s):
        s = tuple(sorted(s))
        if len(set(labels[list(s)])) < 2:
            return 0.0
        return float(class_wise_utility(torch.as_tensor(table[s])[None], counts)[0, c])
    return task, v


def test_valuer_converges_to_exact_class_wise_shapley(task_and_v):
    task, v = task_and_v
    labels = np.asarray(task.source.y)
    exact = exact_class_wise(labels, v)
    got = ClassWiseShapleyValuer(normalize=False, max_permutations=1500, **FAST).value(task)
    assert got.info["walks_per_class"] == [1500, 1500] and not got.stopped_early
    assert np.abs(exact).max() > 0.1
    assert np.abs(got.values - exact).max() < 0.03, (got.values, exact)
    assert np.corrcoef(got.values, exact)[0, 1] > 0.98


def test_normalize_rescales_each_class_to_its_in_class_accuracy():
    task = tiny_task(n_source=20)
    params = dict(FAST, max_permutations=5)
    raw = ClassWiseShapleyValuer(normalize=False, **params).value(task)
    norm = ClassWiseShapleyValuer(**params).value(task)
    labels = np.asarray(task.source.y)
    for c, acc in enumerate(norm.info["in_class_accuracy"]):
        members = labels == c
        assert raw.values[members].sum() != 0
        assert np.isclose(norm.values[members].sum(), acc)
        assert np.allclose(norm.values[members], raw.values[members] * acc / raw.values[members].sum())


def test_a_budget_stops_cleanly_and_is_recorded():
    task = tiny_task(n_source=30)
    got = ClassWiseShapleyValuer(steps=5, full_models=2, max_fits=25, models_per_batch=8, compile=False).value(task)
    assert got.fits <= 25 and got.stopped_early and got.info["permutations"] >= 1
    assert np.isfinite(got.values).all() and np.abs(got.values).sum() > 0


@pytest.mark.parametrize("case", ["unsupervised", "max_fits", "one class", "class missing from target"])
def test_bad_input_is_a_one_line_error_before_any_work(case, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a utility was built before the input was checked")

    task, params, words = tiny_task(), {}, ""
    if case == "unsupervised":
        task, words = unsupervised_task(), "needs labels"
    elif case == "max_fits":
        params, words = dict(full_models=3, max_fits=3), "needs at least 4 fits"
    else:
        keep = task.source.y == 0 if case == "one class" else np.ones(len(task.source), bool)
        source = task.source.take(np.flatnonzero(keep))
        target = task.target.take(np.flatnonzero(task.target.y == 0)) if case != "one class" else task.target
        task = dataclasses.replace(task, source=source, target=target)
        words = "two classes" if case == "one class" else "no sample of class 1"
    monkeypatch.setattr(utility_module.Utility, "__init__", no_work)
    with pytest.raises(ValueError) as err:
        ClassWiseShapleyValuer(**params).value(task)
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)
