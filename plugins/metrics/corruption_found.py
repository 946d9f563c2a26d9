"""Metric ``corruption-found``: the fraction of corrupted samples found against the
fraction of the data inspected, lowest values first (a detection curve).

For each inspected fraction f of ``step, 2 step, ..., max_fraction``, the share of all
corrupted samples among the round(f n) lowest-valued ones; stored as
``corruption-found:0.100`` etc. A perfect ranking finds everything once f reaches the
corruption rate; a random one finds about f. Ties are broken by sample order.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Truth


class CorruptionFound:
    name = "corruption-found"
    version = "1"
    truth_kind = "mask"
    higher_is_better = True

    def __init__(self, *, step: float = 0.05, max_fraction: float = 0.5):
        self.step = step
        self.max_fraction = max_fraction

    def validate(self) -> None:
        if not 0.0 < self.step <= self.max_fraction <= 1.0:
            raise ValueError(f"need 0 < step <= max_fraction <= 1, got step={self.step}, "
                             f"max_fraction={self.max_fraction}")

    def score(self, values: np.ndarray, truth: Truth) -> dict[str, float]:
        mask = np.asarray(truth.values)
        if mask.max() == 0:
            raise ValueError("no sample is corrupted: nothing to find")
        n = len(mask)
        found = np.concatenate([[0], np.cumsum(mask[np.argsort(np.asarray(values), kind="stable")])])
        count = int(round(self.max_fraction / self.step))
        fractions = [round(self.step * i, 6) for i in range(1, count + 1)]
        return {f"{f:.3f}": float(found[int(round(f * n))] / mask.sum()) for f in fractions}


@hookimpl
def register_metrics(register):
    register(CorruptionFound)
