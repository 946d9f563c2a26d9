"""Dataset ``pbmc``: real single-cell RNA expression, 700 blood cells x 765 genes, shipped with valbench.

The file is ``10x_pbmc68k_reduced.h5ad`` exactly as scanpy 1.11.5 ships it (BSD-3-Clause;
a subsample of 10x Genomics' "Fresh 68k PBMCs", CC BY 4.0; see
``plugins/datasets/data/PBMC-LICENSE.md``), read with h5py (no anndata/scanpy needed);
``path=`` reads another .h5ad file (the old and the current AnnData layouts both work).
It is an offline expression dataset for unsupervised valuation, standing in for LINCS
here; it is not LINCS.

``layer="raw"`` (default): the log-normalised expression in ``raw`` (0 to ~6.5);
``layer="X"``: the published scaled matrix (per gene zero mean, unit variance, clipped
at 10). raw is the default because the harness' unsupervised learner (the 765-250-32
autoencoder, 300 epochs) generalises on it (test R^2 ~0.2 on 400 cells) but overfits the
scaled matrix (test R^2 ~-0.1), which would leave valuers nothing to measure. Labels (supervised mode): the ``label`` column of ``obs``
(default ``bulk_labels``: 10 sorted cell types). Source / target / test are drawn from
all cells by the seed: 400 / 150 / rest.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from valbench import hookimpl
from valbench.datautil import check_sizes, file_sha256, load_once, missing, take
from valbench.errors import DataError
from valbench.seeding import rng
from valbench.types import Split, Splits

FILE = "10x_pbmc68k_reduced.h5ad"
HOW = "pass the path of an .h5ad file, or omit path= to use the copy shipped with valbench"


def shipped() -> Path:
    return Path(str(resources.files("valbench_plugins.datasets").joinpath(f"data/{FILE}")))


def _text(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()], dtype=object)


def read_matrix(node) -> np.ndarray:
    """A dense (n_obs, n_vars) float32 matrix from a dataset or a CSR/CSC group
    (``data``/``indices``/``indptr`` with a ``shape`` or ``h5sparse_shape`` attribute)."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return np.asarray(node[()], dtype=np.float32)
    fmt = str(node.attrs.get("encoding-type", node.attrs.get("h5sparse_format", "")))
    shape = tuple(int(v) for v in node.attrs.get("shape", node.attrs.get("h5sparse_shape", ())))
    if len(shape) != 2 or not {"data", "indices", "indptr"} <= set(node):
        raise DataError(f"pbmc: {node.name} is neither a dense matrix nor a sparse (data, indices, indptr) group")
    data, indices, indptr = node["data"][()], node["indices"][()], node["indptr"][()]
    out = np.zeros(shape, dtype=np.float32)
    by_row = fmt.startswith("csr")
    for i in range(len(indptr) - 1):
        cols = indices[indptr[i]:indptr[i + 1]]
        if by_row:
            out[i, cols] = data[indptr[i]:indptr[i + 1]]
        else:
            out[cols, i] = data[indptr[i]:indptr[i + 1]]
    return out


def read_categorical(f, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, categories) of an ``obs`` column in the old (compound ``obs`` + ``uns/<c>_categories``)
    or the current (``obs/<c>/codes`` + ``obs/<c>/categories``) layout."""
    import h5py

    obs = f["obs"]
    if isinstance(obs, h5py.Dataset):
        if column not in (obs.dtype.names or ()):
            raise DataError(f"pbmc: obs has no column '{column}'; columns: {', '.join(obs.dtype.names or ())}")
        codes, cats = obs[column][()], f.get(f"uns/{column}_categories")
    else:
        if column not in obs:
            raise DataError(f"pbmc: obs has no column '{column}'; columns: {', '.join(k for k in obs if k != '__categories')}")
        node = obs[column]
        if isinstance(node, h5py.Group):
            codes, cats = node["codes"][()], node["categories"]
        else:
            codes, cats = node[()], obs.get(f"__categories/{column}")
    if cats is None:
        raise DataError(f"pbmc: obs column '{column}' is not categorical")
    return np.asarray(codes, dtype=np.int64), _text(cats[()])


def _load(files: tuple[Path], layer: str, label: str) -> tuple[np.ndarray, np.ndarray, int]:
    import h5py

    (path,) = files

    try:
        with h5py.File(path, "r") as f:
            node = f.get("X") if layer == "X" else (f.get("raw.X") or f.get("raw/X"))
            if node is None:
                raise DataError(f"pbmc: {path} has no X; it is not an .h5ad file" if layer == "X" else
                                f"pbmc: {path} has no raw.X or raw/X; use layer=X")
            x = read_matrix(node)
            codes, cats = read_categorical(f, label)
    except OSError as exc:
        raise DataError(f"pbmc: {path} is truncated, corrupt or not an HDF5 (.h5ad) file ({exc})") from None
    if len(codes) != len(x):
        raise DataError(f"pbmc: {path} has {len(x)} cells but {len(codes)} '{label}' labels")
    known = codes >= 0  # -1 marks a missing category
    return x[known], codes[known], len(cats)


class PBMC:
    """10x PBMC 68k reduced: 700 cells x 765 genes; labels = cell types (bulk_labels, 10 classes)."""

    name = "pbmc"
    version = "1"

    def __init__(self, *, n_source: int = 400, n_target: int = 150, n_test: int | None = None,
                 layer: Literal["X", "raw"] = "raw", label: str = "bulk_labels", path: str | None = None):
        self.n_source, self.n_target, self.n_test = n_source, n_target, n_test
        self.layer, self.label, self.path = layer, label, path

    def validate(self) -> None:
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)
        if self.layer not in ("X", "raw"):
            raise ValueError(f"layer must be X or raw, got {self.layer!r}")

    def file(self) -> Path:
        if not self.path:
            return shipped()
        p = Path(self.path).expanduser()
        if p.is_dir():
            p = p / FILE
        if not p.is_file():
            raise missing("pbmc", p.name, p.parent, HOW)
        return p

    def fingerprint(self) -> str:
        return file_sha256(self.file())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, int]:
        return load_once(_load, [self.file()], self.layer, self.label)

    def load(self, seed: int) -> Splits:
        x, y, k = self.arrays()
        src, tgt, tst = take(rng(seed, "split", self.name).permutation(len(x)),
                             [self.n_source, self.n_target, self.n_test], ["source", "target", "test"], self.name)
        return Splits(Split(x[src], y[src]), Split(x[tgt], y[tgt]), Split(x[tst], y[tst]), n_classes=k)


@hookimpl
def register_datasets(register):
    register(PBMC)
