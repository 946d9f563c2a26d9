"""Per-sample gradient engines: <g_i, g_t> and ||g_i||^2 for a chunk of source samples.

An engine is bound to one model, a per-sample loss and the selected parameters. Its
``terms(x, y, seeds, target)`` returns, for every sample i of the chunk, the dot product
of sample i's own gradient with ``target`` (one tensor per selected parameter) and the
squared norm of sample i's gradient, both over the selected parameters only, at the
model's current parameters. ``seeds`` are the samples' dropout seeds (int32, from
their global ids, see :mod:`valbench.gradsim.masks`).

- ``naive``: one backward pass per sample; the reference of the tests and benchmark.
- ``opacus``: Opacus' GradSampleModule materialises (chunk, parameters) per-sample
  gradients, then reduces them.
- ``fast`` (:mod:`valbench.gradsim.fast`): exact, without per-sample gradients.

Engines never change ``p.grad`` that the caller relies on: the caller hands the target
gradient to the optimiser itself.
"""
from __future__ import annotations

import re
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from valbench.gradsim.masks import MaskContext

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (out, y) -> (n,)


class UnsupportedModel(ValueError):
    """The model cannot be valued with per-sample gradients (or not by this engine)."""


def check_model(model: nn.Module) -> None:
    """Refuse layers that couple the samples of a batch (per-sample gradients undefined)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise UnsupportedModel(
                f"layer '{name}' ({type(module).__name__}) normalises with batch statistics, so a "
                "sample's gradient depends on the other samples of its batch and per-sample "
                "gradients are undefined; use nn.LayerNorm or nn.GroupNorm instead")


def select_parameters(model: nn.Module, spec: str) -> list[str]:
    """Names of the parameters whose gradients are compared.

    ``all``: every trainable parameter; ``last``: those of the last module that owns
    parameters; anything else is a regular expression searched in parameter names
    (e.g. ``net\\.6\\.`` or ``weight$``).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise UnsupportedModel("the model has no trainable parameters")
    if spec == "all":
        return names
    if spec == "last":
        owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        last = {id(p) for p in owners[-1].parameters(recurse=False)}
        return [n for n, p in model.named_parameters() if id(p) in last and p.requires_grad]
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise UnsupportedModel(f"parameters={spec!r} is not a valid regular expression: {exc}") from None
    chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        raise UnsupportedModel(f"parameters={spec!r} matches no parameter; use all, last, or a regular "
                               f"expression over: {', '.join(names)}")
    return chosen


class Engine:
    """Base: holds the model, loss, selected parameters and the dropout-mask context."""

    name = "engine"
    materialises = True  # holds (chunk, parameters) per-sample gradients

    def __init__(self, model: nn.Module, loss_fn: PerSampleLoss, names: Sequence[str], context: MaskContext):
        params = dict(model.named_parameters())
        self.model, self.loss_fn, self.context = model, loss_fn, context
        self.names = list(names)
        self.params = [params[n] for n in self.names]
        self.n_params = sum(p.numel() for p in self.params)

    def terms(self, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor,
              target: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop state left by a chunk that failed (out of memory) half-way."""

    def close(self) -> None:
        """Remove hooks; the model is usable as before."""


class NaiveEngine(Engine):
    """One forward and backward pass per source sample (the plain reference)."""

    name = "naive"

    def terms(self, x, y, seeds, target):
        n = len(x)
        dot = torch.empty(n, dtype=x.dtype, device=x.device)
        sq = torch.empty(n, dtype=x.dtype, device=x.device)
        for i in range(n):
            self.context.seeds = seeds[i:i + 1]
            loss = self.loss_fn(self.model(x[i:i + 1]), y[i:i + 1]).sum()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            d = s = torch.zeros((), dtype=x.dtype, device=x.device)
            for g, t in zip(grads, target):
                if g is not None:
                    d = d + (g * t).sum()
                    s = s + g.pow(2).sum()
            dot[i], sq[i] = d, s
        return dot, sq


class OpacusEngine(Engine):
    """Opacus' GradSampleModule materialises every selected per-sample gradient of a chunk.

    Opacus records activations only in train mode and with its hooks enabled; the hooks
    are enabled only inside ``terms`` so the target pass is not recorded.
    """

    name = "opacus"

    def __init__(self, model, loss_fn, names, context):
        super().__init__(model, loss_fn, names, context)
        from opacus import GradSampleModule

        try:
            self.gsm = GradSampleModule(model, loss_reduction="sum", batch_first=True, strict=True)
        except NotImplementedError as exc:
            raise UnsupportedModel(f"Opacus cannot compute per-sample gradients for this model: {exc}") from None
        self.gsm.disable_hooks()

    def terms(self, x, y, seeds, target):
        self.context.seeds = seeds
        self.gsm.enable_hooks()
        try:
            loss = self.loss_fn(self.model(x), y).sum()
            with warnings.catch_warnings():  # the first layer's input needs no gradient: expected
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            n = len(x)
            dot = torch.zeros(n, dtype=x.dtype, device=x.device)
            sq = torch.zeros(n, dtype=x.dtype, device=x.device)
            for p, t in zip(self.params, target):
                gs = p.grad_sample
                if gs is None:  # the parameter does not influence the loss
                    continue
                gs = gs.reshape(n, -1)
                dot += gs @ t.reshape(-1)
                sq += gs.pow(2).sum(1)
            return dot, sq
        finally:
            self.gsm.disable_hooks()
            self.reset()

    def reset(self) -> None:
        for module in self.model.modules():
            if hasattr(module, "activations"):
                module.activations = []
            if hasattr(module, "max_batch_len"):
                del module.max_batch_len
        for p in self.model.parameters():
            p.grad = None
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
            if hasattr(p, "_current_grad_sample"):
                del p._current_grad_sample
            if hasattr(p, "_forward_counter"):
                p._forward_counter = 0

    def close(self) -> None:
        self.gsm.cleanup()
