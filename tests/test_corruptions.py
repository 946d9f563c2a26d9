import math

import numpy as np
import pytest

from valbench_plugins.corruptions.features import FeatureNoise
from valbench_plugins.corruptions.labels import LabelFlip
from valbench.types import Split


@pytest.mark.parametrize("n, k", [(1000, 2), (997, 10), (50, 3)])
def test_label_flip_exact_count_and_always_a_different_class(n, k):
    g = np.random.default_rng(1)
    src = Split(g.standard_normal((n, 3)).astype(np.float32), g.integers(0, k, n))
    out, truth = LabelFlip(rate=0.2).apply(src.frozen(), k, np.random.default_rng(7))
    flipped = out.y != src.y
    assert truth.kind == "mask"
    assert truth.values.sum() == math.floor(0.2 * n)
    assert np.array_equal(flipped, truth.values.astype(bool))  # every chosen sample changed class
    assert out.y.min() >= 0 and out.y.max() < k
    assert np.array_equal(out.x, src.x)


def test_label_flip_is_uniform_over_other_classes():
    n, k = 20000, 4
    src = Split(np.zeros((n, 1), np.float32), np.zeros(n, np.int64))
    out, truth = LabelFlip(rate=0.5).apply(src, k, np.random.default_rng(3))
    counts = np.bincount(out.y[truth.values == 1], minlength=k)
    assert counts[0] == 0
    assert np.allclose(counts[1:] / counts[1:].sum(), 1 / 3, atol=0.02)


def test_label_flip_does_not_touch_input():
    y = np.arange(10) % 2
    src = Split(np.zeros((10, 1), np.float32), y.copy()).frozen()
    LabelFlip(rate=0.5).apply(src, 2, np.random.default_rng(0))
    assert np.array_equal(src.y, y)


def test_feature_noise_scale_follows_phi():
    n, d = 400, 200
    src = Split(np.zeros((n, d), np.float32), np.zeros(n, np.int64))
    out, truth = FeatureNoise(max=3.0).apply(src.frozen(), 2, np.random.default_rng(0))
    phi = truth.values
    assert truth.kind == "noise" and phi.shape == (n,)
    assert phi.min() >= 0 and phi.max() <= 3.0 and phi.max() > 2.5
    assert np.allclose(out.x.std(axis=1), phi, rtol=0.15, atol=0.02)
    assert np.array_equal(out.y, src.y)


def test_validation():
    with pytest.raises(ValueError):
        LabelFlip(rate=1.5).validate()
    with pytest.raises(ValueError):
        LabelFlip(rate=0).validate()
    with pytest.raises(ValueError):
        FeatureNoise(max=0).validate()
