"""Shared helpers for the tests of the retraining baselines (loo, tmc-shapley, data-oob, ame,
influence-subsample)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from valbench.types import Learner
from valbench.types import Split, ValuationTask


@pytest.fixture
def one_thread():
    """Small torch ops on a shared 2-core machine run much faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_task(n_source: int = 8, n_target: int = 30, seed: int = 0, metric: str = "auroc") -> ValuationTask:
    """A small two-class task with both classes in source and target, 2 of them flipped."""
    g = np.random.default_rng(seed)

    def blobs(n: int) -> Split:
        y = np.arange(n) % 2
        g.shuffle(y)
        x = (g.standard_normal((n, 4)) + 1.5 * y[:, None]).astype(np.float32)
        return Split(x, y.astype(np.int64))

    src, tgt = blobs(n_source), blobs(n_target)
    y = src.y.copy()
    y[:2] = 1 - y[:2]
    learner = Learner("mlp", 4, 2, hidden=(16, 16))
    return ValuationTask(Split(src.x, y).frozen(), tgt.frozen(), 2, learner, metric, seed, "cpu")


def subsets_of(index: torch.Tensor, weight: torch.Tensor) -> list[tuple[int, ...]]:
    """The source subsets a batched score call trains on, one sorted tuple per row."""
    return [tuple(sorted(index[j][weight[j] > 0].tolist())) for j in range(len(index))]


def exact_shapley(n: int, v) -> np.ndarray:
    """Shapley values by enumerating every subset: sum |S|!(n-|S|-1)!/n! (v(S+i) - v(S))."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            c = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for s in itertools.combinations(others, r):
                phi[i] += c * (v(s + (i,)) - v(s))
    return phi


def exact_semivalue(players, v, p) -> np.ndarray:
    """A semivalue by enumeration: sum over S of the other ``players`` of
    p[|S|] / C(m-1, |S|) (v(S+i) - v(S)), ``p`` the weight of each subset size."""
    players = list(players)
    m = len(players)
    phi = np.zeros(m)
    for a, i in enumerate(players):
        others = [j for j in players if j != i]
        for r in range(m):
            for s in itertools.combinations(others, r):
                phi[a] += p[r] / math.comb(m - 1, r) * (v(s + (i,)) - v(s))
    return phi


def utility_table(task: ValuationTask, steps: int, lr: float, measure=None) -> dict[tuple[int, ...], object]:
    """v of every subset of the source set (as sorted tuples), each trained once with the
    retraining valuers' own Utility (dropout off), ``measure`` as Utility.scores takes it;
    no class condition (the caller applies it)."""
    from valbench.training.stacked import FullBatchRecipe
    from valbench.training.utility import Utility

    n = len(task.source)
    util = Utility(task, FullBatchRecipe(steps, lr, "off", False), models_per_batch=256)
    masks = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float32)
    v = util.scores(torch.arange(n), torch.as_tensor(masks), measure=measure)
    return {tuple(np.flatnonzero(m).tolist()): x for m, x in zip(masks, v)}


def assert_refused(make, message: str) -> None:
    """``make()`` raises a one-line ValueError that contains ``message``."""
    with pytest.raises(ValueError) as exc:
        make()
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
