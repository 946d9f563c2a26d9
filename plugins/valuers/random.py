"""Valuer ``random``: Gaussian noise values, the null model every method must beat."""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.seeding import rng
from valbench.types import ValuationTask


class RandomValuer:
    """values ~ N(0, 1), independent of the data (AUROC ~ 0.5, Spearman ~ 0 expected)."""

    name = "random"
    version = "1"
    known_failures = {
        "beats-chance": "the null model: its values ignore the data by design",
        "values-follow-samples": "the null model: value i is noise drawn for position i, whatever sample is there",
    }

    def value(self, task: ValuationTask) -> np.ndarray:
        return rng(task.seed, "random-valuer").standard_normal(len(task.source))


@hookimpl
def register_valuers(register):
    register(RandomValuer)
