"""Experiment config -> the list of jobs (dataset x corruption x valuer x seed).

A job's key is a hash of its canonical resolved configuration: plugin names, versions
and every parameter with defaults filled in, the dataset's content fingerprint, seed,
learning mode and device type. Order on the command line never changes it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valbench.errors import ConfigError
from valbench.params import PluginSpec, parse_spec, resolve, split_list
from valbench.plugins import Registry, option
from valbench.types import Job, PluginConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("supervised", "unsupervised")
MAX_SEEDS = 10_000  # a count past this is a typo, not an experiment (and would not fit in memory as jobs)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Experiment:
    """What the user asked for, before resolution against the registry."""

    datasets: tuple[PluginSpec, ...]
    corruptions: tuple[PluginSpec, ...]
    valuers: tuple[PluginSpec, ...]
    seeds: tuple[int, ...] = (0,)
    mode: str = "supervised"
    metrics: tuple[PluginSpec, ...] = ()  # empty: every metric that fits the corruption's truth

    def __post_init__(self) -> None:
        for kind in ("datasets", "corruptions", "valuers"):
            if not getattr(self, kind):
                raise ConfigError(f"no {kind} given")
        if not self.seeds:
            raise ConfigError("no seeds given; --seeds must be >= 1")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


def parse_seeds(value: Any) -> tuple[int, ...]:
    """``5`` means seeds 0..4; a list gives the seeds themselves."""
    if isinstance(value, bool):
        raise ConfigError(f"seeds must be a positive count or a list of integers, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"--seeds must be a positive integer, got {value!r}") from None
    if isinstance(value, int):
        if not 1 <= value <= MAX_SEEDS:
            raise ConfigError(f"--seeds must be in 1..{MAX_SEEDS}, got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"seeds list has duplicates: {value}")
        return tuple(value)
    raise ConfigError(f"seeds must be a positive count or a non-empty list of non-negative integers, got {value!r}")


def specs_from(value: Any, what: str) -> tuple[PluginSpec, ...]:
    """Plugin specs from a CLI string, or a TOML list of strings and tables."""
    if isinstance(value, str):
        return tuple(parse_spec(s) for s in split_list(value))
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str):
                out.append(parse_spec(item))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                params = {k: v for k, v in item.items() if k != "name"}
                bad = [k for k, v in params.items() if isinstance(v, (list, dict))]
                if bad:
                    raise ConfigError(f"{what} '{item['name']}': parameter '{bad[0]}' must be a scalar")
                out.append(PluginSpec(item["name"], tuple(sorted(params.items()))))
            else:
                raise ConfigError(f"each entry of {what} must be a string or a table with a 'name', got {item!r}")
        return tuple(out)
    raise ConfigError(f"{what} must be a string or a list, got {value!r}")


TOML_KEYS = {"datasets", "corruptions", "valuers", "metrics", "seeds", "mode", "device"}
NOTE_KEYS = {"description", "paper"}  # a preset's notes (valbench.presets): read, never run
PAPER_KEYS = {"valuer", "metric", "mean", "std", "minutes"}  # a [[paper]] entry: a published number
COLLECTION_KEY = "presets"  # a file that names presets to run one after another (e.g. `preset show paper`)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file; every key is checked, unknown ones are errors. A preset's
    ``description`` and ``[[paper]]`` are accepted and dropped; ``presets`` (a list of
    preset names) is kept, alone, for the caller to run them."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a folder; give a .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    valid = TOML_KEYS | NOTE_KEYS | {COLLECTION_KEY}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(f"{p}: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(valid))}")
    if not isinstance(data.get("description", ""), str):
        raise ConfigError(f"{p}: description must be a string")
    entries = data.get("paper", [])
    if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        raise ConfigError(f"{p}: paper must be an array of tables ([[paper]])")
    for entry in entries:
        unknown = sorted(set(entry) - PAPER_KEYS)
        if unknown:
            raise ConfigError(f"{p}: unknown key '{unknown[0]}' in a [[paper]] entry; valid keys: "
                              f"{', '.join(sorted(PAPER_KEYS))}")
    if COLLECTION_KEY in data:
        names = data[COLLECTION_KEY]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"{p}: presets must be a non-empty list of preset names")
        mixed = sorted(set(data) & TOML_KEYS)
        if mixed:
            raise ConfigError(f"{p}: a file naming presets takes no '{mixed[0]}'; narrow them with "
                              "command-line flags (--valuers, --seeds, ...)")
    return {k: v for k, v in data.items() if k not in NOTE_KEYS}


def build_experiment(raw: dict[str, Any]) -> Experiment:
    """An Experiment from merged TOML/CLI values (strings or TOML types)."""
    return Experiment(
        datasets=specs_from(raw.get("datasets", []), "datasets"),
        corruptions=specs_from(raw.get("corruptions", []), "corruptions"),
        valuers=specs_from(raw.get("valuers", []), "valuers"),
        metrics=specs_from(raw.get("metrics", []), "metrics"),
        seeds=parse_seeds(raw.get("seeds", 1)),
        mode=raw.get("mode", "supervised"),
    )


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" or (device == "auto" and cpu_only_torch()):
        return "cpu"
    import torch  # here: a CPU run's own process plans without importing torch (~1 s)

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def cpu_only_torch() -> bool:
    """Whether the installed torch is a CPU-only build (its version's local label says so,
    as in 2.13.0+cpu), which never sees a CUDA device: read without importing torch."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def _unique(items: list[PluginConfig]) -> list[PluginConfig]:
    seen: dict[tuple, PluginConfig] = {}
    for r in items:
        seen.setdefault((r.name, r.params), r)
    return list(seen.values())


def scores(metric: PluginConfig, corruption: PluginConfig) -> bool:
    """Whether ``metric`` can score cells of ``corruption`` (a None truth kind: any truth)."""
    kind = option(metric, "truth_kind")
    return kind is None or kind == option(corruption, "truth_kind")


def expand(exp: Experiment, registry: Registry, device: str) -> list[Job]:
    """Resolve every spec (raising ConfigError before any work) and build the jobs."""
    datasets = _unique([resolve(registry, "dataset", s) for s in exp.datasets])
    corruptions = _unique([resolve(registry, "corruption", s) for s in exp.corruptions])
    valuers = _unique([resolve(registry, "valuer", s) for s in exp.valuers])
    if exp.metrics:
        metrics = _unique([resolve(registry, "metric", s) for s in exp.metrics])
    else:  # every metric meant to run unasked (costly ones, such as filtering, must be named)
        metrics = [m for m in (resolve(registry, "metric", n) for n in registry.names("metric"))
                   if option(m, "by_default")]
    if exp.mode == "unsupervised":
        for r in [*corruptions, *valuers]:
            if option(r, "supervised_only"):
                raise ConfigError(f"{r.kind} '{r.name}' needs labels and cannot run in unsupervised mode")
    for c in corruptions:
        if not any(scores(m, c) for m in metrics):
            hint = " (name one with --metrics, e.g. filtering)" if not exp.metrics else ""
            raise ConfigError(f"no metric scores corruption '{c.name}' (truth kind '{option(c, 'truth_kind')}'){hint}")
    fingerprints = {d.params + (d.name,): d.build().fingerprint() for d in datasets}
    jobs = []
    for d in datasets:
        for c in corruptions:
            fitting = tuple(m for m in metrics if scores(m, c))
            for v in valuers:
                for seed in exp.seeds:
                    jobs.append(Job(d, c, v, fitting, seed, exp.mode, device, fingerprints[d.params + (d.name,)]))
    return jobs
