"""Reading GCTX files (CMap's HDF5 matrices) with h5py, a block of rows at a time.

Layout: ``/0/DATA/0/matrix`` holds the data, ``/0/META/ROW/id`` the row ids (genes) and
``/0/META/COL/id`` the column ids (samples). In the GCT view rows are genes and columns
are samples, but the HDF5 matrix is stored TRANSPOSED: its shape is (n_columns, n_rows),
one HDF5 row per sample. So ``matrix[i, j]`` is gene ``ROW/id[j]`` in sample ``COL/id[i]``.
Nothing here loads the whole matrix: callers name the samples and genes they need.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import numpy as np

from valbench.errors import DataError

MATRIX, ROW_IDS, COL_IDS = "0/DATA/0/matrix", "0/META/ROW/id", "0/META/COL/id"


def decode_ids(values: np.ndarray) -> np.ndarray:
    """Ids as a numpy array of str (GCTX stores bytes, variable-length strings or numbers)."""
    return np.array([(v.decode() if isinstance(v, bytes) else str(v)).strip() for v in values.tolist()], dtype=object)


class GCTX:
    """An open GCTX file: ``row_ids`` (genes), ``col_ids`` (samples), and block reads."""

    def __init__(self, path: Path, dataset: str = "lincs"):
        import h5py

        self.path, self.dataset = Path(path), dataset
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{dataset}: {self.path} is truncated, corrupt or not an HDF5/GCTX file ({exc})") from None
        for node in (MATRIX, ROW_IDS, COL_IDS):
            if node not in self.file:
                self.file.close()
                raise DataError(f"{dataset}: {self.path} is not a GCTX file: it has no /{node}")
        self.matrix = self.file[MATRIX]
        expected = (self.file[COL_IDS].shape[0], self.file[ROW_IDS].shape[0])
        if self.matrix.ndim != 2 or tuple(self.matrix.shape) != expected:
            raise DataError(f"{dataset}: {self.path}: /{MATRIX} has shape {tuple(self.matrix.shape)}, expected "
                            f"(n_columns, n_rows) = {expected} (GCTX stores the matrix transposed)")

    @functools.cached_property
    def row_ids(self) -> np.ndarray:
        """Gene ids, decoded on first use."""
        return self._ids(ROW_IDS)

    @functools.cached_property
    def col_ids(self) -> np.ndarray:
        """Sample ids, decoded on first use (720k of them in the level-5 file)."""
        return self._ids(COL_IDS)

    def _ids(self, node: str) -> np.ndarray:
        try:
            return decode_ids(self.file[node][()])
        except OSError as exc:
            raise DataError(f"{self.dataset}: cannot read the ids of {self.path}; it is corrupt ({exc})") from None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "GCTX":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _slab(self, rows: slice | list[int], lo: int, hi: int) -> np.ndarray:
        try:
            return np.asarray(self.matrix[rows, lo:hi], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.dataset}: cannot read {self.path}; it is truncated or corrupt ({exc})") from None

    def read(self, samples: np.ndarray, genes: np.ndarray, block: int = 2048) -> np.ndarray:
        """Matrix entries (len(samples), len(genes)) float32 for sample (HDF5 row) indices
        ``samples`` (any order) and gene (HDF5 column) indices ``genes``; reads sorted
        blocks of rows, each restricted to the span of the wanted genes."""
        samples, genes = np.asarray(samples, dtype=np.int64), np.asarray(genes, dtype=np.int64)
        out = np.empty((len(samples), len(genes)), dtype=np.float32)
        if len(samples) == 0 or len(genes) == 0:
            return out
        lo, hi = int(genes.min()), int(genes.max()) + 1
        order = np.argsort(samples, kind="stable")
        uniq, inverse = np.unique(samples[order], return_inverse=True)
        values = np.empty((len(uniq), len(genes)), dtype=np.float32)
        for start in range(0, len(uniq), block):
            idx = uniq[start:start + block]
            first, last = int(idx[0]), int(idx[-1]) + 1
            if last - first <= 4 * len(idx):  # dense enough: one contiguous slab, then pick rows
                slab = self._slab(slice(first, last), lo, hi)[idx - first]
            else:
                slab = self._slab(idx.tolist(), lo, hi)
            values[start:start + len(idx)] = slab[:, genes - lo]
        out[order] = values[inverse]
        return out

    def blocks(self, samples: np.ndarray, genes: np.ndarray, block: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(sample indices, values) for sorted ``samples`` in blocks: one streaming pass."""
        samples = np.unique(np.asarray(samples, dtype=np.int64))
        for start in range(0, len(samples), block):
            idx = samples[start:start + block]
            yield idx, self.read(idx, genes, block)
