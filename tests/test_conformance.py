"""Every registered built-in plugin of every kind passes the conformance kit, check by
check (ids "name:check"), exactly as a third party runs it on their own plugin."""
import importlib.util

import pytest

from valbench.plugins import build_registry
from valbench.testing import parametrize_with_checks

# Built-ins whose library is an optional extra (plugin name -> import name, extra): checked
# only where it is installed (.ci/run installs it), otherwise skipped saying so.
EXTRAS = {"lava": ("ot", "lava")}
MISSING = {name for name, (module, _) in EXTRAS.items() if importlib.util.find_spec(module) is None}
BUILTINS = [info.cls for info in build_registry(autoload=False).all()
            if info.distribution == "valbench" and info.cls.name not in MISSING]


@parametrize_with_checks(BUILTINS)
def test_builtin_plugin_conforms(check):
    check()


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_builtin_plugin_with_an_optional_extra(name):
    module, extra = EXTRAS[name]
    if name in MISSING:
        pytest.skip(f"{name}'s conformance checks need {module}: pip install 'valbench[{extra}]'")
    assert any(cls.name == name for cls in BUILTINS), f"{name} is installed but not checked"
