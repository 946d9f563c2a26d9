"""Derived seeds: one job seed fans out into independent, named streams.

The split, the corruption and the model initialisation each get their own stream, so
that every valuer in a cell sees identical data and the same initial weights.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported only when a torch generator is asked for: reports run without it
    import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed determined by ``seed`` and the labels (stable across platforms)."""
    text = "/".join([str(int(seed)), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng(seed: int, *labels: object) -> np.random.Generator:
    """A numpy generator for the stream named by ``labels``."""
    return np.random.default_rng(derive_seed(seed, *labels))


def torch_generator(seed: int, *labels: object, device: str = "cpu") -> "torch.Generator":
    """A torch generator for the stream named by ``labels``."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *labels))
    return g
