"""Permutation sampling of marginal contributions on the retraining utility, batched.

The engine of the permutation-based retraining valuers (``tmc-shapley``, ``beta-shapley``,
``class-wise-shapley``): a *walk* adds the samples of one random permutation one at a time
and records the marginal v(prefix) - v(previous prefix) of each, where v is a score
function over subsets (normally :class:`valbench.training.utility.Utility`).
``permutations_per_batch`` walks advance in lockstep and their next prefixes are trained
together as one batched fit of about ``models_per_batch`` models, so prefixes of similar
length train together.

What the valuers vary, each in one place:

- a :class:`Game` says which samples are permuted (``players``), what every model of a
  walk also holds (``base``: class-wise Shapley's out-of-class subset), a weight per
  position applied to the marginals (``weights``: Beta Shapley's semivalue weights) and how
  many positions are walked (``horizon``: later marginals are 0);
- ``tolerance`` / ``patience``: TMC truncation (once |v(prefix) - v(D)| <= tolerance *
  |v(D)| for more than ``patience`` consecutive additions the rest of the walk gets 0);
- the stopping rule (:class:`Stopping`).

Class condition (Ghorbani & Zou's TMC): a model is trained only once the base and the
prefix hold every class of the source set (``labels``); before that v = ``v_empty``.
Budget: walks stop between batched fits; a walk cut by the budget counts as truncated
where it stopped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Optional

import numpy as np

from valbench.budget import Budget
from valbench.progress import progress
from valbench.seeding import rng
from valbench.training.utility import RetrainingParams, Utility, check_task, full_fits
from valbench.types import ValuationTask

if TYPE_CHECKING:  # torch is imported where it is used: the valuers subclass PermutationParams at load
    import torch

# (index (M, w), weight (M, w)) -> v (M,), or (M, G): column g is v for games reading column g
ScoreFn = Callable[["torch.Tensor", "torch.Tensor"], np.ndarray]


# --- Stopping rules ------------------------------------------------------------------
# Fed one walk's marginals (per player) at a time.
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


# --- Games and walks ---------------------------------------------------------------------

@dataclass(frozen=True)
class Game:
    """One permutation game (see the module docstring). ``players``: source indices
    permuted; ``column``: which column of a 2-D score this game reads; ``base(g)``: the
    source indices every model of a new walk also holds; ``weights`` (len(players),):
    multiplier of the marginal at each position; ``horizon``: positions walked."""

    players: np.ndarray
    column: int = 0
    base: Optional[Callable[[np.random.Generator], np.ndarray]] = None
    weights: Optional[np.ndarray] = None
    horizon: Optional[int] = None


@dataclass
class _Walk:
    """One permutation in progress; ``perm`` and ``first_fit`` are positions in ``game.players``."""

    game: int
    column: int  # the column of a 2-D score this walk reads
    perm: np.ndarray
    rows: np.ndarray  # source rows of the model after position k: rows[:len(base) + k + 1]
    n_base: int
    first_fit: int  # first position whose base + prefix holds every class
    length: int  # positions walked
    v_prev: float
    marginals: np.ndarray  # by position
    pos: int = 0
    run: int = 0  # consecutive additions within tolerance
    done: bool = False
    truncated_at: int | None = None

    def advance(self, v_new: float, v_full: float, tolerance: float, patience: int) -> None:
        self.marginals[self.pos] = v_new - self.v_prev
        self.v_prev = v_new
        self.pos += 1
        if tolerance > 0 and abs(v_new - v_full) <= tolerance * abs(v_full):
            self.run += 1
            if self.run > patience:
                self.done, self.truncated_at = True, self.pos
        else:
            self.run = 0
        if self.pos == self.length:
            self.done = True


@dataclass
class PermutationResult:
    values: np.ndarray  # (n,): each game's mean weighted marginals at its players, 0 elsewhere
    permutations: int  # walks over all games
    converged: bool  # every game's stopping rule met
    statistic: float | None  # the first game's stopping statistic
    truncated_at: list[int | None] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # walks per game


def run_permutations(score: ScoreFn, n: int, labels: np.ndarray | None, v_empty: float, v_full: float, *,
                     seed: int, games: list[Game] | None = None, stream: str = "tmc-permutations",
                     tolerance: float = 0.01, patience: int = 5, stopping: str = "reference",
                     threshold: float | None = None, min_permutations: int | None = None,
                     max_permutations: int | None = None, permutations_per_batch: int = 10,
                     models_per_batch: int = 100, budget: Budget | None = None, device: str = "cpu",
                     label: str = "permutations",
                     on_wave: Callable[[int, np.ndarray], None] | None = None) -> PermutationResult:
    """Mean (weighted) marginals over random permutations of ``n`` source samples;
    ``labels`` (n,) classes (None: no class condition); ``games`` default: one game of all n.

    ``score(index, weight)`` returns v of M subsets: row j trains on the rows ``index[j]``
    with ``weight[j]`` > 0. ``budget`` (fits are spent by the caller's score function; this
    loop only asks ``exhausted``) may stop the run. ``max_permutations`` and the stopping
    rule apply per game. ``on_wave(p, values)`` is called after each wave with the walks so
    far and the current values.
    """
    games = games or [Game(np.arange(n))]
    thr, min_p, max_p = DEFAULTS[stopping]
    threshold = thr if threshold is None else threshold
    min_p = min_p if min_permutations is None else min_permutations
    max_p = max_p if max_permutations is None else max_permutations
    stops = [Stopping(stopping, len(g.players), threshold, min_p) for g in games]
    gen = rng(seed, stream)
    classes = np.unique(labels) if labels is not None else None
    budget = budget or Budget()
    finished: list[_Walk] = []
    cut = False

    def values() -> np.ndarray:
        out = np.zeros(n)
        for g, s in zip(games, stops):
            out[g.players] = s.total / max(s.count, 1)
        return out

    def open_games() -> list[int]:
        return [i for i, s in enumerate(stops) if not s.converged() and (max_p is None or s.count < max_p)]

    with progress(None if max_p is None else max_p * len(games), label) as bar:
        while not cut and (todo := open_games()):
            walks = [_new_walk(i, games[i], gen, labels, classes, v_empty) for i in todo
                     for _ in range(permutations_per_batch if max_p is None
                                    else min(permutations_per_batch, max_p - stops[i].count))]
            cut = _run_wave(walks, score, v_full, tolerance, patience, models_per_batch, budget, device)
            for w in walks:  # a walk cut by the budget counts as truncated where it stopped
                if w.pos > 0:
                    g = games[w.game]
                    per_player = np.zeros(len(g.players))
                    weights = 1.0 if g.weights is None else g.weights[:len(w.perm)]
                    per_player[w.perm] = w.marginals * weights
                    stops[w.game].add(per_player)
                    finished.append(w)
            bar.update(len(walks))
            if on_wave is not None:
                on_wave(sum(s.count for s in stops), values())
    return PermutationResult(values(), sum(s.count for s in stops), all(s.converged() for s in stops),
                             stops[0].statistic, [w.truncated_at for w in finished], [s.count for s in stops])


def _new_walk(i: int, game: Game, gen: np.random.Generator, labels: np.ndarray | None,
              classes: np.ndarray | None, v_empty: float) -> _Walk:
    m = len(game.players)
    perm = gen.permutation(m)
    base = np.asarray(game.base(gen), dtype=np.int64) if game.base is not None else np.zeros(0, dtype=np.int64)
    rows = np.concatenate([base, game.players[perm]])
    first = 0
    if classes is not None:
        ordered = labels[game.players[perm]]
        have = set(labels[base].tolist())
        missing = [c for c in classes if c not in have]
        # a class in neither the base nor the players: no prefix is ever fitted
        first = max((int(np.argmax(ordered == c)) if (ordered == c).any() else m for c in missing), default=0)
    length = m if game.horizon is None else min(game.horizon, m)
    return _Walk(i, game.column, perm, rows, len(base), first, length, v_empty, np.zeros(m))


def _run_wave(walks: list[_Walk], score: ScoreFn, v_full: float, tolerance: float, patience: int,
              models_per_batch: int, budget: Budget, device: str) -> bool:
    """Advance ``walks`` in lockstep until all are done; True if the budget cut them."""
    import torch

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
        jobs = [(w, k) for w in active for k in range(w.pos, min(w.pos + per_walk, w.length))]
        sizes = torch.tensor([w.n_base + k + 1 for w, k in jobs], device=device)
        width = int(sizes.max())
        # row j: the walk's rows up to its prefix (weight 1), padded to ``width`` (weight 0)
        index = torch.stack([torch.as_tensor(np.pad(w.rows[:width], (0, max(0, width - len(w.rows)))), device=device)
                             for w, _ in jobs])
        weight = torch.arange(width, device=device)[None, :] < sizes[:, None]
        v = score(index, weight.to(torch.float32))
        for j, (w, k) in enumerate(jobs):
            if not w.done and w.pos == k:
                w.advance(float(v[j] if v.ndim == 1 else v[j, w.column]), v_full, tolerance, patience)


@dataclass(frozen=True, kw_only=True)
class PermutationParams(RetrainingParams):
    """The parameters the permutation valuers share, with the retraining ones
    (RetrainingParams) and the budget's: the stopping rule (``stopping``; ``threshold``,
    ``min_permutations``, ``max_permutations``: None = the rule's default, per game) and
    ``permutations_per_batch`` walks advancing in lockstep."""

    per_copy_rows = True  # each prefix model trains on its own rows (sizes models_per_batch="auto")
    # cheap settings for the conformance kit: 2 permutations (per game) of 10-step fits
    test_params = {"steps": 10, "lr": 1e-2, "full_models": 1, "max_permutations": 2, "permutations_per_batch": 2,
                   "models_per_batch": 200, "compile": False}

    stopping: Literal["reference", "spearman"] = "reference"
    threshold: Optional[float] = None
    min_permutations: Optional[int] = None
    max_permutations: Optional[int] = None
    permutations_per_batch: int = 10

    def validate(self) -> None:
        super().validate()
        if self.stopping not in DEFAULTS:
            raise ValueError(f"stopping must be reference or spearman, got {self.stopping!r}")
        for name in ("min_permutations", "max_permutations"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or omitted, got {v}")
        if self.permutations_per_batch < 1:
            raise ValueError(f"permutations_per_batch must be >= 1, got {self.permutations_per_batch}")

    def check(self, task: ValuationTask) -> None:
        """The task can be scored and ``max_fits`` leaves one prefix fit after v(D)."""
        check_task(task)
        need = full_fits(self.full_models, self.dropout) + 1
        if self.max_fits is not None and self.max_fits < need:
            raise ValueError(f"{getattr(self, 'name', 'this valuer')} needs at least {need} fits ({need - 1} "
                             f"full-data models and one prefix model), max_fits={self.max_fits} is too small")

    def permutation_options(self, util: Utility) -> dict:
        """The keyword arguments of :func:`run_permutations` these parameters set (with
        ``util``'s models per batch: "auto" is resolved there)."""
        return dict(stopping=self.stopping, threshold=self.threshold, min_permutations=self.min_permutations,
                    max_permutations=self.max_permutations, permutations_per_batch=self.permutations_per_batch,
                    models_per_batch=util.models_per_batch)


def budgeted_score(util: Utility, budget: Budget, measure: Callable | None = None) -> ScoreFn:
    """``util.scores`` on mask stream 0 (``measure``: see Utility.scores), its fits spent from ``budget``."""
    def score(index: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        before = util.fits
        v = util.scores(index, weight, stream=0, measure=measure)
        budget.spend(util.fits - before)
        return v
    return score
