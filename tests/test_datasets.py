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
