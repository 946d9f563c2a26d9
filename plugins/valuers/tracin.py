"""Valuer ``tracin``: TracInCP (Pruthi et al., NeurIPS 2020, "Estimating Training Data
Influence by Tracing Gradient Descent").

The task's learner is trained on the SOURCE set with its own recipe (initialisation,
Adam, batches, dropout; class-balanced where the learner is), and ``checkpoints``
checkpoints are taken at the ends of evenly spaced epochs (the last one at the end of
training). At each checkpoint theta_k

    value_i += lr * <grad L_target(theta_k), grad l_i(theta_k)>      (score=target)
    value_i -= lr * ||grad l_i(theta_k)||^2                           (score=self)

where L_target is the mean loss over the target set (balanced as DVGS balances it) and
l_i = w_i L(z_i) is sample i's term of the training objective (w_i its class weight, 1
without class balance). ``target``: a positive value means that the steps sample i
took part in lowered the target loss (a proponent); ``self``: TracIn's self-influence,
negated so that samples the model keeps having to fit (often mislabelled) rank low.

Follows the paper and Captum's TracInCP (the reference implementation's definition: a
sum over checkpoints of the learning rate times gradient dot products, no
preconditioning); valbench differs in that (1) the recipe is Adam, as the learner's,
and lr_k is Adam's constant step size (the paper recommends SGD; with Adam the
gradients are not what moved the parameters, as the paper notes), (2) gradients are
taken with dropout off (the deterministic network at theta_k), and (3) the target
gradient is the one mean-target-loss gradient, so one per-sample pass per checkpoint
(the gradsim engines' exact <g_i, v>, no per-sample gradient is stored) suffices.
``parameters`` (all, last, or a regular expression) restricts the gradients (the paper
used the last layer for large models). ``epochs``/``lr`` None: the learner's own (then
the model is the one ``influence`` values). ``max_seconds`` stops training after an
epoch, takes a last checkpoint there and says ``stopped_early``.

Cost at exp1 size (ADULT, 1000 source samples, 21,202 parameters, 10 checkpoints): one
fit of the learner (200 epochs) plus per checkpoint one target-gradient and one
per-sample pass. Medians of seeds 0-2 on the shared 2-core machine under a load average
of ~13 (noisy): 10.8 s wall, 3.5 s process CPU (``target-loss``'s one fit: 1.3 s CPU).
Corrupted-label AUROC (seeds 0, 1, 2): 0.75, 0.84, 0.80; score=self 0.84, 0.90, 0.88
(the same cost). ``python benchmarks/gradient_valuers.py --seeds 0 1 2`` prints these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from valbench import hookimpl
from valbench.budget import Budget, check_budget_params
from valbench.errors import ValuationError
from valbench.types import Valuation, ValuationTask


def checkpoint_epochs(epochs: int, checkpoints: int) -> list[int]:
    """The epochs (from 1) after which a checkpoint is taken: evenly spaced, ending at ``epochs``."""
    return sorted({round(epochs * k / checkpoints) for k in range(1, checkpoints + 1)})


@dataclass(frozen=True, kw_only=True)
class TracInValuer:
    """Sum over training checkpoints of lr * <target-loss gradient, sample gradient>."""

    name = "tracin"
    version = "1"
    test_params = {"epochs": 40, "checkpoints": 4}  # the conformance kit: a short training is enough

    checkpoints: int = 10
    epochs: Optional[int] = None
    lr: Optional[float] = None
    score: Literal["target", "self"] = "target"
    parameters: str = "all"
    engine: Literal["auto", "fast", "opacus", "naive"] = "auto"
    max_seconds: Optional[float] = None

    def validate(self) -> None:
        from valbench.gradsim import ENGINES  # here: loading the plugins stays torch-free

        if self.checkpoints < 1:
            raise ValueError(f"checkpoints must be >= 1, got {self.checkpoints}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 or omitted, got {self.epochs}")
        if self.epochs is not None and self.checkpoints > self.epochs:
            raise ValueError(f"checkpoints={self.checkpoints} is more than epochs={self.epochs}; "
                             "a checkpoint is taken at most once per epoch")
        if self.lr is not None and not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number or omitted, got {self.lr}")
        if self.score not in ("target", "self"):
            raise ValueError(f"score must be 'target' or 'self', got {self.score!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        check_budget_params(None, self.max_seconds)

    def _learner(self, task: ValuationTask):
        changes = {k: v for k, v in (("epochs", self.epochs), ("lr", self.lr)) if v is not None}
        return task.learner.with_recipe(**changes)

    def check(self, task: ValuationTask) -> None:
        from valbench.gradsim import check_sample_gradients

        self.validate()
        learner = self._learner(task)
        if self.checkpoints > learner.epochs:
            raise ValueError(f"checkpoints={self.checkpoints} is more than the learner's {learner.epochs} epochs")
        check_sample_gradients(learner, task, self.parameters, self.engine)

    def value(self, task: ValuationTask) -> Valuation:
        import torch

        from valbench.gradsim import SampleGradients, task_tensors
        from valbench.training.models import SOURCE_MODEL, build_model, fit_learner, loss_function

        self.validate()
        learner = self._learner(task)
        t = task_tensors(task)
        budget = Budget(max_seconds=self.max_seconds)
        grads = SampleGradients(build_model(learner, task.seed, task.device), loss_function(learner, "none"),
                                t.xs, t.ys, parameters=self.parameters, engine=self.engine)
        wanted = set(checkpoint_epochs(learner.epochs, self.checkpoints))
        values = torch.zeros(len(t.xs), dtype=torch.float64, device=t.xs.device)
        taken: list[int] = []
        zero = [torch.zeros_like(p) for p in grads.params]  # self-influence: only the squared norms are wanted

        def on_epoch(epoch: int, model: torch.nn.Module) -> bool:
            stop = epoch < learner.epochs and budget.exhausted(0)
            if epoch in wanted or stop:
                grads.load(model)
                if self.score == "target":
                    dot, _ = grads.dots(grads.mean_gradient(t.xt, t.yt, t.target_coef))
                    values.add_(learner.lr * (t.source_weight * dot).double())
                else:
                    _, sq = grads.dots(zero)
                    values.sub_(learner.lr * (t.source_weight.pow(2) * sq).double())
                taken.append(epoch)
            return stop

        try:
            fit_learner(learner, task.source.x, task.source.y, task.n_classes, seed=task.seed, device=task.device,
                        label=SOURCE_MODEL, on_epoch=on_epoch)
        finally:
            grads.close()
        out = values.cpu().numpy()
        if not np.isfinite(out).all():
            raise ValuationError(f"tracin: the gradients became NaN or infinite; the training diverged "
                                 f"(lr={learner.lr:g}): use a lower lr")
        budget.spend()
        return budget.valuation(out, checkpoints=taken, score=self.score, engine=grads.choice.name,
                                parameters=grads.n_params)


@hookimpl
def register_valuers(register):
    register(TracInValuer)
