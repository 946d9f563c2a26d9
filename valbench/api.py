"""The Python API behind the CLI: run an experiment into a store.

Everything that can be checked is checked before the store is opened: plugin names and
parameters, the device, every dataset load and every cell's data. A bad input therefore
writes nothing, and a second identical run skips every finished job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from valbench.executors import ProcessExecutor, SerialExecutor
from valbench.grid import Experiment, expand, resolve_device
from valbench.plugins import Registry, build_registry
from valbench.provenance import provenance
from valbench.runner import CellCache, precheck
from valbench.types import Job, JobResult
from valbench.store import Store, check_store_path

Progress = Callable[[Job, JobResult], None]


@dataclass(frozen=True)
class RunSummary:
    jobs: int
    skipped: int
    ok: int
    failed: int


def plan(exp: Experiment, registry: Registry, device: str = "auto") -> tuple[list[Job], CellCache]:
    """Resolve the grid and prepare every cell's data (raising before any write)."""
    jobs = expand(exp, registry, resolve_device(device))
    cache = CellCache()
    for job in jobs:
        cache.cell(job)
        precheck(job, cache)
    return jobs, cache


def run(exp: Experiment, results: str | Path, *, device: str = "auto", workers: int = 0,
        registry: Registry | None = None, progress: Progress | None = None,
        on_plan: Callable[[int, int], None] | None = None) -> RunSummary:
    """Run every job of ``exp`` not already finished in the store at ``results``."""
    registry = registry or build_registry()
    path = Path(results)
    check_store_path(path)
    jobs, cache = plan(exp, registry, device)
    with Store(path) as store:
        done = store.done_keys()
        todo = [j for j in jobs if j.key not in done]
        if on_plan:
            on_plan(len(jobs), len(jobs) - len(todo))
        prov = provenance(jobs[0].device)
        attempts: dict[str, int] = {}

        def started(job: Job) -> None:
            store.add_job(job)
            attempts[job.key] = store.start_attempt(job.key, prov)
            registry.hook.job_started(job=job)

        executor = ProcessExecutor(workers) if workers > 0 else SerialExecutor(cache)
        ok = failed = 0
        for job, result in executor.run(todo, started):
            store.finish_attempt(attempts[job.key], result)
            registry.hook.job_finished(job=job, result=result)
            ok += result.status == "ok"
            failed += result.status != "ok"
            if progress:
                progress(job, result)
    return RunSummary(len(jobs), len(jobs) - len(todo), ok, failed)
