"""Dataset ``adult``: UCI Adult (census income), shipped with valbench (CC BY 4.0).

Preprocessing follows docs/protocol.md §2: the source pool is adult.data; target and
test come from adult.test (target = first n_target of a seeded permutation, test = the
rest); label 1 = income ">50K"; six numeric columns plus one-hot encodings of eight
categorical ones ("?" kept as a category) give 108 features; one min-max scaler is fitted
on source + target + test together.
"""
from __future__ import annotations

import functools
import gzip
import io
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from valbench import hookimpl
from valbench.datautil import binary_tabular_splits, cached_array, sha256_bytes
from valbench.errors import DataError
from valbench.types import Splits

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country"]
ROWS = {"adult.data": 32561, "adult.test": 16281}
N_FEATURES = 108


def _read_raw(path: str | None) -> dict[str, bytes]:
    """The two files' bytes: from a user directory (plain or .gz) or the embedded copy."""
    out = {}
    for fname in ROWS:
        if path is None:
            data = resources.files("valbench_plugins.datasets").joinpath(f"data/{fname}.gz").read_bytes()
            out[fname] = gzip.decompress(data)
            continue
        folder = Path(path).expanduser()
        for candidate in (folder / fname, folder / f"{fname}.gz"):
            if candidate.is_file():
                raw = candidate.read_bytes()
                out[fname] = gzip.decompress(raw) if candidate.suffix == ".gz" else raw
                break
        else:
            raise DataError(
                f"adult: {fname} not found in {folder}; download it from "
                "https://archive.ics.uci.edu/dataset/2/adult or omit path= to use the embedded copy"
            )
    return out


@functools.lru_cache(maxsize=4)
def load_frames(path: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """adult.data and adult.test as data frames, checked for their row counts, and a content hash."""
    import pandas as pd  # here: a run whose encoded arrays are cached never needs pandas (~0.4 s to import)

    raw = _read_raw(path)
    frames = []
    for fname, expected in ROWS.items():
        skip = 1 if fname == "adult.test" else 0  # adult.test starts with a comment line
        try:
            df = pd.read_csv(io.BytesIO(raw[fname]), header=None, names=COLUMNS, skiprows=skip,
                             skipinitialspace=True, dtype={c: str for c in CATEGORICAL + ["income"]})
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"adult: {fname} is not in the UCI Adult format: {exc}") from None
        if len(df) != expected:
            raise DataError(f"adult: {fname} has {len(df)} rows, expected {expected}")
        frames.append(df)
    return frames[0], frames[1], sha256_bytes(*raw.values())


@functools.lru_cache(maxsize=4)
def fingerprint(path: str | None = None) -> str:
    """The content hash of the two files (load_frames' third item), after a row count
    without parsing them (truncated files are refused at planning, as by load_frames)."""
    raw = _read_raw(path)
    for fname, expected in ROWS.items():
        rows = sum(1 for line in raw[fname].splitlines() if line.strip()) - (fname == "adult.test")  # its comment line
        if rows != expected:
            raise DataError(f"adult: {fname} has {rows} rows, expected {expected}")
    return sha256_bytes(*raw.values())


@functools.lru_cache(maxsize=4)
def encoded(path: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-hot features (categories of both files together) and 0/1 labels, unscaled;
    computed once per file content and cached (features and label side by side)."""
    def stacked() -> np.ndarray:
        xd, yd, xt, yt = _encode(path)
        return np.vstack([np.column_stack([xd, yd]), np.column_stack([xt, yt])])  # labels 0/1: exact in float64

    both = cached_array(f"adult-encoded-{fingerprint(path)}", stacked)
    n = ROWS["adult.data"]
    x, y = np.ascontiguousarray(both[:, :-1]), both[:, -1].astype(np.int64)
    return x[:n], y[:n], x[n:], y[n:]


def _encode(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import pandas as pd

    data, test, _ = load_frames(path)
    both = pd.concat([data, test], keys=["data", "test"])
    for c in CATEGORICAL:
        both[c] = pd.Categorical(both[c], categories=sorted(both[c].unique()))
    x = pd.concat([both[NUMERIC].astype(np.float64), pd.get_dummies(both[CATEGORICAL], dtype=np.float64)], axis=1)
    y = (both["income"].str.rstrip(".") == ">50K").astype(np.int64)
    if x.shape[1] != N_FEATURES:
        raise DataError(f"adult: preprocessing gave {x.shape[1]} features, expected {N_FEATURES}")
    return x.loc["data"].to_numpy(), y.loc["data"].to_numpy(), x.loc["test"].to_numpy(), y.loc["test"].to_numpy()


class Adult:
    """UCI Adult, 108 features, binary label; sizes default to the paper's 1000 / 400 / rest."""

    name = "adult"
    version = "1"

    def __init__(self, *, n_source: int = 1000, n_target: int = 400, n_test: int | None = None,
                 path: str | None = None):
        self.n_source, self.n_target, self.n_test, self.path = n_source, n_target, n_test, path

    def validate(self) -> None:
        if not 1 <= self.n_source <= ROWS["adult.data"]:
            raise ValueError(f"n_source must be in 1..{ROWS['adult.data']}, got {self.n_source}")
        if self.n_target < 1 or self.n_target + (self.n_test or 1) > ROWS["adult.test"]:
            raise ValueError(f"n_target + n_test must fit in adult.test's {ROWS['adult.test']} rows")
        if self.n_test is not None and self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 or omitted, got {self.n_test}")

    def fingerprint(self) -> str:
        return fingerprint(self.path)

    def load(self, seed: int) -> Splits:
        return binary_tabular_splits(seed, self.name, *encoded(self.path), self.n_source, self.n_target, self.n_test)


@hookimpl
def register_datasets(register):
    register(Adult)
