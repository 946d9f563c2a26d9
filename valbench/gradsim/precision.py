"""The arithmetic of the DVGS engine's passes: ``dtype`` = float32 | tf32 | bf16.

- ``float32`` (default): torch's defaults, unchanged. The similarities are formed in
  float64 from float32 dot products and norms (:mod:`valbench.gradsim.similarity`).
- ``tf32``: CUDA only. For the valuation, float32 matrix products (cuBLAS) and
  convolutions (cuDNN) may use TensorFloat-32 (10-bit mantissa inputs, float32
  accumulation); the flags are restored afterwards, also on error, so no other job of
  the process sees them. On CPU there is no TF32: the values are float32's, bit for bit,
  and the result's ``info["dtype"]`` says so. (torch lets cuDNN convolutions use TF32
  already by default; ``tf32`` adds the matrix products, i.e. every Linear layer.)
- ``bf16``: every step's forward and backward passes (target batch and source chunks)
  run under bfloat16 autocast on the task's device (CPU too): matrix products take
  bfloat16 inputs (8-bit mantissa, relative rounding about 4e-3) and the per-sample
  dot products and norms come out in bfloat16. The loss is computed in float32 (autocast's
  rule), the parameters and Adam's moments stay float32, and the target gradient is
  cast back to float32 before the optimiser step and its norm. So both the training path
  and each similarity change slightly. tests/test_dvgs_dtype.py bounds it: one snapshot's
  cosine similarities within 0.02 of float32's (measured 0.005) and a Spearman rank
  correlation of the values >= 0.995 (measured 0.9997-0.99996). Fast on GPUs with
  bfloat16 units; on CPU it was 1.1-4x slower than float32 here (small models).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

import torch

DTYPES = ("float32", "tf32", "bf16")


@contextmanager
def precision(dtype: str, device: torch.device) -> Iterator[tuple[Callable[[], ContextManager], str]]:
    """For the duration of a valuation: yields (a factory of the per-step context, a note
    for the result's info saying what ran)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "bf16":
        yield (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), "bf16 (autocast)"
    elif dtype == "tf32" and device.type == "cuda":
        # The per-backend flags only (torch.set_float32_matmul_precision would also switch
        # the CPU's oneDNN matmuls), read and restored through the same API: mixing the
        # legacy allow_tf32 flags with these makes torch refuse to report either.
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        saved = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision = conv.fp32_precision = "tf32"
        try:
            yield nullcontext, "tf32"
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
    elif dtype == "tf32":
        yield nullcontext, f"float32 (tf32 has no effect on {device.type}: values unchanged)"
    else:
        yield nullcontext, "float32"
