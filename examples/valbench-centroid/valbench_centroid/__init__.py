"""valbench-centroid: a third-party valbench plugin, the example to copy.

Valuer ``centroid``: value_i = minus the distance of source sample i (features flattened)
to the mean of the TARGET samples of its own label. A sample far from where the clean
target set puts its class (a flipped label, heavy feature noise) gets a low value.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from valbench import hookimpl
from valbench.types import ValuationTask


class CentroidValuer:
    """value_i = -distance(x_i, mean of the target samples labelled y_i)."""

    name = "centroid"
    version = "1"  # goes into job keys: bump it when the values change
    supervised_only = True  # needs labels: the harness refuses it in unsupervised mode

    def __init__(self, *, metric: Literal["euclidean", "cosine"] = "euclidean"):
        self.metric = metric  # only store; validate() checks

    def validate(self) -> None:
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")

    def check(self, task: ValuationTask) -> None:
        absent = sorted(set(np.unique(task.source.y).tolist()) - set(np.unique(task.target.y).tolist()))
        if absent:
            raise ValueError(f"the target set has no sample of class {absent[0]}, which the source set has; "
                             "use a larger target set")

    def value(self, task: ValuationTask) -> np.ndarray:
        xs = np.asarray(task.source.x, dtype=np.float64).reshape(len(task.source), -1)
        xt = np.asarray(task.target.x, dtype=np.float64).reshape(len(task.target), -1)
        classes, which = np.unique(task.source.y, return_inverse=True)
        centre = np.stack([xt[task.target.y == c].mean(axis=0) for c in classes])[which]  # (n_source, d)
        if self.metric == "euclidean":
            return -np.linalg.norm(xs - centre, axis=1)
        norms = np.linalg.norm(xs, axis=1) * np.linalg.norm(centre, axis=1)
        return -(1.0 - (xs * centre).sum(axis=1) / np.maximum(norms, 1e-12))  # minus the cosine distance


@hookimpl
def register_valuers(register):
    register(CentroidValuer)
