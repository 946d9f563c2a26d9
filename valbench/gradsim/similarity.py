"""Similarities between the target gradient g_t and per-sample gradients g_i, from
per-sample dot products <g_i, g_t> and squared norms ||g_i||^2 alone.

Every engine computes only those two numbers per sample; the similarity is formed
here, once, in float64, so that all engines share it exactly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: valbench.gradsim exports this module's names without importing torch
    import torch

Similarity = Literal["cosine", "dot", "projection", "euclidean"]
SIMILARITIES: tuple[str, ...] = ("cosine", "dot", "projection", "euclidean")
EPS = 1e-8  # as torch.nn.functional.cosine_similarity: norms are clamped below at EPS


def similarity(kind: str, dot: torch.Tensor, sq: torch.Tensor, target_sq: torch.Tensor) -> torch.Tensor:
    """C(g_t, g_i) for every sample, float64, shape (n,); larger = more similar.

    cosine: <g_i, g_t> / (||g_i|| ||g_t||); dot: <g_i, g_t>; projection: the scalar
    projection <g_i, g_t> / ||g_t||; euclidean: -||g_t - g_i|| (negated distance).
    """
    dot, sq, tsq = dot.double(), sq.double(), target_sq.double()
    if kind == "dot":
        return dot
    t_norm = tsq.sqrt().clamp_min(EPS)
    if kind == "cosine":
        return dot / (sq.sqrt().clamp_min(EPS) * t_norm)
    if kind == "projection":
        return dot / t_norm
    if kind == "euclidean":
        return -(tsq + sq - 2.0 * dot).clamp_min(0.0).sqrt()
    raise ValueError(f"unknown similarity {kind!r}; use one of {', '.join(SIMILARITIES)}")
