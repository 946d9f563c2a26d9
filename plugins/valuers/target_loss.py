"""Valuer ``target-loss``: minus each source sample's loss under a model trained on the target set.

One fit of the task's learner (its architecture, initialisation and recipe; class-balanced
where the learner says so) on the clean target set; the value of a source sample is minus
its loss under that model (cross-entropy of its label, or reconstruction MSE in
unsupervised mode), so samples the clean model finds implausible get low values. A
one-fit baseline that is hard to beat on small tabular data.
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Valuation, ValuationTask

CHUNK = 4096  # source samples per forward pass (bounds memory on large sets)


class TargetLossValuer:
    """value_i = -loss(model trained on the target set; source sample i)."""

    name = "target-loss"
    version = "1"

    def value(self, task: ValuationTask) -> Valuation:
        import torch  # here: loading the plugins stays torch-free

        from valbench.training.models import TARGET_MODEL, fit_learner, loss_function

        learner, dev = task.learner, task.device
        model = fit_learner(learner, task.target.x, task.target.y, task.n_classes, seed=task.seed,
                            device=dev, label=TARGET_MODEL)
        model.eval()
        loss_fn = loss_function(learner, reduction="none")
        dtype = torch.long if learner.supervised else torch.float32
        losses = []
        with torch.no_grad():
            for start in range(0, len(task.source), CHUNK):
                x = torch.tensor(np.asarray(task.source.x[start:start + CHUNK]), dtype=torch.float32, device=dev)
                y = torch.tensor(np.asarray(task.source.y[start:start + CHUNK]), dtype=dtype, device=dev)
                losses.append(loss_fn(model(x), y).double().cpu())
        return Valuation(-torch.cat(losses).numpy(), fits=1)


@hookimpl
def register_valuers(register):
    register(TargetLossValuer)
