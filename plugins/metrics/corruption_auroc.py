"""Metric ``corruption-auroc``: AUROC(c, -v), how well low values find corrupted samples.

1.0 = every corrupted sample is valued below every clean one; 0.5 = chance. Higher is
better. This is the paper's Table 1 score.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Truth


class CorruptionAUROC:
    name = "corruption-auroc"
    version = "1"
    truth_kind = "mask"
    higher_is_better = True
    paper_table = 1

    def score(self, values: np.ndarray, truth: Truth) -> float:
        from sklearn.metrics import roc_auc_score  # here: loading all plugins stays fast
        mask = np.asarray(truth.values)
        if mask.min() == mask.max():
            raise ValueError("AUROC needs both corrupted and clean samples")
        return float(roc_auc_score(mask, -np.asarray(values)))


@hookimpl
def register_metrics(register):
    register(CorruptionAUROC)
