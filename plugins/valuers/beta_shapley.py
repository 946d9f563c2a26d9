"""Valuer ``beta-shapley``: Beta(alpha, beta) Shapley (Kwon & Zou, AISTATS 2022).

A semivalue: the value of sample i is a weighted mean of its marginals v(S + i) - v(S)
over the subsets S of the other n - 1 samples, where every S of size k shares the weight
p_k / C(n-1, k) and

    p_k = C(n-1, k) Beta(k + beta, n-1-k + alpha) / Beta(alpha, beta),  k = 0 .. n-1

(the paper's w_{alpha,beta}(k+1) C(n-1, k) / n: a Beta-Binomial(n-1, beta, alpha) law of
|S|). Beta(1, 1) gives p_k = 1/n: Data Shapley. alpha > beta puts the weight on small
subsets, where one sample's marginal is large compared with the noise of stochastic
training (the paper's noise-reduction argument); the paper recommends Beta(16, 1), the
default here. OpenDataVal's ``BetaShapley`` defaults to Beta(4, 1); pyDVL's
``BetaShapleyValuation`` has no default (alpha and beta are required).

v is the retraining valuers' utility (valbench.training.utility, as ``tmc-shapley``: the
task's learner after ``steps`` full-batch Adam steps at ``lr`` from one initialisation,
scored on the target set; v(S) = v(empty) while S lacks a class of the source set).

Estimator: permutation sampling with importance weights by position. In a uniformly
random permutation the samples before i are a uniform subset of uniform size k in 0..n-1,
so n p_k (v(prefix + i) - v(prefix)) at i's position k is unbiased for the value of i, and
one permutation gives a marginal for every sample from at most n prefix fits (the
paper's Monte Carlo algorithm draws a size and a subset per sample and spends two fits per
marginal). The walk
stops at the first position K after which the remaining weight sum_{k >= K} p_k is below
``tail`` (default 1e-3; 0 walks every position): the bias is at most ``tail`` times the
largest marginal, and for Beta(16, 1) at n = 1000 it saves about 2/3 of the fits (K =
354). Beta(1, 1) with n <= 1 / tail walks every position. The permutations run on
valbench.training.permutations (the engine of ``tmc-shapley``, without performance
truncation: that is TMC's, not Beta Shapley's), with its stopping rules (default: the
reference rule of Ghorbani & Zou on the weighted marginals; the paper uses the
Gelman-Rubin statistic of per-sample chains, which this sampler does not have).

Cost at exp1 size (1000 source samples, ADULT): K = 354 prefix fits per permutation, at
least ``min_permutations`` = 100 permutations under the default stopping rule, so
>= 35,400 fits plus 10 full-data models. A prefix fit trains on at most K rows, but at
this size a fit's cost is mostly per-step overhead: measured here
(benchmarks/prefix_fit_cost.py, CPU time of 16-model batched fits) a 177-row fit cost
about 0.8 of a 1000-row LOO fit (4.1 against 5.4 CPU s, medians of 2 and 4 runs; LOO
ranged 4.8-6.8 on a machine loaded by other jobs: noisy). From LOO's ~0.45 s per fit on
2 cores that is ~0.36 s per fit, so >= ~3.5 h here at the minimum; set
``max_permutations`` or the budgets to bound it.

Budget: ``max_fits`` / ``max_seconds`` stop between batched fits; a permutation cut by
the budget counts as truncated where it stopped. ``max_fits`` must leave one prefix fit
after the full-data models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from valbench import hookimpl
from valbench.training.permutations import Game, PermutationParams, budgeted_score, run_permutations
from valbench.types import Valuation, ValuationTask


def cardinality_weights(n: int, alpha: float, beta: float) -> np.ndarray:
    """p_k, k = 0..n-1: the total weight Beta(alpha, beta) Shapley puts on the marginals
    with |S| = k (sums to 1; 1/n each for Beta(1, 1))."""
    from scipy.special import betaln, gammaln  # here: loading all plugins stays fast

    k = np.arange(n)
    log_p = (gammaln(n) - gammaln(k + 1) - gammaln(n - k)
             + betaln(k + beta, n - 1 - k + alpha) - betaln(alpha, beta))
    p = np.exp(log_p)
    return p / p.sum()  # exact up to rounding


def horizon(p: np.ndarray, tail: float) -> int:
    """The first position K with sum_{k >= K} p_k < ``tail`` (len(p) if none)."""
    remaining = np.cumsum(p[::-1])[::-1]  # remaining[k] = sum_{j >= k} p_j
    below = np.flatnonzero(remaining < tail * (1 - 1e-9))  # rounding: Beta(1, 1) at n = 1 / tail walks all
    return int(below[0]) if len(below) else len(p)


def _positive_number(name: str, x: object) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}")


@dataclass(frozen=True, kw_only=True)
class BetaShapleyValuer(PermutationParams):
    """Beta(alpha, beta) Shapley by permutation sampling with position weights, on the
    retraining valuers' utility and batched prefix fits (PermutationParams' parameters)."""

    name = "beta-shapley"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)

    alpha: float = 16.0
    beta: float = 1.0
    tail: float = 1e-3

    def validate(self) -> None:
        super().validate()
        _positive_number("alpha", self.alpha)
        _positive_number("beta", self.beta)
        if isinstance(self.tail, bool) or not isinstance(self.tail, (int, float)) or not 0 <= self.tail < 1:
            raise ValueError(f"tail must be a number in [0, 1), got {self.tail!r}")

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        budget, util, v_full = self.start(task)
        n = util.n
        p = cardinality_weights(n, self.alpha, self.beta)
        walked = horizon(p, self.tail)
        labels = np.asarray(task.source.y) if task.supervised else None
        game = Game(np.arange(n), weights=n * p, horizon=walked)
        res = run_permutations(budgeted_score(util, budget), n, labels, util.empty, float(v_full.mean()),
                               seed=task.seed, games=[game], stream="beta-shapley-permutations", tolerance=0.0,
                               budget=budget, device=task.device, label="beta-shapley permutations",
                               **self.permutation_options(util))
        return budget.valuation(res.values, permutations=res.permutations, converged=res.converged,
                                statistic=res.statistic, horizon=walked, v_full=float(v_full.mean()),
                                v_empty=util.empty, training=training_label(self.compile))


@hookimpl
def register_valuers(register):
    register(BetaShapleyValuer)
