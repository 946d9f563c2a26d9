import sqlite3
import time

import pytest

from valbench import api
from valbench.errors import StoreError
from valbench.grid import build_experiment
from valbench.store import Store, open_existing

EXP = {"datasets": "synthetic", "corruptions": "labels", "valuers": "random", "seeds": 2}


def test_store_round_trip_and_skip(tmp_path):
    path = tmp_path / "r.sqlite"
    s1 = api.run(build_experiment(EXP), path, device="cpu")
    assert (s1.jobs, s1.ok, s1.skipped) == (2, 2, 0)
    s2 = api.run(build_experiment(EXP), path, device="cpu")
    assert (s2.ok, s2.skipped) == (0, 2)
    with open_existing(path) as store:
        df = store.results()
        attempts = store.attempts()
        assert len(df) == 2 and len(attempts) == 2
        assert df["corruption-auroc"].between(0, 1).all()
        values, truth, kind = store.load_values(df["values_file"][0])
        assert values.shape == (200,) and kind == "mask" and truth.sum() == 40
        prov = attempts["provenance"][0]
        for key in ("torch", "numpy", "python", "git_commit", "device", "torch_threads", "valbench"):
            assert key in prov
        assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_jobs_are_recorded_and_retried_only_when_asked(tmp_path, fixture_registry):
    path = tmp_path / "r.sqlite"
    exp = build_experiment({**EXP, "valuers": "boom", "seeds": 1})
    assert api.run(exp, path, device="cpu", registry=fixture_registry).failed == 1
    again = api.run(exp, path, device="cpu", registry=fixture_registry)
    assert (again.failed, again.skipped) == (0, 1)  # a deterministic failure is not repeated by default
    assert api.run(exp, path, device="cpu", registry=fixture_registry, retry_failed=True).failed == 1
    with open_existing(path) as store:
        a = store.attempts()
        assert list(a["status"]) == ["failed", "failed"] and "boom on purpose" in a["error"][0]
        assert store.results().empty


def test_dry_run_says_what_would_run_and_writes_nothing(tmp_path, capsys):
    from valbench.cli import main

    args = ["run", "--datasets", "synthetic", "--corruptions", "labels", "--valuers", "random", "--seeds", "2",
            "--results", str(tmp_path / "r.sqlite"), "--in-process"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs: 2 would run" in out and "synthetic / labels / random / seed 1" in out
    assert list(tmp_path.iterdir()) == []
    assert main(args) == 0 and main([*args, "--dry-run"]) == 0
    assert "2 jobs: 0 would run, 2 finished" in capsys.readouterr().out


def test_not_a_store_is_left_untouched(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_text("my precious notes")
    with pytest.raises(StoreError, match="not a valbench store"):
        Store(text)
    assert text.read_text() == "my precious notes"
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="SQLite file but not a valbench store"):
        Store(other)
    assert other.read_bytes() == before
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        open_existing(tmp_path / "missing.sqlite")


def test_valuer_precheck_fails_before_any_write(tmp_path, fixture_registry):
    from valbench.errors import ConfigError

    path = tmp_path / "r.sqlite"
    exp = build_experiment({**EXP, "valuers": "needs-big-source[k=1000]", "seeds": 1})
    with pytest.raises(ConfigError, match=r"k=1000 is larger than the source set \(200 samples\)"):
        api.run(exp, path, device="cpu", registry=fixture_registry)
    assert not path.exists()
    ok = build_experiment({**EXP, "valuers": "needs-big-source[k=10]", "seeds": 1})
    assert api.run(ok, path, device="cpu", registry=fixture_registry).ok == 1


def test_worker_processes_isolate_a_crashing_job(tmp_path, fixture_registry):
    path = tmp_path / "r.sqlite"
    exp = build_experiment({**EXP, "valuers": "crash,centroid", "seeds": 1})
    summary = api.run(exp, path, device="cpu", registry=fixture_registry, workers=1)
    assert (summary.ok, summary.failed) == (1, 1)
    with open_existing(path) as store:
        a = store.attempts()
        assert sorted(a["status"]) == ["failed", "ok"]
        assert "worker process died" in a.loc[a["status"] == "failed", "error"].iloc[0]
        assert store.results()["valuer"].tolist() == ["centroid"]


def _small_store(registry, path):
    from valbench import api

    exp = build_experiment({"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
                            "valuers": "random", "seeds": 2})
    api.run(exp, path, registry=registry, device="cpu")


def test_reports_open_the_store_read_only(registry, tmp_path):
    """Issue: valbench table ran WAL pragmas and DDL on open, so a read-only store could not be read."""
    import sqlite3

    from valbench.store import open_existing

    _small_store(registry, tmp_path / "r.sqlite")
    with open_existing(tmp_path / "r.sqlite") as store:
        assert len(store.results()) == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.con.execute("CREATE TABLE x (a)")


def test_a_store_in_a_folder_without_write_permission_is_read_as_immutable(registry, tmp_path, monkeypatch):
    """Where SQLite cannot create the WAL index beside the file, the store opens as immutable.
    (As root, folder permissions do not stop writes, so the refusal is simulated here;
    test_a_read_only_folder_for_real does it with real permissions where it can.)"""
    import sqlite3

    from valbench import store as store_module

    _small_store(registry, tmp_path / "r.sqlite")
    real = sqlite3.connect

    class Refusing:  # what a read-only folder gives: the file opens, the first read fails
        def execute(self, *a, **kw):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self):
            pass

    def refuse_plain_ro(database, *a, **kw):
        if isinstance(database, str) and "mode=ro" in database and "immutable" not in database:
            return Refusing()
        return real(database, *a, **kw)

    monkeypatch.setattr(store_module.sqlite3, "connect", refuse_plain_ro)
    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)  # no write permission anywhere
    with store_module.open_existing(tmp_path / "r.sqlite") as store:
        assert len(store.results()) == 2


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_for_real(registry, tmp_path):
    from valbench.store import open_existing

    folder = tmp_path / "ro"
    folder.mkdir()
    _small_store(registry, folder / "r.sqlite")
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o444)
    folder.chmod(0o555)
    try:
        with open_existing(folder / "r.sqlite") as store:
            assert len(store.results()) == 2
    finally:
        folder.chmod(0o755)


def _jobs(registry, seeds=1):
    from valbench.grid import expand

    exp = build_experiment({"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
                            "valuers": "random", "seeds": seeds})
    return expand(exp, registry, "cpu")


def test_a_claim_is_exclusive_and_a_dead_runs_claim_is_taken_over(registry, tmp_path):
    import os
    import socket
    import time

    from valbench import store as store_module

    (job,) = _jobs(registry)
    with Store(tmp_path / "r.sqlite") as store:
        mine = store.claim(job, {}, store_module.run_owner())
        assert mine is not None
        assert store.claim(job, {}, f"{socket.gethostname()}:{os.getpid()}") is None  # held by a live run
        # the holder dies: same host, a process that does not exist
        store.con.execute("UPDATE attempts SET owner=? WHERE id=?", (f"{socket.gethostname()}:999999999", mine))
        store.con.commit()
        again = store.claim(job, {}, store_module.run_owner())
        assert again is not None and again != mine
        # a run on another machine that stopped renewing its claim
        store.con.execute("UPDATE attempts SET owner='elsewhere:1', heartbeat=? WHERE id=?",
                          (time.time() - store_module.LEASE_S - 1, again))
        store.con.commit()
        third = store.claim(job, {}, store_module.run_owner())
        statuses = dict(store.con.execute("SELECT id, status FROM attempts").fetchall())
    assert third is not None and statuses == {mine: "interrupted", again: "interrupted", third: "running"}


def test_a_version_1_store_is_migrated_on_open(tmp_path):
    import sqlite3

    from valbench.store import DDL, SCHEMA

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(DDL.replace(",\n    owner TEXT, heartbeat REAL, traceback TEXT", ""))
    con.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.commit()
    con.close()
    with Store(path) as store:
        columns = {r[1] for r in store.con.execute("PRAGMA table_info(attempts)")}
        version = store.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert {"owner", "heartbeat", "traceback", "metric_s"} <= columns and version == "3"


def test_two_runs_on_one_store_do_each_job_once(tmp_path):
    """Issue: the same grid started twice at once did every job twice. Two `valbench run`
    processes on one store now take each job exactly once between them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "VALBENCH_PLUGINS": "tests.fixture_plugins", "PYTHONPATH": str(root),
           "VALBENCH_CACHE": str(tmp_path / "cache"), "VALBENCH_OFFLINE": "1"}
    args = [sys.executable, "-m", "valbench.cli", "run", "--datasets", "synthetic[n_source=40,n_target=20,n_test=20]",
            "--corruptions", "labels", "--valuers", "sleepy[seconds=0.5]", "--seeds", "12",
            "--results", str(tmp_path / "r.sqlite")]
    runs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [r.communicate(timeout=300) for r in runs]
    assert all(r.returncode == 0 for r in runs), outs
    with Store(tmp_path / "r.sqlite") as store:
        attempts = store.attempts()
    assert len(attempts) == 12 and (attempts.status == "ok").all() and attempts.job_key.nunique() == 12
    assert all("taken by another run" in out for out, _ in outs), outs  # they did overlap


def test_a_failed_job_keeps_its_traceback(fixture_registry, tmp_path):
    from valbench import api

    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": "boom", "seeds": 1})
    api.run(exp, tmp_path / "r.sqlite", registry=fixture_registry, device="cpu")
    with Store(tmp_path / "r.sqlite") as store:
        (row,) = store.attempts().itertuples()
    assert row.status == "failed" and row.error == "RuntimeError: boom on purpose"
    assert "Traceback" in row.traceback and "fixture_plugins.py" in row.traceback


@pytest.mark.parametrize("args, message", [
    (["run", "--config", "."], "is a folder; give a .toml file"),
    (["run", "--seeds", "100000000000000000000", "--datasets", "synthetic", "--corruptions", "labels",
      "--valuers", "random"], "--seeds must be in 1..10000"),
])
def test_environment_and_typo_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from valbench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*args, "--results", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # no store, no side files


def test_an_unwritable_output_is_one_line_exit_2(registry, tmp_path, capsys):
    from valbench.cli import main

    _small_store(registry, tmp_path / "r.sqlite")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["table", "1", "--results", str(tmp_path / "r.sqlite"), "--output", str(tmp_path / "no" / "t.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such file or directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # reading left no -wal/-shm files


def test_a_running_job_keeps_renewing_its_claim(fixture_registry, tmp_path, monkeypatch):
    """The heartbeat thread renews the claim of the job in progress, so another run leaves it alone."""
    from valbench import api

    monkeypatch.setattr(api, "HEARTBEAT_S", 0.05)
    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": "sleepy[seconds=0.5]",
                            "seeds": 1})
    api.run(exp, tmp_path / "r.sqlite", registry=fixture_registry, device="cpu")
    with Store(tmp_path / "r.sqlite") as store:
        (row,) = store.attempts().itertuples()
    assert row.status == "ok" and row.heartbeat - row.started >= 0.3


def test_a_job_past_its_time_or_memory_limit_is_stopped_and_the_grid_goes_on(tmp_path, fixture_registry):
    """Issue: a hanging valuer blocked the grid forever. In worker processes, a job past
    its limits is stopped and recorded as 'timeout' or 'oom'; the others finish."""
    exp = build_experiment({**EXP, "valuers": "hog[mb=600],centroid,hang", "seeds": 1})
    summary = api.run(exp, tmp_path / "r.sqlite", device="cpu", registry=fixture_registry, workers=1,
                      timeout=8.0, memory_limit=600 * 2**20)  # an idle worker holds ~0.2 GiB; 8 s: the hog
    # must reach its memory before the timeout even on a loaded machine (3 s failed once under load)
    assert (summary.ok, summary.failed) == (1, 2)
    with open_existing(tmp_path / "r.sqlite") as store:
        a = store.attempts().set_index("status")
    assert sorted(a.index) == ["ok", "oom", "timeout"]
    assert "past the timeout of 8 s" in a.loc["timeout", "error"]
    assert "past the memory limit of 0.59 GiB" in a.loc["oom", "error"]


def test_a_spec_timeout_overrides_the_runs_and_changes_no_key(tmp_path, fixture_registry):
    """``hang[timeout=S]`` is the harness's limit for that valuer alone: more specific than
    the run's --timeout, and not part of the job's identity (or label)."""
    exp = build_experiment({**EXP, "valuers": "hang[timeout=1.5],centroid", "seeds": 1})
    plain = build_experiment({**EXP, "valuers": "hang", "seeds": 1})
    from valbench.grid import expand

    (hang, _), (bare,) = expand(exp, fixture_registry, "cpu"), expand(plain, fixture_registry, "cpu")
    assert (hang.key, hang.valuer.label, hang.valuer.timeout) == (bare.key, "hang", 1.5)
    summary = api.run(exp, tmp_path / "r.sqlite", device="cpu", registry=fixture_registry, workers=1, timeout=120)
    assert (summary.ok, summary.failed) == (1, 1)
    with open_existing(tmp_path / "r.sqlite") as store:
        a = store.attempts().set_index("status")
    assert "past the timeout of 1.5 s" in a.loc["timeout", "error"]


@pytest.mark.parametrize("spec, message", [
    ("hang[timeout=0]", "hang: timeout must be a positive number of seconds"),
    ("hang[timeout=soon]", "hang: timeout must be a number"),
    ("hang[timeot=5]", "has no parameter 'timeot'.*and the harness's timeout=SECONDS"),
])
def test_a_bad_spec_timeout_is_a_one_line_error(fixture_registry, spec, message):
    from valbench.errors import ConfigError
    from valbench.grid import expand

    with pytest.raises(ConfigError, match=message):
        expand(build_experiment({**EXP, "valuers": spec}), fixture_registry, "cpu")


def _marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ``mark`` (the run and its workers)."""
    import os

    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if mark.encode() in fh.read():
                    with open(f"/proc/{pid}/stat") as st:
                        if st.read().split(") ")[1][0] != "Z":  # not a zombie
                            out.append(int(pid))
        except OSError:
            pass
    return out


def _start_run(tmp_path, mark):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "VALBENCH_PLUGINS": "tests.fixture_plugins", "PYTHONPATH": str(root), "RUN_MARK": mark,
           "VALBENCH_CACHE": str(tmp_path / "cache"), "VALBENCH_OFFLINE": "1"}
    args = [sys.executable, "-m", "valbench.cli", "run", "--datasets", "synthetic", "--corruptions", "labels",
            "--valuers", "hang", "--workers", "2", "--seeds", "2", "--results", str(tmp_path / "r.sqlite")]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):  # until both jobs are running in their workers
        time.sleep(0.1)
        if (tmp_path / "r.sqlite").exists():
            with Store(tmp_path / "r.sqlite", readonly=True) as store:
                if (store.attempts().status == "running").sum() == 2:
                    break
    return proc


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_keeps_the_store_and_exits_143(tmp_path):
    import signal
    import uuid

    mark = f"RUN_MARK={uuid.uuid4().hex}"
    proc = _start_run(tmp_path, mark.split("=")[1])
    assert len(_marked_processes(mark)) >= 3  # the run, the fork server, two workers
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "terminated" in err, err
    time.sleep(1.5)
    assert _marked_processes(mark) == []
    with Store(tmp_path / "r.sqlite", readonly=True) as store:
        assert sorted(store.attempts().status) == ["interrupted", "interrupted"]


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_run_and_a_rerun_takes_its_jobs(tmp_path):
    import signal
    import uuid

    mark = f"RUN_MARK={uuid.uuid4().hex}"
    proc = _start_run(tmp_path, mark.split("=")[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for _ in range(100):  # the parent-death signal is immediate; the watchdog polls every second
        time.sleep(0.2)
        if not _marked_processes(mark):
            break
    assert _marked_processes(mark) == []
    with Store(tmp_path / "r.sqlite") as store:  # the dead run's claims are taken over at once
        attempts = store.attempts()
        assert len(attempts) >= 1 and set(attempts.status) == {"running"}
        from valbench.store import _alive

        rows = store.con.execute("SELECT owner, heartbeat FROM attempts").fetchall()
        assert not any(_alive(owner, hb, time.time()) for owner, hb in rows)  # its process is gone


def test_merge_joins_stores_made_apart_without_duplicates(registry, tmp_path):
    """Two machines ran overlapping grids into their own stores: the merged store holds each
    job once, every finished attempt with its values, and gives the same table."""
    from valbench.merge import merge
    from valbench.report.tables import table
    from valbench.results import jobs_frame, metric_info

    def grid(path, seeds):
        exp = build_experiment({"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
                                "valuers": "random", "seeds": seeds})
        api.run(exp, path, registry=registry, device="cpu")

    grid(tmp_path / "a.sqlite", [0, 1])
    grid(tmp_path / "b.sqlite", [1, 2])  # seed 1 ran on both machines
    assert merge([tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "a.sqlite"], tmp_path / "c.sqlite") == (3, 4)
    with open_existing(tmp_path / "c.sqlite") as store:
        results = store.results()
        values = [store.load_values(f)[0] for f in results.values_file]
        text = table(jobs_frame(store), 1, metric_info(store))  # the metrics' orientation came along
    assert sorted(results.seed) == [0, 1, 2] and all(len(v) == 40 for v in values)
    assert "| synthetic[n_source=40,n_target=20,n_test=20] | random   | 3 " in text
    with pytest.raises(StoreError, match="exists; merge writes a new store"):
        merge([tmp_path / "a.sqlite", tmp_path / "b.sqlite"], tmp_path / "c.sqlite")


def test_a_valuers_own_timeout_applies_unless_the_run_sets_one(tmp_path, fixture_registry, monkeypatch):
    from tests.fixture_plugins import Hang

    monkeypatch.setattr(Hang, "timeout", 1.0, raising=False)
    exp = build_experiment({**EXP, "valuers": "hang", "seeds": 1})
    api.run(exp, tmp_path / "r.sqlite", device="cpu", registry=fixture_registry, workers=1)
    with open_existing(tmp_path / "r.sqlite") as store:
        (row,) = store.attempts().itertuples()
    assert row.status == "timeout" and "past the timeout of 1 s" in row.error


def test_a_worker_that_died_while_idle_is_replaced_before_it_gets_a_job(tmp_path, fixture_registry):
    from valbench.executors import WorkerPool

    exp = build_experiment({**EXP, "valuers": "centroid", "seeds": 2})
    from valbench.grid import expand

    jobs = expand(exp, fixture_registry, "cpu")
    pool = WorkerPool(1).start()
    pool.slots[0].process.kill()
    pool.slots[0].process.join(5)
    try:
        results = [r for _, r in pool.run(jobs, lambda job: True)]
    finally:
        pool.close()
    assert [r.status for r in results] == ["ok", "ok"]


def test_another_runs_failure_is_not_repeated_and_a_retry_happens_once(registry, tmp_path):
    """Review: three concurrent runs each ran a deterministic failure again."""
    import time as clock

    from valbench.store import run_owner
    from valbench.types import JobResult

    (job,) = _jobs(registry)
    with Store(tmp_path / "r.sqlite") as store:
        before = clock.time()
        first = store.claim(job, {}, run_owner())
        store.finish_attempt(first, JobResult(job.key, "failed", error="boom"))
        assert store.claim(job, {}, run_owner()) is None  # not retried unless asked
        # a run that began before this failure: another run already tried it since, so not again
        assert store.claim(job, {}, run_owner(), retry_failed=True, since=before - 1) is None
        # a run that began after it, asked to retry failures: retries it
        assert store.claim(job, {}, run_owner(), retry_failed=True, since=clock.time() + 1) is not None


def test_a_store_being_created_is_not_refused(tmp_path):
    """Review: a second command that looked at a store just as a run created it was refused."""
    from valbench.store import check_store_path

    (tmp_path / "new.sqlite").touch()  # what sqlite3.connect leaves before its first table
    check_store_path(tmp_path / "new.sqlite")


def test_planning_and_claiming_agree_on_a_failure_followed_by_an_interruption(registry, tmp_path):
    """An interrupted attempt is no verdict: the job's last verdict stays 'failed' for both."""
    from valbench.store import run_owner
    from valbench.types import JobResult

    (job,) = _jobs(registry)
    with Store(tmp_path / "r.sqlite") as store:
        store.finish_attempt(store.claim(job, {}, run_owner()), JobResult(job.key, "failed", error="boom"))
        attempt = store.claim(job, {}, run_owner(), retry_failed=True, since=0.0 + 1e12)
        store.interrupt([attempt])
        assert job.key in store.done_keys(failed=True)
        assert store.claim(job, {}, run_owner()) is None
