"""Dataset ``synthetic``: a small generated classification set for fast tests and demos.

A fixed pool (drawn from ``data_seed``) of Gaussian blobs, one per class, with means
``separation`` apart on average; the job seed only chooses the split, like real data.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.datautil import minmax_together, sha256_bytes, take
from valbench.seeding import rng
from valbench.types import Split, Splits


class Synthetic:
    name = "synthetic"
    version = "1"

    def __init__(self, *, n_source: int = 200, n_target: int = 100, n_test: int = 200, n_features: int = 8,
                 n_classes: int = 2, separation: float = 2.0, data_seed: int = 0):
        self.n_source, self.n_target, self.n_test = n_source, n_target, n_test
        self.n_features, self.n_classes, self.separation, self.data_seed = n_features, n_classes, separation, data_seed

    def validate(self) -> None:
        for key in ("n_source", "n_target", "n_test", "n_features"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.separation < 0:
            raise ValueError(f"separation must be >= 0, got {self.separation}")

    def fingerprint(self) -> str:
        return sha256_bytes(repr(sorted(vars(self).items())).encode())

    def pool(self) -> tuple[np.ndarray, np.ndarray]:
        g = rng(self.data_seed, "synthetic-pool")
        n = self.n_source + self.n_target + self.n_test
        means = g.standard_normal((self.n_classes, self.n_features))
        means *= self.separation / np.sqrt(2 * self.n_features)
        y = g.integers(0, self.n_classes, size=n)
        x = means[y] * np.sqrt(self.n_features) + g.standard_normal((n, self.n_features))
        return x, y.astype(np.int64)

    def load(self, seed: int) -> Splits:
        x, y = self.pool()
        src, tgt, tst = take(rng(seed, "split", self.name).permutation(len(x)),
                             [self.n_source, self.n_target, self.n_test], ["source", "target", "test"], self.name)
        xs, xg, xe = minmax_together(x[src], x[tgt], x[tst])
        return Splits(Split(xs, y[src]), Split(xg, y[tgt]), Split(xe, y[tst]), n_classes=self.n_classes)


@hookimpl
def register_datasets(register):
    register(Synthetic)
