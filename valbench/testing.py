"""The conformance kit plugin authors run on their valuers (like scikit-learn's
``check_estimator``): ``check_valuer(MyValuer)`` raises AssertionError on a broken
contract. It checks the name, construction, one finite value per source sample,
determinism for a seed, that inputs are not modified, and, unless
``beats_chance=False``, a corrupted-label AUROC above ``min_auroc`` on an easy task.
A valuer that declares ``requires_annotations = ("name", ...)`` gets, for each name, a
per-source-sample annotation that tracks sample quality (1 for clean, 0 for corrupted,
plus noise), as a dataset providing that annotation would.
A valuer whose defaults are too slow for a test run (thousands of model fits) declares
small settings in a class attribute ``test_params`` (a dict; the idea of benchopt's
``test_config``); they are used when ``params`` is not given.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from valbench.plugins import NAME_RE, check_plugin_class
from valbench.runner import as_valuation
from valbench.seeding import rng
from valbench.types import Split, ValuationTask, readonly


def easy_task(seed: int = 0, n_source: int = 200, n_target: int = 100, n_features: int = 6,
              device: str = "cpu") -> tuple[ValuationTask, np.ndarray]:
    """Two well-separated Gaussian classes; 20% of source labels flipped. Returns (task, mask)."""
    from valbench.types import Learner

    g = rng(seed, "conformance")
    def blobs(n: int) -> Split:
        y = g.integers(0, 2, n)
        x = (g.standard_normal((n, n_features)) + 2.5 * y[:, None] / np.sqrt(n_features)).astype(np.float32)
        return Split(x, y.astype(np.int64))
    source, target = blobs(n_source), blobs(n_target)
    mask = np.zeros(n_source, dtype=np.int8)
    flip = g.choice(n_source, n_source // 5, replace=False)
    mask[flip] = 1
    y = source.y.copy()
    y[flip] = 1 - y[flip]
    task = ValuationTask(Split(source.x, y).frozen(), target.frozen(), 2, Learner("mlp", n_features, 2),
                         "auroc", seed, device)
    return task, mask


def check_valuer(cls: type, params: dict[str, Any] | None = None, *, beats_chance: bool = True,
                 min_auroc: float = 0.6) -> None:
    from sklearn.metrics import roc_auc_score

    check_plugin_class("valuer", cls)
    assert NAME_RE.match(cls.name)
    params = dict(getattr(cls, "test_params", {})) if params is None else params
    task, mask = easy_task()
    required = tuple(getattr(cls, "requires_annotations", ()) or ())
    if required:
        g = rng(0, "conformance-annotations")
        notes = {n: readonly(1.0 - mask + 0.3 * g.standard_normal(len(mask))) for n in required}
        task = dataclasses.replace(task, source_annotations=notes)
    x_before, y_before = task.source.x.copy(), task.source.y.copy()
    v1 = as_valuation(cls(**params).value(task), len(task.source)).values
    v2 = as_valuation(cls(**params).value(task), len(task.source)).values
    assert np.array_equal(v1, v2), f"{cls.name}: values differ between two runs with the same seed"
    assert np.array_equal(task.source.x, x_before) and np.array_equal(task.source.y, y_before)
    if beats_chance:
        auroc = roc_auc_score(mask, -v1)
        assert auroc > min_auroc, f"{cls.name}: corrupted-label AUROC {auroc:.3f} <= {min_auroc} on an easy task"
