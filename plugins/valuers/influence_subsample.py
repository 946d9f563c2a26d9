"""Valuer ``influence-subsample``: the subsampled influence estimator of Feldman & Zhang
(NeurIPS 2020, "What Neural Networks Memorize and Why: Discovering the Long Tail via
Influence Estimation"), with the target-set score as the utility.

Feldman & Zhang's influence of sample i is E[v(S) | i in S] - E[v(S) | i not in S] over
uniformly random subsets S of one fixed size m = round(``fraction`` * n) of the n source
samples. Their estimator draws ``samples`` such subsets, trains one model per subset and
takes the same difference of means over the models it trained
(valbench.training.utility.msr_values, shared with ``banzhaf``, which draws Bernoulli(1/2)
subsets instead). v is the utility of the other retraining valuers (the task's learner,
``steps`` full-batch Adam steps at ``lr`` from one initialisation, scored on the target
set; valbench.training.utility), so this valuer differs from ``banzhaf`` only in which
subsets it trains on.

Follows: the paper's fixed fraction 0.7 of the training set per subset and OpenDataVal's
``InfluenceSubsample`` defaults (``num_models=1000``, ``proportion=0.7``; the paper itself
trains thousands of models). Differs: the paper estimates the influence on each test
example's correctness; here, as in OpenDataVal, it is the influence on the target-set score
(the task's metric, e.g. AUROC). A sample in every subset drawn, or in none, gets value 0
(no evidence; with a fraction of 0.7 and 1000 subsets this does not happen in practice).

Cost: ``samples`` fits, 1000 at exp1 size (1000 ADULT source samples), as many as
``banzhaf`` and LOO: estimated from LOO's measured cost per fit (the same batched fits) at
about 8 min on 2 CPU cores and about 30 s on one H200 (not measured for this valuer). Budget:
``max_fits`` / ``max_seconds`` stop between batched fits (the last batch cut to the fits
left); the values then use the subsets trained so far.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from valbench import hookimpl
from valbench.seeding import rng
from valbench.training.utility import RetrainingParams, check_task, msr_values, subset_scores
from valbench.types import Valuation, ValuationTask


def fixed_size_masks(g: np.random.Generator, samples: int, n: int, size: int) -> np.ndarray:
    """``samples`` rows of 0/1 over ``n`` items, each a uniform random subset of ``size``."""
    order = np.argsort(g.random((samples, n)), axis=1)  # a uniform random permutation per row
    masks = np.zeros((samples, n), dtype=bool)
    np.put_along_axis(masks, order[:, :size], True, axis=1)
    return masks


@dataclass(frozen=True, kw_only=True)
class InfluenceSubsampleValuer(RetrainingParams):
    """Feldman & Zhang's subsampled influence on the retraining valuers' utility and batched
    training: ``samples`` subsets of ``fraction`` of the source set."""

    name = "influence-subsample"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    test_params = {"steps": 10, "lr": 1e-2, "samples": 400, "models_per_batch": 200, "compile": False}

    samples: int = 1000
    fraction: float = 0.7

    def validate(self) -> None:
        super().validate()
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (a mean with and one without each sample), got {self.samples}")
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")

    def subset_size(self, n: int) -> int:
        return round(self.fraction * n)

    def check(self, task: ValuationTask) -> None:
        check_task(task)
        n = len(task.source)
        size = self.subset_size(n)
        if not 0 < size < n:
            raise ValueError(f"fraction={self.fraction} of {n} source samples gives subsets of {size}; "
                             "the estimator needs subsets that hold some samples and leave some out")

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        self.validate()
        self.check(task)
        budget = self.new_budget()
        util = self.utility(task)
        masks = fixed_size_masks(rng(task.seed, "influence-subsample-subsets"), self.samples, util.n,
                                 self.subset_size(util.n))
        v = subset_scores(util, masks, budget, "influence-subsample")
        return budget.valuation(msr_values(masks[:len(v)], v), subsets=len(v), subset_size=self.subset_size(util.n),
                                training=training_label(self.compile))


@hookimpl
def register_valuers(register):
    register(InfluenceSubsampleValuer)
