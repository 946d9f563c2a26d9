"""The fast engine's passes written out by hand, for models that are a plain layer sequence.

Most models valued with DVGS (the paper's MLP classifier and MLP autoencoder) are a
chain of Linear layers with parameter-free layers between them: dropout, Mish, ReLU,
Tanh, LayerNorm without affine parameters. For such a chain :class:`SequentialEngine`
computes exactly what :class:`~valbench.gradsim.fast.FastEngine` computes (every Linear
layer's input and the backward signal at its output, from which the target gradient and
the per-sample terms follow), but with its own forward and backward passes instead of
module hooks and an autograd graph:

- no graph bookkeeping and no per-op autograd dispatch;
- Mish's derivative is formed in the forward pass (from the same exp), so its backward
  is one multiplication;
- the first Linear layer's input gradient is never formed.

Only the loss is differentiated by autograd (on the model's output), so any per-sample
loss works. Whether a model is such a chain is not guessed from its modules alone:
:func:`sequential_plan` runs a few probe rows through the model and through the plan,
with dropout active, and uses the plan only if the outputs agree.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from valbench.gradsim.fast import FastEngine
from valbench.gradsim.layers import FastMish, mish_derivative, mish_parts
from valbench.gradsim.masks import HashDropout, MaskContext, sample_seeds

Plan = list[tuple[str, nn.Module]]
PROBE_RTOL = 1e-4  # plan output vs model output on the probe rows (same math, other op order)


def _leaves(module: nn.Module) -> list[nn.Module]:
    kids = list(module.children())
    return [module] if not kids else [leaf for k in kids for leaf in _leaves(k)]


def _kind(m: nn.Module) -> str | None:
    if type(m) is nn.Linear:
        return "linear" if all(p.requires_grad for p in m.parameters()) else None
    if type(m) is HashDropout:
        return "dropout" if m.p < 1.0 else None
    if type(m) in (FastMish, nn.Mish):
        return "mish"
    if type(m) is nn.ReLU:
        return "relu"
    if type(m) is nn.Tanh:
        return "tanh"
    if type(m) in (nn.Identity, nn.Dropout) and (type(m) is nn.Identity or not m.training or m.p == 0):
        return "identity"
    if type(m) is nn.LayerNorm and not m.elementwise_affine and len(m.normalized_shape) == 1:
        return "layernorm"
    return None


def sequential_plan(model: nn.Module, probe: torch.Tensor) -> Plan | None:
    """The model as a chain of layers, or None when it is not one (see the module docstring).

    ``probe``: a few input rows (2-D); the model is left as it was (mode, mask context).
    """
    if probe.dim() != 2:
        return None
    plan: Plan = []
    for m in _leaves(model):
        kind = _kind(m)
        if kind is None:
            return None
        if kind != "identity":
            plan.append((kind, m))
    linears = [m for kind, m in plan if kind == "linear"]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if not linears or {id(p) for m in linears for p in m.parameters()} != trainable:
        return None
    contexts = {id(m.context): m.context for kind, m in plan if kind == "dropout"}
    saved = [(c, c.key, c.seeds) for c in contexts.values()]
    try:
        for c in contexts.values():
            c.key, c.seeds = 12345, sample_seeds(torch.arange(len(probe), device=probe.device), 678)
        with torch.no_grad():
            want = model(probe)
            got, _ = _forward(plan, probe)
    except (RuntimeError, TypeError, ValueError):
        return None
    finally:
        for c, key, seeds in saved:
            c.key, c.seeds = key, seeds
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        return None
    scale = want.abs().max().clamp_min(1.0)
    return plan if bool(((want - got).abs().max() <= PROBE_RTOL * scale).item()) else None


@torch.no_grad()
def _forward(plan: Plan, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The output and, per layer of the plan, what its backward step needs."""
    saved: list = []
    h = x
    for kind, m in plan:
        if kind == "linear":
            saved.append(h)
            h = h @ m.weight.T if m.bias is None else torch.addmm(m.bias, h, m.weight.T)
        elif kind == "dropout":
            mask = m.mask(h.shape[1]) if m.active() else None
            saved.append(mask)
            if mask is not None:
                h = h * mask
        elif kind == "mish":
            t, w = mish_parts(h)
            saved.append(mish_derivative(h, t, w))
            h = h * t
        elif kind == "relu":
            h = torch.relu(h)
            saved.append(h)
        elif kind == "tanh":
            h = torch.tanh(h)
            saved.append(h)
        else:  # layernorm
            out, mean, rstd = torch.native_layer_norm(h, [h.shape[1]], None, None, m.eps)
            saved.append((h, mean, rstd))
            h = out
    return h, saved


@torch.no_grad()
def _backward(plan: Plan, saved: list, grad: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """Backward signal at every Linear layer's output, given d loss / d output."""
    backs: dict[nn.Module, torch.Tensor] = {}
    first_linear = next(i for i, (kind, _) in enumerate(plan) if kind == "linear")
    dh = grad
    for i in range(len(plan) - 1, first_linear - 1, -1):
        kind, m = plan[i]
        s = saved[i]
        if kind == "linear":
            backs[m] = dh
            if i > first_linear:
                dh = dh @ m.weight  # a new tensor: the in-place steps below never touch a recorded signal
        elif kind == "dropout":
            if s is not None:
                dh = dh.mul_(s)
        elif kind == "mish":
            dh = dh.mul_(s)
        elif kind == "relu":  # sign(relu(x)) is 1 where x > 0, else 0 (bool masks are slow on CPU)
            dh = dh.mul_(torch.sign(s))
        elif kind == "tanh":
            dh = dh * (1.0 - s * s)
        else:  # layernorm
            inp, mean, rstd = s
            dh = torch.ops.aten.native_layer_norm_backward(dh, inp, [inp.shape[1]], mean, rstd, None, None,
                                                           [True, False, False])[0]
    return backs


class SequentialEngine(FastEngine):
    """:class:`FastEngine` with hand-written passes for a :func:`sequential_plan` chain.

    Gives the same values (to float rounding); what it skips is listed in the module
    docstring.
    """

    def __init__(self, model: nn.Module, loss_fn, names: Sequence[str], context: MaskContext, plan: Plan,
                 fusable: bool = False):
        super().__init__(model, loss_fn, names, context, fusable=fusable)
        for h in self._handles:  # the plan records inputs itself
            h.remove()
        self._handles = []
        self.plan = plan

    def _signals(self, x, y, seeds, coef, layers):
        self.context.seeds = seeds
        self._records.clear()
        out, saved = _forward(self.plan, x)
        with torch.enable_grad():
            out.requires_grad_(True)
            per_sample = self.loss_fn(out, y)
            if coef is not None:
                per_sample = per_sample * coef
            (grad,) = torch.autograd.grad(per_sample.sum(), out)
        backs = _backward(self.plan, saved, grad)
        for (kind, m), s in zip(self.plan, saved):
            if kind == "linear":
                self._records[m] = (s, None)  # the layer's input, as the hooks would record it
        mods = [m for m in layers if m in backs]
        return per_sample.detach(), mods, [backs[m] for m in mods]
