"""Valuer ``confident-learning``: self-confidence of each source label, as in cleanlab.

The self-confidence of sample i is the out-of-sample predicted probability of its given
label, p(y_i | x_i): the score cleanlab ranks label issues by. Low = probably
mislabelled. Where the probabilities come from (``probabilities``):

- ``target`` (default): a model fitted once on the clean target set; every source sample
  is out of sample. This uses the same information as every other valuer here.
- ``cv``: ``folds``-fold cross-validation (stratified, seeded) on the noisy source set
  alone, the way cleanlab is used without a clean set; ``folds`` fits.

The model (``model``): ``logistic`` = scikit-learn LogisticRegression (lbfgs, C = 1,
max_iter 1000) on the flattened features, or ``learner`` = the task's learner (the
paper's MLP with its recipe, class-balanced where the learner says so). With
``probabilities=target, model=learner`` the model is the one ``target-loss`` fits, so the
two rank the source identically (log p(y) = -CE). Own implementation of the score;
cleanlab is not needed. Supervised tasks only.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from valbench import hookimpl
from valbench.seeding import derive_seed
from valbench.types import Valuation, ValuationTask


class ConfidentLearningValuer:
    """value_i = p(y_i | x_i) from a model that did not see sample i."""

    name = "confident-learning"
    version = "1"
    supervised_only = True

    def __init__(self, *, probabilities: Literal["target", "cv"] = "target",
                 model: Literal["logistic", "learner"] = "logistic", folds: int = 5):
        self.probabilities, self.model, self.folds = probabilities, model, folds

    def validate(self) -> None:
        if self.probabilities not in ("target", "cv"):
            raise ValueError(f"probabilities must be 'target' or 'cv', got {self.probabilities!r}")
        if self.model not in ("logistic", "learner"):
            raise ValueError(f"model must be 'logistic' or 'learner', got {self.model!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")

    def check(self, task: ValuationTask) -> None:
        if not task.supervised:
            raise ValueError("confident-learning needs labels; use a supervised task")
        if self.probabilities == "target":
            if len(np.unique(task.target.y)) < 2:
                raise ValueError("confident-learning[probabilities=target] needs at least two classes in the target set")
            return
        counts = np.bincount(np.asarray(task.source.y), minlength=task.n_classes)
        if (counts > 0).sum() < 2:
            raise ValueError("confident-learning[probabilities=cv] needs at least two classes in the source set")
        if self.folds > len(task.source):
            raise ValueError(f"folds={self.folds} is larger than the source set ({len(task.source)} samples)")
        if counts.max() < self.folds:
            raise ValueError(f"folds={self.folds} is larger than every class of the source set "
                             f"(largest class: {counts.max()} samples); use fewer folds")

    def _proba(self, task: ValuationTask, x: np.ndarray, y: np.ndarray, x_out: np.ndarray, label: str) -> np.ndarray:
        """(len(x_out), K) probabilities from a model fitted on (x, y); absent classes get 0."""
        from valbench.training.models import fit_learner, predict  # here: loading the plugins stays torch-free

        k = int(task.n_classes)
        if self.model == "logistic":
            from sklearn.linear_model import LogisticRegression
            from threadpoolctl import threadpool_limits

            # one BLAS thread: on problems this small, threads cost more than they save
            # (0.25 s -> 0.08 s per ADULT fit on the 2-core development machine)
            with threadpool_limits(limits=1, user_api="blas"):
                clf = LogisticRegression(max_iter=1000).fit(x.reshape(len(x), -1), y)
            out = np.zeros((len(x_out), k))
            out[:, clf.classes_] = clf.predict_proba(x_out.reshape(len(x_out), -1))
            return out
        learner = task.learner
        model = fit_learner(learner, x, y, k, seed=task.seed, device=task.device, label=label)
        return predict(learner, model, x_out, device=task.device).astype(np.float64)

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.models import TARGET_MODEL

        self.validate()
        self.check(task)
        xs, ys = np.asarray(task.source.x), np.asarray(task.source.y)
        if self.probabilities == "target":
            proba = self._proba(task, np.asarray(task.target.x), np.asarray(task.target.y), xs,
                                TARGET_MODEL)
            fits = 1
        else:
            from sklearn.model_selection import StratifiedKFold

            proba = np.zeros((len(xs), int(task.n_classes)))
            cv = StratifiedKFold(self.folds, shuffle=True,
                                 random_state=derive_seed(task.seed, "confident-learning", "folds") % 2**32)
            import warnings

            with warnings.catch_warnings():  # a class smaller than `folds` is fine: it is still out of sample
                warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
                splits = list(cv.split(xs.reshape(len(xs), -1), ys))
            for f, (fit_idx, out_idx) in enumerate(splits):
                proba[out_idx] = self._proba(task, xs[fit_idx], ys[fit_idx], xs[out_idx],
                                             f"confident-learning/fold{f}")
            fits = self.folds
        values = proba[np.arange(len(ys)), ys]
        return Valuation(values, fits=fits, info={"probabilities": self.probabilities, "model": self.model})


@hookimpl
def register_valuers(register):
    register(ConfidentLearningValuer)
