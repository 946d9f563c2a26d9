"""Where jobs run. ``SerialExecutor`` runs them in this process (for debugging, and the
Python API's default); ``WorkerPool`` runs each in a worker process of its own pool, so
that a job that hangs, grows past its memory limit or kills its process is recorded as
``timeout``, ``oom`` or ``failed`` against the right job, and the grid goes on.

Workers are forked from a fork server that imported valbench once (a new worker costs
milliseconds, not a torch import); each holds its own data cache, and dies with its
parent (Linux's parent-death signal, and a watchdog thread elsewhere).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from valbench.forkserver import worker_context
from valbench.plugins import option
from valbench.timing import status_bytes
from valbench.types import Job, JobResult

if TYPE_CHECKING:
    from valbench.runner import CellCache

Started = Callable[[Job], bool]  # claims the job; False: skip it (finished or taken by another run)
POLL_S = 0.25  # how often deadlines and memory are looked at


class SerialExecutor:
    """Runs jobs one after another in this process (shares one cache; no limits)."""

    def __init__(self, cache: CellCache | None = None):
        from valbench.runner import CellCache

        self.cache = cache or CellCache()

    def run(self, jobs: Sequence[Job], started: Started) -> Iterator[tuple[Job, JobResult]]:
        from valbench.runner import run_job

        for job in jobs:
            if started(job):
                yield job, run_job(job, self.cache)


def _die_with_parent(parent: int) -> None:
    """Make this worker end when the run that started it does, even after a kill -9 of it.

    The worker's own parent is the fork server, which exits when the run does: Linux's
    parent-death signal then kills the worker; a watchdog on the run's pid covers the rest."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            try:
                os.kill(parent, 0)  # signal 0: does the run's process still exist?
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _worker(conn: Connection, parent: int, threads: int) -> None:
    """A worker's life: take a job, run it, send its result; until told to stop."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; a Ctrl-C reaches the whole group
    import torch

    from valbench.runner import CellCache, run_job

    torch.set_num_threads(threads)
    cache = CellCache(seal=True)
    while True:
        try:
            job = conn.recv()
            if job is None:
                return
            conn.send(run_job(job, cache))
        except (EOFError, BrokenPipeError, ConnectionResetError):  # the run is gone: so is its worker
            return


def job_timeout(job: Job, timeout: float | None) -> float | None:
    """The most specific limit: the spec's ``[timeout=S]``, else the run's --timeout, else the
    valuer class's own ``timeout`` (None: no limit)."""
    for limit in (job.valuer.timeout, timeout):
        if limit is not None:
            return limit
    return option(job.valuer, "timeout")


@dataclass
class _Slot:
    process: mp.process.BaseProcess
    conn: Connection
    job: Job | None = None
    since: float = field(default_factory=time.monotonic)


class WorkerPool:
    """Runs jobs in ``workers`` worker processes, at most ``timeout`` seconds and
    ``memory_limit`` resident bytes each (None: no limit), ``threads`` torch threads per
    worker (default: the cores shared out, so that workers do not oversubscribe them)."""

    def __init__(self, workers: int = 1, *, timeout: float | None = None, memory_limit: int | None = None,
                 threads: int | None = None):
        self.workers = max(1, workers)
        self.timeout, self.memory_limit = timeout, memory_limit
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.ctx = worker_context()
        self.slots: list[_Slot] = []

    def _start(self) -> _Slot:
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(theirs, os.getpid(), self.threads), daemon=True)
        p.start()
        theirs.close()
        return _Slot(p, ours)

    def _replace(self, slot: _Slot) -> None:
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(5)
        slot.conn.close()
        self.slots[self.slots.index(slot)] = self._start()

    def close(self) -> None:
        """Stop every worker now (a job in progress is abandoned)."""
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(5)
            slot.conn.close()
        self.slots = []

    def start(self) -> "WorkerPool":
        """Start the workers now: forked from the fork server once its imports are done
        (:func:`valbench.forkserver.warm_up` starts it early, so that they overlap the run's planning)."""
        while len(self.slots) < self.workers:
            self.slots.append(self._start())
        return self

    def run(self, jobs: Sequence[Job], started: Started) -> Iterator[tuple[Job, JobResult]]:
        pending = deque(jobs)
        self.start()
        try:
            while pending or any(s.job for s in self.slots):
                for i in range(len(self.slots)):  # hand out work
                    while self.slots[i].job is None and pending:
                        job = pending.popleft()
                        if started(job):
                            self._hand(i, job)
                busy = [s for s in self.slots if s.job is not None]
                if not busy:
                    continue
                ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=POLL_S)
                for slot in busy:
                    result = self._check(slot, ready)
                    if result is not None:
                        job, slot.job = slot.job, None
                        yield job, result
        finally:
            self.close()

    def _hand(self, i: int, job: Job) -> None:
        """Give ``job`` to worker ``i``; a worker that died while idle is replaced first."""
        for _ in range(2):
            slot = self.slots[i]
            try:
                slot.conn.send(job)
                slot.job, slot.since = job, time.monotonic()
                return
            except (BrokenPipeError, EOFError, OSError):
                self._replace(slot)
        raise RuntimeError("a fresh worker process could not take a job")

    def _check(self, slot: _Slot, ready: list) -> JobResult | None:
        """The slot's result if its job ended (finished, died, or stopped at a limit), else None."""
        job = slot.job
        assert job is not None
        if slot.conn in ready:
            try:
                return slot.conn.recv()
            except (EOFError, OSError):
                pass  # the worker died while sending: below
        elapsed = time.monotonic() - slot.since
        if not slot.process.is_alive() or slot.process.sentinel in ready:
            code = slot.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            why = ("a segmentation fault, e.g. a write into the read-only input arrays through torch.from_numpy"
                   if code == -signal.SIGSEGV else "the valuer crashed it or the system killed it for memory")
            self._replace(slot)
            return JobResult(job.key, "failed", error=f"its worker process died ({how}) after {elapsed:.1f} s: {why}")
        rss = status_bytes("VmRSS", slot.process.pid) if self.memory_limit is not None else None
        if rss is not None:
            if rss > self.memory_limit:
                self._replace(slot)
                return JobResult(job.key, "oom", error=f"stopped at {rss / 2**30:.2f} GiB resident: past the "
                                                        f"memory limit of {self.memory_limit / 2**30:.2f} GiB")
        limit = job_timeout(job, self.timeout)
        if limit is not None and elapsed > limit:
            self._replace(slot)
            return JobResult(job.key, "timeout", error=f"stopped after {elapsed:.1f} s: past the timeout of "
                                                        f"{limit:g} s")
        return None
