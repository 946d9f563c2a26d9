"""One job: load -> split -> corrupt -> value (timed) -> score.

Data preparation is shared by every job of a cell (same dataset, corruption, seed and
mode), so all valuers in a cell see identical arrays. Only ``valuer.value(task)`` is
timed. A valuer that raises or breaks its promise gives a failed result, not a crash.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from valbench.datautil import array_sha256, cached_array
from valbench.errors import ConfigError, DataError, ValuationError
from valbench.plugins import option
from valbench.seeding import derive_seed, rng
from valbench.timing import timed
from valbench.training.defaults import default_learner, default_metric
from valbench.types import (Encoder, Job, JobResult, Learner, PerformanceMetric, Split, Splits, Truth, Valuation,
                            ValuationTask, readonly)


@dataclass(frozen=True)
class PreparedCell:
    """The prepared data of one grid cell, shared by its jobs; arrays are read-only."""

    source: Split
    target: Split
    test: Split
    truth: Truth
    n_classes: int | None
    learner: Learner
    metric: PerformanceMetric
    source_annotations: Mapping[str, np.ndarray] = field(default_factory=dict)
    checksums: Mapping[str, int] = field(default_factory=dict)  # of every array above, taken when prepared

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array a job's plugins are handed, by the name a valuer sees it under."""
        out = {f"task.{part}.{a}": getattr(getattr(self, part), a) for part in ("source", "target", "test")
               for a in ("x", "y")}
        out.update({f"task.source_annotations[{k!r}]": v for k, v in self.source_annotations.items()})
        out["truth.values"] = self.truth.values
        return out

    def changed(self) -> list[str]:
        """The arrays whose content differs from when the cell was prepared."""
        return [k for k, v in self.arrays().items() if checksum(v) != self.checksums.get(k)]


def checksum(a: np.ndarray) -> int:
    """A fast content checksum (CRC-32 of the bytes, no copy for contiguous arrays): enough to
    notice a plugin writing into data it was handed read-only."""
    a = np.ascontiguousarray(a)
    return zlib.crc32(memoryview(a).cast("B")) if a.size else 0


def sealed(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in memory mapped read-only. numpy refuses to make it writeable again,
    and a write through ``torch.from_numpy`` faults instead of changing the data: in a worker
    process that kills the worker, and its job is recorded failed, while every other job of
    the cell keeps the data intact. (The writeable flag alone can be cleared by any plugin.)"""
    a = np.ascontiguousarray(a)
    if a.nbytes == 0 or a.dtype.hasobject:  # nothing to map, or Python objects: the flag must do
        return readonly(a)
    fd = os.memfd_create("valbench-cell", os.MFD_CLOEXEC) if hasattr(os, "memfd_create") \
        else os.dup(tempfile.TemporaryFile().fileno())
    try:
        with open(fd, "wb", closefd=False) as fh:
            fh.write(memoryview(a).cast("B"))
        mapped = mmap.mmap(fd, a.nbytes, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # the mapping keeps the memory alive as long as an array refers to it
    return np.frombuffer(mapped, dtype=a.dtype).reshape(a.shape)


def check_split(s: Split, n_classes: int | None, who: str, part: str) -> None:
    """Raise DataError unless ``s`` has finite features and, with classes, labels in range."""
    if len(s) and not np.isfinite(s.x).all():
        bad = int((~np.isfinite(s.x)).any(axis=tuple(range(1, s.x.ndim))).sum())
        raise DataError(f"{who}: {bad} {part} samples have NaN or infinite features")
    if n_classes is not None and n_classes >= 2 and len(s):
        y = np.asarray(s.y)
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes:
            raise DataError(f"{who}: {part} labels must be integer classes in 0..{n_classes - 1}")


def check_splits(splits: Splits, name: str) -> None:
    """Raise DataError when the data cannot make a valid valuation task."""
    if len(splits.source) == 0:
        raise DataError(f"dataset '{name}': the source set is empty")
    if len(splits.target) == 0:
        raise DataError(f"dataset '{name}': the target set is empty")
    for part in ("source", "target", "test"):
        check_split(getattr(splits, part), splits.n_classes, f"dataset '{name}'", part)
    shapes = {p: getattr(splits, p).x.shape[1:] for p in ("source", "target", "test") if len(getattr(splits, p))}
    if len(set(shapes.values())) > 1:
        raise DataError(f"dataset '{name}': feature shapes differ between splits: {shapes}")
    if splits.n_classes is not None:
        k = splits.n_classes
        if k < 2:
            raise DataError(f"dataset '{name}': a classification task needs at least 2 classes, got {k}")
        present = np.unique(splits.target.y)
        if len(present) < 2:
            raise DataError(
                f"dataset '{name}': the target set has a single class ({present[0]}); "
                "a target set must contain at least two classes"
            )


def encode_split(encoder: Encoder, s: Split, device: str, dataset: str) -> Split:
    """``s`` with its inputs replaced by the encoder's features, cached by content hash
    (the same pixels are encoded once, whichever job asks)."""
    x = cached_array(f"{encoder.key}-{array_sha256(np.asarray(s.x))}",
                     lambda: np.asarray(encoder.encode(np.asarray(s.x), device), dtype=np.float32), "encoded")
    if len(x) != len(s):
        raise DataError(f"dataset '{dataset}': its encoder returned {len(x)} rows for {len(s)} samples")
    if not np.isfinite(x).all():
        raise DataError(f"dataset '{dataset}': its encoder returned NaN or infinite features")
    return Split(x, s.y)


def as_unsupervised(s: Split) -> Split:
    x = np.asarray(s.x, dtype=np.float32)
    return Split(x, x)


class CellCache:
    """Loads each (dataset, seed) once and prepares each cell once, in this process.

    ``seal``: the cell's arrays are copied into read-only memory (:func:`sealed`), as worker
    processes do; in the run's own process (``--in-process``, for debugging) a write through
    torch would crash the run itself, so there the arrays are only flagged read-only and a
    changed array is caught by its checksum after the job."""

    def __init__(self, seal: bool = False) -> None:
        self.seal = seal
        self._splits: dict[tuple, Splits] = {}
        self._cells: dict[tuple, PreparedCell] = {}
        self.scorable: set[tuple] = set()  # (cell, metric) pairs whose truth precheck found scorable

    def splits(self, job: Job) -> Splits:
        k = (job.dataset.name, job.dataset.params, job.seed)
        if k not in self._splits:
            splits = job.dataset.build().load(job.seed)
            check_splits(splits, job.dataset.label)
            self._splits[k] = splits
        return self._splits[k]

    def cell(self, job: Job) -> PreparedCell:
        if job.cell not in self._cells:
            self._cells[job.cell] = self._prepare(job)
        return self._cells[job.cell]

    def _prepare(self, job: Job) -> PreparedCell:
        splits = self.splits(job)
        if job.mode == "supervised" and splits.n_classes is None:
            raise DataError(f"dataset '{job.dataset.label}' has no labels; value it with --mode unsupervised")
        corruption = job.corruption.build()
        n_classes = splits.n_classes if job.mode == "supervised" else None
        source, truth = corruption.apply(splits.source.frozen(), n_classes, rng(job.seed, "corruption", job.corruption.name))
        if len(source) != len(splits.source) or len(truth.values) != len(source):
            raise DataError(f"corruption '{job.corruption.name}' changed the number of source samples")
        check_split(source, n_classes, f"corruption '{job.corruption.label}'", "corrupted source")
        target, test = splits.target, splits.test
        if splits.encoder is not None:  # after the corruption: noise goes into the raw inputs
            source, target, test = (encode_split(splits.encoder, s, job.device, job.dataset.label)
                                    for s in (source, target, test))
        n_features = int(np.prod(source.x.shape[1:]))
        # a dataset's own learner is used in the mode it was made for
        own = splits.learner if splits.learner is not None and splits.learner.supervised == (n_classes is not None) else None
        if job.mode == "unsupervised":
            source, target, test = as_unsupervised(source), as_unsupervised(target), as_unsupervised(test)
            learner = own or default_learner(n_features, None, in_shape=source.x.shape[1:])
        else:
            learner = own or default_learner(n_features, n_classes)
        # one read-only copy shared by every task of the cell: no valuer can change it for the next
        freeze = sealed if self.seal else readonly
        notes = MappingProxyType({k: freeze(np.asarray(v)) for k, v in splits.source_annotations.items()})
        source, target, test = (Split(freeze(s.x), freeze(s.y)) for s in (source, target, test))
        cell = PreparedCell(source, target, test, Truth(truth.kind, freeze(truth.values)),
                            n_classes, learner, default_metric(n_classes), notes)
        return dataclasses.replace(cell, checksums={k: checksum(v) for k, v in cell.arrays().items()})

    def forget(self, job: Job) -> None:
        """Drop the cell of ``job`` and its dataset's loaded splits (prepared again when next
        asked): after a plugin changed them, no later job may see the changed arrays."""
        self._cells.pop(job.cell, None)
        self._splits.pop((job.dataset.name, job.dataset.params, job.seed), None)


def as_valuation(out: Any, n_source: int) -> Valuation:
    """Check a valuer's output: one finite float per source sample."""
    valuation = out if isinstance(out, Valuation) else Valuation(values=out)
    try:
        values = np.asarray(valuation.values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValuationError(f"values are not numeric: {exc}") from None
    if values.shape != (n_source,):
        raise ValuationError(f"values have shape {values.shape}, expected ({n_source},)")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValuationError(f"{bad} of {n_source} values are NaN or infinite")
    return Valuation(values, valuation.fits, valuation.stopped_early, dict(valuation.info))


def task_for(job: Job, cell: PreparedCell) -> ValuationTask:
    return ValuationTask(cell.source, cell.target, cell.n_classes, cell.learner, cell.metric, job.seed, job.device,
                         cell.source_annotations)


def precheck(job: Job, cache: CellCache) -> None:
    """Before any work: the cell's truth can be scored by the job's metrics, the dataset has
    the annotations the valuer requires (``requires_annotations``), and the valuer's
    optional ``check(task)`` (data-dependent checks such as k <= n) passes; each failure is
    a one-line error."""
    cell = cache.cell(job)
    for m in job.metrics:  # a truth the metrics cannot score would fail every job after its valuer ran
        if (job.cell, m.label) in cache.scorable or option(m, "truth_kind") is None:  # once per cell; task
            continue  # metrics (filtering) do not read the truth, and probing them would retrain models
        try:
            if option(m, "check") is not None:
                m.build().check(cell.truth)
            else:
                m.build().score(readonly(rng(job.seed, "metric-probe").standard_normal(len(cell.source))), cell.truth)
        except Exception as exc:
            raise DataError(f"corruption '{job.corruption.label}' on {job.dataset.label} (seed {job.seed}) gives a "
                            f"truth that metric '{m.label}' cannot score: {exc}") from None
        cache.scorable.add((job.cell, m.label))
    required = option(job.valuer, "requires_annotations")
    have = cell.source_annotations
    lacking = [n for n in required if n not in have]
    if lacking:
        raise ConfigError(f"valuer '{job.valuer.label}' needs the per-sample annotation '{lacking[0]}', which "
                          f"dataset '{job.dataset.label}' does not provide (it provides: {', '.join(sorted(have)) or 'none'})")
    if option(job.valuer, "check") is not None:
        try:
            job.valuer.build().check(task_for(job, cache.cell(job)))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"valuer '{job.valuer.label}' cannot value {job.dataset.label}: {exc}") from None


def run_job(job: Job, cache: CellCache) -> JobResult:
    """Run one job; every failure of the valuer or a metric becomes a failed result."""
    import torch  # here: the run's own process prepares cells and prechecks jobs without torch

    cell = cache.cell(job)
    task = task_for(job, cell)
    timing = None
    try:
        valuer = job.valuer.build()
        # Reset the global generators so that a sloppy plugin is still reproducible.
        torch.manual_seed(derive_seed(job.seed, "global"))
        np.random.seed(derive_seed(job.seed, "global") % 2**32)
        out, timing = timed(lambda: valuer.value(task), job.device)
        valuation = as_valuation(out, len(cell.source))
        clock = time.perf_counter()
        scores = score_all(job, cell, task, readonly(valuation.values))
        metric_s = time.perf_counter() - clock
    except Exception as exc:  # isolation: the grid goes on
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if isinstance(exc, ValueError) and "WRITEABLE" in str(exc):
            detail += " (the arrays handed to plugins are read-only and shared by every job of the cell: work on a copy)"
        return _unless_changed(job, cache, cell, JobResult(job.key, "failed", truth=cell.truth, timing=timing,
                                                           error=detail, traceback=traceback.format_exc()))
    return _unless_changed(job, cache, cell, JobResult(job.key, "ok", valuation.values, cell.truth, scores, timing,
                                                       valuation.fits, valuation.stopped_early, dict(valuation.info),
                                                       metric_s=metric_s))


def score_all(job: Job, cell: PreparedCell, task: ValuationTask, values: np.ndarray) -> dict[str, float]:
    """Every metric's score(s) of ``values``: a float under the metric's label, or a mapping
    of named floats (a curve) under '<label>:<name>'. Task metrics also get the task and
    the test split, with the global generators reset so that their retrains are seeded."""
    import torch

    scores: dict[str, float] = {}
    for m in job.metrics:
        try:
            metric = m.build()
            if option(m, "uses_task"):
                torch.manual_seed(derive_seed(job.seed, "metric", m.name))
                out = metric.score(values, cell.truth, task=task, test=cell.test)
            else:
                out = metric.score(values, cell.truth)
            named = {m.label: out} if not isinstance(out, Mapping) else {f"{m.label}:{k}": v for k, v in out.items()}
            for name, value in named.items():
                value = float(value)
                if not np.isfinite(value):
                    raise ValueError(f"score '{name}' is {value}, not a finite number")
                scores[name] = value
        except Exception as exc:
            raise ValuationError(f"metric '{m.label}' failed: {exc}") from exc
    return scores


def _unless_changed(job: Job, cache: CellCache, cell: PreparedCell, result: JobResult) -> JobResult:
    """``result``, unless the job's plugins changed the cell's arrays in place (through a
    cleared writeable flag or torch.from_numpy): then the job fails loudly, and the cell is
    prepared afresh so that no later job sees what this one did."""
    changed = cell.changed()
    if not changed:
        return result
    cache.forget(job)
    return JobResult(job.key, "failed", truth=None, timing=result.timing,
                     error=f"the valuer or a metric changed {', '.join(changed)} in place; arrays handed to plugins "
                           "are shared by every job of the cell and must not be written (work on a copy); this "
                           "result is discarded and the cell's data prepared afresh for the next job")
