"""The shared learner and how it is trained: what valuers (and the filtering metric) use
to build, fit, predict with and score the task's model. Never imports valbench.gradsim.

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
from valbench.training.models import (SOURCE_MODEL, TARGET_MODEL, build_model, class_weights, default_learner,
                                      fit_learner, fit_model, loss_function, predict, targets, tensor)
from valbench.training.scoring import check_metric, default_metric, performance

__all__ = ["SOURCE_MODEL", "TARGET_MODEL", "build_model", "check_metric", "class_weights", "default_learner",
           "default_metric", "fit_learner", "fit_model", "loss_function", "performance", "predict", "targets", "tensor"]
