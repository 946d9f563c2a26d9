import numpy as np
import pytest

from valbench_plugins.metrics.corruption_auroc import CorruptionAUROC
from valbench_plugins.metrics.noise_spearman import NoiseSpearman
from valbench.types import Truth


def test_auroc_low_values_flag_corruption():
    mask = np.array([1, 1, 0, 0, 0])
    assert CorruptionAUROC().score(np.array([0.0, 0.1, 1, 2, 3]), Truth("mask", mask)) == 1.0
    assert CorruptionAUROC().score(np.array([3.0, 2, 1, 0.1, 0]), Truth("mask", mask)) == 0.0


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        CorruptionAUROC().score(np.arange(3.0), Truth("mask", np.zeros(3)))


def test_spearman_sign_is_higher_is_better():
    phi = np.array([0.1, 0.5, 1.0, 2.0])
    assert NoiseSpearman().score(-phi, Truth("noise", phi)) == pytest.approx(1.0)
    assert NoiseSpearman().score(phi, Truth("noise", phi)) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        NoiseSpearman().score(np.ones(4), Truth("noise", phi))
