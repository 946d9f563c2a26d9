"""Results for programs: a store read into pandas, without torch or any plugin.

``jobs(path)``: one row per job, with its configuration (every plugin parameter as a
column ``dataset.<name>``, ``corruption.<name>``, ``valuer.<name>``), its status, the
timings and fits of its latest decisive attempt, and one column per score.
``results(path)``: the same, long, one row per job x score (what ``valbench export``
writes). Both read the SQLite store alone: what reports need to know of a metric (its
orientation, its paper table) was recorded by the run.

A job's status is that of its latest ok attempt if it has one ("ok"), else of its latest
attempt ("failed", "timeout", "oom", "interrupted" or "running"). Scores and values exist
for ok attempts only. ``stopped_early`` marks a valuation a budget cut short: its scores
are of unfinished work and reports mark them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from valbench.errors import ConfigError
from valbench.store import Store, open_existing

LABELS = ["dataset_label", "corruption_label", "valuer_label", "mode", "seed"]
EXPORT_FORMATS = ("csv", "parquet")
_ATTEMPT = ["status", "wall_s", "cpu_s", "metric_s", "peak_rss_bytes", "peak_device_bytes", "threads", "fits",
            "stopped_early", "error", "provenance", "values_file", "started", "finished"]


def _frame(store: Store) -> pd.DataFrame:
    con = store.con
    have = {r[1] for r in con.execute("PRAGMA table_info(attempts)")}
    cols = ", ".join(f"a.{c}" if c in have else f"NULL AS {c}" for c in _ATTEMPT)
    # the latest ok attempt of each job, else its latest attempt of any status
    q = f"""
    SELECT j.key, j.config, j.dataset, j.dataset_label, j.corruption, j.corruption_label, j.valuer, j.valuer_label,
           j.seed, j.mode, j.device, a.id AS attempt, {cols}
    FROM jobs j JOIN attempts a ON a.id = COALESCE(
        (SELECT MAX(id) FROM attempts WHERE job_key = j.key AND status = 'ok'),
        (SELECT MAX(id) FROM attempts WHERE job_key = j.key))
    ORDER BY j.dataset_label, j.corruption_label, j.valuer_label, j.mode, j.seed
    """
    df = pd.read_sql_query(q, con)
    df["stopped_early"] = df["stopped_early"].fillna(0).astype(bool)
    params = []
    for config in df.pop("config"):
        c = json.loads(config)
        row = {f"{kind}.{k}": v for kind in ("dataset", "corruption", "valuer") for k, v in c[kind]["params"].items()}
        row.update({f"{kind}.version": c[kind]["version"] for kind in ("dataset", "corruption", "valuer")})
        params.append(row)
    return pd.concat([df, pd.DataFrame(params, index=df.index)], axis=1)


def _scores(store: Store) -> pd.DataFrame:
    return pd.read_sql_query("SELECT attempt_id AS attempt, metric, value FROM scores", store.con)


def jobs_frame(store: Store) -> pd.DataFrame:
    """One row per job, wide (see the module docstring)."""
    df = _frame(store)
    scores = _scores(store)
    if len(scores) and len(df):
        wide = scores.pivot(index="attempt", columns="metric", values="value").reset_index()
        df = df.merge(wide, on="attempt", how="left")
    return df


def long_frame(store: Store) -> pd.DataFrame:
    """One row per job x score (a job with no score, e.g. a failed one, has one row with
    metric and value empty). ``metric`` is the stored name; ``metric_label`` and ``point``
    split a curve's name ('filtering:remove-low@0.111' -> 'filtering', 'remove-low@0.111')."""
    df = _frame(store)
    scores = _scores(store)
    parts = scores["metric"].str.split(":", n=1, expand=True).reindex(columns=[0, 1])
    scores["metric_label"] = parts[0]  # 'filtering[replicates=1]' of 'filtering[replicates=1]:remove-low@0.111'
    scores["point"] = parts[1]  # a curve's point ('remove-low@0.111', '0.050'); empty for a single score
    out = df.merge(scores, on="attempt", how="left")
    for col in ("started", "finished"):  # seconds since the epoch, and readable
        out[f"{col}_utc"] = pd.to_datetime(out[col], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def metric_info(store: Store) -> pd.DataFrame:
    """label -> name, higher_is_better, paper_table, truth_kind, as the runs recorded them."""
    return store.metrics().set_index("label")


def paper_frame(store: Store) -> pd.DataFrame:
    """The published values runs matched to their cells (empty where none did)."""
    return store.paper()


def jobs(path: str | Path) -> pd.DataFrame:
    """The store at ``path`` as one row per job (scores as columns)."""
    with open_existing(path) as store:
        return jobs_frame(store)


def results(path: str | Path) -> pd.DataFrame:
    """The store at ``path`` as one row per job x score: ``valbench export`` as a DataFrame."""
    with open_existing(path) as store:
        return long_frame(store)


def export(path: str | Path, output: str | Path, fmt: str = "csv") -> int:
    """Write :func:`results` to ``output`` (csv or parquet); returns the number of rows.
    The file is written whole or not at all."""
    from valbench.datautil import atomic_path

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(output)
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give a file name such as {out / ('results.' + fmt)}")
    if not out.parent.exists():
        raise ConfigError(f"the folder of {out} does not exist")
    df = results(path)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("parquet export needs pyarrow: pip install pyarrow (or use --format csv)") from None
    with atomic_path(out, "." + fmt) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return len(df)
