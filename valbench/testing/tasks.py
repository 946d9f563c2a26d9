"""The tasks the valuer checks hand out; easy_task and unsupervised_task are public, for a
plugin's own tests."""
from __future__ import annotations

import dataclasses

import numpy as np

from valbench.seeding import rng
from valbench.types import Learner, Split, ValuationTask


# --- Tasks the valuer checks hand out ---------------------------------------------------------

def blobs(g: np.random.Generator, n: int, n_features: int, balanced: bool = False) -> Split:
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
    source, target = blobs(g, n_source, n_features), blobs(g, n_target, n_features)
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


def tiny_task() -> ValuationTask:
    """12 source and 6 target samples: a valuer must refuse it in check() or value it."""
    g = rng(0, "conformance-small")
    return ValuationTask(blobs(g, 12, 4, True).frozen(), blobs(g, 6, 4, True).frozen(), 2, Learner("mlp", 4, 2),
                         "auroc", 0)


def image_task() -> ValuationTask:
    """x of shape (n, 1, 4, 4), as an image dataset gives it (the learner sees 16 features),
    and task.seed 1: a valuer must work for every seed, not only the other tasks' 0."""
    task, _ = easy_task(seed=1, n_source=60, n_target=40, n_features=16)
    shape = lambda s: Split(np.asarray(s.x).reshape(len(s), 1, 4, 4), s.y).frozen()  # noqa: E731
    return dataclasses.replace(task, source=shape(task.source), target=shape(task.target))
