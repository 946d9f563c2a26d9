"""valbench's learner and utility behind pyDVL's and OpenDataVal's model interfaces
(helper of agreement.py; imports neither library at module level except where a class
must subclass one of theirs, see ``odv_model``).

One :class:`Context` holds the exp1-like split, the task's one initialisation and the
utility recipe (``steps`` full-batch Adam steps at ``lr``, shared dropout masks), and
fits exactly as valbench.training.utility.Utility does: a subset the library hands over
is mapped back to source rows (by the exact bytes of row and label) and trained as
``train_stacked`` over the whole source set with per-row weights (counts for bootstrap
duplicates, times any sample weight), so each source row keeps its own dropout mask.
Rows that are not source rows (e.g. DVRL's model trained on the validation set) are
trained as a set of their own.
"""
from __future__ import annotations

import numpy as np
import torch

from valbench.training.models import build_model, targets, tensor
from valbench.training.scoring import batched_performance, empty_set_score
from valbench.training.stacked import FullBatchRecipe, StackedNet, stacked_forward, train_stacked
from valbench.types import ValuationTask


def as_array(x: object) -> np.ndarray:
    """A library's batch (tensor, array, torch Dataset or Subset of one) as a numpy array."""
    if isinstance(x, torch.utils.data.Subset):
        return as_array(x.dataset)[np.asarray(x.indices)]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    return np.stack([as_array(x[i]) for i in range(len(x))])  # a generic Dataset


def as_labels(y: object) -> np.ndarray:
    """Class indices from labels or one-hot rows (OpenDataVal's convention)."""
    a = as_array(y)
    return a.argmax(axis=1).astype(np.int64) if a.ndim == 2 else a.astype(np.int64)


class Context:
    """The split, the fixed initialisation and the recipe every wrapped fit shares."""

    def __init__(self, task: ValuationTask, steps: int, lr: float):
        self.task = task
        self.recipe = FullBatchRecipe(steps, lr, "shared", False)
        self.model = build_model(task.learner, task.seed, "cpu")
        self.x = tensor(task.source.x, torch.float32)
        self.y = targets(task.source.y, True)
        self.y_target = targets(task.target.y, True)
        self.empty = float(empty_set_score(task.metric, self.y_target))
        self.rows: dict[bytes, list[int]] = {}
        for i, (row, label) in enumerate(zip(np.asarray(task.source.x, np.float32), task.source.y)):
            self.rows.setdefault(row.tobytes() + int(label).to_bytes(8, "little"), []).append(i)
        self.duplicates = len(task.source) - len(self.rows)
        self.fits = 0

    def __deepcopy__(self, memo: dict) -> "Context":
        return self  # libraries deep-copy models; the context is shared, never changed

    def source_weight(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> torch.Tensor | None:
        """Per-source-row weights of a batch made of source rows, or None if it is not."""
        weight = torch.zeros(1, len(self.x))
        used: dict[bytes, int] = {}
        for row, label, wi in zip(x.astype(np.float32), y, w):
            key = row.tobytes() + int(label).to_bytes(8, "little")
            hits = self.rows.get(key)
            if hits is None:
                return None
            k = used.get(key, 0)
            weight[0, hits[k % len(hits)]] += float(wi)  # identical rows: one after the other
            used[key] = k + 1
        return weight

    def fit(self, x: object, y: object, sample_weight: object = None) -> StackedNet | None:
        """The valbench learner trained on a batch (None for an empty or all-zero-weight one)."""
        ya = as_labels(y)
        w = np.ones(len(ya)) if sample_weight is None else as_array(sample_weight).astype(np.float64).ravel()
        if len(ya) == 0 or w.sum() <= 0:
            return None
        xa = as_array(x).reshape(len(ya), -1)
        self.fits += 1
        weight = self.source_weight(xa, ya, w)
        if weight is not None:
            return train_stacked(self.model, self.x, self.y, torch.arange(len(self.x)), weight, supervised=True,
                                 recipe=self.recipe, seed=self.task.seed, stream=0)
        return train_stacked(self.model, tensor(xa, torch.float32), targets(ya, True), torch.arange(len(ya)),
                             torch.as_tensor(w, dtype=torch.float32)[None], supervised=True, recipe=self.recipe,
                             seed=self.task.seed, stream=0)

    def proba(self, net: StackedNet | None, x: object) -> torch.Tensor:
        """(n, K) class probabilities; uniform for the empty set's model."""
        xa = tensor(as_array(x), torch.float32).flatten(1)
        if net is None:
            return torch.full((len(xa), self.task.n_classes), 1.0 / self.task.n_classes)
        return net.predict(xa, True)[0]

    def score(self, y: object, proba: torch.Tensor) -> float:
        """The task's metric (valbench's own scoring) of probabilities against labels."""
        yt = torch.as_tensor(as_labels(y))
        if len(torch.unique(yt)) < 2 and self.task.metric == "auroc":
            return self.empty
        return float(batched_performance(self.task.metric, yt, proba[None].to(torch.float32))[0])

    def learner_module(self) -> torch.nn.Module:
        """The model valbench's influence and tracin differentiate: the task's learner trained
        on the whole source set with its own recipe (fit_learner, seeded as they seed it),
        in eval mode (dropout off)."""
        from valbench.training import models

        t = self.task
        self.fits += 1
        label = getattr(models, "SOURCE_MODEL", "source-model")
        return models.fit_learner(t.learner, t.source.x, t.source.y, t.n_classes, seed=t.seed, device="cpu",
                                  label=label).eval()

    def grads(self, net: StackedNet, x: object, y: object):
        """Per-sample gradients of the cross-entropy at the trained weights (eval mode)."""
        xa, ya = tensor(as_array(x), torch.float32).flatten(1), torch.as_tensor(as_labels(y))
        if isinstance(net, torch.nn.Module):
            params = [p for p in net.parameters() if p.requires_grad]
        else:
            params = [p.detach().clone().requires_grad_(True) for p in net.params]
        for i in range(len(xa)):
            out = net(xa[i:i + 1]) if isinstance(net, torch.nn.Module) else stacked_forward(net.spec, params, xa[i:i + 1], None)[0]
            loss = torch.nn.functional.cross_entropy(out, ya[i:i + 1])
            yield tuple(g.detach() for g in torch.autograd.grad(loss, params))


def sk_model(ctx: Context):
    """A scikit-learn classifier (pyDVL's model interface, also bagged by sklearn)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class ValbenchClassifier(ClassifierMixin, BaseEstimator):
        def __init__(self, ctx: Context | None = None):
            self.ctx = ctx

        def fit(self, X, y, sample_weight=None):
            self.classes_ = np.arange(self.ctx.task.n_classes)
            self.net_ = self.ctx.fit(X, y, sample_weight)
            return self

        def predict_proba(self, X):
            return self.ctx.proba(self.net_, X).numpy()

        def predict(self, X):
            return self.predict_proba(X).argmax(axis=1)

    return ValbenchClassifier(ctx)


def sk_scorer(ctx: Context):
    """pyDVL scoring callable: the task's metric on the model's target probabilities."""
    def scoring(model, X, y) -> float:
        return ctx.score(y, torch.as_tensor(model.predict_proba(X)))
    return scoring


def odv_model(ctx: Context, learner_recipe: bool = False):
    """An OpenDataVal Model (fit / predict probabilities / grad) over the same context;
    ``learner_recipe``: fit() is valbench's source model of influence / tracin instead
    (OpenDataVal's InfluenceFunction fits once, on the whole source set)."""
    from opendataval.model.api import Model

    class ValbenchModel(Model):
        def __init__(self, ctx: Context):
            self.ctx, self.net = ctx, None

        def fit(self, x_train, y_train, *args, sample_weight=None, sample_weights=None, **kwargs):
            if learner_recipe:
                self.net = self.ctx.learner_module()
                return self
            self.net = self.ctx.fit(x_train, y_train, sample_weight if sample_weight is not None else sample_weights)
            return self

        def predict(self, x, *args, **kwargs):
            if isinstance(self.net, torch.nn.Module):
                with torch.no_grad():
                    return torch.softmax(self.net(tensor(as_array(x), torch.float32).flatten(1)), dim=1)
            return self.ctx.proba(self.net, x)

        def grad(self, x_data, y_data, *args, **kwargs):
            return self.ctx.grads(self.net, x_data, y_data)

        def clone(self):
            return ValbenchModel(self.ctx)

    return ValbenchModel(ctx)


def odv_metric(ctx: Context):
    """OpenDataVal metric callable: the task's metric (valbench's scoring) on the target set."""
    return lambda y, y_hat: ctx.score(y, torch.as_tensor(y_hat))


def odv_accuracy(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """Fraction of rows whose most probable class is the label (labels one-hot)."""
    return float((torch.as_tensor(y_hat).argmax(dim=1) == torch.as_tensor(y).argmax(dim=1)).float().mean())
