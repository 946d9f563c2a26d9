"""Hand-written forward and backward passes for models that are a plain layer chain.

Most models valued or retrained here (the paper's MLP classifier and MLP autoencoder)
are a chain of Linear layers with parameter-free layers between them: dropout, Mish,
ReLU, Tanh, LayerNorm without affine parameters. For such a chain, :func:`chain_forward`
and :func:`chain_backward` compute every Linear layer's input and the backward signal at
its output without an autograd graph:

- no graph bookkeeping, no per-op autograd dispatch, no module hooks;
- Mish's derivative is formed in the forward pass from the same exp
  (:func:`valbench.gradsim.layers.mish_parts`), so its backward is one multiplication;
- backward steps work in place on tensors they own, and the first Linear layer's input
  gradient is never formed.

Users: :class:`SequentialEngine`, the DVGS fast engine on a chain (the target gradient
and the per-sample terms follow from those inputs and signals, exactly as in
:class:`~valbench.gradsim.fast.FastEngine`), and valbench.fastfit's flat MLP trainer
(the weight gradients); valbench.batched reads its layer sequence with
:func:`chain_layers` too. Whether a model is such a chain is not guessed from its modules
alone: :func:`sequential_plan` runs a few probe rows through the model and through the
chain, with dropout active, and uses the chain only if the outputs agree.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from valbench.gradsim.fast import FastEngine
from valbench.gradsim.layers import FastMish, mish_derivative, mish_parts
from valbench.gradsim.masks import HashDropout, MaskContext, sample_seeds

# One entry per layer: ("linear", weight, bias or None) | ("dropout",) | ("mish",) |
# ("relu",) | ("tanh",) | ("layernorm", eps)
Chain = list[tuple]
Plan = list[tuple[str, nn.Module]]  # (kind, module) per chain layer: chain_layers, sequential_plan
Masks = Callable[[int, int], "torch.Tensor | None"]  # (k-th dropout layer, width) -> scaled mask or None (off)
PROBE_RTOL = 1e-4  # chain output vs model output on the probe rows (same math, maybe another op order)


class NotAChain(ValueError):
    """The model is not a plain chain of the supported layers (the message says why)."""


def _leaves(module: nn.Module) -> list[nn.Module]:
    kids = list(module.children())
    return [module] if not kids else [leaf for k in kids for leaf in _leaves(k)]


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (HashDropout, nn.Dropout)):
        return "identity" if m.p == 0 else "dropout"
    if isinstance(m, (FastMish, nn.Mish)):
        return "mish"
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.Tanh):
        return "tanh"
    if isinstance(m, nn.Identity):
        return "identity"
    if isinstance(m, nn.LayerNorm) and not m.elementwise_affine and len(m.normalized_shape) == 1:
        return "layernorm"
    return None


def chain_layers(model: nn.Module) -> Plan:
    """The model's leaf modules as (kind, module), identities (and p = 0 dropout) left
    out. Raises :class:`NotAChain` naming the first other layer, or when no Linear layer
    ends the chain. The order is the declaration order: whether forward() follows it is
    for the caller to check (every caller runs a probe)."""
    out = []
    for m in _leaves(model):
        kind = _kind(m)
        if kind is None:
            raise NotAChain(f"does not support layer {type(m).__name__}")
        if kind != "identity":
            out.append((kind, m))
    if not out or out[-1][0] != "linear":
        raise NotAChain("needs a network that ends in a Linear layer")
    return out


def chain_of(layers: Plan, tensors: Callable[[nn.Module], tuple] | None = None) -> Chain:
    """The chain of ``chain_layers`` output. A Linear layer's parameters are its own
    weight and bias, or ``tensors(layer)`` = (weight, bias) when given."""
    def linear(m: nn.Module) -> tuple:
        return ("linear", *(tensors(m) if tensors is not None else (m.weight, m.bias)))

    return [linear(m) if kind == "linear" else ("layernorm", m.eps) if kind == "layernorm" else (kind,)
            for kind, m in layers]


def dropout_inputs(layers: Plan) -> list[tuple[float, int]]:
    """(p, width) of every dropout layer of ``chain_layers`` output; the width is the
    out_features of the Linear layer before it (the first one's in_features if none)."""
    out, width = [], next(m for kind, m in layers if kind == "linear").in_features
    for kind, m in layers:
        if kind == "linear":
            width = m.out_features
        elif kind == "dropout":
            out.append((float(m.p), width))
    return out


@torch.no_grad()
def chain_forward(chain: Chain, x: torch.Tensor, masks: Masks | None) -> tuple[torch.Tensor, list]:
    """The output and, per layer, what :func:`chain_backward` needs. ``masks`` None is
    inference: no dropout, nothing kept for a backward pass."""
    train = masks is not None
    saved: list = []
    h, k = x, 0
    for layer in chain:
        kind = layer[0]
        keep = None
        if kind == "linear":
            _, w, b = layer
            keep = h
            h = h @ w.T if b is None else torch.addmm(b, h, w.T)
        elif kind == "dropout":
            keep = masks(k, h.shape[1]) if train else None
            k += 1
            if keep is not None:
                h = h * keep
        elif kind == "mish":
            t, e = mish_parts(h)  # mish(x) = x tanh(softplus(x)), one exp
            if train:
                keep = mish_derivative(h, t, e)
            h = h * t
        elif kind == "relu":
            h = keep = torch.relu(h)
        elif kind == "tanh":
            h = keep = torch.tanh(h)
        else:  # layernorm
            out, mean, rstd = torch.native_layer_norm(h, [h.shape[1]], None, None, layer[1])
            keep = (h, mean, rstd)
            h = out
        if train:
            saved.append(keep)
    return h, saved


@torch.no_grad()
def chain_backward(chain: Chain, saved: list, grad: torch.Tensor,
                   on_linear: Callable[[int, torch.Tensor, torch.Tensor], None]) -> None:
    """Back-propagate ``grad`` (d loss / d output) through the chain, calling
    ``on_linear(j, signal, input)`` for the j-th Linear layer, last to first, with the
    backward signal at its output and its input. The callee may keep ``signal``: it is
    never changed afterwards. ``grad`` may be changed in place."""
    linears = [i for i, layer in enumerate(chain) if layer[0] == "linear"]
    dh = grad
    for i in range(len(chain) - 1, linears[0] - 1, -1):
        kind, s = chain[i][0], saved[i]
        if kind == "linear":
            on_linear(linears.index(i), dh, s)
            if i > linears[0]:
                dh = dh @ chain[i][1]  # a new tensor: the in-place steps below never touch a signal
        elif kind == "dropout":
            if s is not None:
                dh = dh.mul_(s)
        elif kind == "mish":
            dh = dh.mul_(s)
        elif kind == "relu":  # sign(relu(x)) is 1 where x > 0, else 0 (bool masks are slow on CPU)
            dh = dh.mul_(torch.sign(s))
        elif kind == "tanh":
            dh = dh.mul_(1.0 - s * s)
        else:  # layernorm
            inp, mean, rstd = s
            dh = torch.ops.aten.native_layer_norm_backward(dh, inp, [inp.shape[1]], mean, rstd, None, None,
                                                           [True, False, False])[0]


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
