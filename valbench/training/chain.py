"""Hand-written forward and backward passes for models that are a plain layer chain.

Most models valued or retrained here (the paper's MLP classifier and MLP autoencoder)
are a chain of Linear layers with parameter-free layers between them: dropout, Mish,
ReLU, Tanh, LayerNorm without affine parameters. For such a chain, :func:`chain_forward`
and :func:`chain_backward` compute every Linear layer's input and the backward signal at
its output without an autograd graph, for one model or for M stacked copies (weights
(M, out, in), activations (M, n, h)):

- no graph bookkeeping, no per-op autograd dispatch, no module hooks;
- Mish's derivative is formed in the forward pass from the same exp
  (:func:`valbench.training.mish.mish_parts`), so its backward is one multiplication;
- backward steps work in place on tensors they own, and the first Linear layer's input
  gradient is never formed.

Users: the flat MLP trainer (:mod:`valbench.training.repeated`: the weight gradients),
batched training (:mod:`valbench.training.stacked`: the same passes over stacked copies,
so nothing is recomputed in the backward pass, compiled or not), and the DVGS engine
(``valbench.gradsim.sequential``: per-sample terms from the layer inputs and backward
signals). Which layers a module stands for is
read from its type, or from a class attribute ``chain_kind`` ("dropout", "mish") that a
drop-in replacement layer declares. Whether a model's forward() follows the declared
order is not guessed: every user runs probe rows through both and compares.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from valbench.training.mish import mish_derivative, mish_parts

# One entry per layer: ("linear", weight, bias or None) | ("dropout",) | ("mish",) |
# ("relu",) | ("tanh",) | ("layernorm", eps)
Chain = list[tuple]
Plan = list[tuple[str, nn.Module]]  # (kind, module) per chain layer, from chain_layers
Spec = tuple[tuple, ...]  # ("linear",) ("dropout", p) ("mish",) ("relu",) ("tanh",) ("layernorm", eps)
Masks = Callable[[int, int], "torch.Tensor | None"]  # (k-th dropout layer, width) -> scaled mask or None (off)


class NotAChain(ValueError):
    """The model is not a plain chain of the supported layers (the message says why)."""


def _leaves(module: nn.Module) -> list[nn.Module]:
    kids = list(module.children())
    return [module] if not kids else [leaf for k in kids for leaf in _leaves(k)]


def _kind(m: nn.Module) -> str | None:
    declared = getattr(m, "chain_kind", None)  # a drop-in layer (DVGS' HashDropout, FastMish) says what it is
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.Dropout) or declared == "dropout":
        return "identity" if m.p == 0 else "dropout"
    if isinstance(m, nn.Mish) or declared == "mish":
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


def chain_spec(layers: Plan) -> Spec:
    """The layer sequence of ``chain_layers`` output without its modules: kinds, dropout
    p and LayerNorm eps."""
    return tuple(("dropout", float(m.p)) if kind == "dropout" else ("layernorm", float(m.eps))
                 if kind == "layernorm" else (kind,) for kind, m in layers)


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


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """h @ w.T + b. Stacked copies (batched training): w (M, out, in), b (M, out), and h
    (n, in) shared by every copy (one GEMM against all copies' weights side by side) or
    (M, n, in); the output is (M, n, out)."""
    if w.dim() == 2:
        return h @ w.T if b is None else torch.addmm(b, h, w.T)
    M, out = w.shape[0], w.shape[1]
    if b is None:
        b = torch.zeros(M, out, dtype=w.dtype, device=w.device)
    if h.dim() == 2:
        a = torch.addmm(b.reshape(1, M * out), h, w.reshape(M * out, -1).t())
        return a.view(h.shape[0], M, out).transpose(0, 1)
    return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))


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
            h = linear(h, w, b)
        elif kind == "dropout":
            keep = masks(k, h.shape[-1]) if train else None
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
            out, mean, rstd = torch.native_layer_norm(h, [h.shape[-1]], None, None, layer[1])
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
                dh = dh @ chain[i][1]  # a new tensor (per copy when stacked): the in-place steps below never touch a signal
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
            dh = dh.to(inp.dtype)  # a no-op but under autocast (DVGS dtype=bf16), where the two may differ
            dh = torch.ops.aten.native_layer_norm_backward(dh, inp, [inp.shape[-1]], mean, rstd, None, None,
                                                           [True, False, False])[0]
