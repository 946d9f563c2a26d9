"""The contract is documented, exercised and kept (the datasette habit): every hook is
documented with its signature and fires in a real run; every protocol member is
documented under its hook; the built-in plugins import only the public surface."""
import ast
import inspect
import pathlib
import re

import pytest

import valbench
from valbench import hookspecs
from valbench.plugins import members

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "plugins.md").read_text()


def hooks():
    return {n: f for n, f in vars(hookspecs).items() if hasattr(f, "valbench_spec")}


def section(heading: str) -> str:
    """The text of docs/plugins.md from ``heading`` to the next ### heading."""
    start = DOC.index(heading)
    nxt = DOC.find("\n### ", start + len(heading))
    return DOC[start:nxt if nxt >= 0 else None]


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_documented_with_its_signature(name):
    args = ", ".join(inspect.signature(hooks()[name]).parameters)
    assert f"### `{name}({args})`" in DOC, f"hook {name} is not documented in docs/plugins.md"


@pytest.mark.parametrize("kind", ["dataset", "corruption", "valuer", "metric"])
def test_every_protocol_member_is_documented_under_its_hook(kind):
    text = section(f"### `register_{kind}s(register)`")
    for name in members(kind):
        assert f"`{name}`" in text, f"{kind} member '{name}' is not documented under register_{kind}s"


class _Recorder:
    """Implements every hookspec (made from hookspecs itself, so a new hook is covered
    without editing this test) and records which ones valbench called."""

    def __init__(self):
        self.calls = {name: 0 for name in hooks()}
        for name, spec in hooks().items():
            params = list(inspect.signature(spec).parameters)
            setattr(self, name, self._recording(name, params))

    def _recording(self, name, params):
        def hook(**kwargs):
            self.calls[name] += 1
        hook.__signature__ = inspect.Signature([inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in params])
        return valbench.hookimpl(specname=name)(hook)


@pytest.fixture(scope="module")
def fired(tmp_path_factory):
    """One small real run (registry built, a grid run into a store) with the recorder plugged in."""
    from valbench import api
    from valbench.grid import build_experiment
    from valbench.plugins import build_registry

    recorder = _Recorder()
    registry = build_registry(extra=[recorder])
    exp = build_experiment({"datasets": "synthetic[n_source=40,n_target=20,n_test=20]", "corruptions": "labels",
                            "valuers": "random", "seeds": 1})
    api.run(exp, tmp_path_factory.mktemp("hooks") / "r.sqlite", registry=registry, device="cpu")
    return recorder.calls


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_fires_in_a_real_run(fired, name):
    assert fired[name] >= 1, f"hook {name} was never called by registry building or a run"


def _valbench_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in out if m == "valbench" or m.startswith("valbench.")]


def _public(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in valbench.PUBLIC_MODULES if p != "valbench") \
        or module == "valbench"


def test_plugins_import_only_the_public_surface():
    files = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    assert len(files) > 20
    bad = [f"{f.relative_to(ROOT)}:{line} imports {m}" for f in files for line, m in _valbench_imports(f)
           if not _public(m)]
    assert not bad, "plugins may import only valbench.PUBLIC_MODULES: " + "; ".join(bad)


def test_the_surface_check_sees_a_private_import(tmp_path):
    """The guard above can fail: a plugin importing the runner is caught."""
    f = tmp_path / "p.py"
    f.write_text("from valbench.runner import run_job\nfrom valbench.types import Split\nimport valbench.store\n")
    assert [m for _, m in _valbench_imports(f) if not _public(m)] == ["valbench.runner", "valbench.store"]


def test_contract_modules_import_nothing_of_the_harness():
    """types.py and hookspecs.py stand alone: no torch, no harness module."""
    for name in ("types.py", "hookspecs.py"):
        text = (ROOT / "valbench" / name).read_text()
        imported = {m for _, m in _valbench_imports(ROOT / "valbench" / name)}
        assert imported <= {"valbench", "valbench.types"}, (name, imported)
        assert not re.search(r"^\s*(import|from) torch", text, re.M), name


def test_every_conformance_check_is_documented(registry):
    """docs/plugins.md lists every check the kit runs, for each kind, by its name."""
    from valbench.testing import checks

    for kind, name in (("dataset", "synthetic"), ("corruption", "labels"), ("valuer", "random"),
                       ("metric", "corruption-auroc")):
        for check in checks(registry.get(kind, name).cls, kind=kind):
            assert f"`{check.name}`" in DOC[DOC.index("What the conformance kit checks"):], (
                f"{kind} check '{check.name}' is not documented in docs/plugins.md")
