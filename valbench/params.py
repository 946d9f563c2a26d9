"""Plugin specs: ``name[key=value,...]`` strings, parameter coercion and validation.

A spec is resolved against the plugin's constructor signature: keys must be its
keyword-only parameters, values are converted to the annotated type, defaults are
filled in, and the plugin's optional ``validate()`` method checks ranges. The result
is a :class:`valbench.types.PluginConfig`, whose canonical config is what job keys hash.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from valbench.errors import ConfigError, PluginError
from valbench.plugins import PluginInfo, Registry, constructor_parameters, parameter_types
from valbench.types import PluginConfig, Scalar


@dataclass(frozen=True)
class PluginSpec:
    """A plugin name and the parameters the user gave (raw strings or TOML values)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return format_spec(self.name, dict(self.params))


def format_spec(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    return f"{name}[{','.join(f'{k}={_fmt(v)}' for k, v in sorted(params.items()))}]"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def split_list(text: str) -> list[str]:
    """Split ``a,b[x=1,y=2],c`` at the commas outside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ']' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ConfigError(f"unclosed '[' in {text!r}")
    parts.append("".join(cur))
    out = [p.strip() for p in parts]
    if any(not p for p in out):
        raise ConfigError(f"empty plugin name in list {text!r}")
    return out


def parse_spec(text: str) -> PluginSpec:
    """Parse ``name`` or ``name[key=value,...]`` (values stay strings until resolved)."""
    text = text.strip()
    if "[" not in text:
        if "]" in text or "=" in text or not text:
            raise ConfigError(f"malformed plugin spec {text!r}; expected name or name[key=value,...]")
        return PluginSpec(text)
    name, _, rest = text.partition("[")
    name = name.strip()
    if not name or not rest.endswith("]"):
        raise ConfigError(f"malformed plugin spec {text!r}; expected name[key=value,...]")
    body = rest[:-1]
    if "[" in body or "]" in body:
        raise ConfigError(f"malformed plugin spec {text!r}: nested brackets")
    params: dict[str, str] = {}
    for item in (s for s in body.split(",") if s.strip()):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise ConfigError(f"malformed parameter {item.strip()!r} in {text!r}; expected key=value")
        if key in params:
            raise ConfigError(f"parameter '{key}' given twice in {text!r}")
        params[key] = value.strip()
    return PluginSpec(name, tuple(sorted(params.items())))


def signature_defaults(cls: type) -> dict[str, Any]:
    return {p.name: p.default for p in constructor_parameters(cls)}


def _coerce(value: Any, annotation: Any, where: str) -> Scalar:
    """Convert a CLI string or TOML value to the annotated parameter type."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is Literal:
        choices = typing.get_args(annotation)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return f
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise PluginError(f"{where}: parameters must be annotated bool, int, float, str, Literal or Optional of those, not {annotation!r}")


def configure(info: PluginInfo, params: dict[str, Scalar]) -> PluginConfig:
    """The PluginConfig of ``info`` with ``params`` (every parameter, already typed)."""
    defaults = signature_defaults(info.cls)
    changed = {k: v for k, v in params.items() if defaults.get(k) != v}
    return PluginConfig(info.kind, info.name, info.version, tuple(sorted(params.items())),
                        format_spec(info.name, changed), info.cls)


def _timeout(value: Any, where: str) -> float:
    seconds = _coerce(value, float, where)
    if seconds <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got {value!r}")
    return seconds


def resolve(registry: Registry, kind: str, spec: PluginSpec | str) -> PluginConfig:
    """Check ``spec`` against the registered class; fill defaults; run ``validate()``.

    A valuer spec may also carry ``timeout=S`` (seconds), read by the harness rather than the
    plugin (unless the plugin has a parameter of that name): ``tmc-shapley[timeout=3600]``."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    info = registry.get(kind, spec.name)
    hints = parameter_types(info.cls)
    accepted = {p.name: p for p in constructor_parameters(info.cls)}
    given = dict(spec.params)
    timeout = None
    if kind == "valuer" and "timeout" in given and "timeout" not in accepted:
        timeout = _timeout(given.pop("timeout"), f"{spec.name}: timeout")
    for key in given:
        if key not in accepted:
            raise ConfigError(
                f"{kind} '{spec.name}' has no parameter '{key}'; parameters: {', '.join(accepted) or '(none)'}"
                + ("; and the harness's timeout=SECONDS" if kind == "valuer" else "")
            )
    params: dict[str, Scalar] = {}
    for key, p in accepted.items():
        if key in given:
            params[key] = _coerce(given[key], hints.get(key, type(p.default)), f"{spec.name}: {key}")
        else:
            params[key] = p.default
    resolved = dataclasses.replace(configure(info, params), timeout=timeout)
    instance = resolved.build()
    if callable(getattr(instance, "validate", None)):
        try:
            instance.validate()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{kind} '{resolved.label}': {exc}") from None
    return resolved
