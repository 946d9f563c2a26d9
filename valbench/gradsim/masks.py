"""Dropout masks that do not depend on the device, the batch or the chunking.

The original DVGS shared one dropout mask across a source batch on CPU and drew one
per sample on GPU. valbench draws an independent mask for every sample, at every step,
in every dropout layer, from a counter-based hash: sample i gets a 32-bit seed s_i
from its global id and the run's key (:func:`sample_seeds`, once per run); unit j of a
layer at a step gets a column seed c_j from j and the (run, restart, step, layer) key;
the unit is kept iff hash(s_i ^ c_j) >= p * 2**32, and kept units are scaled by
1 / (1 - p) (inverted dropout, as nn.Dropout). The hash uses only 32-bit integer
arithmetic (wrapping multiply, xor, shift, clamp), so the same masks come out on CPU
and CUDA, for any source batch size, and in every engine (naive, Opacus, fast).
Source sample i has id i; target sample j has id TARGET_ROWS + j, so target and source
masks are independent even when both pass through the model together.

:class:`HashDropout` replaces nn.Dropout in the model being valued; it reads the step
key and the seeds of the samples in the batch from a shared :class:`MaskContext` that
the caller sets before each forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

_M64 = (1 << 64) - 1
TARGET_ROWS = 1 << 40  # id offset of target samples
# Multipliers below 2**31 so that every constant is a valid int32.
_C1, _C2 = 0x7FEB352D, 0x5BD1E995


def mix64(*parts: int) -> int:
    """A splitmix64-style hash of integers (Python side: keys, never per element)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = (h ^ (int(p) & _M64)) & _M64
        h = (h + 0x9E3779B97F4A7C15) & _M64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        h = z ^ (z >> 31)
    return h


def _to_i32(u: int) -> int:
    """An unsigned 32-bit value as the int32 with the same bits."""
    u &= 0xFFFFFFFF
    return u - (1 << 32) if u >= 1 << 31 else u


def _mix32_(h: torch.Tensor) -> torch.Tensor:
    """In-place 32-bit avalanche mix on an int32 tensor (logical shifts emulated by masks)."""
    h ^= (h >> 16) & 0xFFFF
    h.mul_(_C1)
    h ^= (h >> 15) & 0x1FFFF
    h.mul_(_C2)
    h ^= (h >> 16) & 0xFFFF
    return h


def _seed32(values: torch.Tensor, key: int) -> torch.Tensor:
    """A well-mixed int32 per int64 value (>= 0) and 64-bit key (vector-sized work)."""
    v = values.to(torch.int64)
    r = _to_int32_tensor(v & 0xFFFFFFFF)
    r ^= _to_i32(key)
    _mix32_(r)
    r ^= _to_int32_tensor((v >> 32) & 0xFFFFFFFF)
    r ^= _to_i32(key >> 32)
    return _mix32_(r)


def _mix32_np(h: np.ndarray) -> np.ndarray:
    """_mix32_ on uint32 numpy arrays (the same bits; numpy is cheaper for short vectors)."""
    h ^= h >> np.uint32(16)
    h *= np.uint32(_C1)
    h ^= h >> np.uint32(15)
    h *= np.uint32(_C2)
    h ^= h >> np.uint32(16)
    return h


def column_seeds(width: int, key: int) -> np.ndarray:
    """int32 seeds of units 0..width-1 for a step/layer key: equal to
    ``_seed32(arange(width), key)``, computed on the host (same on every device)."""
    r = np.arange(width, dtype=np.uint32) ^ np.uint32(key & 0xFFFFFFFF)
    _mix32_np(r)
    r ^= np.uint32((key >> 32) & 0xFFFFFFFF)  # the ids' high words are 0
    return _mix32_np(r).view(np.int32)


def sample_seeds(ids: torch.Tensor, key: int) -> torch.Tensor:
    """Per-sample int32 dropout seeds for global sample ids (computed once per run)."""
    return _seed32(ids, key)


def keep_mask(key: int, seeds: torch.Tensor, width: int, p: float) -> torch.Tensor:
    """(len(seeds), width) float mask: 1/(1-p) where the unit is kept, else 0.

    Same bits on every device. Element (i, j) hashes the sample's seed s_i and a column
    seed c_j (fully mixed from j and the step/layer ``key``) as ((s_i ^ c_j) * C1,
    xorshift, * C2) and keeps it iff the product, uniform over int32, is >= t with
    t = p * 2**32 - 2**31 (a keep probability exact to 2**-32).
    """
    if seeds.device.type == "cpu":  # a few numpy ops beat a dozen tiny torch ops
        c = torch.from_numpy(column_seeds(width, key))
    else:  # on the device: no host-to-device copy (it would wait for the stream)
        c = _seed32(torch.arange(width, device=seeds.device), key)
    h = seeds[:, None] ^ c
    h.mul_(_C1)  # wrapping int32 multiply
    h ^= h >> 16  # (arithmetic shift: top bit cleared, restored by the next multiply)
    h.mul_(_C2)
    thresh = min(max(int(round(p * 2**32)), 1), 2**32 - 1) - 2**31
    # h >= t as 0/1 without a bool tensor (bool -> float is slow on CPU): clamp to
    # [t - 1, t] and shift; p > 0 here, so t - 1 >= -2**31.
    h.clamp_(thresh - 1, thresh).sub_(thresh - 1)
    return h.to(torch.float32).mul_(1.0 / (1.0 - p))


def _to_int32_tensor(u: torch.Tensor) -> torch.Tensor:
    """int64 tensor of values in [0, 2**32) -> int32 with the same low 32 bits."""
    return torch.where(u >= 1 << 31, u - (1 << 32), u).to(torch.int32)


@dataclass
class MaskContext:
    """What every HashDropout in a model reads: the stream key and the batch's row ids.

    ``enabled=False`` turns dropout off (identity) while the model stays in train mode.
    """

    key: int = 0
    seeds: torch.Tensor | None = None
    enabled: bool = True
    layers: int = field(default=0)

    def layer_key(self, layer: int) -> int:
        return mix64(self.key, layer)


class HashDropout(nn.Module):
    """nn.Dropout with per-sample masks from :func:`keep_mask` (see the module docstring)."""

    chain_kind = "dropout"  # what valbench.training.chain sees in it

    def __init__(self, p: float, context: MaskContext, layer: int):
        super().__init__()
        self.p, self.context, self.layer = float(p), context, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        if not self.active():
            return x
        if self.p >= 1.0:
            return x * 0.0
        if ctx.seeds is None or len(ctx.seeds) != x.shape[0]:
            raise RuntimeError("HashDropout: the mask context's seeds do not match the batch")
        return x * self.mask(x[0].numel()).to(x.dtype).view_as(x)

    def active(self) -> bool:
        """Whether :meth:`forward` would drop anything (train mode, p > 0, dropout enabled)."""
        return self.training and self.p > 0.0 and self.context.enabled

    def mask(self, width: int) -> torch.Tensor:
        """(batch, width) float mask of the current batch and step (0 < p < 1): what
        :meth:`forward` multiplies by."""
        return keep_mask(self.context.layer_key(self.layer), self.context.seeds, width, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def use_hash_dropout(model: nn.Module, context: MaskContext) -> list[str]:
    """Replace every ``nn.Dropout`` of ``model`` in place by a HashDropout sharing ``context``.

    Returns the names of the replaced modules. Other dropout kinds (Dropout2d,
    AlphaDropout, ...) raise ValueError: their masks are not per element.
    """
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Dropout:
                setattr(module, child_name, HashDropout(child.p, context, len(replaced)))
                replaced.append(full)
            elif isinstance(child, nn.modules.dropout._DropoutNd):
                raise ValueError(
                    f"layer '{full}' ({type(child).__name__}) is not supported for per-sample "
                    "dropout masks; use nn.Dropout or value with dropout=false")
    context.layers = len(replaced)
    return replaced
