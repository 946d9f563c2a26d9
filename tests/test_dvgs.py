"""The dvgs valuer: faithful to the protocol, equal across engines, clear on bad input."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from valbench import hookimpl
from valbench.errors import ConfigError, ValuationError
from valbench.gradsim.dvgs import DVGSConfig, dvgs
from valbench.gradsim.layers import prepare_model
from valbench.training.models import ARCHITECTURES, build_model, default_learner
from valbench.types import Learner
from valbench.testing import easy_task
from valbench.types import Split, ValuationTask
from valbench_plugins.valuers.dvgs import DVGS

FEW = dict(restarts=1, epochs=3, target_batch=1000)


def small_task(n_source=60, n_target=30, seed=0):
    task, mask = easy_task(seed, n_source, n_target)
    return task, mask


def test_first_snapshot_is_taken_at_the_fresh_model_before_the_step():
    """One restart, one full-batch step: values = cos(g_i, g_t) at the initial weights."""
    task, _ = small_task()
    v = dvgs(task, DVGSConfig(restarts=1, epochs=1, target_batch=1000, dropout=False)).values
    model = build_model(task.learner, task.seed)
    prepare_model(model, dropout=False)
    params = list(model.parameters())
    xt, yt = torch.tensor(task.target.x), torch.tensor(task.target.y)
    gt = torch.cat([g.flatten() for g in torch.autograd.grad(
        torch.nn.functional.cross_entropy(model(xt), yt), params)])
    expect = []
    for x, y in zip(task.source.x, task.source.y):
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x[None])), torch.tensor([y]))
        gi = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        expect.append(torch.nn.functional.cosine_similarity(gi, gt, dim=0).item())
    assert np.allclose(v, expect, atol=1e-5)


def test_snapshots_follow_the_global_step_counter():
    task, _ = small_task()  # 30 target samples, batch 10: 3 steps per epoch
    out = dvgs(task, DVGSConfig(restarts=2, epochs=2, target_batch=10, period=4))
    # 12 steps in all (0..11), global counter: snapshots at steps 0, 4, 8
    assert out.info["steps"] == 12 and out.info["snapshots"] == 3 and out.fits == 2
    assert out.info["engine"] == "fast" and out.info["dropout"] == "per-sample hash masks"
    assert out.info["target_pass"].startswith("fused")


def test_hand_written_passes_give_the_hooks_engine_values(monkeypatch):
    from valbench.gradsim import driver

    task, _ = small_task()
    cfg = DVGSConfig(restarts=2, epochs=2, target_batch=20)
    hand = dvgs(task, cfg)
    assert hand.info["passes"].startswith("hand-written")
    monkeypatch.setattr(driver, "sequential_plan", lambda model, probe: None)
    hooks = dvgs(task, cfg)
    assert hooks.info["passes"].startswith("autograd")
    assert np.allclose(hand.values, hooks.values, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "projection", "euclidean"])
def test_fast_and_opacus_give_the_same_values(similarity):
    task, _ = small_task()
    a = dvgs(task, DVGSConfig(engine="fast", similarity=similarity, restarts=2, epochs=2, target_batch=20)).values
    b = dvgs(task, DVGSConfig(engine="opacus", similarity=similarity, restarts=2, epochs=2, target_batch=20)).values
    assert np.allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_source_batch_changes_memory_not_values():
    task, _ = small_task()
    a = dvgs(task, DVGSConfig(engine="opacus", source_batch=7, **FEW))
    b = dvgs(task, DVGSConfig(engine="opacus", source_batch=400, **FEW))
    assert a.info["chunk"] == 7 and b.info["chunk"] == 60
    assert np.allclose(a.values, b.values, rtol=1e-5, atol=1e-7)


def test_class_balance_follows_the_learner_and_changes_the_target_loss():
    task, _ = small_task()
    skewed = Split(task.target.x[:25], np.r_[np.zeros(20), np.ones(5)].astype(np.int64))
    task = ValuationTask(task.source, skewed, 2, Learner("mlp", 6, 2, class_balance=True), "auroc", 0)
    on = dvgs(task, DVGSConfig(**FEW))
    off = dvgs(task, DVGSConfig(class_balance=False, **FEW))
    assert on.info["class_balance"] and not off.info["class_balance"]
    assert not np.allclose(on.values, off.values)


def test_dropout_off_is_deterministic_in_the_masks_and_differs_from_on():
    task, _ = small_task()
    on = dvgs(task, DVGSConfig(**FEW))
    off = dvgs(task, DVGSConfig(dropout=False, **FEW))
    assert off.info["dropout"] == "none" and not np.allclose(on.values, off.values)


def image_task(n_source=12, n_target=6):
    g = np.random.default_rng(0)
    x = g.standard_normal((n_source + n_target, 3, 32, 32)).astype(np.float32)
    learner = default_learner(3 * 32 * 32, None, in_shape=(3, 32, 32))
    learner = learner.with_recipe(hidden=(6, 6), latent=4)
    src, tgt = Split(x[:n_source], x[:n_source]), Split(x[n_source:], x[n_source:])
    return ValuationTask(src, tgt, None, learner, "r2", 0)


def test_unsupervised_conv_autoencoder_fast_equals_opacus():
    task = image_task()
    assert task.learner.architecture == "conv-autoencoder"
    a = dvgs(task, DVGSConfig(engine="auto", **FEW))
    b = dvgs(task, DVGSConfig(engine="opacus", **FEW))
    assert a.info["engine"] == "fast" and a.info["dropout"] == "none"
    assert np.allclose(a.values, b.values, rtol=1e-5, atol=1e-5 * np.abs(b.values).max())


def test_unsupervised_mlp_autoencoder_flags_noisy_samples():
    g = np.random.default_rng(1)
    base = g.standard_normal((200, 4)) @ g.standard_normal((4, 20))
    x = (base / base.std()).astype(np.float32)
    phi = np.r_[np.zeros(30), np.full(30, 2.0)]
    src = x[:60] + (phi[:, None] * g.standard_normal((60, 20))).astype(np.float32)
    learner = default_learner(20, None)
    task = ValuationTask(Split(src, src), Split(x[100:], x[100:]), None, learner, "r2", 0)
    v = dvgs(task, DVGSConfig(restarts=1, epochs=30, target_batch=100)).values
    assert v[:30].mean() > v[30:].mean()


def test_diverging_training_stops_with_a_clear_message():
    task, _ = small_task()
    with pytest.raises(ValuationError, match=r"NaN or infinite at step \d+ \(restart 1\).*lower lr"):
        dvgs(task, DVGSConfig(lr=1e30, restarts=1, epochs=50, target_batch=1000))


def test_parameter_ranges_are_checked():
    for bad in (dict(restarts=0), dict(lr=-1.0), dict(period=0), dict(source_batch=0)):
        with pytest.raises(ValueError):
            DVGS(**bad).validate()


@pytest.fixture
def batchnorm_learner(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "bn-mlp", lambda l: torch.nn.Sequential(
        torch.nn.Linear(l.in_features, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, l.out_features)))
    return Learner("bn-mlp", 6, 2)


def test_batchnorm_model_is_refused_before_any_work(batchnorm_learner):
    task, _ = small_task()
    task = ValuationTask(task.source, task.target, 2, batchnorm_learner, "auroc", 0)
    with pytest.raises(ValueError, match="BatchNorm1d.*LayerNorm"):
        DVGS().check(task)
    with pytest.raises(ValuationError, match="BatchNorm1d.*LayerNorm"):
        DVGS().value(task)


def test_runner_precheck_turns_a_bad_parameter_spec_into_a_config_error(registry):
    from valbench.grid import build_experiment, expand
    from valbench.runner import CellCache, precheck

    raw = {"datasets": "synthetic", "corruptions": "labels", "valuers": "dvgs[parameters=nothing]", "seeds": 1}
    (job,) = expand(build_experiment(raw), registry, "cpu")
    with pytest.raises(ConfigError, match="matches no parameter"):
        precheck(job, CellCache())


def test_runs_through_the_harness_and_beats_chance(registry):
    from valbench.grid import build_experiment, expand
    from valbench.runner import CellCache, run_job

    raw = {"datasets": "synthetic", "corruptions": "labels", "valuers": "dvgs[restarts=1,epochs=20]", "seeds": 1}
    (job,) = expand(build_experiment(raw), registry, "cpu")
    r = run_job(job, CellCache())
    assert r.status == "ok", r.error
    assert r.scores["corruption-auroc"] > 0.8 and r.info["engine"] == "fast" and r.fits == 1


def test_unsupervised_runner_picks_the_conv_autoencoder_for_images():
    from valbench.grid import build_experiment, expand
    from valbench.plugins import build_registry
    from valbench.runner import CellCache

    class Images:
        name = "tiny-images"
        version = "1"

        def __init__(self) -> None:
            pass

        def fingerprint(self) -> str:
            return "tiny"

        def load(self, seed):
            from valbench.types import Splits

            x = np.random.default_rng(seed).random((30, 3, 32, 32), dtype=np.float32)
            y = np.zeros(30, dtype=np.int64)
            y[::2] = 1
            return Splits(Split(x[:10], y[:10]), Split(x[10:20], y[10:20]), Split(x[20:], y[20:]), 2)

    plugin = types.SimpleNamespace(register_datasets=hookimpl(lambda register: register(Images)))
    registry = build_registry(extra=[plugin])
    raw = {"datasets": "tiny-images", "corruptions": "features", "valuers": "random", "seeds": 1,
           "mode": "unsupervised"}
    (job,) = expand(build_experiment(raw), registry, "cpu")
    cell = CellCache().cell(job)
    assert cell.learner.architecture == "conv-autoencoder" and cell.learner.in_shape == (3, 32, 32)
    out = build_model(cell.learner, 0)(torch.tensor(cell.source.x))
    assert out.shape == (10, 3, 32, 32)


@pytest.mark.gpu
def test_cuda_values_match_cpu():
    task, _ = small_task()
    cpu = dvgs(task, DVGSConfig(**FEW)).values
    gpu_task = ValuationTask(task.source, task.target, 2, task.learner, "auroc", 0, "cuda")
    gpu = dvgs(gpu_task, DVGSConfig(**FEW)).values
    assert np.allclose(cpu, gpu, rtol=1e-4, atol=1e-5)
