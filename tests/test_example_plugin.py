"""The example third-party plugin examples/valbench-centroid, really built and installed
(setuptools builds it, pip installs it into a private folder: not editable, not into this
environment), then used through the CLI exactly as its README says.

The build runs without isolation (offline), so this environment needs setuptools >= 70.1
(the ``dev`` extra)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "valbench-centroid"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(env, folder): the example installed into folder/site, which env puts on PYTHONPATH."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    src = tmp / "src"  # build a copy: an in-tree build would leave build/ and *.egg-info in the repo
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--no-cache-dir", "--disable-pip-version-check",
                          "--target", str(tmp / "site"), str(src)], capture_output=True, text=True, cwd=tmp)
    assert pip.returncode == 0, f"pip could not build and install the example (needs setuptools>=70.1):\n{pip.stderr}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VALBENCH_PLUGINS", "VALBENCH_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(tmp / "site"), os.environ.get("PYTHONPATH")])),
               VALBENCH_CACHE=str(tmp / "cache"), VALBENCH_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE",
               PYTHONDONTWRITEBYTECODE="1")  # the pytest run below writes nothing into examples/
    return env, tmp


def python(installed, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` with the plugin on the path; the working folder is not the example's,
    so its source folder cannot shadow the installed copy."""
    env, tmp = installed
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)


SCRIPT = """
import importlib.metadata as md, sys
import valbench_centroid
from valbench.cli import main
print(valbench_centroid.__file__, md.distribution("valbench-centroid").version)
for args in sys.argv[1:]:
    print("=== " + args, flush=True)
    code = main(args.split())
    print("=== exit", code, flush=True)
"""


@pytest.fixture(scope="module")
def cli(installed):
    """What the README's commands print, run in ONE process (each would import torch anew):
    {command: (exit code, output)}, plus the imported module's path and version."""
    store = installed[1] / "r.sqlite"
    commands = ["plugins", "check centroid",
                f"run --datasets synthetic --corruptions labels --valuers centroid,random --seeds 2 --results {store}",
                f"table 1 --results {store}"]
    p = python(installed, "-c", SCRIPT, *commands)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first, *parts = p.stdout.split("=== ")
    out = {"import": (0, first)}
    for part in parts:
        if part.startswith("exit "):
            continue
        command, _, text = part.partition("\n")
        out[command] = (None, text)
    codes = [int(c) for c in re.findall(r"^=== exit (\d+)$", p.stdout, re.M)]
    return {k: (codes[i - 1] if i else 0, v[1]) for i, (k, v) in enumerate(out.items())}


def ran(cli, command: str) -> str:
    code, text = cli[command]
    assert code == 0, f"valbench {command} exited {code}:\n{text}"
    return text


def test_the_installed_copy_is_imported(cli, installed):
    path, version = ran(cli, "import").split()
    assert Path(path).is_relative_to(installed[1] / "site") and version == "0.1.0"


def test_plugins_lists_it_with_its_distribution(cli):
    rows = [line.split() for line in ran(cli, "plugins").splitlines()]
    assert ["valuer", "centroid", "valbench-centroid"] in [r[:3] for r in rows]


def test_check_passes(cli):
    out = ran(cli, "check centroid")
    assert "valbench-centroid" in out and "FAILED" not in out
    assert re.search(r"^\d+ passed, 1 skipped -- conforms$", out, re.M), out


def test_run_and_table(cli):
    ran(cli, next(c for c in cli if c.startswith("run ")))
    lines = [line for line in ran(cli, next(c for c in cli if c.startswith("table 1"))).splitlines()
             if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in next(line for line in lines if "synthetic" in line and "centroid" in line
                                   ).strip("|").split("|")]
    cell = row[header.index("score")]
    assert re.fullmatch(r"(\*\*)?\d\.\d+ ± \d\.\d+(\*\*)?", cell), cell


def test_the_examples_own_conformance_tests_pass(installed):
    p = python(installed, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               str(EXAMPLE / "tests" / "test_conformance.py"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    passed = re.search(r"(\d+) passed", p.stdout)
    assert passed and int(passed.group(1)) >= 12 and "failed" not in p.stdout, p.stdout[-2000:]


def test_the_guide_shows_the_example_as_it_is():
    """docs/plugins.md's first code block is the example module's code, verbatim."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    block = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    assert block.strip() in (EXAMPLE / "valbench_centroid" / "__init__.py").read_text(), (
        "docs/plugins.md's example differs from examples/valbench-centroid/valbench_centroid/__init__.py")
