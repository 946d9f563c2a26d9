"""valbench: a benchmark harness for data valuation methods.

Plugins mark their hook implementations with :data:`hookimpl`.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "valbench"
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["__version__", "hookimpl", "PROJECT"]
