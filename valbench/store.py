"""The results store: one SQLite file (WAL) plus value arrays in a folder beside it.

Tables: ``meta`` (schema marker), ``jobs`` (one row per job key with its canonical
config), ``attempts`` (one row per attempt: status, timings, provenance, values file)
and ``scores`` (one row per attempt and metric). Rows are only ever added or finished;
nothing already stored is overwritten. ``<store>.values/<key>-<attempt>.npz`` holds
the values and the corruption truth.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valbench.datautil import atomic_path
from valbench.errors import StoreError
from valbench.types import Job, JobResult

if TYPE_CHECKING:  # imported where a frame is made: a run writes the store without pandas
    import pandas as pd

SCHEMA = "valbench-results"
SCHEMA_VERSION = "3"  # 2: attempts carry their run's owner and heartbeat (claims) and a failure's traceback;
# 3: attempts carry the scoring time (metric_s); the metrics table records each metric's orientation
FAILURES = ("failed", "timeout", "oom")  # ends of an attempt that a rerun does not repeat unless asked
LEASE_S = 60.0  # a running attempt whose heartbeat is older than this belongs to a run that died
HEARTBEAT_S = 10.0  # how often a run renews the heartbeat of the attempts it holds
SQLITE_MAGIC = b"SQLite format 3\x00"

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, config TEXT NOT NULL,
    dataset TEXT NOT NULL, dataset_label TEXT NOT NULL,
    corruption TEXT NOT NULL, corruption_label TEXT NOT NULL,
    valuer TEXT NOT NULL, valuer_label TEXT NOT NULL,
    seed INTEGER NOT NULL, mode TEXT NOT NULL, device TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_key TEXT NOT NULL REFERENCES jobs(key),
    status TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    wall_s REAL, cpu_s REAL, peak_rss_bytes INTEGER, base_rss_bytes INTEGER,
    peak_device_bytes INTEGER, threads INTEGER,
    fits INTEGER, stopped_early INTEGER, info TEXT, error TEXT, provenance TEXT, values_file TEXT,
    owner TEXT, heartbeat REAL, traceback TEXT, metric_s REAL
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_key, status);
CREATE TABLE IF NOT EXISTS metrics (
    label TEXT PRIMARY KEY, name TEXT NOT NULL, higher_is_better INTEGER NOT NULL, paper_table INTEGER,
    truth_kind TEXT
);
CREATE TABLE IF NOT EXISTS paper (
    dataset_label TEXT NOT NULL, corruption_label TEXT NOT NULL, mode TEXT NOT NULL, valuer TEXT NOT NULL,
    metric TEXT NOT NULL, mean REAL, std REAL, minutes REAL, source TEXT NOT NULL,
    PRIMARY KEY (dataset_label, corruption_label, mode, valuer, metric)
);
CREATE TABLE IF NOT EXISTS scores (
    attempt_id INTEGER NOT NULL REFERENCES attempts(id), metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (attempt_id, metric)
);
"""


def renew(con: sqlite3.Connection, attempt_ids: list[int]) -> None:
    """Renew a run's hold on its running attempts (the heartbeat of their claims)."""
    if attempt_ids:
        with con:
            con.executemany("UPDATE attempts SET heartbeat=? WHERE id=? AND status='running'",
                            [(time.time(), a) for a in attempt_ids])


def run_owner() -> str:
    """Who holds a claim: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None, heartbeat: float, now: float) -> bool:
    """Whether the run that holds a running attempt is still there."""
    if now - heartbeat > LEASE_S:
        return False
    host, _, pid = (owner or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def connect_readonly(path: Path, snapshot: bool = False) -> sqlite3.Connection:
    """A read-only connection that works without write permission on the file or its folder.

    SQLite's read-only mode still needs the WAL index beside a WAL database, which it cannot
    create in a read-only folder; then the file is opened as immutable (no locking: fine for
    a store no run is writing, which is the only kind such a folder can hold). ``snapshot``:
    immutable at once, which leaves no -wal/-shm files behind, for quick looks whose answer
    may be a moment old (the schema check; the finished jobs a run need not prepare). Only
    while no -wal file is there: commits still in it would be invisible to an immutable read."""
    if snapshot and not Path(f"{path}-wal").exists():
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    if os.access(path, os.W_OK) and os.access(Path(path).parent, os.W_OK):
        # where SQLite may write, a query-only connection: it writes nothing, and like any last
        # connection it removes the -wal/-shm files on close (a mode=ro one would leave them)
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
        con.execute("PRAGMA query_only=ON")
        return con
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        con.close()
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def _has_schema(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.read(16) != SQLITE_MAGIC:
                return False
        con = connect_readonly(path, snapshot=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        finally:
            con.close()
        return bool(row) and row[0] == SCHEMA
    except (sqlite3.DatabaseError, OSError):
        return False


def check_store_path(path: Path) -> None:
    """Raise StoreError unless ``path`` is absent or an existing valbench store."""
    if path.is_dir():
        raise StoreError(f"results path {path} is a directory; give a file such as {path / 'results.sqlite'}")
    if not path.exists():
        return
    for _ in range(20):  # a store another run is creating: empty, or its tables not yet committed
        if path.stat().st_size > 0 and _has_schema(path):
            return
        time.sleep(0.05)
    if path.stat().st_size == 0:
        return  # an empty file is a new store (SQLite writes nothing until its first table)
    with open(path, "rb") as fh:
        if fh.read(16) != SQLITE_MAGIC:
            raise StoreError(f"results path {path} exists and is not a valbench store (not an SQLite file); "
                             "nothing was changed")
    raise StoreError(f"results path {path} is an SQLite file but not a valbench store; nothing was changed")


class Store:
    """Open (or create) a results store; use as a context manager."""

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False, snapshot: bool = False):
        self.path = Path(path)
        check_store_path(self.path)
        if not self.path.exists():
            if not create or readonly:
                raise StoreError(f"results store {self.path} does not exist")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.values_dir = self.path.with_name(self.path.name + ".values")
        if readonly:  # reports: no pragma, no DDL, nothing written (works on read-only files and folders)
            self.con = connect_readonly(self.path, snapshot)
            return
        self.con = sqlite3.connect(self.path, timeout=30)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA foreign_keys=ON")
        with self.con:
            self.con.executescript(DDL)
            have = {r[1] for r in self.con.execute("PRAGMA table_info(attempts)")}
            for column, kind in (("owner", "TEXT"), ("heartbeat", "REAL"), ("traceback", "TEXT"),  # version 1
                                 ("metric_s", "REAL")):  # version 2
                if column not in have:
                    self.con.execute(f"ALTER TABLE attempts ADD COLUMN {column} {kind}")
            self.con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
            self.con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- writing -------------------------------------------------------------------
    def done_keys(self, failed: bool = False) -> set[str]:
        """Jobs with an ok attempt; with ``failed``, also those whose last attempt ended
        failed, timeout or oom (a deterministic failure is not retried unless asked)."""
        ok = {r[0] for r in self.con.execute("SELECT DISTINCT job_key FROM attempts WHERE status='ok'")}
        if not failed:
            return ok
        last = self.con.execute("SELECT job_key, status FROM attempts a WHERE id = (SELECT MAX(id) FROM attempts "
                                "WHERE job_key = a.job_key AND status NOT IN ('running', 'interrupted'))").fetchall()
        return ok | {k for k, s in last if s in FAILURES}

    def _add_job(self, job: Job) -> None:
        self.con.execute(
            "INSERT OR IGNORE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (job.key, json.dumps(job.config(), sort_keys=True, default=str),
             job.dataset.name, job.dataset.label, job.corruption.name, job.corruption.label,
             job.valuer.name, job.valuer.label, job.seed, job.mode, job.device, time.time()),
        )

    def claim(self, job: Job, provenance: dict[str, Any], owner: str, retry_failed: bool = False,
              since: float = 0.0) -> int | None:
        """Atomically take ``job`` for this run: None if it is finished, held by a live run
        (another ``valbench run`` on this store), or its last attempt failed (unless
        ``retry_failed``; then unless another run retried it after ``since``, this run's
        start); else a new running attempt. Attempts of a run that died (its heartbeat older
        than LEASE_S, or its process gone on this host) become 'interrupted' and the job is
        taken again."""
        now = time.time()
        self.con.execute("BEGIN IMMEDIATE")  # one writer at a time: two runs cannot both take a job
        try:
            rows = self.con.execute("SELECT status, owner, COALESCE(heartbeat, started), started FROM attempts "
                                    "WHERE job_key=? ORDER BY id", (job.key,)).fetchall()
            ended = [(s, st) for s, _, _, st in rows if s not in ("running", "interrupted")]
            failed_last = bool(ended) and ended[-1][0] in FAILURES
            if (any(s == "ok" or (s == "running" and _alive(o, hb, now)) for s, o, hb, _ in rows)
                    or (failed_last and (not retry_failed or ended[-1][1] >= since))):
                self.con.rollback()
                return None
            self.con.execute("UPDATE attempts SET status='interrupted', finished=?, error='its run stopped before "
                             "it finished' WHERE job_key=? AND status='running'", (now, job.key))
            self._add_job(job)
            cur = self.con.execute(
                "INSERT INTO attempts (job_key, status, started, provenance, owner, heartbeat) "
                "VALUES (?, 'running', ?, ?, ?, ?)", (job.key, now, json.dumps(provenance, sort_keys=True), owner, now))
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise
        return int(cur.lastrowid)

    def interrupt(self, attempt_ids: list[int]) -> None:
        """Mark this run's unfinished attempts 'interrupted' (the next run takes their jobs)."""
        if attempt_ids:
            with self.con:
                self.con.executemany("UPDATE attempts SET status='interrupted', finished=?, error='the run was "
                                     "stopped before it finished' WHERE id=? AND status='running'",
                                     [(time.time(), a) for a in attempt_ids])

    def finish_attempt(self, attempt_id: int, result: JobResult) -> None:
        values_file = None
        if result.values is not None:
            name = f"{result.key[:20]}-{attempt_id}.npz"
            with atomic_path(self.values_dir / name, ".npz") as tmp:
                np.savez_compressed(tmp, values=result.values, truth=result.truth.values, truth_kind=result.truth.kind)
            values_file = name
        t = asdict(result.timing) if result.timing else {}
        with self.con:
            self.con.execute(
                """UPDATE attempts SET status=?, finished=?, wall_s=?, cpu_s=?, peak_rss_bytes=?, base_rss_bytes=?,
                   peak_device_bytes=?, threads=?, fits=?, stopped_early=?, info=?, error=?, values_file=?,
                   traceback=?, metric_s=? WHERE id=? AND status='running'""",
                (result.status, time.time(), t.get("wall_s"), t.get("cpu_s"), t.get("peak_rss_bytes"),
                 t.get("base_rss_bytes"), t.get("peak_device_bytes"), t.get("threads"), result.fits,
                 int(result.stopped_early), json.dumps(result.info, sort_keys=True, default=str), result.error,
                 values_file, result.traceback, result.metric_s, attempt_id),
            )
            self.con.executemany(
                "INSERT INTO scores VALUES (?,?,?)", [(attempt_id, m, v) for m, v in result.scores.items()]
            )

    def lacking(self, job: Job) -> tuple[int, str, list[str]] | None:
        """(attempt, values file, labels) of the job's metrics its latest ok attempt has no
        score of (a metric named after the job ran); None if nothing is lacking."""
        row = self.con.execute("SELECT id, values_file FROM attempts WHERE job_key=? AND status='ok' "
                               "ORDER BY id DESC LIMIT 1", (job.key,)).fetchone()
        if row is None or row[1] is None:
            return None
        have = {r[0].split(":", 1)[0] for r in self.con.execute("SELECT metric FROM scores WHERE attempt_id=?",
                                                                 (row[0],))}
        labels = [m.label for m in job.metrics if m.label not in have]
        return (row[0], row[1], labels) if labels else None

    def add_scores(self, attempt_id: int, scores: dict[str, float], seconds: float) -> None:
        """Scores of metrics named after the attempt finished (its scoring time grows by ``seconds``)."""
        with self.con:
            self.con.executemany("INSERT OR IGNORE INTO scores VALUES (?,?,?)",
                                 [(attempt_id, m, v) for m, v in scores.items()])
            self.con.execute("UPDATE attempts SET metric_s = COALESCE(metric_s, 0) + ? WHERE id=?",
                             (seconds, attempt_id))

    def record_metrics(self, rows: list[tuple[str, str, bool, int | None, str | None]]) -> None:
        """What tables need to know of each metric (label, name, higher_is_better,
        paper_table, truth_kind), recorded at run time so that reports need no plugin."""
        with self.con:
            self.con.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)",
                                 [(a, b, int(c), d, e) for a, b, c, d, e in rows])

    def metrics(self) -> pd.DataFrame:
        """The metrics recorded by runs (empty for a store written before schema 3)."""
        import pandas as pd

        if not self.con.execute("SELECT 1 FROM sqlite_master WHERE name='metrics'").fetchone():
            return pd.DataFrame(columns=["label", "name", "higher_is_better", "paper_table", "truth_kind"])
        return pd.read_sql_query("SELECT * FROM metrics ORDER BY label", self.con)

    def record_paper(self, rows: list[tuple]) -> None:
        """Published values of the cells a run holds: (dataset_label, corruption_label, mode,
        valuer name, metric name, mean, std, minutes, source)."""
        with self.con:
            self.con.executemany("INSERT OR REPLACE INTO paper VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def paper(self) -> pd.DataFrame:
        import pandas as pd

        if not self.con.execute("SELECT 1 FROM sqlite_master WHERE name='paper'").fetchone():
            return pd.DataFrame(columns=["dataset_label", "corruption_label", "mode", "valuer", "metric", "mean",
                                         "std", "minutes", "source"])
        return pd.read_sql_query("SELECT * FROM paper", self.con)

    # -- reading -------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        """One row per job with its latest successful attempt, timings and scores (wide):
        valbench.results.jobs_frame's ok rows."""
        from valbench.results import jobs_frame  # it reads through this class

        df = jobs_frame(self)
        return df[df["status"] == "ok"].reset_index(drop=True)

    def attempts(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM attempts ORDER BY id", self.con)

    def load_values(self, values_file: str) -> tuple[np.ndarray, np.ndarray, str]:
        with np.load(self.values_dir / values_file) as z:
            return z["values"], z["truth"], str(z["truth_kind"])


def open_existing(path: str | Path) -> Store:
    """Open a store that must already exist (for reports)."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"results store {p} does not exist; create it with 'valbench run --results {p}'")
    return Store(p, create=False, readonly=True)
