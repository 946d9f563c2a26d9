"""Builds the plugin manager and the registry of plugin classes.

Built-in plugins come through the ``valbench`` entry-point group exactly as a third
party's do. ``VALBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` loads only valbench's own entry
points (third-party distributions are skipped); ``VALBENCH_PLUGINS=mod.a,mod.b``
registers extra plugin modules by import name (handy for local plugins and tests).
Nothing happens at import time: call :func:`build_registry`.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import importlib.metadata as md
import inspect
import os
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable

import pluggy

from valbench import PROJECT, __version__, hookspecs
from valbench import types as types_module
from valbench.errors import PluginError
from valbench.types import KINDS, PROTOCOLS

HOOKS = {kind: f"register_{kind}s" for kind in KINDS}
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
AUTOLOAD_ENV = "VALBENCH_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_ENV = "VALBENCH_PLUGINS"


@dataclass(frozen=True)
class Member:
    """One member of a plugin protocol in valbench.types, as declared there."""

    name: str
    method: bool
    required: bool
    annotation: Any  # attributes: the declared type
    default: Any  # optional attributes: the value a plugin without it gets
    doc: str


@functools.lru_cache(maxsize=None)
def members(kind: str) -> dict[str, Member]:
    """Every member the harness may read of a ``kind`` plugin, from valbench.types."""
    proto = PROTOCOLS[kind]
    hints = typing.get_type_hints(proto, vars(types_module))
    out: dict[str, Member] = {}
    for base in reversed(proto.__mro__):
        if base in (object, typing.Protocol, typing.Generic) or not issubclass(base, typing.Protocol):
            continue
        docs = _attribute_docs(base)
        for name in getattr(base, "__annotations__", {}):
            has_default = name in vars(base)
            out[name] = Member(name, False, not has_default, hints[name], vars(base).get(name), docs.get(name, ""))
        for name, fn in vars(base).items():
            if inspect.isfunction(fn) and not name.startswith("_"):
                out[name] = Member(name, True, not getattr(fn, "__optional__", False), None, None,
                                   inspect.getdoc(fn) or "")
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    """The string literal under each annotated attribute of ``cls`` (its documentation)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            out[stmt.target.id] = nxt.value.value
    return out


def option(plugin: Any, member: str) -> Any:
    """The value of a declared member of a registered plugin (a PluginInfo or PluginConfig):
    the class's own, else the protocol's default. Reading an undeclared member is a bug."""
    declared = members(plugin.kind)
    if member not in declared:
        raise KeyError(f"'{member}' is not a member of the {plugin.kind} protocol in valbench.types")
    return getattr(plugin.cls, member, declared[member].default)


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type
    distribution: str
    version: str

    @property
    def module(self) -> str:
        return self.cls.__module__


@dataclass(frozen=True)
class BrokenPlugin:
    """A third-party plugin that was skipped, and why: a distribution that fails to import
    or registers something invalid must not stop every command (valbench's own must)."""

    distribution: str
    plugin: str  # the entry point, or the class that was refused
    error: str

    def describe(self) -> str:
        return f"skipped broken plugin {self.plugin} of distribution '{self.distribution}': {self.error}"


class Registry:
    """The registered plugin classes by kind and name, plus the observer hooks, and the
    third-party plugins that were skipped as broken."""

    def __init__(self, pm: pluggy.PluginManager, plugins: dict[str, dict[str, PluginInfo]],
                 broken: Iterable[BrokenPlugin] = ()):
        self.pm = pm
        self._plugins = plugins
        self.broken = list(broken)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def names(self, kind: str) -> list[str]:
        return sorted(self._plugins[kind])

    def all(self) -> list[PluginInfo]:
        return [self._plugins[k][n] for k in KINDS for n in self.names(k)]

    def get(self, kind: str, name: str) -> PluginInfo:
        try:
            return self._plugins[kind][name]
        except KeyError:
            known = self.names(kind)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PluginError(
                f"unknown {kind} '{name}'{hint}; registered: {', '.join(known) or '(none)'}"
            ) from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def get_plugin_manager(extra: Iterable[object] = (), autoload: bool | None = None, broken: list | None = None
                       ) -> tuple[pluggy.PluginManager, dict[int, tuple[str, str]]]:
    """A plugin manager with entry points (and ``extra`` plugin objects) registered.

    Returns the manager and, per registered plugin object id, its (distribution, version).
    ``autoload`` None reads the environment; False loads only valbench's own entry points.
    A third-party entry point that fails to import or to register is appended to
    ``broken`` (a list of BrokenPlugin) and skipped; valbench's own, and plugins asked for
    explicitly (``extra``, VALBENCH_PLUGINS), raise PluginError instead.
    """
    broken = broken if broken is not None else []
    if autoload is None:
        autoload = not _truthy(os.environ.get(AUTOLOAD_ENV))
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    origin: dict[int, tuple[str, str]] = {}

    for ep in sorted(md.entry_points(group=PROJECT), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if not autoload and dist != PROJECT:
            continue
        try:
            plugin = ep.load()
            if pm.is_registered(plugin):
                continue
            _register(pm, plugin, f"{dist}:{ep.name}")
        except Exception as exc:  # a broken plugin must say who it is; a third party's is skipped
            if dist == PROJECT:
                raise PluginError(f"valbench's plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from exc
            what = "failed to import" if not isinstance(exc, PluginError) else "cannot be registered"
            broken.append(BrokenPlugin(dist, f"'{ep.name}' ({ep.value})", f"{what}: {type(exc).__name__}: {exc}"))
            continue
        origin[id(plugin)] = (dist, version)

    modules = [m.strip() for m in os.environ.get(EXTRA_ENV, "").split(",") if m.strip()]
    for modname in modules:
        try:
            extra = [*extra, importlib.import_module(modname)]
        except Exception as exc:
            raise PluginError(f"{EXTRA_ENV} names module '{modname}', which cannot be imported: "
                              f"{type(exc).__name__}: {exc}") from exc
    for plugin in extra:
        if not pm.is_registered(plugin):
            _register(pm, plugin, None)
            origin[id(plugin)] = ("(local)", "")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"invalid plugin {exc.plugin!r}: {exc} (known hooks: {', '.join(_hook_names())})") from exc
    if not any(dist == PROJECT for dist, _ in origin.values()):
        raise PluginError("valbench's built-in plugins are not registered; install valbench with 'pip install -e .'")
    return pm, origin


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    """Register one plugin object; a hook implementation that does not match its spec
    (e.g. a misspelt argument) is a PluginError naming the plugin and the hook."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):  # pluggy may have added some of its hooks before it refused one
            pm.unregister(plugin)
        who = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)  # one line for the CLI
        raise PluginError(f"plugin {who}: {detail} (hooks: {', '.join(_hook_names())})") from None


def _hook_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, f"{PROJECT}_spec"))


def _conforms(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the declared type (the forms used in valbench.types)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return isinstance(value, tuple) and all(_conforms(v, item) for v in value)
    if origin is not None:  # Mapping[...] and the like: the container only
        return isinstance(value, origin)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def constructor_parameters(cls: type) -> list[inspect.Parameter]:
    """The keyword-only parameters of ``cls``'s constructor (none when it defines no __init__)."""
    if cls.__init__ is object.__init__:
        return []
    return [p for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind is not p.VAR_KEYWORD]


def parameter_types(cls: type) -> dict[str, Any]:
    """The declared type of each constructor parameter. A dataclass plugin's fields are
    resolved in the module of the class that declares each one (shared parameter classes
    such as valbench.budget.BudgetParams live in another module than the plugin)."""
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls)
    return typing.get_type_hints(cls.__init__) if constructor_parameters(cls) else {}


def _parameter_type(annotation: Any) -> bool:
    """Whether a parameter of this type can be given on the command line (valbench.params)."""
    origin = typing.get_origin(annotation)
    if annotation in (bool, int, float, str, type(None)):
        return True
    if origin is typing.Literal:
        return all(isinstance(v, (bool, int, float, str)) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_parameter_type(a) for a in typing.get_args(annotation))
    return False


def check_plugin_class(kind: str, cls: Any) -> None:
    """Raise PluginError unless ``cls`` declares every required member of ``kind``'s
    protocol (valbench.types), with the declared types, and a keyword-only constructor."""
    if not inspect.isclass(cls):
        raise PluginError(f"{kind} plugins register classes, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PluginError(
            f"{kind} class {cls.__qualname__} needs a class attribute 'name' of lowercase letters, digits, '-' or '_', got {name!r}"
        )
    for m in members(kind).values():
        if m.method:
            present = callable(getattr(cls, m.name, None))
            if m.required and not present:
                raise PluginError(f"{kind} '{name}' ({cls.__qualname__}) has no method '{m.name}'")
            continue
        if not hasattr(cls, m.name):
            if m.required:
                raise PluginError(f"{kind} '{name}' ({cls.__qualname__}) needs a class attribute '{m.name}' ({m.doc})")
            continue
        value = getattr(cls, m.name)
        if not _conforms(value, m.annotation):
            shown = getattr(m.annotation, "__name__", None) or str(m.annotation).replace("typing.", "")
            raise PluginError(f"{kind} '{name}': class attribute '{m.name}' must be {shown}, got {value!r}")
    for p in constructor_parameters(cls):
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise PluginError(
                f"{kind} '{name}': constructor parameter '{p.name}' must be keyword-only with a default"
            )
    try:
        types_of = parameter_types(cls)
    except Exception as exc:  # an annotation that names something undefined
        raise PluginError(f"{kind} '{name}': the constructor's annotations cannot be resolved: {exc}") from None
    for pname, annotation in types_of.items():
        if pname in {p.name for p in constructor_parameters(cls)} and not _parameter_type(annotation):
            raise PluginError(f"{kind} '{name}': parameter '{pname}' is annotated {annotation!r}; use bool, int, "
                              "float, str, Literal[...] or Optional of those (what the command line can give)")


def build_registry(extra: Iterable[object] = (), autoload: bool | None = None) -> Registry:
    """Load every plugin and collect the classes registered through the hooks."""
    broken: list[BrokenPlugin] = []
    pm, origin = get_plugin_manager(extra, autoload, broken)
    plugins: dict[str, dict[str, PluginInfo]] = {k: {} for k in KINDS}
    for kind in KINDS:
        hook = getattr(pm.hook, HOOKS[kind])
        # valbench's own first, so that a third party's clash with a built-in name is the one refused
        for impl in sorted(hook.get_hookimpls(), key=lambda i: origin.get(id(i.plugin), ("",))[0] != PROJECT):
            dist, dist_version = origin.get(id(impl.plugin), ("(local)", ""))
            third_party = dist not in (PROJECT, "(local)")

            def register(cls: Any, _kind: str = kind, _dist: str = dist, _ver: str = dist_version,
                         _skip: bool = third_party) -> None:
                try:
                    check_plugin_class(_kind, cls)
                    if cls.name in plugins[_kind]:
                        other = plugins[_kind][cls.name]
                        raise PluginError(
                            f"{_kind} name '{cls.name}' is registered twice: by {other.distribution} "
                            f"({other.module}) and by {_dist} ({cls.__module__})"
                        )
                except PluginError as exc:
                    if not _skip:
                        raise
                    broken.append(BrokenPlugin(_dist, f"{_kind} {getattr(cls, '__qualname__', cls)!s}", str(exc)))
                    return
                version = str(getattr(cls, "version", "") or _ver or __version__)
                plugins[_kind][cls.name] = PluginInfo(_kind, cls.name, cls, _dist, version)

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except PluginError:
                raise
            except Exception as exc:  # a bug in a plugin's hook: say whose
                error = f"plugin {impl.plugin_name}: {HOOKS[kind]} raised {type(exc).__name__}: {exc}"
                if not third_party:
                    raise PluginError(error) from exc
                broken.append(BrokenPlugin(dist, impl.plugin_name, f"{HOOKS[kind]} raised {type(exc).__name__}: {exc}"))
    return Registry(pm, plugins, broken)

