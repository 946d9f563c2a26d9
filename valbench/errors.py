"""One exception hierarchy; the CLI turns each into a one-line message and exit code 2."""
from __future__ import annotations


class ValbenchError(Exception):
    """Base of every error valbench reports to a user (bad input, bad data, bad store)."""


class ConfigError(ValbenchError):
    """An experiment configuration, plugin spec or parameter is invalid."""


class PluginError(ValbenchError):
    """A plugin is unknown, misregistered, or does not follow the contract."""


class DataError(ValbenchError):
    """A dataset cannot be loaded or is not usable (NaN features, one-class target, ...)."""


class StoreError(ValbenchError):
    """The results path is not a valbench store or cannot be written."""


class ValuationError(ValbenchError):
    """A valuer failed or broke its promise (shape, finiteness)."""
