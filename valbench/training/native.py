"""valbench's native extension for the paper's MLP, built on first use.

- ``train_epoch`` (``native_flat.cpp``): the flat MLP trainer's epoch in one call. A DVRL
  outer iteration trains the MLP for 400 Adam steps on ~128 rows each; in Python each
  step is ~50 dispatched tensor ops, and their overhead, not the arithmetic, sets the
  time. Natively: ATen's matrix products (the same kernels), everything between them
  fused into single passes over memory.
- ``stacked_grads`` (``native_stacked.cpp``): batched training's gradients for M stacked
  copies, where the activations outgrow the cache and the element-wise passes over them,
  not dispatch, cost the time; it makes as few passes as it can.

Both share the row kernels of ``native_rows.h``.

It is compiled with torch's C++ extension builder (a C++ compiler and ninja, as
torch.compile on CPU needs too) into torch's extension cache (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``), once per machine: ~20-60 s the first time, a
fraction of a second after that. The build is keyed by the source, the compiler flags and
the CPU model, because ``-march=native`` code may not run on another CPU sharing that cache.
When it cannot be built (no compiler, say), :func:`load` returns None and says why in
:func:`unavailable_reason`; the trainer then runs its Python step (the same training,
slower). ``VALBENCH_NATIVE=0`` turns it off.
"""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = [HERE / "native_flat.cpp", HERE / "native_stacked.cpp"]
HEADERS = [HERE / "native_rows.h"]
LDFLAGS = ["-fopenmp"]
_state: dict[str, object] = {}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "CPU part")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flags() -> list[str]:
    # fast-math: the vectorised exp (libmvec) in the fused loops; -fopenmp: at::parallel_for
    # runs on torch's own OpenMP threads (the same libgomp.so.1, already loaded by torch)
    flags = ["-O3", "-ffast-math", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def enabled() -> bool:
    """False when ``VALBENCH_NATIVE=0`` (the Python step everywhere)."""
    return os.environ.get("VALBENCH_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def load():
    """The built extension module (``train_epoch``), or None when it cannot be built or is off."""
    if not enabled():
        _state.setdefault("reason", "VALBENCH_NATIVE=0")
        return None
    if "module" not in _state:
        _state["module"] = None
        try:
            from torch.utils.cpp_extension import load as build

            flags = _flags()
            code = b"".join(f.read_bytes() for f in SOURCES + HEADERS)
            key = hashlib.sha256(code + repr((flags, LDFLAGS, _cpu_model())).encode()).hexdigest()[:12]
            _state["module"] = build(name=f"valbench_native_{key}", sources=[str(f) for f in SOURCES],
                                     extra_cflags=flags, extra_ldflags=LDFLAGS, extra_include_paths=[str(HERE)],
                                     verbose=False)
        except Exception as exc:  # any build failure: the Python step runs instead, and info says why
            _state["reason"] = _first_error(exc)
    return _state["module"]


def _first_error(exc: Exception) -> str:
    """One line for a failed build: the compiler's first error, else the exception's first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "error:" in ln), lines[0] if lines else "")
    return f"{type(exc).__name__}: {hit}"[:300]


def unavailable_reason() -> str | None:
    """Why :func:`load` returned None (None if it has not, or has not been called)."""
    return _state.get("reason")  # type: ignore[return-value]
