"""The plugin contract, part 1: the hooks (part 2, the records and protocols, is
:mod:`valbench.types`).

A plugin is a module (or object) whose functions are marked with ``valbench.hookimpl``
and that is installed with an entry point in the ``valbench`` group::

    from valbench import hookimpl

    @hookimpl
    def register_valuers(register):
        register(MyValuer)

Naming rule: a hook is named for the moment it is called, as ``<verb>_<object>``
(``register_valuers``, ``job_finished``); it never carries the project's prefix. Hooks
are for discovery and observation only: none of them does timed work.
"""
from __future__ import annotations

from typing import Callable

import pluggy

from valbench import PROJECT
from valbench.types import Job, JobResult

hookspec = pluggy.HookspecMarker(PROJECT)

Register = Callable[[type], None]


# --- Setup: once per process, when the registry is built ------------------------------------
# Each hook receives ``register`` and calls it once per plugin class. The class is checked
# against its protocol in valbench.types (name, required members, keyword-only constructor)
# and a clear error names what is wrong; a name registered twice is an error.

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


# --- Running: in the main process, around every job a run executes ---------------------------
# Jobs already finished in the store are skipped and not announced. Observers must not
# change what they are given (the records are frozen) and should return quickly.

@hookspec
def job_started(job: Job) -> None:
    """Called when ``job`` has been claimed in the store, just before it runs (with workers:
    when it is handed to one)."""


@hookspec
def job_finished(job: Job, result: JobResult) -> None:
    """Called after ``job`` ran, once its result (status "ok", "failed", "timeout" or "oom")
    is stored."""
