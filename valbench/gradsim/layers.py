"""Readying the model being valued: FastMish for nn.Mish, per-sample dropout, no BatchNorm."""
from __future__ import annotations

from torch import nn

from valbench.training.mish import FastMish


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
