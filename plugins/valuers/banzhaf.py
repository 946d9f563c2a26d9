"""Valuer ``banzhaf``: Data Banzhaf by maximum sample reuse (Wang & Jia, AISTATS 2023).

The Banzhaf value of sample i is the mean of v(S + i) - v(S) over ALL subsets S of the
other samples, each with the same weight 1 / 2^(n-1). The maximum-sample-reuse (MSR)
estimator draws ``samples`` subsets S_1..S_m, each sample in each subset independently
with probability 1/2, trains one model per subset, and sets

    value_i = mean{ v(S_j) : i in S_j } - mean{ v(S_j) : i not in S_j },

so every model informs every sample's value (an unbiased estimate of the Banzhaf value up
to the normalisation, with variance O(1/m) for all samples at once). v is the utility the
other retraining valuers use (valbench.training.utility: the task's learner, ``steps``
full-batch Adam steps at ``lr`` from one initialisation, scored on the target set), so
Banzhaf, LOO and TMC-Shapley differ only in which subsets they train on. The paper's
robustness argument: the equal weight on every subset size makes the ranking less
sensitive to the noise of stochastic training than Shapley's.

Defaults: ``samples=1000`` models (Wang & Jia's experiments and OpenDataVal's
``DataBanzhaf`` use on the order of a thousand). At exp1 size (1000 source samples) that
is 1000 fits, as many as LOO: estimated from LOO's measured cost per fit (the same
batched fits), about 8 min on 2 CPU cores and about 30 s on one H200 (not measured for
banzhaf itself). Budget: ``max_fits`` / ``max_seconds`` stop between
batched fits (the last batch cut to the fits left); the values then use the subsets
trained so far. A sample that is in every
subset drawn, or in none, gets value 0 (no evidence).
"""
from __future__ import annotations

from dataclasses import dataclass

from valbench import hookimpl
from valbench.seeding import rng
from valbench.training.utility import RetrainingParams, check_task, msr_values, subset_scores
from valbench.types import Valuation, ValuationTask


@dataclass(frozen=True, kw_only=True)
class BanzhafValuer(RetrainingParams):
    """Data Banzhaf (MSR) on the retraining valuers' utility and batched training."""

    name = "banzhaf"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    test_params = {"steps": 10, "lr": 1e-2, "samples": 400, "models_per_batch": 200, "compile": False}

    samples: int = 1000

    def validate(self) -> None:
        super().validate()
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2, got {self.samples}")

    def check(self, task: ValuationTask) -> None:
        check_task(task)

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        self.validate()
        self.check(task)
        budget = self.new_budget()
        util = self.utility(task)
        masks = rng(task.seed, "banzhaf-subsets").random((self.samples, util.n)) < 0.5
        v = subset_scores(util, masks, budget, "banzhaf")
        return budget.valuation(msr_values(masks[:len(v)], v), subsets=len(v), training=training_label(self.compile),
                                models_per_batch=util.models_per_batch)


@hookimpl
def register_valuers(register):
    register(BanzhafValuer)
