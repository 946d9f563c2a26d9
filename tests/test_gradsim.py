"""valbench.gradsim: masks, layers, and the agreement of the three per-sample engines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from valbench.gradsim import similarity
from valbench.gradsim.driver import ChunkState, build_engine, choose_engine, fused_terms, source_terms
from valbench.gradsim.engines import UnsupportedModel, check_model, select_parameters
from valbench.gradsim.layers import prepare_model
from valbench.training.mish import FastMish
from valbench.gradsim.masks import TARGET_ROWS, HashDropout, MaskContext, keep_mask, sample_seeds
from valbench.gradsim.similarity import SIMILARITIES
from valbench.training.models import build_model, loss_function
from valbench.types import Learner

# ---------------------------------------------------------------- masks and layers


def test_masks_are_per_sample_and_independent_of_the_batch():
    seeds = sample_seeds(torch.arange(3000), key=7)
    m = keep_mask(11, seeds, 50, 0.5)
    assert set(m.unique().tolist()) == {0.0, 2.0}  # inverted dropout scale 1 / (1 - p)
    assert abs((m > 0).float().mean().item() - 0.5) < 0.01
    assert torch.equal(keep_mask(11, seeds[1000:1400], 50, 0.5), m[1000:1400])  # chunking never matters
    assert not torch.equal(m[0], m[1])  # one mask per sample, not one per batch
    assert (keep_mask(12, seeds, 50, 0.5) == m).float().mean() < 0.55  # a new key, a new mask
    quarter = keep_mask(11, seeds, 50, 0.25)
    assert abs((quarter > 0).float().mean().item() - 0.75) < 0.01
    assert torch.allclose(quarter.unique(), torch.tensor([0.0, 4 / 3]))


def test_host_column_seeds_equal_the_tensor_hash():
    from valbench.gradsim.masks import _seed32, column_seeds

    key = 0xDEADBEEF12345678
    assert np.array_equal(column_seeds(1000, key), _seed32(torch.arange(1000), key).numpy())


def test_target_and_source_ids_give_different_seeds():
    s = sample_seeds(torch.arange(100), key=3)
    t = sample_seeds(TARGET_ROWS + torch.arange(100), key=3)
    assert s.dtype == torch.int32 and (s != t).all()


def test_hash_dropout_is_identity_in_eval_and_when_disabled():
    ctx = MaskContext(key=5, seeds=sample_seeds(torch.arange(4), 1))
    layer = HashDropout(0.5, ctx, 0)
    x = torch.ones(4, 10)
    assert not torch.equal(layer(x), x)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    ctx.enabled = False
    assert torch.equal(layer(x), x)


def test_fast_mish_matches_torch_mish():
    x = torch.linspace(-40, 60, 2001, dtype=torch.float64, requires_grad=True)
    y, ref = FastMish()(x), nn.functional.mish(x)
    assert torch.allclose(y, ref, atol=1e-12)
    g, = torch.autograd.grad(y.sum(), x)
    r, = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(g, r, atol=1e-12)


def test_batchnorm_is_refused_with_the_layer_and_an_alternative():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(UnsupportedModel, match=r"layer '1' \(BatchNorm1d\).*LayerNorm or nn.GroupNorm"):
        check_model(model)


def test_parameter_selection():
    model = build_model(Learner("mlp", 5, 2), 0)
    assert len(select_parameters(model, "all")) == 6
    assert select_parameters(model, "last") == ["net.8.weight", "net.8.bias"]
    assert select_parameters(model, r"weight$") == ["net.0.weight", "net.4.weight", "net.8.weight"]
    with pytest.raises(UnsupportedModel, match="matches no parameter.*net.0.weight"):
        select_parameters(model, "nothing")


# ---------------------------------------------------------------- engines agree

def _setup(arch: str, dtype=torch.float32, n: int = 24):
    g = torch.Generator().manual_seed(0)
    if arch == "mlp":
        learner = Learner("mlp", 12, 3)
        x = torch.randn(n, 12, generator=g)
        y = torch.randint(0, 3, (n,), generator=g)
    elif arch == "mlp-autoencoder":
        learner = Learner("mlp-autoencoder", 30, 30, hidden=(20,), latent=6, dropout=0.0, norm=False)
        x = torch.randn(n, 30, generator=g)
        y = x
    else:
        learner = Learner("conv-autoencoder", 3 * 32 * 32, 3 * 32 * 32, hidden=(6, 6), latent=4, dropout=0.0,
                          norm=False, in_shape=(3, 32, 32))
        x = torch.randn(n // 3, 3, 32, 32, generator=g)
        y = x
    model = build_model(learner, 0).to(dtype)
    x = x.to(dtype)
    y = y.to(dtype) if arch != "mlp" else y
    ctx, _ = prepare_model(model)
    ctx.key = 99
    seeds = sample_seeds(torch.arange(len(x)), 1)
    names = [n for n, _ in model.named_parameters()]
    # a target gradient: the mean loss gradient of a few other samples
    ctx.seeds = sample_seeds(TARGET_ROWS + torch.arange(len(x)), 1)
    loss = loss_function(learner, "mean")(model(x.flip(0)), y.flip(0))
    target = list(torch.autograd.grad(loss, list(model.parameters())))
    return learner, model, ctx, x, y, seeds, names, target


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Relative agreement at the scale of the values (dot products may cross zero)."""
    return bool(((a - b).abs() <= rtol * (b.abs() + b.abs().max())).all())


@pytest.mark.parametrize("arch", ["mlp", "mlp-autoencoder", "conv-autoencoder"])
def test_fast_engine_equals_opacus_for_every_similarity(arch):
    learner, model, ctx, x, y, seeds, names, target = _setup(arch)
    loss = loss_function(learner, "none")
    terms = {}
    for name in ("fast", "opacus"):
        engine = build_engine(name, model, loss, names, ctx)
        terms[name] = engine.terms(x, y, seeds, target)
        engine.close()
    (df, sf), (do, so) = terms["fast"], terms["opacus"]
    assert _close(sf, so, 1e-5) and _close(df, do, 1e-5)
    tsq = sum(t.pow(2).sum() for t in target)
    for kind in SIMILARITIES:
        assert _close(similarity(kind, df, sf, tsq), similarity(kind, do, so, tsq), 1e-5), kind


@pytest.mark.parametrize("arch", ["mlp", "conv-autoencoder"])
def test_all_engines_agree_in_float64(arch):
    learner, model, ctx, x, y, seeds, names, target = _setup(arch, torch.float64, n=9)
    out = {}
    for name in ("naive", "opacus", "fast"):
        engine = build_engine(name, model, loss_function(learner, "none"), names, ctx)
        out[name] = engine.terms(x, y, seeds, target)
        engine.close()
    for name in ("opacus", "fast"):
        for a, b in zip(out[name], out["naive"]):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * b.abs().max()), name


@pytest.mark.parametrize("arch", ["mlp", "mlp-autoencoder"])
def test_fused_step_gives_the_autograd_target_gradient_and_the_same_terms(arch):
    learner, model, ctx, x, y, seeds, names, _ = _setup(arch, torch.float64)
    xt, yt = x[:7] * 0.5, y[:7]  # any target rows
    tseeds = sample_seeds(TARGET_ROWS + torch.arange(7), 1)
    engine = build_engine("fast", model, loss_function(learner, "none"), names, ctx, fusable=True)
    assert engine.fusable
    buffers = {"max_target": 7}
    state = ChunkState(5)  # the fused chunk and then more chunks
    for idx in (torch.tensor([6, 0, 3, 2, 5, 1, 4]), torch.tensor([4, 1, 2])):  # a full, then a short batch
        if arch == "mlp":  # class-balanced: torch's weighted-mean cross-entropy
            w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
            ref_loss_fn = loss_function(learner, "mean", class_weights=w)
            coef = w[yt[idx]] / w[yt[idx]].sum()
        else:
            ref_loss_fn = loss_function(learner, "mean")
            coef = torch.full((len(idx),), 1 / len(idx), dtype=torch.float64)
        ctx.seeds = tseeds[idx]
        ref_loss = ref_loss_fn(model(xt[idx]), yt[idx])
        ref = torch.autograd.grad(ref_loss, list(model.parameters()))
        loss, grads, dot, sq = fused_terms(engine, xt, yt, tseeds, idx, coef, x, y, seeds,
                                           list(range(len(ref))), state, buffers)
        assert torch.allclose(loss, ref_loss)
        for g, r in zip(grads, ref):
            assert torch.allclose(g, r, rtol=1e-10, atol=1e-14)
        d2, s2 = source_terms(engine, x, y, seeds, list(ref), ChunkState(len(x)))
        assert torch.allclose(dot, d2, rtol=1e-10) and torch.allclose(sq, s2, rtol=1e-10)


# ---------------------------------------------------------------- hand-written passes for layer chains


class _Residual(nn.Module):
    """The leaves of a plain chain, but a forward that is not one."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(6, 6), nn.Mish(), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(x + self.act(self.a(x)))


class _Reordered(nn.Module):
    """Dropout registered after the first layer but applied to the input."""

    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.a(self.drop(x)))


def _plan_for(model: nn.Module, n_in: int = 6):
    from valbench.gradsim.sequential import sequential_plan

    prepare_model(model)
    return sequential_plan(model, torch.randn(4, n_in))


def test_layer_chains_get_hand_written_passes_and_nothing_else_does():
    assert _plan_for(build_model(Learner("mlp", 6, 3), 0)) is not None  # Linear, dropout, Mish, LayerNorm
    assert _plan_for(build_model(Learner("mlp-autoencoder", 6, 6, hidden=(5,), latent=3), 0)) is not None
    assert _plan_for(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4, bias=False), nn.Tanh(),
                                   nn.Linear(4, 2))) is not None
    assert _plan_for(_Residual()) is None  # same leaves, other forward: the probe tells
    assert _plan_for(_Reordered()) is None  # dropout in another place: the probe (masks on) tells
    assert _plan_for(nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4), nn.Linear(4, 2))) is None  # affine
    frozen = nn.Sequential(nn.Linear(6, 4), nn.Mish(), nn.Linear(4, 2))
    frozen[0].requires_grad_(False)
    assert _plan_for(frozen) is None
    conv = build_model(Learner("conv-autoencoder", 3 * 32 * 32, 3 * 32 * 32, hidden=(4, 4), latent=2,
                   in_shape=(3, 32, 32)), 0)
    prepare_model(conv)
    from valbench.gradsim.sequential import sequential_plan
    assert sequential_plan(conv, torch.randn(2, 3, 32, 32)) is None


def test_the_plan_probe_leaves_the_mask_context_as_it_was():
    model = build_model(Learner("mlp", 6, 3), 0)
    ctx, _ = prepare_model(model)
    ctx.key, ctx.seeds = 41, sample_seeds(torch.arange(3), 1)
    from valbench.gradsim.sequential import sequential_plan
    assert sequential_plan(model, torch.randn(4, 6)) is not None
    assert ctx.key == 41 and torch.equal(ctx.seeds, sample_seeds(torch.arange(3), 1))


@pytest.mark.parametrize("arch", ["mlp", "mlp-autoencoder", "chain"])
def test_hand_written_passes_equal_the_hooks_engine(arch):
    from valbench.gradsim.sequential import SequentialEngine, sequential_plan

    if arch == "chain":  # ReLU, Tanh, a Linear without bias, dropout p != 0.5
        learner, model, ctx, x, y, seeds, names, target = _setup("mlp", torch.float64)
        model = nn.Sequential(nn.Linear(12, 9), nn.Dropout(0.3), nn.ReLU(), nn.Linear(9, 7, bias=False),
                              nn.Tanh(), nn.Linear(7, 3)).double()
        ctx, _ = prepare_model(model)
        ctx.key = 99
        names = [n for n, _ in model.named_parameters()]
        ctx.seeds = sample_seeds(TARGET_ROWS + torch.arange(len(x)), 1)
        target = list(torch.autograd.grad(loss_function(learner, "mean")(model(x.flip(0)), y.flip(0)),
                                          list(model.parameters())))
    else:
        learner, model, ctx, x, y, seeds, names, target = _setup(arch, torch.float64)
    plan = sequential_plan(model, x[:3])
    assert plan is not None
    loss = loss_function(learner, "none")
    hooks = build_engine("fast", model, loss, names, ctx, fusable=True)
    hand = build_engine("fast", model, loss, names, ctx, fusable=True, plan=plan)
    assert isinstance(hand, SequentialEngine) and not isinstance(hooks, SequentialEngine)
    for a, b in zip(hand.terms(x, y, seeds, target), hooks.terms(x, y, seeds, target)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    coef = torch.rand(len(x), dtype=torch.float64)
    ctx.key = 7
    out_hand = hand.fused_step(x, y, seeds, coef, 5)
    out_hooks = hooks.fused_step(x, y, seeds, coef, 5)
    assert torch.allclose(out_hand[0], out_hooks[0], rtol=1e-12)
    for g, r in zip(out_hand[1], out_hooks[1]):
        assert g.shape == r.shape and torch.allclose(g, r, rtol=1e-12, atol=1e-15)
    for a, b in zip(out_hand[2:], out_hooks[2:]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_selected_parameters_only():
    learner, model, ctx, x, y, seeds, _, target = _setup("mlp", torch.float64, n=6)
    names = select_parameters(model, "last")
    sel = [target[6 - 2], target[6 - 1]]
    res = {}
    for name in ("naive", "fast", "opacus"):
        engine = build_engine(name, model, loss_function(learner, "none"), names, ctx)
        res[name] = engine.terms(x, y, seeds, sel)
        engine.close()
    assert torch.allclose(res["fast"][0], res["naive"][0]) and torch.allclose(res["opacus"][1], res["naive"][1])


def test_auto_falls_back_to_opacus_for_layers_the_fast_engine_cannot_handle():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))  # affine LayerNorm
    names = [n for n, _ in model.named_parameters()]
    choice = choose_engine("auto", model, names, torch.randn(2, 4))
    assert choice.name == "opacus" and "LayerNorm" in choice.reason
    with pytest.raises(UnsupportedModel, match="engine=fast cannot be used.*LayerNorm.*engine=opacus"):
        choose_engine("fast", model, names, torch.randn(2, 4))
    assert choose_engine("auto", model, ["0.weight", "2.bias"], torch.randn(2, 4)).name == "fast"


def test_shared_layers_fall_back():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Mish(), lin)
    choice = choose_engine("auto", model, [n for n, _ in model.named_parameters()], torch.randn(2, 4))
    assert choice.name == "opacus" and "2 times" in choice.reason
    # a shared layer outside the selected parameters: fast, but the target pass stays separate
    model = nn.Sequential(lin, nn.Mish(), lin, nn.Linear(4, 2))
    choice = choose_engine("auto", model, ["3.weight", "3.bias"], torch.randn(2, 4))
    assert choice.name == "fast" and not choice.fusable


def test_out_of_memory_halves_the_chunk_and_keeps_the_values():
    learner, model, ctx, x, y, seeds, names, target = _setup("mlp")
    engine = build_engine("fast", model, loss_function(learner, "none"), names, ctx)
    ref = source_terms(engine, x, y, seeds, target, ChunkState(len(x)))
    real = engine.terms

    def small_only(xc, *args):
        if len(xc) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(xc, *args)

    engine.terms = small_only
    state = ChunkState(len(x))
    dot, sq = source_terms(engine, x, y, seeds, target, state)
    assert state.size <= 5 and state.splits == 3
    assert torch.allclose(dot, ref[0], rtol=1e-5, atol=1e-7) and torch.allclose(sq, ref[1], rtol=1e-5)


def test_similarities_from_dot_and_norm():
    gt = torch.tensor([3.0, 4.0])
    gi = torch.tensor([[3.0, 4.0], [-4.0, 3.0], [0.0, 0.0], [6.0, 8.0]])
    dot, sq, tsq = gi @ gt, gi.pow(2).sum(1), gt.pow(2).sum()
    assert torch.allclose(similarity("cosine", dot, sq, tsq), torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(similarity("dot", dot, sq, tsq), torch.tensor([25.0, 0.0, 0.0, 50.0], dtype=torch.float64))
    assert torch.allclose(similarity("projection", dot, sq, tsq), torch.tensor([5.0, 0.0, 0.0, 10.0], dtype=torch.float64))
    expect = -torch.tensor([0.0, np.sqrt(50), 5.0, 5.0], dtype=torch.float64)
    assert torch.allclose(similarity("euclidean", dot, sq, tsq), expect)


@pytest.mark.gpu
def test_masks_and_terms_are_the_same_on_cuda():
    seeds = sample_seeds(torch.arange(5000), key=7)
    assert torch.equal(keep_mask(11, seeds.cuda(), 300, 0.5).cpu(), keep_mask(11, seeds, 300, 0.5))
    assert torch.equal(sample_seeds(torch.arange(5000).cuda(), 7).cpu(), seeds)
    learner, model, ctx, x, y, seeds, names, target = _setup("mlp", torch.float64)
    engine = build_engine("fast", model, loss_function(learner, "none"), names, ctx)
    cpu = engine.terms(x, y, seeds, target)
    engine.close()
    model.cuda()
    engine = build_engine("fast", model, loss_function(learner, "none"), names, ctx)
    gpu = engine.terms(x.cuda(), y.cuda(), seeds.cuda(), [t.cuda() for t in target])
    for a, b in zip(gpu, cpu):
        assert torch.allclose(a.cpu(), b, rtol=1e-9)


@pytest.mark.parametrize("fused", [None, False])
def test_adam_matches_torch_optim_adam(fused):
    from valbench.training.adam import Adam, fused_adam_available

    g = torch.Generator().manual_seed(0)
    a = [torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)]
    b = [t.clone().requires_grad_() for t in a]
    ours, ref = Adam(a, lr=1e-2, fused=fused), torch.optim.Adam(b, lr=1e-2, foreach=True)
    assert ours.fused == (fused is None and fused_adam_available("cpu"))
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in a]
        ours.step(grads)
        for p, gr in zip(b, grads):
            p.grad = gr.clone()
        ref.step()
    for p, q in zip(a, b):
        assert torch.allclose(p, q.detach(), rtol=0, atol=1e-14)
