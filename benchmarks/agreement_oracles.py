"""How each method is run in pyDVL and in OpenDataVal on the same split and utility
(helper of agreement.py). Every runner returns one value per source sample, in source
order, or raises :class:`Skip` with the reason. The libraries are imported lazily, so
agreement.py runs with either one, both or none installed.
"""
from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from agreement_models import Context, odv_accuracy, odv_metric, odv_model, sk_model, sk_scorer


ACCURACY = {"data-oob", "class-wise-shapley"}  # methods scored by accuracy, not the task's metric
GRADIENT = {"influence", "tracin"}  # on valbench's source model (Context.learner_module), as valbench's own


class Skip(Exception):
    """A method that cannot run in a library here (the message says why)."""


@dataclass(frozen=True)
class Budget:
    """The sampled methods' sizes, shared by valbench and both libraries."""

    k: int = 10  # KNN-Shapley neighbours
    subsets: int = 200  # Banzhaf MSR subsets; AME / influence-subsample models
    permutations: int = 10  # TMC, Beta and class-wise Shapley
    bags: int = 100  # Data-OOB
    iterations: int = 200  # DVRL outer iterations
    alpha: float = 16.0  # Beta(alpha, beta) weights of Beta-Shapley: the paper's Beta(16, 1)
    beta: float = 1.0


def library_versions() -> dict[str, str]:
    """Installed version of each library, or why it cannot be imported."""
    out = {}
    for name, mod in (("pydvl", "pydvl.valuation"), ("opendataval", "opendataval.dataval")):
        try:
            if mod.startswith("opendataval"):
                _torchvision_placeholder()
            importlib.import_module(mod)
            out[name] = importlib.import_module(name.split(".")[0]).__version__
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            out[name] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return out


def _torchvision_placeholder() -> None:
    """OpenDataVal imports torchvision at import time for its image data sets only. Where
    no torchvision matches the installed torch (the local index has only a CUDA build of
    0.28 for torch 2.13+cpu, which fails to load), a placeholder module stands in; any use
    of it raises. Nothing here touches images."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001 - a mismatched build raises RuntimeError, not ImportError
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]

    class _Unusable:
        def __init__(self, *a, **k):
            raise RuntimeError("torchvision is a placeholder in agreement.py (no build matches this torch)")

    class _Module(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Unusable

    from importlib.machinery import ModuleSpec
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.datasets", "torchvision.models", "torchvision.models.resnet"):
        mod = _Module(name)
        mod.__spec__ = ModuleSpec(name, None)
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, mod)
    sys.modules["torchvision"].__version__ = "placeholder"


# --- pyDVL -------------------------------------------------------------------------------

def _pydvl_data(ctx: Context):
    from pydvl.valuation import Dataset

    t = ctx.task
    return (Dataset(np.asarray(t.source.x, np.float64), np.asarray(t.source.y)),
            Dataset(np.asarray(t.target.x, np.float64), np.asarray(t.target.y)))


def _pydvl_utility(ctx: Context, test):
    from pydvl.valuation import ModelUtility, SupervisedScorer

    # clone_before_fit=False: every fit starts from the context's one initialisation anyway
    return ModelUtility(sk_model(ctx), SupervisedScorer(sk_scorer(ctx), test, default=ctx.empty),
                        catch_errors=False, clone_before_fit=False)


def _pydvl_values(valuation, train, n: int) -> np.ndarray:
    valuation.fit(train)
    res = valuation.result
    out = np.zeros(n)
    out[np.asarray(res.indices, dtype=int)] = np.nan_to_num(np.asarray(res.values, dtype=np.float64))
    return out


def pydvl_run(method: str, ctx: Context, b: Budget, seed: int) -> np.ndarray:
    import pydvl.valuation as pv

    train, test = _pydvl_data(ctx)
    n = len(train)
    if method == "knn-shapley":
        from sklearn.neighbors import KNeighborsClassifier
        return _pydvl_values(pv.KNNShapleyValuation(KNeighborsClassifier(n_neighbors=b.k), test, progress=False),
                             train, n)
    if method == "data-oob":
        from sklearn.ensemble import BaggingClassifier
        bag = BaggingClassifier(sk_model(ctx), n_estimators=b.bags, random_state=seed).fit(train.data().x,
                                                                                            train.data().y)
        return _pydvl_values(pv.DataOOBValuation(bag), train, n)
    util = _pydvl_utility(ctx, test)
    if method == "loo":
        return _pydvl_values(pv.LOOValuation(util), train, n)
    if method == "banzhaf":
        valuation = pv.MSRBanzhafValuation(util, is_done=pv.MaxUpdates(b.subsets), seed=seed)
        valuation.is_done = pv.MaxSamples(valuation.sampler, b.subsets)  # exactly b.subsets subsets, one fit each
        return _pydvl_values(valuation, train, n)
    if method == "tmc-shapley":
        return _pydvl_values(pv.TMCShapleyValuation(util, truncation=pv.RelativeTruncation(rtol=0.01),
                                                    is_done=pv.MaxUpdates(b.permutations), seed=seed), train, n)
    if method == "beta-shapley":
        sampler = pv.PermutationSampler(seed=seed)  # no performance truncation: that is TMC's, not Beta Shapley's
        return _pydvl_values(pv.BetaShapleyValuation(util, sampler, pv.MaxUpdates(b.permutations), b.alpha, b.beta),
                             train, n)
    if method == "class-wise-shapley":
        # pyDVL's documented set-up: in-class permutations, one random out-of-class subset each, accuracy
        sampler = pv.ClasswiseSampler(in_class=pv.PermutationSampler(seed=seed),
                                      out_of_class=pv.UniformSampler(index_iteration=pv.NoIndexIteration, seed=seed),
                                      max_in_class_samples=1)
        cw = pv.ClasswiseModelUtility(sk_model(ctx), pv.ClasswiseSupervisedScorer("accuracy", test),
                                      catch_errors=False, clone_before_fit=False)
        return _pydvl_values(pv.ClasswiseShapleyValuation(cw, sampler, pv.MaxUpdates(b.permutations)), train, n)
    if method == "influence":
        return _pydvl_influence(ctx)
    raise Skip("pyDVL has no such method")


def _pydvl_influence(ctx: Context) -> np.ndarray:
    """Koh & Liang's influence of each source sample on the target loss by pyDVL's
    conjugate gradient (damping 0.01, valbench's default), at valbench's source model (the
    learner trained with its own recipe, as valbench's influence): value_i = mean_t <H^-1 g_t, g_i>,
    high = removing it would raise the target loss. The curvature is pyDVL's
    SecondOrderMode.GAUSS_NEWTON, which is the mean outer product of per-sample gradients
    (the empirical Fisher, positive semi-definite); with its exact Hessian, CG ran 7x
    longer here and the values were noise (the Hessian is indefinite away from a minimum).
    The loss is plain cross-entropy (valbench's influence weights it by class)."""
    from pydvl.influence import InfluenceMode
    from pydvl.influence.torch import CgInfluence, SecondOrderMode

    t = ctx.task
    x, y = torch.as_tensor(np.asarray(t.source.x, np.float32)), torch.as_tensor(np.asarray(t.source.y))
    xt, yt = torch.as_tensor(np.asarray(t.target.x, np.float32)), torch.as_tensor(np.asarray(t.target.y))
    module = ctx.learner_module()
    model = CgInfluence(module, torch.nn.functional.cross_entropy, regularization=0.01, maxiter=100,
                        second_order_mode=SecondOrderMode.GAUSS_NEWTON,
                        solve_simultaneously=True, warn_on_max_iteration=False)
    model = model.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x)))
    # pyDVL's Up influences are <H^-1 grad l(z_t), grad l(z_i)> (no minus sign): already "high = helpful"
    return model.influences(xt, yt, x, y, mode=InfluenceMode.Up).mean(dim=0).detach().numpy().astype(np.float64)


# --- OpenDataVal -------------------------------------------------------------------------

def _onehot(y: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(np.asarray(y)), k).to(torch.float32)


def _odv_evaluator(method: str, b: Budget, n: int, seed: int):
    from opendataval import dataval as dv
    from opendataval.dataval.margcontrib.sampler import TMCSampler

    def tmc():
        return TMCSampler(mc_epochs=b.permutations, min_cardinality=5, cache_name=None, random_state=seed)

    make: dict[str, Callable[[], object]] = {
        "loo": lambda: dv.LeaveOneOut(random_state=seed),
        "knn-shapley": lambda: dv.KNNShapley(k_neighbors=b.k, random_state=seed),
        "banzhaf": lambda: dv.DataBanzhaf(num_models=b.subsets, random_state=seed),
        "tmc-shapley": lambda: dv.DataShapley(sampler=tmc()),
        "beta-shapley": lambda: dv.BetaShapley(sampler=tmc(), alpha=b.alpha, beta=b.beta),
        "class-wise-shapley": lambda: dv.ClassWiseShapley(sampler=tmc()),
        "data-oob": lambda: dv.DataOob(num_models=b.bags, random_state=seed),
        "dvrl": lambda: dv.DVRL(rl_epochs=b.iterations, rl_batch_size=n, random_state=seed),
        # OpenDataVal's AME trains num_models per inclusion probability 0.2, 0.4, 0.6, 0.8
        "ame": lambda: dv.AME(num_models=max(1, b.subsets // 4), random_state=seed),
        "influence-subsample": lambda: dv.InfluenceSubsample(num_models=b.subsets, random_state=seed),
        "lava": lambda: dv.LavaEvaluator(random_state=seed),
        # OpenDataVal's InfluenceFunction is first order: sum over the target of grad(train) . grad(target)
        # at the trained model, i.e. TracIn at the final checkpoint, and influence without the inverse Hessian
        "influence": lambda: dv.InfluenceFunction(),
        "tracin": lambda: dv.InfluenceFunction(),
    }
    if method not in make:
        raise Skip("OpenDataVal has no such method")
    return make[method]()


def odv_run(method: str, ctx: Context, b: Budget, seed: int) -> np.ndarray:
    _torchvision_placeholder()
    from opendataval.dataval.api import ModelMixin

    t = ctx.task
    n = len(t.source)
    ev = _odv_evaluator(method, b, n, seed)
    ev.input_data(torch.as_tensor(np.asarray(t.source.x, np.float32)), _onehot(t.source.y, t.n_classes),
                  torch.as_tensor(np.asarray(t.target.x, np.float32)), _onehot(t.target.y, t.n_classes))
    if isinstance(ev, ModelMixin):
        # Data-OOB scores each sample by the correctness of the bags' predictions on it, class-wise Shapley
        # scores in-class and out-of-class target subsets (one class each: no AUROC): both by accuracy
        # (OpenDataVal's default); the other methods by the task's metric on the target set
        ev.input_model_metric(odv_model(ctx, learner_recipe=method in GRADIENT),
                              odv_accuracy if method in ACCURACY else odv_metric(ctx))
    ev.train_data_values()
    return np.nan_to_num(np.asarray(ev.evaluate_data_values(), dtype=np.float64).reshape(-1))


RUNNERS = {"pydvl": pydvl_run, "opendataval": odv_run}
