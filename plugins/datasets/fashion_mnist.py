"""Dataset ``fashion-mnist``: Zalando's Fashion-MNIST (28x28 grey clothing images, 10 classes).

A real image dataset that works offline: read from ``path``, the cache directory, or
where Debian's package ``dataset-fashion-mnist`` installs it
(``/usr/share/datasets/fashion-mnist``), as the published gzipped IDX files
(``train-images-idx3-ubyte.gz`` ... ``t10k-labels-idx1-ubyte.gz``; plain files too).
It stands in for CIFAR-10 here; it is not CIFAR-10.

A fixed (``data_seed``) set of ``n_pretrain`` training images is held out to pretrain a
small CNN; the source pool is the other training images, and target and test are
disjoint random images of the 10,000 test images. ``representation="pixels"``: x is
(n, 1, 28, 28) float32 in [0, 1] (``size=32`` zero-pads to 32x32 for the convolutional
autoencoder). ``representation="cnn"``: the dataset declares the pretrained CNN's
penultimate layer (128-d) as its encoder, applied by the harness after the corruption,
so feature noise goes into the pixels; the CNN's weights are cached by content hash.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from valbench import hookimpl
from valbench.datautil import (atomic_path, cache_dir, check_sizes, dataset_dir, file_sha256, files_fingerprint,
                               image_classification_splits, load_once, missing, sha256_bytes, split_pools)
from valbench.errors import DataError
from valbench.seeding import derive_seed, rng, torch_generator
from valbench.types import Splits

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    from torch import nn

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW = ("install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or download "
       "the four .gz files from https://github.com/zalandoresearch/fashion-mnist")
DEFAULT_SOURCE = {"cnn": 5000, "pixels": 20000}
FEATURES = 128


def locate(path: str | None) -> list[Path]:
    """The four IDX files (gzipped or plain), from ``path``, else the cache, else Debian's folder."""
    folders = [dataset_dir("fashion-mnist", path)] + ([] if path else [DEBIAN_DIR])
    for folder in folders:
        found = []
        for name in FILES:
            hit = next((folder / n for n in (f"{name}.gz", name) if (folder / n).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    first_missing = next(n for n in FILES if not any((folders[0] / m).is_file() for m in (f"{n}.gz", n)))
    raise missing("fashion-mnist", f"{first_missing}.gz", folders, HOW)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: magic (0, 0, type 0x08 = unsigned byte, n_dims), big-endian int32 dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"fashion-mnist: {path} is truncated or corrupt ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"fashion-mnist: {path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim]) if len(raw) >= 4 + 4 * ndim else ()
    size = int(np.prod(dims)) if dims else -1
    if len(dims) != ndim or len(raw) != 4 + 4 * ndim + size:
        raise DataError(f"fashion-mnist: {path} has {len(raw)} bytes, which does not match its header {dims}; "
                        "it is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load(files: tuple[Path, ...]) -> tuple[np.ndarray, ...]:
    xd, yd, xt, yt = (read_idx(f) for f in files)
    for x, y, what in ((xd, yd, "train"), (xt, yt, "t10k")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"fashion-mnist: the {what} images {x.shape} and labels {y.shape} do not match")
        if len(y) and y.max() > 9:
            raise DataError(f"fashion-mnist: the {what} labels exceed 9")
    return xd[:, None], yd.astype(np.int64), xt[:, None], yt.astype(np.int64)


def small_cnn() -> nn.Sequential:
    """conv(1->16) -> pool -> conv(16->32) -> pool -> 128-d ``features`` (Mish) -> 10 logits
    (``head``)."""
    from collections import OrderedDict

    from torch import nn  # here: loading the plugins stays torch-free

    return nn.Sequential(OrderedDict(
        features=nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.Mish(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.Mish(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, FEATURES), nn.Mish(),
        ),
        head=nn.Linear(FEATURES, 10),
    ))


def pretrain(x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> nn.Sequential:
    """Adam 1e-3, batch 128, cross-entropy: the CNN whose features the encoder returns."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "fashion-cnn-init"))
        net = small_cnn()
    xt = torch.as_tensor(x, dtype=torch.float32) / 255.0
    yt = torch.as_tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch_generator(seed, "fashion-cnn-batches")
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 128):
            idx = order[start:start + 128]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


class CNNEncoder:
    """The pretrained CNN's 128-d penultimate layer: (n, 1, 28, 28) in [0, 1] -> (n, 128)."""

    def __init__(self, net: nn.Sequential, weights_sha: str):
        self.net, self.key = net, f"fashion-cnn-{weights_sha[:16]}"

    def encode(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        import torch

        out = np.empty((len(x), FEATURES), dtype=np.float32)
        net = self.net.to(device).eval()
        with torch.no_grad():
            for start in range(0, len(x), 1024):
                t = torch.tensor(x[start:start + 1024], dtype=torch.float32, device=device)
                out[start:start + len(t)] = net.features(t).cpu().numpy()
        return out


class FashionMNIST:
    """Fashion-MNIST, 10 classes; raw pixels or features of a CNN pretrained on held-out training images."""

    name = "fashion-mnist"
    version = "1"
    test_params = {"n_source": 300, "n_target": 100, "n_test": 100, "n_pretrain": 500, "pretrain_epochs": 1}

    def __init__(self, *, representation: Literal["cnn", "pixels"] = "cnn", n_source: int | None = None,
                 n_target: int = 2000, n_test: int | None = 2000, size: Literal[28, 32] = 28,
                 n_pretrain: int = 10000, pretrain_epochs: int = 5, data_seed: int = 0, path: str | None = None):
        self.representation, self.n_source, self.n_target, self.n_test = representation, n_source, n_target, n_test
        self.size, self.n_pretrain, self.pretrain_epochs, self.data_seed = size, n_pretrain, pretrain_epochs, data_seed
        self.path = path

    def validate(self) -> None:
        if self.representation not in DEFAULT_SOURCE:
            raise ValueError(f"representation must be cnn or pixels, got {self.representation!r}")
        if self.size not in (28, 32):
            raise ValueError(f"size must be 28 or 32, got {self.size}")
        if self.representation == "cnn" and self.size != 28:
            raise ValueError("size=32 (zero padding) is for representation=pixels; the CNN reads 28x28 images")
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)
        if self.n_pretrain < 1 or self.pretrain_epochs < 1:
            raise ValueError("n_pretrain and pretrain_epochs must be >= 1")

    def fingerprint(self) -> str:
        return sha256_bytes(files_fingerprint(*locate(self.path)).encode(), self.representation.encode())

    def arrays(self) -> tuple[np.ndarray, ...]:
        return load_once(_load, locate(self.path))

    def pools(self) -> tuple[np.ndarray, np.ndarray]:
        """Training-image indices: (held out for CNN pretraining, source pool); disjoint."""
        n = len(self.arrays()[0])
        if self.n_pretrain >= n:
            raise DataError(f"dataset 'fashion-mnist': n_pretrain={self.n_pretrain} leaves no training image of {n}")
        perm = rng(self.data_seed, "fashion-mnist-pretrain").permutation(n)
        return np.sort(perm[:self.n_pretrain]), np.sort(perm[self.n_pretrain:])

    def encoder(self) -> CNNEncoder:
        """The pretrained CNN, trained once and cached under the data's and recipe's hash."""
        import torch

        xd, yd, _, _ = self.arrays()
        held, _ = self.pools()
        recipe = f"{self.fingerprint()}-{self.n_pretrain}-{self.pretrain_epochs}-{self.data_seed}-v1"
        target = cache_dir() / "fashion-mnist" / f"cnn-{sha256_bytes(recipe.encode())[:24]}.pt"
        net = small_cnn()
        if target.is_file():
            try:
                net.load_state_dict(torch.load(target, map_location="cpu", weights_only=True))
                return CNNEncoder(net.eval(), file_sha256(target))
            except Exception:  # a partial or foreign file: train again
                target.unlink(missing_ok=True)
        net = pretrain(xd[held], yd[held], self.data_seed, self.pretrain_epochs)
        with atomic_path(target) as tmp:
            torch.save(net.state_dict(), tmp)
        return CNNEncoder(net, file_sha256(target))

    def load(self, seed: int) -> Splits:
        xd, yd, xt, yt = self.arrays()
        _, pool = self.pools()
        n_source = self.n_source or DEFAULT_SOURCE[self.representation]
        pools = split_pools(seed, self.name, pool, len(xt), n_source, self.n_target, self.n_test)
        pad = (self.size - 28) // 2

        def pix(a: np.ndarray) -> np.ndarray:
            x = a.astype(np.float32) / 255.0
            return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x

        encoder, width = (self.encoder(), FEATURES) if self.representation == "cnn" else (None, self.size ** 2)
        return image_classification_splits(pix, xd, yd, xt, yt, pools, width, encoder)


@hookimpl
def register_datasets(register):
    register(FashionMNIST)
