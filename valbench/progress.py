"""Progress bars for long valuer loops: tqdm on stderr, off when stderr is not a terminal."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())
