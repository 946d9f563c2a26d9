"""Where a result came from: software versions, git commit, device and threads."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import valbench


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the valbench checkout (with '-dirty' if modified), or None."""
    root = Path(valbench.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str, threads: int | None = None) -> dict[str, Any]:
    """Where the jobs about to run come from. ``threads``: the torch threads of the worker
    processes that run them; None: the jobs run in this process, with its torch threads.
    Only then (and on CUDA, for the device's name) is torch imported here: the run's own
    process need not import it to plan a run and start its workers."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    info: dict[str, Any] = {
        "valbench": valbench.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": importlib.metadata.version("torch"),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device,
        "torch_threads": threads,
        "device_name": platform.processor() or platform.machine(),
    }
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name()
            info["cuda"] = torch.version.cuda
    return info
