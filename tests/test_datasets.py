import gzip
from importlib import resources

import numpy as np
import pytest

from valbench.errors import DataError
from valbench_plugins.datasets.adult import Adult, load_frames
from valbench_plugins.datasets.csv import CSVDataset
from valbench_plugins.datasets.synthetic import Synthetic
from tests.conftest import write_csv


def test_adult_embedded_files_are_the_uci_files():
    data, test, _ = load_frames(None)
    assert len(data) == 32561 and len(test) == 16281
    assert set(data["income"]) == {"<=50K", ">50K"}
    assert set(test["income"]) == {"<=50K.", ">50K."}


def test_adult_preprocessing_matches_protocol():
    s = Adult().load(0)
    assert s.source.x.shape == (1000, 108) and s.target.x.shape == (400, 108)
    assert len(s.test) == 16281 - 400
    assert s.n_classes == 2 and s.learner.class_balance
    allx = np.concatenate([s.source.x, s.target.x, s.test.x])
    assert allx.min() == 0.0 and allx.max() == 1.0  # one scaler over all three
    assert 0.15 < s.source.y.mean() < 0.35  # ~24% earn >50K
    assert s.source.x.dtype == np.float32 and s.source.y.dtype == np.int64


def test_adult_same_seed_same_split_other_seed_differs():
    a, b, c = Adult(n_source=50, n_target=20, n_test=30).load(3), Adult(n_source=50, n_target=20, n_test=30).load(3), \
        Adult(n_source=50, n_target=20, n_test=30).load(4)
    assert np.array_equal(a.source.x, b.source.x) and np.array_equal(a.target.y, b.target.y)
    assert not np.array_equal(a.source.x, c.source.x)


def test_adult_reads_user_path_with_same_fingerprint(tmp_path):
    for name in ("adult.data", "adult.test"):
        raw = resources.files("valbench_plugins.datasets").joinpath(f"data/{name}.gz").read_bytes()
        (tmp_path / name).write_bytes(gzip.decompress(raw))
    assert Adult(path=str(tmp_path)).fingerprint() == Adult().fingerprint()


def test_adult_truncated_file_is_reported(tmp_path):
    for name in ("adult.data", "adult.test"):
        raw = gzip.decompress(resources.files("valbench_plugins.datasets").joinpath(f"data/{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(raw[: len(raw) // 2].rsplit(b"\n", 1)[0] + b"\n")
    with pytest.raises(DataError, match="rows, expected 32561"):
        Adult(path=str(tmp_path)).fingerprint()


def test_adult_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="adult.data not found in"):
        Adult(path=str(tmp_path)).load(0)


def test_synthetic_is_fixed_pool_split_by_seed():
    a, b = Synthetic().load(0), Synthetic().load(1)
    assert a.source.x.shape == (200, 8)
    pool = lambda s: {tuple(np.round(r, 5)) for r in np.concatenate([s.source.x, s.target.x, s.test.x])}
    assert not np.array_equal(a.source.x, b.source.x)
    assert len(pool(a)) == 500


def test_csv_dataset_splits_and_encodes_labels(tmp_path, blobs):
    x, y = blobs
    labels = np.where(y == 1, "yes", "no")
    path = write_csv(tmp_path / "d.csv", x, labels)
    s = CSVDataset(path=str(path), n_target=30, n_test=30).load(0)
    assert (len(s.source), len(s.target), len(s.test)) == (60, 30, 30)
    assert s.n_classes == 2 and set(s.source.y) == {0, 1}


def test_csv_non_numeric_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,x,0\n2,y,1\n")
    with pytest.raises(DataError, match="column 'b'"):
        CSVDataset(path=str(tmp_path / "d.csv")).load(0)


@pytest.mark.parametrize("text, message", [
    ("a,label\n1,0\n2,\n3,1\n", "1 rows of .* have no label in column 'label'"),
    ("label\n0\n1\n", "has no feature column besides the label 'label'"),
])
def test_csv_refuses_missing_labels_and_a_table_without_features(tmp_path, text, message):
    """Issue: missing labels became a class named 'nan'; a file with no feature column was accepted."""
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        CSVDataset(path=str(tmp_path / "d.csv"), n_target=1, n_test=1).load(0)


def test_csv_refuses_a_continuous_label_unless_told(tmp_path):
    """Issue: a continuous label silently made a 400-class task."""
    g = np.random.default_rng(0)
    path = write_csv(tmp_path / "d.csv", g.standard_normal((400, 3)), g.standard_normal(400))
    with pytest.raises(DataError, match="label 'label' has 400 distinct values.*max_classes=400"):
        CSVDataset(path=str(path)).load(0)
    assert CSVDataset(path=str(path), max_classes=400).load(0).n_classes == 400


@pytest.mark.parametrize("spec, message", [
    ("csv[n_target=-5]", "n_target must be >= 1"),
    ("features[max=1e40]", r"max must be in \(0, 1e\+06\]"),
])
def test_sizes_and_noise_rates_are_bounded(registry, spec, message):
    from valbench.errors import ConfigError
    from valbench.params import resolve

    kind = "dataset" if spec.startswith("csv") else "corruption"
    spec = spec.replace("csv[", "csv[path=" + str(CSVDataset.test_params["path"]) + ",")
    with pytest.raises(ConfigError, match=message):
        resolve(registry, kind, spec)


def test_a_truth_no_metric_can_score_is_refused_before_any_valuer_runs(registry, tmp_path):
    """Issue: labels[rate=0.001] corrupted no sample and the job failed only after the valuer ran."""
    from valbench import api
    from valbench.grid import build_experiment

    exp = build_experiment({"datasets": "synthetic[n_source=20]", "corruptions": "labels[rate=0.01]",
                            "valuers": "random", "seeds": 1})
    with pytest.raises(DataError, match="gives a truth that metric 'corruption-(ap|auroc)' cannot score"):
        api.run(exp, tmp_path / "r.sqlite", registry=registry, device="cpu")
    assert not (tmp_path / "r.sqlite").exists()
