"""What keeps `valbench run` quick to start: heavy imports deferred, ADULT's encoding cached."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

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


# Plugin modules allowed to import torch when they load: none (every built-in imports it
# where it is used); a third-party plugin may, at the cost of startup time
TORCH_AT_LOAD: tuple[str, ...] = ()
# `import X` raises ImportError for these (None in sys.modules): a module that imports one
# when it loads, or planning a run that does, fails loudly, naming who did
BLOCK = "import sys\nfor m in ('torch', 'sklearn', 'scipy', 'pandas'):\n    sys.modules[m] = None\n"


def test_every_builtin_plugin_module_loads_without_torch():
    """Loading the plugins (every valbench command does) imports no torch, scikit-learn,
    scipy or pandas: the plugins import them in the functions that use them."""
    import importlib.metadata as md

    modules = sorted({ep.value for ep in md.entry_points(group="valbench") if ep.dist and ep.dist.name == "valbench"}
                     - set(TORCH_AT_LOAD))
    code = BLOCK + "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok')" % (modules,)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr[-1500:]


def test_planning_a_run_imports_neither_torch_nor_a_scoring_library():
    """Planning a one-job ADULT run the way `valbench run` does (every plugin loaded, the
    device resolved, its data prepared, every default metric checked, the provenance of
    worker jobs taken) needs neither torch nor scikit-learn, scipy or pandas once ADULT's
    encoding is cached (the first run makes it): precheck asks the metrics' check(truth)
    instead of probing score(), and the workers' fork server imports torch meanwhile."""
    code = BLOCK + (
        "import types\n"
        "for m in %r:  # stand-ins without hooks (see TORCH_AT_LOAD)\n"
        "    sys.modules[m] = types.ModuleType(m)\n"
        "from valbench.api import plan\nfrom valbench.grid import build_experiment\n"
        "from valbench.plugins import build_registry\nfrom valbench.provenance import provenance\n"
        "import valbench.cli, valbench.executors, valbench.store\n"
        "jobs, _ = plan(build_experiment({'datasets': 'adult', 'corruptions': 'labels', 'valuers': 'random', "
        "'seeds': 1}), build_registry(), %r)\n"
        "provenance(jobs[0].device, threads=2)\nprint('ok')") % (TORCH_AT_LOAD, "auto" if _cpu_only() else "cpu")
    adult.encoded.__wrapped__(None)  # fill this session's data cache first (pandas parses the CSV files)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr[-1500:]


def _cpu_only() -> bool:
    from valbench.grid import cpu_only_torch

    return cpu_only_torch()  # else resolving device "auto" asks torch whether it sees a GPU


def test_torch_free_provenance_and_device_agree_with_torch():
    """What the run's process now reads without importing torch is what torch says."""
    import torch

    from valbench.grid import resolve_device
    from valbench.provenance import provenance

    workers, here = provenance("cpu", threads=3), provenance("cpu")
    assert workers["torch"] == here["torch"] == torch.__version__
    assert (workers["torch_threads"], here["torch_threads"]) == (3, torch.get_num_threads())
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("argv, starts", [
    (["run", "--valuers", "random"], True),
    (["run", "--workers", "2", "--results", "r.sqlite"], True),
    (["run", "--in-process"], False), (["run", "--dry-run"], False), (["run", "--help"], False),
    (["run", "--executor", "ray"], False), (["run", "--executor=ray"], False),
    (["run", "--executor", "local"], True), (["run", "--executor=local"], True),
    (["table", "1"], False), (["plugins"], False), ([], False)])
def test_the_fork_server_starts_before_parsing_only_for_a_local_run(argv, starts):
    from valbench.cli import starts_local_workers

    assert starts_local_workers(argv) is starts


def test_the_command_line_module_loads_without_numpy():
    # `valbench run` starts the workers' fork server first thing in main(): every import
    # before that point delays the first job
    code = "import sys\nsys.modules['numpy'] = None\nimport valbench.cli, valbench.forkserver\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
