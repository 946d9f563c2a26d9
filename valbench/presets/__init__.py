"""The paper's experiments as presets: TOML files shipped beside this module (no torch).

A preset is an experiment file (the keys of ``valbench run --config``) with two more keys:
``description`` (one line: what it runs and which table or figure it feeds) and
``[[paper]]`` (the published numbers: ``valuer`` as listed in its ``valuers``, ``metric``,
``mean``, ``std``, ``minutes``). A collection (``paper``) has ``description`` and
``presets``, the presets it runs one after another, instead.
"""
from __future__ import annotations

import difflib
import re
import sys
from importlib import resources
from typing import Any

from valbench.errors import ConfigError
from valbench.params import parse_spec, split_list

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUN_KEYS = ("datasets", "corruptions", "valuers", "metrics", "seeds", "mode")
DEFAULT = "exp1"  # what `valbench run --valuers ...` runs when no data is given
DEFAULT_DATA = "ADULT, 20% flipped labels"


def _order(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\D*)(\d*)", name)
    return (m.group(1), int(m.group(2) or 0)) if m else (name, 0)


def names() -> list[str]:
    """Every preset: exp1..exp10, fig6, fig8, paper."""
    files = resources.files(__name__).iterdir()
    return sorted((f.name[:-5] for f in files if f.name.endswith(".toml")), key=_order)


def text(name: str) -> str:
    """The preset's TOML as shipped (comments included)."""
    known = names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown preset '{name}'{hint}; presets: {', '.join(known)}")
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


def _data(name: str) -> dict[str, Any]:
    return tomllib.loads(text(name))


def description(name: str) -> str:
    return _data(name)["description"]


def members(name: str) -> list[str]:
    """The presets that ``name`` runs, in order: itself, or a collection's members."""
    data = _data(name)
    if "presets" not in data:
        return [name]
    return [m for member in data["presets"] for m in members(member)]


def load(name: str) -> dict[str, Any]:
    """The run configuration of a preset (datasets, corruptions, valuers, metrics, seeds, mode)."""
    data = _data(name)
    if "presets" in data:
        raise ConfigError(f"preset '{name}' is a collection of {', '.join(members(name))}; load each of them")
    return {k: data[k] for k in RUN_KEYS if k in data}


def published(name: str) -> list[dict[str, Any]]:
    """The published numbers of a preset (or of every member of a collection): each
    ``[[paper]]`` entry with the preset's name, datasets, corruptions and mode."""
    out = []
    for member in members(name):
        data = _data(member)
        for entry in data.get("paper", []):
            out.append({**entry, "preset": member, "datasets": data["datasets"],
                        "corruptions": data["corruptions"], "mode": data["mode"]})
    return out


def _name(item: Any) -> tuple[str, bool]:
    """(plugin name, whether parameters were given) of a spec string or TOML table."""
    if isinstance(item, dict):
        return item.get("name"), len(item) > 1
    spec = parse_spec(item)
    return spec.name, bool(spec.params)


def narrow(raw: dict[str, Any], valuers: str | list | None = None, seeds: Any = None) -> dict[str, Any]:
    """``raw`` with fewer valuers or another seed count. A bare valuer name that the
    preset lists selects the preset's spec(s) of that name, with their parameters
    (``dvgs`` in exp4 is ``dvgs[restarts=10]``); a spec with parameters, or a name the
    preset does not list, is used as given. ``seeds`` replaces the preset's."""
    out = dict(raw)
    if valuers is not None:
        wanted = split_list(valuers) if isinstance(valuers, str) else list(valuers)
        listed = list(raw.get("valuers", []))
        chosen: list[Any] = []
        for item in wanted:
            name, has_params = _name(item)
            same = [] if has_params else [v for v in listed if _name(v)[0] == name]
            for v in same or [item]:
                if v not in chosen:
                    chosen.append(v)
        out["valuers"] = chosen
    if seeds is not None:
        out["seeds"] = seeds
    return out
