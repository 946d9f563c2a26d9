"""End-to-end CLI tests: the issue's commands, and one test per bad input."""
import subprocess
import sys

import numpy as np
import pytest

from valbench.cli import main
from valbench.store import open_existing
from tests.conftest import write_csv


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_end_to_end_run_tables_and_rerun(tmp_path, capsys):
    res = str(tmp_path / "demo.sqlite")
    rc, out, err = run_cli(capsys, "run", "--valuers", "random", "--datasets", "synthetic", "--corruptions",
                           "labels,features", "--seeds", "3", "--results", res)
    assert rc == 0 and "6 jobs: 6 ok, 0 failed, 0 already" in out
    assert err.count("\n") == 6 and "[6/6]" in err  # one line per job when not a TTY
    rc, out, _ = run_cli(capsys, "table", "1", "--results", res)
    assert rc == 0 and "| synthetic" in out and "random" in out
    rc, out, _ = run_cli(capsys, "table", "2", "--results", res, "--format", "csv")
    assert rc == 0 and out.splitlines()[0].startswith("dataset,mode,valuer,n,jobs,mean,std,paper_mean,paper_std")  # Table 2 always shows the mode
    rc, out, _ = run_cli(capsys, "table", "3", "--results", res, "--format", "latex")
    assert rc == 0 and r"\begin{tabular}" in out and "random" in out
    rc, out, err = run_cli(capsys, "run", "--valuers", "random", "--datasets", "synthetic", "--corruptions",
                           "features,labels", "--seeds", "3", "--results", res)
    assert rc == 0 and "0 ok, 0 failed, 6 already" in out
    with open_existing(res) as store:
        assert len(store.attempts()) == 6


def test_toml_config(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('seeds = [0, 2]\ndatasets = [{name = "synthetic", n_source = 100}]\n'
                   'corruptions = ["labels[rate=0.3]"]\nvaluers = ["random"]\ndevice = "cpu"\n')
    res = str(tmp_path / "r.sqlite")
    rc, out, _ = run_cli(capsys, "run", "--config", str(cfg), "--results", res)
    assert rc == 0 and "2 jobs: 2 ok" in out
    with open_existing(res) as store:
        df = store.results()
    assert sorted(df["seed"]) == [0, 2] and set(df["dataset_label"]) == {"synthetic[n_source=100]"}
    assert set(df["corruption_label"]) == {"labels[rate=0.3]"}


def test_plugins_command_lists_builtins_with_distribution(capsys):
    rc, out, _ = run_cli(capsys, "plugins")
    assert rc == 0
    rows = [l.split() for l in out.splitlines()[2:]]
    assert ["valuer", "random", "valbench", "1", "valbench_plugins.valuers.random"] in rows
    assert {r[0] for r in rows} == {"dataset", "corruption", "valuer", "metric"}


def test_console_script_is_installed():
    exe = __import__("shutil").which("valbench") or str(__import__("pathlib").Path(sys.executable).with_name("valbench"))
    p = subprocess.run([exe, "run", "--valuers", "randon", "--datasets", "synthetic", "--corruptions", "labels"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "did you mean 'random'" in p.stderr


@pytest.fixture
def stored(tmp_path, capsys):
    """A store with finished results, to prove bad input never loses them."""
    res = tmp_path / "keep.sqlite"
    assert main(["run", "--valuers", "random", "--datasets", "synthetic", "--corruptions", "labels",
                 "--results", str(res)]) == 0
    capsys.readouterr()
    return res


def csv_inputs(tmp_path):
    g = np.random.default_rng(0)
    x, y = g.standard_normal((60, 3)), np.arange(60) % 2
    nan_x = x.copy()
    nan_x[5, 1] = np.nan
    write_csv(tmp_path / "nan.csv", nan_x, y)
    write_csv(tmp_path / "good.csv", x, y)
    write_csv(tmp_path / "oneclass.csv", x[:20], np.ones(20, int))
    (tmp_path / "empty.csv").write_text("f0,f1,f2,label\n")
    (tmp_path / "bad.toml").write_text("datasets = [\n")
    (tmp_path / "unknown.toml").write_text('datasets = ["adult"]\nvaluerz = ["random"]\n')


BAD = [
    (["--valuers", "randon"], "unknown valuer 'randon' (did you mean 'random'?); registered: "),
    (["--datasets", "adlt"], "unknown dataset 'adlt' (did you mean 'adult'?)"),
    (["--corruptions", "labels[rate=0.4"], "unclosed '['"),
    (["--corruptions", "labels[rate]"], "malformed parameter 'rate'"),
    (["--corruptions", "labels[rate=1.5]"], "rate must be in (0, 1), got 1.5"),
    (["--corruptions", "labels[rate=high]"], "rate must be a number"),
    (["--seeds", "0"], "--seeds must be in 1..10000, got 0"),
    (["--seeds", "two"], "--seeds must be a positive integer"),
    (["--config", "{tmp}/bad.toml"], "is not valid TOML"),
    (["--config", "{tmp}/unknown.toml"], "unknown key 'valuerz'"),
    (["--datasets", "csv[path={tmp}/nan.csv,n_target=20,n_test=10]"], "have NaN or infinite features"),
    (["--datasets", "csv[path={tmp}/good.csv,target_path={tmp}/oneclass.csv,n_target=10,n_test=10]"],
     "the target set has a single class"),
    (["--datasets", "csv[path={tmp}/empty.csv,target_path={tmp}/good.csv,n_target=10,n_test=10]"], "the source set is empty"),
    (["--device", "cuda"], "torch sees no CUDA device"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, stored, extra, message):
    import torch

    if "--device" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is valid here")
    csv_inputs(tmp_path)
    args = {"--valuers": "random", "--datasets": "synthetic", "--corruptions": "labels"}
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    if "--config" in args:
        args = {"--config": args["--config"]}
    argv = ["run", *[v for kv in args.items() for v in kv]]
    fresh = tmp_path / "fresh.sqlite"
    rc, out, err = run_cli(capsys, *argv, "--results", str(fresh))
    assert rc == 2, err
    assert err.startswith("valbench: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not fresh.exists()
    with open_existing(stored) as store:
        before = len(store.attempts())
    rc, _, _ = run_cli(capsys, *argv, "--results", str(stored))
    assert rc == 2
    with open_existing(stored) as store:
        assert len(store.attempts()) == before and len(store.results()) == 1


def test_results_path_not_a_store(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    rc, _, err = run_cli(capsys, "run", "--valuers", "random", "--datasets", "synthetic", "--corruptions",
                         "labels", "--results", str(notes))
    assert rc == 2 and "not a valbench store" in err and err.count("\n") == 1
    assert notes.read_text() == "keep me"
    rc, _, err = run_cli(capsys, "table", "1", "--results", str(notes))
    assert rc == 2 and "not a valbench store" in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--device", "gpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'gpu'" in err


def test_the_wait_policy_spins_only_on_an_idle_machine(monkeypatch):
    """benchmarks/thread_policy.py: spinning is fastest on a quiet machine and 2x slower than
    sleeping beside a busy neighbour; an exported OMP_WAIT_POLICY always wins."""
    from valbench import cli

    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert cli.wait_policy() == "ACTIVE"
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (1.1, 0.0, 0.0))
    assert cli.wait_policy() == "PASSIVE"
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 16)
    assert cli.wait_policy() == "ACTIVE"  # one busy core of 16 leaves the machine idle enough
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert cli.main(["plugins"]) == 0 and cli.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
