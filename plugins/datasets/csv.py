"""Dataset ``csv``: the user's own table. Every numeric column but the label is a feature.

``csv[path=data.csv,label=y]`` splits one file by the seed into target (n_target), test
(n_test) and source (n_source; default all the rest);
``target_path=`` (and ``test_path=``) take those sets from their own files instead.
Labels may be any values; they are mapped to class indices in sorted order. Features
are min-max scaled together (scale=false keeps them as they are). Missing values are
not imputed: they are reported. An example file ships with valbench: Fisher's iris
(150 rows, label ``species``; ``data/iris.csv``, as scikit-learn bundles it), which the
conformance kit reads.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from valbench import hookimpl
from valbench.datautil import check_sizes, minmax_together, sha256_bytes, take
from valbench.errors import DataError
from valbench.seeding import rng
from valbench.types import Split, Splits


IRIS = str(resources.files("valbench_plugins.datasets").joinpath("data/iris.csv"))


class CSVDataset:
    name = "csv"
    version = "1"
    test_params = {"path": IRIS, "label": "species", "n_target": 30, "n_test": 30}

    def __init__(self, *, path: str = "", label: str = "label", target_path: str | None = None,
                 test_path: str | None = None, n_source: int | None = None, n_target: int = 100,
                 n_test: int | None = 100, scale: bool = True, max_classes: int = 100):
        self.path, self.label, self.target_path, self.test_path = path, label, target_path, test_path
        self.n_source, self.n_target, self.n_test, self.scale = n_source, n_target, n_test, scale
        self.max_classes = max_classes

    def validate(self) -> None:
        if not self.path:
            raise ValueError("path= is required (a CSV file with a header row)")
        check_sizes(n_source=self.n_source, n_target=self.n_target, n_test=self.n_test)
        if self.max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {self.max_classes}")
        for p in (self.path, self.target_path, self.test_path):
            if p is not None and not Path(p).expanduser().is_file():
                raise ValueError(f"file {p} does not exist")
        if self.test_path and not self.target_path:
            raise ValueError("test_path= needs target_path= too")

    def _files(self) -> list[Path]:
        return [Path(p).expanduser() for p in (self.path, self.target_path, self.test_path) if p]

    def fingerprint(self) -> str:
        return sha256_bytes(*(f.read_bytes() for f in self._files()))

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        import pandas as pd  # here: loading the plugins stays fast (pandas ~0.4 s)

        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"csv: cannot read {path}: {exc}") from None
        if self.label not in df.columns:
            raise DataError(f"csv: {path} has no label column '{self.label}'; columns: {', '.join(map(str, df.columns))}")
        features = df.drop(columns=[self.label])
        if features.shape[1] == 0:
            raise DataError(f"csv: {path} has no feature column besides the label '{self.label}'")
        text = [c for c in features.columns if len(df) and not pd.api.types.is_numeric_dtype(features[c])]
        if text:
            raise DataError(f"csv: column '{text[0]}' of {path} is not numeric; encode it before valuation")
        missing = int(df[self.label].isna().sum())
        if missing:
            raise DataError(f"csv: {missing} rows of {path} have no label in column '{self.label}'; "
                            "drop or fill them before valuation")
        return features.to_numpy(np.float64), df[self.label].to_numpy()

    def load(self, seed: int) -> Splits:
        parts = [self._read(f) for f in self._files()]
        classes = np.unique(np.concatenate([p[1] for p in parts]).astype(str))
        if len(classes) > self.max_classes:
            raise DataError(f"csv: label '{self.label}' has {len(classes)} distinct values, more than a "
                            f"classification can mean (max_classes={self.max_classes}); is it continuous? Pass "
                            f"max_classes={len(classes)} to value it as {len(classes)} classes anyway")
        encode = {c: i for i, c in enumerate(classes)}
        parts = [(x, np.array([encode[str(v)] for v in y], dtype=np.int64)) for x, y in parts]
        g = rng(seed, "split", self.name)
        (x, y), rest = parts[0], parts[1:]
        if not rest:
            tgt, tst, src = take(g.permutation(len(x)), [self.n_target, self.n_test or 0, self.n_source],
                                 ["target", "test", "source"], self.name)
            sets = [(x[src], y[src]), (x[tgt], y[tgt]), (x[tst], y[tst])]
        else:
            (src,) = take(g.permutation(len(x)), [self.n_source], ["source"], self.name)
            xt, yt = rest[0]
            if len(rest) == 2:
                tgt = take(g.permutation(len(xt)), [min(self.n_target, len(xt))], ["target"], self.name)[0]
                sets = [(x[src], y[src]), (xt[tgt], yt[tgt]), rest[1]]
            else:
                tgt, tst = take(g.permutation(len(xt)), [self.n_target, self.n_test], ["target", "test"], self.name)
                sets = [(x[src], y[src]), (xt[tgt], yt[tgt]), (xt[tst], yt[tst])]
        xs = [s[0] for s in sets]
        if self.scale:
            xs = minmax_together(*xs)
        splits = [Split(np.asarray(xx, dtype=np.float32), s[1]) for xx, s in zip(xs, sets)]
        return Splits(*splits, n_classes=max(len(classes), 1))


@hookimpl
def register_datasets(register):
    register(CSVDataset)
