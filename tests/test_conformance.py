"""Every registered built-in plugin of every kind passes the conformance kit, check by
check (ids "name:check"), exactly as a third party runs it on their own plugin."""
from valbench.plugins import build_registry
from valbench.testing import parametrize_with_checks

BUILTINS = [info.cls for info in build_registry(autoload=False).all() if info.distribution == "valbench"]


@parametrize_with_checks(BUILTINS)
def test_builtin_plugin_conforms(check):
    check()
