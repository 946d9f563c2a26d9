"""The fast repeated trainer computes the same training as autograd + torch.optim.Adam."""
import dataclasses

import numpy as np
import pytest
import torch

from valbench.training.models import single_thread
from valbench.training.repeated import AutogradTrainer, FlatMLPTrainer, MinibatchRecipe, make_trainer
from valbench.training.models import build_model
from valbench.types import Learner


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread("cpu"):
        yield


def data(n=150, d=7, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("norm", [True, False])
def test_gradient_equals_autograd_with_dropout_masks(norm):
    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(9, 5), dropout=0.5, norm=norm), 0)
    trainer = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-3, epochs=1, batch_size=32), "cpu")
    masks = trainer._masks(len(x), np.random.default_rng(1), None)
    assert all(set(torch.unique(m).tolist()) == {0.0, 2.0} for m in masks)
    w = torch.rand(len(x))
    loss = trainer.loss_grad(x, y, masks, w)
    # autograd through the same layers, with the same masks in place of dropout
    h, k = x, 0
    for layer in model.net:
        if isinstance(layer, torch.nn.Dropout):
            h, k = h * masks[k], k + 1
        else:
            h = layer(h)
    per = torch.nn.functional.cross_entropy(h, y, reduction="none")
    ref = (per * w).sum() / w.sum()
    ref.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(trainer.grad, grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kind", ["plain", "select", "weight"])
def test_training_equals_autograd_adam_without_dropout(kind):
    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16), dropout=0.0), 3)
    recipe = MinibatchRecipe(lr=1e-2, epochs=5, batch_size=40)
    select = np.random.default_rng(2).random(len(x)) < 0.6 if kind == "select" else None
    weight = torch.rand(len(x)) if kind == "weight" else None
    fast, slow = FlatMLPTrainer(model, recipe, "cpu"), AutogradTrainer(model, recipe, "cpu")
    fast.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    slow.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    moved = (slow.predict_proba(x) - torch.softmax(model(x), 1)).abs().max()
    assert moved > 1e-2  # training did something
    assert torch.allclose(fast.predict_proba(x), slow.predict_proba(x), atol=1e-5)


def test_fit_restarts_from_the_initial_weights_and_is_reproducible():
    x, y = data()
    model = build_model(Learner("mlp", 7, 3), 0)
    t = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-3, epochs=3, batch_size=32), "cpu")
    t.fit(x, y, np.random.default_rng(0))
    a = t.predict_proba(x)
    t.fit(x[:20], y[:20], np.random.default_rng(5))
    t.fit(x, y, np.random.default_rng(0))
    assert torch.equal(a, t.predict_proba(x))
    # eval mode: dropout off, so the untrained MLP predicts like the module in eval mode
    fresh = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-3, epochs=0, batch_size=32), "cpu")
    fresh.fit(x, y, np.random.default_rng(0))
    model.eval()
    assert torch.allclose(fresh.predict_proba(x), torch.softmax(model(x), 1), atol=1e-6)


def test_fused_and_manual_adam_agree():
    x, y = data()
    model = build_model(Learner("mlp", 7, 3, dropout=0.0), 0)
    a = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-2, epochs=4, batch_size=32), "cpu", native=False)
    b = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-2, epochs=4, batch_size=32), "cpu", native=False)
    b.opt.fused = False
    if not a.opt.fused:
        pytest.skip("this torch build has no fused Adam kernel on CPU: nothing to compare")
    a.fit(x, y, np.random.default_rng(0))
    b.fit(x, y, np.random.default_rng(0))
    assert torch.allclose(a.flat, b.flat, atol=1e-6)


def test_adam_takes_transposed_gradients():
    # a gradient may come transposed (non-contiguous: autograd.grad of a batched matrix
    # product returns some); the fused kernel must not read it in memory order
    from valbench.training.adam import Adam

    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 5, 4, generator=g), torch.randn(6, generator=g)]
    ref = [p.clone().requires_grad_(True) for p in params]
    ours, theirs = Adam(params, lr=1e-2), torch.optim.Adam(ref, lr=1e-2)
    for _ in range(3):
        grads = [torch.randn(3, 4, 5, generator=g).transpose(1, 2), torch.randn(6, generator=g)]
        assert not grads[0].is_contiguous()
        for r, gr in zip(ref, grads):
            r.grad = gr.clone()
        ours.step(grads)
        theirs.step()
    for p, r in zip(params, ref):
        assert torch.allclose(p, r, atol=1e-6)


def test_selection_that_empties_an_epoch_trains_nothing():
    x, y = data()
    model = build_model(Learner("mlp", 7, 3), 0)
    t = FlatMLPTrainer(model, MinibatchRecipe(lr=1e-2, epochs=2, batch_size=32), "cpu")
    t.fit(x, y, np.random.default_rng(0), select=np.zeros(len(x), dtype=bool))
    assert torch.equal(t.flat, t.init)


def test_other_architectures_fall_back_to_autograd():
    ae = build_model(Learner("mlp-autoencoder", 6, 6, hidden=(4,), latent=2), 0)
    mlp = build_model(Learner("mlp", 6, 2), 0)
    assert make_trainer(mlp, MinibatchRecipe(1e-3, 1, 8), "cpu").name == "flat-mlp"
    assert make_trainer(ae, MinibatchRecipe(1e-3, 1, 8), "cpu").name == "autograd"


def test_single_thread_restores_the_setting():
    before = torch.get_num_threads()
    with single_thread("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def padded(model, recipe, compiled: bool) -> FlatMLPTrainer:
    """A trainer on the padded step (recipe.compile), compiled or run eagerly."""
    t = FlatMLPTrainer(model, dataclasses.replace(recipe, compile=True), "cpu")
    if not compiled:
        t.compile_error = "not compiled in this test"  # the padded step, eagerly
    return t


@pytest.mark.parametrize("kind", ["plain", "select", "weight"])
def test_the_padded_step_trains_as_the_eager_loop(kind):
    # 150 rows in minibatches of 40 (a short last one), dropout on: the padding rows
    # (weight 0) must add nothing, and the masks and row order must be the same
    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16)), 3)
    recipe = MinibatchRecipe(lr=1e-2, epochs=5, batch_size=40)
    select = np.random.default_rng(2).random(len(x)) < 0.6 if kind == "select" else None
    weight = torch.rand(len(x)) if kind == "weight" else None
    eager, pad = FlatMLPTrainer(model, recipe, "cpu"), padded(model, recipe, compiled=False)
    eager.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    pad.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    assert (eager.flat - eager.init).abs().max() > 1e-2  # training did something
    assert torch.allclose(pad.flat, eager.flat, atol=1e-5)
    assert pad.name == "flat-mlp (compile failed: not compiled in this test)"


def test_the_compiled_step_trains_as_the_eager_loop():
    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16)), 3)
    recipe = MinibatchRecipe(lr=1e-2, epochs=3, batch_size=40)
    select = np.random.default_rng(2).random(len(x)) < 0.6
    eager, comp = FlatMLPTrainer(model, recipe, "cpu"), padded(model, recipe, compiled=True)
    for seed in (7, 8):  # the second fit reuses the compiled step from the initial weights
        eager.fit(x, y, np.random.default_rng(seed), select=select)
        comp.fit(x, y, np.random.default_rng(seed), select=select)
        if comp.compile_error is not None:
            pytest.skip(f"torch.compile does not work here: {comp.compile_error}")
        assert torch.allclose(comp.flat, eager.flat, atol=1e-5)
    assert comp.name == "flat-mlp+compile"


def test_a_step_that_fails_to_compile_falls_back_to_the_padded_step(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler\nmore lines")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    x, y = data()
    model = build_model(Learner("mlp", 7, 3), 0)
    recipe = MinibatchRecipe(lr=1e-2, epochs=2, batch_size=40)
    t, ref = padded(model, recipe, compiled=True), padded(model, recipe, compiled=False)
    t.fit(x, y, np.random.default_rng(0))
    ref.fit(x, y, np.random.default_rng(0))
    assert t.name == "flat-mlp (compile failed: RuntimeError: no C++ compiler)"
    assert torch.equal(t.flat, ref.flat)


@pytest.mark.gpu
def test_cuda_training_equals_autograd_without_dropout():
    x, y = data()
    x, y = x.cuda(), y.cuda()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16), dropout=0.0), 3, "cuda")
    recipe = MinibatchRecipe(lr=1e-2, epochs=5, batch_size=40)
    select = np.random.default_rng(2).random(len(x)) < 0.6
    fast, slow = FlatMLPTrainer(model, recipe, "cuda"), AutogradTrainer(model, recipe, "cuda")
    fast.fit(x, y, np.random.default_rng(7), select=select)
    slow.fit(x, y, np.random.default_rng(7), select=select)
    assert torch.allclose(fast.predict_proba(x), slow.predict_proba(x), atol=1e-4)
    with_dropout = FlatMLPTrainer(build_model(Learner("mlp", 7, 3), 0, "cuda"), recipe, "cuda")
    with_dropout.fit(x, y, np.random.default_rng(0), select=select)  # masks drawn on the device
    assert torch.isfinite(with_dropout.predict_proba(x)).all()


@pytest.mark.gpu
def test_cuda_compiled_step_trains_as_the_eager_loop():
    # on CUDA the padded step is compiled with mode="reduce-overhead" (CUDA graphs); dropout
    # on: both trainers draw the same masks on the device
    x, y = data()
    x, y = x.cuda(), y.cuda()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16)), 3, "cuda")
    recipe = MinibatchRecipe(lr=1e-2, epochs=5, batch_size=40)
    select = np.random.default_rng(2).random(len(x)) < 0.6
    eager = FlatMLPTrainer(model, recipe, "cuda")
    comp = FlatMLPTrainer(model, dataclasses.replace(recipe, compile=True), "cuda")
    for seed in (7, 8):
        eager.fit(x, y, np.random.default_rng(seed), select=select)
        comp.fit(x, y, np.random.default_rng(seed), select=select)
        assert comp.name == "flat-mlp+compile", comp.name
        assert torch.allclose(comp.flat, eager.flat, atol=1e-4)
