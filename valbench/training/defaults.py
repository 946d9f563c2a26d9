"""The task's defaults, torch-free: which learner and which performance metric a task gets,
and the check of a metric's name. The run's own process plans with these (and plugins
validate with them) without importing torch; valbench.training.models and
valbench.training.scoring re-export them.
"""
from __future__ import annotations

from valbench.types import PERFORMANCE_METRICS, Learner, PerformanceMetric


def check_metric(metric: str) -> None:
    """Raise ValueError unless ``metric`` is one of the performance metrics."""
    if metric not in PERFORMANCE_METRICS:
        raise ValueError(f"unknown performance metric {metric!r}; use {', '.join(PERFORMANCE_METRICS)}")


def default_metric(n_classes: int | None) -> PerformanceMetric:
    """AUROC for binary tasks, accuracy for multi-class, R^2 for reconstruction."""
    if n_classes is None:
        return "r2"
    return "auroc" if n_classes == 2 else "accuracy"


def default_learner(in_features: int, n_classes: int | None, in_shape: tuple[int, ...] | None = None) -> Learner:
    """The paper's MLP for classification; without labels its conv autoencoder for images
    (``in_shape`` (C, 32, 32)) and its MLP autoencoder (d-250-32) otherwise."""
    if n_classes is None and in_shape is not None and len(in_shape) == 3 and tuple(in_shape[1:]) == (32, 32):
        return Learner("conv-autoencoder", in_features, in_features, hidden=(32, 32), latent=10, dropout=0.0,
                       norm=False, lr=1e-3, epochs=100, batch_size=256, in_shape=tuple(int(d) for d in in_shape))
    if n_classes is None:
        return Learner("mlp-autoencoder", in_features, in_features, hidden=(250,), dropout=0.0,
                       norm=False, lr=1e-3, epochs=300, batch_size=500)
    return Learner("mlp", in_features, n_classes)
