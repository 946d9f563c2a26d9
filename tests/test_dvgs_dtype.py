"""dvgs dtype=float32|tf32|bf16: what changes in the values, bounded; the TF32 flags do not leak."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from valbench.gradsim.dvgs import DVGSConfig, dvgs
from valbench.gradsim.precision import precision
from valbench.testing import easy_task, unsupervised_task

ONE_SNAPSHOT = dict(restarts=1, epochs=1, target_batch=1000, dropout=False)  # values = one set of similarities


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("make", [lambda: easy_task(0, 200, 100)[0], lambda: unsupervised_task(0)],
                         ids=["classifier", "autoencoder"])
def test_bf16_similarities_stay_within_bounds_of_float32(make):
    """Measured here: max |cos_bf16 - cos_f32| 0.005 (classifier and autoencoder), Spearman
    0.9997-0.99996; a bf16 path that silently ran float32 would give exactly 0."""
    task = make()
    a = dvgs(task, DVGSConfig(**ONE_SNAPSHOT))
    b = dvgs(task, DVGSConfig(dtype="bf16", **ONE_SNAPSHOT))
    diff = np.abs(a.values - b.values).max()
    assert 1e-5 < diff <= 0.02
    assert spearman(a.values, b.values) >= 0.995
    assert b.info["dtype"].startswith("bf16") and a.info["dtype"] == "float32"


def test_bf16_over_a_training_path_keeps_the_ranking():
    """Several steps with dropout: the bf16 training path drifts, the ranking stays
    (measured: Spearman 0.99996, max abs difference 4e-4 of values up to 0.13)."""
    task, _ = easy_task(0, 200, 100)
    cfg = dict(restarts=1, epochs=5, target_batch=25)
    a, b = dvgs(task, DVGSConfig(**cfg)).values, dvgs(task, DVGSConfig(dtype="bf16", **cfg)).values
    assert spearman(a, b) >= 0.995
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()


def test_tf32_on_cpu_changes_nothing_and_says_so():
    task, _ = easy_task(0, 60, 30)
    a = dvgs(task, DVGSConfig(**ONE_SNAPSHOT))
    b = dvgs(task, DVGSConfig(dtype="tf32", **ONE_SNAPSHOT))
    assert np.array_equal(a.values, b.values)
    assert "no effect on cpu" in b.info["dtype"]


def _flags():
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def test_tf32_flags_are_set_only_inside_and_restored_even_on_error():
    before = _flags()
    with precision("tf32", torch.device("cuda")):  # sets flags only: runs without a GPU
        assert _flags() == ("tf32", "tf32")
    assert _flags() == before
    with pytest.raises(KeyError), precision("tf32", torch.device("cuda")):
        raise KeyError("a failing job")
    assert _flags() == before
    with precision("tf32", torch.device("cpu")):
        assert _flags() == before


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of float32, tf32, bf16, got 'fp16'"):
        DVGSConfig(dtype="fp16").validate()


@pytest.mark.gpu
def test_cuda_tf32_and_bf16_stay_close_to_float32():
    task, _ = easy_task(0, 200, 100, device="cuda")
    a = dvgs(task, DVGSConfig(**ONE_SNAPSHOT)).values
    before = _flags()
    for dtype in ("tf32", "bf16"):
        b = dvgs(task, DVGSConfig(dtype=dtype, **ONE_SNAPSHOT)).values
        assert np.abs(a - b).max() <= 0.02 and spearman(a, b) >= 0.995
    assert _flags() == before
