"""Test-only plugins: valuers that misbehave, to prove the harness isolates them."""
from __future__ import annotations

import numpy as np

from valbench import hookimpl


class Boom:
    name = "boom"

    def __init__(self) -> None:
        pass

    def value(self, task):
        raise RuntimeError("boom on purpose")


class WrongShape:
    name = "wrong-shape"

    def __init__(self) -> None:
        pass

    def value(self, task):
        return np.zeros(len(task.source) + 1)


class NaNValues:
    name = "nan-values"

    def __init__(self) -> None:
        pass

    def value(self, task):
        v = np.zeros(len(task.source))
        v[0] = np.nan
        return v


class Oracle:
    """Cheats through nothing: values = agreement of the label with a nearest-centroid
    classifier fitted on the target set (a legitimate, simple valuer)."""

    name = "centroid"

    def __init__(self, *, sharpness: float = 1.0) -> None:
        self.sharpness = sharpness

    def value(self, task):
        t = task.target
        centroids = np.stack([t.x[t.y == c].mean(axis=0) for c in range(task.n_classes)])
        d = ((task.source.x[:, None, :] - centroids[None]) ** 2).sum(-1)
        return -self.sharpness * d[np.arange(len(d)), task.source.y]


class NeedsBigSource:
    """Has a data-dependent precondition, checked before any work."""

    name = "needs-big-source"

    def __init__(self, *, k: int = 5) -> None:
        self.k = k

    def check(self, task):
        if self.k > len(task.source):
            raise ValueError(f"k={self.k} is larger than the source set ({len(task.source)} samples)")

    def value(self, task):
        return np.zeros(len(task.source))


class Crash:
    """Kills its own process, like the out-of-memory killer would."""

    name = "crash"

    def __init__(self) -> None:
        pass

    def value(self, task):
        import os

        os._exit(9)


class Mutator:
    """Writes into the data it was handed, as a buggy third-party valuer might: through a
    cleared writeable flag (``via=flag``) or torch.from_numpy (``via=torch``)."""

    name = "mutator"

    def __init__(self, *, via: str = "flag") -> None:
        self.via = via

    def value(self, task):
        x = task.source.x
        if self.via == "torch":
            import warnings

            import torch

            with warnings.catch_warnings():  # torch warns about non-writable arrays, and writes anyway
                warnings.simplefilter("ignore", UserWarning)
                torch.from_numpy(x).mul_(0.0)
        else:
            x.flags.writeable = True
            x[:] = 0.0
        return np.zeros(len(task.source))


class Sleepy:
    """Takes its time (to make two runs on one store overlap)."""

    name = "sleepy"

    def __init__(self, *, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def value(self, task):
        import time

        time.sleep(self.seconds)
        return np.zeros(len(task.source))


class Hang:
    """Never returns (a valuer stuck in a loop or a deadlock)."""

    name = "hang"

    def value(self, task):
        import time

        while True:
            time.sleep(1.0)


class Hog:
    """Holds ``mb`` megabytes (a valuer that outgrows its memory limit)."""

    name = "hog"

    def __init__(self, *, mb: int = 600) -> None:
        self.mb = mb

    def value(self, task):
        import time

        block = np.ones(self.mb * 2**20 // 8)  # written, so resident
        time.sleep(30)
        return np.zeros(len(task.source)) + block[0]


class Recorder:
    """Observer plugin: records job hooks."""

    started: list = []
    finished: list = []


@hookimpl
def register_valuers(register):
    for cls in (Boom, WrongShape, NaNValues, Oracle, NeedsBigSource, Crash, Mutator, Sleepy, Hang, Hog):
        register(cls)


@hookimpl
def job_started(job):
    Recorder.started.append(job.key)


@hookimpl
def job_finished(job, result):
    Recorder.finished.append((job.key, result.status))
