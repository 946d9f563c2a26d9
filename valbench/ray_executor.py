"""Running the jobs of a grid as Ray tasks, past one machine.

The driver (``valbench run --executor ray``) keeps the store: it claims each job before it
submits it and records each result as it comes back, so the store is the same as with
local workers, and ``valbench merge`` is only needed for stores made apart. Ray connects
to ``RAY_ADDRESS`` (an existing cluster) or starts a local instance for the run. Tasks are
never retried by Ray (a retry could run a job twice).

Each Ray task runs its job exactly as a local run does: in a valbench worker process of its
own (a fresh valbench.executors.WorkerPool per task: the price is that each job prepares its
cell again, as no cell cache outlives a task), so the cell's data is read-only
memory, ``timeout`` and ``memory_limit`` stop the job there and are recorded as 'timeout'
or 'oom', and a job that kills its process is a failed job, while the Ray worker survives.
Each task asks Ray for ``threads`` CPUs (and sets torch to that many threads) and for
``memory_limit`` bytes of memory, so that Ray packs no more jobs on a node than it holds; a
CUDA job asks for one GPU, so GPU jobs run one per device. The driver cancels a task that
outlives its timeout by a grace period (a node lost, a worker that cannot start).
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Iterator, Sequence

from valbench.executors import POLL_S, Started, WorkerPool, job_timeout
from valbench.types import Job, JobResult

GRACE_S = 60.0  # past a job's timeout, the driver gives its task this long before cancelling it


def _task(job: Job, threads: int, timeout: float | None, memory_limit: int | None) -> JobResult:
    """One job in a fresh valbench worker of this Ray worker, under the run's limits."""
    ((_, result),) = WorkerPool(1, timeout=timeout, memory_limit=memory_limit, threads=threads).run([job], lambda _: True)
    return result


class RayExecutor:
    """At most ``workers`` jobs at once as Ray tasks of ``threads`` CPUs each."""

    def __init__(self, workers: int = 1, *, timeout: float | None = None, memory_limit: int | None = None,
                 threads: int | None = None, address: str | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            from valbench.errors import ConfigError

            raise ConfigError("--executor ray needs Ray: pip install 'valbench[ray]'") from None
        self.workers, self.timeout, self.memory_limit = max(1, workers), timeout, memory_limit
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def run(self, jobs: Sequence[Job], started: Started) -> Iterator[tuple[Job, JobResult]]:
        import ray

        ours = not ray.is_initialized()
        if ours:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if self.address else self.workers * self.threads)
        task = ray.remote(max_retries=0)(_task)
        pending, running = deque(jobs), {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    job = pending.popleft()
                    if started(job):
                        options = {"num_cpus": self.threads, "num_gpus": 1 if job.device.startswith("cuda") else 0}
                        if self.memory_limit is not None:
                            options["memory"] = self.memory_limit
                        ref = task.options(**options).remote(job, self.threads, self.timeout, self.memory_limit)
                        running[ref] = (job, time.monotonic())
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in done:
                    job, _ = running.pop(ref)
                    try:
                        yield job, ray.get(ref)
                    except ray.exceptions.RayError as exc:  # its worker died, or Ray lost the task
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        yield job, JobResult(job.key, "failed", error=f"its Ray task failed: {first}")
                for ref, (job, since) in list(running.items()):
                    limit = job_timeout(job, self.timeout)
                    if limit is not None and time.monotonic() - since > limit + GRACE_S:
                        ray.cancel(ref, force=True)
                        running.pop(ref)
                        yield job, JobResult(job.key, "timeout", error=f"its Ray task was cancelled after {limit:g} "
                                                                         f"s and {GRACE_S:g} s of grace: past the timeout")
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if ours:
                ray.shutdown()
