"""The dataset, corruption and metric checks."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from valbench.errors import DataError
from valbench.plugins import option
from valbench.seeding import rng
from valbench.testing.common import Skip, build, info_of, same
from valbench.testing.tasks import easy_task
from valbench.types import Learner, Split, Splits, Truth, readonly


# --- Datasets -------------------------------------------------------------------------------

def dataset_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    def load(seed: int) -> Splits:
        try:
            return build(cls, params).load(seed)
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
            f1, f2 = build(cls, params).fingerprint(), build(cls, params).fingerprint()
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
        if s.encoder is not None:  # the harness encodes after the corruption, in chunks it chooses
            x = np.asarray(s.source.x[:6])
            assert isinstance(getattr(s.encoder, "key", None), str), f"{cls.name}: its encoder needs a string key"
            whole, parts = s.encoder.encode(x), np.concatenate([s.encoder.encode(x[:2]), s.encoder.encode(x[2:])])
            assert np.asarray(whole).dtype.kind == "f" and len(whole) == len(x), (
                f"{cls.name}: encode() must return float features, one row per input row")
            assert np.allclose(whole, parts, rtol=1e-4, atol=1e-5), (
                f"{cls.name}: encode() row i must depend on x[i] only (encoding in two chunks differs)")

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

def corruption_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    task, _ = easy_task(n_source=50, n_target=10)
    source = task.source

    def apply(split: Split = source, n_classes: int | None = 2, seed: int = 1) -> tuple[Split, Truth]:
        return build(cls, params).apply(split, n_classes, np.random.default_rng(seed))

    def valid_output(split: Split, n_classes: int | None) -> None:
        """The input left as it was; the output a source set the harness can hand to valuers."""
        before = split.x.copy(), split.y.copy()
        out, truth = apply(split, n_classes)
        assert not split.x.flags.writeable and not split.y.flags.writeable, f"{cls.name}: made its input writeable"
        assert same(split.x, before[0]) and same(split.y, before[1]), (
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
        assert same(a[0].x, b[0].x) and same(a[0].y, b[0].y) and same(a[1].values, b[1].values), (
            f"{cls.name}: the same rng gave different corruptions; draw randomness from the rng argument only")

    def supervised_output() -> None:
        valid_output(source, 2)

    def unsupervised() -> None:
        if option(info_of(cls, "corruption"), "supervised_only"):
            raise Skip("supervised_only: the harness refuses unsupervised tasks before any work")
        x = np.asarray(source.x)
        valid_output(Split(x, x.copy()).frozen(), None)

    return {"uses-only-its-rng": uses_only_its_rng, "valid-output": supervised_output, "unsupervised": unsupervised}


# --- Metrics --------------------------------------------------------------------------------

def metric_checks(cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    g = rng(0, "conformance-metric")
    n = 60
    kind = getattr(cls, "truth_kind", None)
    uses_task = bool(option(info_of(cls, "metric"), "uses_task"))
    task = test = None
    if uses_task:  # a small easy task: its flipped labels are the truth a good ranking finds
        task, mask = easy_task(n_source=n, n_target=40)
        test, _ = easy_task(seed=1, n_source=40, n_target=2)
        test = test.target
        truth = Truth("mask", mask)
    elif kind == "noise":
        truth = Truth("noise", g.uniform(0, 3, n))
    else:
        truth = Truth(kind or "mask", (np.arange(n) % 5 == 0).astype(np.int8))
    perfect = -np.asarray(truth.values, dtype=np.float64)  # low value = corrupted or noisy: the ideal answer

    def score(values: np.ndarray) -> dict[str, float]:
        metric = build(cls, params)
        args = (readonly(values), Truth(truth.kind, readonly(truth.values)))
        out = metric.score(*args, task=task, test=test) if uses_task else metric.score(*args)
        named = out if isinstance(out, Mapping) else {"": out}
        assert named and all(isinstance(k, str) for k in named), (
            f"{cls.name}: score() must return a finite float or a non-empty mapping of names to floats, got {out!r}")
        for k, v in named.items():
            assert isinstance(v, (float, np.floating)) and np.isfinite(v), (
                f"{cls.name}: score() must return finite floats, got {k or 'the score'} = {v!r}")
        return {k: float(v) for k, v in named.items()}

    def orientation_and_extremes() -> None:
        if uses_task:
            raise Skip("uses_task: what a task metric measures depends on the models it trains; test it on "
                       "a task of your own")
        best, worst = score(perfect + 1e-9 * np.arange(n)), score(-perfect + 1e-9 * np.arange(n))
        randoms = [score(g.standard_normal(n)) for _ in range(10)]
        sign = 1 if cls.higher_is_better else -1
        assert best.keys() == worst.keys() and any(sign * (best[k] - worst[k]) > 0 for k in best), (
            f"{cls.name}: ideal values score {best} and reversed ones {worst}; with higher_is_better="
            f"{cls.higher_is_better} the ideal must score {'higher' if sign > 0 else 'lower'}")
        for k in best:  # each number of a curve lies between the reversed and the ideal ranking
            assert all(sign * (best[k] - r[k]) >= -1e-12 and sign * (r[k] - worst[k]) >= -1e-12 for r in randoms), (
                f"{cls.name}: random values scored {k or 'the score'} outside [reversed, ideal] = "
                f"[{worst[k]:.3f}, {best[k]:.3f}]: {[r[k] for r in randoms]}")

    def deterministic_and_pure() -> None:
        values = g.standard_normal(n)
        before = values.copy()
        if uses_task:  # the harness seeds torch before each call; so does the check
            import torch

            torch.manual_seed(0)
            first = score(values)
            torch.manual_seed(0)
            second = score(values)
        else:
            first, second = score(values), score(values)
        assert first == second, f"{cls.name}: two calls with the same values scored differently"
        assert np.array_equal(values, before), f"{cls.name}: score() changed its input"

    return {"orientation-and-extremes": orientation_and_extremes, "deterministic-and-pure": deterministic_and_pure}
