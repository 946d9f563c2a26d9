"""The DVGS fast engine on models that are a plain layer chain, without autograd or hooks.

For the paper's MLP classifier and MLP autoencoder (a chain of Linear layers with
dropout, Mish, ReLU, Tanh or affine-free LayerNorm between them) the engine runs the
hand-written passes of :mod:`valbench.training.chain`: the target gradient and the
per-sample terms follow from each Linear layer's input and backward signal, exactly as in
:class:`~valbench.gradsim.fast.FastEngine`. Whether a model is such a chain is not guessed
from its modules alone: :func:`sequential_plan` runs a few probe rows through the model
and through the chain, with dropout active, and uses the chain only if the outputs agree.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from valbench.gradsim.fast import FastEngine
from valbench.gradsim.masks import HashDropout, MaskContext, sample_seeds
from valbench.training.chain import Masks, NotAChain, Plan, chain_backward, chain_forward, chain_layers, chain_of

PROBE_RTOL = 1e-4  # chain output vs model output on the probe rows (same math, maybe another op order)


def _hash_masks(layers: Plan) -> Masks:
    """The masks the model's own HashDropout layers would draw for the current batch."""
    drops = [m for kind, m in layers if kind == "dropout"]
    return lambda k, width: drops[k].mask(width) if drops[k].active() else None


def sequential_plan(model: nn.Module, probe: torch.Tensor) -> Plan | None:
    """The model as a DVGS chain (see the module docstring), or None when it is not one.

    Needs every trainable parameter in a Linear layer, every Linear layer trainable,
    dropout as HashDropout with p < 1, 2-D input, and the model's output on ``probe``
    (a few input rows) to equal the chain's, dropout active. The model is left as it
    was (mode, mask context).
    """
    try:
        layers = chain_layers(model)
    except NotAChain:
        return None
    if probe.dim() != 2:
        return None
    linears = [m for kind, m in layers if kind == "linear"]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if {id(p) for m in linears for p in m.parameters()} != trainable:  # also: no frozen Linear
        return None
    drops = [m for kind, m in layers if kind == "dropout"]
    if any(type(m) is not HashDropout or m.p >= 1.0 for m in drops):
        return None
    contexts = {id(m.context): m.context for m in drops}
    saved = [(c, c.key, c.seeds) for c in contexts.values()]
    try:
        for c in contexts.values():
            c.key, c.seeds = 12345, sample_seeds(torch.arange(len(probe), device=probe.device), 678)
        with torch.no_grad():
            want = model(probe)
            got, _ = chain_forward(chain_of(layers), probe, _hash_masks(layers))
    except (RuntimeError, TypeError, ValueError):
        return None
    finally:
        for c, key, seeds in saved:
            c.key, c.seeds = key, seeds
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        return None
    scale = want.abs().max().clamp_min(1.0)
    return layers if bool(((want - got).abs().max() <= PROBE_RTOL * scale).item()) else None


class SequentialEngine(FastEngine):
    """:class:`FastEngine` with the hand-written passes, for a :func:`sequential_plan` chain.

    Gives the same values (to float rounding) without module hooks or an autograd graph;
    only the loss is differentiated by autograd (on the model's output), so any
    per-sample loss works.
    """

    def __init__(self, model: nn.Module, loss_fn, names: Sequence[str], context: MaskContext,
                 plan: Plan, fusable: bool = False):
        super().__init__(model, loss_fn, names, context, fusable=fusable)
        for h in self._handles:  # the chain records the layer inputs itself
            h.remove()
        self._handles = []
        self.chain = chain_of(plan)
        self.masks = _hash_masks(plan)
        self.linears = [m for kind, m in plan if kind == "linear"]

    def _signals(self, x, y, seeds, coef, layers):
        self.context.seeds = seeds
        self._records.clear()
        out, saved = chain_forward(self.chain, x, self.masks)
        with torch.enable_grad():
            out.requires_grad_(True)
            per_sample = self.loss_fn(out, y)
            if coef is not None:
                per_sample = per_sample * coef
            (grad,) = torch.autograd.grad(per_sample.sum(), out)
        backs: dict[nn.Module, torch.Tensor] = {}

        def record(j: int, signal: torch.Tensor, inp: torch.Tensor) -> None:
            m = self.linears[j]
            backs[m] = signal
            self._records[m] = (inp, None)  # the layer's input, as the hooks would record it

        chain_backward(self.chain, saved, grad, record)
        mods = [m for m in layers if m in backs]
        return per_sample.detach(), mods, [backs[m] for m in mods]
