"""Valuer ``dvgs``: Data Valuation with Gradient Similarity (the paper's method).

The algorithm and its engines live in :mod:`valbench.gradsim`; this file is the
plugin face: parameters, checks, and the call.
"""
from __future__ import annotations

from typing import Literal, Optional

from valbench import hookimpl
from valbench.gradsim.dvgs import config_from, dvgs, prepare
from valbench.types import Valuation, ValuationTask


class DVGS:
    """Train on the target set; value = mean similarity of each source sample's gradient
    to the target mini-batch gradient over all steps of all restarts. Defaults: exp1 (docs/protocol.md).

    ``source_batch`` changes memory and speed only, never values. ``class_balance``
    None follows the task's learner. ``parameters``: all, last, or a regular expression
    over parameter names. ``dropout``: keep dropout active during valuation (per-sample
    masks, the same on every device). ``engine``: auto = fast where it applies, else Opacus.
    """

    name = "dvgs"
    version = "1"

    def __init__(self, *, restarts: int = 3, epochs: int = 100, lr: float = 1e-3, target_batch: int = 500,
                 source_batch: int = 400, period: int = 1,
                 similarity: Literal["cosine", "dot", "projection", "euclidean"] = "cosine",
                 class_balance: Optional[bool] = None, parameters: str = "all", dropout: bool = True,
                 engine: Literal["auto", "fast", "opacus", "naive"] = "auto"):
        self.restarts, self.epochs, self.lr = restarts, epochs, lr
        self.target_batch, self.source_batch, self.period = target_batch, source_batch, period
        self.similarity, self.class_balance, self.parameters = similarity, class_balance, parameters
        self.dropout, self.engine = dropout, engine

    def validate(self) -> None:
        config_from(self).validate()

    def check(self, task: ValuationTask) -> None:
        """The model can be valued: no BatchNorm, parameters match, the engine applies."""
        prepare(task, config_from(self), 0, "cpu")

    def value(self, task: ValuationTask) -> Valuation:
        return dvgs(task, config_from(self))


@hookimpl
def register_valuers(register):
    register(DVGS)
