"""Valuer ``influence``: influence functions (Koh & Liang, ICML 2017, "Understanding
Black-box Predictions via Influence Functions").

The task's learner is trained once on the SOURCE set with its own recipe (the same
model ``tracin`` ends with at its defaults). At the trained parameters theta, with R the
learner's training objective (the mean source loss, class-weighted where the learner
is), H = the Hessian of R plus ``damping`` * I, and g_t the gradient of the mean target
loss (balanced as DVGS balances it),

    value_i = w_i * g_t^T H^{-1} grad L(z_i, theta)

(w_i: sample i's class weight, 1 without class balance). This is minus Koh & Liang's
I_up,loss(z_i, target), scaled by the weight sample i has in R: to first order, removing
z_i from the training objective changes the target loss by value_i / sum_j w_j. So a
HIGH value means a helpful sample (removing it would raise the target loss), and a
sample whose label contradicts the target set gets a low one, as valbench's metrics
expect. s = H^{-1} g_t is computed once (Koh & Liang's s_test); the values are then one
per-sample pass <grad L(z_i), s> through the gradsim engines (no per-sample gradient is
stored). ``score=self`` (Arnoldi only): minus the self-influence w_i^2 g_i^T H^{-1} g_i,
which Koh & Liang rank training points by to find mislabelled ones (one per-sample pass
per kept eigenvector).

``hessian``: ``gauss-newton`` (default) uses the generalised Gauss-Newton matrix
sum_i c_i J_i^T H_out,i J_i (positive semi-definite for cross-entropy and squared
error; what Bae et al. 2022 and Grosse et al. 2023 use for networks, whose Hessian is
indefinite away from a minimum); ``exact`` is Koh & Liang's Hessian. Both are applied
to vectors matrix-free by double backpropagation through the trained model (dropout
off), over the source set in chunks; for a model linear in its parameters up to the
loss (logistic regression) the two are equal, which the tests check. Why not ``exact``
by default: on exp1 the damped Hessian had non-positive curvature within the first 3 CG
steps on every seed, so CG stopped there (AUROC 0.59-0.62 against 0.64-0.73).

``solver``:

- ``cg`` (default): conjugate gradient on (H + damping I) s = g_t, at most
  ``cg_iterations``, until ||residual|| <= ``cg_tol`` * ||g_t||; Koh & Liang's
  release solves the same system with scipy's Newton-CG, 100 iterations at most. An exact Hessian may be
  indefinite: CG stops at the first direction of non-positive curvature and keeps its
  iterate so far (truncated CG, as Newton-CG does; info says so), or, at the very first
  step, raises an error asking for a larger damping.
- ``arnoldi`` (Schioppa et al., AAAI 2022, "Scaling Up Influence Functions"):
  ``arnoldi_iterations`` steps of Arnoldi (Gram-Schmidt twice) from a seeded random
  start span a Krylov space of H; its ``rank`` Ritz pairs of largest |eigenvalue| give
  H^{-1} ~ U diag(1 / (lambda + damping)) U^T. Chosen over EK-FAC because it needs only
  the Hessian-vector products CG already uses (so it approximates the same H, and is
  exact once the Krylov space is the whole parameter space, which the tests check),
  works for every learner valbench has (EK-FAC needs per-layer Kronecker factors for
  each layer type and approximates the Gauss-Newton matrix instead), and is short
  enough to get right. Defaults as Captum's ArnoldiInfluenceFunction (arnoldi_dim 200,
  projection_dim 50).

valbench differs from the references in that damping defaults to 0.01 (Koh & Liang's
release used 0 with an L2-regularised convex model; the paper's MLP has no weight
decay), the Hessian is that of the learner's (possibly class-weighted) objective at the
end of its Adam recipe (not a minimum: Koh & Liang's derivation assumes one), and
dropout is off. ``parameters`` restricts theta (all, last, or a regular expression; the
Hessian is then that block). ``max_seconds`` stops the solver between iterations (at
least one runs) and says ``stopped_early``.

Cost at exp1 size (ADULT, 1000 source samples, 21,202 parameters): one fit of the
learner (200 epochs), one Gauss-Newton-vector product over the source set per CG /
Arnoldi iteration, one per-sample pass (``score=self``: ``rank`` passes). Medians of
seeds 0-2 on the shared 2-core machine under a load average of ~13 (noisy; wall /
process CPU seconds): cg 19.8 / 5.5 s (100 iterations, relative residual ~1e-5;
``target-loss``'s one fit: 1.3 s CPU), arnoldi score=self 42.5 / 12.3 s,
parameters=last 10.5 / 3.8 s (converges in ~72 iterations). Corrupted-label AUROC
(seeds 0, 1, 2): cg 0.64, 0.73, 0.68; arnoldi 0.58, 0.72, 0.72; arnoldi score=self
0.82, 0.86, 0.84. ``python benchmarks/gradient_valuers.py --seeds 0 1 2`` prints these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

import numpy as np

from valbench import hookimpl
from valbench.budget import Budget, check_budget_params
from valbench.errors import ValuationError
from valbench.seeding import torch_generator
from valbench.types import Valuation, ValuationTask

if TYPE_CHECKING:  # annotations only: torch is imported where it is used (loading the plugins stays torch-free)
    import torch
    from torch import nn

    from valbench.gradsim import SampleGradients, TaskTensors

HVP_CHUNK = 1024  # source samples per double-backward pass (memory only: a double backward holds two graphs)
Operator = Callable[["torch.Tensor"], "torch.Tensor"]  # flat float64 vector -> H v


def curvature_operator(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, coef: torch.Tensor,
                       names: list[str], kind: str) -> Operator:
    """v -> H v over the parameters ``names`` (flattened in that order), the model in eval
    mode, for the objective sum_i coef_i loss_i: ``exact``: its Hessian, by double
    backpropagation; ``gauss-newton``: its Gauss-Newton matrix sum_i coef_i J_i^T H_i J_i
    (J_i: the output's Jacobian, H_i: the loss' Hessian in the output; positive
    semi-definite for cross-entropy and squared error), as J^T (H_out (J v))."""
    import torch  # here: loading the plugins stays torch-free

    model.eval()
    named = dict(model.named_parameters())
    params = [named[n] for n in names]

    def exact(xc, yc, cc, parts):
        loss = (loss_fn(model(xc), yc) * cc).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
        dot = sum((g * p).sum() for g, p in zip(grads, parts))
        if not dot.requires_grad:  # the loss is linear in these parameters: H v = 0
            return None
        return torch.autograd.grad(dot, params, allow_unused=True, materialize_grads=True)

    def gauss_newton(xc, yc, cc, parts):
        out = model(xc)
        # J v by the double-vjp trick: d/du <J^T u, v> = J v (u a dummy cotangent)
        u = torch.zeros_like(out, requires_grad=True)
        jt_u = torch.autograd.grad(out, params, grad_outputs=u, create_graph=True, allow_unused=True,
                                   materialize_grads=True)
        jv = torch.autograd.grad(sum((a * p).sum() for a, p in zip(jt_u, parts)), u)[0]
        leaf = out.detach().requires_grad_(True)
        g_out = torch.autograd.grad((loss_fn(leaf, yc) * cc).sum(), leaf, create_graph=True)[0]
        h_jv = torch.autograd.grad(g_out, leaf, grad_outputs=jv)[0]
        return torch.autograd.grad(out, params, grad_outputs=h_jv, allow_unused=True, materialize_grads=True)

    product = exact if kind == "exact" else gauss_newton

    def hvp(v: torch.Tensor) -> torch.Tensor:
        parts = unflatten(v.to(params[0].dtype), params)
        out = torch.zeros_like(v)
        for start in range(0, len(x), HVP_CHUNK):
            part = slice(start, start + HVP_CHUNK)
            hv = product(x[part], y[part], coef[part], parts)
            if hv is not None:
                out += flatten(hv).to(v.dtype)
        return out

    return hvp


def flatten(tensors) -> torch.Tensor:
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(v: torch.Tensor, like) -> list[torch.Tensor]:
    out, start = [], 0
    for p in like:
        out.append(v[start:start + p.numel()].view_as(p))
        start += p.numel()
    return out


def conjugate_gradient(hvp: Operator, b: torch.Tensor, damping: float, iterations: int, tol: float,
                       budget: Budget) -> tuple[torch.Tensor, dict]:
    """Approximately solve (H + damping I) s = b; stops at convergence, at non-positive
    curvature (keeping the iterate so far) or when the budget runs out (after >= 1 step)."""
    import torch

    s, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), r.dot(r)
    goal = tol * math.sqrt(float(rs))
    info = {"iterations": 0, "stop": "iterations"}
    for k in range(iterations):
        if k > 0 and budget.exhausted(0):
            info["stop"] = "budget"
            break
        ap = hvp(p) + damping * p
        curvature = p.dot(ap)
        if not curvature > 0:
            if k == 0:  # no iterate yet to keep
                raise ValuationError(f"influence: the damped Hessian has non-positive curvature along the target "
                                     f"gradient; raise damping above {damping:g}")
            info["stop"] = "negative curvature"
            break
        alpha = rs / curvature
        s += alpha * p
        r -= alpha * ap
        new = r.dot(r)
        info["iterations"] = k + 1
        if math.sqrt(float(new)) <= goal:
            info["stop"] = "converged"
            break
        p = r + (new / rs) * p
        rs = new
    info["relative_residual"] = float(math.sqrt(float(r.dot(r))) / max(math.sqrt(float(b.dot(b))), 1e-300))
    return s, info


def arnoldi(hvp: Operator, n: int, damping: float, iterations: int, rank: int, generator: torch.Generator,
            budget: Budget, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(U, lambda + damping) from the ``rank`` Ritz pairs of largest |lambda| of
    ``iterations`` Arnoldi steps on the n x n H (Schioppa et al. 2022, Algorithm 1):
    H^-1 ~ U diag(1 / (lambda + damping)) U^T."""
    import torch

    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    basis = [q / q.norm()]
    m = min(iterations, n)
    h = torch.zeros(m + 1, m, dtype=torch.float64, device=device)
    info = {"iterations": 0, "stop": "iterations"}
    for k in range(m):
        if k > 0 and budget.exhausted(0):
            info["stop"] = "budget"
            break
        w = hvp(basis[k])
        for _ in range(2):  # Gram-Schmidt twice: orthogonality to working precision
            for j, qj in enumerate(basis):
                c = qj.dot(w)
                h[j, k] += c
                w -= c * qj
        info["iterations"] = k + 1
        h[k + 1, k] = w.norm()
        if h[k + 1, k] <= 1e-10 * h[:k + 1, k].abs().max().clamp_min(1e-300):
            info["stop"] = "invariant subspace"  # the Krylov space is exact: H restricted to it
            break
        basis.append(w / h[k + 1, k])
    k = info["iterations"]
    square = h[:k, :k]
    eigenvalues, vectors = torch.linalg.eigh((square + square.T) / 2)  # H is symmetric
    keep = eigenvalues.abs().argsort(descending=True)[:rank]
    lam = eigenvalues[keep] + damping
    lam = torch.where(lam.abs() > 1e-12, lam, torch.full_like(lam, math.inf))  # drop a singular direction
    u = torch.stack(basis[:k], dim=1) @ vectors[:, keep]  # (n, rank) Ritz vectors
    info.update(rank=len(keep), eigenvalues=[float(e) for e in eigenvalues[keep][:5]])
    return u, lam, info


@dataclass(frozen=True, kw_only=True)
class InfluenceValuer:
    """w_i g_t^T (H + damping I)^{-1} grad L(z_i) at the model trained on the source set."""

    name = "influence"
    version = "1"
    test_params = {"cg_iterations": 20, "arnoldi_iterations": 20, "rank": 10}  # the conformance kit

    solver: Literal["cg", "arnoldi"] = "cg"
    score: Literal["target", "self"] = "target"
    hessian: Literal["gauss-newton", "exact"] = "gauss-newton"
    damping: float = 0.01
    cg_iterations: int = 100
    cg_tol: float = 1e-6
    arnoldi_iterations: int = 200
    rank: int = 50
    parameters: str = "all"
    engine: Literal["auto", "fast", "opacus", "naive"] = "auto"
    max_seconds: Optional[float] = None

    def validate(self) -> None:
        from valbench.gradsim import ENGINES

        if self.solver not in ("cg", "arnoldi"):
            raise ValueError(f"solver must be 'cg' or 'arnoldi', got {self.solver!r}")
        if self.score not in ("target", "self"):
            raise ValueError(f"score must be 'target' or 'self', got {self.score!r}")
        if self.score == "self" and self.solver != "arnoldi":
            raise ValueError("score=self needs solver=arnoldi (with cg it would be one solve per source sample)")
        if self.hessian not in ("gauss-newton", "exact"):
            raise ValueError(f"hessian must be 'gauss-newton' or 'exact', got {self.hessian!r}")
        if not (self.damping >= 0 and np.isfinite(self.damping)):
            raise ValueError(f"damping must be a finite number >= 0, got {self.damping}")
        for name in ("cg_iterations", "arnoldi_iterations", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.cg_tol > 0:
            raise ValueError(f"cg_tol must be > 0, got {self.cg_tol}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        check_budget_params(None, self.max_seconds)

    def check(self, task: ValuationTask) -> None:
        from valbench.gradsim import check_sample_gradients

        self.validate()
        check_sample_gradients(task.learner, task, self.parameters, self.engine)

    def value(self, task: ValuationTask) -> Valuation:
        from valbench.gradsim import SampleGradients, task_tensors
        from valbench.training.models import SOURCE_MODEL, fit_learner, loss_function, single_thread

        self.validate()
        learner, t = task.learner, task_tensors(task)
        budget = Budget(max_seconds=self.max_seconds)
        model = fit_learner(learner, task.source.x, task.source.y, task.n_classes, seed=task.seed,
                            device=task.device, label=SOURCE_MODEL)
        budget.spend()
        loss_fn = loss_function(learner, "none")
        grads = SampleGradients(model, loss_fn, t.xs, t.ys, parameters=self.parameters, engine=self.engine)
        hvp = curvature_operator(model, loss_fn, t.xs, t.ys, t.source_weight / t.source_weight.sum(), grads.names,
                                 self.hessian)
        try:
            with single_thread(task.device):
                if self.solver == "arnoldi":
                    gen = torch_generator(task.seed, "influence", "arnoldi")
                    u, lam, info = arnoldi(hvp, grads.n_params, self.damping, self.arnoldi_iterations, self.rank, gen,
                                           budget, t.xs.device)
                if self.score == "self":  # arnoldi only (validate)
                    values = self._self_influence(u, lam, grads, t)
                else:  # against s = H^-1 g_t: from CG, or from the eigenspace, U (U^T g_t / lam)
                    g_t = flatten(grads.mean_gradient(t.xt, t.yt, t.target_coef)).double()
                    if self.solver == "cg":
                        s, info = conjugate_gradient(hvp, g_t, self.damping, self.cg_iterations, self.cg_tol, budget)
                    else:
                        s = u @ ((u.T @ g_t) / lam)
                    values = t.source_weight * grads.dots(unflatten(s.float(), grads.params))[0]
        finally:
            grads.close()
        out = values.double().cpu().numpy()
        if not np.isfinite(out).all():
            raise ValuationError(f"influence: the inverse-Hessian product is NaN or infinite "
                                 f"(solver={self.solver}); raise damping above {self.damping:g}")
        return budget.valuation(out, solver=self.solver, hessian=self.hessian, score=self.score,
                                engine=grads.choice.name, parameters=grads.n_params, **info)

    @staticmethod
    def _self_influence(u: torch.Tensor, lam: torch.Tensor, grads: SampleGradients, t: TaskTensors) -> torch.Tensor:
        """-w_i^2 g_i^T H^-1 g_i with H^-1 ~ U diag(1 / lam) U^T: one per-sample pass per kept direction."""
        import torch

        total = torch.zeros(len(t.xs), dtype=torch.float64, device=t.xs.device)
        for j in range(u.shape[1]):
            total += grads.dots(unflatten(u[:, j].float(), grads.params))[0].double().pow(2) / lam[j]
        return -t.source_weight.double().pow(2) * total


@hookimpl
def register_valuers(register):
    register(InfluenceValuer)
