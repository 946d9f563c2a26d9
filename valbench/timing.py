"""Measuring one call: wall time, CPU time and peak memory, synchronised on CUDA.

Peak host memory is the process' resident high-water mark (Linux VmHWM), reset just
before the call through /proc/self/clear_refs; where that is not possible it is None.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from valbench.types import Timing


def status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; None where unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, Timing]:
    """Call ``fn`` and measure it; CUDA work is synchronised before both clock reads."""
    import torch  # here: status_bytes is used by the run's process, which need not load torch early
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    can_reset = _reset_peak_rss()
    base = status_bytes("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    t1, c1 = time.perf_counter(), time.process_time()
    peak = status_bytes("VmHWM") if can_reset else None
    dev_peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return out, Timing(t1 - t0, c1 - c0, peak, base, dev_peak, torch.get_num_threads())
