"""valbench: a benchmark harness for data valuation methods.

Plugins mark their hook implementations with :data:`hookimpl`.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "valbench"
hookimpl = pluggy.HookimplMarker(PROJECT)

# The public surface: the only valbench modules a plugin may import (tests/test_docs.py
# checks that the built-in plugins and examples/ import nothing else). The contract is
# valbench.types and valbench.hookspecs; the rest are helpers plugins share.
PUBLIC_MODULES = (
    "valbench",            # hookimpl
    "valbench.types",      # the records and protocols (the contract, part 2)
    "valbench.hookspecs",  # the hooks (the contract, part 1; plugins implement them, rarely import it)
    "valbench.errors",     # DataError and friends: one-line errors for the CLI
    "valbench.seeding",    # derive_seed, rng, torch_generator: named random streams
    "valbench.progress",   # progress bars for long loops
    "valbench.budget",     # Budget: max_fits / max_seconds for retraining valuers
    "valbench.training",   # the task's learner: build_model, fit_model, predict, scoring, stacked training
    "valbench.datautil",   # files -> content hash -> cached arrays; downloads; split helpers
    "valbench.gradsim",    # per-sample gradient similarities (the DVGS engine), for gradient-based valuers
    "valbench.testing",    # the conformance kit, for plugin tests
)

__all__ = ["__version__", "hookimpl", "PROJECT", "PUBLIC_MODULES"]
