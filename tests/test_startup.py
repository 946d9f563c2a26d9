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


def test_planning_a_run_scores_nothing_so_loads_no_scoring_library():
    """precheck asks the metrics' check(truth) instead of probing score(), so planning a
    one-job ADULT run (its data prepared, every default metric checked) needs neither
    scikit-learn, scipy nor pandas once ADULT's encoding is cached (the first run makes it)."""
    code = ("import sys; from valbench.api import plan; from valbench.grid import build_experiment; "
            "from valbench.plugins import build_registry; "
            "plan(build_experiment({'datasets': 'adult', 'corruptions': 'labels', 'valuers': 'random', 'seeds': 1}), "
            "build_registry(), 'cpu'); "
            "print(sorted(m for m in ('pandas', 'sklearn', 'scipy') if m in sys.modules))")
    adult.encoded.__wrapped__(None)  # fill this session's data cache first (pandas parses the CSV files)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
