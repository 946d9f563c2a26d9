"""The exact fast engine: per-sample <g_i, g_t> and ||g_i||^2 without per-sample gradients.

One forward pass of a chunk records, for every layer with trainable parameters, its
input activation; one backward pass of the summed per-sample losses, taken w.r.t. the
layers' OUTPUTS (no weight gradients are formed), gives each sample's backward signal
(the gradient of its own loss w.r.t. its own layer output: samples do not interact).
Every supported layer's per-sample weight gradient is a product g_i(W) = B_i^T A_i with
B_i (T, out) and A_i (T, in) (:func:`factors`); with G the target gradient of W:

- T = 1 (Linear on 2-D input): <g_i, G> = b_i^T G a_i and ||g_i||^2 = ||b_i||^2 ||a_i||^2,
  about one extra matmul per layer, like the weight gradient a plain backward forms.
- T > 1 (Linear on sequences; Conv2d with A = the unfolded input, T = output positions;
  ConvTranspose2d with B = its input, A = the unfolded backward signal): per layer the
  cheaper exact route, the Gram identity ||B_i^T A_i||^2 = <A_i A_i^T, B_i B_i^T>, or
  forming this one layer's per-sample weight gradient and reducing it at once (cheaper
  for convolutions, whose kernels are small next to their activations). A full
  per-sample gradient over all layers is never held.
- bias: the backward signal summed over positions.

:meth:`FastEngine.fused_step` also takes the target mini-batch in the same forward and
backward pass: its gradient is sum_i B_i^T A_i over the target rows, so one pass gives
both g_t (for the similarity and the optimiser step) and every source sample's terms.

Layers with parameters of any other type (LayerNorm with affine, Embedding, custom
parameters...), grouped or non-zero-padded convolutions, and layers called more than
once per forward pass are not handled: :func:`unsupported` names them, and the caller
falls back to the Opacus engine.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from valbench.gradsim.engines import Engine, UnsupportedModel

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _conv_problem(m: nn.Module) -> str | None:
    if m.groups != 1:
        return "grouped convolution"
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r}"
    if isinstance(m.padding, str) and m.padding != "valid":
        return f"padding={m.padding!r}"
    return None


def owners(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[nn.Module, str]]:
    """Parameter name -> (owning module, attribute name)."""
    out = {}
    for name in names:
        mod_name, _, attr = name.rpartition(".")
        out[name] = (model.get_submodule(mod_name) if mod_name else model, attr)
    return out


def unsupported(model: nn.Module, names: Sequence[str], probe: torch.Tensor | None = None) -> str | None:
    """Why the fast engine cannot value these parameters, or None when it can.

    With ``probe`` (a few inputs) a forward pass also checks that each layer runs once.
    """
    for name, (module, attr) in owners(model, names).items():
        if not isinstance(module, SUPPORTED) or attr not in ("weight", "bias"):
            return f"parameter '{name}' belongs to a {type(module).__name__}, which the fast engine does not handle"
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and (why := _conv_problem(module)):
            return f"layer '{name.rpartition('.')[0]}' uses {why}"
    if probe is not None:
        calls: dict[nn.Module, int] = {}
        mods = {m for m, _ in owners(model, names).values()}
        handles = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1)) for m in mods]
        was_training = model.training
        model.eval()  # no dropout masks needed to count calls
        try:
            with torch.no_grad():
                model(probe)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        for m, c in calls.items():
            if c != 1:
                return f"layer {type(m).__name__} is called {c} times per forward pass (shared weights)"
    return None


def factors(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, A, s): per-sample weight gradient B_i^T A_i with B (n, T, out), A (n, T, in),
    in the layout of the weight viewed as (out, in); s (n, bias) the bias gradient."""
    n = a.shape[0]
    if isinstance(m, nn.Linear):
        if a.dim() == 2:
            return b.unsqueeze(1), a.unsqueeze(1), b
        B = b.reshape(n, -1, b.shape[-1])
        return B, a.reshape(n, -1, a.shape[-1]), B.sum(1)
    if isinstance(m, nn.Conv2d):
        padding = 0 if m.padding == "valid" else m.padding
        U = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)  # (n, C_in k k, L)
        B = b.flatten(2)  # (n, C_out, L)
        return B.transpose(1, 2), U.transpose(1, 2), B.sum(2)
    # ConvTranspose2d: y = fold(W^T x), W viewed as (C_in, C_out k k); the weight pairs
    # input channels with the backward signal unfolded at each input position.
    Ub = F.unfold(b, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    X = a.flatten(2)  # (n, C_in, L_in)
    if Ub.shape[2] != X.shape[2]:
        raise RuntimeError(f"ConvTranspose2d: {Ub.shape[2]} unfolded positions for {X.shape[2]} inputs")
    return X.transpose(1, 2), Ub.transpose(1, 2), b.flatten(2).sum(2)


def linear_terms(a: torch.Tensor, b: torch.Tensor, gw: torch.Tensor | None,
                 gb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample <g_i, G> and ||g_i||^2 of a Linear layer on 2-D input (the common case,
    in as few operations as possible): b_i^T (G_W a_i + G_b) and ||b_i||^2 (||a_i||^2 + 1)."""
    bn2 = torch.linalg.vector_norm(b, dim=1).square_()
    if gw is None:
        return b @ gb, bn2
    if gw.shape[0] <= gw.shape[1]:  # through the smaller intermediate, (n, out)
        z = a @ gw.T if gb is None else torch.addmm(gb, a, gw.T)
        dot = torch.linalg.vecdot(z, b)
    else:  # (n, in)
        dot = torch.linalg.vecdot(b @ gw, a)
        if gb is not None:
            dot += b @ gb
    an2 = torch.linalg.vector_norm(a, dim=1).square_()
    return dot, bn2 * (an2 + 1.0 if gb is not None else an2)


def sample_terms(B: torch.Tensor, A: torch.Tensor, s: torch.Tensor, gw: torch.Tensor | None,
                 gb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample <g_i, G> and ||g_i||^2 of one layer (weight and/or bias)."""
    n, T, out = B.shape
    inn = A.shape[2]
    dot = torch.zeros(n, dtype=B.dtype, device=B.device)
    sq = torch.zeros_like(dot)
    if gw is not None:
        G = gw.reshape(out, inn)
        if T == 1:
            b, a = B[:, 0], A[:, 0]
            # b_i^T G a_i through the smaller intermediate
            dot += torch.linalg.vecdot(a @ G.T, b) if out <= inn else torch.linalg.vecdot(b @ G, a)
            sq += (torch.linalg.vector_norm(b, dim=1) * torch.linalg.vector_norm(a, dim=1)).square_()
        elif T * (inn + out) < inn * out:  # Gram identity
            dot += ((B @ G) * A).sum((1, 2))
            sq += (torch.bmm(A, A.transpose(1, 2)) * torch.bmm(B, B.transpose(1, 2))).sum((1, 2))
        else:  # this layer's per-sample gradient, reduced at once
            g = torch.bmm(B.transpose(1, 2), A).reshape(n, -1)
            dot += g @ G.reshape(-1)
            sq += g.pow(2).sum(1)
    if gb is not None:
        dot += s @ gb
        sq += s.pow(2).sum(1)
    return dot, sq


def batch_grad(B: torch.Tensor, A: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_i B_i^T A_i (out, in) and sum_i s_i: the gradient of the summed loss."""
    return B.reshape(-1, B.shape[2]).T @ A.reshape(-1, A.shape[2]), s.sum(0)


class FastEngine(Engine):
    name = "fast"
    materialises = False

    def __init__(self, model, loss_fn, names, context, fusable: bool = False):
        """``fusable``: every trainable parameter is handled (see :func:`unsupported` with
        a probe), so the target pass may ride along (:meth:`fused_step`)."""
        super().__init__(model, loss_fn, names, context)
        if why := unsupported(model, names):
            raise UnsupportedModel(why)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.fusable = fusable and unsupported(model, [n for n, _ in trainable]) is None
        hooked = trainable if self.fusable else [(n, dict(trainable)[n]) for n in self.names]
        self.all_params = [p for _, p in trainable]
        self.slots: list[tuple[nn.Module, str]] = [owners(model, [n])[n] for n, _ in hooked]
        self.layers: list[nn.Module] = list(dict.fromkeys(m for m, _ in self.slots))
        # Per layer: the positions in `target` (the selected list) of its weight / bias.
        self.where: dict[nn.Module, dict[str, int]] = {m: {} for m in self.layers}
        for k, name in enumerate(self.names):
            module, attr = owners(model, [name])[name]
            self.where[module][attr] = k
        self.selected_layers = [m for m in self.layers if self.where[m]]
        self.selected_slots = [owners(model, [n])[n] for n in self.names]
        self._records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._capturing = False
        self._handles = [m.register_forward_hook(self._record) for m in self.layers]

    def _record(self, module, inputs, output):
        if self._capturing:
            if module in self._records:  # the probe in choose_engine rules this out
                raise UnsupportedModel(f"layer {type(module).__name__} is called twice per forward pass")
            self._records[module] = (inputs[0].detach(), output)

    def _forward(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        self.context.seeds = seeds
        self._records.clear()
        self._capturing = True
        try:
            return self.model(x)
        finally:
            self._capturing = False

    def _signals(self, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, coef: torch.Tensor | None,
                 layers: Sequence[nn.Module]) -> tuple[torch.Tensor, list[nn.Module], list[torch.Tensor | None]]:
        """One forward and one backward pass of sum_i coef_i l_i (coef None: 1).

        Returns (the per-sample losses times coef, the layers of ``layers`` that ran, each
        one's backward signal w.r.t. its output, None where the output is unused); every
        layer's input is left in ``self._records[layer][0]`` until ``_records.clear()``.
        """
        out = self._forward(x, seeds)
        per_sample = self.loss_fn(out, y)
        if coef is not None:
            per_sample = per_sample * coef  # one weighted sum: no slicing of big outputs
        mods = [m for m in layers if m in self._records]
        backs = torch.autograd.grad(per_sample.sum(), [self._records[m][1] for m in mods], allow_unused=True)
        return per_sample, mods, list(backs)

    def terms(self, x, y, seeds, target):
        _, mods, backs = self._signals(x, y, seeds, None, self.selected_layers)
        dot, sq = self._accumulate(mods, backs, target, 0, len(x))
        self._records.clear()
        return dot, sq

    def _accumulate(self, mods, backs, target, lo, hi):
        """Sum of the layers' terms for rows lo:hi of the recorded pass."""
        dot = sq = None
        for m, b in zip(mods, backs):
            w = self.where[m]
            if b is None or not w:
                continue
            gw = target[w["weight"]] if "weight" in w else None
            gb = target[w["bias"]] if "bias" in w else None
            a = self._records[m][0]
            if isinstance(m, nn.Linear) and a.dim() == 2:
                d, q = linear_terms(a[lo:hi], b[lo:hi], gw, gb)
            else:
                B, A, s = factors(m, a[lo:hi], b[lo:hi])
                d, q = sample_terms(B, A, s, gw, gb)
            dot, sq = (d, q) if dot is None else (dot + d, sq + q)
        if dot is None:
            dot = torch.zeros(hi - lo, dtype=self.params[0].dtype, device=self.params[0].device)
            sq = torch.zeros_like(dot)
        return dot, sq

    def fused_step(self, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, coef: torch.Tensor, nt: int,
                   ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One pass over rows [target batch (nt rows); source chunk].

        The target loss is sum_i coef_i l_i over the target rows (a weighted mean of the
        per-sample losses l_i; ``coef`` is 1 on source rows, whose losses are summed).
        Returns (target loss, target gradient of every trainable parameter in
        model.parameters() order, source dot, source sq), the terms taken against the
        target gradient of the selected parameters.
        """
        per_sample, mods, backs = self._signals(x, y, seeds, coef, self.layers)
        backs = [b if b is not None else torch.zeros_like(self._records[m][1]) for m, b in zip(mods, backs)]
        grads = {}
        for m, b in zip(mods, backs):
            a = self._records[m][0]
            if isinstance(m, nn.Linear) and a.dim() == 2:  # the target gradient: sum_i b_i a_i^T
                bt = b[:nt]
                grads[m, "weight"], grads[m, "bias"] = bt.T @ a[:nt], bt.sum(0)
            else:
                B, A, s = factors(m, a[:nt], b[:nt])
                grads[m, "weight"], grads[m, "bias"] = batch_grad(B, A, s)
        full = [grads[slot].reshape(p.shape) for slot, p in zip(self.slots, self.all_params)]
        by_slot = dict(zip(self.slots, full))
        target = [by_slot[slot] for slot in self.selected_slots]
        dot, sq = self._accumulate(mods, backs, target, nt, len(x))
        self._records.clear()
        return per_sample[:nt].detach().sum(), full, dot, sq

    def reset(self) -> None:
        self._records.clear()
        self._capturing = False

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
