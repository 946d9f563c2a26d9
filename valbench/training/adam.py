"""Adam without torch.optim: the same update, one fused kernel where torch has one.

Constructing any torch.optim optimizer imports torch._dynamo the first time (about a
second of CPU), which would be charged to the first valuation of every process. This
is torch.optim.Adam's update (no weight decay, no amsgrad): torch's fused Adam kernel
where it runs on the device (one call for all parameters; it agrees with the
multi-tensor update to float32 rounding), else the multi-tensor update, op for op.
Used by DVGS (valbench.gradsim.dvgs), the flat MLP trainer (valbench.training.repeated) and
batched training (valbench.training.stacked: every copy's parameters in one fused call).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

_FUSED: dict[str, bool] = {}


def fused_adam_available(device: torch.device | str) -> bool:
    """Whether torch's fused Adam kernel runs on ``device`` (a private API, so probe it once)."""
    key = str(torch.device(device).type)
    if key not in _FUSED:
        ok = hasattr(torch, "_fused_adam_")
        if ok:
            try:
                t = torch.zeros(2, device=device)
                torch._fused_adam_([t.clone()], [t.clone()], [t.clone()], [t.clone()], [],
                                   [torch.ones((), device=device)], lr=1e-3, beta1=0.9, beta2=0.999,
                                   weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _FUSED[key] = ok
    return _FUSED[key]


class Adam:
    """Adam(lr, betas=(0.9, 0.999), eps=1e-8) over ``params``; ``step(grads)`` applies
    one update with the given gradients (one per parameter, in order). ``fused``: None
    uses the fused kernel where available, False the multi-tensor update."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool | None = None):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.fused = fused_adam_available(self.params[0].device) if fused is None else fused
        self._step = torch.zeros((), dtype=torch.float32, device=self.params[0].device)

    def reset(self) -> None:
        """Forget the moments and the step count (a fresh optimiser on the same tensors)."""
        torch._foreach_zero_(self.exp_avg)
        torch._foreach_zero_(self.exp_avg_sq)
        self.steps = 0
        self._step.zero_()

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        b1, b2 = self.betas
        self.steps += 1
        grads = list(grads)
        if self.fused:
            # the fused kernel walks raw memory: a transposed gradient (e.g. from
            # autograd.grad of a batched matrix product) would be read in the wrong order
            grads = [g.contiguous() for g in grads]
            self._step.fill_(self.steps)
            torch._fused_adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, [], [self._step] * len(grads),
                               lr=self.lr, beta1=b1, beta2=b2, weight_decay=0.0, eps=self.eps, amsgrad=False,
                               maximize=False)
            return
        torch._foreach_lerp_(self.exp_avg, grads, 1 - b1)
        torch._foreach_mul_(self.exp_avg_sq, b2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.steps))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, -self.lr / (1 - b1 ** self.steps))


def adam_update_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 step: torch.Tensor, lr: float, betas: tuple[float, float], eps: float) -> None:
    """The same update for one tensor, in place, with the step count a tensor that the
    caller increments: nothing changes from one step to the next but tensor contents, so
    torch.compile makes one graph of it (and a CUDA graph can replay it), where
    :class:`Adam`'s Python step count would recompile every step."""
    b1, b2 = betas
    exp_avg.lerp_(grad, 1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (exp_avg_sq.sqrt() / (1 - b2 ** step).sqrt()).add_(eps)
    param.sub_(exp_avg / denom * (lr / (1 - b1 ** step)))
