"""leaderboards/ is generated: its README shows exactly the tables its stores give."""
from pathlib import Path

import pytest

from valbench.report.tables import render, rows
from valbench.results import jobs_frame, metric_info, paper_frame
from valbench.store import open_existing

ROOT = Path(__file__).resolve().parent.parent / "leaderboards"
STORES = sorted(ROOT.glob("*/results.sqlite"))


def test_there_are_leaderboards():
    assert {p.parent.name for p in STORES} >= {"h200", "cpu-2core"}


@pytest.mark.parametrize("store", STORES, ids=[p.parent.name for p in STORES])
def test_the_readme_shows_the_tables_its_store_gives(store):
    readme = (ROOT / "README.md").read_text()
    with open_existing(store) as s:
        jobs, metrics, paper = jobs_frame(s), metric_info(s), paper_frame(s)
    for number in (1, 2, 3):
        t, shown, caption = rows(jobs, number, metrics, paper)
        assert render(t, shown, caption, number, "markdown") in readme, (
            f"leaderboards/README.md is not what {store} gives for table {number}: run python leaderboards/build.py")
    assert (store.parent / "report" / "leaderboard.html").is_file() and (store.parent / "results.csv").is_file()
