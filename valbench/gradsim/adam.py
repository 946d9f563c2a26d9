"""Adam without torch.optim: the same update, and no second-long first call.

Constructing any torch.optim optimizer imports torch._dynamo the first time (about a
second of CPU), which would be charged to the first valuation of every process. This
is torch.optim.Adam's multi-tensor update (no weight decay, no amsgrad), op for op.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


class Adam:
    """Adam(lr, betas=(0.9, 0.999), eps=1e-8) over ``params``; ``step(grads)`` applies
    one update with the given gradients (one per parameter, in order)."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        b1, b2 = self.betas
        self.steps += 1
        grads = list(grads)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - b1)
        torch._foreach_mul_(self.exp_avg_sq, b2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.steps))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, -self.lr / (1 - b1 ** self.steps))
