"""Repeated training of one small classifier from one saved initialisation, fast.

Valuers that retrain the task's classifier thousands of times (DVRL: 2000 fits of 100
epochs each) spend their time in per-operation overhead, not arithmetic: autograd
bookkeeping, ``torch.optim`` dispatch, and slow element-wise kernels (CPU dropout
``bernoulli_`` and ``mish``/``mish_backward`` cost 4-10x a matrix product of the same
size). :class:`FlatMLPTrainer` trains the paper's MLP (``valbench.training.models.MLP``) with

- every weight, gradient and Adam moment in one flat buffer on the device,
- the forward and backward passes written out by hand, no autograd graph (the chain
  passes of :mod:`valbench.training.chain`, shared with the DVGS fast engine),
- each epoch's minibatches gathered once (rows of a fresh permutation, selected rows
  only) and its dropout masks drawn in one call (random bits on CPU),
- Adam as one fused kernel on the flat buffer (:class:`valbench.training.adam.Adam`, the
  same update as ``torch.optim.Adam``),
- on CPU, each epoch in one call of a native extension (:mod:`valbench.training.native`,
  ``native_flat.cpp``, built on first use): ATen's matrix products with everything between
  them fused, 2.6-2.9x faster than the Python step at DVRL's sizes. The rows, masks and
  Adam steps are the same (Python draws them); values agree to float32 rounding. Where it
  cannot be built the Python step runs, and ``name`` says why; ``native=False`` or
  ``VALBENCH_NATIVE=0`` turn it off.
- with ``MinibatchRecipe.compile``: each minibatch padded to the recipe's batch size with
  rows of weight 0 (they add exactly nothing to the gradient), so every step has the same
  shapes and the whole step, forward, backward and Adam, is one graph for torch.compile,
  which on CUDA is meant to replay it as a CUDA graph (one launch in place of ~60; the
  eager step is launch-bound there: 0.43 s per DVRL outer iteration on an H200). Not yet
  run on a GPU: a gpu-marked test checks it when one is at hand. On CPU it does not pay:
  the padding rows and per-call overhead make a DVRL outer iteration ~1.1x slower than the
  Python step and ~3x slower than the native epoch (benchmarks/dvrl_speed.py). If compilation fails, the same padded
  step runs eagerly (``compile_error`` says why). Values agree with the eager trainer
  within float32 rounding.

It is the same training as an autograd loop with ``torch.optim.Adam`` (tests check
gradients and steps against autograd); only the random streams differ.
:class:`AutogradTrainer` is that loop, used for any other architecture.

Loss of a minibatch: sum_i w_i CE_i / sum_i w_i over its rows (``weight`` None: w = 1).
Rows with ``select`` False are dropped before minibatches are cut from the epoch's
permutation, so a minibatch holds its selected rows only (Keras' sample-weight
semantics for 0/1 weights, as in the DVRL reference); a minibatch with no selected
row is skipped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from valbench.training.adam import Adam, adam_update_
from valbench.training.chain import (NotAChain, chain_backward, chain_forward, chain_layers, chain_of,
                                         chain_spec, dropout_inputs)
from valbench.training import native as native_module
from valbench.training.models import MLP


class RepeatedTrainer(Protocol):
    name: str  # which trainer ran: "flat-mlp", "flat-mlp+compile" (or why compiling failed), "autograd"

    def fit(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, *,
            select: np.ndarray | None = None, weight: torch.Tensor | None = None) -> None:
        """Reset to the initial weights and train on (x, y) with this trainer's recipe."""

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (n, K) of the current weights, dropout off."""


@dataclass(frozen=True)
class MinibatchRecipe:
    """Adam(lr) for ``epochs`` passes over the data in minibatches of ``batch_size``."""

    lr: float
    epochs: int
    batch_size: int
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    compile: bool = False  # the padded, compiled step (see the module docstring)


def make_trainer(model: nn.Module, recipe: MinibatchRecipe, device: str) -> RepeatedTrainer:
    """The fast trainer for the paper's MLP, the autograd loop for anything else."""
    if FlatMLPTrainer.supports(model):
        return FlatMLPTrainer(model, recipe, device)
    return AutogradTrainer(model, recipe, device)


def _minibatches(n: int, recipe: MinibatchRecipe, rng: np.random.Generator,
                 select: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch: row order (selected rows of a fresh permutation) and minibatch bounds into it."""
    perm = rng.permutation(n)
    starts = np.arange(0, n, recipe.batch_size)
    if select is None:
        return perm, np.append(starts, n)
    keep = select[perm]
    counts = np.add.reduceat(keep.astype(np.int64), starts)
    return perm[keep], np.concatenate([[0], np.cumsum(counts)])


class FlatMLPTrainer:
    """Trains a ``valbench.training.models.MLP`` (Linear / Dropout / Mish / ReLU / affine-free
    LayerNorm layers) with hand-written gradients (valbench.training.chain
    passes) on one flat parameter buffer."""

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        if type(model) is not MLP:
            return False
        try:
            layers = chain_layers(model)
        except NotAChain:
            return False
        return all(m.bias is not None for kind, m in layers if kind == "linear")

    def __init__(self, model: nn.Module, recipe: MinibatchRecipe, device: str, *, native: bool = True):
        if not self.supports(model):
            raise TypeError(f"FlatMLPTrainer cannot train {type(model).__name__}")
        self.recipe, self.device = recipe, device
        layers = chain_layers(model)
        linears = [m for kind, m in layers if kind == "linear"]
        self.init = torch.cat([t.detach().reshape(-1) for m in linears for t in (m.weight, m.bias)]).to(
            device=device, dtype=torch.float32).contiguous()
        self.flat = self.init.clone()
        self.grad = torch.zeros_like(self.flat)
        self.opt = Adam([self.flat], recipe.lr, recipe.betas, recipe.eps)
        views = {}  # Linear -> (weight, bias, weight gradient, bias gradient), views of the flat buffers
        offset = 0
        for m in linears:
            (o, i), end = m.weight.shape, offset + m.weight.numel()
            views[m] = (self.flat[offset:end].view(o, i), self.flat[end:end + o],
                        self.grad[offset:end].view(o, i), self.grad[end:end + o])
            offset = end + o
        self.grads = [views[m][2:] for m in linears]
        self.chain = chain_of(layers, lambda m: views[m][:2])
        self._dropout_widths = dropout_inputs(layers)  # (p, width) of each dropout layer
        self.compile_error: str | None = None  # why the compiled step was given up (None: it was not)
        self._step_fn = None  # the padded step, compiled on first use
        self._step_ran = False  # the compiled step has run once (compiled without error)
        # the native epoch (valbench.training.native) where it can run (CPU, no compile),
        # built on the first fit; native=False: the Python step always
        self.native = native
        plan = native_module.mlp_plan(chain_spec(layers))  # (widths, keep scale per hidden layer, norm, eps)
        self._native_plan = None if plan is None else (
            [linears[0].in_features] + [m.out_features for m in linears],
            [1.0 / (1.0 - p) if p > 0 else 0.0 for p in plan[0]], plan[1], plan[2])
        self._native_ran = False

    @property
    def name(self) -> str:
        """Which trainer ran, for a valuation's info."""
        if not self.recipe.compile:
            if self._native_ran:
                return "flat-mlp+native"
            reason = native_module.unavailable_reason() if self._wants_native() else None
            return "flat-mlp" if reason is None else f"flat-mlp (native unavailable: {reason})"
        return "flat-mlp+compile" if self.compile_error is None else f"flat-mlp (compile failed: {self.compile_error})"

    # ---- forward / backward -------------------------------------------------------
    def _forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None) -> tuple[torch.Tensor, list]:
        """Logits and what the backward pass needs; ``masks`` None means eval mode."""
        return chain_forward(self.chain, x, None if masks is None else lambda k, width: masks[k])

    def _backward(self, dh: torch.Tensor, cache: list) -> None:
        """Write the gradient of the loss (given d loss / d logits) into ``self.grad``."""
        def write(j: int, signal: torch.Tensor, inp: torch.Tensor) -> None:
            gw, gb = self.grads[j]
            torch.mm(signal.t(), inp, out=gw)
            torch.sum(signal, dim=0, out=gb)

        chain_backward(self.chain, cache, dh, write)

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor],
                  weight: torch.Tensor | None = None, *, with_loss: bool = True) -> torch.Tensor | None:
        """Fill ``self.grad`` for one minibatch; returns the (weighted mean) CE loss if ``with_loss``."""
        logits, cache = self._forward(x, masks)
        d = torch.softmax(logits, dim=1)
        loss = None
        if with_loss:
            nll = -torch.log(d.gather(1, y[:, None]).clamp_min(1e-30))[:, 0]
            loss = nll.mean() if weight is None else (nll * weight).sum() / weight.sum().clamp_min(1e-12)
        d[torch.arange(len(y), device=d.device), y] -= 1.0  # d CE / d logits = softmax - onehot
        if weight is None:
            d /= len(y)
        else:
            d *= (weight / weight.sum().clamp_min(1e-12))[:, None]
        self._backward(d, cache)
        return loss

    def _keep(self, rows: int, rng: np.random.Generator, gen: torch.Generator | None) -> list[torch.Tensor]:
        """Dropout keep-masks (0/1, uint8 or bool) for ``rows`` rows of every dropout layer."""
        out = []
        for p, width in self._dropout_widths:
            size = rows * width
            if gen is not None:
                keep = torch.rand((rows, width), generator=gen, device=self.device) >= p
            elif p == 0.5:  # random bits: one byte gives eight fair coin flips
                bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8))[:size]
                keep = torch.from_numpy(bits.reshape(rows, width))
            else:
                keep = torch.from_numpy((rng.random((rows, width), dtype=np.float32) >= p).view(np.uint8))
            out.append(keep)
        return out

    def _masks(self, rows: int, rng: np.random.Generator, gen: torch.Generator | None) -> list[torch.Tensor]:
        """Scaled dropout masks (0 or 1/(1-p)) for ``rows`` rows of every dropout layer."""
        return [keep.to(device=self.device, dtype=torch.float32).mul_(1.0 / (1.0 - p))
                for keep, (p, _) in zip(self._keep(rows, rng, gen), self._dropout_widths)]

    def _wants_native(self) -> bool:
        return (self.native and self._native_plan is not None and not self.recipe.compile
                and str(self.device).startswith("cpu") and native_module.enabled())

    def _native_epoch(self, module, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                      order: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> None:
        """One epoch in one call of the native module: the same rows, masks and steps."""
        widths, keep_scale, norm, ln_eps = self._native_plan
        keep = self._keep(len(order), rng, None)
        r = self.recipe
        self.opt.steps = module.train_epoch(
            self.flat, self.grad, self.opt.exp_avg[0], self.opt.exp_avg_sq[0], self.opt.steps, x, y,
            torch.empty(0) if weight is None else weight, torch.from_numpy(order), torch.from_numpy(bounds.astype(np.int64)),
            keep, keep_scale, widths, norm, ln_eps, r.lr, r.betas[0], r.betas[1], r.eps)
        self._native_ran = True

    # ---- the public interface ----------------------------------------------------
    def reset(self) -> None:
        self.flat.copy_(self.init)
        self.opt.reset()

    def fit(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, *,
            select: np.ndarray | None = None, weight: torch.Tensor | None = None) -> None:
        self.reset()
        gen = None
        if not str(self.device).startswith("cpu"):
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(rng.integers(2**62)))
        module = native_module.load() if self._wants_native() else None
        if module is not None:
            x, y = x.to(torch.float32).contiguous(), y.contiguous()
            weight = None if weight is None else weight.to(torch.float32).contiguous()
        for _ in range(self.recipe.epochs):
            order, bounds = _minibatches(len(x), self.recipe, rng, select)
            if len(order) == 0:
                continue
            if module is not None:
                self._native_epoch(module, x, y, weight, order, bounds, rng)
                continue
            masks = self._masks(len(order), rng, gen)
            if self.recipe.compile:
                self._padded_epoch(x, y, weight, order, bounds, masks)
                continue
            idx = torch.as_tensor(order, device=x.device)
            xe, ye = x.index_select(0, idx), y.index_select(0, idx)
            we = None if weight is None else weight.index_select(0, idx)
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                if b == a:
                    continue
                self.loss_grad(xe[a:b], ye[a:b], [m[a:b] for m in masks], None if we is None else we[a:b],
                               with_loss=False)
                self.opt.step([self.grad])

    # ---- the padded step (recipe.compile) ---------------------------------------------
    def _padded_epoch(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, order: np.ndarray,
                      bounds: np.ndarray, masks: list[torch.Tensor]) -> None:
        """The epoch's minibatches, each padded to ``batch_size`` rows of weight 0, gathered
        at once; the same rows, masks and order as the eager loop."""
        size = self.recipe.batch_size
        counts = np.diff(bounds)
        starts = bounds[:-1][counts > 0]
        counts = counts[counts > 0]
        valid = np.arange(size)[None, :] < counts[:, None]
        pos = np.where(valid, starts[:, None] + np.arange(size)[None, :], 0).reshape(-1)  # into ``order``
        dev = x.device
        pos_t = torch.as_tensor(pos, device=dev)
        idx = torch.as_tensor(order, device=dev).index_select(0, pos_t)
        xe, ye = x.index_select(0, idx), y.index_select(0, idx)
        we = torch.as_tensor(valid.reshape(-1), dtype=torch.float32, device=dev)
        if weight is not None:
            we = we * weight.index_select(0, idx)
        me = [m.index_select(0, pos_t) for m in masks]
        compiled = self._compiled_step()
        for a in range(0, len(pos), size):
            args = (xe[a:a + size], ye[a:a + size], we[a:a + size], *[m[a:a + size] for m in me])
            if compiled is None:
                self._padded_step(*args)
                continue
            if self._step_ran:
                compiled(*args)
                continue
            try:  # compilation happens in the first call, before the step runs: only it may fail so
                compiled(*args)
                self._step_ran = True
            except Exception as exc:
                self.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                compiled = None
                self._padded_step(*args)

    def _compiled_step(self):
        """The padded step under torch.compile; None once compilation failed."""
        if self.compile_error is not None:
            return None
        if self._step_fn is None:
            cuda = str(self.device).startswith("cuda")
            if cuda:  # the buffers the step updates in place keep their addresses: CUDA graphs may replay it
                for t in (self.flat, self.opt.exp_avg[0], self.opt.exp_avg_sq[0], self.opt._step):
                    torch._dynamo.mark_static_address(t)
            self._step_fn = torch.compile(self._padded_step, dynamic=False,
                                          mode="reduce-overhead" if cuda else None)
        return self._step_fn

    @torch.no_grad()
    def _padded_step(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *masks: torch.Tensor) -> None:
        """One Adam step on a padded minibatch: loss sum_i w_i CE_i / sum_i w_i, as ``loss_grad``."""
        logits, cache = self._forward(x, list(masks))
        d = torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
        d = d * (w / w.sum().clamp_min(1e-12))[:, None]
        grads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # Linear layer j -> (weight, bias) gradient

        def write(j: int, signal: torch.Tensor, inp: torch.Tensor) -> None:
            grads[j] = ((signal.t() @ inp).reshape(-1), signal.sum(0))

        chain_backward(self.chain, cache, d, write)
        flat_grad = torch.cat([g for j in sorted(grads) for g in grads[j]])  # the flat buffer's layout
        self.opt._step.add_(1)
        adam_update_(self.flat, flat_grad, self.opt.exp_avg[0], self.opt.exp_avg_sq[0], self.opt._step,
                     self.recipe.lr, self.recipe.betas, self.recipe.eps)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self._forward(x, None)[0], dim=1)


class AutogradTrainer:
    """The same recipe as an ordinary autograd loop with ``torch.optim.Adam``, for any module."""

    name = "autograd"

    def __init__(self, model: nn.Module, recipe: MinibatchRecipe, device: str):
        self.recipe, self.device = recipe, device
        self.model = copy.deepcopy(model).to(device)
        self.init = copy.deepcopy(self.model.state_dict())

    def fit(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, *,
            select: np.ndarray | None = None, weight: torch.Tensor | None = None) -> None:
        self.model.load_state_dict(self.init)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.recipe.lr, betas=self.recipe.betas,
                               eps=self.recipe.eps)
        loss_fn = nn.CrossEntropyLoss(reduction="none")
        with torch.random.fork_rng(devices=[] if str(self.device).startswith("cpu") else [self.device]):
            torch.manual_seed(int(rng.integers(2**62)))  # dropout masks
            self.model.train()
            for _ in range(self.recipe.epochs):
                order, bounds = _minibatches(len(x), self.recipe, rng, select)
                idx = torch.as_tensor(order, device=x.device)
                for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                    if b == a:
                        continue
                    rows = idx[a:b]
                    per = loss_fn(self.model(x[rows]), y[rows])
                    if weight is None:
                        loss = per.mean()
                    else:
                        w = weight[rows]
                        loss = (per * w).sum() / w.sum().clamp_min(1e-12)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return torch.softmax(self.model(x), dim=1)
