"""models_per_batch="auto": a pure rule from free device memory; batch sizes never change values."""
from __future__ import annotations

import numpy as np
import pytest

from valbench.params import resolve
from valbench.training import utility
from valbench.training.stacked import FullBatchRecipe
from valbench.training.utility import CPU_MODELS_PER_BATCH, Utility, auto_models_per_batch, model_bytes
from valbench_plugins.valuers.banzhaf import BanzhafValuer
from valbench_plugins.valuers.loo import LOOValuer
from valbench_plugins.valuers.tmc_shapley import TMCShapleyValuer
from tests.baseline_helpers import one_thread, tiny_task  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(steps=10, lr=1e-2, full_models=2, compile=False)
MiB = 2**20


def test_the_rule_fills_half_the_free_memory_between_one_and_the_cap():
    assert auto_models_per_batch(None, 10 * MiB) == CPU_MODELS_PER_BATCH  # CPU
    assert auto_models_per_batch(1024 * MiB, 1 * MiB) == 512
    assert auto_models_per_batch(1024 * MiB, 3 * MiB) == 170
    assert auto_models_per_batch(140 * 1024 * MiB, 1 * MiB) == 1024  # an H200: capped
    assert auto_models_per_batch(140 * 1024 * MiB, 1 * MiB, cap=5000) == 5000
    assert auto_models_per_batch(1 * MiB, 10 * MiB) == 1  # never 0


def test_per_model_memory_counts_parameters_activations_and_own_rows():
    shared = model_bytes(1000, [16, 16, 2], rows=100, in_features=4, per_copy_input=False)
    assert shared == 4 * (5 * 1000 + 4 * 100 * 34 + 100)
    assert model_bytes(1000, [16, 16, 2], 100, 4, True) - shared == 4 * 100 * 4


def test_utility_resolves_auto_from_free_memory(monkeypatch):
    task = tiny_task(n_source=20)
    recipe = FullBatchRecipe(5, 1e-2, "shared", False)
    assert Utility(task, recipe, "auto").models_per_batch == CPU_MODELS_PER_BATCH
    assert Utility(task, recipe, 0).models_per_batch == CPU_MODELS_PER_BATCH
    assert Utility(task, recipe, 7).models_per_batch == 7
    monkeypatch.setattr(utility, "free_device_bytes", lambda device: 64 * MiB)  # as if on a GPU
    n_params = 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
    for per_copy in (False, True):
        need = model_bytes(n_params, [16, 16, 2], 20, 4, per_copy)
        got = Utility(task, recipe, "auto", per_copy).models_per_batch
        assert got == min(1024, 32 * MiB // need) and got > CPU_MODELS_PER_BATCH


@pytest.mark.parametrize("cls, extra", [(LOOValuer, {}), (BanzhafValuer, {"samples": 40}),
                                        (TMCShapleyValuer, {"max_permutations": 3, "permutations_per_batch": 2})],
                         ids=["loo", "banzhaf", "tmc-shapley"])
def test_values_are_the_same_with_7_models_per_batch_and_auto(cls, extra):
    task = tiny_task(n_source=20)
    a = cls(**FAST, **extra, models_per_batch=7).value(task)
    b = cls(**FAST, **extra, models_per_batch="auto").value(task)
    assert a.info["models_per_batch"] == 7 and b.info["models_per_batch"] == CPU_MODELS_PER_BATCH
    assert np.abs(a.values).max() > 1e-4  # not trivially equal
    np.testing.assert_array_equal(a.values, b.values)  # bit-identical, measured


def test_auto_is_accepted_on_the_command_line_and_negative_refused(registry):
    assert dict(resolve(registry, "valuer", "loo[models_per_batch=auto]").params)["models_per_batch"] == "auto"
    assert dict(resolve(registry, "valuer", "loo[models_per_batch=0]").params)["models_per_batch"] == 0
    with pytest.raises(ValueError, match="models_per_batch must be >= 1 .or auto, or 0 = auto., got -1"):
        LOOValuer(models_per_batch=-1).validate()


@pytest.mark.gpu
def test_auto_on_cuda_takes_more_models_and_gives_the_same_values():
    import dataclasses

    task = dataclasses.replace(tiny_task(n_source=40), device="cuda")
    a = LOOValuer(**FAST, models_per_batch=7).value(task)
    b = LOOValuer(**FAST, models_per_batch="auto").value(task)
    assert b.info["models_per_batch"] > CPU_MODELS_PER_BATCH
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-6)


def test_auto_is_refused_where_the_batches_are_not_sized_by_the_utility():
    # data-oob trains its bags itself: "auto" would reach its own batch arithmetic
    from valbench_plugins.valuers.data_oob import DataOOBValuer

    for value in (0, "auto"):
        with pytest.raises(ValueError, match=r"models_per_batch must be >= 1, got"):
            DataOOBValuer(models_per_batch=value).validate()
