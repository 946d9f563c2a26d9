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
over permutations; the stopping rules are below ("Stopping rules"; default: the reference's).

Speed: ``permutations_per_batch`` permutations advance in lockstep, each contributing
several consecutive prefixes to one batched fit of about ``models_per_batch`` models
(valbench.training.stacked), so prefixes of similar length train together. Prefix models past a
truncation point inside a batch are trained but unused (they count as fits).

Budget: ``max_fits`` / ``max_seconds`` stop between batched fits; a permutation cut by
the budget counts as truncated where it stopped. ``max_fits`` must leave at least one
prefix fit after the full-data models.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numpy as np
import torch

from valbench import hookimpl
from valbench.training.stacked import training_label
from valbench.budget import Budget
from valbench.seeding import rng
from valbench.types import Valuation, ValuationTask
from valbench.training.utility import RetrainingParams, check_task, full_fits
from valbench.progress import progress

ScoreFn = Callable[[torch.Tensor, torch.Tensor], np.ndarray]  # (index (M, n), weight (M, n)) -> v (M,)


# --- Stopping rules ------------------------------------------------------------------
# Stopping rules of TMC-Shapley, fed one permutation's marginals at a time.
#
# "reference" (Ghorbani & Zou's DataShapley): with ``mem`` the marginals of every
# permutation so far, take the running means after each of the last ``window`` (100)
# permutations; error = max over those of mean_i |mean_t,i - mean_last,i| / (|mean_last,i|
# + 1e-12); stop when error < ``threshold`` (their example runs use 0.1) and at least
# ``window`` permutations were drawn.
#
# "spearman" (the DVGS port, docs/protocol.md 'The DVGS port'): Spearman correlation between successive running-mean
# vectors; stop when the mean of the last 5 exceeds ``threshold`` (0.999) and at least
# ``min_permutations`` (200) were drawn; at most 1000 permutations.

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
        from scipy.stats import spearmanr  # here: loading all plugins stays fast
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


# --- The permutation walk --------------------------------------------------------------------

@dataclass
class _Walk:
    """One permutation in progress."""

    perm: np.ndarray
    first_fit: int  # first position whose prefix holds every class
    v_prev: float
    marginals: np.ndarray
    pos: int = 0
    run: int = 0  # consecutive additions within tolerance
    done: bool = False
    truncated_at: int | None = None

    def advance(self, v_new: float, v_full: float, tolerance: float, patience: int) -> None:
        k = self.pos
        self.marginals[self.perm[k]] = v_new - self.v_prev
        self.v_prev = v_new
        self.pos = k + 1
        if tolerance > 0 and abs(v_new - v_full) <= tolerance * abs(v_full):
            self.run += 1
            if self.run > patience:
                self.done, self.truncated_at = True, self.pos
        else:
            self.run = 0
        if self.pos == len(self.perm):
            self.done = True


@dataclass
class TMCResult:
    values: np.ndarray
    permutations: int
    converged: bool
    statistic: float | None
    truncated_at: list[int | None] = field(default_factory=list)


def run_tmc(score: ScoreFn, n: int, labels: np.ndarray | None, v_empty: float, v_full: float, *, seed: int,
            tolerance: float = 0.01, patience: int = 5, stopping: str = "reference",
            threshold: float | None = None, min_permutations: int | None = None,
            max_permutations: int | None = None, permutations_per_batch: int = 10,
            models_per_batch: int = 100, budget: Budget | None = None, device: str = "cpu",
            on_wave: Callable[[int, np.ndarray], None] | None = None) -> TMCResult:
    """TMC-Shapley over ``n`` samples; ``labels`` (n,) classes (None: no class condition).

    ``score(index, weight)`` returns v of M prefixes: row j trains on the rows
    ``index[j]`` with ``weight[j]`` > 0. ``budget`` (fits are spent by the caller's
    score function; this loop only asks ``exhausted``) may stop the run. ``on_wave(p,
    values)`` is called after each wave with the permutations so far and their mean.
    """
    thr, min_p, max_p = DEFAULTS[stopping]
    threshold = thr if threshold is None else threshold
    min_p = min_p if min_permutations is None else min_permutations
    max_p = max_p if max_permutations is None else max_permutations
    stop = Stopping(stopping, n, threshold, min_p)
    gen = rng(seed, "tmc-permutations")
    classes = np.unique(labels) if labels is not None else None
    budget = budget or Budget()
    finished: list[_Walk] = []
    cut = False
    with progress(max_p, "tmc-shapley permutations") as bar:
        while not cut and not stop.converged() and (max_p is None or stop.count < max_p):
            size = permutations_per_batch if max_p is None else min(permutations_per_batch, max_p - stop.count)
            walks = [_new_walk(gen.permutation(n), labels, classes, v_empty) for _ in range(size)]
            cut = _run_wave(walks, score, v_full, tolerance, patience, models_per_batch, budget, device)
            for w in walks:  # a permutation cut by the budget counts as truncated where it stopped
                if w.pos > 0:
                    stop.add(w.marginals)
                    finished.append(w)
            bar.update(len(walks))
            if on_wave is not None:
                on_wave(stop.count, stop.total / max(stop.count, 1))
    values = stop.total / max(stop.count, 1)
    return TMCResult(values, stop.count, stop.converged(), stop.statistic, [w.truncated_at for w in finished])


def _new_walk(perm: np.ndarray, labels: np.ndarray | None, classes: np.ndarray | None, v_empty: float) -> _Walk:
    first = 0
    if classes is not None:
        ordered = labels[perm]
        first = max(int(np.argmax(ordered == c)) for c in classes)
    return _Walk(perm, first, v_empty, np.zeros(len(perm)))


def _run_wave(walks: list[_Walk], score: ScoreFn, v_full: float, tolerance: float, patience: int,
              models_per_batch: int, budget: Budget, device: str) -> bool:
    """Advance ``walks`` in lockstep until all are done; True if the budget cut them."""
    while True:
        for w in walks:  # prefixes that lack a class: v stays v(empty), no fit
            while not w.done and w.pos < w.first_fit:
                w.advance(w.v_prev, v_full, tolerance, patience)
        active = [w for w in walks if not w.done]
        if not active:
            return False
        if budget.exhausted(next_cost=1):
            return True
        per_walk = max(1, models_per_batch // len(active))
        remaining = budget.remaining_fits()
        if remaining is not None and remaining < len(active):
            active, per_walk = active[:remaining], 1
        elif remaining is not None:
            per_walk = min(per_walk, remaining // len(active))
        jobs = [(w, k) for w in active for k in range(w.pos, min(w.pos + per_walk, len(w.perm)))]
        width = max(k for _, k in jobs) + 1
        index = torch.stack([torch.as_tensor(w.perm[:width], device=device) for w, _ in jobs])
        weight = (torch.arange(width, device=device)[None, :] <= torch.tensor([k for _, k in jobs], device=device)[:, None])
        v = score(index, weight.to(torch.float32))
        for (w, k), vk in zip(jobs, v):
            if not w.done and w.pos == k:
                w.advance(float(vk), v_full, tolerance, patience)


@dataclass(frozen=True, kw_only=True)
class TMCShapleyValuer(RetrainingParams):
    """Truncated Monte Carlo Data Shapley with batched prefix models. Shares steps, lr,
    full_models, dropout, models_per_batch, compile, max_fits and max_seconds with every
    retraining valuer (valbench.training.utility.RetrainingParams)."""

    name = "tmc-shapley"
    version = "1"
    per_copy_rows = True  # each prefix model trains on its own rows (sizes models_per_batch="auto")
    # cheap settings for the conformance kit: 2 permutations of 10-step fits
    test_params = {"steps": 10, "lr": 1e-2, "full_models": 1, "max_permutations": 2, "permutations_per_batch": 2,
                   "models_per_batch": 200, "compile": False}

    tolerance: float = 0.01
    patience: int = 5
    stopping: Literal["reference", "spearman"] = "reference"
    threshold: Optional[float] = None
    min_permutations: Optional[int] = None
    max_permutations: Optional[int] = None
    permutations_per_batch: int = 10

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        for name in ("min_permutations", "max_permutations"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or omitted, got {v}")
        if self.permutations_per_batch < 1:
            raise ValueError(f"permutations_per_batch must be >= 1, got {self.permutations_per_batch}")

    def check(self, task: ValuationTask) -> None:
        check_task(task)
        need = full_fits(self.full_models, self.dropout) + 1
        if self.max_fits is not None and self.max_fits < need:
            raise ValueError(f"tmc-shapley needs at least {need} fits ({need - 1} full-data models and one "
                             f"prefix model), max_fits={self.max_fits} is too small")

    def value(self, task: ValuationTask) -> Valuation:
        return self.run(task)

    def run(self, task: ValuationTask, on_wave: Callable[[int, np.ndarray, Budget], None] | None = None) -> Valuation:
        """value(task), calling ``on_wave(permutations, values, budget)`` after each wave."""
        budget, util, v_full = self.start(task)

        def score(index: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
            before = util.fits
            v = util.scores(index, weight, stream=0)
            budget.spend(util.fits - before)
            return v

        labels = np.asarray(task.source.y) if task.supervised else None
        res = run_tmc(score, util.n, labels, util.empty, float(v_full.mean()),
                      seed=task.seed, tolerance=self.tolerance, patience=self.patience, stopping=self.stopping,
                      threshold=self.threshold, min_permutations=self.min_permutations,
                      max_permutations=self.max_permutations, permutations_per_batch=self.permutations_per_batch,
                      models_per_batch=util.models_per_batch, budget=budget, device=task.device,
                      on_wave=None if on_wave is None else lambda p, v: on_wave(p, v, budget))
        cuts = [t for t in res.truncated_at if t is not None]
        return budget.valuation(res.values, permutations=res.permutations, converged=res.converged,
                                statistic=res.statistic, v_full=float(v_full.mean()), v_empty=util.empty,
                                mean_truncation=float(np.mean(cuts)) if cuts else None,
                                training=training_label(self.compile), models_per_batch=util.models_per_batch)


@hookimpl
def register_valuers(register):
    register(TMCShapleyValuer)
