"""Batched training: many copies of a small sequential network trained as one computation.

The parameters of M copies of a network are stacked along a leading model axis and
trained together with batched matrix products, each copy on its own sample weights
(0/1 masks, bootstrap counts) over a shared or per-copy set of source rows. Adam is
elementwise, so one Adam over the stacked tensors is exactly M independent Adams.
This is how LOO's leave-one-out models, TMC-Shapley's prefix models and Data-OOB's
bags are fitted.

The recipe is the DVGS port's utility fit (docs/protocol.md, 'The DVGS port'):
``steps`` full-batch Adam steps at ``lr`` (200 and 1e-4 there) from one initialisation,
loss = weighted mean of the per-row loss (cross-entropy, or MSE over features for autoencoders).

Dropout (the port trained its utility models in train mode). ``dropout="shared"``:
every step draws one mask per dropout layer with one row per SOURCE sample, and every
copy uses row i for source sample i, whatever rows it trains on. ``dropout="off"``:
no dropout while training. Either way a copy's training is a deterministic function of
(initialisation, its weights, the mask stream), so batched and one-at-a-time training
(:func:`train_single`) give the same model up to floating-point reassociation, and
copies that differ in one sample are paired (same masks on every shared sample).

The gradients: on CPU, for the paper's MLP classifier (Linear -> Dropout -> Mish ->
LayerNorm, at least one hidden layer), the native extension's (valbench.training.native:
the same matrix products, the element-wise work between them in as few passes over the
activations as it can, the output layer folded into the last hidden layer's pass); else
the chain passes below, under torch.compile when ``FullBatchRecipe.compile``. They agree
within float32 rounding (tests/test_native.py bounds both against float64).

Supported layers: Linear, Dropout, Mish, ReLU, Tanh, Identity and LayerNorm without
affine parameters, run in the order the network declares them (valbench's MLP and MLP
autoencoder); :meth:`StackedNet.replicate` checks that the stacked forward reproduces
the module's own forward and refuses anything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from valbench.training import native
from valbench.training.adam import Adam
from valbench.training.chain import (Chain, NotAChain, Plan, Spec, chain_backward, chain_forward, chain_layers,
                                    chain_spec, dropout_inputs)
from valbench.seeding import torch_generator

DropoutMode = Literal["shared", "off"]


class UnsupportedNetwork(ValueError):
    """The network is not a plain sequence of the supported layers."""


def _chain(model: nn.Module) -> Plan:
    try:
        return chain_layers(model)
    except NotAChain as exc:
        raise UnsupportedNetwork(f"batched training {exc}") from None


def layer_spec(model: nn.Module) -> tuple[Spec, list[nn.Linear]]:
    """The layer sequence of ``model`` and its Linear layers, in declaration order
    (valbench.training.chain.chain_layers: the same layers, the same checks)."""
    layers = _chain(model)
    return chain_spec(layers), [m for kind, m in layers if kind == "linear"]


def _dropout_input_widths(model: nn.Module) -> list[int]:
    """Width of the activation each dropout layer sees (the previous Linear's out)."""
    return [width for _, width in dropout_inputs(_chain(model))]


def dropout_widths(spec: Spec) -> list[tuple[int, float]]:
    """(position in spec, p) for each dropout layer with p > 0."""
    return [(i, s[1]) for i, s in enumerate(spec) if s[0] == "dropout" and s[1] > 0]


def stacked_chain(spec: Spec, params: list[torch.Tensor]) -> Chain:
    """The chain (valbench.training.chain) of M stacked copies: ``params`` alternate
    weight (M, out, in) and bias (M, out)."""
    out, li = [], 0
    for s in spec:
        if s[0] == "linear":
            out.append(("linear", params[2 * li], params[2 * li + 1]))
            li += 1
        else:  # spec's dropout layers all have p > 0 (chain_layers leaves p = 0 out)
            out.append(("layernorm", s[1]) if s[0] == "layernorm" else (s[0],))
    return out


def stacked_forward(spec: Spec, params: list[torch.Tensor], x: torch.Tensor,
                    masks: list[torch.Tensor] | None) -> torch.Tensor:
    """Outputs (M, n, out) of M stacked copies.

    ``x`` is (n, d) shared by every copy or (M, n, d) per copy; ``params`` alternate
    weight (M, out, in) and bias (M, out); ``masks`` (train mode) holds one scaled
    dropout mask per dropout layer, (n, h) shared or (M, n, h) per copy; None = eval.
    """
    return chain_forward(stacked_chain(spec, params), x, None if masks is None else lambda k, width: masks[k])[0]


def _stacked_grads(spec: Spec, supervised: bool, params: list[torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor, weight: torch.Tensor, masks: list[torch.Tensor] | None) -> list[torch.Tensor]:
    """Gradients of the sum over copies of each copy's weighted mean loss (copies do not
    interact), by the chain's hand-written passes: no autograd graph, and the backward
    pass reuses what the forward pass kept (Mish's derivative, LayerNorm's statistics)."""
    chain = stacked_chain(spec, params)
    out, saved = chain_forward(chain, x, (lambda k, width: masks[k]) if masks is not None else lambda k, width: None)
    M, n = out.shape[0], out.shape[1]
    if supervised:  # d CE / d logits = softmax - onehot
        target = y.expand(M, n) if y.dim() == 1 else y
        d = torch.softmax(out, dim=2) - F.one_hot(target, out.shape[2]).to(out.dtype)
    else:  # d mean((out - target)^2 over features) / d out
        target = y.expand(M, *y.shape) if y.dim() == 2 else y
        d = (out - target) * (2.0 / out.shape[2])
    d = d * (weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-12))[:, :, None]
    grads: list[torch.Tensor] = [torch.empty(0)] * len(params)

    def write(j: int, signal: torch.Tensor, inp: torch.Tensor) -> None:
        grads[2 * j] = signal.transpose(1, 2) @ inp  # (M, out, in); inp may be (n, in), shared
        grads[2 * j + 1] = signal.sum(dim=1)

    chain_backward(chain, saved, d, write)
    return grads


class _Grads:
    """The stacked gradients: on CPU for the paper's MLP the native extension
    (valbench.training.native: the same matrix products, each layer's element-wise part in
    one pass), else the chain passes, compiled with torch.compile when asked and possible.

    If compilation fails (no C++ compiler, an unsupported platform), the eager passes are
    used from then on and ``compile_error`` says why; results agree within rounding.
    ``last`` says which ran last: "native", "compile" or "eager".
    """

    _compiled = None
    compile_error: str | None = None
    last = "eager"
    native_missed: str | None = None  # why the last call did not run natively although it applied

    @classmethod
    def call(cls, compile: bool, *args, workspace: list) -> list[torch.Tensor]:
        """The gradients; ``workspace``: a list the caller keeps for the steps of one training
        (empty at first), where the native path keeps its activation buffers."""
        spec, supervised, params, x, y, weight, masks = args
        cls.native_missed = None
        plan = native.mlp_plan(spec) if supervised and params[0].device.type == "cpu" and native.enabled() else None
        if plan is not None and plan[0]:  # the native gradients apply (at least one hidden layer)
            module = native.load()
            cls.native_missed = None if module is not None else native.unavailable_reason()
            if module is not None:
                # dropout="off" gives no masks: every dropout layer is then the identity
                dropout, norm, eps = [p > 0 and bool(masks) for p in plan[0]], plan[1], plan[2]
                cls.last = "native"
                if not workspace:  # 2 H + 1 buffers of (copies, rows, widest hidden layer)
                    size = params[0].shape[0] * weight.shape[1] * max(p.shape[1] for p in params[:-2:2])
                    workspace.extend(torch.empty(size, device=params[0].device) for _ in range(2 * len(dropout) + 1))
                return module.stacked_grads(params, x, y, weight, masks or [], dropout, norm, eps, workspace)
        if not compile or cls.compile_error is not None:
            cls.last = "eager"
            return _stacked_grads(*args)
        if cls._compiled is None:
            cls._compiled = torch.compile(_stacked_grads, dynamic=None)
        try:
            out = cls._compiled(*args)
            cls.last = "compile"
            return out
        except Exception as exc:  # compilation problems surface at the first call
            cls.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            cls.last = "eager"
            return _stacked_grads(*args)


def compile_status() -> str | None:
    """Why torch.compile was given up in this process (None: not given up)."""
    return _Grads.compile_error


def training_label(compile: bool) -> str:
    """What actually ran (the last batched training in this process), for a valuation's
    info: "batched+native", "batched", "batched+compile" or why not."""
    if _Grads.last == "native":
        return "batched+native"
    if not compile:
        label = "batched"
    else:
        label = "batched+compile" if _Grads.compile_error is None else f"batched (compile failed: {_Grads.compile_error})"
    why = _Grads.native_missed
    return label if why is None else f"{label} (native unavailable: {why})"


@dataclass(frozen=True)
class FullBatchRecipe:
    """How each copy is trained: ``steps`` full-batch Adam steps at ``lr``."""

    steps: int = 200
    lr: float = 1e-4
    dropout: DropoutMode = "shared"
    compile: bool = False  # torch.compile the stacked passes where the native gradients do not run


class MaskStream:
    """Dropout masks by source sample: step t, layer j -> a (n_source, h_j) scaled mask.

    The same (seed, stream) gives the same masks on a device, whatever is trained on them.
    """

    def __init__(self, spec: Spec, widths: list[int], n_source: int, seed: int, stream: object, device: str):
        self.drops = [p for _, p in dropout_widths(spec)]
        self.widths = widths
        self.n = n_source
        self.gen = torch_generator(seed, "batched-dropout", stream, device=torch.device(device).type)
        self.device = device

    def next(self) -> list[torch.Tensor]:
        out = []
        for p, h in zip(self.drops, self.widths):
            u = torch.rand(self.n, h, generator=self.gen, device=self.device)
            out.append((u >= p).to(torch.float32) * (1.0 / (1.0 - p)))
        return out


class StackedNet:
    """M copies of a network as stacked parameter tensors (M, ...) on one device."""

    def __init__(self, spec: Spec, params: list[torch.Tensor], dropout_h: list[int]):
        self.spec = spec
        self.params = params
        self.dropout_h = dropout_h

    @property
    def copies(self) -> int:
        return self.params[0].shape[0]

    @classmethod
    def replicate(cls, model: nn.Module, copies: int, device: str) -> "StackedNet":
        """``copies`` copies of ``model``'s current weights (the same initialisation)."""
        spec, linears = layer_spec(model)
        params = []
        for lin in linears:
            w = lin.weight.detach().to(device, torch.float32)
            b = lin.bias.detach().to(device, torch.float32) if lin.bias is not None else torch.zeros(
                lin.out_features, device=device)
            params += [w.expand(copies, *w.shape).clone(), b.expand(copies, *b.shape).clone()]
        net = cls(spec, params, _dropout_input_widths(model))
        net._check_against(model, device)
        return net

    def _check_against(self, model: nn.Module, device: str) -> None:
        was = model.training
        model.eval()
        with torch.no_grad():
            probe = torch.randn(3, self.params[0].shape[2], generator=torch.Generator().manual_seed(0))
            ref = model(probe.to(next(model.parameters()).device)).reshape(3, -1).to(device)
            got = stacked_forward(self.spec, [p[:1] for p in self.params], probe.to(device), None)[0]
        model.train(was)
        if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
            raise UnsupportedNetwork("the network's forward is not the plain sequence of its layers")

    def load_into(self, model: nn.Module, j: int) -> nn.Module:
        """Copy stacked copy ``j``'s weights into ``model`` (same architecture)."""
        _, linears = layer_spec(model)
        with torch.no_grad():
            for i, lin in enumerate(linears):
                lin.weight.copy_(self.params[2 * i][j])
                if lin.bias is not None:
                    lin.bias.copy_(self.params[2 * i + 1][j])
        return model

    @torch.no_grad()
    def predict(self, x: torch.Tensor, supervised: bool, batch_rows: int = 8192) -> torch.Tensor:
        """(M, n, out): class probabilities (supervised) or reconstructions, dropout off."""
        outs = []
        for start in range(0, x.shape[0], batch_rows):
            out = stacked_forward(self.spec, self.params, x[start:start + batch_rows].flatten(1), None)
            outs.append(torch.softmax(out, dim=2) if supervised else out)
        return torch.cat(outs, dim=1)


def train_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                  weight: torch.Tensor, *, supervised: bool, recipe: FullBatchRecipe, seed: int,
                  stream: object = 0) -> StackedNet:
    """Train ``weight.shape[0]`` copies of ``model`` (its current weights) at once.

    ``x`` (N, ...), ``y`` (N,) labels or (N, d) reconstruction targets: the whole source
    set on the training device. ``index``: rows of it, (n,) shared by every copy or
    (M, n) per copy; ``weight`` (M, n): each copy's weight per row (0 = not used; a
    copy's loss is sum(w * loss) / sum(w)). Dropout masks come from mask stream
    (seed, stream). ``model`` itself is not changed.
    """
    M = weight.shape[0]
    device = weight.device
    net = StackedNet.replicate(model, M, str(device))
    xf = x.flatten(1)
    xb = xf[index]  # (n, d) or (M, n, d)
    yb = y[index]
    params = net.params
    opt = Adam(params, lr=recipe.lr)  # torch's fused kernel where it runs: one pass over all copies' parameters
    use_dropout = recipe.dropout == "shared" and bool(dropout_widths(net.spec))
    masks_src = MaskStream(net.spec, net.dropout_h, len(x), seed, stream, str(device)) if use_dropout else None
    w = weight.to(torch.float32)
    workspace: list[torch.Tensor] = []  # the native gradients' buffers, reused by every step
    for _ in range(recipe.steps):
        masks = None
        if masks_src is not None:
            masks = [m[index] for m in masks_src.next()]
        opt.step(_Grads.call(recipe.compile, net.spec, supervised, params, xb, yb, w, masks, workspace=workspace))
    return net


def train_single(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, *,
                 supervised: bool, recipe: FullBatchRecipe, seed: int, stream: object = 0) -> nn.Module:
    """The one-at-a-time path: train ``model`` in place on source rows ``rows`` (a 1-D
    index, repeats allowed) with the same recipe and mask stream as :func:`train_stacked`.

    A plain ``nn.Module`` loop with ``torch.optim.Adam``; in "shared" mode each Dropout's
    output is replaced (forward hook, model in eval mode) by input * the stream's mask
    rows for ``rows``. Used by tests and benchmarks to check the batched path.
    """
    spec, _ = layer_spec(model)
    device = rows.device
    masks_src = None
    if recipe.dropout == "shared" and dropout_widths(spec):
        masks_src = MaskStream(spec, _dropout_input_widths(model), len(x), seed, stream, str(device))
    current: list[torch.Tensor] = []
    drops = [m for kind, m in _chain(model) if kind == "dropout"]
    hooks = []
    for j, d in enumerate(drops):
        hooks.append(d.register_forward_hook(lambda mod, inp, out, j=j: inp[0] * current[j] if current else out))
    xb, yb = x.flatten(1)[rows], y[rows]
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.eval()  # nn.Dropout is the identity; the hooks apply the stream's masks
    loss_fn = nn.CrossEntropyLoss() if supervised else nn.MSELoss()
    try:
        for _ in range(recipe.steps):
            current[:] = [m[rows] for m in masks_src.next()] if masks_src is not None else []
            out = model(xb).reshape(len(rows), -1)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for h in hooks:
            h.remove()
    return model
