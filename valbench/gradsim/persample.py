"""Per-sample gradient dot products at given parameters, for gradient-based valuers
other than DVGS (influence functions, TracIn).

:class:`SampleGradients` holds a private copy of a model, readied as the DVGS engines
need it (FastMish, dropout off: the gradients are those of the deterministic network),
and answers, for every sample i of one fixed set and any vector v over the selected
parameters, <g_i, v> and ||g_i||^2 with g_i the gradient of sample i's own loss, through
the same engines and memory-safe chunking as DVGS (:mod:`valbench.gradsim.driver`).
``load(model)`` copies in new parameter values (a training checkpoint) without
rebuilding anything.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from valbench.gradsim.driver import ChunkState, activation_bytes, build_engine, choose_engine, initial_chunk
from valbench.gradsim.driver import source_terms
from valbench.gradsim.engines import PerSampleLoss, select_parameters
from valbench.gradsim.layers import prepare_model
from valbench.training.models import build_model, class_weights, loss_function, tensor
from valbench.types import Learner, ValuationTask

SOURCE_BATCH = 400  # samples per chunk for the materialising engines (opacus, naive): memory only
LOSS_CHUNK = 4096  # samples per forward pass of a mean-loss gradient (bounds memory only)


class SampleGradients:
    """<g_i, v> and ||g_i||^2 for every row of (x, y) at a model's parameters.

    ``loss_fn``: per-sample loss (out, y) -> (n,); ``parameters``: all, last or a regular
    expression (:func:`~valbench.gradsim.engines.select_parameters`); ``engine``: auto,
    fast, opacus or naive (:func:`~valbench.gradsim.driver.choose_engine`). Raises
    UnsupportedModel (a ValueError) when the model cannot be valued so.
    """

    def __init__(self, model: nn.Module, loss_fn: PerSampleLoss, x: torch.Tensor, y: torch.Tensor, *,
                 parameters: str = "all", engine: str = "auto"):
        self.model = copy.deepcopy(model)
        self.context, _ = prepare_model(self.model, dropout=False)
        self.names = select_parameters(self.model, parameters)
        named = dict(self.model.named_parameters())
        self.params = [named[n] for n in self.names]
        self.loss_fn, self.x, self.y = loss_fn, x, y
        self.choice = choose_engine(engine, self.model, self.names, x[:2])
        self.engine = build_engine(self.choice.name, self.model, loss_fn, self.names, self.context,
                                   self.choice.fusable, self.choice.plan)
        self.seeds = torch.zeros(len(x), dtype=torch.int32, device=x.device)  # no dropout: unused
        act = activation_bytes(self.model, x[:64], self.context)
        self.chunk = ChunkState(initial_chunk(self.engine, SOURCE_BATCH, len(x), act, x.device))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def load(self, model: nn.Module) -> None:
        """Take ``model``'s current parameter values (same architecture as the original)."""
        with torch.no_grad():
            mine = dict(self.model.named_parameters())
            for name, p in model.named_parameters():
                mine[name].copy_(p)

    def dots(self, vectors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(<g_i, v>, ||g_i||^2) for every row, v given as one tensor per selected parameter."""
        return source_terms(self.engine, self.x, self.y, self.seeds, list(vectors), self.chunk)

    def mean_gradient(self, x: torch.Tensor, y: torch.Tensor, coef: torch.Tensor) -> list[torch.Tensor]:
        """The gradient of sum_j coef_j * loss(x_j, y_j) over the selected parameters."""
        total = [torch.zeros_like(p) for p in self.params]
        for start in range(0, len(x), LOSS_CHUNK):
            part = slice(start, start + LOSS_CHUNK)
            self.context.seeds = self.seeds[:1].expand(len(x[part]))
            loss = (self.loss_fn(self.model(x[part]), y[part]) * coef[part]).sum()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True, materialize_grads=True)
            for t, g in zip(total, grads):
                t += g
        return total

    def close(self) -> None:
        self.engine.close()


@dataclass(frozen=True)
class TaskTensors:
    """A task's sets on its device, with the weights of the learner's objectives.

    ``ys``/``yt`` are the labels, or (unsupervised) the inputs themselves.
    ``source_weight``: w_i of each source sample in the learner's training loss (w_c =
    n / (K n_c) of its class where the learner is class-balanced, else 1), as
    :func:`~valbench.training.models.fit_learner` weights it; ``target_coef``: the
    coefficients of the mean target loss, balanced the same way over the target set
    (as DVGS weights it), summing to 1.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    source_weight: torch.Tensor
    target_coef: torch.Tensor


def task_tensors(task: ValuationTask) -> TaskTensors:
    device = task.device
    xs, xt = tensor(task.source.x, torch.float32, device), tensor(task.target.x, torch.float32, device)
    if task.supervised:
        ys, yt = tensor(task.source.y, torch.long, device), tensor(task.target.y, torch.long, device)
    else:  # y = x: a noisy sample's reconstruction target is the noisy sample itself
        ys, yt = xs, xt
    ws = torch.ones(len(xs), device=device)
    ct = torch.ones(len(xt), device=device)
    if task.learner.class_balance and task.supervised:
        ws = tensor(class_weights(task.source.y, task.n_classes), torch.float32, device)[ys]
        ct = tensor(class_weights(task.target.y, task.n_classes), torch.float32, device)[yt]
    return TaskTensors(xs, ys, xt, yt, ws, ct / ct.sum())


def check_sample_gradients(learner: Learner, task: ValuationTask, parameters: str, engine: str) -> None:
    """Raise ValueError (one line) unless ``learner``'s model can be valued with these
    ``parameters`` and ``engine``: a probe on two source rows, on the CPU (a check before
    any work needs neither the device nor the whole data there)."""
    x = tensor(task.source.x[:2], torch.float32, "cpu")
    y = tensor(task.source.y[:2], torch.long, "cpu") if task.supervised else x
    SampleGradients(build_model(learner, task.seed), loss_function(learner, "none"), x, y,
                    parameters=parameters, engine=engine).close()
