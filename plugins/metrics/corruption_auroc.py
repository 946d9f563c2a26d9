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

    def check(self, truth: Truth) -> None:
        mask = np.asarray(truth.values)
        if mask.min() == mask.max():
            raise ValueError("AUROC needs both corrupted and clean samples")

    def score(self, values: np.ndarray, truth: Truth) -> float:
        self.check(truth)
        from sklearn.metrics import roc_auc_score  # here: loading the plugins and planning a run stay fast
        return float(roc_auc_score(np.asarray(truth.values), -np.asarray(values)))


@hookimpl
def register_metrics(register):
    register(CorruptionAUROC)
