"""valbench's native extension (valbench/training/native_*.cpp) trains as the Python passes: the flat
MLP trainer's epoch, and batched training's gradients."""
import shutil

import numpy as np
import pytest
import torch

from valbench.training import native
from valbench.training.models import build_model
from valbench.training.repeated import FlatMLPTrainer, MinibatchRecipe
from valbench.types import Learner
from tests.test_fastfit import data, one_thread  # noqa: F401 (one_thread: an autouse fixture)

# Where a C++ compiler exists the extension must build: a failed build fails these tests
# (it would silently leave users on the slower Python step) rather than skip them.
needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler: the trainer runs its Python step (tested elsewhere)")


BUILD_ERROR = "RuntimeError: native_flat.cpp:1:1: error: no compiler here"


@pytest.fixture
def failed_build(monkeypatch):
    """The extension's build fails (as without a compiler), with the compiler's error among other lines."""
    def broken(**kwargs):
        raise RuntimeError("Error building extension\nnative_flat.cpp:1:1: error: no compiler here\nmore")

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr("torch.utils.cpp_extension.load", broken)


def pair(learner: Learner, recipe: MinibatchRecipe):
    model = build_model(learner, 3)
    return FlatMLPTrainer(model, recipe, "cpu"), FlatMLPTrainer(model, recipe, "cpu", native=False)


@needs_compiler
@pytest.mark.parametrize("kind", ["plain", "select", "weight", "sparse"])
@pytest.mark.parametrize("dropout,norm", [(0.5, True), (0.2, False), (0.0, True)])
def test_native_epoch_trains_as_the_python_step(kind, dropout, norm):
    # 150 rows in minibatches of 40 (a short last one); "sparse" selects 12 rows, so most
    # minibatches of an epoch are empty and skipped, and the rest differ in size
    x, y = data()
    fast, slow = pair(Learner("mlp", 7, 3, hidden=(16, 12), dropout=dropout, norm=norm),
                      MinibatchRecipe(lr=1e-2, epochs=6, batch_size=40))
    select = {"select": np.random.default_rng(2).random(len(x)) < 0.6,
              "sparse": np.arange(len(x)) % 12 == 0}.get(kind)
    weight = torch.rand(len(x)) if kind == "weight" else None
    fast.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    slow.fit(x, y, np.random.default_rng(7), select=select, weight=weight)
    assert fast.name == "flat-mlp+native", native.unavailable_reason()
    assert slow.name == "flat-mlp"
    assert (slow.flat - slow.init).abs().max() > 1e-2  # training did something
    assert torch.allclose(fast.flat, slow.flat, atol=2e-5)
    assert fast.opt.steps == slow.opt.steps  # the same number of Adam steps (empty minibatches skipped)
    assert torch.allclose(fast.predict_proba(x), slow.predict_proba(x), atol=1e-5)


@needs_compiler
def test_native_epoch_has_the_python_gradient():
    # one step on one minibatch: the gradient the native epoch leaves in ``grad`` is the
    # Python step's, to float32 rounding (tighter than the trained weights can show)
    x, y = data(n=90)
    fast, slow = pair(Learner("mlp", 7, 3, hidden=(16, 12)), MinibatchRecipe(lr=1e-3, epochs=1, batch_size=100))
    w = torch.rand(len(x))
    fast.fit(x, y, np.random.default_rng(1), weight=w)
    slow.fit(x, y, np.random.default_rng(1), weight=w)
    assert fast.name == "flat-mlp+native"
    assert torch.allclose(fast.grad, slow.grad, rtol=1e-4, atol=1e-7)


def test_a_failed_build_falls_back_to_the_python_step(failed_build):
    x, y = data()
    fast, slow = pair(Learner("mlp", 7, 3), MinibatchRecipe(lr=1e-2, epochs=2, batch_size=40))
    fast.fit(x, y, np.random.default_rng(0))
    slow.fit(x, y, np.random.default_rng(0))
    assert fast.name == f"flat-mlp (native unavailable: {BUILD_ERROR})"
    assert torch.equal(fast.flat, slow.flat)


def test_valbench_native_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("VALBENCH_NATIVE", "0")
    x, y = data()
    fast, slow = pair(Learner("mlp", 7, 3), MinibatchRecipe(lr=1e-2, epochs=2, batch_size=40))
    fast.fit(x, y, np.random.default_rng(0))
    slow.fit(x, y, np.random.default_rng(0))
    assert fast.name == "flat-mlp"
    assert torch.equal(fast.flat, slow.flat)


@needs_compiler
def test_native_epoch_is_as_close_to_float64_as_the_python_step():
    # Both steps round in float32; over many steps neither may drift from the float64
    # training further than the other by more than a small factor. (Adam's 1 - beta2
    # formed in float32 was off by 1.3e-5 relative, a bias repeated every step: that
    # drifted 7x further than the Python step here, while every per-step check passed.)
    from valbench.training.repeated import AutogradTrainer

    x, y = data(n=400, d=20)
    learner = Learner("mlp", 20, 3, hidden=(32, 32), dropout=0.0)
    recipe = MinibatchRecipe(lr=1e-3, epochs=40, batch_size=64)
    ref = AutogradTrainer(build_model(learner, 3).double(), recipe, "cpu")
    ref.fit(x.double(), y, np.random.default_rng(0))
    exact = torch.cat([p.detach().reshape(-1) for p in ref.model.parameters()])
    err = {}
    for trainer in pair(learner, recipe):
        rng = np.random.default_rng(0)
        rng.integers(2**62)  # the autograd loop draws its dropout seed first: the same batch order after it
        trainer.fit(x, y, rng)
        err[trainer.name] = (trainer.flat.double() - exact).abs().max().item()
    assert (ref.predict_proba(x.double()) - torch.softmax(build_model(learner, 3).double()(x.double()), 1)).abs().max() > 0.05
    assert err["flat-mlp+native"] < 2 * err["flat-mlp"], err


@needs_compiler
@pytest.mark.parametrize("per_copy", [False, True])
@pytest.mark.parametrize("dropout,norm", [(0.5, True), (0.0, False)])
def test_native_stacked_gradients_are_as_exact_as_the_chain_passes(per_copy, dropout, norm):
    # batched training's gradients (M copies, each its own row weights), against the same
    # passes in float64: the native ones may not be further off than the float32 passes
    from valbench.training.stacked import MaskStream, StackedNet, _stacked_grads

    x, y = data(n=120, d=9)
    model = build_model(Learner("mlp", 9, 3, hidden=(16, 12), dropout=dropout, norm=norm), 0)
    M = 5
    net = StackedNet.replicate(model, M, "cpu")
    g = torch.Generator().manual_seed(1)
    params = [p + 0.1 * torch.randn(p.shape, generator=g) for p in net.params]  # copies differ
    weight = (torch.rand(M, len(x), generator=g) < 0.8).float()
    masks = MaskStream(net.spec, net.dropout_h, len(x), 0, 0, "cpu").next() if dropout else []
    if per_copy:  # each copy its own rows (as TMC's prefixes and Data-OOB's bags)
        rows = torch.randint(0, len(x), (M, len(x)), generator=g)
        x, y, masks = x[rows], y[rows], [m[rows] for m in masks]
    workspace = [torch.empty(M * len(weight[0]) * 16) for _ in range(5)]  # 2 H + 1, widest hidden layer 16
    drops, norm_on, eps = native.mlp_plan(net.spec)
    ours = native.load().stacked_grads(params, x, y, weight, masks, [p > 0 for p in drops], norm_on, eps, workspace)
    f32 = _stacked_grads(net.spec, True, params, x, y, weight, masks or None)
    f64 = _stacked_grads(net.spec, True, [p.double() for p in params], x.double(), y, weight.double(),
                         [m.double() for m in masks] or None)
    for a, b, exact in zip(ours, f32, f64):
        scale = exact.abs().max().item()
        assert scale > 0
        err_ours, err_f32 = ((t.double() - exact).abs().max().item() / scale for t in (a, b))
        assert err_ours < 3 * err_f32 + 1e-7, (err_ours, err_f32)


@needs_compiler
def test_batched_training_runs_native_and_says_so():
    from valbench.training.stacked import FullBatchRecipe, train_stacked, training_label

    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(16, 16)), 0)
    weight = torch.ones(4, len(x))
    weight[torch.arange(4), torch.arange(4)] = 0  # leave-one-out copies
    args = (model, x, y, torch.arange(len(x)), weight)
    recipe = FullBatchRecipe(steps=30, lr=1e-2)
    fast = train_stacked(*args, supervised=True, recipe=recipe, seed=0)
    assert training_label(False) == "batched+native"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VALBENCH_NATIVE", "0")
        slow = train_stacked(*args, supervised=True, recipe=recipe, seed=0)
        assert training_label(False) == "batched"
    from valbench.training.stacked import StackedNet
    assert (slow.params[0] - StackedNet.replicate(model, 4, "cpu").params[0]).abs().max() > 1e-3  # it trained
    for a, b in zip(fast.params, slow.params):
        assert torch.allclose(a, b, atol=2e-5)


@needs_compiler
def test_loading_the_extension_leaves_the_floating_point_mode_alone():
    # built with -ffast-math: a library that switched the CPU to flush denormals to zero
    # when loaded would change every other computation in the worker (isolation)
    assert native.load() is not None, native.unavailable_reason()
    tiny = 1e-39  # a float32 denormal
    assert float(np.float32(tiny) * np.float32(1.0)) != 0.0
    assert (torch.tensor([tiny]) * 1.0).item() != 0.0


def test_a_failed_build_is_named_in_batched_trainings_label(failed_build):
    from valbench.training.stacked import FullBatchRecipe, train_stacked, training_label

    x, y = data()
    model = build_model(Learner("mlp", 7, 3, hidden=(8,)), 0)
    train_stacked(model, x, y, torch.arange(len(x)), torch.ones(2, len(x)), supervised=True,
                  recipe=FullBatchRecipe(steps=2, lr=1e-2), seed=0)
    assert training_label(False) == f"batched (native unavailable: {BUILD_ERROR})"


def test_a_stale_build_lock_is_removed_and_a_live_one_kept(tmp_path, monkeypatch):
    # torch's builder waits without end on a lock file; a build killed mid-way leaves one
    import os
    import time

    monkeypatch.setattr("torch.utils.cpp_extension._get_build_directory", lambda name, verbose: str(tmp_path / name))
    for name, age, kept in (("old", native.STALE_LOCK_S + 60, False), ("live", 5, True)):
        (tmp_path / name).mkdir()
        lock = tmp_path / name / "lock"
        lock.touch()
        os.utime(lock, (time.time() - age, time.time() - age))
        native._remove_stale_lock(name)
        assert lock.exists() == kept
    native._remove_stale_lock("none-there")  # no lock: nothing to do


def test_a_missing_compiler_is_named_not_the_command_line():
    out = RuntimeError("Error building extension 'valbench_native_x': [1/3] /nonexistent/c++ -MMD -MF a.o.d -c a.cpp\n"
                       "FAILED: a.o\n/bin/sh: 1: /nonexistent/c++: not found\nninja: build stopped: subcommand failed.")
    assert native._first_error(out) == "RuntimeError: /bin/sh: 1: /nonexistent/c++: not found"


def test_batched_label_names_a_failed_build_only_where_native_applied(failed_build):
    from valbench.training.stacked import FullBatchRecipe, train_stacked, training_label

    x, y = data()
    recipe = FullBatchRecipe(steps=2, lr=1e-2)
    mlp = build_model(Learner("mlp", 7, 3, hidden=(8,)), 0)
    train_stacked(mlp, x, y, torch.arange(len(x)), torch.ones(2, len(x)), supervised=True, recipe=recipe, seed=0)
    assert "native unavailable" in training_label(False)
    ae = build_model(Learner("mlp-autoencoder", 7, 7, hidden=(4,), latent=2), 0)  # native never applies to it
    train_stacked(ae, x, x, torch.arange(len(x)), torch.ones(2, len(x)), supervised=False, recipe=recipe, seed=0)
    assert training_label(False) == "batched"


def test_mlp_plan_reads_the_paper_mlp_and_nothing_else():
    from valbench.training.chain import chain_layers, chain_spec

    def spec(learner):
        return chain_spec(chain_layers(build_model(learner, 0)))

    assert native.mlp_plan(spec(Learner("mlp", 7, 3, hidden=(8, 6), dropout=0.5))) == ([0.5, 0.5], True, 1e-5)
    assert native.mlp_plan(spec(Learner("mlp", 7, 3, hidden=(8,), dropout=0.0, norm=False))) == ([0.0], False, 1e-5)
    assert native.mlp_plan(spec(Learner("mlp-autoencoder", 7, 7, hidden=(4,), latent=2))) is None
    mixed = (("linear",), ("mish",), ("layernorm", 1e-5), ("linear",), ("mish",), ("layernorm", 1e-3), ("linear",))
    assert native.mlp_plan(mixed) is None  # the native passes take one eps
    assert native.mlp_plan((("linear",), ("relu",), ("linear",))) is None
