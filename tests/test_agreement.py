"""benchmarks/agreement.py's claim that pyDVL and OpenDataVal see valbench's own utility:
the wrapped learner (benchmarks/agreement_models.py) reproduces valbench's Utility and
LOO exactly. Needs neither library (the wrappers are driven here as they drive them)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _exp1 import exp1_task  # noqa: E402
from agreement import valbench_params  # noqa: E402
from agreement_models import Context, sk_model, sk_scorer  # noqa: E402
from agreement_oracles import Budget  # noqa: E402
from valbench.training.stacked import FullBatchRecipe  # noqa: E402
from valbench.training.utility import Utility  # noqa: E402
from valbench_plugins.valuers.loo import LOOValuer  # noqa: E402

STEPS, LR = 5, 1e-2


@pytest.fixture(scope="module")
def task():
    return exp1_task(0, n_source=16, n_target=60, rate=0.25)[0]


def test_wrapped_fit_is_valbench_utility(task):
    ctx = Context(task, STEPS, LR)
    model = sk_model(ctx).fit(task.source.x, task.source.y)
    wrapped = sk_scorer(ctx)(model, task.target.x, task.target.y)
    assert wrapped == Utility(task, FullBatchRecipe(STEPS, LR, "shared", False)).full(1)[0]


def test_leave_one_out_through_the_wrapper_equals_valbench_loo(task):
    """As a library does it: fit on every source set less one row, rows in another order."""
    ctx = Context(task, STEPS, LR)
    x, y = np.asarray(task.source.x), np.asarray(task.source.y)
    score = sk_scorer(ctx)
    full = score(sk_model(ctx).fit(x, y), task.target.x, task.target.y)
    order = np.random.default_rng(1).permutation(len(x))
    by_hand = np.zeros(len(x))
    for i in range(len(x)):
        keep = order[order != i]
        by_hand[i] = full - score(sk_model(ctx).fit(x[keep], y[keep]), task.target.x, task.target.y)
    params = valbench_params("loo", LOOValuer, type("A", (), {"steps": STEPS, "lr": LR})(), Budget())
    assert params == {"steps": STEPS, "lr": LR, "compile": False, "full_models": 1}
    values = LOOValuer(**params).value(task).values
    assert np.ptp(values) > 0  # a vacuous comparison of zeros would pass too
    np.testing.assert_allclose(by_hand, values, rtol=0, atol=1e-9)


def test_bootstrap_duplicates_are_weights_and_foreign_rows_train_alone(task):
    ctx = Context(task, STEPS, LR)
    x, y = np.asarray(task.source.x, np.float32), np.asarray(task.source.y)
    weight = ctx.source_weight(x[[0, 0, 3]], y[[0, 0, 3]], np.ones(3))
    assert weight[0, 0] == 2 and weight[0, 3] == 1 and weight.sum() == 3
    assert ctx.source_weight(x[:2] + 1, y[:2], np.ones(2)) is None
    assert ctx.fit(torch.tensor(x[:4] + 1), torch.tensor(y[:4])) is not None
    assert ctx.fit(x[:0], y[:0]) is None  # the empty set: uniform prediction, the metric's empty score
