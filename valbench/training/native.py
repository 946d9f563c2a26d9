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

It is compiled with torch's C++ extension builder (a C++ compiler and ``ninja`` on the
PATH) into torch's extension cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), once per machine: ~20-60 s the first time, a fraction of a
second after that. The build is keyed by the source, the compiler flags and the CPU (model
and instruction-set flags), because ``-march=native`` code may not run on another CPU
sharing that cache. A build lock left by a killed build (torch waits on it forever) is
removed once it is older than any build takes. When the extension cannot be built (no
compiler or no ninja, say), :func:`load` returns None and :func:`unavailable_reason` says
why in one line; the callers then run their Python passes (the same training, slower).
``VALBENCH_NATIVE=0`` turns it off.
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


STALE_LOCK_S = 600  # a build lock older than this was left by a killed build (builds take ~20-60 s)


def mlp_plan(spec: tuple[tuple, ...]) -> tuple[list[float], bool, float] | None:
    """(dropout p per hidden layer, 0 = none; norm; LayerNorm eps) when the layer sequence
    ``spec`` (valbench.training.chain.chain_spec) is the MLP the extension trains,
    [Linear -> (Dropout) -> Mish -> (LayerNorm)] x H -> Linear, with the same norm setting
    and one eps in every hidden layer; else None."""
    drops, norms, i = [], [], 0
    while i < len(spec) - 1:
        if spec[i][0] != "linear":
            return None
        i += 1
        p = spec[i][1] if spec[i][0] == "dropout" else 0.0
        i += spec[i][0] == "dropout"
        if i >= len(spec) or spec[i][0] != "mish":
            return None
        i += 1
        norms.append(i < len(spec) and spec[i][0] == "layernorm")
        i += norms[-1]
        drops.append(p)
    eps = {s[1] for s in spec if s[0] == "layernorm"}
    if i != len(spec) - 1 or spec[i][0] != "linear" or len(set(norms)) > 1 or len(eps) > 1:
        return None
    return drops, bool(norms and norms[0]), eps.pop() if eps else 1e-5


def _cpu() -> str:
    """The CPU model and its instruction-set flags (what -march=native compiles for)."""
    try:
        keep = [line for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith(("model name", "Model", "CPU part", "flags", "Features"))]
        return "\n".join(dict.fromkeys(keep))  # one line each (the same for every core)
    except OSError:
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
        return None
    if "module" not in _state:
        _state["module"] = None
        try:
            from torch.utils.cpp_extension import load as build

            flags = _flags()
            code = b"".join(f.read_bytes() for f in SOURCES + HEADERS)
            name = f"valbench_native_{hashlib.sha256(code + repr((flags, LDFLAGS, _cpu())).encode()).hexdigest()[:12]}"
            _remove_stale_lock(name)
            _state["module"] = build(name=name, sources=[str(f) for f in SOURCES], extra_cflags=flags,
                                     extra_ldflags=LDFLAGS, extra_include_paths=[str(HERE)], verbose=False)
        except Exception as exc:  # any build failure: the Python passes run instead, and info says why
            _state["reason"] = _first_error(exc)
    return _state["module"]


def _remove_stale_lock(name: str) -> None:
    """torch's builder waits without end while its build directory holds a ``lock`` file; a
    build killed mid-way (a job over its time limit) leaves one behind."""
    import time

    from torch.utils.cpp_extension import _get_build_directory  # private, hence the guard below

    lock = Path(_get_build_directory(name, False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
    except FileNotFoundError:
        pass


# lines of a failed build's output that name its cause: the compiler's first error, or the
# shell's word that the compiler or ninja was not found
_CAUSES = ("error:", "not found", "No such file", "is required", "not available")


def _first_error(exc: Exception) -> str:
    """One line for a failed build: the line that names its cause, else the exception's first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if any(c in ln for c in _CAUSES)), lines[0] if lines else "")
    return f"{type(exc).__name__}: {hit}"[:300]


def unavailable_reason() -> str | None:
    """Why :func:`load` returned None (None if it has not, or has not been called)."""
    return _state.get("reason")  # type: ignore[return-value]
