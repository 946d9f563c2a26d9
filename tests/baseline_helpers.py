"""Shared helpers for the tests of the retraining baselines (loo, tmc-shapley, data-oob, ame,
influence-subsample)."""
from __future__ import annotations

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


def assert_refused(make, message: str) -> None:
    """``make()`` raises a one-line ValueError that contains ``message``."""
    with pytest.raises(ValueError) as exc:
        make()
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
