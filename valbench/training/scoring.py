"""How a learner is judged on an evaluation set: the one performance-metric vocabulary
(:data:`valbench.types.PERFORMANCE_METRICS`: "auroc", "accuracy", "r2").

:func:`performance` scores one model's output with scikit-learn; the ``batched_*``
functions score M models at once, so that scoring never becomes the bottleneck of
stacked training (each equals :func:`performance` applied to every model in turn; the
tests check this). ``out`` is (M, n, K) class probabilities or (M, n, d)
reconstructions; batched results are float64 tensors (M,).
"""
from __future__ import annotations

import numpy as np
import torch

from valbench.training.defaults import check_metric, default_metric  # noqa: F401 (re-exported)


def performance(metric: str, y_true: np.ndarray, output: np.ndarray) -> float:
    """Score one model's output (probabilities (n, K) or reconstructions) against the truth."""
    from sklearn.metrics import r2_score, roc_auc_score

    check_metric(metric)
    if metric == "auroc":
        if len(np.unique(y_true)) < 2:
            raise ValueError("AUROC needs both classes in the evaluation set")
        if output.shape[1] == 2:
            return float(roc_auc_score(y_true, output[:, 1]))
        return float(roc_auc_score(y_true, output, multi_class="ovr", labels=np.arange(output.shape[1])))
    if metric == "accuracy":
        return float(np.mean(output.argmax(axis=1) == y_true))
    return float(r2_score(y_true.reshape(len(y_true), -1), output.reshape(len(output), -1),
                          multioutput="variance_weighted"))


def batched_auroc_binary(y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """AUROC of each row of ``scores`` (M, n) against 0/1 labels ``y`` (n,).

    Mann-Whitney form with average ranks, so ties count one half (as scikit-learn's
    trapezoidal ROC area does). Raises ValueError when ``y`` has a single class.
    """
    pos = y.bool()
    n_pos = int(pos.sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes in the evaluation set")
    s = scores.to(torch.float64).contiguous()
    sorted_s, _ = torch.sort(s, dim=1)
    below = torch.searchsorted(sorted_s, s, right=False)  # how many are strictly smaller
    upto = torch.searchsorted(sorted_s, s, right=True)    # how many are smaller or equal
    ranks = (below + upto + 1).to(torch.float64) / 2.0    # 1-based average ranks
    rank_sum = (ranks * pos.to(torch.float64)).sum(dim=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def batched_auroc(y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Binary AUROC on the positive-class probability; for K > 2 the macro average of
    one-vs-rest AUROCs over the classes present in ``y`` (scikit-learn's "ovr")."""
    K = probs.shape[2]
    if K == 2:
        return batched_auroc_binary(y, probs[:, :, 1])
    present = [c for c in range(K) if 0 < int((y == c).sum()) < len(y)]
    if not present:
        raise ValueError("AUROC needs at least two classes in the evaluation set")
    return torch.stack([batched_auroc_binary((y == c), probs[:, :, c]) for c in present]).mean(dim=0)


def batched_accuracy(y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return (probs.argmax(dim=2) == y[None, :]).to(torch.float64).mean(dim=1)


def batched_class_accuracy(y: torch.Tensor, probs: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(M, n_classes): accuracy of each model on the samples of each class (NaN for a
    class absent from ``y``)."""
    correct = (probs.argmax(dim=2) == y[None, :]).to(torch.float64)  # (M, n)
    onehot = torch.nn.functional.one_hot(y.long(), n_classes).to(torch.float64)  # (n, K)
    return (correct @ onehot) / onehot.sum(dim=0)


def batched_r2(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Variance-weighted R^2 over all outputs (scikit-learn's multioutput="variance_weighted")."""
    t = y.reshape(len(y), -1).to(torch.float64)
    o = out.reshape(out.shape[0], out.shape[1], -1).to(torch.float64)
    sse = (o - t[None]).square().sum(dim=(1, 2))
    sst = (t - t.mean(dim=0, keepdim=True)).square().sum()
    return 1.0 - sse / sst


def batched_performance(metric: str, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``metric`` of each of the M models; (M,) float64."""
    check_metric(metric)
    if metric == "auroc":
        return batched_auroc(y, out)
    if metric == "accuracy":
        return batched_accuracy(y, out)
    return batched_r2(y, out)


def empty_set_score(metric: str, y_target: torch.Tensor) -> float:
    """v(empty set): the score of a model that learned nothing (Ghorbani & Zou): 0.5 for
    AUROC, the majority-class rate for accuracy, 0 for R^2 (predicting the mean)."""
    check_metric(metric)
    if metric == "auroc":
        return 0.5
    if metric == "accuracy":
        return float(torch.bincount(y_target).max()) / len(y_target)
    return 0.0
