"""Dataset ``lincs``: LINCS L1000 level-5 compound signatures (CLUE LINCS 2020 release) with APC.

Reads four files of the release from ``path`` (or the cache directory): the level-5 and
level-4 GCTX matrices, ``siginfo_beta.txt`` and ``geneinfo_beta.txt``. Preprocessing per
docs/protocol.md §2: compound signatures (``pert_type == trt_cp``), the 978 landmark
genes (``feature_space == landmark``), z-scored per gene over all compound signatures.
The APC of a level-5 signature is the mean pairwise Pearson correlation (landmark genes)
of the level-4 replicate profiles listed in its ``distil_ids`` (at most ``max_replicates``,
the first ones listed); signatures with fewer than two replicates have no APC and are
left out. The source samples' APC values are handed to valuers as the annotation "apc"
(the ``apc`` valuer, Figure 5's baseline).

``high_apc``: "all" draws every set from the signatures with APC > ``apc_threshold``
(exp8, docs/protocol.md), "target" only target and test (exp10), "none" none (exp9). ``balance=true``
draws target and test without replacement with probability proportional to
1 / count(pert_id) in their pool (exp9/10); the source is drawn uniformly from the rest.
``n_test`` omitted = all the rest of the target/test pool. No labels: value it with
``--mode unsupervised``.

The GCTX files are never loaded whole: one streaming pass over the compound rows gives
the per-gene mean and std, one over the needed level-4 rows gives APC (both cached under
the data's content hash), and each seed reads only its sampled rows.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np

from valbench import hookimpl
from valbench.training.defaults import default_learner
from valbench.datautil import (cached_array, check_sizes, dataset_dir, files_fingerprint, load_once, missing,
                               sha256_bytes, weighted_sample)
from valbench.errors import DataError
from valbench.seeding import rng
from valbench.types import Split, Splits

if TYPE_CHECKING:
    import pandas as pd

LEVEL5 = "level5_beta_trt_cp_n720216x12328.gctx"
LEVEL4 = "level4_beta_trt_cp_n1805898x12328.gctx"
SIGINFO, GENEINFO = "siginfo_beta.txt", "geneinfo_beta.txt"


# --- Reading GCTX files --------------------------------------------------------------
# Reading GCTX files (CMap's HDF5 matrices) with h5py, a block of rows at a time.
#
# Layout: ``/0/DATA/0/matrix`` holds the data, ``/0/META/ROW/id`` the row ids (genes) and
# ``/0/META/COL/id`` the column ids (samples). In the GCT view rows are genes and columns
# are samples, but the HDF5 matrix is stored TRANSPOSED: its shape is (n_columns, n_rows),
# one HDF5 row per sample. So ``matrix[i, j]`` is gene ``ROW/id[j]`` in sample ``COL/id[i]``.
# Nothing here loads the whole matrix: callers name the samples and genes they need.

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


# --- Preparing the signatures ----------------------------------------------------------------

BASE_URL = "https://s3.amazonaws.com/macchiato.clue.io/builds/LINCS2020/"
SIG_COLUMNS = ["sig_id", "pert_id", "pert_type", "distil_ids"]
GENE_COLUMNS = ["gene_id", "feature_space"]
APC_GROUP = 50_000  # signatures whose replicate sums are held at once (50k x 978 float64 = 0.4 GB)


def url_for(fname: str) -> str:
    sub = "level5/" if fname.startswith("level5") else "level4/" if fname.startswith("level4") else ""
    return BASE_URL + sub + fname


def _table(path: Path, columns: list[str]) -> pd.DataFrame:
    import pandas as pd  # here: loading the plugins stays fast (pandas ~0.4 s)

    try:
        return pd.read_csv(path, sep="\t", dtype=str, usecols=columns, keep_default_na=False)
    except ValueError as exc:  # usecols names a column the file lacks
        raise DataError(f"lincs: {path} lacks a needed column ({exc}); needed: {', '.join(columns)}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"lincs: {path} is not a tab-separated CLUE table: {exc}") from None


@dataclass(frozen=True)
class Prepared:
    """The compound signatures usable for valuation (APC defined), in level-5 row order."""

    rows: np.ndarray  # level-5 HDF5 row of each signature
    pert_ids: np.ndarray
    apc: np.ndarray  # float64, finite
    genes: np.ndarray  # level-5 HDF5 columns of the landmark genes (ascending)
    mean: np.ndarray  # per landmark gene, over all compound signatures
    std: np.ndarray


def landmark_columns(gctx: GCTX, landmarks: set[str], which: str) -> np.ndarray:
    cols = np.flatnonzero(np.isin(gctx.row_ids, list(landmarks)))
    if len(cols) == 0:
        raise DataError(f"lincs: {which} {gctx.path.name} has none of the {len(landmarks)} landmark genes of "
                        f"{GENEINFO} among its {len(gctx.row_ids)} row ids")
    return cols


def replicate_apc(level4: GCTX, genes: np.ndarray, replicates: list[np.ndarray]) -> np.ndarray:
    """APC per signature from its level-4 rows: with u_i the centred, unit-norm profiles,
    the mean of corr(i, j) over pairs i < j is (||sum u_i||^2 - n) / (n (n - 1)).
    NaN where fewer than two non-constant replicate profiles exist."""
    apc = np.full(len(replicates), np.nan)
    for g0 in range(0, len(replicates), APC_GROUP):
        group = replicates[g0:g0 + APC_GROUP]
        sig = np.concatenate([np.full(len(r), i, dtype=np.int64) for i, r in enumerate(group)] + [np.empty(0, np.int64)])
        rows = np.concatenate([*group, np.empty(0, np.int64)]).astype(np.int64)
        by_row = np.argsort(rows, kind="stable")
        rows, sig = rows[by_row], sig[by_row]
        acc = np.zeros((len(group), len(genes)))
        count = np.zeros(len(group))
        for idx, values in level4.blocks(rows, genes):
            centred = values.astype(np.float64) - values.mean(axis=1, keepdims=True)
            norm = np.linalg.norm(centred, axis=1, keepdims=True)
            ok = norm[:, 0] > 0
            unit = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
            lo, hi = np.searchsorted(rows, idx[0], "left"), np.searchsorted(rows, idx[-1], "right")
            pos = np.searchsorted(idx, rows[lo:hi])  # each pair's row within this block
            keep = ok[pos]
            np.add.at(acc, sig[lo:hi][keep], unit[pos[keep]])
            np.add.at(count, sig[lo:hi][keep], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = ((acc ** 2).sum(axis=1) - count) / (count * (count - 1))
        apc[g0:g0 + len(group)] = np.where(count >= 2, value, np.nan)
    return apc


def gene_stats(level5: GCTX, rows: np.ndarray, genes: np.ndarray) -> np.ndarray:
    """(2, n_genes): mean and population std per gene over ``rows`` (one streaming pass)."""
    total, square, n = np.zeros(len(genes)), np.zeros(len(genes)), 0
    for _, values in level5.blocks(rows, genes):
        v = values.astype(np.float64)
        total += v.sum(axis=0)
        square += (v ** 2).sum(axis=0)
        n += len(v)
    mean = total / n
    std = np.sqrt(np.maximum(square / n - mean ** 2, 0.0))
    return np.stack([mean, np.where(std > 0, std, 1.0)])


def prepare(files: tuple[Path, Path, Path, Path], max_replicates: int) -> Prepared:
    import pandas as pd  # here: loading the plugins stays fast (pandas ~0.4 s)

    level5_path, level4_path, siginfo_path, geneinfo_path = files
    fingerprint = files_fingerprint(*files)
    genes_df = _table(geneinfo_path, GENE_COLUMNS)
    landmarks = set(genes_df.loc[genes_df["feature_space"] == "landmark", "gene_id"])
    if not landmarks:
        raise DataError(f"lincs: {geneinfo_path} marks no gene as feature_space == landmark")
    sigs = _table(siginfo_path, SIG_COLUMNS)
    sigs = sigs[sigs["pert_type"] == "trt_cp"]
    if sigs.empty:
        raise DataError(f"lincs: {siginfo_path} lists no compound signatures (pert_type == trt_cp)")
    with GCTX(level5_path) as level5, GCTX(level4_path) as level4:
        genes5 = landmark_columns(level5, landmarks, "level-5 file")
        genes4 = landmark_columns(level4, landmarks, "level-4 file")
        if set(level5.row_ids[genes5]) != set(level4.row_ids[genes4]):
            raise DataError("lincs: the level-5 and level-4 files hold different landmark genes")
        col5 = pd.Series(np.arange(len(level5.col_ids)), index=level5.col_ids)
        sigs = sigs[sigs["sig_id"].isin(col5.index)]
        if sigs.empty:
            raise DataError(f"lincs: none of the trt_cp signatures of {SIGINFO} is a column of {level5_path.name}")
        rows5 = col5.loc[sigs["sig_id"]].to_numpy(np.int64)
        col4 = dict(zip(level4.col_ids, range(len(level4.col_ids))))
        replicates = []
        for ids in sigs["distil_ids"]:
            found = [col4[d] for d in ids.split("|") if d in col4]
            replicates.append(np.array(found[:max_replicates], dtype=np.int64))
        key = sha256_bytes(fingerprint.encode(), str(max_replicates).encode())[:32]  # APC depends on it
        apc = cached_array(f"apc-{key}", lambda: replicate_apc(level4, genes4, replicates), "lincs")
        stats = cached_array(f"zstats-{fingerprint[:32]}", lambda: gene_stats(level5, np.sort(rows5), genes5),
                             "lincs")  # not keyed by max_replicates: the gene statistics do not depend on it
    ok = np.isfinite(apc)
    if not ok.any():
        raise DataError(f"lincs: no compound signature has two or more level-4 replicates in {level4_path.name}")
    return Prepared(rows5[ok], sigs["pert_id"].to_numpy()[ok], apc[ok], genes5, stats[0], stats[1])


class Lincs:
    """LINCS L1000 level-5 compound signatures, 978 landmark genes, z-scored; APC per signature."""

    name = "lincs"
    version = "1"

    def __init__(self, *, path: str | None = None, level5: str = LEVEL5, level4: str = LEVEL4,
                 high_apc: Literal["all", "target", "none"] = "all", apc_threshold: float = 0.5,
                 balance: bool = False, n_source: int = 20000, n_target: int = 2000, n_test: int | None = None,
                 max_replicates: int = 250, hidden: int = 250, latent: int = 32):
        self.path, self.level5, self.level4 = path, level5, level4
        self.high_apc, self.apc_threshold, self.balance = high_apc, apc_threshold, balance
        self.n_source, self.n_target, self.n_test, self.max_replicates = n_source, n_target, n_test, max_replicates
        self.hidden, self.latent = hidden, latent  # the autoencoder 978-hidden-latent (exp9/10: 256, 64)

    def validate(self) -> None:
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)
        if not -1.0 <= self.apc_threshold < 1.0:
            raise ValueError(f"apc_threshold must be in [-1, 1), got {self.apc_threshold}")
        if self.max_replicates < 2:
            raise ValueError(f"max_replicates must be >= 2, got {self.max_replicates}")
        if self.hidden < 1 or self.latent < 1:
            raise ValueError(f"hidden and latent must be >= 1, got {self.hidden} and {self.latent}")

    def files(self) -> tuple[Path, Path, Path, Path]:
        folder = dataset_dir("lincs", self.path)
        out = []
        for fname in (self.level5, self.level4, SIGINFO, GENEINFO):
            if not (folder / fname).is_file():
                raise missing("lincs", fname, folder, f"download {url_for(fname)} "
                              "(CLUE LINCS 2020 release, https://clue.io/data/CMap2020#LINCS2020)")
            out.append(folder / fname)
        return tuple(out)  # type: ignore[return-value]

    def fingerprint(self) -> str:
        return files_fingerprint(*self.files())

    def prepared(self) -> Prepared:
        return load_once(prepare, self.files(), self.max_replicates)

    def _draw(self, g: np.random.Generator, pool: np.ndarray, k: int, pert_ids: np.ndarray, what: str) -> np.ndarray:
        if k > len(pool):
            raise DataError(f"dataset 'lincs': asked for {k} {what} samples but only {len(pool)} are left in the pool")
        if not self.balance:
            return g.permutation(pool)[:k]
        _, inverse, counts = np.unique(pert_ids[pool], return_inverse=True, return_counts=True)
        return pool[weighted_sample(g, 1.0 / counts[inverse], k)]

    def split_positions(self, seed: int, prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (into ``prep``) of the source, target and test signatures for ``seed``."""
        everything = np.arange(len(prep.rows))
        high = everything[prep.apc > self.apc_threshold]
        if self.high_apc != "none" and len(high) == 0:
            raise DataError(f"dataset 'lincs': no signature has APC > {self.apc_threshold}")
        eval_pool = high if self.high_apc != "none" else everything
        source_pool = high if self.high_apc == "all" else everything
        g = rng(seed, "split", self.name)
        target = self._draw(g, eval_pool, self.n_target, prep.pert_ids, "target")
        test = None
        if self.n_test is not None:
            test = self._draw(g, np.setdiff1d(eval_pool, target), self.n_test, prep.pert_ids, "test")
        used = np.concatenate([target, test if test is not None else target])
        rest = np.setdiff1d(source_pool, used)
        if self.n_source > len(rest):
            raise DataError(f"dataset 'lincs': asked for {self.n_source} source samples but only {len(rest)} are left in the pool")
        source = g.permutation(rest)[:self.n_source]
        if test is None:
            test = g.permutation(np.setdiff1d(eval_pool, np.concatenate([target, source])))
        return source, target, test

    def load(self, seed: int) -> Splits:
        prep = self.prepared()
        source, target, test = self.split_positions(seed, prep)
        with GCTX(self.files()[0]) as level5:
            def rows(pos: np.ndarray) -> Split:
                x = (level5.read(prep.rows[pos], prep.genes) - prep.mean) / prep.std
                x = x.astype(np.float32)
                return Split(x, x)
            sets = rows(source), rows(target), rows(test)
        # the default unsupervised learner with this dataset's widths (the paper: 978-250-32 in
        # exp8, 978-256-64 in exp9/10), its recipe as the paper's LINCS filtering row
        learner = default_learner(len(prep.genes), None).with_recipe(hidden=(self.hidden,), latent=self.latent)
        return Splits(*sets, n_classes=None, learner=learner, source_annotations={"apc": prep.apc[source].copy()})


@hookimpl
def register_datasets(register):
    register(Lincs)
