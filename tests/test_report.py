"""`valbench report`: every table and figure a store allows, with provenance; bad input
writes nothing."""
import sqlite3

import pytest

from valbench.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "r.sqlite"
    assert main(["run", "--datasets", "synthetic[n_source=60,n_target=30,n_test=30]", "--corruptions",
                 "labels,features", "--valuers", "random,knn-shapley", "--seeds", "2", "--metrics",
                 "corruption-auroc,noise-spearman,filtering[fractions=2,replicates=1]", "--in-process",
                 "--results", str(path)]) == 0
    return path


def test_report_writes_tables_figures_index_and_page(store, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--results", str(store), "--out", str(out), "--html"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {f"table{n}.{e}" for n in (1, 2, 3) for e in ("md", "tex", "csv")} <= names
    assert {"fig2.png", "fig2.pdf", "fig3.png", "fig4.png", "index.md", "leaderboard.html"} <= names
    index = (out / "index.md").read_text()
    assert "| valbench | 0.1.0 |" in index and "| torch |" in index and "| seeds | 0, 1 |" in index
    assert "![fig3](fig3.png)" in index and "fig8: not in this store" in index
    assert "knn-shapley" in (out / "table1.md").read_text()
    page = (out / "leaderboard.html").read_text()
    assert "knn-shapley" in page and "data:image/png;base64," in page
    (out / "index.md").write_text((out / "index.md").read_text() + "\nSTALE-LINE\n")
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0  # an earlier report is replaced
    assert "STALE-LINE" not in (out / "index.md").read_text() and not (out / "leaderboard.html").exists()
    (out / "notes.md").write_text("mine")  # a file of the user's in the report folder is never deleted
    assert main(["report", "--results", str(store), "--out", str(out)]) == 2
    assert "not part of the earlier report there (e.g. notes.md)" in capsys.readouterr().err
    assert (out / "notes.md").read_text() == "mine"


def test_report_into_the_current_folder(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--results", str(store), "--out", "."]) == 0 and (tmp_path / "index.md").exists()
    assert main(["report", "--results", str(store), "--out", "."]) == 0  # and again: replaced


def test_report_bad_inputs_are_one_line_errors_and_write_nothing(store, tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    assert main(["run", "--datasets", "synthetic", "--corruptions", "labels", "--valuers", "random", "--dry-run",
                 "--results", str(empty)]) == 0  # a dry run creates nothing: make an empty store by hand
    from valbench.store import Store

    Store(empty).close()
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args, message in ((["--results", str(empty), "--out", str(tmp_path / "r1")], "holds no jobs"),
                          (["--results", str(foreign), "--out", str(tmp_path / "r2")], "not a valbench store"),
                          (["--results", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r3")], "does not exist"),
                          (["--results", str(store), "--out", str(a_file)], "is a file"),
                          (["--results", str(store), "--out", str(other)], "holds other files")):
        assert main(["report", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and (other / "mine.txt").read_text() == "keep"
