"""Valuer ``tmc-shapley``: Truncated Monte Carlo Data Shapley (Ghorbani & Zou 2019).

Each permutation adds the source samples one at a time; the marginal of a sample is
v(prefix) - v(previous prefix), where v is the target score of the task's learner
trained on the prefix (the DVGS port's utility, docs/protocol.md 'The DVGS port': ``steps``
full-batch Adam steps at ``lr`` from one fixed initialisation, see valbench.training.utility). The model is refitted only
once every class of the source set is in the prefix; before that v = v(empty) (0.5 for
AUROC, the target's majority rate for accuracy, 0 for R^2). Truncation: once
|v(prefix) - v(D)| <= tolerance * |v(D)| for more than ``patience`` (5) consecutive
additions, the rest of the permutation gets marginal 0; v(D) is the mean of
``full_models`` (10) full-data models. tolerance 0.01 is the reference implementation's,
0.03 the DVGS port's; tolerance 0 turns truncation off. Values are the mean marginals
over permutations; the stopping rules are valbench.training.permutations' (default: the reference's).

Speed: ``permutations_per_batch`` permutations advance in lockstep, each contributing
several consecutive prefixes to one batched fit of about ``models_per_batch`` models
(valbench.training.stacked), so prefixes of similar length train together. Prefix models past a
truncation point inside a batch are trained but unused (they count as fits).

Budget: ``max_fits`` / ``max_seconds`` stop between batched fits; a permutation cut by
the budget counts as truncated where it stopped. ``max_fits`` must leave at least one
prefix fit after the full-data models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from valbench import hookimpl
from valbench.budget import Budget
from valbench.training.permutations import PermutationParams, budgeted_score, run_permutations
from valbench.types import Valuation, ValuationTask


@dataclass(frozen=True, kw_only=True)
class TMCShapleyValuer(PermutationParams):
    """Truncated Monte Carlo Data Shapley with batched prefix models. Shares steps, lr,
    full_models, dropout, models_per_batch, compile, max_fits and max_seconds with every
    retraining valuer (valbench.training.utility.RetrainingParams) and the stopping rule
    with every permutation valuer (valbench.training.permutations.PermutationParams)."""

    name = "tmc-shapley"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)

    tolerance: float = 0.01
    patience: int = 5

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def value(self, task: ValuationTask) -> Valuation:
        return self.run(task)

    def run(self, task: ValuationTask, on_wave: Callable[[int, np.ndarray, Budget], None] | None = None) -> Valuation:
        """value(task), calling ``on_wave(permutations, values, budget)`` after each wave."""
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        budget, util, v_full = self.start(task)
        labels = np.asarray(task.source.y) if task.supervised else None
        res = run_permutations(budgeted_score(util, budget), util.n, labels, util.empty, float(v_full.mean()),
                               seed=task.seed, tolerance=self.tolerance, patience=self.patience,
                               budget=budget, device=task.device, label="tmc-shapley permutations",
                               on_wave=None if on_wave is None else lambda p, v: on_wave(p, v, budget),
                               **self.permutation_options(util))
        cuts = [t for t in res.truncated_at if t is not None]
        return budget.valuation(res.values, permutations=res.permutations, converged=res.converged,
                                statistic=res.statistic, v_full=float(v_full.mean()), v_empty=util.empty,
                                mean_truncation=float(np.mean(cuts)) if cuts else None,
                                training=training_label(self.compile), models_per_batch=util.models_per_batch)


@hookimpl
def register_valuers(register):
    register(TMCShapleyValuer)
