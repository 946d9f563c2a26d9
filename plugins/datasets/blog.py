"""Dataset ``blog``: UCI BlogFeedback (comments a blog post gets in the next 24 hours).

Reads the published archive ``BlogFeedback.zip`` or its extracted CSV files
(``blogData_train.csv`` and the 60 ``blogData_test-<date>.csv`` files: 281 numeric
columns, no header, the last = comments in the next 24 hours) from ``path`` or the
cache directory, downloading the archive into the cache when it is missing and a
network is there. Preprocessing per docs/protocol.md §2: label = comments > 0;
the 280 other columns are the features; source pool = the training file, target and
test pool = the test files (target = first n_target of a seeded permutation, test =
the rest); rows with missing values are dropped; one min-max scaler over all three sets.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from valbench import hookimpl
from valbench.datautil import (binary_tabular_splits, check_sizes, dataset_dir, download, files_fingerprint,
                               load_once, missing)
from valbench.errors import DataError
from valbench.types import Splits

ARCHIVES = ("BlogFeedback.zip", "blogfeedback.zip")
TRAIN = "blogData_train.csv"
TEST_GLOB = "blogData_test-*.csv"
N_COLUMNS = 281
N_FEATURES = 280
URLS = ("https://archive.ics.uci.edu/static/public/304/blogfeedback.zip",
        "https://archive.ics.uci.edu/ml/machine-learning-databases/00304/BlogFeedback.zip")
HOW = ("download BlogFeedback.zip from https://archive.ics.uci.edu/dataset/304/blogfeedback "
       "(the archive or its extracted CSV files)")


def locate(path: str | None) -> list[Path]:
    """The files to read: [archive] or [train CSV, test CSVs...]; downloads into the cache
    when ``path`` is not given and nothing is there yet."""
    folder = dataset_dir("blog", path)
    train = folder / TRAIN
    if train.is_file():
        tests = sorted(folder.glob(TEST_GLOB))
        if not tests:
            raise missing("blog", TEST_GLOB, folder, HOW)
        return [train, *tests]
    for name in ARCHIVES:
        if (folder / name).is_file():
            return [folder / name]
    if path:
        raise missing("blog", f"{ARCHIVES[0]} (or {TRAIN})", folder, HOW)
    errors = []
    for url in URLS:
        try:
            return [download(url, folder / ARCHIVES[0], dataset="blog")]
        except DataError as exc:
            errors.append(str(exc))
    raise DataError(f"{errors[0]}; or {HOW}")


def _parse(raw: bytes, name: str) -> np.ndarray:
    import pandas as pd  # here: loading the plugins stays fast (pandas ~0.4 s)

    try:
        df = pd.read_csv(io.BytesIO(raw), header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"blog: {name} is not a BlogFeedback CSV file: {exc}") from None
    if df.shape[1] != N_COLUMNS:
        raise DataError(f"blog: {name} has {df.shape[1]} columns, expected {N_COLUMNS} (280 features + comment count)")
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if text:
        raise DataError(f"blog: column {text[0] + 1} of {name} is not numeric")
    return df.to_numpy(np.float64)


def _read_archive(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(archive) as z:
            names = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
            if TRAIN not in names:
                raise DataError(f"blog: {archive} has no {TRAIN}; it is not the BlogFeedback archive")
            tests = sorted(n for n in names if n.startswith("blogData_test-") and n.endswith(".csv"))
            if not tests:
                raise DataError(f"blog: {archive} has no {TEST_GLOB} files; it is not the BlogFeedback archive")
            train = _parse(z.read(names[TRAIN]), TRAIN)
            test = np.concatenate([_parse(z.read(names[n]), n) for n in tests])
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"blog: {archive} is truncated or corrupt ({exc}); delete it and download it again") from None
    return train, test


def _load(files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unscaled features and 0/1 labels of the training file and of the test files, NaN rows dropped."""
    if len(files) == 1:
        train, test = _read_archive(files[0])
    else:
        train = _parse(files[0].read_bytes(), files[0].name)
        test = np.concatenate([_parse(f.read_bytes(), f.name) for f in files[1:]])
    out = []
    for table in (train, test):
        table = table[~np.isnan(table).any(axis=1)]
        out += [table[:, :N_FEATURES], (table[:, N_FEATURES] > 0).astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


class Blog:
    """UCI BlogFeedback, 280 features, label = any comment in the next 24 hours; 1000 / 400 / rest."""

    name = "blog"
    version = "1"

    def __init__(self, *, n_source: int = 1000, n_target: int = 400, n_test: int | None = None,
                 path: str | None = None):
        self.n_source, self.n_target, self.n_test, self.path = n_source, n_target, n_test, path

    def validate(self) -> None:
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)

    def fingerprint(self) -> str:
        return files_fingerprint(*locate(self.path))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return load_once(_load, locate(self.path))

    def load(self, seed: int) -> Splits:
        return binary_tabular_splits(seed, self.name, *self.arrays(), self.n_source, self.n_target, self.n_test)


@hookimpl
def register_datasets(register):
    register(Blog)
