"""Metric ``corruption-ap``: average precision of finding corrupted samples by low value.

The area under the precision-recall curve of ranking samples by -value against the
corruption mask: 1.0 = every corrupted sample is ranked before every clean one; chance
is the corruption rate (0.2 for the paper's flipped labels), unlike AUROC's 0.5. The
label-error literature (e.g. cleanlab) reports it beside AUROC. Higher is better.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Truth


class CorruptionAP:
    name = "corruption-ap"
    version = "1"
    truth_kind = "mask"
    higher_is_better = True

    def score(self, values: np.ndarray, truth: Truth) -> float:
        from sklearn.metrics import average_precision_score  # here: loading all plugins stays fast
        mask = np.asarray(truth.values)
        if mask.max() == 0:
            raise ValueError("average precision needs at least one corrupted sample")
        return float(average_precision_score(mask, -np.asarray(values)))


@hookimpl
def register_metrics(register):
    register(CorruptionAP)
