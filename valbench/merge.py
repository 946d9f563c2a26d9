"""Joining stores made apart (separate machines, separate folders) into a new one.

Jobs are the same job wherever they ran (their key hashes the whole configuration), so
each appears once; every attempt is kept with its provenance, scores and values, except
an attempt already there (the same job, start time, run and status: a store merged
twice). Attempts still running in an input are not taken: they are no result yet.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from valbench.datautil import atomic_path
from valbench.errors import StoreError
from valbench.store import Store, open_existing

ATTEMPT_COLUMNS = ("job_key", "status", "started", "finished", "wall_s", "cpu_s", "peak_rss_bytes", "base_rss_bytes",
                   "peak_device_bytes", "threads", "fits", "stopped_early", "info", "error", "provenance",
                   "owner", "heartbeat", "traceback", "metric_s")


def merge(inputs: Sequence[str | Path], output: str | Path) -> tuple[int, int]:
    """Write the union of the ``inputs`` stores to a NEW store ``output``; returns (jobs,
    attempts) in it. Nothing of the inputs is changed; an existing ``output`` is refused."""
    out = Path(output)
    if out.exists() or out.with_name(out.name + ".values").exists():
        raise StoreError(f"{out} exists; merge writes a new store (nothing was changed)")
    if len(inputs) < 2:
        raise StoreError("merge needs at least two stores")
    sources = [open_existing(p) for p in inputs]  # each checked to be a store before anything is written
    try:
        with Store(out) as target:
            seen = set()
            for src in sources:
                for row in src.con.execute("SELECT * FROM jobs").fetchall():
                    target.con.execute(f"INSERT OR IGNORE INTO jobs VALUES ({','.join('?' * len(row))})", row)
                cols = ", ".join(ATTEMPT_COLUMNS)
                have = {r[1] for r in src.con.execute("PRAGMA table_info(attempts)")}
                picked = ", ".join(c if c in have else f"NULL AS {c}" for c in ATTEMPT_COLUMNS)  # schema 1 lacks some
                for attempt in src.con.execute(f"SELECT id, values_file, {picked} FROM attempts "
                                               "WHERE status != 'running' ORDER BY id").fetchall():
                    old_id, values_file, fields = attempt[0], attempt[1], attempt[2:]
                    identity = (fields[0], fields[2], fields[15], fields[1])  # job, started, owner, status
                    if identity in seen:
                        continue
                    seen.add(identity)
                    cur = target.con.execute(f"INSERT INTO attempts ({cols}) VALUES ({','.join('?' * len(fields))})",
                                             fields)
                    new_id = cur.lastrowid
                    if values_file:
                        name = f"{fields[0][:20]}-{new_id}.npz"
                        with atomic_path(target.values_dir / name, ".npz") as tmp:
                            shutil.copyfile(src.values_dir / values_file, tmp)
                        target.con.execute("UPDATE attempts SET values_file=? WHERE id=?", (name, new_id))
                    target.con.executemany("INSERT INTO scores VALUES (?,?,?)", [
                        (new_id, m, v) for m, v in src.con.execute(
                            "SELECT metric, value FROM scores WHERE attempt_id=?", (old_id,)).fetchall()])
            for src in sources:  # the metrics' orientation, for reports of the merged store
                target.record_metrics([tuple(r) for r in src.metrics().itertuples(index=False, name=None)])
            target.con.commit()
            jobs = target.con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            attempts = target.con.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    except BaseException:
        for p in (out, out.with_name(out.name + "-wal"), out.with_name(out.name + "-shm")):
            p.unlink(missing_ok=True)
        shutil.rmtree(out.with_name(out.name + ".values"), ignore_errors=True)
        raise
    finally:
        for src in sources:
            src.close()
    return jobs, attempts
