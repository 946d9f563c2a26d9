"""Fitting the task's learner once, for the one-fit baselines (target-loss, confident-learning)."""
from __future__ import annotations

import numpy as np
from torch import nn

from valbench.fastfit import single_thread
from valbench.models import Learner, class_weights
from valbench.seeding import derive_seed

# The stream of the one model fitted on the target set. target-loss and
# confident-learning[model=learner] share it, so they use the very same model: their
# values are then monotone transforms of each other (-CE = log p(y)), by design.
TARGET_MODEL = "target-model"


def fit_learner(learner: Learner, x: np.ndarray, y: np.ndarray, n_classes: int | None, *, seed: int,
                device: str, label: str) -> nn.Module:
    """The task's model from its seeded initialisation, trained on (x, y) with the learner's
    recipe (``Learner.fit``). A class-balanced learner (ADULT, BLOG) weights each sample by
    w_c = n / (K n_c) of its class, as DVGS weights its target loss."""
    model = learner.build(seed, device)
    weight = None
    if learner.class_balance and n_classes is not None:
        weight = class_weights(y, n_classes)[np.asarray(y, dtype=np.int64)]
    with single_thread(device):  # Learner.fit seeds its own dropout masks from ``seed``
        return learner.fit(model, x, y, seed=derive_seed(seed, label), device=device, sample_weight=weight)
