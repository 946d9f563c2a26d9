"""What keeps `valbench run` quick to start: heavy imports deferred, ADULT's encoding cached."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from valbench_plugins.datasets import adult


def test_the_run_process_modules_load_without_pandas_or_torch():
    """The store, the executors and the dataset plugins that read CSV import pandas (or
    torch) only when they use them (a one-job run's process never needs pandas)."""
    code = ("import sys, valbench.store, valbench.executors, valbench.timing, valbench_plugins.datasets.adult, "
            "valbench_plugins.datasets.blog, valbench_plugins.datasets.csv; "
            "print(sorted(m for m in ('pandas', 'torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_adult_cached_encoding_equals_the_parsed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("VALBENCH_CACHE", str(tmp_path))
    parsed = adult._encode(None)
    first, again = adult.encoded.__wrapped__(None), adult.encoded.__wrapped__(None)  # computes, then reads the file
    assert list((tmp_path / "arrays").glob("adult-encoded-*.npy"))
    for a, b, c in zip(parsed, first, again):
        assert a.dtype == b.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)
    assert adult.fingerprint(None) == adult.load_frames(None)[2]
