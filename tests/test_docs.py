"""Every hook is documented with its signature and exercised by a test (the datasette habit)."""
import inspect
import pathlib
import re

from valbench import hookspecs

ROOT = pathlib.Path(__file__).resolve().parent.parent


def hooks():
    return {n: f for n, f in vars(hookspecs).items() if hasattr(f, "valbench_spec")}


def test_every_hook_is_documented_with_its_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for name, fn in hooks().items():
        args = ", ".join(inspect.signature(fn).parameters)
        assert f"### `{name}({args})`" in doc, f"hook {name} is not documented in docs/plugins.md"


def test_every_hook_is_implemented_by_a_tested_plugin():
    """Each hook has an implementation in the built-ins (tested through the entry points)
    or in the test-only plugins."""
    files = [*(ROOT / "tests").glob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    text = "\n".join(p.read_text() for p in files if p.name != "test_docs.py")
    for name in hooks():
        assert re.search(rf"\bdef {name}\(", text), f"no test plugin implements hook {name}"
