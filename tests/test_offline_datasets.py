"""fashion-mnist and pbmc (real data that works offline), and every dataset in unsupervised mode."""
import gzip
import hashlib
import struct

import h5py
import numpy as np
import pytest

from valbench.cli import main
from valbench.errors import DataError
from valbench_plugins.datasets.fashion_mnist import DEBIAN_DIR, FashionMNIST
from valbench_plugins.datasets.pbmc import PBMC, shipped


def write_idx(path, array):
    a = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape)
    path.write_bytes(gzip.compress(header + a.tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    g = np.random.default_rng(0)
    d = tmp_path / "fm"
    d.mkdir()
    for split, n in (("train", 80), ("t10k", 40)):
        y = np.arange(n) % 10
        x = g.integers(0, 50, (n, 28, 28)) + (y[:, None, None] * 20)  # classes differ in brightness
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
    return d


def test_fashion_pixels_from_idx(fashion_dir):
    s = FashionMNIST(path=str(fashion_dir), representation="pixels", n_source=30, n_target=20, n_test=20,
                     n_pretrain=40).load(0)
    assert s.source.x.shape == (30, 1, 28, 28) and s.source.x.max() <= 1.0 and s.n_classes == 10
    padded = FashionMNIST(path=str(fashion_dir), representation="pixels", size=32, n_source=30, n_target=20,
                          n_test=20, n_pretrain=40).load(0)
    assert padded.source.x.shape == (30, 1, 32, 32)
    assert np.array_equal(padded.source.x[:, :, 2:30, 2:30], s.source.x) and padded.source.x[:, :, :2].max() == 0


def test_fashion_cnn_pretrained_on_held_out_images_and_cached(fashion_dir, monkeypatch):
    ds = FashionMNIST(path=str(fashion_dir), n_source=30, n_target=20, n_test=20, n_pretrain=40, pretrain_epochs=1)
    held, pool = ds.pools()
    assert len(held) == 40 and len(pool) == 40 and not set(held) & set(pool)
    s = ds.load(0)
    assert s.encoder is not None and s.learner.in_features == 128
    feats = s.encoder.encode(s.source.x)
    assert feats.shape == (30, 128) and np.isfinite(feats).all()
    import valbench_plugins.datasets.fashion_mnist as fm

    def no_training(*args, **kwargs):
        raise AssertionError("the cached CNN was trained again")

    monkeypatch.setattr(fm, "pretrain", no_training)
    again = ds.encoder()  # the second time from the cache: the same weights, no training
    assert again.key == s.encoder.key and np.allclose(again.encode(s.source.x), feats)


def test_fashion_truncated_and_missing(fashion_dir, tmp_path):
    p = fashion_dir / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz has .* bytes, which does not match its header"):
        FashionMNIST(path=str(fashion_dir), representation="pixels").load(0)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DataError, match="is truncated or corrupt"):
        FashionMNIST(path=str(fashion_dir), representation="pixels").load(0)
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte.gz not found in {tmp_path}; install the Debian "
                                        r"package dataset-fashion-mnist"):
        FashionMNIST(path=str(tmp_path)).fingerprint()


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_real_debian_files():
    xd, yd, xt, yt = FashionMNIST(representation="pixels").arrays()
    assert xd.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert np.array_equal(np.bincount(yt), [1000] * 10)


def test_pbmc_shipped_file_is_scanpys():
    assert hashlib.sha256(shipped().read_bytes()).hexdigest() == \
        "e71d41e737c941559b7c57c9243bdb3d2c889c2adfdf00e3422ac6b46783676f"
    x, y, k = PBMC().arrays()
    assert x.shape == (700, 765) and k == 10 and np.bincount(y).tolist() == [68, 8, 19, 54, 43, 129, 95, 13, 31, 240]
    s = PBMC().load(0)
    assert (len(s.source), len(s.target), len(s.test)) == (400, 150, 150)


def old_h5ad(path, x, codes, cats):
    """The AnnData < 0.7 layout of the shipped file: compound obs/var, raw.X as h5sparse CSR."""
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x.astype(np.float32))
        obs = np.zeros(len(x), dtype=[("index", "S8"), ("bulk_labels", "i1")])
        obs["index"], obs["bulk_labels"] = [f"c{i}".encode() for i in range(len(x))], codes
        f.create_dataset("obs", data=obs)
        f.create_dataset("uns/bulk_labels_categories", data=np.array(cats, dtype="S"))
        raw = f.create_group("raw.X")
        raw.attrs["h5sparse_format"], raw.attrs["h5sparse_shape"] = "csr", np.array(x.shape)
        nz = [np.flatnonzero(r) for r in x]
        raw["data"] = np.concatenate([x[i, c] for i, c in enumerate(nz)]).astype(np.float32)
        raw["indices"] = np.concatenate(nz).astype(np.int32)
        raw["indptr"] = np.concatenate([[0], np.cumsum([len(c) for c in nz])]).astype(np.int32)


def new_h5ad(path, x, codes, cats):
    """The current AnnData layout: X as a csr_matrix group, obs/<column>/{codes,categories}."""
    with h5py.File(path, "w") as f:
        nz = [np.flatnonzero(r) for r in x]
        X = f.create_group("X")
        X.attrs["encoding-type"], X.attrs["shape"] = "csr_matrix", np.array(x.shape)
        X["data"] = np.concatenate([x[i, c] for i, c in enumerate(nz)]).astype(np.float32)
        X["indices"] = np.concatenate(nz).astype(np.int32)
        X["indptr"] = np.concatenate([[0], np.cumsum([len(c) for c in nz])]).astype(np.int64)
        obs = f.create_group("obs")
        obs.attrs["_index"] = "_index"
        obs["_index"] = np.array([f"c{i}" for i in range(len(x))], dtype=h5py.string_dtype())
        col = obs.create_group("bulk_labels")
        col.attrs["encoding-type"] = "categorical"
        col["codes"], col["categories"] = codes.astype(np.int8), np.array(cats, dtype=h5py.string_dtype())


def test_pbmc_reads_both_anndata_layouts(tmp_path):
    g = np.random.default_rng(0)
    x = np.where(g.uniform(size=(30, 7)) < 0.6, 0.0, g.uniform(0, 3, (30, 7))).astype(np.float32)
    codes, cats = np.arange(30) % 3, ["B", "NK", "T"]
    old_h5ad(tmp_path / "old.h5ad", x, codes, cats)
    new_h5ad(tmp_path / "new.h5ad", x, codes, cats)
    for name in ("old.h5ad", "new.h5ad"):
        xx, yy, k = PBMC(path=str(tmp_path / name), layer="X").arrays()
        assert np.array_equal(xx, x) and np.array_equal(yy, codes) and k == 3
    xr, _, _ = PBMC(path=str(tmp_path / "old.h5ad"), layer="raw").arrays()
    assert np.array_equal(xr, x)
    with pytest.raises(DataError, match="obs has no column 'cell_type'"):
        PBMC(path=str(tmp_path / "new.h5ad"), layer="X", label="cell_type").arrays()
    with pytest.raises(DataError, match="new.h5ad has no raw.X or raw/X; use layer=X"):
        PBMC(path=str(tmp_path / "new.h5ad")).arrays()


def test_pbmc_bad_files(tmp_path):
    raw = shipped().read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="cut.h5ad is truncated, corrupt or not an HDF5"):
        PBMC(path=str(tmp_path / "cut.h5ad")).load(0)
    with pytest.raises(DataError, match=rf"pbmc: none.h5ad not found in {tmp_path}"):
        PBMC(path=str(tmp_path / "none.h5ad")).fingerprint()


def test_cli_unsupervised_pbmc_end_to_end(tmp_path, capsys):
    res = str(tmp_path / "u.sqlite")
    rc = main(["run", "--mode", "unsupervised", "--datasets", "pbmc", "--corruptions", "features[max=5]",
               "--valuers", "random", "--results", res])
    out, err = capsys.readouterr()
    assert rc == 0 and "1 jobs: 1 ok" in out, out + err
    rc = main(["table", "2", "--results", res])
    out, _ = capsys.readouterr()
    assert rc == 0 and "pbmc" in out and "unsupervised" in out


def test_every_new_dataset_builds_unsupervised_cells(fashion_dir, tmp_path, registry):
    """y = x and the autoencoder learner for every dataset of this branch (tiny files)."""
    from valbench.api import plan
    from valbench.grid import build_experiment
    from tests.lincs_files import write_release
    from tests.test_blog_cifar import TEST_FILES, blog_rows, cifar_batch
    import io
    import tarfile

    g = np.random.default_rng(0)
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "blogData_train.csv").write_text(blog_rows(g, 30))
    (tmp_path / "blog" / TEST_FILES[0]).write_text(blog_rows(g, 30))
    (tmp_path / "cifar").mkdir()
    with tarfile.open(tmp_path / "cifar" / "cifar-10-binary.tar.gz", "w:gz") as t:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            data = cifar_batch(g, 24)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    write_release(tmp_path / "lincs", n_sigs=40)
    specs = [f"blog[path={tmp_path / 'blog'},n_source=20,n_target=10]",
             f"cifar10[path={tmp_path / 'cifar'},representation=pixels,n_source=30,n_target=10,n_test=10]",
             f"fashion-mnist[path={fashion_dir},representation=pixels,n_source=30,n_target=10,n_test=10,n_pretrain=40]",
             "pbmc", f"lincs[path={tmp_path / 'lincs'},high_apc=none,n_source=8,n_target=3]"]
    exp = build_experiment({"datasets": ",".join(specs), "corruptions": "features[max=5]", "valuers": "random",
                            "mode": "unsupervised"})
    jobs, cache = plan(exp, registry, "cpu")
    assert len(jobs) == 5
    for job in jobs:
        cell = cache.cell(job)
        assert cell.n_classes is None and cell.metric == "r2" and not cell.learner.supervised
        assert np.array_equal(cell.source.x, cell.source.y) and cell.truth.kind == "noise"
        assert cell.learner.in_features == int(np.prod(cell.source.x.shape[1:]))
