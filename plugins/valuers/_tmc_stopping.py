"""Stopping rules of TMC-Shapley, fed one permutation's marginals at a time.

"reference" (Ghorbani & Zou's DataShapley): with ``mem`` the marginals of every
permutation so far, take the running means after each of the last ``window`` (100)
permutations; error = max over those of mean_i |mean_t,i - mean_last,i| / (|mean_last,i|
+ 1e-12); stop when error < ``threshold`` (their example runs use 0.1) and at least
``window`` permutations were drawn.

"spearman" (the DVGS port, docs/protocol.md 'The DVGS port'): Spearman correlation between successive running-mean
vectors; stop when the mean of the last 5 exceeds ``threshold`` (0.999) and at least
``min_permutations`` (200) were drawn; at most 1000 permutations.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from scipy.stats import spearmanr

DEFAULTS = {  # rule: (threshold, min permutations, max permutations)
    "reference": (0.1, 100, None),
    "spearman": (0.999, 200, 1000),
}


class Stopping:
    """Tracks the running mean of the marginals and says when a rule is met."""

    def __init__(self, rule: str, n: int, threshold: float, min_permutations: int, window: int = 100,
                 rho_window: int = 5):
        if rule not in DEFAULTS:
            raise ValueError(f"stopping must be reference or spearman, got {rule!r}")
        self.rule, self.threshold, self.min = rule, threshold, min_permutations
        self.total = np.zeros(n)
        self.count = 0
        self.means: deque[np.ndarray] = deque(maxlen=window)
        self.rhos: deque[float] = deque(maxlen=rho_window)
        self.statistic: float | None = None

    def add(self, marginals: np.ndarray) -> None:
        previous = self.total / self.count if self.count else None
        self.total += marginals
        self.count += 1
        mean = self.total / self.count
        if self.rule == "reference":
            self.means.append(mean)
            self.statistic = None  # computed when asked (converged), not per permutation
        elif previous is not None:
            rho = spearmanr(previous, mean).statistic if np.ptp(previous) > 0 and np.ptp(mean) > 0 else np.nan
            self.rhos.append(float(rho))
            if self.count > self.rhos.maxlen + 1 and len(self.rhos) == self.rhos.maxlen:
                self.statistic = float(np.mean(self.rhos))  # nan (constant means) never passes

    def _reference_error(self) -> float | None:
        if len(self.means) < self.means.maxlen:
            return None
        stacked = np.stack(self.means)
        last = stacked[-1]
        return float((np.abs(stacked - last) / (np.abs(last) + 1e-12)).mean(axis=1).max())

    def converged(self) -> bool:
        if self.rule == "reference" and self.statistic is None:
            self.statistic = self._reference_error()
        if self.count < self.min or self.statistic is None or np.isnan(self.statistic):
            return False
        if self.rule == "reference":
            return self.statistic < self.threshold
        return self.statistic > self.threshold
