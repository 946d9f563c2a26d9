"""Work budgets for valuers: a cap on model fits (utility evaluations) and/or seconds.

A valuer with ``max_fits`` / ``max_seconds`` parameters (declare them by subclassing
:class:`BudgetParams`) creates one ``Budget`` per valuation (``self.new_budget()``),
calls ``spend()`` for every model it fits, asks ``exhausted()`` between units of work
(a permutation, an outer iteration) and returns ``budget.valuation(values)``, which
records the fits used and whether the budget stopped the work early.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from valbench.types import Valuation


def check_budget_params(max_fits: int | None, max_seconds: float | None) -> None:
    """Range checks for a valuer's validate()."""
    if max_fits is not None and max_fits < 1:
        raise ValueError(f"max_fits must be >= 1 or omitted, got {max_fits}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or omitted, got {max_seconds}")


@dataclass(frozen=True, kw_only=True)
class BudgetParams:
    """The budget parameters of a valuer, declared once: subclass this (a keyword-only
    frozen dataclass, so parameters are stored unchanged) and call ``super().validate()``.

    ``max_fits``: at most this many model fits; ``max_seconds``: stop between units of
    work once this much time has passed. None: no limit. A valuer that a budget stopped
    says so (``stopped_early``), and tables mark it.
    """

    max_fits: Optional[int] = None
    max_seconds: Optional[float] = None

    def validate(self) -> None:
        check_budget_params(self.max_fits, self.max_seconds)

    def new_budget(self) -> "Budget":
        return Budget(self.max_fits, self.max_seconds)


@dataclass
class Budget:
    max_fits: int | None = None
    max_seconds: float | None = None
    fits: int = 0
    stopped_early: bool = False
    started: float = field(default_factory=time.perf_counter)

    def spend(self, fits: int = 1) -> None:
        self.fits += fits

    def remaining_fits(self) -> int | None:
        return None if self.max_fits is None else max(self.max_fits - self.fits, 0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def exhausted(self, next_cost: int = 1) -> bool:
        """True if the next unit of work (``next_cost`` fits) would exceed the budget;
        marks the valuation as stopped early."""
        over = (self.max_fits is not None and self.fits + next_cost > self.max_fits) or (
            self.max_seconds is not None and self.elapsed() >= self.max_seconds)
        if over:
            self.stopped_early = True
        return over

    def valuation(self, values: np.ndarray, **info: Any) -> Valuation:
        return Valuation(values=values, fits=self.fits, stopped_early=self.stopped_early,
                         info={"seconds": round(self.elapsed(), 3), **info})
