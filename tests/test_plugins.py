import os
import subprocess
import sys
import textwrap

import pytest

from valbench import hookimpl
from valbench.errors import PluginError
from valbench.plugins import build_registry, check_plugin_class


def test_builtins_come_through_the_entry_point_group(registry):
    infos = {(p.kind, p.name): p for p in registry.all()}
    for key in [("valuer", "random"), ("corruption", "labels"), ("corruption", "features"),
                ("metric", "corruption-auroc"), ("metric", "noise-spearman"), ("dataset", "adult"),
                ("dataset", "synthetic")]:
        assert key in infos, key
        assert infos[key].distribution == "valbench"
    import importlib.metadata as md

    eps = {ep.name for ep in md.entry_points(group="valbench") if ep.dist.name == "valbench"}
    assert {"random", "labels", "features", "adult"} <= eps


class Good:
    name = "good"

    def __init__(self, *, k: int = 1):
        self.k = k

    def value(self, task):
        return None


def test_check_plugin_class_accepts_good():
    check_plugin_class("valuer", Good)


@pytest.mark.parametrize("attrs, message", [
    ({"name": "Bad"}, "lowercase"),
    ({"name": None}, "class attribute 'name'"),
    ({"name": "x", "value": None}, "no method 'value'"),
])
def test_check_plugin_class_rejects(attrs, message):
    cls = type("C", (Good,), attrs)
    with pytest.raises(PluginError, match=message):
        check_plugin_class("valuer", cls)


def test_positional_parameters_are_rejected():
    class Pos:
        name = "pos"

        def __init__(self, k=1):
            pass

        def value(self, task):
            pass

    with pytest.raises(PluginError, match="keyword-only"):
        check_plugin_class("valuer", Pos)


def test_duplicate_names_are_rejected():
    class Dup:
        @hookimpl
        def register_valuers(self, register):
            class R:
                name = "random"

                def __init__(self):
                    pass

                def value(self, task):
                    pass

            register(R)

    with pytest.raises(PluginError, match="registered twice"):
        build_registry(extra=[Dup()])


def test_unknown_hook_names_are_rejected():
    class Typo:
        @hookimpl
        def register_valuer(self, register):  # missing 's'
            pass

    with pytest.raises(PluginError, match="register_valuer"):
        build_registry(extra=[Typo()])


def test_observer_hooks_fire(fixture_registry, tmp_path):
    from tests.fixture_plugins import Recorder
    from valbench import api
    from valbench.grid import build_experiment

    Recorder.started.clear()
    Recorder.finished.clear()
    exp = build_experiment({"datasets": "synthetic", "corruptions": "labels", "valuers": "random,boom", "seeds": 1})
    api.run(exp, tmp_path / "r.sqlite", registry=fixture_registry, device="cpu")
    assert len(Recorder.started) == 2
    assert sorted(s for _, s in Recorder.finished) == ["failed", "ok"]


THIRD_PARTY = textwrap.dedent('''
    import numpy as np
    from valbench import hookimpl

    class Constant:
        name = "thirdparty-constant"
        def __init__(self, *, level: float = 1.0):
            self.level = level
        def value(self, task):
            return np.full(len(task.source), self.level)

    @hookimpl
    def register_valuers(register):
        register(Constant)
''')


def test_third_party_distribution_and_autoload_switch(tmp_path):
    """A pip-installed plugin (a real dist-info with an entry point) is found; the
    environment switch turns third-party autoloading off but keeps the built-ins."""
    (tmp_path / "tp_plugin.py").write_text(THIRD_PARTY)
    dist = tmp_path / "tp_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-plugin\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[valbench]\nconstant = tp_plugin\n")
    code = ("import sys; sys.path.insert(0, %r); from valbench.plugins import build_registry; "
            "r = build_registry(); print(sorted(r.names('valuer'))); "
            "print([(p.distribution, p.version) for p in r.all() if p.name == 'thirdparty-constant'])") % str(tmp_path)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "thirdparty-constant" in on.stdout and "('tp-plugin', '0.3')" in on.stdout
    env = {"VALBENCH_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": ""}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "thirdparty-constant" not in off.stdout and "random" in off.stdout


def test_a_hook_with_a_misspelt_argument_names_the_plugin():
    class Misspelt:
        @hookimpl
        def register_valuers(self, reg):  # the spec's argument is 'register'
            pass

    with pytest.raises(PluginError, match=r"plugin .*Misspelt.*register_valuers.*reg"):
        build_registry(extra=[Misspelt()])


def test_a_registration_hook_that_raises_names_the_plugin():
    class Raises:
        @hookimpl
        def register_metrics(self, register):
            raise RuntimeError("bug in the plugin")

    with pytest.raises(PluginError, match="register_metrics raised RuntimeError: bug in the plugin"):
        build_registry(extra=[Raises()])


def test_an_extra_module_that_raises_at_import_is_a_plugin_error(tmp_path, monkeypatch):
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VALBENCH_PLUGINS", "raises_at_import")
    with pytest.raises(PluginError, match="'raises_at_import', which cannot be imported: RuntimeError: broken on import"):
        build_registry()


BROKEN = {
    "tp_raises.py": "raise RuntimeError('broken on import')\n",
    "tp_mixed.py": textwrap.dedent('''
        import numpy as np
        from valbench import hookimpl

        class NoName:                       # refused: no name
            def value(self, task):
                return np.zeros(len(task.source))

        class Clash:                        # refused: a built-in's name
            name = "random"
            def value(self, task):
                return np.zeros(len(task.source))

        class Fine:
            name = "tp-fine"
            def value(self, task):
                return np.ones(len(task.source))

        @hookimpl
        def register_valuers(register):
            for cls in (NoName, Clash, Fine):
                register(cls)
    '''),
}


def test_a_broken_third_party_distribution_is_skipped_and_named_not_fatal(tmp_path):
    """Issue: a plugin module that raises at import made every command fail. It is now
    skipped, named once on stderr and listed as BROKEN; the rest of it, and every other
    command, works."""
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    dist = tmp_path / "tp_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[valbench]\nraises = tp_raises\nmixed = tp_mixed\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "VALBENCH_OFFLINE": "1", "VALBENCH_CACHE": str(tmp_path / "c")}
    env.pop("VALBENCH_DISABLE_PLUGIN_AUTOLOAD", None)

    script = ("import sys; from valbench.cli import main; print('exit', main(['plugins'])); "
              "print('=== next ===', flush=True); print('=== next ===', file=sys.stderr); "
              "print('exit', main(sys.argv[1:]))")  # both commands in one process: torch loads once
    p = subprocess.run([sys.executable, "-c", script, "run", "--datasets", "synthetic[n_source=40,n_target=20,n_test=20]",
                        "--corruptions", "labels", "--valuers", "random,tp-fine", "--results", str(tmp_path / "r.sqlite")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    (listed, ran), (_, run_err) = p.stdout.split("=== next ===\n"), p.stderr.split("=== next ===\n")
    assert "exit 0" in listed and ran.strip().endswith("exit 0"), p.stdout + p.stderr
    broken = [line for line in listed.splitlines() if line.startswith("BROKEN")]
    assert len(broken) == 3 and "tp-fine" in listed
    assert any("failed to import: RuntimeError: broken on import" in line for line in broken)
    assert any("registered twice" in line for line in broken) and any("class attribute 'name'" in line
                                                                        for line in broken)
    warnings = [line for line in run_err.splitlines() if line.startswith("valbench: warning: skipped broken")]
    assert len(warnings) == 3 and "2 jobs: 2 ok" in ran
