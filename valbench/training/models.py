"""The paper's models and the functions that build, fit and predict with a
:class:`valbench.types.Learner` (its torch-free description).

Valuers and the filtering metric share these, so a method never wins because it trained
a different model.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from valbench.seeding import derive_seed, torch_generator
from valbench.training.defaults import default_learner  # noqa: F401 (re-exported)
from valbench.types import Learner


class MLP(nn.Module):
    """The paper's classifier: [Linear -> Dropout -> Mish -> Norm] x len(hidden) -> Linear.

    "Norm" is a LayerNorm without affine parameters (the original applied
    InstanceNorm1d to (batch, features), which normalises each sample on its own).
    Outputs logits of shape (n, out_features).
    """

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...] = (100, 100),
                 dropout: float = 0.5, norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Dropout(dropout), nn.Mish()]
            if norm:
                layers.append(nn.LayerNorm(h, elementwise_affine=False))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPAutoencoder(nn.Module):
    """The paper's expression autoencoder (docs/protocol.md §1): d -> hidden -> latent ->
    hidden -> d, Mish, no norm."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (250,), latent: int = 32):
        super().__init__()

        def stack(widths: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(nn.Linear(a, b))
                if i < len(widths) - 2:
                    layers.append(nn.Mish())
            return nn.Sequential(*layers)

        self.encoder = stack([in_features, *hidden, latent])
        self.decoder = stack([latent, *reversed(hidden), in_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)


class ConvAutoencoder(nn.Module):
    """The paper's image autoencoder (exp7, docs/protocol.md): C -> 32 -> 32 -> latent channels with
    stride-2 4x4 convolutions (32x32 -> 16 -> 8 -> 4), Mish between layers, and the
    mirror image with transposed convolutions. Outputs the reconstruction, shaped as x
    (x may also come flattened, as (n, C*H*W))."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: tuple[int, ...] = (32, 32), latent: int = 10):
        super().__init__()
        self.in_shape = tuple(in_shape)

        def stack(widths: list[int], conv: type) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(conv(a, b, kernel_size=4, stride=2, padding=1))
                if i < len(widths) - 2:
                    layers.append(nn.Mish())
            return nn.Sequential(*layers)

        channels = [self.in_shape[0], *hidden, latent]
        self.encoder = stack(channels, nn.Conv2d)
        self.decoder = stack(channels[::-1], nn.ConvTranspose2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.reshape(-1, *self.in_shape))).view_as(x)


ARCHITECTURES: dict[str, Callable[[Learner], nn.Module]] = {
    "mlp": lambda l: MLP(l.in_features, l.out_features, l.hidden, l.dropout, l.norm),
    "mlp-autoencoder": lambda l: MLPAutoencoder(l.in_features, l.hidden, l.latent),
    "conv-autoencoder": lambda l: ConvAutoencoder(l.in_shape, l.hidden, l.latent),
}


@contextlib.contextmanager
def single_thread(device: str) -> Iterator[None]:
    """Run torch's CPU ops on one intra-op thread (restored afterwards). The tensors of a
    small classifier's training step are too small for threads to pay off, and on a busy
    machine spinning threads cost a lot (an ADULT step was 3.4x to 50x slower with 2
    threads than with 1 on the shared 2-core development machine; see
    benchmarks/fastfit_speed.py). No effect on other devices."""
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(learner: Learner, seed: int, device: str = "cpu") -> nn.Module:
    """A freshly initialised model of ``learner``; the same seed gives the same weights
    (``build_model(task.learner, task.seed)`` is the initialisation every valuer of a
    cell shares)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = ARCHITECTURES[learner.architecture](learner)
    return model.to(device)


def loss_function(learner: Learner, reduction: str = "mean", class_weights: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy (supervised learners) or MSE over features per sample (autoencoders)."""
    if learner.supervised:
        return nn.CrossEntropyLoss(weight=class_weights, reduction=reduction)
    return _MSEPerSample(reduction)


EpochCallback = Callable[[int, nn.Module], "bool | None"]


def fit_model(learner: Learner, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int,
              device: str = "cpu", sample_weight: np.ndarray | None = None,
              on_epoch: EpochCallback | None = None) -> nn.Module:
    """Train ``model`` in place with ``learner``'s recipe (Adam, mini-batches reshuffled
    each epoch). Every random choice (batch order, dropout masks) comes from ``seed``;
    the global torch generators are left as they were. ``on_epoch(epoch, model)`` (epoch
    counted from 1) is called after every epoch, e.g. to take a checkpoint (TracIn); it
    must not draw from torch's global generator, and returning True ends the training
    there. The model is back in train mode after each call."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "fit-dropout"))
        xt = tensor(x, torch.float32, device)
        yt = targets(y, learner.supervised, device)
        wt = None if sample_weight is None else tensor(sample_weight, torch.float32, device)
        loss_fn = loss_function(learner, reduction="none")
        opt = torch.optim.Adam(model.parameters(), lr=learner.lr)
        gen = torch_generator(seed, "fit-batches")
        n = len(xt)
        model.train()
        for epoch in range(learner.epochs):
            order = torch.randperm(n, generator=gen).to(device)
            for start in range(0, n, learner.batch_size):
                idx = order[start:start + learner.batch_size]
                per_sample = loss_fn(model(xt[idx]), yt[idx])
                loss = per_sample.mean() if wt is None else (per_sample * wt[idx]).sum() / wt[idx].sum().clamp_min(1e-12)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if on_epoch is not None:
                stop = on_epoch(epoch + 1, model)
                model.train()
                if stop:
                    break
    return model


@torch.no_grad()
def predict(learner: Learner, model: nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Class probabilities (n, K) for supervised learners, reconstructions otherwise."""
    model.eval()
    out = model(tensor(x, torch.float32, device))
    if learner.supervised:
        out = torch.softmax(out, dim=1)
    return out.cpu().numpy()


# The stream of the one model fitted on the target set. target-loss and
# confident-learning[model=learner] share it, so they use the very same model: their
# values are then monotone transforms of each other (-CE = log p(y)), by design.
TARGET_MODEL = "target-model"
# The stream of the one model fitted on the source set with the learner's own recipe:
# influence and tracin (at its default epochs and lr) value the very same model.
SOURCE_MODEL = "source-model"


def fit_learner(learner: Learner, x: np.ndarray, y: np.ndarray, n_classes: int | None, *, seed: int,
                device: str, label: str, on_epoch: EpochCallback | None = None,
                sample_weight: np.ndarray | None = None) -> nn.Module:
    """The task's model from its seeded initialisation, trained on (x, y) with the learner's
    recipe (:func:`fit_model`, seeded by (seed, ``label``); ``on_epoch`` as there), on one
    thread on CPU. A class-balanced learner (ADULT, BLOG) weights each sample by
    w_c = n / (K n_c) of its class, as DVGS weights its target loss; ``sample_weight``
    (one per row) multiplies that weight."""
    model = build_model(learner, seed, device)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
    if learner.class_balance and n_classes is not None:
        balance = class_weights(y, n_classes)[np.asarray(y, dtype=np.int64)]
        weight = balance if weight is None else balance * weight
    with single_thread(device):
        return fit_model(learner, model, x, y, seed=derive_seed(seed, label), device=device, sample_weight=weight,
                         on_epoch=on_epoch)


class _MSEPerSample(nn.Module):
    """Mean squared error over features, per sample (or reduced over the batch)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # mse_loss's own backward kernel: the same values as (out - target) ** 2, and about
        # half the time of autograd through pow on large outputs
        per = F.mse_loss(out, target, reduction="none").flatten(1).mean(dim=1)
        return per.mean() if self.reduction == "mean" else per.sum() if self.reduction == "sum" else per


def tensor(a: np.ndarray, dtype: torch.dtype, device: str | torch.device = "cpu") -> torch.Tensor:
    """A torch copy of ``a`` (task arrays are read-only numpy views, which torch must not share)."""
    return torch.tensor(np.asarray(a), dtype=dtype, device=device)


def targets(y: np.ndarray, supervised: bool, device: str | torch.device = "cpu") -> torch.Tensor:
    """Labels as int64 (supervised) or reconstruction targets as float32, a torch copy."""
    return tensor(y, torch.long if supervised else torch.float32, device)


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights w_c = n / (K * n_c) (0 for an absent class)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, len(y) / (n_classes * counts), 0.0)
    return w.astype(np.float32)
