"""Valuer ``loo``: leave-one-out, value_i = v(D) - v(D without i).

As in the DVGS port (docs/protocol.md, 'The DVGS port'): v(S) is the target score of the
task's learner after ``steps`` full-batch Adam steps at ``lr`` from one fixed initialisation, and v(D) is averaged over
``full_models`` full-data models. The N leave-one-out models are trained
``models_per_batch`` at a time as one batched computation (valbench.training.stacked).

Dropout: "shared" (default) trains every model in train mode with the same dropout
masks per source sample (mask stream 0; full-data replicate r uses stream r), so each
leave-one-out model is paired with full-data replicate 0 and differs from it only by
the left-out sample; "off" trains without dropout (then the full-data models are
identical and one is trained). The port drew independent masks per model, which adds
noise to every difference.

Budget: N + full_models fits (one with dropout off) are needed; a smaller ``max_fits``
is refused before any work. A time budget stops between batches; samples whose
leave-one-out model was not trained get value 0 (no evidence either way).
"""
from __future__ import annotations

import numpy as np

from valbench import hookimpl
from valbench.types import Valuation, ValuationTask
from valbench.training.utility import RetrainingParams, check_task, full_fits
from valbench.progress import progress


class LOOValuer(RetrainingParams):
    """Leave-one-out values from batched retraining (higher = removing it hurts more).
    Its parameters are the retraining valuers' shared ones (RetrainingParams)."""

    name = "loo"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    test_params = {"steps": 10, "lr": 1e-2, "full_models": 1, "compile": False}  # cheap settings for the kit

    def fits_needed(self, n_source: int) -> int:
        return n_source + full_fits(self.full_models, self.dropout)

    def check(self, task: ValuationTask) -> None:
        check_task(task)
        need = self.fits_needed(len(task.source))
        if self.max_fits is not None and self.max_fits < need:
            raise ValueError(f"loo needs {need} fits ({len(task.source)} leave-one-out models + full-data models), "
                             f"max_fits={self.max_fits} is too small")

    def value(self, task: ValuationTask) -> Valuation:
        import torch  # here: loading the plugins stays torch-free

        from valbench.training.stacked import training_label

        budget, util, v_full = self.start(task)
        n = util.n
        values = np.zeros(n)
        index = torch.arange(n, device=task.device)
        valued = 0
        with progress(n, "loo") as bar:
            for start in range(0, n, util.models_per_batch):
                stop = min(start + util.models_per_batch, n)
                if budget.exhausted(next_cost=stop - start):
                    break
                weight = torch.ones(stop - start, n, device=task.device)
                weight[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
                values[start:stop] = v_full.mean() - util.scores(index, weight, stream=0)
                budget.spend(stop - start)
                valued = stop
                bar.update(stop - start)
        return budget.valuation(values, v_full=float(v_full.mean()), v_full_std=float(v_full.std()),
                                valued=valued, training=training_label(self.compile),
                                models_per_batch=util.models_per_batch)


@hookimpl
def register_valuers(register):
    register(LOOValuer)
