"""The Python API behind the CLI: run an experiment into a store.

Everything that can be checked is checked before the store is opened: plugin names and
parameters, the device, every dataset load and every cell's data. A bad input therefore
writes nothing, and a second identical run skips every finished job.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from valbench.executors import SerialExecutor, WorkerPool
from valbench.forkserver import warm_up
from valbench.grid import Experiment, expand, resolve_device
from valbench.plugins import Registry, build_registry, option
from valbench.provenance import provenance
from valbench.errors import ValuationError
from valbench.runner import CellCache, precheck, score_all, task_for
from valbench.types import readonly
from valbench.types import Job, JobResult
from valbench.store import HEARTBEAT_S, Store, check_store_path, renew, run_owner

Progress = Callable[[Job, JobResult], None]


@dataclass(frozen=True)
class RunSummary:
    jobs: int
    skipped: int  # finished before this run started
    ok: int
    failed: int
    elsewhere: int = 0  # taken by another run on the same store while this one ran
    rescored: int = 0  # finished jobs scored with metrics they lacked (named after they ran)


def plan(exp: Experiment, registry: Registry, device: str = "auto", done: set[str] = frozenset()
         ) -> tuple[list[Job], CellCache]:
    """Resolve the grid and prepare the data of every cell with a job not in ``done``
    (raising before any write)."""
    jobs = expand(exp, registry, resolve_device(device))
    return jobs, prepare(jobs, done)


def prepare(jobs: list[Job], done: set[str] = frozenset()) -> CellCache:
    """Prepare (and check) the data of every cell with a job not in ``done``."""
    cache = CellCache()
    for job in jobs:
        if job.key not in done:
            cache.cell(job)
            precheck(job, cache)
    return cache


class _Heartbeat:
    """Renews, every HEARTBEAT_S seconds from a thread of its own, this run's hold on the
    attempts it is running, so that another run on the store leaves them alone."""

    def __init__(self, path: Path):
        self.path, self.held, self.lock, self.stop = path, set(), threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._beat, name="valbench-heartbeat", daemon=True)

    def _beat(self) -> None:
        con = sqlite3.connect(self.path, timeout=30)  # its own connection: sqlite3 objects stay in their thread
        try:
            while not self.stop.wait(HEARTBEAT_S):
                with self.lock:
                    held = list(self.held)
                renew(con, held)
        finally:
            con.close()

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def pending(exp: Experiment, results: str | Path, registry: Registry, device: str = "auto",
            retry_failed: bool = False) -> tuple[list[Job], list[Job], set[str]]:
    """(every job, the jobs a run would do, the keys it would skip), reading the store at
    ``results`` without changing it (``valbench run --dry-run``)."""
    path = Path(results)
    check_store_path(path)  # also for a path that does not exist yet: a folder, say, is refused here
    skip: set[str] = set()
    if path.is_file():
        with Store(path, readonly=True, snapshot=True) as existing:  # leaves no side files if planning fails
            skip = existing.done_keys(failed=not retry_failed)
    jobs = expand(exp, registry, resolve_device(device))
    return jobs, [j for j in jobs if j.key not in skip], skip


def metric_rows(jobs: list[Job]) -> list[tuple]:
    """(label, name, higher_is_better, paper_table, truth_kind) of every metric the jobs score."""
    seen = {m.label: m for job in jobs for m in job.metrics}
    return [(label, m.name, bool(option(m, "higher_is_better")), option(m, "paper_table"), option(m, "truth_kind"))
            for label, m in seen.items()]


def paper_rows(cells: set[tuple[str, str, str]], registry: Registry) -> list[tuple]:
    """The published numbers of every preset experiment that is one of ``cells``
    ((dataset label, corruption label, mode); valuers matched by name, so a budgeted or
    re-tuned valuer still sits beside the paper's): rows for Store.record_paper."""
    from valbench import presets
    from valbench.errors import ValbenchError
    from valbench.grid import specs_from
    from valbench.params import parse_spec, resolve

    rows = []
    for name in presets.names():
        published = presets.published(name)
        if presets.members(name) != [name] or not published:
            continue  # a collection (its members are visited themselves), or nothing published
        first = published[0]  # every entry of a preset shares its data, corruption and mode
        try:
            hit = [(dl, cl) for dl, cl in ((resolve(registry, "dataset", d).label, resolve(registry, "corruption", c).label)
                                          for d in specs_from(first["datasets"], "datasets")
                                          for c in specs_from(first["corruptions"], "corruptions"))
                   if (dl, cl, first["mode"]) in cells]
        except ValbenchError:  # a preset's plugin that is not installed here
            continue
        rows += [(dl, cl, e["mode"], parse_spec(e["valuer"]).name, e["metric"], e.get("mean"), e.get("std"),
                  e.get("minutes"), f"DVGS paper, {name}") for e in published for dl, cl in hit]
    return rows


def run(exp: Experiment, results: str | Path, *, device: str = "auto", workers: int = 0,
        timeout: float | None = None, memory_limit: int | None = None, retry_failed: bool = False,
        executor: str = "local",
        registry: Registry | None = None, progress: Progress | None = None,
        on_plan: Callable[[int, int], None] | None = None) -> RunSummary:
    """Run every job of ``exp`` not already finished in the store at ``results``.

    ``workers`` 0 runs the jobs in this process (no limits; for debugging and tests); N > 0
    in N worker processes, each job stopped past ``timeout`` seconds or ``memory_limit``
    resident bytes; with ``executor="ray"``, as N Ray tasks at a time (valbench.ray_executor).
    If the run is interrupted (an exception, SIGINT, SIGTERM), the workers are stopped and
    the attempts in progress are recorded as 'interrupted'. Jobs whose last
    attempt failed (or hit a limit) run again only with ``retry_failed`` (a deterministic
    failure would only fail again)."""
    registry = registry or build_registry()
    path, since = Path(results), time.time()
    jobs, todo, done = pending(exp, path, registry, device, retry_failed)
    pool = None
    if workers > 0 and todo and executor == "ray":
        from valbench.ray_executor import RayExecutor

        pool = RayExecutor(workers, timeout=timeout, memory_limit=memory_limit)
    elif workers > 0 and todo:
        # the fork server starts now and imports torch while this process (which needs no
        # torch) prepares the data; the workers are forked from it when the first job is handed out
        pool = WorkerPool(workers, timeout=timeout, memory_limit=memory_limit)
        warm_up()
    try:
        return _run(jobs, todo, registry, path, prepare(jobs, done), pool, progress, on_plan, retry_failed, since)
    finally:
        if isinstance(pool, WorkerPool):
            pool.close()


def _run(jobs: list[Job], todo: list[Job], registry: Registry, path: Path, cache: CellCache, pool: object | None,
         progress: Progress | None, on_plan: Callable[[int, int], None] | None, retry_failed: bool,
         since: float) -> RunSummary:
    with Store(path) as store, _Heartbeat(path) as beat:
        if on_plan:
            on_plan(len(jobs), len(jobs) - len(todo))
        store.record_metrics(metric_rows(jobs))
        store.record_paper(paper_rows({(j.dataset.label, j.corruption.label, j.mode) for j in jobs}, registry))
        threads = pool.threads if pool is not None else None  # None: the jobs run in this process
        prov, owner = provenance(jobs[0].device, threads), run_owner()
        attempts: dict[str, int] = {}
        elsewhere = 0

        def started(job: Job) -> bool:
            nonlocal elsewhere
            attempt = store.claim(job, prov, owner, retry_failed, since)
            if attempt is None:  # finished or being run by another run on this store meanwhile
                elsewhere += 1
                return False
            attempts[job.key] = attempt
            with beat.lock:
                beat.held.add(attempt)
            registry.hook.job_started(job=job)
            return True

        rescored = rescore(jobs, todo, store, cache)
        executor = pool if pool is not None else SerialExecutor(cache)
        ok = failed = 0
        try:
            for job, result in executor.run(todo, started):
                store.finish_attempt(attempts[job.key], result)
                with beat.lock:
                    beat.held.discard(attempts[job.key])
                registry.hook.job_finished(job=job, result=result)
                ok += result.status == "ok"
                failed += result.status != "ok"
                if progress:
                    progress(job, result)
        finally:  # interrupted: what finished is stored; what was running is marked so, to run again
            with beat.lock:
                store.interrupt(sorted(beat.held))
    return RunSummary(len(jobs), len(jobs) - len(todo), ok, failed, elsewhere, rescored)


def rescore(jobs: list[Job], todo: list[Job], store: Store, cache: CellCache) -> int:
    """Score the finished jobs with the metrics this run names that they lack (a metric
    named after the job ran, e.g. filtering added to a finished grid): from the stored
    values, on the cell's data prepared afresh, in this process. Returns how many."""
    planned = {j.key for j in todo}
    done = 0
    for job in jobs:
        if job.key in planned:
            continue
        lacking = store.lacking(job)
        if lacking is None:
            continue
        attempt, values_file, labels = lacking
        job = dataclasses.replace(job, metrics=tuple(m for m in job.metrics if m.label in labels))
        cell = cache.cell(job)
        values = store.load_values(values_file)[0]
        clock = time.perf_counter()
        try:
            scores = score_all(job, cell, task_for(job, cell), readonly(values))
        except ValuationError as exc:
            raise ValuationError(f"{job.describe()}: scoring its stored values failed: {exc}") from None
        store.add_scores(attempt, scores, time.perf_counter() - clock)
        done += 1
    return done
