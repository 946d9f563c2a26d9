"""The valuer checks: the answer's form, determinism, untouched inputs, every task refused
cleanly or valued validly, values that follow their samples and beat chance."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np

from valbench.plugins import constructor_parameters, option, parameter_types
from valbench.seeding import rng
from valbench.testing.common import (KIT_SOURCE, KIT_TARGET, REFUSALS, Skip, build, edge_values, info_of, one_line,
                                     task_arrays)
from valbench.testing.tasks import easy_task, image_task, tiny_task, unsupervised_task
from valbench.types import Valuation, ValuationTask, readonly


def with_annotations(cls: type, task: ValuationTask, quality: np.ndarray) -> ValuationTask:
    """Add the annotations the valuer requires: a noisy signal of each sample's quality."""
    names = option(info_of(cls, "valuer"), "requires_annotations")
    if not names:
        return task
    g = rng(0, "conformance-annotations")
    notes = {n: readonly(quality + 0.3 * g.standard_normal(len(quality))) for n in names}
    return dataclasses.replace(task, source_annotations=notes)


def snapshot(task: ValuationTask) -> dict[str, Any]:
    return {"arrays": {k: v.copy() for k, v in task_arrays(task).items()}, "keys": sorted(task.source_annotations)}


def assert_unchanged(cls: type, task: ValuationTask, before: dict[str, Any]) -> None:
    assert sorted(task.source_annotations) == before["keys"], (
        f"{cls.name}: changed the keys of task.source_annotations (now {sorted(task.source_annotations)}); "
        "every valuer of a cell shares it: leave it as it is")
    for key, arr in task_arrays(task).items():
        assert not arr.flags.writeable, f"{cls.name}: made {key} writeable; the task's arrays are read-only"
        changed = int((arr != before["arrays"][key]).sum())
        assert not changed, (f"{cls.name}: changed {changed} entries of {key} in place; every valuer of a cell "
                             "shares these arrays: work on a copy")


def run_valuation(cls: type, params: dict[str, Any], task: ValuationTask, check_inputs: bool = True) -> np.ndarray:
    """Run a valuation as the harness does: ``check(task)`` on one instance, then
    ``value(task)`` on a fresh one (state set in check() is not there), and check the
    answer's form and, unless told not to, that the task's inputs are as they were."""
    before = snapshot(task) if check_inputs else None
    checker = build(cls, params)
    if callable(getattr(checker, "check", None)):
        checker.check(task)
    out = build(cls, params).value(task)
    if before is not None:
        assert_unchanged(cls, task, before)
    values = out.values if isinstance(out, Valuation) else out
    where = "Valuation.values" if isinstance(out, Valuation) else "value()"
    assert isinstance(values, np.ndarray), (
        f"{cls.name}: {where} is a {type(values).__name__}; return a numpy float array of one value per source sample")
    assert values.dtype.kind == "f", f"{cls.name}: {where} has dtype {values.dtype}; return floats"
    assert values.shape == (len(task.source),), (
        f"{cls.name}: {where} has shape {values.shape}, expected ({len(task.source)},): one value per source sample")
    bad = int((~np.isfinite(values)).sum())
    assert not bad, f"{cls.name}: {where} has {bad} NaN or infinite values of {len(values)}"
    if isinstance(out, Valuation):
        assert out.fits is None or (isinstance(out.fits, (int, np.integer)) and out.fits >= 0), (
            f"{cls.name}: Valuation.fits must be None or a count >= 0, got {out.fits!r}")
        try:
            json.dumps(dict(out.info))
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{cls.name}: Valuation.info must be JSON-serialisable (it is stored): {exc}") from None
    return values


def refused_or_valid(cls: type, params: dict[str, Any], task: ValuationTask, what: str) -> None:
    """The valuer refuses ``task`` in check() (ValueError or TypeError), or values it validly."""
    plugin = build(cls, params)
    if callable(getattr(plugin, "check", None)):
        try:
            plugin.check(task)
        except REFUSALS:
            return
    try:
        run_valuation(cls, params, task)
    except AssertionError as exc:
        raise AssertionError(f"with {what}: {exc}; refuse it in check(task) with a ValueError, or handle it") from exc
    except Exception as exc:
        raise AssertionError(f"{cls.name}: check() accepted {what}, but value() raised {one_line(exc)}; "
                             "refuse it in check(task) with a ValueError, or handle it") from exc


# --- Valuers --------------------------------------------------------------------------------

def valuer_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    info = info_of(cls, "valuer")

    memo: dict[str, Any] = {}

    def easy() -> tuple[ValuationTask, np.ndarray]:
        if "task" not in memo:
            task, mask = easy_task(n_source=KIT_SOURCE, n_target=KIT_TARGET)
            memo["task"], memo["mask"] = with_annotations(cls, task, 1.0 - mask), mask
            memo["before"] = snapshot(memo["task"])
        return memo["task"], memo["mask"]

    def easy_values() -> np.ndarray:
        """The values on the easy task, computed once and shared by the checks below (the
        run and its inputs are checked as the first check that needs them makes it)."""
        if "values" not in memo:
            memo["values"] = run_valuation(cls, params, easy()[0], check_inputs=False)  # inputs-unchanged checks them
        return memo["values"]

    def returns_finite_array() -> None:
        easy_values()

    def deterministic() -> None:
        again = run_valuation(cls, params, easy()[0])
        assert np.array_equal(easy_values(), again), f"{cls.name}: two runs with the same task.seed gave different values"

    def inputs_unchanged() -> None:
        task, _ = easy()
        easy_values()
        assert_unchanged(cls, task, memo["before"])

    def unsupervised() -> None:
        if option(info, "supervised_only"):
            raise Skip("supervised_only: the harness refuses unsupervised tasks before any work")
        task = with_annotations(cls, unsupervised_task(), np.ones(120))
        try:  # a refusal in check(task) is a clean one-line error: fine for a setting that needs labels
            refused_or_valid(cls, params, task, "an unsupervised task (n_classes None, y = x, metric r2)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; or declare supervised_only = True") from exc

    def small_task() -> None:
        refused_or_valid(cls, params, with_annotations(cls, tiny_task(), np.ones(12)),
                          "a task with 12 source and 6 target samples")

    def image_shaped() -> None:
        task = image_task()
        refused_or_valid(cls, params, with_annotations(cls, task, np.ones(len(task.source))),
                          "image-shaped x (n, 1, 4, 4)")

    def parameter_edges() -> None:
        hints = parameter_types(cls)
        task = with_annotations(cls, tiny_task(), np.ones(12))
        for p in constructor_parameters(cls):
            for bad in edge_values(hints.get(p.name)):
                trial = {**params, p.name: bad}
                try:
                    build(cls, trial)
                except REFUSALS:
                    continue
                refused_or_valid(cls, trial, task, f"{p.name}={bad!r} (validate() let it through)")

    def values_follow_samples() -> None:
        from sklearn.metrics import roc_auc_score

        task, mask = easy()
        v = easy_values()
        perm = rng(0, "conformance-permutation").permutation(len(task.source))
        moved = dataclasses.replace(task, source=task.source.take(perm).frozen(), source_annotations={
            k: readonly(np.asarray(a)[perm]) for k, a in task.source_annotations.items()})
        w = run_valuation(cls, params, moved)
        if np.array_equal(w, v[perm]):
            return
        # Sampling methods may draw differently once the rows move; their values must still
        # find the flipped labels where those rows now are.
        auroc = roc_auc_score(mask[perm], -w)
        assert auroc > 0.6, (f"{cls.name}: with the source rows reordered, the values no longer find the flipped "
                             f"labels (AUROC {auroc:.3f}); value i must belong to source sample i")

    def beats_chance() -> None:
        from sklearn.metrics import roc_auc_score

        auroc = roc_auc_score(easy()[1], -easy_values())
        assert auroc > 0.6, f"{cls.name}: corrupted-label AUROC {auroc:.3f} <= 0.6 on an easy task"

    return {"returns-finite-array": returns_finite_array, "deterministic": deterministic,
            "inputs-unchanged": inputs_unchanged, "unsupervised": unsupervised, "small-task": small_task,
            "image-shaped": image_shaped, "parameter-edges": parameter_edges,
            "values-follow-samples": values_follow_samples, "beats-chance": beats_chance}
