"""DVGS (docs/protocol.md §1): gradient similarities along a target-trained path.

The model is trained on the TARGET set only (Adam). At every ``period``-th step of a
global step counter, before the optimiser step and so at the same parameters, the
target mini-batch gradient g_t is compared with every source sample's own gradient;
a sample's value is the plain mean of its similarities over all snapshots of all
restarts. The model stays in train mode (dropout active, on purpose); dropout masks
are drawn per sample as described in :mod:`valbench.gradsim.masks`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from valbench.errors import ValuationError
from valbench.gradsim.config import DVGSConfig
from valbench.training.adam import Adam
from valbench.gradsim.driver import ChunkState, EngineChoice, activation_bytes, build_engine, choose_engine
from valbench.gradsim.driver import fused_terms, initial_chunk, source_terms
from valbench.gradsim.fast import FastEngine
from valbench.gradsim.engines import select_parameters
from valbench.gradsim.layers import prepare_model
from valbench.gradsim.persample import task_tensors
from valbench.gradsim.precision import precision
from valbench.gradsim.masks import TARGET_ROWS, MaskContext, mix64, sample_seeds
from valbench.gradsim.similarity import similarity
from valbench.training.models import build_model, class_weights, loss_function, tensor
from valbench.seeding import derive_seed, torch_generator
from valbench.types import Valuation, ValuationTask

CHECK_EVERY = 32  # steps between checks for non-finite losses/similarities (one device sync)


@dataclass
class Prepared:
    """A freshly initialised model ready for valuation, and what was decided about it."""

    model: nn.Module
    context: MaskContext
    names: list[str]
    choice: EngineChoice
    dropout_layers: list[str]


def prepare(task: ValuationTask, config: DVGSConfig, restart: int, device: str) -> Prepared:
    """Build restart ``restart``'s model and check it can be valued (ValueError if not).

    Restart 0 starts from the task's shared initialisation (the one every valuer of the
    cell gets); later restarts from their own derived seeds.
    """
    if config.class_balance and not task.supervised:
        raise ValueError("class_balance=true needs labels; unsupervised tasks have none")
    seed = task.seed if restart == 0 else derive_seed(task.seed, "dvgs-restart", restart)
    model = build_model(task.learner, seed, device)
    context, dropout_layers = prepare_model(model, config.dropout)
    names = select_parameters(model, config.parameters)
    probe = tensor(task.source.x[:2], torch.float32, device)
    choice = choose_engine(config.engine, model, names, probe)
    return Prepared(model, context, names, choice, dropout_layers)


@dataclass
class _Run:
    """The data on the device and what accumulates over all restarts."""

    xs: torch.Tensor
    ys: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    seeds: torch.Tensor  # per-sample dropout seeds of the source set
    target_seeds: torch.Tensor
    class_w: torch.Tensor | None  # w_c for the class-balanced target loss, None: plain mean
    per_sample_loss: nn.Module  # the source loss; the target loss is a weighted mean of it
    values: torch.Tensor  # sum of similarities, float64
    trace: torch.Tensor  # per step: loss + ||g_t||^2 + sum of the snapshot (non-finite iff diverged)
    batches: torch.Generator
    mask_key: int
    snapshots: int = 0
    step: int = 0
    chunk: ChunkState | None = None
    buffers: dict = field(default_factory=dict)  # the fused pass' input buffer

    def target_coef(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-row weights of the target batch loss: w_(y_i) / sum_j w_(y_j) (torch's
        weighted-mean cross-entropy), or 1 / batch size."""
        if self.class_w is None:
            return torch.full((len(idx),), 1.0 / len(idx), dtype=self.xt.dtype, device=self.xt.device)
        w = self.class_w[self.yt[idx]]
        return w / w.sum()


def _start(task: ValuationTask, config: DVGSConfig, balance: bool) -> _Run:
    device = torch.device(task.device)
    sets = task_tensors(task)  # unsupervised: y = x, the reconstruction target of a noisy sample is itself
    xs, ys, xt, yt = sets.xs, sets.ys, sets.xt, sets.yt
    weights = None
    if balance:  # the TARGET loss only: w_c = n_target / (K n_target_c)
        weights = torch.as_tensor(class_weights(task.target.y, task.n_classes), device=device)
    n_s, n_t = len(xs), len(xt)
    mask_key = derive_seed(task.seed, "dvgs", "dropout")
    steps = config.restarts * config.epochs * -(-n_t // config.target_batch)
    return _Run(xs, ys, xt, yt, sample_seeds(torch.arange(n_s, device=device), mask_key),
                sample_seeds(TARGET_ROWS + torch.arange(n_t, device=device), mask_key),
                weights, loss_function(task.learner, "none"),
                torch.zeros(n_s, dtype=torch.float64, device=device),
                torch.zeros(steps, dtype=torch.float64, device=device),
                torch_generator(task.seed, "dvgs", "target-batches"), mask_key)


def dvgs(task: ValuationTask, config: DVGSConfig) -> Valuation:
    """DVGS values, one per source sample (higher = more similar to the target task)."""
    config.validate()
    balance = bool(task.learner.class_balance if config.class_balance is None else config.class_balance)
    balance = balance and task.supervised
    run = _start(task, config, balance)
    with warnings.catch_warnings(), precision(config.dtype, run.xs.device) as (compute, dtype_note):
        # Opacus' backward hooks warn on every pass whose first input needs no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for restart in range(config.restarts):
            try:
                prep = prepare(task, config, restart, task.device)
            except ValueError as exc:
                raise ValuationError(f"dvgs: {exc}") from None
            n_selected = _restart(run, prep, config, restart, compute)
    info = {
        "engine": prep.choice.name, "engine_reason": prep.choice.reason,
        "target_pass": "fused with the source pass" if prep.choice.fusable else "separate",
        **({"passes": prep.choice.passes} if prep.choice.name == "fast" else {}),
        "snapshots": run.snapshots,
        "steps": run.step, "similarity": config.similarity, "class_balance": balance,
        "parameters": n_selected, "dropout": "per-sample hash masks" if prep.dropout_layers else "none",
        "chunk": run.chunk.size, "oom_splits": run.chunk.splits, "dtype": dtype_note,
    }
    return Valuation((run.values / run.snapshots).cpu().numpy(), fits=config.restarts, info=info)


def _restart(run: _Run, prep: Prepared, config: DVGSConfig, restart: int, compute) -> int:
    """Train one fresh model on the target set, adding a snapshot every ``period`` steps.
    ``compute()``: the context of each step's passes (bf16 autocast, or nothing).
    Returns the number of parameters compared."""
    model, ctx = prep.model, prep.context
    choice = prep.choice
    engine = build_engine(choice.name, model, run.per_sample_loss, prep.names, ctx, choice.fusable, choice.plan)
    fused = isinstance(engine, FastEngine) and engine.fusable
    if run.chunk is None:
        act = activation_bytes(model, run.xs[:64], ctx)
        run.chunk = ChunkState(initial_chunk(engine, config.source_batch, len(run.xs), act, run.xs.device))
        run.buffers["max_target"] = min(config.target_batch, len(run.xt))
    params = [p for p in model.parameters() if p.requires_grad]
    position = {id(p): k for k, p in enumerate(params)}
    named = dict(model.named_parameters())
    selected = [position[id(named[n])] for n in prep.names]
    opt = Adam(params, config.lr)
    first_step, n_t = run.step, len(run.xt)
    try:
        for _epoch in range(config.epochs):
            order = torch.randperm(n_t, generator=run.batches)  # on the CPU: the same order on every device
            if run.xt.device.type == "cuda":
                order = order.pin_memory().to(run.xt.device, non_blocking=True)
            for start in range(0, n_t, config.target_batch):
                idx = order[start:start + config.target_batch]
                ctx.key = mix64(run.mask_key, restart, run.step)
                snapshot = run.step % config.period == 0
                coef = run.target_coef(idx)
                with compute():
                    if snapshot and fused:  # target batch and source set in one pass
                        loss, grads, dot, sq = fused_terms(engine, run.xt, run.yt, run.target_seeds, idx, coef,
                                                           run.xs, run.ys, run.seeds, selected, run.chunk, run.buffers)
                    else:
                        ctx.seeds = run.target_seeds[idx]
                        loss = (run.per_sample_loss(model(run.xt[idx]), run.yt[idx]) * coef).sum()
                        grads = list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))
                    grads = [g.to(p.dtype) for g, p in zip(grads, params)]  # bf16: Adam and g_t in float32
                    target = [grads[k] for k in selected]
                    if snapshot and not fused:  # at the same parameters, before the optimiser step
                        dot, sq = source_terms(engine, run.xs, run.ys, run.seeds, target, run.chunk)
                check = loss.detach().double()
                if snapshot:
                    target_sq = torch.nn.utils.get_total_norm(target).double().pow(2)
                    snap = similarity(config.similarity, dot, sq, target_sq)
                    run.values += snap
                    run.snapshots += 1
                    check = check + target_sq + snap.sum()
                run.trace[run.step] = check
                opt.step(grads)
                run.step += 1
                if run.step % CHECK_EVERY == 0:
                    _check_finite(run.trace, first_step, run.step, restart, config.lr)
        _check_finite(run.trace, first_step, run.step, restart, config.lr)
    except MemoryError as exc:
        raise ValuationError(f"dvgs: {exc}; the model is too large for this device") from None
    finally:
        engine.close()
    return sum(params[k].numel() for k in selected)


def _check_finite(trace: torch.Tensor, lo: int, hi: int, restart: int, lr: float) -> None:
    """Raise at the first step in [lo, hi) whose loss, target gradient or similarity is not finite."""
    bad = (~torch.isfinite(trace[lo:hi])).nonzero()
    if len(bad):
        step = lo + int(bad[0])
        raise ValuationError(
            f"dvgs: the target loss, its gradient or a similarity became NaN or infinite at step {step} "
            f"(restart {restart + 1}); the training diverged: use a lower lr than {lr:g} (e.g. lr={lr / 10:g})")
