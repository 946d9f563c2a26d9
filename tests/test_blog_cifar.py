"""blog and cifar10 on small files in the published layout; the encoder mechanism."""
import hashlib
import io
import sys
import tarfile
import types
import zipfile

import numpy as np
import pytest
import torch

from valbench.datautil import download
from valbench.errors import DataError
from valbench_plugins.datasets import blog as blogmod
from valbench_plugins.datasets import cifar10 as cifarmod
from valbench_plugins.datasets.blog import Blog
from valbench_plugins.datasets.cifar10 import Cifar10

TEST_FILES = ["blogData_test-2012.02.01.00_00.csv", "blogData_test-2012.03.25.00_00.csv",
              "blogData_test-2012.03.26.01_00.csv"]


def blog_rows(g, n, missing_row=None):
    """Rows like the UCI files: 280 numeric features (floats and 0/1 flags), then the comment count."""
    lines = []
    for i in range(n):
        feats = [f"{v:.6f}" for v in g.gamma(1.0, 20.0, 262)] + [str(int(v)) for v in g.integers(0, 2, 14)] + \
                [f"{v:.1f}" for v in g.uniform(0, 5, 4)]
        comments = int(g.integers(0, 4)) * int(g.integers(0, 2))
        row = feats + [str(comments)]
        if i == missing_row:
            row[17] = ""
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


@pytest.fixture
def blog_dir(tmp_path):
    g = np.random.default_rng(0)
    d = tmp_path / "blog"
    d.mkdir()
    (d / "blogData_train.csv").write_text(blog_rows(g, 120, missing_row=5))
    for name in TEST_FILES:
        (d / name).write_text(blog_rows(g, 40))
    return d


def zip_blog(src, dest):
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.glob("*.csv")):
            z.write(f, f.name)
    return dest


def test_blog_extracted_files_follow_protocol(blog_dir):
    s = Blog(path=str(blog_dir), n_source=50, n_target=30).load(0)
    assert s.source.x.shape == (50, 280) and s.target.x.shape == (30, 280) and len(s.test) == 120 - 30
    assert s.n_classes == 2 and s.learner.class_balance and s.learner.in_features == 280
    allx = np.concatenate([s.source.x, s.target.x, s.test.x])
    assert allx.min() == 0.0 and allx.max() == 1.0
    xd, yd, xt, yt = Blog(path=str(blog_dir)).arrays()
    assert len(xd) == 119  # the row with a missing value is dropped
    raw = np.loadtxt(blog_dir / TEST_FILES[0], delimiter=",")
    assert np.array_equal(yt[:40], (raw[:, 280] > 0).astype(np.int64)) and np.allclose(xt[:40], raw[:, :280])


def test_blog_archive_reads_the_same_data(blog_dir, tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    zip_blog(blog_dir, arch / "BlogFeedback.zip")
    a, b = Blog(path=str(blog_dir)).arrays(), Blog(path=str(arch)).arrays()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert Blog(path=str(arch)).fingerprint() != Blog(path=str(blog_dir)).fingerprint()


def test_blog_truncated_archive(blog_dir, tmp_path):
    raw = zip_blog(blog_dir, tmp_path / "z.zip").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "BlogFeedback.zip").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="BlogFeedback.zip is truncated or corrupt"):
        Blog(path=str(bad)).load(0)


def test_blog_wrong_layout(tmp_path):
    (tmp_path / "blogData_train.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / TEST_FILES[0]).write_text("1,2,3\n")
    with pytest.raises(DataError, match="has 3 columns, expected 281"):
        Blog(path=str(tmp_path)).load(0)


def test_blog_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match=rf"blog: BlogFeedback.zip \(or blogData_train.csv\) not found in {tmp_path}; "
                                        r"download BlogFeedback.zip from https://archive.ics.uci.edu"):
        Blog(path=str(tmp_path)).fingerprint()


def test_blog_offline_cache_miss_names_url(monkeypatch):
    with pytest.raises(DataError, match="VALBENCH_OFFLINE forbids downloading it from https://archive.ics.uci.edu"):
        Blog().fingerprint()


def test_blog_downloads_into_cache_once(blog_dir, tmp_path, monkeypatch):
    archive = zip_blog(blog_dir, tmp_path / "served.zip")
    monkeypatch.delenv("VALBENCH_OFFLINE")
    monkeypatch.setattr(blogmod, "URLS", (archive.as_uri(),))  # a file:// URL: no network
    fp = Blog().fingerprint()
    monkeypatch.setattr(blogmod, "URLS", ("file:///nonexistent/x.zip",))
    assert Blog().fingerprint() == fp  # second time: from the cache
    assert Blog(n_source=10, n_target=5).load(0).source.x.shape == (10, 280)


def test_download_checks_checksums(tmp_path, monkeypatch):
    monkeypatch.delenv("VALBENCH_OFFLINE")
    src = tmp_path / "f.bin"
    src.write_bytes(b"hello")
    with pytest.raises(DataError, match="has MD5 .* expected 0000"):
        download(src.as_uri(), tmp_path / "out" / "f.bin", dataset="t", md5="0000")
    assert not list((tmp_path / "out").iterdir())  # nothing kept
    ok = download(src.as_uri(), tmp_path / "out" / "f.bin", dataset="t", md5=hashlib.md5(b"hello").hexdigest())
    assert ok.read_bytes() == b"hello"
    src.write_bytes(b"changed")  # trust on first use: a changed upstream file is refused
    with pytest.raises(DataError, match="recorded SHA-256"):
        download(src.as_uri(), tmp_path / "out" / "g.bin", dataset="t")


# --- CIFAR-10 --------------------------------------------------------------------------

def cifar_batch(g, n):
    labels = g.integers(0, 10, n).astype(np.uint8)
    pixels = g.integers(0, 256, (n, 3072)).astype(np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes()


@pytest.fixture
def cifar_archive(tmp_path):
    g = np.random.default_rng(1)
    d = tmp_path / "cifar"
    d.mkdir()
    members = {f"data_batch_{i}.bin": cifar_batch(g, 30) for i in range(1, 6)}
    members["test_batch.bin"] = cifar_batch(g, 40)
    members["batches.meta.txt"] = "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                             "horse", "ship", "truck"]).encode()
    with tarfile.open(d / "cifar-10-binary.tar.gz", "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return d, members


def test_cifar_pixels_are_the_records_chw(cifar_archive):
    d, members = cifar_archive
    s = Cifar10(path=str(d), representation="pixels", n_source=100, n_target=20, n_test=20).load(0)
    assert s.source.x.shape == (100, 3, 32, 32) and s.source.x.dtype == np.float32 and s.encoder is None
    assert 0.0 <= s.source.x.min() and s.source.x.max() <= 1.0 and s.n_classes == 10
    xd, yd, xt, yt = Cifar10(path=str(d)).arrays()
    rec = np.frombuffer(members["data_batch_2.bin"], np.uint8).reshape(30, 3073)
    assert np.array_equal(xd[30:60], rec[:, 1:].reshape(30, 3, 32, 32)) and np.array_equal(yd[30:60], rec[:, 0])
    assert xd[31, 1, 0, 0] == rec[1, 1 + 1024]  # channel-major: green plane starts at byte 1024
    assert len(xt) == 40


def test_cifar_extracted_folder_reads_the_same(cifar_archive, tmp_path):
    d, members = cifar_archive
    ex = tmp_path / "ex" / "cifar-10-batches-bin"
    ex.mkdir(parents=True)
    for name, data in members.items():
        (ex / name).write_bytes(data)
    a, b = Cifar10(path=str(d)).arrays(), Cifar10(path=str(tmp_path / "ex")).arrays()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_cifar_truncated_archive_and_member(cifar_archive, tmp_path):
    d, members = cifar_archive
    raw = (d / "cifar-10-binary.tar.gz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cifar-10-binary.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz is truncated or corrupt"):
        Cifar10(path=str(tmp_path / "cut"), representation="pixels").load(0)
    ex = tmp_path / "short"
    ex.mkdir()
    for name, data in members.items():
        (ex / name).write_bytes(data[:-100] if name == "test_batch.bin" else data)
    with pytest.raises(DataError, match="test_batch.bin has .* not a whole number of 3073-byte records"):
        Cifar10(path=str(ex), representation="pixels").load(0)


def test_cifar_missing_archive(tmp_path):
    with pytest.raises(DataError, match=rf"cifar-10-binary.tar.gz .*not found in {tmp_path}; download "
                                        r"cifar-10-binary.tar.gz .* from https://www.cs.toronto.edu/~kriz/cifar.html"):
        Cifar10(path=str(tmp_path), representation="pixels").fingerprint()


def test_cifar_inception_needs_torchvision(cifar_archive, monkeypatch):
    d, _ = cifar_archive
    monkeypatch.setattr(cifarmod.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"needs torchvision; install it with 'pip install valbench\[vision\]'"):
        Cifar10(path=str(d)).fingerprint()


def test_cifar_inception_needs_weights(cifar_archive, monkeypatch, tmp_path):
    d, _ = cifar_archive
    monkeypatch.setattr(cifarmod.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DataError, match=r"inception_v3_google-\*.pth .*not found in .*torch/hub/checkpoints; "
                                        r"download https://download.pytorch.org/models/inception_v3_google"):
        Cifar10(path=str(d)).fingerprint()


class FakeInception(torch.nn.Module):
    """Stands in for torchvision's inception_v3 (not installable here): records its input."""

    seen = []

    def __init__(self, **kw):
        super().__init__()
        assert kw == {"weights": None, "aux_logits": True, "transform_input": True, "init_weights": False}
        self.proj = torch.nn.Linear(3, 2048)
        self.fc = torch.nn.Linear(2048, 1000)

    def forward(self, x):
        FakeInception.seen.append(tuple(x.shape))
        return self.fc(self.proj(x.mean(dim=(2, 3))))


def test_cifar_inception_encoder_glue(cifar_archive, monkeypatch, tmp_path):
    d, _ = cifar_archive
    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(inception_v3=FakeInception)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    monkeypatch.setattr(cifarmod.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(FakeInception(weights=None, aux_logits=True, transform_input=True, init_weights=False).state_dict(), ckpt)
    s = Cifar10(path=str(d), n_source=10, n_target=20, n_test=5).load(0)
    assert s.encoder is not None and s.learner.in_features == 2048 and s.source.x.shape == (10, 3, 32, 32)
    feats = s.encoder.encode(s.source.x)
    assert feats.shape == (10, 2048) and FakeInception.seen[-1] == (10, 3, 299, 299)
    assert s.encoder.key.startswith("inception-v3-")


# --- the encoder mechanism --------------------------------------------------------------

def test_feature_noise_goes_into_raw_inputs_before_encoding(tmp_path):
    from valbench.api import plan
    from valbench.grid import build_experiment
    from valbench.plugins import build_registry
    from valbench.seeding import rng
    from valbench_plugins.corruptions.features import FeatureNoise
    from tests import encoder_plugin

    registry = build_registry(extra=[encoder_plugin])
    exp = build_experiment({"datasets": "tiny-images", "corruptions": "features[max=3]", "valuers": "random"})
    jobs, cache = plan(exp, registry, "cpu")
    cell = cache.cell(jobs[0])
    raw = encoder_plugin.TinyImages().load(0)
    noisy, truth = FeatureNoise(max=3.0).apply(raw.source.frozen(), None, rng(0, "corruption", "features"))
    enc = encoder_plugin.ChannelMeans()
    assert cell.source.x.shape == (40, 2) and cell.learner.in_features == 2
    assert np.allclose(cell.source.x, enc.encode(noisy.x)) and not np.allclose(cell.source.x, enc.encode(raw.source.x))
    assert np.allclose(cell.target.x, enc.encode(raw.target.x)) and np.array_equal(cell.truth.values, truth.values)
    before = len(encoder_plugin.CALLS)
    from valbench.runner import CellCache
    CellCache().cell(jobs[0])  # a fresh process-level cache: encodings come from the disk cache
    assert len(encoder_plugin.CALLS) == before


def _conforms(cls, params):
    from valbench.testing import PASSED, check_plugin

    report = {o.check: (o.status, o.detail) for o in check_plugin(cls, params, kind="dataset")}
    assert all(status == PASSED for status, _ in report.values()), report


def test_blog_and_cifar_pass_the_conformance_kit_on_files_in_the_published_format(blog_dir, cifar_archive):
    """The kit skips these loaders when their files are missing; on real-format files it runs every check."""
    _conforms(Blog, {"path": str(blog_dir), "n_source": 50, "n_target": 30})
    _conforms(Cifar10, {"path": str(cifar_archive[0]), "representation": "pixels", "n_source": 100,
                        "n_target": 20, "n_test": 20})
