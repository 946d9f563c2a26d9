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

from valbench import hookimpl
from valbench.seeding import derive_seed
from valbench.types import Split, Truth, ValuationTask


def curve_name(direction: str, q: float) -> str:
    return f"{direction}@{q:.3f}"


class Filtering:
    name = "filtering"
    version = "2"  # 2: its retrains (one by one or batched) run natively on CPU (float32 rounding differs)
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
        distinct = list(dict.fromkeys(keep.tobytes() for keep in subsets.values()))  # q = 0 once for both directions
        keeps = np.stack([np.frombuffer(k, dtype=bool) for k in distinct])
        fit = _stacked if self.training == "batched" else _one_by_one
        total = sum(fit(keeps, task, test, r) for r in range(self.replicates))
        score = dict(zip(distinct, total / self.replicates))
        return {name: float(score[keep.tobytes()]) for name, keep in subsets.items()}


def _balance(y: np.ndarray, keep: np.ndarray, n_classes: int | None, learner) -> np.ndarray | None:
    """Per-row weights n / (K n_c) over the kept rows, as fit_learner balances a class-balanced learner."""
    if not learner.class_balance or n_classes is None:
        return None
    counts = np.bincount(y[keep], minlength=n_classes).astype(np.float64)
    return (keep.sum() / (n_classes * np.maximum(counts, 1.0)))[y]


def _stacked(keeps: np.ndarray, task: ValuationTask, test: Split, replicate: int,
             models_per_batch: int = 32) -> np.ndarray:
    """The test score of every subset's model (rows of ``keeps``), trained at once (stacked)."""
    import torch  # here: loading the plugins stays torch-free

    from valbench.training.models import build_model, targets, tensor
    from valbench.training.scoring import batched_performance
    from valbench.training.stacked import FullBatchRecipe, UnsupportedNetwork, train_stacked

    learner, device = task.learner, task.device
    y = np.asarray(task.source.y)
    weight = keeps.astype(np.float32)
    for m, keep in enumerate(keeps):  # each subset's own class balance
        balance = _balance(y, keep, task.n_classes, learner)
        if balance is not None:
            weight[m] *= balance
    recipe = FullBatchRecipe(learner.epochs, learner.lr, "shared", compile=False)  # one full-batch step per epoch
    x, yt = tensor(task.source.x, torch.float32, device), targets(y, learner.supervised, device)
    x_test = tensor(test.x, torch.float32, device).flatten(1)
    y_test = targets(np.asarray(test.y), learner.supervised, device)
    index, w = torch.arange(len(y), device=device), torch.as_tensor(weight, device=device)
    model = build_model(learner, derive_seed(task.seed, "filtering", replicate), device)
    out = np.empty(len(keeps))
    try:
        for start in range(0, len(keeps), models_per_batch):
            net = train_stacked(model, x, yt, index, w[start:start + models_per_batch], supervised=learner.supervised,
                                recipe=recipe, seed=task.seed, stream=("filtering", replicate))
            out[start:start + models_per_batch] = batched_performance(
                task.metric, y_test, net.predict(x_test, learner.supervised)).cpu().numpy()
    except UnsupportedNetwork as exc:
        raise ValueError(f"filtering[training=batched] needs an MLP learner ({exc}); use training=minibatch")
    return out


def _one_by_one(keeps: np.ndarray, task: ValuationTask, test: Split, replicate: int) -> np.ndarray:
    """The test score of every subset's model, each trained alone with the learner's own recipe,
    all from one initialisation and one minibatch stream."""
    import torch

    from valbench.training.models import build_model, fit_model, predict, single_thread, targets, tensor
    from valbench.training.repeated import FlatMLPTrainer, MinibatchRecipe
    from valbench.training.scoring import performance

    learner, device = task.learner, task.device
    seed = derive_seed(task.seed, "filtering", replicate)
    model = build_model(learner, seed, device)
    y, y_test = np.asarray(task.source.y), np.asarray(test.y)
    flat = learner.supervised and FlatMLPTrainer.supports(model)
    if flat:  # the paper's MLP: the fast trainer (reset to the initial weights by every fit), the same recipe
        trainer = FlatMLPTrainer(model, MinibatchRecipe(learner.lr, learner.epochs, learner.batch_size), device)
        x, yt = tensor(task.source.x, torch.float32, device).flatten(1), targets(y, True, device)
        x_test = tensor(test.x, torch.float32, device).flatten(1)
    out = np.empty(len(keeps))
    with single_thread(device):
        for m, keep in enumerate(keeps):
            weight = _balance(y, keep, task.n_classes, learner)
            if flat:
                trainer.fit(x, yt, np.random.default_rng(seed), select=keep,
                            weight=None if weight is None else tensor(weight, torch.float32, device))
                pred = trainer.predict_proba(x_test).cpu().numpy()
            else:
                fresh = build_model(learner, seed, device)
                fit_model(learner, fresh, np.asarray(task.source.x)[keep], y[keep], seed=seed, device=device,
                          sample_weight=None if weight is None else weight[keep])
                pred = predict(learner, fresh, np.asarray(test.x), device)
            out[m] = performance(task.metric, y_test, pred)
    return out


@hookimpl
def register_metrics(register):
    register(Filtering)
