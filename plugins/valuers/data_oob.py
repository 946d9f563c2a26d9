"""Valuer ``data-oob``: the out-of-bag estimate of a bagging ensemble (Kwon & Zou 2023).

``n_bags`` bootstrap samples of the source set (N draws with replacement) each train
one base learner; the value of sample i is the mean, over the bags that do NOT contain
i, of that bag's correctness on i (1 if it predicts i's label, else 0), or for
reconstruction tasks minus its squared error on i. A sample that is in every bag
(probability ~e^-B) gets the mean of the other values.

Base learners (``learner``):
  tree      scikit-learn decision tree on the bootstrap sample; by default grown to
            full depth with sqrt(d) features per split, i.e. the trees of a random
            forest, as in the paper (which used B = 800 trees); ``max_depth`` makes it
            shallow, ``max_features=all`` a plain bagged tree.
  logistic  multinomial logistic regression with scikit-learn's objective (L2, C =
            ``c``, unpenalised intercept), all bags of a batch solved together by
            L-BFGS in torch on the task's device; default B = 800.
  mlp       the task's learner (one fixed initialisation), bags trained as one
            batched computation with the utility recipe of valbench.training.stacked (``steps``
            full-batch Adam steps at ``lr``, shared dropout masks); default B = 100
            because every bag is a full network fit. ``compile`` (off by default:
            only this learner uses it, and 100 fits barely repay compilation).

Budget: ``max_fits`` caps the number of bags (it can always be met: fewer bags, and
``stopped_early`` says so); ``max_seconds`` stops between batches of bags.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
from valbench.progress import progress

from valbench import hookimpl
from valbench.budget import Budget, BudgetParams
from valbench.seeding import derive_seed, rng
from valbench.types import Valuation, ValuationTask
from valbench.training.utility import check_recipe_params, check_task, source_tensors

DEFAULT_BAGS = {"tree": 800, "logistic": 800, "mlp": 100}


@dataclass(frozen=True, kw_only=True)
class DataOOBValuer(BudgetParams):
    """Out-of-bag correctness of a bagging ensemble (higher = more often predicted right);
    max_fits caps the bags, max_seconds stops between batches (BudgetParams)."""

    name = "data-oob"
    version = "2"  # 2: batched training's gradients are native on CPU (float32 rounding differs)
    test_params = {"n_bags": 100}  # cheap settings for valbench.testing.check_valuer

    learner: Literal["tree", "logistic", "mlp"] = "tree"
    n_bags: Optional[int] = None
    max_depth: Optional[int] = None
    max_features: Literal["sqrt", "all"] = "sqrt"
    c: float = 1.0
    lbfgs_iterations: int = 200
    steps: int = 200
    lr: float = 1e-4
    models_per_batch: int = 32
    compile: bool = False

    def validate(self) -> None:
        if self.learner not in DEFAULT_BAGS:
            raise ValueError(f"learner must be tree, logistic or mlp, got {self.learner!r}")
        if self.n_bags is not None and self.n_bags < 1:
            raise ValueError(f"n_bags must be >= 1 or omitted, got {self.n_bags}")
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1 or omitted, got {self.max_depth}")
        if not self.c > 0:
            raise ValueError(f"c must be > 0, got {self.c}")
        if self.lbfgs_iterations < 1:
            raise ValueError(f"lbfgs_iterations must be >= 1, got {self.lbfgs_iterations}")
        check_recipe_params(self.steps, self.lr, self.models_per_batch)
        super().validate()

    def check(self, task: ValuationTask) -> None:
        if self.learner == "logistic" and not task.supervised:
            raise ValueError("learner=logistic needs class labels; use tree or mlp for reconstruction tasks")
        if self.learner == "mlp":
            check_task(task)

    @property
    def bags(self) -> int:
        return self.n_bags if self.n_bags is not None else DEFAULT_BAGS[self.learner]

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.training.stacked import training_label  # here: loading the plugins stays torch-free

        self.validate()
        self.check(task)
        budget = self.new_budget()
        n = len(task.source)
        draws = rng(task.seed, "data-oob-bags").integers(0, n, size=(self.bags, n))
        counts = np.stack([np.bincount(d, minlength=n) for d in draws])  # (B, N) bootstrap counts
        fit = {"tree": self._trees, "logistic": self._logistic, "mlp": self._mlp}[self.learner]
        scores = np.full((self.bags, n), np.nan)  # per-bag correctness (or -error) on each sample
        with progress(self.bags, f"data-oob ({self.learner})") as bar:
            fit(task, draws, counts, scores, budget, bar)
        used = budget.fits
        oob = (counts[:used] == 0) & ~np.isnan(scores[:used])
        n_oob = oob.sum(axis=0)
        total = np.where(oob, scores[:used], 0.0).sum(axis=0)
        values = np.divide(total, n_oob, out=np.zeros(n), where=n_oob > 0)
        never = n_oob == 0
        if never.any():
            values[never] = values[~never].mean() if (~never).any() else 0.0
        info = dict(bags=used, never_out_of_bag=int(never.sum()), learner=self.learner)
        if self.learner == "mlp":
            info["training"] = training_label(self.compile)
        return budget.valuation(values, **info)

    # -- base learners: each fills scores[b] for the bags it trains and spends one fit per bag --
    def _trees(self, task, draws, counts, scores, budget, bar) -> None:
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        x = np.asarray(task.source.x, dtype=np.float32).reshape(len(task.source), -1)
        y = np.asarray(task.source.y)
        y2 = y.reshape(len(y), -1)
        for b in range(self.bags):
            if budget.exhausted():
                return
            kw = dict(max_depth=self.max_depth, max_features="sqrt" if self.max_features == "sqrt" else None,
                      random_state=derive_seed(task.seed, "data-oob-tree", b) % 2**32)
            idx, out = draws[b], counts[b] == 0
            if task.supervised:
                tree = DecisionTreeClassifier(**kw).fit(x[idx], y[idx])
                scores[b, out] = tree.predict(x[out]) == y[out]
            else:
                tree = DecisionTreeRegressor(**kw).fit(x[idx], y2[idx])
                scores[b, out] = -((tree.predict(x[out]).reshape(out.sum(), -1) - y2[out]) ** 2).mean(axis=1)
            budget.spend(1)
            bar.update(1)

    def _batches(self, budget: Budget, size: int):
        """Consecutive (start, stop) bag ranges of at most ``size`` within the budget."""
        start = 0
        while start < self.bags:
            if budget.exhausted():  # records that the budget stopped the bags
                return
            stop = min(start + size, self.bags)
            remaining = budget.remaining_fits()
            if remaining is not None:
                stop = min(stop, start + remaining)
            yield start, stop
            start = stop

    def _logistic(self, task, draws, counts, scores, budget, bar) -> None:
        import torch
        import torch.nn.functional as F

        x, y = source_tensors(task)
        x = x.flatten(1)
        n, d = x.shape
        k = task.n_classes
        for start, stop in self._batches(budget, max(self.models_per_batch, 200)):
            w = torch.as_tensor(counts[start:stop], dtype=torch.float32, device=task.device)  # (m, N)
            m = stop - start
            coef = torch.zeros(d, m * k, device=task.device, requires_grad=True)
            icpt = torch.zeros(m * k, device=task.device, requires_grad=True)
            opt = torch.optim.LBFGS([coef, icpt], lr=1, max_iter=self.lbfgs_iterations, history_size=20,
                                    tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

            def objective() -> torch.Tensor:
                # scikit-learn: C * sum_i w_i CE_i + ||coef||^2 / 2, divided by sum_i w_i (= N) per bag
                opt.zero_grad()
                logits = (x @ coef + icpt).view(n, m, k).transpose(0, 1)  # (m, N, k)
                ce = F.cross_entropy(logits.reshape(m * n, k), y.repeat(m), reduction="none").view(m, n)
                loss = ((ce * w).sum() + coef.square().sum() / (2 * self.c)) / n
                loss.backward()
                return loss

            opt.step(objective)
            with torch.no_grad():
                pred = (x @ coef + icpt).view(n, m, k).argmax(dim=2).T  # (m, N)
                scores[start:stop] = (pred == y[None, :]).cpu().numpy()
            budget.spend(m)
            bar.update(m)

    def _mlp(self, task, draws, counts, scores, budget, bar) -> None:
        import torch

        from valbench.training.models import build_model
        from valbench.training.stacked import FullBatchRecipe, train_stacked

        x, y = source_tensors(task)
        model = build_model(task.learner, task.seed, task.device)
        recipe = FullBatchRecipe(self.steps, self.lr, "shared", self.compile)
        index = torch.arange(len(x), device=task.device)
        for start, stop in self._batches(budget, self.models_per_batch):
            w = torch.as_tensor(counts[start:stop], dtype=torch.float32, device=task.device)
            net = train_stacked(model, x, y, index, w, supervised=task.supervised, recipe=recipe,
                                seed=task.seed, stream=0)
            out = net.predict(x, task.supervised)  # (m, N, K) or reconstructions
            if task.supervised:
                s = (out.argmax(dim=2) == y[None, :]).to(torch.float64)
            else:
                s = -(out - y.flatten(1)[None]).square().mean(dim=2).to(torch.float64)
            scores[start:stop] = s.cpu().numpy()
            budget.spend(stop - start)
            bar.update(stop - start)


@hookimpl
def register_valuers(register):
    register(DataOOBValuer)
