"""Corruption ``labels``: flip exactly floor(rate * N) source labels to a different class."""
from __future__ import annotations

import math

import numpy as np

from valbench import hookimpl
from valbench.types import Split, Truth


class LabelFlip:
    """Choose floor(rate * N) source samples at random; give each a label drawn uniformly
    from the other K - 1 classes. Truth: the 0/1 mask of flipped samples."""

    name = "labels"
    version = "1"
    truth_kind = "mask"
    supervised_only = True

    def __init__(self, *, rate: float = 0.2):
        self.rate = rate

    def validate(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")

    def apply(self, source: Split, n_classes: int | None, rng: np.random.Generator) -> tuple[Split, Truth]:
        if n_classes is None or n_classes < 2:
            raise ValueError("label corruption needs a classification task with at least 2 classes")
        n = len(source)
        k = math.floor(self.rate * n)
        chosen = rng.choice(n, size=k, replace=False)
        y = np.array(source.y, dtype=np.int64, copy=True)
        # adding 1..K-1 (mod K) draws uniformly among the other classes
        y[chosen] = (y[chosen] + rng.integers(1, n_classes, size=k)) % n_classes
        mask = np.zeros(n, dtype=np.int8)
        mask[chosen] = 1
        return Split(source.x, y), Truth("mask", mask)


@hookimpl
def register_corruptions(register):
    register(LabelFlip)
