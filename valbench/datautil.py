"""Helpers dataset plugins share: content hashes, sampling splits, min-max scaling."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from valbench.errors import DataError


def sha256_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()


def cache_dir() -> Path:
    """valbench's data cache: $VALBENCH_CACHE, else $XDG_CACHE_HOME/valbench, else ~/.cache/valbench."""
    if os.environ.get("VALBENCH_CACHE"):
        return Path(os.environ["VALBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "valbench"


def take(perm: np.ndarray, sizes: list[int | None], what: list[str], dataset: str) -> list[np.ndarray]:
    """Consecutive blocks of a permutation; a size of None takes all that is left."""
    out, start = [], 0
    for size, name in zip(sizes, what):
        left = len(perm) - start
        n = left if size is None else size
        if n > left:
            raise DataError(f"dataset '{dataset}': asked for {n} {name} samples but only {left} are left in the pool")
        out.append(perm[start:start + n])
        start += n
    return out


def minmax_together(*arrays: np.ndarray) -> list[np.ndarray]:
    """Scale every array with one min-max scaler fitted on all of them together."""
    stacked = np.concatenate([a for a in arrays if len(a)], axis=0)
    with warnings.catch_warnings():  # NaN stays where it was; the harness reports it
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return [((a - lo) / span).astype(np.float32) for a in arrays]
