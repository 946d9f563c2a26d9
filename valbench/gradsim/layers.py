"""Drop-in layers for the model being valued: the same functions, cheaper on CPU.

``FastMish`` computes Mish(x) = x tanh(softplus(x)) through the identity
tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2), and its derivative
tanh(sp) + x sech^2(sp) sigmoid(x) in closed form: a few vectorised exp/mul/div
passes instead of log1p and tanh (torch's CPU kernel), agreeing to ~1e-7. Parameter-free,
so every engine (naive, Opacus, fast) sees the same layer.
"""
from __future__ import annotations

import torch
from torch import nn

_CLAMP = 20.0  # beyond this, tanh(softplus(x)) == 1 in float32 and e^x would overflow later


def mish_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tanh(softplus(x)), e^x) with e^x clamped: Mish(x) = x * the first. Out of place, so
    autograd and torch.compile can differentiate through it (valbench.batched does)."""
    w = torch.exp(x.clamp(max=_CLAMP))
    n = w * (w + 2.0)
    return n / (n + 2.0), w


def mish_derivative(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d Mish / dx = tanh(sp) + x sech^2(sp) sigmoid(x) from :func:`mish_parts`' (t, w)."""
    return (1.0 - t * t).mul_(w / (w + 1.0)).mul_(x).add_(t)


class _MishFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        t, w = mish_parts(x)
        ctx.save_for_backward(x, t, w)
        return x * t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * mish_derivative(*ctx.saved_tensors)


class FastMish(nn.Module):
    """Mish with a closed-form forward and backward (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MishFunction.apply(x)


def use_fast_mish(model: nn.Module) -> int:
    """Replace every nn.Mish of ``model`` in place by FastMish; returns how many."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Mish:
                setattr(module, name, FastMish())
                count += 1
    return count


def prepare_model(model: nn.Module, dropout: bool = True):
    """Ready ``model`` (in place) for per-sample gradients: refuse BatchNorm, swap in
    FastMish, and HashDropout when ``dropout`` (else dropout is off). Returns the
    MaskContext every caller sets before a forward pass, and the dropout layers' names."""
    from valbench.gradsim.engines import check_model
    from valbench.gradsim.masks import MaskContext, use_hash_dropout

    check_model(model)
    use_fast_mish(model)
    context = MaskContext(enabled=dropout)
    if dropout:
        layers = use_hash_dropout(model, context)
    else:  # dropout off during valuation: nn.Dropout layers become identities
        layers = []
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.modules.dropout._DropoutNd):
                    setattr(module, name, nn.Identity())
    model.train()
    return context, layers
