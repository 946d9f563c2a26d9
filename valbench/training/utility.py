"""The utility v(S) of retraining-based valuers: the target-set score (the task's metric)
of the task's learner trained on the source subset S, many subsets at once.

Every model starts from ONE initialisation (``build_model(task.learner, task.seed)``) and is
trained with a :class:`valbench.training.stacked.FullBatchRecipe` (the DVGS port's utility,
docs/protocol.md 'The DVGS port': 200 full-batch Adam steps at lr 1e-4), so v is a
deterministic set function for a given mask stream. Used by ``loo``, the permutation valuers
(valbench.training.permutations) and the subset-sampling valuers (``banzhaf``,
``influence-subsample``, ``ame``), which share :func:`subset_scores` (v of pre-drawn subsets
within a budget) and :func:`msr_values`. ``models_per_batch="auto"`` (or 0) sizes the
batches from free device memory (:func:`auto_models_per_batch`); batch sizes change memory and
speed, never values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Literal

import numpy as np

from valbench.budget import Budget, BudgetParams
from valbench.progress import progress
from valbench.training.defaults import check_metric
from valbench.types import ValuationTask

# torch and the modules that use it are imported in the functions below: the valuers
# subclass RetrainingParams when their plugin module loads, which must not import torch
if TYPE_CHECKING:
    import torch

    from valbench.training.stacked import FullBatchRecipe, StackedNet

# (y_target, outputs (M, n_target, ...)) -> (M, ...): what a model scores on the target set
Measure = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


AUTO = ("auto", 0)  # models_per_batch values that choose the batch size from free device memory


def check_recipe_params(steps: int, lr: float, models_per_batch: int | str, full_models: int | None = None,
                        allow_auto: bool = False) -> None:
    """Range checks shared by the retraining valuers' validate(); ``allow_auto``: the
    valuer sizes its batches through :class:`Utility`, which understands AUTO."""
    if full_models is not None and full_models < 1:
        raise ValueError(f"full_models must be >= 1, got {full_models}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if allow_auto and models_per_batch in AUTO:
        return
    if not (isinstance(models_per_batch, int) and models_per_batch >= 1):
        also = " (or auto, or 0 = auto)" if allow_auto else ""
        raise ValueError(f"models_per_batch must be >= 1{also}, got {models_per_batch}")


CPU_MODELS_PER_BATCH = 32  # "auto" on CPU: the default (bigger batches were not faster on 2 cores)
AUTO_MAX_MODELS = 1024  # "auto" on CUDA at most: a budget is checked between batches, so keep them bounded
AUTO_FREE_FRACTION = 0.5  # "auto" on CUDA: the share of free memory the batch may take
PARAM_COPIES = 5  # per parameter: itself, its gradient, Adam's two moments, one temporary of the update
ACTIVATION_COPIES = 4  # per hidden unit and row: pre-activation, activation (or mask), and their gradients


def model_bytes(n_params: int, widths: list[int], rows: int, in_features: int, per_copy_input: bool) -> int:
    """Estimated bytes one stacked copy needs while training (float32): its parameters with
    gradient and Adam state, the activations of its ``rows`` source rows through layers of
    ``widths`` outputs, its row weights, and its own copy of the input rows when every copy
    trains on other rows (TMC prefixes)."""
    activations = ACTIVATION_COPIES * rows * sum(widths)
    own_input = rows * in_features if per_copy_input else 0
    return 4 * (PARAM_COPIES * n_params + activations + own_input + rows)


def auto_models_per_batch(free_bytes: int | None, per_model_bytes: int, cap: int = AUTO_MAX_MODELS) -> int:
    """Models per batch for ``models_per_batch="auto"``: as many as fit in
    AUTO_FREE_FRACTION of ``free_bytes`` (free device memory), between 1 and ``cap``;
    ``free_bytes`` None (CPU) gives CPU_MODELS_PER_BATCH."""
    if free_bytes is None:
        return CPU_MODELS_PER_BATCH
    return int(max(1, min(cap, int(free_bytes * AUTO_FREE_FRACTION) // max(1, per_model_bytes))))


def free_device_bytes(device: str | torch.device) -> int | None:
    """Free memory of a CUDA device; None elsewhere (CPU memory is not the limit that matters)."""
    import torch

    device = torch.device(device)
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def check_task(task: ValuationTask) -> None:
    """Raise ValueError (one line) when the utility cannot be computed for ``task``:
    a metric the target set cannot score, or a learner that cannot be batched."""
    from valbench.training.models import build_model
    from valbench.training.stacked import UnsupportedNetwork, layer_spec

    y = np.asarray(task.target.y)
    if task.metric == "auroc" and len(np.unique(y)) < 2:
        raise ValueError(f"the target set has a single class ({int(y.flat[0])}); the AUROC utility needs two")
    if task.metric == "r2" and len(y) > 0 and float(np.var(y.reshape(len(y), -1), axis=0).sum()) == 0.0:
        raise ValueError("the target set has no variance; the R^2 utility is undefined")
    check_metric(task.metric)
    try:
        layer_spec(build_model(task.learner, task.seed, "cpu"))
    except UnsupportedNetwork as exc:
        raise ValueError(f"learner '{task.learner.architecture}': {exc}") from None


@dataclass(frozen=True, kw_only=True)
class RetrainingParams(BudgetParams):
    """The parameters the retraining valuers share (loo, tmc-shapley), declared once, with
    the budget's. A valuer subclasses this as a keyword-only frozen dataclass and adds its own.

    ``steps``, ``lr``: each utility model is ``steps`` full-batch Adam steps at ``lr`` from
    the task's one initialisation (the DVGS port's 200 at 1e-4: docs/protocol.md);
    ``full_models``: v(D) is the mean over this many full-data models; ``dropout``:
    "shared" (every model uses the same dropout masks per source sample) or "off";
    ``models_per_batch``: models trained together as one stacked computation (memory and
    speed only; "auto" or 0: from free device memory, see :func:`auto_models_per_batch`);
    ``compile``: torch.compile the stacked step (falls back to eager).
    """

    per_copy_rows: ClassVar[bool] = False  # True: each copy trains on its own rows (TMC prefixes)

    steps: int = 200
    lr: float = 1e-4
    full_models: int = 10
    dropout: Literal["shared", "off"] = "shared"
    models_per_batch: int | Literal["auto"] = 32
    compile: bool = True

    def validate(self) -> None:
        super().validate()
        check_recipe_params(self.steps, self.lr, self.models_per_batch, self.full_models, allow_auto=True)

    def recipe(self) -> FullBatchRecipe:
        from valbench.training.stacked import FullBatchRecipe

        return FullBatchRecipe(self.steps, self.lr, self.dropout, self.compile)

    def utility(self, task: ValuationTask) -> "Utility":
        return Utility(task, self.recipe(), self.models_per_batch, self.per_copy_rows)

    def start(self, task: ValuationTask, measure: "Measure | None" = None) -> tuple[Budget, "Utility", np.ndarray]:
        """What every retraining valuation begins with: parameters and task checked
        (``validate()``, the valuer's ``check(task)``), a fresh budget, the utility, and
        v(D) of ``full_models`` full-data models (their fits spent from the budget;
        ``measure``: what they score, see Utility.score)."""
        self.validate()
        check = getattr(self, "check", None)
        if callable(check):
            check(task)
        budget = self.new_budget()
        util = self.utility(task)
        v_full = util.full(self.full_models, measure)
        budget.spend(util.fits)
        return budget, util, v_full


def source_tensors(task: ValuationTask) -> tuple[torch.Tensor, torch.Tensor]:
    """The source set as tensors on the task's device (labels int64 or targets float32)."""
    import torch

    from valbench.training.models import targets, tensor

    return (tensor(task.source.x, torch.float32, task.device),
            targets(task.source.y, task.supervised, task.device))


def full_fits(replicates: int, dropout: str) -> int:
    """Full-data models trained for ``replicates`` replicates of v(D): with dropout off they
    would be identical, so one is trained."""
    return replicates if dropout == "shared" else 1


class Utility:
    """v(S) for many subsets S at once, ``models_per_batch`` models per batched fit
    ("auto" or 0: chosen here from free device memory; ``per_copy_rows``: the copies of a
    batch train on different row lists, each holding its own input rows)."""

    def __init__(self, task: ValuationTask, recipe: FullBatchRecipe, models_per_batch: int | str = 32,
                 per_copy_rows: bool = False):
        import torch

        from valbench.training.models import build_model, targets, tensor
        from valbench.training.scoring import empty_set_score
        from valbench.training.stacked import layer_spec

        self.task = task
        self.recipe = recipe
        self.supervised = task.learner.supervised
        self.model = build_model(task.learner, task.seed, task.device)  # the one fixed initialisation
        self.x, self.y = source_tensors(task)
        if models_per_batch in AUTO:
            linears = layer_spec(self.model)[1]
            need = model_bytes(sum(p.numel() for p in self.model.parameters()), [m.out_features for m in linears],
                               len(self.x), self.x[0].numel(), per_copy_rows)
            models_per_batch = auto_models_per_batch(free_device_bytes(task.device), need)
        self.models_per_batch = int(models_per_batch)
        self.x_target = tensor(task.target.x, torch.float32, task.device).flatten(1)
        self.y_target = targets(task.target.y, self.supervised, task.device)
        self.empty = empty_set_score(task.metric, self.y_target)
        self.fits = 0  # models trained so far

    @property
    def n(self) -> int:
        return len(self.x)

    def score(self, net: StackedNet, measure: Measure | None = None) -> np.ndarray:
        """What the M models of ``net`` score on the target set: the task's metric (M,), or
        ``measure(y_target, outputs)`` ((M, n_target, K) class probabilities or reconstructions)."""
        from valbench.training.scoring import batched_performance

        out = net.predict(self.x_target, self.supervised)
        if measure is not None:
            return measure(self.y_target, out).cpu().numpy()
        return batched_performance(self.task.metric, self.y_target, out).cpu().numpy()

    def scores(self, index: torch.Tensor, weight: torch.Tensor, stream: object = 0,
               progress: Callable[[int], None] | None = None, measure: Measure | None = None) -> np.ndarray:
        """v of M subsets: ``weight`` (M, n) over rows ``index`` ((n,) shared or (M, n));
        (M,), or (M, ...) as ``measure`` returns (see :meth:`score`).

        Trains in chunks of ``models_per_batch``; calls ``progress(k)`` after each chunk of k.
        """
        from valbench.training.stacked import train_stacked

        M = weight.shape[0]
        out = []
        for start in range(0, M, self.models_per_batch):
            stop = min(start + self.models_per_batch, M)
            idx = index if index.dim() == 1 else index[start:stop]
            net = train_stacked(self.model, self.x, self.y, idx, weight[start:stop], supervised=self.supervised,
                                recipe=self.recipe, seed=self.task.seed, stream=stream)
            out.append(self.score(net, measure).astype(np.float64))
            self.fits += stop - start
            if progress is not None:
                progress(stop - start)
        return np.concatenate(out) if out else np.empty(0)

    def full(self, replicates: int, measure: Measure | None = None) -> np.ndarray:
        """v(D) of ``replicates`` full-data models (replicates first, then as :meth:`scores`),
        replicate r on mask stream r (with dropout off they would be identical, so one
        model is trained and repeated)."""
        import torch

        reps = full_fits(replicates, self.recipe.dropout)
        index = torch.arange(self.n, device=self.task.device)
        weight = torch.ones(1, self.n, device=self.task.device)
        vals = np.stack([self.scores(index, weight, stream=r, measure=measure)[0] for r in range(reps)])
        return vals[np.arange(replicates) % reps]


def subset_scores(util: Utility, masks: np.ndarray, budget: Budget, label: str) -> np.ndarray:
    """v of the subsets ``masks`` (m, n) 0/1, in order, ``util.models_per_batch`` models at
    a time, until ``budget`` would be exceeded (the last batch is cut to the fits left):
    returns v of the first k subsets trained, k <= m. Each fit is spent from ``budget``.
    The masks are drawn up front by the caller, so a budget only truncates the sample."""
    import torch

    m, n = masks.shape
    v = np.empty(m, dtype=np.float64)
    index = torch.arange(n, device=util.task.device)
    done = 0
    with progress(m, label) as bar:
        while done < m and not budget.exhausted(next_cost=1):
            stop = min(done + util.models_per_batch, m)
            left = budget.remaining_fits()
            if left is not None:
                stop = min(stop, done + left)
            weight = torch.as_tensor(masks[done:stop], dtype=torch.float32, device=util.task.device)
            v[done:stop] = util.scores(index, weight, stream=0)
            budget.spend(stop - done)
            bar.update(stop - done)
            done = stop
    return v[:done]


def msr_values(masks: np.ndarray, v: np.ndarray) -> np.ndarray:
    """value_i = mean v over the subsets holding i minus mean v over those without it
    (``masks`` (m, n) 0/1, ``v`` (m,)); 0 where either side is empty (no evidence).

    The maximum-sample-reuse estimator: every model informs every sample's value. With
    subsets drawn i.i.d. Bernoulli(1/2) it estimates the Banzhaf value (``banzhaf``), with
    uniform subsets of one fixed size Feldman & Zhang's subsampled influence
    (``influence-subsample``)."""
    masks = np.asarray(masks).astype(bool)
    inside = masks.sum(axis=0)
    outside = len(v) - inside
    mean_in = (masks * v[:, None]).sum(axis=0) / np.maximum(inside, 1)
    mean_out = (~masks * v[:, None]).sum(axis=0) / np.maximum(outside, 1)
    return np.where((inside > 0) & (outside > 0), mean_in - mean_out, 0.0)
