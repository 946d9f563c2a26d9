"""Corruption ``features``: per-sample Gaussian feature noise with a known noise rate."""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Split, Truth


MAX_RATE = 1e6


class FeatureNoise:
    """Every source sample i gets phi_i = max * U(0, 1) and x_i += phi_i * N(0, I).
    Truth: the vector phi (a higher rate means a noisier sample)."""

    name = "features"
    version = "1"
    truth_kind = "noise"

    def __init__(self, *, max: float = 3.0):
        self.max = max

    def validate(self) -> None:
        if not 0 < self.max <= MAX_RATE:
            raise ValueError(f"max must be in (0, {MAX_RATE:g}], got {self.max} (noise rates past it swamp any "
                             "feature scale, and float32 features overflow)")

    def apply(self, source: Split, n_classes: int | None, rng: np.random.Generator) -> tuple[Split, Truth]:
        n = len(source)
        phi = self.max * rng.uniform(0.0, 1.0, size=n)
        noise = rng.standard_normal(source.x.shape).astype(np.float32)
        scale = phi.reshape((n,) + (1,) * (source.x.ndim - 1)).astype(np.float32)
        x = np.asarray(source.x, dtype=np.float32) + scale * noise
        return Split(x, source.y), Truth("noise", phi)


@hookimpl
def register_corruptions(register):
    register(FeatureNoise)
