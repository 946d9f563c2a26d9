"""Dataset ``cifar10``: CIFAR-10 from the official binary archive, as pixels or Inception-v3 features.

Reads ``cifar-10-binary.tar.gz`` (or its extracted ``cifar-10-batches-bin/`` folder) from
``path`` or the cache directory, downloading it into the cache (MD5-checked) when it is
missing and a network is there. Each ``.bin`` file is a run of 3073-byte records: one
label byte, then 3072 pixel bytes in channel-major (CHW) order. Nothing is unpickled and
nothing is extracted to disk. Source = ``n_source`` of the 50,000 training images, target
and test = disjoint random images of the 10,000 test images (docs/protocol.md §2).

``representation="pixels"``: x is (n, 3, 32, 32) float32 in [0, 1] (the convolutional
autoencoder's input; sizes 20000 / 2000 / 2000). ``representation="inception"``: the
dataset declares an encoder, a pretrained Inception-v3 without its last layer (2048-d;
sizes 5000 / 2000 / 2000), which the harness applies AFTER the corruption, so feature
noise goes into the pixels before encoding, as in the paper. Encoded arrays are cached
by content hash. torchvision is an optional extra (``pip install valbench[vision]``);
the weights are read from the torch cache (``$TORCH_HOME/hub/checkpoints``) or ``weights=``.
"""
from __future__ import annotations

import importlib.util
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from valbench import hookimpl
from valbench.datautil import (check_sizes, dataset_dir, download, file_sha256, files_fingerprint,
                               image_classification_splits, load_once, missing, sha256_bytes, split_pools)
from valbench.errors import DataError
from valbench.types import Splits

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
MEMBERS = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page
HOW = f"download {ARCHIVE} (the binary version) from https://www.cs.toronto.edu/~kriz/cifar.html"
WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
DEFAULT_SOURCE = {"inception": 5000, "pixels": 20000}


def locate(path: str | None) -> list[Path]:
    """[archive] or the six extracted .bin files; downloads into the cache when ``path`` is not given."""
    folder = dataset_dir("cifar10", path)
    if (folder / ARCHIVE).is_file():
        return [folder / ARCHIVE]
    for sub in (folder / FOLDER, folder):
        if all((sub / m).is_file() for m in MEMBERS):
            return [sub / m for m in MEMBERS]
    if path:
        raise missing("cifar10", f"{ARCHIVE} (or {FOLDER}/{MEMBERS[0]}...)", folder, HOW)
    return [download(URL, folder / ARCHIVE, dataset="cifar10", md5=MD5)]


def records(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) uint8 and labels (n,) int64 from one binary batch file."""
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(f"cifar10: {name} has {len(raw)} bytes, not a whole number of {RECORD}-byte records; "
                        "it is truncated or not a CIFAR-10 binary batch")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"cifar10: {name} has label bytes above 9; it is corrupt or not a CIFAR-10 binary batch")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _read_members(files: tuple[Path, ...]) -> dict[str, bytes]:
    if len(files) > 1:
        return {f.name: f.read_bytes() for f in files}
    archive = files[0]
    out = {}
    wanted = {f"{FOLDER}/{m}": m for m in MEMBERS}
    try:
        with tarfile.open(archive, "r|gz") as t:  # one streaming pass, whatever the member order
            for member in t:
                m = wanted.get(member.name)
                if m is None:
                    continue
                fh = t.extractfile(member)
                if fh is None:
                    raise DataError(f"cifar10: {FOLDER}/{m} in {archive} is not a regular file")
                out[m] = fh.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cifar10: {archive} is truncated or corrupt ({exc}); delete it and download it again") from None
    for m in MEMBERS:
        if m not in out:
            raise DataError(f"cifar10: {archive} has no {FOLDER}/{m}; it is not the CIFAR-10 binary archive")
    return out


def _load(files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    raw = _read_members(files)
    train = [records(raw[m], m) for m in MEMBERS[:5]]
    xt, yt = records(raw[MEMBERS[5]], MEMBERS[5])
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xt, yt


def inception_weights(weights: str | None) -> Path:
    """The Inception-v3 checkpoint: ``weights=`` or torchvision's file in the torch hub cache."""
    if importlib.util.find_spec("torchvision") is None:
        raise DataError("cifar10: representation=inception needs torchvision; install it with "
                        "'pip install valbench[vision]' (or use representation=pixels)")
    if weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise missing("cifar10", p.name, p.parent, f"download it from {WEIGHTS_URL}")
        return p
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob("inception_v3_google-*.pth"))
    if not found:
        raise missing("cifar10", "inception_v3_google-*.pth (Inception-v3 ImageNet weights)", folder,
                      f"download {WEIGHTS_URL} into that folder (or pass weights=)")
    return found[-1]


class InceptionEncoder:
    """Pretrained Inception-v3 with its final layer removed: (n, 3, 32, 32) in [0, 1] -> (n, 2048).

    Images are resized to 299 x 299 (bilinear; the centre crop of a square is the whole
    image) and ImageNet-normalised, as docs/protocol.md §2 describes.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: Path, batch_size: int = 64):
        self.weights, self.batch_size = weights, batch_size
        self.key = f"inception-v3-{file_sha256(weights)[:16]}"
        self._model = None

    def model(self, device: str):
        import torch

        if self._model is None:
            try:
                from torchvision.models import inception_v3
            except ImportError as exc:
                raise DataError(f"cifar10: torchvision cannot be imported ({exc}); "
                                "install it with 'pip install valbench[vision]'") from None
            net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
            try:
                net.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
            except Exception as exc:
                raise DataError(f"cifar10: {self.weights} is not a torchvision Inception-v3 checkpoint ({exc})") from None
            net.fc = torch.nn.Identity()
            self._model = net.eval()
        return self._model.to(device)

    def encode(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = np.empty((len(x), 2048), dtype=np.float32)
        if len(x) == 0:
            return out
        net = self.model(device)
        mean = torch.tensor(self.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                t = torch.tensor(x[start:start + self.batch_size], dtype=torch.float32,
                                    device=device)
                t = F.interpolate(t, size=(299, 299), mode="bilinear", align_corners=False)
                out[start:start + len(t)] = net((t - mean) / std).float().cpu().numpy()
        return out


class Cifar10:
    """CIFAR-10, 10 classes; raw pixels or Inception-v3 features (encoded after corruption)."""

    name = "cifar10"
    version = "1"

    def __init__(self, *, representation: Literal["inception", "pixels"] = "inception", n_source: int | None = None,
                 n_target: int = 2000, n_test: int | None = 2000, path: str | None = None,
                 weights: str | None = None):
        self.representation, self.n_source, self.n_target, self.n_test = representation, n_source, n_target, n_test
        self.path, self.weights = path, weights

    def validate(self) -> None:
        if self.representation not in DEFAULT_SOURCE:
            raise ValueError(f"representation must be inception or pixels, got {self.representation!r}")
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)

    def fingerprint(self) -> str:
        parts = [files_fingerprint(*locate(self.path)), self.representation]
        if self.representation == "inception":
            parts.append(file_sha256(inception_weights(self.weights)))
        return sha256_bytes(*(p.encode() for p in parts))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Training images and labels, test images and labels (uint8 CHW, int64)."""
        return load_once(_load, locate(self.path))

    def load(self, seed: int) -> Splits:
        xd, yd, xt, yt = self.arrays()
        n_source = self.n_source or DEFAULT_SOURCE[self.representation]
        pools = split_pools(seed, self.name, len(xd), len(xt), n_source, self.n_target, self.n_test)
        encoder, width = None, 3 * 32 * 32
        if self.representation == "inception":
            encoder, width = InceptionEncoder(inception_weights(self.weights)), 2048
        return image_classification_splits(lambda a: a.astype(np.float32) / 255.0, xd, yd, xt, yt, pools, width,
                                           encoder)


@hookimpl
def register_datasets(register):
    register(Cifar10)
