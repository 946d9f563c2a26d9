"""The shared learner and how it is trained: what valuers (and the filtering metric) use
to build, fit, predict with and score the task's model. Never imports valbench.gradsim.

- :mod:`~valbench.training.defaults`: the task's default learner and performance metric
  (torch-free: the run's own process plans with them);
- :mod:`~valbench.training.models`: the paper's models; ``build_model``, ``fit_model``,
  ``predict``, ``loss_function`` for a :class:`valbench.types.Learner`; ``fit_learner``
  (one class-balanced fit, as the one-fit baselines use it);
- :mod:`~valbench.training.scoring`: the performance metrics (one model or M at once);
- :mod:`~valbench.training.stacked`: M copies of a layer chain trained as one
  computation (:class:`FullBatchRecipe`; LOO, TMC-Shapley and Data-OOB's models);
- :mod:`~valbench.training.utility`: v(S), the target score after a full-batch fit on S;
- :mod:`~valbench.training.repeated`: one classifier retrained many times from one
  initialisation with minibatches (:class:`MinibatchRecipe`; DVRL's inner loop);
- :mod:`~valbench.training.chain`, :mod:`~valbench.training.mish`,
  :mod:`~valbench.training.adam`: hand-written passes for layer chains, Mish in closed
  form, Adam without torch.optim.
"""
import importlib

# Each name and the submodule it comes from, imported on first use (PEP 562): importing
# one light submodule (valbench.training.utility's parameters, say) must not import torch
# through this package, so that loading the plugins and planning a run stay torch-free.
_HOMES = {
    **dict.fromkeys(["SOURCE_MODEL", "TARGET_MODEL", "build_model", "class_weights", "fit_learner", "fit_model",
                     "loss_function", "predict", "targets", "tensor"], "models"),
    **dict.fromkeys(["check_metric", "default_learner", "default_metric"], "defaults"),
    "performance": "scoring",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
