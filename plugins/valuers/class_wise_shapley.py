"""Valuer ``class-wise-shapley``: CS-Shapley (Schoch, Xu & Ji, NeurIPS 2022).

A sample of class y is valued by its Shapley value among the source samples of its own
class D_y, in the game where every model also holds a subset S of the other classes'
samples D_-y, averaged uniformly over all such S. The utility of a model trained on
(in-class subset) + S is

    U_y = a(T_y) * exp(a(T_-y)),

a(T_y) its accuracy on the target samples of class y and a(T_-y) on the others: a sample
that helps its own class without hurting the others is worth more than one that helps
overall accuracy by pulling the boundary into another class. Always accuracy, whatever the
task's metric (the paper's utility). Subsets lacking a class of the source set are not
fitted and score 0 (scikit-learn classifiers cannot be fitted on one class, and pyDVL's
utilities give such subsets a default score, 0 unless set).

Estimator (the paper's scheme; pyDVL's class-wise sampler pairs an outer subset sampler
with an inner one the same way): each walk draws S (every out-of-class sample with
probability 1/2, i.e. uniform over the subsets) and one permutation of D_y, and adds
D_y's samples one at a time to S; the mean marginal over walks estimates the value.
Games of every class advance together, their prefix models batched as one fit (valbench.training.permutations, the engine of ``tmc-shapley``; the utility is
valbench.training.utility's, scoring per-class target accuracies). No TMC truncation:
each walk's full-set utility U_y(D_y + S) differs, so truncation would cost one more fit
per walk; this valbench version walks every position. Stopping: the engine's rules per
class (default: the reference rule of Ghorbani & Zou, at least 100 walks per class).
``normalize`` (default, as the paper and pyDVL): the values of class y are rescaled so that
they sum to the in-class accuracy a_D(T_y) of the full-data models (left as they are when
they sum to 0; a negative sum flips their order: both as pyDVL does).

Cost at exp1 size (1000 source samples, ADULT): a walk of class y fits |D_y| prefix
models, so a round over both classes is about 1000 fits and the default rule needs at
least 100 rounds: >= 100,000 fits plus 10 full-data models. A prefix model holds about
half of D_-y besides the prefix (~500 rows on average); measured here
(benchmarks/prefix_fit_cost.py, CPU time of 16-model batched fits) such a fit cost about
0.8 of a 1000-row LOO fit (4.4 against 5.4 CPU s, medians of 2 and 4 runs; LOO ranged
4.8-6.8 on a machine loaded by other jobs: noisy), so from LOO's ~0.45 s per fit on 2
cores ~0.36 s per fit: >= ~10 h here; bound it with ``max_permutations`` or the budgets.

Budget: ``max_fits`` / ``max_seconds`` stop between batched fits; a walk cut by the budget
counts as truncated where it stopped. Needs labels: refused in unsupervised mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from valbench import hookimpl
from valbench.training.permutations import Game, PermutationParams, budgeted_score, run_permutations
from valbench.types import Valuation, ValuationTask

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch


def class_wise_utility(accuracy: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(M, K) per-class target accuracies -> (M, K): column y is a(T_y) exp(a(T_-y)), with
    a(T_-y) the accuracy on the ``counts``-weighted other classes."""
    import torch  # here: loading the plugins stays torch-free

    hits = accuracy * counts
    out_of_class = (hits.sum(dim=1, keepdim=True) - hits) / (counts.sum() - counts)
    return accuracy * torch.exp(out_of_class)


@dataclass(frozen=True, kw_only=True)
class ClassWiseShapleyValuer(PermutationParams):
    """CS-Shapley by in-class permutations on random out-of-class subsets, on the retraining
    valuers' utility and batched prefix fits (PermutationParams' parameters)."""

    name = "class-wise-shapley"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    supervised_only = True

    normalize: bool = True

    def check(self, task: ValuationTask) -> None:
        if not task.supervised:
            raise ValueError("class-wise-shapley needs labels (its utility is in-class and out-of-class accuracy); "
                             "use a supervised task")
        source = np.unique(task.source.y)
        if len(source) < 2:
            raise ValueError(f"class-wise-shapley needs two classes in the source set, it has one ({source[0]})")
        absent = sorted(set(source.tolist()) - set(np.unique(task.target.y).tolist()))
        if absent:
            raise ValueError(f"the target set has no sample of class {absent[0]}; class-wise-shapley scores "
                             "accuracy on every class")
        super().check(task)

    def value(self, task: ValuationTask) -> Valuation:
        import torch

        from valbench.training.scoring import batched_class_accuracy
        from valbench.training.stacked import training_label

        self.validate()
        self.check(task)  # before the per-class measures below, which need labels (start() checks again)
        K = int(task.n_classes)
        counts = torch.tensor(np.bincount(np.asarray(task.target.y), minlength=K), dtype=torch.float64,
                              device=task.device)

        def accuracy(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            return batched_class_accuracy(y, out, K)

        def utility(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            return class_wise_utility(batched_class_accuracy(y, out, K), counts)

        budget, util, full_accuracy = self.start(task, accuracy)  # (full_models, K)
        labels = np.asarray(task.source.y)
        games = [Game(np.flatnonzero(labels == c), column=int(c), base=self._out_of_class(labels, c))
                 for c in np.unique(labels)]
        res = run_permutations(budgeted_score(util, budget, utility), util.n, labels, 0.0, 0.0,
                               seed=task.seed, games=games, stream="class-wise-shapley-walks", tolerance=0.0,
                               budget=budget, device=task.device, label="class-wise-shapley walks",
                               **self.permutation_options(util))
        values = res.values
        in_class = np.nanmean(full_accuracy, axis=0)
        if self.normalize:
            values = values.copy()
            for g in games:
                total = values[g.players].sum()
                if total != 0:
                    values[g.players] *= in_class[g.column] / total
        return budget.valuation(values, permutations=res.permutations, walks_per_class=res.counts,
                                converged=res.converged, in_class_accuracy=in_class.tolist(),
                                training=training_label(self.compile))

    @staticmethod
    def _out_of_class(labels: np.ndarray, c: int):
        others = np.flatnonzero(labels != c)
        return lambda g: others[g.random(len(others)) < 0.5]


@hookimpl
def register_valuers(register):
    register(ClassWiseShapleyValuer)
