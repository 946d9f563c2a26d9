"""Batched training and scoring: the batched path equals the one-at-a-time path.

Tolerance: float32 reassociation only. After 60 Adam steps at lr 1e-3 the parameters of
a batched copy and of the same model trained alone (same initialisation, same rows,
same dropout masks) differ by < 1e-5, and their target scores by < 1e-6.
"""
import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score, roc_auc_score

from valbench.training.mish import mish_derivative, mish_parts
from valbench.training.stacked import FullBatchRecipe, StackedNet, UnsupportedNetwork, train_single, train_stacked
from valbench.training.scoring import batched_performance, empty_set_score
from valbench.training.models import build_model, predict
from valbench.types import Learner
from valbench.training.scoring import performance
from valbench.testing import easy_task
from valbench.training.utility import source_tensors

PARAM_TOL = 1e-5


def _max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def _weights(n: int, m: int, seed: int = 1) -> torch.Tensor:
    g = np.random.default_rng(seed)
    w = (g.random((m, n)) > 0.3).astype(np.float32)
    w[-1] = np.bincount(g.integers(0, n, n), minlength=n)  # a bootstrap bag: counts, not 0/1
    return torch.as_tensor(w)


def _rows(w: torch.Tensor) -> torch.Tensor:
    """The rows a weight vector stands for, repeated by count (the one-at-a-time input)."""
    return torch.repeat_interleave(torch.arange(len(w)), w.to(torch.long))


@pytest.mark.parametrize("dropout", ["off", "shared"])
def test_batched_equals_one_at_a_time(dropout):
    task, _ = easy_task(n_source=60, n_target=40)
    x, y = source_tensors(task)
    recipe = FullBatchRecipe(steps=60, lr=1e-3, dropout=dropout)
    w = _weights(len(x), 4)
    net = train_stacked(build_model(task.learner, 0), x, y, torch.arange(len(x)), w, supervised=True, recipe=recipe, seed=3)
    xt = torch.tensor(np.asarray(task.target.x))
    batched_scores = batched_performance("auroc", torch.tensor(np.asarray(task.target.y)),
                                         net.predict(xt, True)).numpy()
    for j in range(4):
        alone = train_single(build_model(task.learner, 0), x, y, _rows(w[j]), supervised=True, recipe=recipe, seed=3)
        copy = net.load_into(build_model(task.learner, 0), j)
        assert _max_param_diff(alone, copy) < PARAM_TOL
        assert _max_param_diff(alone, build_model(task.learner, 0)) > 1e-3  # training moved the weights
        single_score = performance("auroc", np.asarray(task.target.y), predict(task.learner, alone, task.target.x))
        assert abs(single_score - batched_scores[j]) < 1e-6


def test_shared_dropout_masks_follow_samples_not_positions():
    """Per-copy row lists (TMC prefixes of different permutations) train like shared rows."""
    task, _ = easy_task(n_source=30, n_target=20)
    x, y = source_tensors(task)
    recipe = FullBatchRecipe(steps=30, lr=1e-3, dropout="shared")
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    index = torch.stack([perm, torch.arange(30)])
    weight = torch.stack([(torch.arange(30) < 12).float(), torch.ones(30)])
    net = train_stacked(build_model(task.learner, 0), x, y, index, weight, supervised=True, recipe=recipe, seed=0)
    alone = train_single(build_model(task.learner, 0), x, y, perm[:12], supervised=True, recipe=recipe, seed=0)
    assert _max_param_diff(alone, net.load_into(build_model(task.learner, 0), 0)) < PARAM_TOL
    ref = train_stacked(build_model(task.learner, 0), x, y, torch.arange(30), weight[1:], supervised=True,
                        recipe=recipe, seed=0)
    assert all(torch.allclose(a[1], b[0], atol=PARAM_TOL) for a, b in zip(net.params, ref.params))


def test_autoencoder_batched_equals_one_at_a_time():
    g = np.random.default_rng(0)
    x = torch.as_tensor(g.standard_normal((40, 8)).astype(np.float32))
    learner = Learner("mlp-autoencoder", 8, 8, hidden=(6,), latent=3, dropout=0.0, norm=False)
    recipe = FullBatchRecipe(steps=40, lr=1e-2, dropout="shared")
    w = _weights(40, 2)
    net = train_stacked(build_model(learner, 0), x, x, torch.arange(40), w, supervised=False, recipe=recipe, seed=0)
    for j in range(2):
        alone = train_single(build_model(learner, 0), x, x, _rows(w[j]), supervised=False, recipe=recipe, seed=0)
        assert _max_param_diff(alone, net.load_into(build_model(learner, 0), j)) < PARAM_TOL


def test_unsupported_network_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedNetwork, match="BatchNorm1d"):
        StackedNet.replicate(model, 2, "cpu")


def test_the_hand_written_mish_and_its_derivative_equal_torch():
    # the passes batched training runs (valbench.training.chain) use these two
    a = (torch.randn(10000) * 15).requires_grad_()
    ref = torch.nn.functional.mish(a)
    t, e = mish_parts(a.detach())
    assert torch.allclose(a.detach() * t, ref, atol=2e-6, rtol=1e-5)
    g, = torch.autograd.grad(ref.sum(), a)
    assert torch.allclose(mish_derivative(a.detach(), t, e), g, atol=5e-6, rtol=1e-4)


def test_batched_scores_equal_scikit_learn():
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 300)
    p1 = np.round(g.random((7, 300)), 2)  # rounding makes ties
    probs = np.stack([1 - p1, p1], axis=2)
    got = batched_performance("auroc", torch.as_tensor(y), torch.as_tensor(probs)).numpy()
    assert np.allclose(got, [roc_auc_score(y, p) for p in p1], atol=1e-12)
    y3 = g.integers(0, 3, 200)
    p3 = g.dirichlet(np.ones(3), size=(4, 200))
    got = batched_performance("auroc", torch.as_tensor(y3), torch.as_tensor(p3)).numpy()
    assert np.allclose(got, [performance("auroc", y3, p) for p in p3], atol=1e-12)
    got = batched_performance("accuracy", torch.as_tensor(y3), torch.as_tensor(p3)).numpy()
    assert np.allclose(got, [performance("accuracy", y3, p) for p in p3])
    t = g.standard_normal((50, 6))
    outs = t[None] + g.standard_normal((3, 50, 6)) * [[[0.1]], [[1.0]], [[3.0]]]
    got = batched_performance("r2", torch.as_tensor(t), torch.as_tensor(outs)).numpy()
    assert np.allclose(got, [r2_score(t, o, multioutput="variance_weighted") for o in outs])
    with pytest.raises(ValueError, match="both classes"):
        batched_performance("auroc", torch.zeros(5, dtype=torch.long), torch.rand(1, 5, 2))


def test_empty_set_scores():
    assert empty_set_score("auroc", torch.tensor([0, 1, 1])) == 0.5
    assert empty_set_score("accuracy", torch.tensor([0, 1, 1, 2])) == 0.5
    assert empty_set_score("r2", torch.zeros(3, 2)) == 0.0


@pytest.mark.slow
def test_compiled_equals_eager():
    task, _ = easy_task(n_source=50, n_target=30)
    x, y = source_tensors(task)
    w = _weights(len(x), 3)
    nets = [train_stacked(build_model(task.learner, 0), x, y, torch.arange(len(x)), w, supervised=True,
                          recipe=FullBatchRecipe(steps=40, lr=1e-3, compile=c), seed=0) for c in (False, True)]
    from valbench.training.stacked import compile_status

    assert compile_status() is None, compile_status()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(nets[0].params, nets[1].params))


@pytest.mark.gpu
def test_batched_on_cuda_equals_one_at_a_time_on_cuda():
    task, _ = easy_task(n_source=60, n_target=40, device="cuda")
    x, y = source_tensors(task)
    w = _weights(len(x), 3).cuda()
    recipe = FullBatchRecipe(steps=40, lr=1e-3, dropout="shared")
    net = train_stacked(build_model(task.learner, 0, "cuda"), x, y, torch.arange(len(x), device="cuda"), w,
                        supervised=True, recipe=recipe, seed=0)
    for j in range(3):
        alone = train_single(build_model(task.learner, 0, "cuda"), x, y, _rows(w[j].cpu()).cuda(), supervised=True,
                             recipe=recipe, seed=0)
        assert _max_param_diff(alone, net.load_into(build_model(task.learner, 0, "cuda"), j)) < 1e-4
