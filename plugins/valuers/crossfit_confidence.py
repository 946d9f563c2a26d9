"""Valuer ``crossfit-confidence``: valbench's own label-error detector (no other library has it).

value_i = p(y_i | x_i), the probability of sample i's given label under a gradient-boosted
tree ensemble fitted on the clean target set PLUS the other folds of the source set,
each source sample weighted by how much the previous round trusted its label. Low =
probably mislabelled. The steps (``folds`` = K, ``rounds`` = R):

1. round 0: fit the model on the target set alone; trust_i = p0(y_i | x_i).
2. each round 1..R: split the source set into K seeded folds; for each fold, fit the model
   on the target set (weight 1) and the other K - 1 folds (weight trust_j), and score the
   fold's samples with it (out of sample: no sample ever scores itself); trust = the new
   scores.
3. value = the last round's scores.

Why it works. For a flipped label the Bayes-optimal detector ranks by p_clean(y_i | x_i)
(the posterior probability that sample i was flipped is a decreasing function of it), so
the whole game is estimating the clean conditional well and out of sample.
``confident-learning`` does that with a linear model on 400 target samples: a linear model
cannot express ADULT's threshold effects (capital gain above ~7k means >50K almost
surely), and 400 samples are few. Boosted shallow trees capture them (0.925 on exp1 from
the target alone, against 0.911 for the logistic fit), and cross-fitting adds the 80% of
the 1000 source samples outside each fold: their labels are noisy, but noise flipped at
random keeps p_noisy(y | x) a monotone function of p_clean(y | x) in the binary case, and
the trust weights shrink the samples the target already doubts, so they add more signal
than noise. A model fitted on the clean target alone never sees the source; a model fitted
on the source alone (cleanlab's cross-validation, Data-OOB) learns from noise with no clean
anchor; this uses both, and never scores a sample with a model that saw it.

Measured on exp1 (ADULT, 1000 source, 20% flipped, 400 target, paired seeds 0-4; numbers in
docs/own-method.md): corruption-auroc 0.93 against 0.911 for confident-learning. Cost:
1 + R * K = 6 fits of scikit-learn's HistGradientBoostingClassifier (200 depth-2 trees per
class), one thread, ~2-7 s per seed on the shared 2-core development machine (noisy).

Parameters: ``folds`` (5) and ``rounds`` (1) as above; the boosted model
(``HistGradientBoostingClassifier``: ``max_depth`` 2, ``iterations`` 200 trees,
``learning_rate`` 0.05, no early stopping, so the fits are deterministic) or
``model=logistic`` (scikit-learn LogisticRegression, C = 1: the cross-fitted form of
confident-learning's model, for comparison). Supervised tasks only; the features are
flattened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from valbench import hookimpl
from valbench.seeding import derive_seed, rng
from valbench.types import Valuation, ValuationTask


@dataclass(frozen=True, kw_only=True)
class CrossfitConfidenceValuer:
    """value_i = p(y_i | x_i) from boosted trees fitted on the target plus the other source
    folds, weighted by the previous round's trust."""

    name = "crossfit-confidence"
    version = "1"
    supervised_only = True
    test_params = {"iterations": 20, "folds": 3}  # cheap settings for valbench.testing.check_valuer

    folds: int = 5
    rounds: int = 1
    model: Literal["boosted", "logistic"] = "boosted"
    max_depth: int = 2
    iterations: int = 200
    learning_rate: float = 0.05

    def validate(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.model not in ("boosted", "logistic"):
            raise ValueError(f"model must be 'boosted' or 'logistic', got {self.model!r}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")

    def check(self, task: ValuationTask) -> None:
        if not task.supervised:
            raise ValueError("crossfit-confidence needs labels; use a supervised task")
        if len(np.unique(task.target.y)) < 2:
            raise ValueError("crossfit-confidence needs at least two classes in the target set")
        if self.rounds > 0 and self.folds > len(task.source):
            raise ValueError(f"folds={self.folds} is larger than the source set ({len(task.source)} samples)")

    def _fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None, seed: int):
        if self.model == "logistic":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(max_iter=1000).fit(x, y, sample_weight=w)
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_depth=self.max_depth, max_iter=self.iterations,
                                              learning_rate=self.learning_rate, early_stopping=False,
                                              random_state=seed % 2**32).fit(x, y, sample_weight=w)

    def _confidence(self, clf, x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
        """p(y | x) for each row; a class the model never saw has probability 0."""
        proba = np.zeros((len(x), k))
        proba[:, clf.classes_] = clf.predict_proba(x)
        return proba[np.arange(len(y)), y]

    def value(self, task: ValuationTask) -> Valuation:
        self.validate()
        self.check(task)
        from threadpoolctl import threadpool_limits

        k = int(task.n_classes)
        xs = np.asarray(task.source.x, dtype=np.float32).reshape(len(task.source), -1)
        xt = np.asarray(task.target.x, dtype=np.float32).reshape(len(task.target), -1)
        ys, yt = np.asarray(task.source.y), np.asarray(task.target.y)
        folds = rng(task.seed, self.name, "folds").permutation(len(xs)) % self.folds
        # one thread: the fits are small (threads cost more than they save on the 2-core
        # development machine), and a fixed thread count keeps the histograms' float sums,
        # hence the values, identical on every machine
        with threadpool_limits(limits=1):
            trust = self._confidence(self._fit(xt, yt, None, derive_seed(task.seed, self.name, 0)), xs, ys, k)
            for r in range(self.rounds):
                scores = np.empty(len(xs))
                for f in range(self.folds):
                    out = folds == f
                    clf = self._fit(np.concatenate([xt, xs[~out]]), np.concatenate([yt, ys[~out]]),
                                    np.concatenate([np.ones(len(xt)), trust[~out]]),
                                    derive_seed(task.seed, self.name, r + 1, f))
                    scores[out] = self._confidence(clf, xs[out], ys[out], k)
                trust = scores
        return Valuation(trust, fits=1 + self.rounds * self.folds,
                         info={"model": self.model, "folds": self.folds, "rounds": self.rounds})


@hookimpl
def register_valuers(register):
    register(CrossfitConfidenceValuer)
