"""Helpers dataset plugins share: content hashes, sampling splits, min-max scaling, where
files are looked for, checksums recorded in the cache, checked downloads, cached arrays.

A dataset that reads published files follows one pattern: ``locate`` its files (the
user's ``path=`` or :func:`dataset_dir`'s cache folder, :func:`download` when missing,
:func:`missing` for the error), ``fingerprint()`` = :func:`files_fingerprint` of them,
and read them with :func:`load_once` (once per process and content); arrays derived at
great cost are kept in the cache by content hash with :func:`cached_array`. Every file
valbench writes goes through :func:`atomic_path`, so a crash never leaves half a file.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from valbench.errors import DataError
from valbench.seeding import rng

T = TypeVar("T")


def sha256_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()


def cache_dir() -> Path:
    """valbench's data cache: $VALBENCH_CACHE, else $XDG_CACHE_HOME/valbench, else ~/.cache/valbench."""
    if os.environ.get("VALBENCH_CACHE"):
        return Path(os.environ["VALBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "valbench"


def take(perm: np.ndarray, sizes: list[int | None], what: list[str], dataset: str) -> list[np.ndarray]:
    """Consecutive blocks of a permutation; a size of None takes all that is left."""
    out, start = [], 0
    for size, name in zip(sizes, what):
        left = len(perm) - start
        n = left if size is None else size
        if n > left:
            raise DataError(f"dataset '{dataset}': asked for {n} {name} samples but only {left} are left in the pool")
        out.append(perm[start:start + n])
        start += n
    return out


def check_sizes(**sizes: int | None) -> None:
    """For a dataset's validate(): every given split size is >= 1 (None: its default, or all the rest)."""
    for key, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"{key} must be >= 1 (or omitted), got {value}")


def split_pools(seed: int, dataset: str, source_pool: int | np.ndarray, target_pool: int | np.ndarray,
                n_source: int | None, n_target: int | None, n_test: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of source (from the first pool), target and test (from the second pool), by
    seeded permutations; a pool is a size or an array of indices; None takes all the rest."""
    g = rng(seed, "split", dataset)
    (src,) = take(g.permutation(source_pool), [n_source], ["source"], dataset)
    tgt, tst = take(g.permutation(target_pool), [n_target, n_test], ["target", "test"], dataset)
    return src, tgt, tst


def minmax_together(*arrays: np.ndarray) -> list[np.ndarray]:
    """Scale every array with one min-max scaler fitted on all of them together."""
    stacked = np.concatenate([a for a in arrays if len(a)], axis=0)
    with warnings.catch_warnings():  # NaN stays where it was; the harness reports it
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return [((a - lo) / span).astype(np.float32) for a in arrays]


def binary_tabular_splits(seed: int, dataset: str, xd: np.ndarray, yd: np.ndarray, xt: np.ndarray,
                          yt: np.ndarray, n_source: int | None, n_target: int | None, n_test: int | None):
    """The paper's ADULT / BLOG protocol: source from the first pool, target and test from
    the second, one min-max scaler over the three, the class-balanced binary MLP learner."""
    from valbench.types import Learner
    from valbench.types import Split, Splits

    src, tgt, tst = split_pools(seed, dataset, len(xd), len(xt), n_source, n_target, n_test)
    xs, xg, xe = minmax_together(xd[src], xt[tgt], xt[tst])
    return Splits(Split(xs, yd[src]), Split(xg, yt[tgt]), Split(xe, yt[tst]), n_classes=2,
                  learner=Learner("mlp", xd.shape[1], 2, class_balance=True))


def image_classification_splits(pix: Callable[[np.ndarray], np.ndarray], xd: np.ndarray, yd: np.ndarray,
                                xt: np.ndarray, yt: np.ndarray, pools: tuple[np.ndarray, ...], width: int,
                                encoder: object = None):
    """10-class image splits (CIFAR-10, Fashion-MNIST): source rows ``pools[0]`` of the first
    pool, target and test rows ``pools[1:]`` of the second, each through ``pix`` (raw
    bytes -> float pixels); the image retraining recipe of docs/protocol.md §3 (MLP of
    input ``width``, Adam 1e-3, batch 256, 100 epochs)."""
    from valbench.types import Learner
    from valbench.types import Split, Splits

    src, tgt, tst = pools
    learner = Learner("mlp", width, 10, lr=1e-3, batch_size=256, epochs=100)
    return Splits(Split(pix(xd[src]), yd[src]), Split(pix(xt[tgt]), yt[tgt]), Split(pix(xt[tst]), yt[tst]),
                  n_classes=10, learner=learner, encoder=encoder)


# --- Files: where a dataset's files are looked for, their checksums, downloads ---------------

OFFLINE_ENV = "VALBENCH_OFFLINE"
_HASHES: dict[tuple[str, int, int], str] = {}


def dataset_dir(dataset: str, path: str | None) -> Path:
    """The folder a dataset's files are read from: the user's ``path``, else the cache's subfolder."""
    return Path(path).expanduser() if path else cache_dir() / dataset


def missing(dataset: str, fname: str, where: list[Path] | Path, how: str) -> DataError:
    """The one error for a file that is not there: which file, where it was looked for, how to get it."""
    places = where if isinstance(where, list) else [where]
    return DataError(f"{dataset}: {fname} not found in {', '.join(map(str, places))}; {how}")


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; when the block ends without error it
    replaces ``target`` in one step, otherwise it is removed. ``suffix``: an extension the
    writer insists on (np.save adds ".npy", np.savez ".npz")."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_once(read: Callable[..., T], files: Sequence[str | Path], *args: Any) -> T:
    """``read(files, *args)`` (files as a tuple of Paths), computed once per process for
    the same function, arguments and file CONTENT: a changed file is read again."""
    paths = tuple(Path(f) for f in files)
    return _load_once(read, paths, files_fingerprint(*paths), args)


@functools.lru_cache(maxsize=8)
def _load_once(read: Callable[..., Any], paths: tuple[Path, ...], fingerprint: str, args: tuple) -> Any:
    return read(paths, *args)


def _hash_store() -> Path:
    return cache_dir() / "checksums.json"


def _read_store() -> dict:
    try:
        return json.loads(_hash_store().read_text())
    except (OSError, ValueError):
        return {}


def _write_store(data: dict) -> None:
    """Atomically replace the checksum record (a lost concurrent update only costs a re-hash)."""
    try:
        with atomic_path(_hash_store()) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError:  # a read-only cache still works; hashes are then recomputed per process
        pass


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, computed once per (path, size, mtime) and recorded in the
    cache's ``checksums.json``, so that hashing a multi-GB file is paid once, not per run."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    store = _read_store()
    rec = store.get("files", {}).get(key[0])
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        _HASHES[key] = rec["sha256"]
        return rec["sha256"]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASHES[key] = digest
    store = _read_store()
    store.setdefault("files", {})[key[0]] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    _write_store(store)
    return digest


def files_fingerprint(*paths: str | Path) -> str:
    """One content hash for several files (order matters; names do not)."""
    return sha256_bytes(*(file_sha256(p).encode() for p in paths))


def download(url: str, dest: Path, *, dataset: str, md5: str | None = None, sha256: str | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest`` (atomically) and verify its checksum.

    With a known ``md5``/``sha256`` a mismatch is an error and nothing is kept. Without
    one, the first download's SHA-256 is recorded in ``checksums.json`` under the URL and
    every later download must match it (trust on first use). Raises DataError when
    ``VALBENCH_OFFLINE`` is set or the network fails, saying where to put the file instead.
    """
    import urllib.error
    import urllib.request

    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        raise DataError(f"{dataset}: {dest.name} is not in {dest.parent} and {OFFLINE_ENV} forbids downloading it "
                        f"from {url}; download it yourself and put it there (or pass path=)")
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    with atomic_path(dest) as tmp:  # kept only if the download completes and its checksum matches
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
                    h_md5.update(block)
                    h_sha.update(block)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"{dataset}: {dest.name} is not in {dest.parent} and downloading it from {url} failed "
                            f"({exc}); download it yourself and put it there (or pass path=)") from None
        got_md5, got_sha = h_md5.hexdigest(), h_sha.hexdigest()
        store = _read_store()
        recorded = store.get("downloads", {}).get(url)
        expected = [(md5, got_md5, "MD5"), (sha256, got_sha, "SHA-256")]
        if recorded and not (md5 or sha256):
            expected.append((recorded, got_sha, "recorded SHA-256"))
        for want, got, what in expected:
            if want and want.lower() != got:
                raise DataError(f"{dataset}: the file downloaded from {url} has {what} {got}, expected {want}; "
                                "the download is corrupt or the file changed upstream")
    store.setdefault("downloads", {})[url] = got_sha
    _write_store(store)
    return dest


# --- Arrays computed once and kept in the cache ---------------------------------------------

def array_sha256(a: np.ndarray) -> str:
    """Content hash of an array: dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    return sha256_bytes(str(a.dtype).encode(), repr(a.shape).encode(), a.tobytes())


def cached_array(key: str, compute: Callable[[], np.ndarray], subdir: str = "arrays") -> np.ndarray:
    """``compute()``'s result, stored as ``<cache>/<subdir>/<key>.npy`` and read back on later
    calls (``key`` must name everything the result depends on, e.g. content hashes)."""
    target = cache_dir() / subdir / f"{key}.npy"
    if target.is_file():
        try:
            return np.load(target, allow_pickle=False)
        except (OSError, ValueError):  # a partial or corrupt cache entry: recompute it
            target.unlink(missing_ok=True)
    out = compute()
    try:
        with atomic_path(target, ".npy") as tmp:
            np.save(tmp, out, allow_pickle=False)
    except OSError:  # a read-only cache still works: the array is recomputed next time
        pass
    return out


def weighted_sample(g: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices drawn one after another with probability proportional to
    ``weights`` among those not yet drawn (Efraimidis-Spirakis keys), in draw order."""
    w = np.asarray(weights, dtype=np.float64)
    if k > len(w):
        raise DataError(f"asked for {k} weighted samples from a pool of {len(w)}")
    keys = g.exponential(size=len(w)) / w  # the k smallest keys are a successive weighted draw
    pick = np.argpartition(keys, k - 1)[:k] if 0 < k < len(w) else np.arange(len(w))[:k]
    return pick[np.argsort(keys[pick], kind="stable")]
