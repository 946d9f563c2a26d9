"""DVGS's parameters (:class:`DVGSConfig`), torch-free: the ``dvgs`` plugin subclasses them
at import, and loading the plugins must not import torch (valbench.gradsim.dvgs runs it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, kw_only=True)
class DVGSConfig:
    """DVGS settings, the one source of their defaults (the ``dvgs`` plugin is this class
    with a name); the defaults are the paper's exp1 (ADULT; docs/protocol.md)."""

    restarts: int = 3
    epochs: int = 100
    lr: float = 1e-3
    target_batch: int = 500
    source_batch: int = 400  # memory only: per-sample gradients materialised at once
    period: int = 1
    similarity: Literal["cosine", "dot", "projection", "euclidean"] = "cosine"
    class_balance: bool | None = None  # None: follow the task's learner
    parameters: str = "all"
    dropout: bool = True
    engine: Literal["auto", "fast", "opacus", "naive"] = "auto"
    dtype: Literal["float32", "tf32", "bf16"] = "float32"  # see valbench.gradsim.precision

    def validate(self) -> None:
        from valbench.gradsim.precision import DTYPES  # here: the plugin loads without torch
        from valbench.gradsim.similarity import SIMILARITIES

        for name in ("restarts", "epochs", "target_batch", "source_batch", "period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}")
