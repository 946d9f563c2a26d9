"""Valuer ``dvrl``: Data Valuation using Reinforcement Learning (Yoon, Arik and Pfister 2020).

Faithful to the google-research reference as described in docs/protocol.md §4:

- A data value estimator h(x, y) in (0, 1): concat(x, onehot(y)) -> 100 -> 100 -> 10 (ReLU),
  then concat with |onehot(y) - p_val(x)| -> 10 (ReLU) -> 1 (sigmoid); p_val is a predictor
  trained on the TARGET set from the saved initial weights.
- The predictor is the task's learner (the paper's MLP), reloaded from one saved
  initialisation for every fit and trained with the reference's inner recipe: Adam
  (``predictor_lr``, 1e-3 = Keras' default, as in the reference and the DVGS port, docs/protocol.md 'The DVGS port'),
  ``inner_epochs`` = 100 epochs, minibatches of min(256, n_target), plain cross-entropy
  (the reference does not class-balance).
- Baseline: the target score (``task.metric``) of the predictor trained on the whole
  source set. ``baseline="fixed"`` (default) keeps it for the run, as the reference
  code does; ``baseline="moving"`` updates it after every iteration as the paper's
  Algorithm 1 and the DVGS authors' CIFAR10/LINCS runs did: b <- (w-1)/w b + score/w,
  with window w = ``baseline_window`` (100).
- Outer loop (``iterations`` = 2000): a batch of min(``batch_size``, N) source samples
  (2000 by default), p = h(batch), s ~ Bernoulli(p) (all zero: redraw with p = 0.5),
  the predictor trained on the selected samples of the batch, reward = target score -
  baseline, loss = -reward * sum[s log(p + 1e-8) + (1 - s) log(1 - p + 1e-8)]
  + 1000 (relu(mean p - 0.9) + relu(0.1 - mean p)), one Adam step (lr 0.01).
- Values: h on every source sample (higher = more likely kept = more valuable).

Model fits: one for p_val, one for the baseline, one per outer iteration (2002 by
default). ``max_fits`` / ``max_seconds`` stop the outer loop early (recorded). DVRL
needs labels (the estimator's input is the label and the target model's error on it):
supervised tasks only. The inner training uses valbench.training.repeated (hand-written
backward pass on one flat buffer; on CPU a native epoch, compiled on first use), which is
what makes 2000 x 100 epochs affordable: ~0.1 s per outer iteration on one CPU core at exp1
size (benchmarks/dvrl_speed.py). ``info["trainer"]`` says which trainer ran.
DVRL's REINFORCE trajectory is sensitive to float rounding: the native and the Python
inner steps agree to ~1e-5 in every fit's probabilities, yet over 10 seeds of exp1 at 300
iterations their values had Spearman >= 0.99 on 3 seeds and parted on the others; 3 native
runs fell to AUROC 0.45-0.73, none of the Python ones (medians 0.878 and 0.875). Changing
only the Python step's Adam rounding (torch's unfused update) parted seed 3 and made seed 6
fall to 0.40 as its native run did: which seeds fall is decided by rounding. Compare DVRL
over seeds.
``compile=True`` pads each minibatch to a fixed size and compiles the whole training
step into one graph, replayed as a CUDA graph on GPU, where the eager step is bound by
kernel launches (~60 per step; 0.43 s per outer iteration on an H200). It is off by
default: on CPU it measured ~3x *slower* per outer iteration than the default native
epoch, and no faster than the Python step (benchmarks/dvrl_speed.py: the padding rows and
torch.compile's per-call overhead cost more than the fused loops save), and it has not yet
run on a GPU. If compilation fails the
same padded step runs eagerly; ``info["trainer"]`` says which ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from valbench import hookimpl
from valbench.budget import BudgetParams
from valbench.seeding import derive_seed, rng
from valbench.types import Valuation, ValuationTask
from valbench.progress import progress
from valbench.training.defaults import check_metric

# torch and valbench's torch modules are imported where they are used: loading the
# plugins (planning a run, `valbench plugins`) imports no torch (docs/plugins.md)
SETUP_FITS = 2  # p_val on the target set, the baseline on the whole source set


def estimator(in_features: int, n_classes: int, hidden: int = 100, comb: int = 10):
    """The DVRL data value estimator's layers: ``body`` on concat(x, onehot(y)), ``head``
    on concat(body, |onehot(y) - p_val(x)|) -> (0, 1); :func:`estimate` runs them."""
    from torch import nn

    return nn.ModuleDict({
        "body": nn.Sequential(nn.Linear(in_features + n_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                              nn.ReLU(), nn.Linear(hidden, comb), nn.ReLU()),
        "head": nn.Sequential(nn.Linear(comb + n_classes, comb), nn.ReLU(), nn.Linear(comb, 1), nn.Sigmoid())})


def estimate(est, x, y_onehot, diff):
    """h(x, y) in (0, 1) for each row: the probability of keeping the sample."""
    import torch

    h = est["body"](torch.cat([x, y_onehot], dim=1))
    return est["head"](torch.cat([h, diff], dim=1))[:, 0]


def check_metric_computable(task: ValuationTask, who: str) -> None:
    """Raise ValueError when the target score ``task.metric`` cannot be computed on the target set."""
    if task.metric == "auroc":
        present = np.unique(np.asarray(task.target.y))
        k = task.n_classes or 2
        if len(present) < k:
            raise ValueError(
                f"{who}'s reward is the target-set AUROC, which needs all {k} classes in the target set; "
                f"it has only {sorted(present.tolist())}")
    else:
        check_metric(task.metric)


@dataclass(frozen=True, kw_only=True)
class DVRLValuer(BudgetParams):
    """DVRL (REINFORCE-trained data value estimator), as in the google-research reference
    (docs/protocol.md §4); max_fits / max_seconds as every budgeted valuer (BudgetParams)."""

    name = "dvrl"
    version = "2"  # 2: the predictor trains in the native epoch on CPU (float32 rounding, not the same values)
    supervised_only = True
    test_params = {"iterations": 30, "inner_epochs": 10}  # the conformance kit: seconds, not hours

    iterations: int = 2000
    batch_size: int = 2000
    inner_epochs: int = 100
    predictor_batch_size: int = 256
    predictor_lr: float = 1e-3
    learning_rate: float = 0.01
    baseline: Literal["fixed", "moving"] = "fixed"
    baseline_window: int = 100
    compile: bool = False

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "inner_epochs", "predictor_batch_size", "baseline_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("predictor_lr", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.baseline not in ("fixed", "moving"):
            raise ValueError(f"baseline must be 'fixed' or 'moving', got {self.baseline!r}")
        super().validate()
        if self.max_fits is not None and self.max_fits < SETUP_FITS + 1:
            raise ValueError(f"max_fits must be >= {SETUP_FITS + 1} for dvrl ({SETUP_FITS} setup fits "
                             f"+ 1 per outer iteration), got {self.max_fits}")

    def check(self, task: ValuationTask) -> None:
        if not task.supervised:
            raise ValueError("dvrl needs labels (its estimator reads the label); use a supervised task")
        check_metric_computable(task, "dvrl")

    def value(self, task: ValuationTask,
              on_iteration: Callable[[int, Callable[[], np.ndarray]], None] | None = None) -> Valuation:
        """Values of every source sample. ``on_iteration(i, values)`` is called after outer
        iteration i with a function that returns the current values (for convergence
        studies, see benchmarks/dvrl_convergence.py; the harness never passes it)."""
        from valbench.training.models import single_thread

        self.validate()
        self.check(task)
        with single_thread(task.device):
            return self._run(task, on_iteration)

    def _run(self, task: ValuationTask, on_iteration) -> Valuation:
        import torch

        from valbench.training.models import build_model, tensor
        from valbench.training.repeated import MinibatchRecipe, make_trainer
        from valbench.training.scoring import performance

        budget = self.new_budget()
        dev, k = task.device, int(task.n_classes)
        n, n_target = len(task.source), len(task.target)

        xs = tensor(np.asarray(task.source.x).reshape(n, -1), torch.float32, dev)
        ys = tensor(task.source.y, torch.long, dev)
        xt = tensor(np.asarray(task.target.x).reshape(n_target, -1), torch.float32, dev)
        yt = tensor(task.target.y, torch.long, dev)
        y_target = np.asarray(task.target.y)

        recipe = MinibatchRecipe(lr=self.predictor_lr, epochs=self.inner_epochs,
                                 batch_size=min(self.predictor_batch_size, n_target), compile=self.compile)
        trainer = make_trainer(build_model(task.learner, task.seed, dev), recipe, dev)
        inner = rng(task.seed, "dvrl", "predictor")

        def target_score() -> float:
            return performance(task.metric, y_target, trainer.predict_proba(xt).cpu().numpy())

        onehot = torch.nn.functional.one_hot(ys, k).float()
        trainer.fit(xt, yt, inner)  # p_val: the predictor trained on the target set
        budget.spend()
        diff = (onehot - trainer.predict_proba(xs)).abs()
        trainer.fit(xs, ys, inner)  # the baseline: the predictor trained on the whole source set
        budget.spend()
        base = first_base = target_score()

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(task.seed, "dvrl", "estimator"))
            est = estimator(xs.shape[1], k).to(dev)
        opt = torch.optim.Adam(est.parameters(), lr=self.learning_rate)
        outer = rng(task.seed, "dvrl", "outer")
        batch = min(self.batch_size, n)
        done, rewards = 0, []
        bar = progress(self.iterations, "dvrl outer iterations")
        for i in range(self.iterations):
            if budget.exhausted():
                break
            idx_np = outer.permutation(n)[:batch]
            idx = torch.as_tensor(idx_np, device=dev)
            p = estimate(est, xs[idx], onehot[idx], diff[idx])
            p_np = p.detach().cpu().numpy().astype(np.float64)
            s = outer.random(batch) < p_np
            if not s.any():  # the reference redraws with p = 0.5 (the loss still uses the estimator's p)
                s = outer.random(batch) < 0.5
            trainer.fit(xs[idx], ys[idx], inner, select=s)
            budget.spend()
            score = target_score()
            reward = score - base
            s_t = torch.as_tensor(s, dtype=torch.float32, device=dev)
            log_prob = (s_t * torch.log(p + 1e-8) + (1 - s_t) * torch.log(1 - p + 1e-8)).sum()
            mean_p = p.mean()
            loss = -reward * log_prob + 1e3 * (torch.relu(mean_p - 0.9) + torch.relu(0.1 - mean_p))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if self.baseline == "moving":
                w = self.baseline_window
                base = (w - 1) / w * base + score / w
            rewards.append(reward)
            done = i + 1
            bar.update(1)
            if on_iteration is not None:
                on_iteration(done, lambda: self.values(est, xs, onehot, diff))
        bar.close()
        values = self.values(est, xs, onehot, diff)
        return budget.valuation(values, iterations=done, baseline=round(first_base, 6),
                                mean_reward_last_100=round(float(np.mean(rewards[-100:])), 6) if rewards else None,
                                trainer=trainer.name)

    @staticmethod
    def values(est, xs, onehot, diff) -> np.ndarray:
        import torch

        est.eval()
        with torch.no_grad():
            out = estimate(est, xs, onehot, diff).double().cpu().numpy()
        est.train()
        return out


@hookimpl
def register_valuers(register):
    register(DVRLValuer)
