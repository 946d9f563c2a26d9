from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see valbench.cli.main

import numpy as np
import pytest

from valbench.plugins import build_registry


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty data cache, and no test may download anything."""
    monkeypatch.setenv("VALBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("VALBENCH_OFFLINE", "1")


@pytest.fixture(scope="session")
def registry():
    return build_registry()


@pytest.fixture
def fixture_registry():
    """Built-ins plus the test-only plugins of tests/fixture_plugins.py."""
    from tests import fixture_plugins

    return build_registry(extra=[fixture_plugins])


def write_csv(path, x, y, label="label"):
    import pandas as pd

    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    df[label] = y
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def blobs():
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 120)
    x = g.standard_normal((120, 4)) + y[:, None] * 2.0
    return x, y
