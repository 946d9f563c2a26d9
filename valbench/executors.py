"""Where jobs run. ``SerialExecutor`` runs them in this process; ``ProcessExecutor``
runs them in worker processes (spawned, each with its own data cache), so a job that
crashes its process is recorded as failed and the rest of the grid goes on.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from typing import Callable, Iterator, Sequence

from valbench.types import Job, JobResult
from valbench.runner import CellCache, run_job

Started = Callable[[Job], bool]  # claims the job; False: skip it (finished or taken by another run)


class SerialExecutor:
    """Runs jobs one after another in this process (the default; shares one cache)."""

    def __init__(self, cache: CellCache | None = None):
        self.cache = cache or CellCache()

    def run(self, jobs: Sequence[Job], started: Started) -> Iterator[tuple[Job, JobResult]]:
        for job in jobs:
            if started(job):
                yield job, run_job(job, self.cache)


_WORKER_CACHE: CellCache | None = None


def _worker_init(threads: int) -> None:
    global _WORKER_CACHE
    import torch

    torch.set_num_threads(threads)
    _WORKER_CACHE = CellCache()


def _worker_run(job: Job) -> JobResult:
    assert _WORKER_CACHE is not None
    return run_job(job, _WORKER_CACHE)


class ProcessExecutor:
    """Runs jobs in ``workers`` spawned processes, splitting the cores between them."""

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, jobs: Sequence[Job], started: Started) -> Iterator[tuple[Job, JobResult]]:
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pending = list(jobs)
        begun: set[str] = set()
        while pending:
            with cf.ProcessPoolExecutor(self.workers, mp.get_context("spawn"), _worker_init, (threads,)) as pool:
                futures = {}
                for job in pending:
                    if job.key not in begun:  # a resubmitted job keeps its attempt
                        if not started(job):
                            continue
                        begun.add(job.key)
                    futures[pool.submit(_worker_run, job)] = job
                pending = []
                broken = False
                for fut in cf.as_completed(futures):
                    job = futures[fut]
                    try:
                        yield job, fut.result()
                    except cf.process.BrokenProcessPool:
                        # A worker died (e.g. out of memory): the first job reported broken is
                        # recorded as failed (with one worker it is exactly the culprit); the
                        # rest are resubmitted to a fresh pool.
                        if not broken:
                            broken = True
                            yield job, JobResult(job.key, "failed", error="worker process died (out of memory or killed)")
                        else:
                            pending.append(job)
