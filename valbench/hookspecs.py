"""The plugin contract: one registration hook per plugin kind, plus job observers.

A plugin is a module or object whose functions are marked with ``valbench.hookimpl``.
Registration hooks receive a ``register`` callback and call it once per plugin class::

    from valbench import hookimpl

    @hookimpl
    def register_valuers(register):
        register(MyValuer)

Each registered class names itself with a lowercase class attribute ``name`` and takes
keyword-only constructor parameters (the protocols are in :mod:`valbench.types`).
Observer hooks are notified of jobs; they never do the timed work.
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

from valbench import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset classes (protocol :class:`valbench.types.Dataset`)."""


@hookspec
def register_corruptions(register: Register) -> None:
    """Register corruption classes (protocol :class:`valbench.types.Corruption`)."""


@hookspec
def register_valuers(register: Register) -> None:
    """Register valuer classes (protocol :class:`valbench.types.Valuer`)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register metric classes (protocol :class:`valbench.types.Metric`)."""


@hookspec
def valbench_job_started(job: Any) -> None:
    """Called in the main process before a job (:class:`valbench.grid.Job`) is run."""


@hookspec
def valbench_job_finished(job: Any, result: Any) -> None:
    """Called in the main process after a job ran, with its :class:`valbench.runner.JobResult`."""
