"""Valuer ``apc``: the LINCS replicate-consistency baseline of the paper's Figure 5.

The value of a signature is its APC, the average Pearson correlation of the level-4
replicate profiles it was built from (computed by the ``lincs`` dataset): a signature
whose replicates agree is taken to be more valuable. It needs no model and no target set.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import ValuationTask


class APCValuer:
    """value_i = APC of source sample i (dataset annotation "apc"; higher = more reproducible)."""

    name = "apc"
    version = "1"
    requires_annotations = ("apc",)

    def value(self, task: ValuationTask) -> np.ndarray:
        apc = task.source_annotations.get("apc")
        if apc is None:
            raise ValueError("valuer 'apc' needs the per-sample annotation 'apc' (given by dataset 'lincs')")
        return np.asarray(apc, dtype=np.float64).copy()


@hookimpl
def register_valuers(register):
    register(APCValuer)
