"""Bad input to the retraining baselines: a one-line error and exit code 2 before any work."""
import pytest

from valbench.cli import main


@pytest.mark.parametrize("valuer, message", [
    ("loo[max_fits=10]", "loo needs 210 fits (200 leave-one-out models + full-data models), max_fits=10 is too small"),
    ("tmc-shapley[max_fits=5]", "tmc-shapley needs at least 11 fits"),
    ("tmc-shapley[tolerance=2]", "tolerance must be in [0, 1), got 2.0"),
    ("loo[steps=0]", "steps must be >= 1, got 0"),
    ("data-oob[learner=knn]", "learner must be one of tree, logistic, mlp"),
    ("data-oob[n_bags=0]", "n_bags must be >= 1 or omitted, got 0"),
])
def test_bad_budget_or_parameter_is_one_line(tmp_path, capsys, valuer, message):
    res = tmp_path / "r.sqlite"
    rc = main(["run", "--valuers", valuer, "--datasets", "synthetic[n_source=200]", "--corruptions", "labels",
               "--results", str(res)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not res.exists()
