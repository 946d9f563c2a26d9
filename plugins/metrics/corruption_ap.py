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

    def check(self, truth: Truth) -> None:
        if np.asarray(truth.values).max() == 0:
            raise ValueError("average precision needs at least one corrupted sample")

    def score(self, values: np.ndarray, truth: Truth) -> float:
        self.check(truth)
        from sklearn.metrics import average_precision_score  # here: loading the plugins and planning a run stay fast
        return float(average_precision_score(np.asarray(truth.values), -np.asarray(values)))


@hookimpl
def register_metrics(register):
    register(CorruptionAP)
