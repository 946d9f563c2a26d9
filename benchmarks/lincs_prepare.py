"""How long the lincs dataset's one-time passes take, on a synthetic release in the GCTX layout.

Writes level-5 / level-4 GCTX files (978 landmark + 22 other genes, 1-5 replicates per
signature, 256-row chunks, gzip) to a temporary folder, then times: hashing the files
(once; recorded in the cache), the z-score statistics + APC passes (once; cached), and
one seed's load (reads only its rows). Prints rows per second for each pass so the cost
at the real scale (720,216 level-5 and 1,805,898 level-4 rows of 12,328 genes) can be
estimated. Usage: python benchmarks/lincs_prepare.py [n_signatures]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tests.lincs_files import write_release  # noqa: E402


def main(n_sigs: int) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VALBENCH_CACHE"] = str(Path(tmp) / "cache")
        from valbench_plugins.datasets.lincs import Lincs, prepare

        t = time.perf_counter()
        w = write_release(Path(tmp) / "release", n_sigs=n_sigs, n_landmark=978, n_other=22,
                          cell_types=("trt_cp",), chunk_rows=256)
        n5, n4 = len(w["level5"]), len(w["level4"])
        print(f"wrote {n5} level-5 and {n4} level-4 rows x 1000 genes in {time.perf_counter() - t:.1f}s")
        ds = Lincs(path=str(Path(tmp) / "release"), high_apc="none", n_source=min(5000, n5 // 2),
                   n_target=min(1000, n5 // 10), n_test=min(1000, n5 // 10))
        t = time.perf_counter()
        ds.fingerprint()
        hashing = time.perf_counter() - t
        t = time.perf_counter()
        ds.prepared()
        passes = time.perf_counter() - t
        prepare.cache_clear()
        t = time.perf_counter()
        ds.prepared()
        cached = time.perf_counter() - t
        t = time.perf_counter()
        s = ds.load(0)
        load = time.perf_counter() - t
        size = sum(f.stat().st_size for f in ds.files()) / 1e6
        print(f"hash {size:.0f} MB once: {hashing:.2f}s ({size / hashing:.0f} MB/s)")
        print(f"stats + APC passes: {passes:.2f}s ({(n5 + n4) / passes:.0f} rows/s over level-5 + level-4)")
        print(f"prepare again (APC and stats from the cache, tables re-read): {cached:.2f}s")
        rows = len(s.source) + len(s.target) + len(s.test)
        print(f"one seed's load, {rows} rows: {load:.2f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
