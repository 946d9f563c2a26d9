"""Corruption ``none``: the source set as it is (exp9/exp10 value clean LINCS data).

Its truth has kind "none" (all zeros): no corruption metric can score it, so such a run
names a task metric, e.g. ``--metrics filtering``.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Split, Truth


class NoCorruption:
    name = "none"
    version = "1"
    truth_kind = "none"

    def apply(self, source: Split, n_classes: int | None, rng: np.random.Generator) -> tuple[Split, Truth]:
        return Split(np.array(source.x, copy=True), np.array(source.y, copy=True)), Truth("none", np.zeros(len(source), np.int8))


@hookimpl
def register_corruptions(register):
    register(NoCorruption)
