"""Scores of M models at once on one evaluation set, so that scoring never becomes the
bottleneck of batched training. Each function equals :func:`valbench.models.performance`
applied to every model in turn (tests check this against scikit-learn).

``out`` is (M, n, K) class probabilities or (M, n, d) reconstructions; the result is a
float64 tensor (M,).
"""
from __future__ import annotations

import torch


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


def batched_r2(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Variance-weighted R^2 over all outputs (scikit-learn's multioutput="variance_weighted")."""
    t = y.reshape(len(y), -1).to(torch.float64)
    o = out.reshape(out.shape[0], out.shape[1], -1).to(torch.float64)
    sse = (o - t[None]).square().sum(dim=(1, 2))
    sst = (t - t.mean(dim=0, keepdim=True)).square().sum()
    return 1.0 - sse / sst


def batched_performance(metric: str, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``metric`` ("auroc", "accuracy", "r2") of each of the M models; (M,) float64."""
    if metric == "auroc":
        return batched_auroc(y, out)
    if metric == "accuracy":
        return batched_accuracy(y, out)
    if metric == "r2":
        return batched_r2(y, out)
    raise ValueError(f"unknown performance metric {metric!r}; use auroc, accuracy or r2")


def empty_set_score(metric: str, y_target: torch.Tensor) -> float:
    """v(empty set): the score of a model that learned nothing (Ghorbani & Zou): 0.5 for
    AUROC, the majority-class rate for accuracy, 0 for R^2 (predicting the mean)."""
    if metric == "auroc":
        return 0.5
    if metric == "accuracy":
        return float(torch.bincount(y_target).max()) / len(y_target)
    if metric == "r2":
        return 0.0
    raise ValueError(f"unknown performance metric {metric!r}; use auroc, accuracy or r2")
