"""The workers' fork server: started as early as possible, because its imports (torch,
~2 s of CPU here) are what the first job waits for.

Light on purpose (the standard library only): ``valbench run`` starts the server before
it imports anything else (numpy, the plugins, the data), so the server's imports run on
another core while this process plans the run. :mod:`valbench.executors` forks every
worker from it.
"""
from __future__ import annotations

import multiprocessing as mp

# what the server imports once, so that each forked worker starts with it loaded
WORKER_PRELOAD = ["torch", "valbench.runner", "valbench.training.models", "valbench.training.scoring"]


def worker_context() -> mp.context.BaseContext:
    """The workers' start method: a fork server that has imported torch, valbench.runner and
    the shared learner's modules once, else spawn."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the fork server now, without waiting for it (a no-op once it runs): starting
    the first worker waits until the server's imports are done."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
