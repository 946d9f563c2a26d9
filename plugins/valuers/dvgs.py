"""Valuer ``dvgs``: Data Valuation with Gradient Similarity (the paper's method).

Train the task's model on the target set only; the value of a source sample is the mean
similarity of its own gradient to the target mini-batch gradient, taken before every
``period``-th optimiser step of every restart. The parameters, their defaults (exp1 of
docs/protocol.md) and their checks are :class:`valbench.gradsim.dvgs.DVGSConfig`'s: this
plugin is that configuration with a name. ``source_batch`` changes memory and speed only,
never values; ``class_balance`` None follows the task's learner; ``parameters``: all,
last, or a regular expression over parameter names; ``dropout``: keep dropout active
during valuation (per-sample masks, the same on every device); ``engine``: auto = the
exact fast engine where it applies, else Opacus; ``dtype``: float32 (default), tf32
(CUDA only, restored afterwards) or bf16 (autocast; values move slightly, bounds in
:mod:`valbench.gradsim.precision`).
"""
from __future__ import annotations

from valbench import hookimpl
from valbench.gradsim.config import DVGSConfig
from valbench.types import Valuation, ValuationTask


class DVGS(DVGSConfig):
    name = "dvgs"
    version = "1"
    test_params = {"restarts": 1, "epochs": 40}  # the conformance kit: one restart is enough to check the contract

    def check(self, task: ValuationTask) -> None:
        """The model can be valued: no BatchNorm, parameters match, the engine applies."""
        from valbench.gradsim.dvgs import prepare  # here, as in value(): loading the plugins stays torch-free

        prepare(task, self, 0, "cpu")

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.gradsim.dvgs import dvgs

        return dvgs(task, self)


@hookimpl
def register_valuers(register):
    register(DVGS)
