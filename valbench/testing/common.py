"""The conformance kit's shared parts: how plugins are built and compared, and the checks
every kind shares (registers, stores-parameters, validates-defaults)."""
from __future__ import annotations

import traceback
import typing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from valbench.errors import PluginError
from valbench.plugins import check_plugin_class, constructor_parameters, members, option
from valbench.types import KINDS, ValuationTask

KIT_SOURCE, KIT_TARGET = 150, 100  # the easy task of the valuer checks: small enough for a test run
REFUSALS = (ValueError, TypeError)  # what validate() and check(task) raise to refuse: the harness's one-line error


class Skip(Exception):
    """A check that cannot run on this machine or does not apply (the message says why)."""


@dataclass(frozen=True)
class PluginRef:
    """A plugin class and its kind: what valbench.plugins.option reads (no registry needed)."""

    kind: str
    cls: type


def info_of(cls: type, kind: str) -> PluginRef:
    return PluginRef(kind, cls)


def infer_kind(cls: type) -> str:
    """The plugin kind whose required method ``cls`` has (value, load, apply or score)."""
    for kind in KINDS:
        required = [m.name for m in members(kind).values() if m.method and m.required]
        if all(callable(getattr(cls, r, None)) for r in required):
            return kind
    raise TypeError(f"{getattr(cls, '__qualname__', cls)!r} has none of value(), load(), apply(), score()")


def kit_params(cls: type, params: dict[str, Any] | None) -> dict[str, Any]:
    return dict(option(info_of(cls, infer_kind(cls)), "test_params")) if params is None else dict(params)


def build(cls: type, params: dict[str, Any]) -> Any:
    plugin = cls(**params)
    if callable(getattr(plugin, "validate", None)):
        plugin.validate()
    return plugin


def task_arrays(task: ValuationTask) -> dict[str, np.ndarray]:
    out = {"task.source.x": task.source.x, "task.source.y": task.source.y, "task.target.x": task.target.x,
           "task.target.y": task.target.y}
    out.update({f"task.source_annotations[{k!r}]": v for k, v in task.source_annotations.items()})
    return out


def one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def edge_values(annotation: Any) -> list[Any]:
    """Out-of-range candidates for a numeric parameter (0 and -1)."""
    args = typing.get_args(annotation) or (annotation,)
    if int in args:
        return [0, -1]
    if float in args:
        return [0.0, -1.0]
    return []


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and entries, NaN equal to NaN (a corruption that makes NaN fails its
    output check; the randomness check must not blame its rng for it)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"))


# --- Checks every kind shares ---------------------------------------------------------------

def common_checks(kind: str, cls: type, params: dict[str, Any]) -> dict[str, Callable[[], None]]:
    def registers() -> None:
        try:
            check_plugin_class(kind, cls)
        except PluginError as exc:
            raise AssertionError(str(exc)) from None

    def stores_parameters() -> None:
        plugin = cls(**params)
        defaults = {p.name: p.default for p in constructor_parameters(cls)}
        for name, default in defaults.items():
            given = params.get(name, default)
            assert hasattr(plugin, name), f"{cls.name}: parameter '{name}' is not stored as attribute self.{name}"
            assert getattr(plugin, name) is given or getattr(plugin, name) == given, (
                f"{cls.name}: self.{name} is {getattr(plugin, name)!r} after {name}={given!r}; store parameters "
                "unchanged (check them in validate())")

    def validates_defaults() -> None:
        try:
            build(cls, params)
        except REFUSALS as exc:
            raise AssertionError(f"{cls.name}: validate() refuses its own test parameters {params}: {exc}") from None

    return {"registers": registers, "stores-parameters": stores_parameters, "validates-defaults": validates_defaults}
