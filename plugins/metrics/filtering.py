"""Metric ``filtering``: the paper's filtering curves (its Figures 3-5).

For each fraction q of ``linspace(0, max_fraction, fractions)``, remove the round(q n)
source samples of lowest value ("remove-low") or of highest value ("remove-high"), train
a fresh model of the task's learner on the rest with the learner's own recipe (for the
paper's data: ADULT/BLOG Adam 1e-4, batch 250, 200 epochs; docs/protocol.md §3), and
score it on the held-out test set with the task's performance measure (AUROC, accuracy
or R^2). Every fraction and direction of a replicate starts from the same initial
weights and the same minibatch stream, so a curve's steps come from the removed samples
alone; ``replicates`` such curves (each its own initialisation) are averaged.

A good valuer's remove-low curve rises (it drops corrupted samples first) and its
remove-high curve falls. Scores are stored as ``filtering:remove-low@0.111`` etc.; ties
between values are broken by sample order. It retrains ``replicates x (2 fractions - 1)``
models per job (38 at the ADULT defaults, about 35 s on 2 CPU cores), so a run scores it
only when asked (``--metrics``, or a preset).

``training="minibatch"`` (default, the paper's): each model is trained alone with the
learner's minibatch recipe (the fast flat trainer for the paper's MLP).
``training="batched"``: every subset's model is trained at once as one stacked
computation, as LOO trains its models (valbench.training.stacked): full-batch Adam at the
learner's learning rate for as many steps as the minibatch recipe takes
(epochs x ceil(n / batch_size)), each model weighting only its kept rows. A different
recipe, so its curves differ from the default's in detail; much faster
(benchmarks/filtering_speed.py measures both). MLP learners only.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from valbench import hookimpl
from valbench.seeding import derive_seed
from valbench.training.models import build_model, fit_model, predict, single_thread, targets, tensor
from valbench.training.repeated import FlatMLPTrainer, MinibatchRecipe
from valbench.training.scoring import batched_performance, performance
from valbench.training.stacked import FullBatchRecipe, UnsupportedNetwork, train_stacked
from valbench.types import Split, Truth, ValuationTask


def curve_name(direction: str, q: float) -> str:
    return f"{direction}@{q:.3f}"


class Filtering:
    name = "filtering"
    version = "1"
    truth_kind = None  # it reads the task, not the truth: any corruption (or none)
    higher_is_better = True  # of the test score after removal (remove-low; remove-high should fall)
    by_default = False  # dozens of model fits per job: scored when asked
    uses_task = True
    test_params = {"fractions": 3, "replicates": 1}

    def __init__(self, *, fractions: int = 10, max_fraction: float = 0.5, replicates: int = 2,
                 training: Literal["minibatch", "batched"] = "minibatch"):
        self.fractions = fractions
        self.max_fraction = max_fraction
        self.replicates = replicates
        self.training = training

    def validate(self) -> None:
        if self.training not in ("minibatch", "batched"):
            raise ValueError(f"training must be minibatch or batched, got {self.training!r}")
        if self.fractions < 2:
            raise ValueError(f"fractions must be >= 2, got {self.fractions}")
        if not 0.0 < self.max_fraction < 1.0:
            raise ValueError(f"max_fraction must be in (0, 1), got {self.max_fraction}")
        if self.replicates < 1:
            raise ValueError(f"replicates must be >= 1, got {self.replicates}")

    def subsets(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """name -> 0/1 mask of the samples kept (q = 0 is one subset for both directions)."""
        n = len(values)
        order = np.argsort(values, kind="stable")
        out = {}
        for q in np.linspace(0.0, self.max_fraction, self.fractions):
            k = int(round(q * n))
            for direction, removed in (("remove-low", order[:k]), ("remove-high", order[n - k:] if k else order[:0])):
                keep = np.ones(n, dtype=bool)
                keep[removed] = False
                out[curve_name(direction, q)] = keep
        return out

    def score(self, values: np.ndarray, truth: Truth, *, task: ValuationTask, test: Split) -> dict[str, float]:
        if len(test) == 0:
            raise ValueError("filtering scores on the test set, and this dataset has none")
        subsets = self.subsets(np.asarray(values))
        if self.training == "batched":
            return _batched(subsets, task, test, self.replicates)
        totals = dict.fromkeys(subsets, 0.0)
        for r in range(self.replicates):
            fit = _Retrainer(task, test, derive_seed(task.seed, "filtering", r))
            done: dict[bytes, float] = {}
            for name, keep in subsets.items():
                key = keep.tobytes()
                if key not in done:  # q = 0 is the same subset in both directions
                    done[key] = fit(keep)
                totals[name] += done[key]
        return {name: total / self.replicates for name, total in totals.items()}


def _batched(subsets: dict[str, np.ndarray], task: ValuationTask, test: Split, replicates: int,
             models_per_batch: int = 32) -> dict[str, float]:
    """Every distinct subset's model trained at once per replicate (stacked), then scored on the test set."""
    learner, device = task.learner, task.device
    keys = list(dict.fromkeys(k.tobytes() for k in subsets.values()))  # q = 0 once
    keeps = np.stack([np.frombuffer(k, dtype=bool) for k in keys])
    y = np.asarray(task.source.y)
    weight = keeps.astype(np.float32)
    if learner.class_balance and task.n_classes is not None:  # each subset's own class balance
        for m, keep in enumerate(keeps):
            counts = np.bincount(y[keep], minlength=task.n_classes).astype(np.float64)
            weight[m] *= (keep.sum() / (task.n_classes * np.maximum(counts, 1.0)))[y]
    n = len(y)
    recipe = FullBatchRecipe(learner.epochs, learner.lr, "shared", compile=False)  # one full-batch step per epoch
    x = tensor(task.source.x, torch.float32, device)
    yt = targets(y, learner.supervised, device)
    x_test = tensor(test.x, torch.float32, device).flatten(1)
    y_test = targets(np.asarray(test.y), learner.supervised, device)
    index = torch.arange(n, device=device)
    w = torch.as_tensor(weight, device=device)
    totals = np.zeros(len(keys))
    for r in range(replicates):
        model = build_model(learner, derive_seed(task.seed, "filtering", r), device)
        try:
            for start in range(0, len(keys), models_per_batch):
                net = train_stacked(model, x, yt, index, w[start:start + models_per_batch],
                                    supervised=learner.supervised, recipe=recipe, seed=task.seed,
                                    stream=("filtering", r))
                out = net.predict(x_test, learner.supervised)
                totals[start:start + models_per_batch] += batched_performance(task.metric, y_test, out).cpu().numpy()
        except UnsupportedNetwork as exc:
            raise ValueError(f"filtering[training=batched] needs an MLP learner ({exc}); use training=minibatch")
    score = dict(zip(keys, totals / replicates))
    return {name: float(score[keep.tobytes()]) for name, keep in subsets.items()}


class _Retrainer:
    """Trains the task's learner on kept rows, from one initialisation and one stream."""

    def __init__(self, task: ValuationTask, test: Split, seed: int):
        self.task, self.test, self.seed = task, test, seed
        self.learner = task.learner
        self.model = build_model(self.learner, seed, task.device)
        self.flat = self.learner.supervised and FlatMLPTrainer.supports(self.model)

    def __call__(self, keep: np.ndarray) -> float:
        task, learner = self.task, self.learner
        y = np.asarray(task.source.y)
        weight = None
        if learner.class_balance and task.n_classes is not None:  # balance of the kept rows, as fit_learner
            counts = np.bincount(y[keep], minlength=task.n_classes).astype(np.float64)
            per_class = keep.sum() / (task.n_classes * np.maximum(counts, 1.0))
            weight = per_class[y]
        with single_thread(task.device):
            if self.flat:  # the paper's MLP: the fast trainer, the same recipe
                trainer = FlatMLPTrainer(self.model, MinibatchRecipe(learner.lr, learner.epochs, learner.batch_size),
                                         task.device)
                x = tensor(task.source.x, torch.float32, task.device).flatten(1)
                trainer.fit(x, targets(y, True, task.device), np.random.default_rng(self.seed), select=keep,
                            weight=None if weight is None else tensor(weight, torch.float32, task.device))
                out = trainer.predict_proba(tensor(self.test.x, torch.float32, task.device).flatten(1)).cpu().numpy()
            else:
                model = build_model(learner, self.seed, task.device)
                fit_model(learner, model, np.asarray(task.source.x)[keep], y[keep], seed=self.seed,
                          device=task.device, sample_weight=None if weight is None else weight[keep])
                out = predict(learner, model, np.asarray(self.test.x), task.device)
        return performance(task.metric, np.asarray(self.test.y), out)


@hookimpl
def register_metrics(register):
    register(Filtering)
