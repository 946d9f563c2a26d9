"""Valuer ``knn-shapley``: exact Shapley values of a K-nearest-neighbour classifier (Jia et al. 2019).

Utility of a subset S for one target point (x_t, y_t): the fraction of its K nearest
neighbours in S (Euclidean distance on the flattened features) that carry label y_t,
U(S) = (1/K) sum_{j <= min(K, |S|)} 1[y_{a_j(S)} = y_t]. Its Shapley values have a closed
form (Jia et al. 2019, Theorem 1): with the source sorted by distance to x_t,
a_1 (nearest) ... a_N,

    s(a_N) = 1[y_{a_N} = y_t] / N
    s(a_i) = s(a_{i+1}) + (1[y_{a_i} = y_t] - 1[y_{a_{i+1}} = y_t]) / K * min(K, i) / i

The value of a source sample is its mean over the target points. No model is fitted
(fits = 0); the work is one distance matrix and one sort per target point, done in
chunks of target points on ``task.device``. Supervised tasks only (the utility counts
label matches). Exactly tied distances are broken by source index.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from valbench import hookimpl
from valbench.types import Valuation, ValuationTask

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch


def knn_shapley(x_source: torch.Tensor, y_source: torch.Tensor, x_target: torch.Tensor,
                y_target: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """Exact KNN-Shapley values (n_source,), float64, averaged over the target points."""
    import torch  # here: loading the plugins stays torch-free

    n = len(x_source)
    device = x_source.device
    ranks = torch.arange(1, n, device=device, dtype=torch.float64)  # 1-based ranks i = 1..N-1
    coef = torch.clamp(ranks, max=k) / (k * ranks)  # min(K, i) / (K i)
    total = torch.zeros(n, dtype=torch.float64, device=device)
    for start in range(0, len(x_target), chunk):
        xt, yt = x_target[start:start + chunk], y_target[start:start + chunk]
        dist = torch.cdist(xt, x_source)
        order = torch.argsort(dist, dim=1, stable=True)  # nearest first
        match = (y_source[order] == yt[:, None]).to(torch.float64)  # (T, N), by rank
        s = torch.empty_like(match)
        s[:, -1] = match[:, -1] / n
        if n > 1:
            step = (match[:, :-1] - match[:, 1:]) * coef  # s(a_i) - s(a_{i+1}), i = 1..N-1
            s[:, :-1] = s[:, -1:] + step.flip(1).cumsum(1).flip(1)
        total.index_add_(0, order.reshape(-1), s.reshape(-1))
    return total / len(x_target)


class KNNShapleyValuer:
    """Exact KNN-Shapley (Jia et al. 2019) with K = ``k`` neighbours, Euclidean distance."""

    name = "knn-shapley"
    version = "1"
    supervised_only = True

    def __init__(self, *, k: int = 10):
        self.k = k

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def check(self, task: ValuationTask) -> None:
        if not task.supervised:
            raise ValueError("knn-shapley needs labels (its utility counts label matches); use a supervised task")
        if self.k > len(task.source):
            raise ValueError(f"k={self.k} is larger than the source set ({len(task.source)} samples); "
                             f"use k <= {len(task.source)}")

    def value(self, task: ValuationTask) -> Valuation:
        import torch

        self.validate()
        self.check(task)
        dev = task.device

        def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            a = np.asarray(a)
            return torch.tensor(a.reshape(len(a), -1) if dtype.is_floating_point else a, dtype=dtype, device=dev)

        values = knn_shapley(t(task.source.x, torch.float32), t(task.source.y, torch.long),
                             t(task.target.x, torch.float32), t(task.target.y, torch.long), self.k)
        return Valuation(values.cpu().numpy(), fits=0, info={"k": self.k})


@hookimpl
def register_valuers(register):
    register(KNNShapleyValuer)
