"""The same jobs as Ray tasks on a local Ray instance: the store and the values are those of
a local run. Skipped, with the reason, where the ray extra is not installed (.ci/run installs it)."""
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'valbench[ray]'")

from valbench import api  # noqa: E402
from valbench.grid import build_experiment  # noqa: E402
from valbench.store import open_existing  # noqa: E402

GRID = {"datasets": "synthetic[n_source=60,n_target=30,n_test=30]", "corruptions": "labels",
        "valuers": "random,knn-shapley", "seeds": 2}


def _values(path):
    with open_existing(path) as store:
        r = store.results().sort_values(["valuer", "seed"])
        return [store.load_values(f)[0] for f in r.values_file], list(r["corruption-auroc"])


def test_a_grid_on_a_local_ray_instance_equals_a_local_run(registry, tmp_path):
    exp = build_experiment(GRID)
    local = api.run(exp, tmp_path / "local.sqlite", registry=registry, device="cpu")
    remote = api.run(exp, tmp_path / "ray.sqlite", registry=registry, device="cpu", workers=2, executor="ray")
    assert (local.ok, remote.ok, remote.failed) == (4, 4, 0)
    (lv, ls), (rv, rs) = _values(tmp_path / "local.sqlite"), _values(tmp_path / "ray.sqlite")
    assert ls == rs and all(np.array_equal(a, b) for a, b in zip(lv, rv))
    with open_existing(tmp_path / "ray.sqlite") as store:
        assert len(store.attempts()) == 4  # no retries: each job once


def test_ray_tasks_keep_the_local_limits_and_isolation(fixture_registry, tmp_path):
    """A Ray task runs its job in a valbench worker of its own: a hang past its timeout, a hog
    past the memory limit and a writer into the read-only inputs are recorded against their
    own jobs, and the valuer that behaves scores what it scores alone."""
    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "seeds": 1,
                            "valuers": "hang[timeout=2],hog[mb=600],mutator[via=torch],centroid"})
    summary = api.run(exp, tmp_path / "ray.sqlite", registry=fixture_registry, device="cpu", workers=2,
                      executor="ray", memory_limit=600 * 2**20)
    alone = build_experiment({"datasets": "synthetic", "corruptions": "labels", "seeds": 1, "valuers": "centroid"})
    api.run(alone, tmp_path / "alone.sqlite", registry=fixture_registry, device="cpu")
    assert (summary.ok, summary.failed) == (1, 3)
    from valbench.results import jobs

    a = jobs(tmp_path / "ray.sqlite").set_index("valuer")
    assert a.loc["centroid", "corruption-auroc"] == jobs(tmp_path / "alone.sqlite")["corruption-auroc"].iloc[0]
    assert a.loc["hang", "status"] == "timeout" and "past the timeout of 2 s" in a.loc["hang", "error"]
    assert a.loc["hog", "status"] == "oom" and "past the memory limit" in a.loc["hog", "error"]
    assert a.loc["mutator", "status"] == "failed" and "signal 11" in a.loc["mutator", "error"]
