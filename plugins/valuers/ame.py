"""Valuer ``ame``: the Average Marginal Effect of Lin et al. (ICML 2022, "Measuring the
Effect of Training Data on Deep Learning Predictions via Randomized Experiments").

AME_i = E_p E_S[v(S + i) - v(S)]: S holds every other source sample independently with
probability p, and p is drawn from a distribution P (here uniform over ``probabilities``).
The estimator trains one model per random subset S_j (its own p_j, each sample in with
probability p_j) and regresses the utilities v(S_j) on the centred, scaled inclusion
indicators X_ji = 1/p_j if i is in S_j, -1/(1 - p_j) if not. Since E[X_i | p] = 0 and
E[X_i v | p] is the marginal effect of i at p, the population regression coefficient of
X_i / c, with c = E_p[1/(p(1 - p))], is AME_i itself; a Lasso with its penalty chosen by
``folds``-fold cross-validation (scikit-learn's LassoCV) is the paper's sparse estimator of
it. value_i = the coefficient. v is the retraining valuers' utility
(valbench.training.utility: the task's learner, ``steps`` full-batch Adam steps at ``lr``
from one initialisation, scored on the target set), trained in batches as ``banzhaf`` does.

Follows: the paper's Lasso estimator on these indicators (reconstructed from the estimand as
derived above; the paper's text was not at hand when this was written) and OpenDataVal's
grid P = uniform over {0.2, 0.4, 0.6, 0.8} and LassoCV (5 folds). Differs, deliberately:
- ``samples=1000`` subsets in all, p_j cycling through the grid (250 per p), the cost of
  ``banzhaf`` and LOO; OpenDataVal's ``AME(num_models=1000)`` trains 1000 models PER p, 4000
  in all (``ame[samples=4000]`` matches that count).
- v and X are centred within each p before the regression (the paper and OpenDataVal centre
  once over all subsets). The mean utility rises with p, a variance the indicators cannot
  explain (E[X_i | p] = 0); centring within p removes it without changing the coefficients'
  target. On additive set functions whose total weight is not 0 (300 samples and subsets,
  and tests/test_ame.py) the global centring left the cross-validated Lasso at all-zero
  or halved coefficients where this recovers the weights.
- OpenDataVal standardises each subset's indicator row (scipy zscore), whose coefficient is
  E_p[sqrt(p(1 - p)) x marginal effect at p], not the AME; valbench uses the paper's scaling.
- The paper's knockoffs (false-discovery control) are not implemented.
Lasso sets many values to exactly 0 (ties); that is the method.

Cost: ``samples`` fits, 1000 at exp1 size (1000 ADULT source samples), estimated from LOO's
measured cost per fit (the same batched fits) at about 8 min on 2 CPU cores and about 30 s on
one H200 (not measured for ame itself), plus the LassoCV: 6 s of CPU time measured for a
1000 x 1000 design (5 folds x 100 penalties, Gram matrix precomputed; a synthetic additive
set function, on a shared 2-core machine). Budget: ``max_fits`` / ``max_seconds`` stop
between batched fits (the last batch cut to the fits left); a ``max_fits`` below ``folds``
is refused, and if a time budget stops before ``folds`` subsets are trained every value is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from valbench import hookimpl
from valbench.seeding import rng
from valbench.training.utility import RetrainingParams, check_task, subset_scores
from valbench.types import Valuation, ValuationTask


def parse_probabilities(text: str) -> tuple[float, ...]:
    """'0.2,0.4' -> (0.2, 0.4); ValueError (one line) unless every entry is a number in (0, 1)."""
    try:
        grid = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"probabilities must be comma-separated numbers in (0, 1), got {text!r}") from None
    if not all(0 < q < 1 for q in grid):
        raise ValueError(f"probabilities must each be in (0, 1), got {text!r}")
    return grid


def ame_design(g: np.random.Generator, samples: int, n: int, grid: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` random subsets of ``n`` items: subset j holds each item independently with
    probability p_j, p_j cycling through ``grid`` (equal shares, also when a budget cuts the
    sample). Returns (masks (samples, n) bool, p (samples,))."""
    p = np.asarray(grid, dtype=np.float64)[np.arange(samples) % len(grid)]
    return g.random((samples, n)) < p[:, None], p


def ame_values(masks: np.ndarray, p: np.ndarray, v: np.ndarray, folds: int) -> tuple[np.ndarray, float]:
    """The Lasso (penalty by ``folds``-fold cross-validation) coefficients of v on the
    scaled inclusion indicators, v and indicators centred within each p: estimates of the
    AME (see the module docstring). Returns (values, the chosen penalty)."""
    from sklearn.linear_model import LassoCV  # imported here: valbench starts without scikit-learn

    x = (masks - p[:, None]) / (p * (1 - p))[:, None]
    x /= np.mean(1 / (p * (1 - p)))  # so the population coefficient is the AME, not a multiple of it
    y = np.asarray(v, dtype=np.float64).copy()
    for q in np.unique(p):
        rows = p == q
        y[rows] -= y[rows].mean()
        x[rows] -= x[rows].mean(axis=0)
    fit = LassoCV(cv=folds, precompute=True).fit(x, y)  # KFold unshuffled: each fold holds every p alike
    return fit.coef_.astype(np.float64), float(fit.alpha_)


@dataclass(frozen=True, kw_only=True)
class AMEValuer(RetrainingParams):
    """Average Marginal Effect (Lin et al. 2022) by a cross-validated Lasso on random subsets
    of the source set, trained on the retraining valuers' utility."""

    name = "ame"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    test_params = {"steps": 10, "lr": 1e-2, "samples": 400, "models_per_batch": 200, "compile": False}

    samples: int = 1000
    probabilities: str = "0.2,0.4,0.6,0.8"
    folds: int = 5

    def validate(self) -> None:
        super().validate()
        parse_probabilities(self.probabilities)
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (cross-validation of the Lasso penalty), got {self.folds}")
        if self.samples < self.folds:
            raise ValueError(f"samples must be >= folds={self.folds} for the cross-validated Lasso, got {self.samples}")

    def check(self, task: ValuationTask) -> None:
        check_task(task)
        if self.max_fits is not None and self.max_fits < self.folds:
            raise ValueError(f"ame needs at least folds={self.folds} fits for its cross-validated Lasso, "
                             f"max_fits={self.max_fits} is too small")

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        self.validate()
        self.check(task)
        budget = self.new_budget()
        util = self.utility(task)
        masks, p = ame_design(rng(task.seed, "ame-subsets"), self.samples, util.n,
                              parse_probabilities(self.probabilities))
        v = subset_scores(util, masks, budget, "ame")
        done = len(v)
        values, alpha = np.zeros(util.n), None  # too few subsets for the cross-validation: no evidence
        if done >= self.folds:
            values, alpha = ame_values(masks[:done], p[:done], v, self.folds)
        return budget.valuation(values, subsets=done, alpha=alpha, nonzero=int(np.count_nonzero(values)),
                                training=training_label(self.compile))


@hookimpl
def register_valuers(register):
    register(AMEValuer)
