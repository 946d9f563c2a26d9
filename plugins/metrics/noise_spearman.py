"""Metric ``noise-spearman``: Spearman(phi, -v), how well low values track noise rates.

+1 = values fall exactly as the noise rate rises; 0 = no relation. Higher is better.
(The paper's notebooks kept Spearman(phi, v), whose sign is the opposite.) This is the
paper's Table 2 score.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Truth


class NoiseSpearman:
    name = "noise-spearman"
    version = "1"
    truth_kind = "noise"
    higher_is_better = True
    paper_table = 2

    def check(self, truth: Truth) -> None:
        """Any noise truth can be scored (constant values are refused by score): nothing to
        probe, so planning a run does not import scipy."""

    def score(self, values: np.ndarray, truth: Truth) -> float:
        from scipy.stats import spearmanr  # here: loading the plugins and planning a run stay fast
        values = np.asarray(values)
        if values.min() == values.max():
            raise ValueError("Spearman correlation is undefined for constant values")
        return float(spearmanr(truth.values, -values).statistic)


@hookimpl
def register_metrics(register):
    register(NoiseSpearman)
