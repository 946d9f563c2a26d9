"""tracin against TracInCP computed by hand: checkpoints retrained from scratch for each
checkpoint epoch, per-sample gradients one backward pass at a time, summed."""
import dataclasses

import numpy as np
import pytest
import torch

from valbench.testing import easy_task, unsupervised_task
from valbench.training.models import SOURCE_MODEL, class_weights, fit_learner, loss_function
from valbench.types import Learner
from valbench_plugins.valuers.tracin import TracInValuer, checkpoint_epochs
from tests.baseline_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_task(supervised: bool, balance: bool = False):
    if supervised:
        task, _ = easy_task(n_source=30, n_target=20, n_features=4)
        learner = Learner("mlp", 4, 2, hidden=(5,), epochs=12, lr=1e-2, batch_size=8, class_balance=balance)
    else:
        task = unsupervised_task(n_source=30, n_target=20, n_features=4)
        learner = Learner("mlp-autoencoder", 4, 4, hidden=(3,), latent=2, dropout=0.0, norm=False, lr=1e-2,
                          epochs=12, batch_size=8)
    return dataclasses.replace(task, learner=learner)


def by_hand(task, checkpoints: int, score: str) -> np.ndarray:
    """TracInCP by its definition: each checkpoint is a fresh fit of the first e epochs (the
    recipe's randomness is per epoch, so it is the prefix of the full training)."""
    learner = task.learner
    xs, xt = torch.tensor(np.asarray(task.source.x)), torch.tensor(np.asarray(task.target.x))
    if task.supervised:
        ys, yt = torch.tensor(np.asarray(task.source.y)), torch.tensor(np.asarray(task.target.y))
    else:
        ys, yt = xs, xt
    ws, ct = torch.ones(len(xs)), torch.ones(len(xt))
    if learner.class_balance:
        ws = torch.tensor(class_weights(task.source.y, 2))[ys]
        ct = torch.tensor(class_weights(task.target.y, 2))[yt]
    ct = ct / ct.sum()
    loss = loss_function(learner, "none")
    total = np.zeros(len(xs))
    for epoch in checkpoint_epochs(learner.epochs, checkpoints):
        model = fit_learner(learner.with_recipe(epochs=epoch), task.source.x, task.source.y, task.n_classes,
                            seed=task.seed, device="cpu", label=SOURCE_MODEL).eval()
        params = list(model.parameters())
        g_t = torch.autograd.grad((loss(model(xt), yt) * ct).sum(), params)
        for i in range(len(xs)):
            g_i = torch.autograd.grad(loss(model(xs[i:i + 1]), ys[i:i + 1]).sum(), params)
            if score == "target":
                total[i] += learner.lr * ws[i].item() * sum((a * b).sum() for a, b in zip(g_t, g_i)).item()
            else:
                total[i] -= learner.lr * ws[i].item() ** 2 * sum(a.pow(2).sum() for a in g_i).item()
    return total


@pytest.mark.parametrize("supervised,balance,score,engine", [
    (True, False, "target", "auto"), (True, True, "target", "naive"), (True, False, "self", "auto"),
    (False, False, "target", "auto"), (False, False, "self", "opacus")])
def test_values_equal_tracincp_by_hand(supervised, balance, score, engine):
    task = small_task(supervised, balance)
    got = TracInValuer(checkpoints=3, score=score, engine=engine).value(task)
    want = by_hand(task, 3, score)
    assert got.info["checkpoints"] == [4, 8, 12] and got.fits == 1 and not got.stopped_early
    assert np.abs(want).max() > 1e-4  # not trivially zero
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_epochs_and_lr_override_the_recipe():
    task = small_task(True)
    got = TracInValuer(checkpoints=2, epochs=6, lr=3e-3).value(task)
    want = by_hand(dataclasses.replace(task, learner=task.learner.with_recipe(epochs=6, lr=3e-3)), 2, "target")
    assert got.info["checkpoints"] == [3, 6]
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_checkpoint_epochs_are_evenly_spaced_and_end_at_the_last():
    assert checkpoint_epochs(200, 10) == list(range(20, 201, 20))
    assert checkpoint_epochs(5, 5) == [1, 2, 3, 4, 5]
    assert checkpoint_epochs(7, 1) == [7]


def test_budget_stops_after_one_epoch_with_a_checkpoint_there():
    task = small_task(True)
    got = TracInValuer(checkpoints=3, max_seconds=1e-9).value(task)
    assert got.stopped_early and got.info["checkpoints"] == [1]
    assert np.isfinite(got.values).all() and np.abs(got.values).max() > 0


@pytest.mark.parametrize("params,match", [
    (dict(checkpoints=0), "checkpoints must be >= 1"), (dict(epochs=0), "epochs must be >= 1"),
    (dict(checkpoints=5, epochs=3), "checkpoints=5 is more than epochs=3"), (dict(lr=-1.0), "lr must be"),
    (dict(score="both"), "score must be"), (dict(engine="fastest"), "engine must be"),
    (dict(max_seconds=0.0), "max_seconds")])
def test_bad_parameters_are_one_line_errors_before_any_work(params, match):
    with pytest.raises(ValueError, match=match) as err:
        TracInValuer(**params).value(small_task(True))
    assert "\n" not in str(err.value)


def test_check_refuses_more_checkpoints_than_the_learners_epochs():
    with pytest.raises(ValueError, match="more than the learner's 12 epochs"):
        TracInValuer(checkpoints=13).check(small_task(True))
    with pytest.raises(ValueError, match="matches no parameter"):
        TracInValuer(parameters="nothing$").check(small_task(True))

