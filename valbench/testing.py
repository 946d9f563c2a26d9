"""The conformance kit: named checks that a plugin of any kind keeps the contract of
:mod:`valbench.types` (the idea of scikit-learn's ``parametrize_with_checks``).

For a plugin author::

    from valbench.testing import parametrize_with_checks

    @parametrize_with_checks([MyValuer])
    def test_conformance(check):
        check()

or from the shell, on any installed plugin: ``valbench check my-valuer``. Every check
either passes or fails with a message that says what to change. A check the plugin
declares in ``known_failures = {"check-name": "why"}`` is reported as an expected
failure with that reason (pytest: a strict xfail, so a declared failure that starts
passing is reported too); a check that cannot run here (a dataset whose files are not
on this machine) is reported as skipped with the reason. Nothing is silently dropped.

The checks run each plugin with its ``test_params`` (cheap settings) and, for the
"rejected-or-valid" checks, on inputs the harness can hand it: every input must either
be refused cleanly (``validate()`` or ``check(task)`` raising ValueError or TypeError,
which the harness turns into a one-line error) or give a valid result. Numeric
parameters are probed at 0 and -1; other parameters are left to the CLI's type checks.

The tasks the valuer checks use are public, for a plugin's own tests: :func:`easy_task`
(two Gaussian classes, 20% of source labels flipped) and :func:`unsupervised_task`.
"""
from __future__ import annotations

import dataclasses
import json
import traceback
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from valbench.errors import ConfigError, DataError, PluginError
from valbench.plugins import check_plugin_class, constructor_parameters, members, option, parameter_types
from valbench.seeding import rng
from valbench.types import KINDS, Learner, Split, Splits, Truth, Valuation, ValuationTask, readonly

PASSED, FAILED, XFAIL, XPASS, SKIPPED = "passed", "failed", "expected failure", "unexpectedly passed", "skipped"
KIT_SOURCE, KIT_TARGET = 150, 100  # the easy task of the valuer checks: small enough for a test run
REFUSALS = (ValueError, TypeError)  # what validate() and check(task) raise to refuse: the harness's one-line error


class Skip(Exception):
    """A check that cannot run on this machine (the message says why)."""


@dataclass(frozen=True)
class Check:
    """One named check of one plugin class; call it to run it (raises AssertionError)."""

    kind: str
    plugin: str
    name: str
    run: Callable[[], None]
    known_failure: str | None = None

    @property
    def id(self) -> str:
        return f"{self.plugin}:{self.name}"

    def __call__(self) -> None:
        self.run()


@dataclass(frozen=True)
class Outcome:
    check: str
    status: str
    detail: str = ""


# --- Tasks the valuer checks hand out ---------------------------------------------------------

def _blobs(g: np.random.Generator, n: int, n_features: int, balanced: bool = False) -> Split:
    """Two Gaussian classes 2.5 apart; ``balanced``: exactly alternating labels, shuffled."""
    if balanced:
        y = np.arange(n) % 2
        g.shuffle(y)
    else:
        y = g.integers(0, 2, n)
    x = (g.standard_normal((n, n_features)) + 2.5 * y[:, None] / np.sqrt(n_features)).astype(np.float32)
    return Split(x, y.astype(np.int64))


def easy_task(seed: int = 0, n_source: int = 200, n_target: int = 100, n_features: int = 6,
              device: str = "cpu") -> tuple[ValuationTask, np.ndarray]:
    """Two well-separated Gaussian classes; 20% of source labels flipped. Returns (task, mask)."""
    g = rng(seed, "conformance")
    source, target = _blobs(g, n_source, n_features), _blobs(g, n_target, n_features)
    mask = np.zeros(n_source, dtype=np.int8)
    flip = g.choice(n_source, n_source // 5, replace=False)
    mask[flip] = 1
    y = source.y.copy()
    y[flip] = 1 - y[flip]
    task = ValuationTask(Split(source.x, y).frozen(), target.frozen(), 2, Learner("mlp", n_features, 2),
                         "auroc", seed, device)
    return task, mask


def unsupervised_task(seed: int = 0, n_source: int = 120, n_target: int = 60, n_features: int = 6) -> ValuationTask:
    """Reconstruction of correlated features (y = x), a small autoencoder, R^2."""
    g = rng(seed, "conformance-unsupervised")
    mix = g.standard_normal((2, n_features))

    def split(n: int) -> Split:
        x = (g.standard_normal((n, 2)) @ mix + 0.1 * g.standard_normal((n, n_features))).astype(np.float32)
        return Split(x, x.copy()).frozen()

    learner = Learner("mlp-autoencoder", n_features, n_features, hidden=(8,), latent=2, dropout=0.0, norm=False,
                      lr=1e-3, epochs=20, batch_size=64)
    return ValuationTask(split(n_source), split(n_target), None, learner, "r2", seed)


def _with_annotations(cls: type, task: ValuationTask, quality: np.ndarray) -> ValuationTask:
    """Add the annotations the valuer requires: a noisy signal of each sample's quality."""
    names = option(_info(cls, "valuer"), "requires_annotations")
    if not names:
        return task
    g = rng(0, "conformance-annotations")
    notes = {n: readonly(quality + 0.3 * g.standard_normal(len(quality))) for n in names}
    return dataclasses.replace(task, source_annotations=notes)


def _small_task() -> ValuationTask:
    """12 source and 6 target samples: a valuer must refuse it in check() or value it."""
    g = rng(0, "conformance-small")
    return ValuationTask(_blobs(g, 12, 4, True).frozen(), _blobs(g, 6, 4, True).frozen(), 2, Learner("mlp", 4, 2),
                         "auroc", 0)


def _image_task() -> ValuationTask:
    """x of shape (n, 1, 4, 4), as an image dataset gives it (the learner sees 16 features),
    and task.seed 1: a valuer must work for every seed, not only the other tasks' 0."""
    task, _ = easy_task(seed=1, n_source=60, n_target=40, n_features=16)
    shape = lambda s: Split(np.asarray(s.x).reshape(len(s), 1, 4, 4), s.y).frozen()  # noqa: E731
    return dataclasses.replace(task, source=shape(task.source), target=shape(task.target))


# --- Helpers --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Info:  # what valbench.plugins.option needs
    kind: str
    cls: type


def _info(cls: type, kind: str) -> _Info:
    return _Info(kind, cls)


def infer_kind(cls: type) -> str:
    """The plugin kind whose required method ``cls`` has (value, load, apply or score)."""
    for kind in KINDS:
        required = [m.name for m in members(kind).values() if m.method and m.required]
        if all(callable(getattr(cls, r, None)) for r in required):
            return kind
    raise TypeError(f"{getattr(cls, '__qualname__', cls)!r} has none of value(), load(), apply(), score()")


def _params(cls: type, params: dict[str, Any] | None) -> dict[str, Any]:
    return dict(option(_info(cls, infer_kind(cls)), "test_params")) if params is None else dict(params)


def _build(cls: type, params: dict[str, Any]) -> Any:
    plugin = cls(**params)
    if callable(getattr(plugin, "validate", None)):
        plugin.validate()
    return plugin


def _arrays(task: ValuationTask) -> dict[str, np.ndarray]:
    out = {"task.source.x": task.source.x, "task.source.y": task.source.y, "task.target.x": task.target.x,
           "task.target.y": task.target.y}
    out.update({f"task.source_annotations[{k!r}]": v for k, v in task.source_annotations.items()})
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and entries, NaN equal to NaN (a corruption may legitimately make NaN... the
    harness refuses it, but the comparison must not call it randomness)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"))


def _snapshot(task: ValuationTask) -> dict[str, Any]:
    return {"arrays": {k: v.copy() for k, v in _arrays(task).items()}, "keys": sorted(task.source_annotations)}


def _assert_unchanged(cls: type, task: ValuationTask, before: dict[str, Any]) -> None:
    assert sorted(task.source_annotations) == before["keys"], (
        f"{cls.name}: changed the keys of task.source_annotations (now {sorted(task.source_annotations)}); "
        "every valuer of a cell shares it: leave it as it is")
    for key, arr in _arrays(task).items():
        assert not arr.flags.writeable, f"{cls.name}: made {key} writeable; the task's arrays are read-only"
        changed = int((arr != before["arrays"][key]).sum())
        assert not changed, (f"{cls.name}: changed {changed} entries of {key} in place; every valuer of a cell "
                             "shares these arrays: work on a copy")


def _values(cls: type, params: dict[str, Any], task: ValuationTask, check_inputs: bool = True) -> np.ndarray:
    """Run a valuation as the harness does: ``check(task)`` on one instance, then
    ``value(task)`` on a fresh one (state set in check() is not there), and check the
    answer's form and, unless told not to, that the task's inputs are as they were."""
    before = _snapshot(task) if check_inputs else None
    checker = _build(cls, params)
    if callable(getattr(checker, "check", None)):
        checker.check(task)
    out = _build(cls, params).value(task)
    if before is not None:
        _assert_unchanged(cls, task, before)
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


def _refused_or_valid(cls: type, params: dict[str, Any], task: ValuationTask, what: str) -> None:
    """The valuer refuses ``task`` in check() (ValueError or TypeError), or values it validly."""
    plugin = _build(cls, params)
    if callable(getattr(plugin, "check", None)):
        try:
            plugin.check(task)
        except REFUSALS:
            return
    try:
        _values(cls, params, task)
    except AssertionError as exc:
        raise AssertionError(f"with {what}: {exc}; refuse it in check(task) with a ValueError, or handle it") from exc
    except Exception as exc:
        raise AssertionError(f"{cls.name}: check() accepted {what}, but value() raised {_one_line(exc)}; "
                             "refuse it in check(task) with a ValueError, or handle it") from exc


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() > 0 and rb.std() > 0 else 0.0


def _edge_values(annotation: Any) -> list[Any]:
    """Out-of-range candidates for a numeric parameter (0 and -1)."""
    args = typing.get_args(annotation) or (annotation,)
    if int in args:
        return [0, -1]
    if float in args:
        return [0.0, -1.0]
    return []


# --- Checks every kind shares ---------------------------------------------------------------

def _common(kind: str, cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    def registers() -> None:
        from valbench.errors import PluginError

        try:
            check_plugin_class(kind, cls)
        except PluginError as exc:
            raise AssertionError(str(exc)) from None

    def stores_parameters() -> None:
        plugin = cls(**params)
        defaults = {p.name: p.default for p in constructor_parameters(cls)}
        for name, default in defaults.items():
            given = params.get(name, default)
            assert hasattr(plugin, name), f"{cls.name}: parameter '{name}' is not stored as attribute self.{name}"
            assert getattr(plugin, name) is given or getattr(plugin, name) == given, (
                f"{cls.name}: self.{name} is {getattr(plugin, name)!r} after {name}={given!r}; store parameters "
                "unchanged (check them in validate())")

    def validates_defaults() -> None:
        try:
            _build(cls, params)
        except REFUSALS as exc:
            raise AssertionError(f"{cls.name}: validate() refuses its own test parameters {params}: {exc}") from None

    return {"registers": registers, "stores-parameters": stores_parameters, "validates-defaults": validates_defaults}


# --- Valuers --------------------------------------------------------------------------------

def _valuer_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    info = _info(cls, "valuer")

    memo: dict[str, Any] = {}

    def easy() -> tuple[ValuationTask, np.ndarray]:
        if "task" not in memo:
            task, mask = easy_task(n_source=KIT_SOURCE, n_target=KIT_TARGET)
            memo["task"], memo["mask"] = _with_annotations(cls, task, 1.0 - mask), mask
            memo["before"] = _snapshot(memo["task"])
        return memo["task"], memo["mask"]

    def easy_values() -> np.ndarray:
        """The values on the easy task, computed once and shared by the checks below (the
        run and its inputs are checked as the first check that needs them makes it)."""
        if "values" not in memo:
            memo["values"] = _values(cls, params, easy()[0], check_inputs=False)  # inputs-unchanged checks them
        return memo["values"]

    def returns_finite_array() -> None:
        easy_values()

    def deterministic() -> None:
        again = _values(cls, params, easy()[0])
        assert np.array_equal(easy_values(), again), f"{cls.name}: two runs with the same task.seed gave different values"

    def inputs_unchanged() -> None:
        task, _ = easy()
        easy_values()
        _assert_unchanged(cls, task, memo["before"])

    def unsupervised() -> None:
        if option(info, "supervised_only"):
            raise Skip("supervised_only: the harness refuses unsupervised tasks before any work")
        task = _with_annotations(cls, unsupervised_task(), np.ones(120))
        try:  # a refusal in check(task) is a clean one-line error: fine for a setting that needs labels
            _refused_or_valid(cls, params, task, "an unsupervised task (n_classes None, y = x, metric r2)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; or declare supervised_only = True") from exc

    def small_task() -> None:
        _refused_or_valid(cls, params, _with_annotations(cls, _small_task(), np.ones(12)),
                          "a task with 12 source and 6 target samples")

    def image_shaped() -> None:
        task = _image_task()
        _refused_or_valid(cls, params, _with_annotations(cls, task, np.ones(len(task.source))),
                          "image-shaped x (n, 1, 4, 4)")

    def parameter_edges() -> None:
        hints = parameter_types(cls)
        task = _with_annotations(cls, _small_task(), np.ones(12))
        for p in constructor_parameters(cls):
            for bad in _edge_values(hints.get(p.name)):
                trial = {**params, p.name: bad}
                try:
                    _build(cls, trial)
                except REFUSALS:
                    continue
                _refused_or_valid(cls, trial, task, f"{p.name}={bad!r} (validate() let it through)")

    def values_follow_samples() -> None:
        from sklearn.metrics import roc_auc_score

        task, mask = easy()
        v = easy_values()
        perm = rng(0, "conformance-permutation").permutation(len(task.source))
        moved = dataclasses.replace(task, source=task.source.take(perm).frozen(), source_annotations={
            k: readonly(np.asarray(a)[perm]) for k, a in task.source_annotations.items()})
        w = _values(cls, params, moved)
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


# --- Datasets -------------------------------------------------------------------------------

def _dataset_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    def load(seed: int) -> Splits:
        try:
            return _build(cls, params).load(seed)
        except DataError as exc:
            raise Skip(f"its data is not on this machine: {exc}") from None

    def same_seed_same_splits() -> None:
        a, b = load(0), load(0)
        for part in ("source", "target", "test"):
            sa, sb = getattr(a, part), getattr(b, part)
            assert np.array_equal(sa.x, sb.x) and np.array_equal(sa.y, sb.y), (
                f"{cls.name}: load(0) twice gave different {part} sets; draw splits from the seed only")

    def fingerprint_stable() -> None:
        try:
            f1, f2 = _build(cls, params).fingerprint(), _build(cls, params).fingerprint()
        except DataError as exc:
            raise Skip(f"its data is not on this machine: {exc}") from None
        assert isinstance(f1, str) and f1, f"{cls.name}: fingerprint() must be a non-empty string, got {f1!r}"
        assert f1 == f2, f"{cls.name}: fingerprint() differs between two instances with the same parameters"

    def shapes_and_labels() -> None:
        s = load(0)
        assert isinstance(s, Splits), f"{cls.name}: load() returned {type(s).__name__}, not valbench.types.Splits"
        assert len(s.source) and len(s.target), f"{cls.name}: the source and target sets must not be empty"
        shapes = {p: getattr(s, p).x.shape[1:] for p in ("source", "target", "test") if len(getattr(s, p))}
        assert len(set(shapes.values())) == 1, f"{cls.name}: feature shapes differ between splits: {shapes}"
        for part in ("source", "target", "test"):
            split = getattr(s, part)
            assert np.asarray(split.x).dtype.kind == "f", f"{cls.name}: {part}.x has dtype {split.x.dtype}; use float32"
            if s.n_classes is None:
                assert np.shape(split.y) == np.shape(split.x), f"{cls.name}: without labels, {part}.y must be x"
            else:
                y = np.asarray(split.y)
                assert y.dtype.kind in "iu" and y.ndim == 1, f"{cls.name}: {part}.y must be int class indices (n,)"
                assert not len(y) or (y.min() >= 0 and y.max() < s.n_classes), (
                    f"{cls.name}: {part} labels must lie in 0..{s.n_classes - 1}")
        assert s.learner is None or isinstance(s.learner, Learner), f"{cls.name}: Splits.learner must be a Learner"

    def n_classes_consistent() -> None:
        s = load(0)
        if s.n_classes is None:
            return
        assert s.n_classes >= 2, f"{cls.name}: n_classes is {s.n_classes}; a classification task needs >= 2"
        assert len(np.unique(s.target.y)) >= 2, f"{cls.name}: the target set of seed 0 has a single class"
        if s.learner is not None and s.learner.supervised:
            assert s.learner.out_features == s.n_classes, (
                f"{cls.name}: the learner has {s.learner.out_features} outputs for {s.n_classes} classes")

    return {"same-seed-same-splits": same_seed_same_splits, "fingerprint-stable": fingerprint_stable,
            "shapes-and-labels": shapes_and_labels, "n-classes-consistent": n_classes_consistent}


# --- Corruptions ----------------------------------------------------------------------------

def _corruption_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    task, _ = easy_task(n_source=50, n_target=10)
    source = task.source

    def apply(split: Split = source, n_classes: int | None = 2, seed: int = 1) -> tuple[Split, Truth]:
        return _build(cls, params).apply(split, n_classes, np.random.default_rng(seed))

    def valid_output(split: Split, n_classes: int | None) -> None:
        """The input left as it was; the output a source set the harness can hand to valuers."""
        before = split.x.copy(), split.y.copy()
        out, truth = apply(split, n_classes)
        assert not split.x.flags.writeable and not split.y.flags.writeable, f"{cls.name}: made its input writeable"
        assert _same(split.x, before[0]) and _same(split.y, before[1]), (
            f"{cls.name}: changed its input split in place; return a corrupted copy")
        assert isinstance(out, Split) and len(out) == len(split) and np.shape(out.x) == split.x.shape, (
            f"{cls.name}: the corrupted source must be a Split shaped like its input {split.x.shape}")
        x, y = np.asarray(out.x), np.asarray(out.y)
        assert x.dtype.kind == "f" and np.isfinite(x).all(), f"{cls.name}: corrupted features must be finite floats"
        if n_classes is None:
            assert y.shape == x.shape and y.dtype.kind == "f", f"{cls.name}: without labels, y must stay like x"
        else:
            assert y.dtype.kind in "iu" and y.shape == (len(split),) and y.min() >= 0 and y.max() < n_classes, (
                f"{cls.name}: corrupted labels must be int class indices in 0..{n_classes - 1}, got dtype "
                f"{y.dtype}, range {y.min()}..{y.max()}")
        values = np.asarray(truth.values)
        assert isinstance(truth, Truth) and truth.kind == cls.truth_kind, (
            f"{cls.name}: apply() must return Truth(kind={cls.truth_kind!r}, ...), got {truth!r}")
        assert values.shape == (len(split),) and np.isfinite(values).all(), (
            f"{cls.name}: the truth must hold one finite value per source sample, got shape {values.shape}")
        if truth.kind == "mask":
            assert set(np.unique(values)) <= {0, 1}, f"{cls.name}: a mask truth holds 0 and 1 only"

    def uses_only_its_rng() -> None:
        np.random.seed(1)
        a = apply()
        np.random.seed(2)
        b = apply()
        assert _same(a[0].x, b[0].x) and _same(a[0].y, b[0].y) and _same(a[1].values, b[1].values), (
            f"{cls.name}: the same rng gave different corruptions; draw randomness from the rng argument only")

    def supervised_output() -> None:
        valid_output(source, 2)

    def unsupervised() -> None:
        if option(_info(cls, "corruption"), "supervised_only"):
            raise Skip("supervised_only: the harness refuses unsupervised tasks before any work")
        x = np.asarray(source.x)
        valid_output(Split(x, x.copy()).frozen(), None)

    return {"uses-only-its-rng": uses_only_its_rng, "valid-output": supervised_output, "unsupervised": unsupervised}


# --- Metrics --------------------------------------------------------------------------------

def _metric_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    g = rng(0, "conformance-metric")
    n = 60
    if cls.truth_kind == "mask":
        truth = Truth("mask", (np.arange(n) % 5 == 0).astype(np.int8))
    else:
        truth = Truth("noise", g.uniform(0, 3, n))
    perfect = -np.asarray(truth.values, dtype=np.float64)  # low value = corrupted or noisy: the ideal answer

    def score(values: np.ndarray) -> float:
        out = _build(cls, params).score(readonly(values), Truth(truth.kind, readonly(truth.values)))
        assert isinstance(out, (float, np.floating)) and np.isfinite(out), (
            f"{cls.name}: score() must return a finite float, got {out!r}")
        return float(out)

    def orientation_and_extremes() -> None:
        best, worst = score(perfect + 1e-9 * np.arange(n)), score(-perfect + 1e-9 * np.arange(n))
        randoms = [score(g.standard_normal(n)) for _ in range(10)]
        sign = 1 if cls.higher_is_better else -1
        assert sign * (best - worst) > 0, (
            f"{cls.name}: ideal values score {best:.3f} and reversed ones {worst:.3f}; with higher_is_better="
            f"{cls.higher_is_better} the ideal must score {'higher' if sign > 0 else 'lower'}")
        assert all(sign * (best - r) >= 0 and sign * (r - worst) >= 0 for r in randoms), (
            f"{cls.name}: random values scored outside [reversed, ideal] = [{worst:.3f}, {best:.3f}]: {randoms}")

    def deterministic_and_pure() -> None:
        values = g.standard_normal(n)
        before = values.copy()
        assert score(values) == score(values), f"{cls.name}: two calls with the same values scored differently"
        assert np.array_equal(values, before), f"{cls.name}: score() changed its input"

    return {"orientation-and-extremes": orientation_and_extremes, "deterministic-and-pure": deterministic_and_pure}


KIND_CHECKS = {"valuer": _valuer_checks, "dataset": _dataset_checks, "corruption": _corruption_checks,
               "metric": _metric_checks}


def _check_params(cls: type, params: dict[str, Any]) -> None:
    """The kit's parameters (test_params) name constructor parameters and have the types
    the command line would give them; else PluginError (a mistake in the plugin, not a check)."""
    from valbench.params import _coerce

    accepted = {p.name for p in constructor_parameters(cls)}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise PluginError(f"{getattr(cls, 'name', cls)}: test_params names no parameter '{unknown[0]}'; "
                          f"parameters: {', '.join(sorted(accepted)) or '(none)'}")
    hints = parameter_types(cls)
    for key, value in params.items():
        try:
            same = _coerce(value, hints.get(key, Any), f"{cls.name}: test_params[{key!r}]") == value
        except ConfigError as exc:
            raise PluginError(str(exc)) from None
        if not same:
            raise PluginError(f"{cls.name}: test_params[{key!r}] = {value!r} is not of the parameter's type")


def checks(cls: type, params: dict[str, Any] | None = None, kind: str | None = None) -> list[Check]:
    """Every named check of ``kind`` (inferred from the class when None) for ``cls``, built
    with ``params`` (default: its ``test_params``)."""
    kind = kind or infer_kind(cls)
    params = _params(cls, params)
    _check_params(cls, params)
    named = {**_common(kind, cls, params), **KIND_CHECKS[kind](cls, params)}
    known = dict(option(_info(cls, kind), "known_failures"))
    unknown = sorted(set(known) - set(named))
    if unknown:
        raise PluginError(f"{getattr(cls, 'name', cls)}: known_failures names no check '{unknown[0]}'; "
                          f"checks: {', '.join(named)}")
    name = getattr(cls, "name", cls.__qualname__)
    return [Check(kind, name, n, fn, known.get(n)) for n, fn in named.items()]


def run_check(check: Check) -> Outcome:
    """Run one check and say how it went (never raises for a failing plugin)."""
    try:
        check()
    except Skip as exc:
        return Outcome(check.name, SKIPPED, str(exc))
    except Exception as exc:  # a failed assertion, or the plugin raising
        detail = str(exc) if isinstance(exc, AssertionError) and str(exc) else f"raised {_one_line(exc)}"
        if check.known_failure:
            return Outcome(check.name, XFAIL, check.known_failure)
        return Outcome(check.name, FAILED, detail)
    if check.known_failure:
        return Outcome(check.name, XPASS, f"declared as failing ({check.known_failure}) but passes; remove it "
                                          "from known_failures")
    return Outcome(check.name, PASSED)


def check_plugin(cls: type, params: dict[str, Any] | None = None, kind: str | None = None) -> list[Outcome]:
    """Run every check of ``cls``; the outcomes in order (see :func:`run_check`)."""
    return [run_check(c) for c in checks(cls, params, kind)]


def parametrize_with_checks(classes: Iterable[type], params: dict[type, dict[str, Any]] | None = None):
    """A pytest decorator: one test per (plugin, check), ids "name:check"; declared known
    failures are strict xfails with their reason, and a Skip becomes a pytest skip."""
    import pytest

    cases = []
    for cls in classes:
        for c in checks(cls, (params or {}).get(cls)):
            marks = [pytest.mark.xfail(reason=c.known_failure, strict=True)] if c.known_failure else []
            cases.append(pytest.param(_pytest_check(c), id=c.id, marks=marks))
    return pytest.mark.parametrize("check", cases)


def _pytest_check(c: Check) -> Check:
    def run() -> None:
        import pytest

        try:
            c.run()
        except Skip as exc:
            pytest.skip(str(exc))

    return dataclasses.replace(c, run=run)


def check_valuer(cls: type, params: dict[str, Any] | None = None) -> None:
    """Run every valuer check; raise AssertionError listing the failures (known failures excepted)."""
    bad = [o for o in check_plugin(cls, params, "valuer") if o.status in (FAILED, XPASS)]
    assert not bad, "; ".join(f"{o.check}: {o.detail}" for o in bad)
