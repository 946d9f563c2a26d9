"""Choosing an engine and running it over the whole source set in memory-safe chunks.

Chunk sizes change memory and speed, never values: dropout masks are keyed by global
sample ids, and every sample's terms depend on that sample alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from valbench.gradsim.engines import Engine, NaiveEngine, OpacusEngine, PerSampleLoss, UnsupportedModel
from valbench.gradsim.fast import FastEngine, unsupported
from valbench.gradsim.masks import MaskContext
from valbench.gradsim.sequential import Plan, SequentialEngine, sequential_plan

ENGINES = ("auto", "fast", "opacus", "naive")
# Cap on one chunk's working memory on CPU. Small on purpose: glibc serves allocations
# above 32 MiB with fresh mmap pages and unmaps them on free, so with bigger chunks every
# pass page-faults its tensors in again (measured: MLP 100k source 452 -> 298 ms per
# step, autoencoder 10k 344 -> 263 ms, going from 256 to 32 MiB).
CPU_CHUNK_BYTES = 32 * 2**20
CUDA_FREE_FRACTION = 0.25  # start chunks at this share of free device memory


@dataclass(frozen=True)
class EngineChoice:
    name: str  # "fast" | "opacus" | "naive"
    reason: str  # why (e.g. the layer that made "auto" fall back)
    fusable: bool = False  # fast engine only: every trainable layer handled, the target pass can ride along
    plan: Plan | None = None  # fast engine only: the model as a plain layer chain (hand-written passes)

    @property
    def passes(self) -> str:
        """How the fast engine runs its passes (recorded with the result)."""
        return "hand-written (plain layer chain)" if self.plan is not None else "autograd with module hooks"


def choose_engine(kind: str, model: nn.Module, names: Sequence[str], probe_x: torch.Tensor) -> EngineChoice:
    """Resolve ``auto`` (fast where it applies, else Opacus); refuse ``fast`` where it cannot work."""
    if kind not in ENGINES:
        raise UnsupportedModel(f"unknown engine {kind!r}; use one of {', '.join(ENGINES)}")
    if kind in ("opacus", "naive"):
        return EngineChoice(kind, "requested")
    why = unsupported(model, names, probe=probe_x)
    if why is None:
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        fusable = unsupported(model, trainable, probe=probe_x) is None
        plan = sequential_plan(model, probe_x) if fusable else None
        return EngineChoice("fast", "requested" if kind == "fast" else "default", fusable, plan)
    if kind == "fast":
        raise UnsupportedModel(f"engine=fast cannot be used: {why}; use engine=auto or engine=opacus")
    return EngineChoice("opacus", f"fallback: {why}")


def build_engine(name: str, model: nn.Module, loss_fn: PerSampleLoss, names: Sequence[str],
                 context: MaskContext, fusable: bool = False, plan: Plan | None = None) -> Engine:
    """``plan`` (fast engine only, from :func:`sequential_plan`): use the hand-written passes."""
    if name == "fast" and plan is not None:
        return SequentialEngine(model, loss_fn, names, context, plan, fusable=fusable)
    if name == "fast":
        return FastEngine(model, loss_fn, names, context, fusable=fusable)
    return {"opacus": OpacusEngine, "naive": NaiveEngine}[name](model, loss_fn, names, context)


def activation_bytes(model: nn.Module, x: torch.Tensor, context: MaskContext) -> int:
    """Rough bytes per sample that one forward + backward pass holds: every leaf module's
    output, twice (kept for backward, and its gradient), plus the input."""
    total = 0

    def add(m, i, o):
        nonlocal total
        if isinstance(o, torch.Tensor):
            total += o.numel() * o.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(add) for m in leaves]
    try:
        context.seeds = torch.zeros(len(x), dtype=torch.int32, device=x.device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return max(1, (2 * total + x.numel() * x.element_size()) // len(x))


def initial_chunk(engine: Engine, source_batch: int, n: int, act_bytes: int, device: torch.device) -> int:
    """Samples per chunk. Materialising engines take ``source_batch`` (the paper's memory
    knob) capped by the memory limit; the fast engine, holding only activations, takes
    as many samples as fit in the limit (CPU: 32 MiB; CUDA: a quarter of free memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        limit = int(free * CUDA_FREE_FRACTION)
    else:
        limit = CPU_CHUNK_BYTES
    itemsize = engine.params[0].element_size() if engine.params else 4
    per_sample = act_bytes + (engine.n_params * itemsize if engine.materialises else 0)
    fits = max(1, limit // per_sample)
    chunk = min(source_batch, fits) if engine.materialises else fits
    return int(max(1, min(n, chunk)))


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class ChunkState:
    size: int
    splits: int = 0  # how often a chunk was halved after running out of memory


def _shrink(exc: Exception, engine: Engine, state: ChunkState, device: torch.device) -> None:
    """After an out-of-memory error: clean up and halve the chunk (or give up at 1)."""
    if not is_oom(exc):
        raise exc
    engine.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if state.size == 1:
        raise MemoryError("out of memory with a single source sample per chunk") from None
    state.size = max(1, state.size // 2)
    state.splits += 1


def source_terms(engine: Engine, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor,
                 target: Sequence[torch.Tensor], state: ChunkState, start: int = 0,
                 out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot, sq) for every source sample from ``start`` on, chunk by chunk; a chunk that
    runs out of memory is retried at half the size, and the smaller size is kept."""
    n = len(x)
    dot, sq = out if out is not None else (torch.empty(n, dtype=x.dtype, device=x.device),
                                           torch.empty(n, dtype=x.dtype, device=x.device))
    while start < n:
        stop = min(start + state.size, n)
        try:
            d, s = engine.terms(x[start:stop], y[start:stop], seeds[start:stop], target)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            _shrink(exc, engine, state, x.device)
            continue
        dot[start:stop], sq[start:stop] = d, s
        start = stop
    return dot, sq


class FusedInput:
    """Rows [target batch; first source chunk] in one preallocated buffer: the source
    chunk is copied in once, and each step writes only its target rows in front of it
    (the target region is right-aligned, so a short last batch stays contiguous)."""

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, seeds: torch.Tensor, max_target: int, first: int):
        self.unsupervised = ys is xs  # y = x: the buffer is its own reconstruction target
        self.m, self.first = max_target, first
        self.x = torch.cat([xs[:1].expand(max_target, *xs.shape[1:]), xs[:first]])
        self.y = self.x if self.unsupervised else torch.cat([ys[:1].expand(max_target, *ys.shape[1:]), ys[:first]])
        self.seeds = torch.cat([seeds[:1].expand(max_target), seeds[:first]])
        self.coef = torch.ones(max_target + first, dtype=xs.dtype, device=xs.device)

    def fill(self, xt: torch.Tensor, yt: torch.Tensor, seeds_t: torch.Tensor, idx: torch.Tensor,
             coef_t: torch.Tensor) -> slice:
        """Write target rows ``idx`` and their loss coefficients; returns the rows to use."""
        k = len(idx)
        lo = self.m - k
        torch.index_select(xt, 0, idx, out=self.x[lo:self.m])
        if not self.unsupervised:
            torch.index_select(yt, 0, idx, out=self.y[lo:self.m])
        torch.index_select(seeds_t, 0, idx, out=self.seeds[lo:self.m])
        self.coef[lo:self.m] = coef_t
        return slice(lo, None)


def fused_terms(engine: FastEngine, xt: torch.Tensor, yt: torch.Tensor, seeds_t: torch.Tensor, idx: torch.Tensor,
                coef_t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, selected: Sequence[int],
                state: ChunkState, buffers: dict) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The target batch (rows ``idx`` of xt, loss coefficients ``coef_t``) rides along with
    the first source chunk: one forward and one backward pass. Returns (target loss,
    target gradient of every trainable parameter, dot, sq), the terms taken against the
    selected part of the target gradient. ``buffers`` caches the FusedInput."""
    n, nt = len(x), len(idx)
    while True:
        first = min(state.size, n)
        buf = buffers.get("fused")
        try:
            if buf is None or buf.first != first or buf.m < nt:
                buffers["fused"] = buf = None  # free the old one first
                buffers["fused"] = buf = FusedInput(x, y, seeds, max(nt, buffers.get("max_target", nt)), first)
            rows = buf.fill(xt, yt, seeds_t, idx, coef_t)
            loss, grads, d, s = engine.fused_step(buf.x[rows], buf.y[rows], buf.seeds[rows], buf.coef[rows], nt)
            break
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            buffers["fused"] = buf = None
            _shrink(exc, engine, state, x.device)
    if first == n:  # the whole source set rode along
        return loss, grads, d, s
    dot = torch.empty(n, dtype=d.dtype, device=d.device)
    sq = torch.empty_like(dot)
    dot[:first], sq[:first] = d, s
    source_terms(engine, x, y, seeds, [grads[k] for k in selected], state, first, (dot, sq))
    return loss, grads, dot, sq
