"""The conformance kit: named checks that a plugin of any kind keeps the contract of
:mod:`valbench.types` (the idea of scikit-learn's ``parametrize_with_checks``).

For a plugin author::

    from valbench.testing import parametrize_with_checks

    @parametrize_with_checks([MyValuer])
    def test_conformance(check):
        check()

or from the shell, on any installed plugin: ``valbench check my-valuer``. Every check
either passes or fails with a message that says what to change. A check the plugin
declares in ``known_failures = {"check-name": "why"}`` is reported as an expected
failure with that reason (pytest: a strict xfail, so a declared failure that starts
passing is reported too); a check that cannot run here (a dataset whose files are not
on this machine) is reported as skipped with the reason. Nothing is silently dropped.

The checks run each plugin with its ``test_params`` (cheap settings) and, for the
"rejected-or-valid" checks, on inputs the harness can hand it: every input must either
be refused cleanly (``validate()`` or ``check(task)`` raising ValueError or TypeError,
which the harness turns into a one-line error) or give a valid result. Numeric
parameters are probed at 0 and -1; other parameters are left to the CLI's type checks.

The tasks the valuer checks use are public, for a plugin's own tests: :func:`easy_task`
(two Gaussian classes, 20% of source labels flipped) and :func:`unsupervised_task`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from valbench.errors import ConfigError, PluginError
from valbench.plugins import constructor_parameters, option, parameter_types
from valbench.testing.common import Skip, common_checks, info_of, infer_kind, kit_params, one_line
from valbench.testing.data import corruption_checks, dataset_checks, metric_checks
from valbench.testing.tasks import easy_task, unsupervised_task
from valbench.testing.valuers import valuer_checks

__all__ = ["Check", "Outcome", "Skip", "check_plugin", "check_valuer", "checks", "easy_task", "infer_kind",
           "parametrize_with_checks", "run_check", "unsupervised_task"]

PASSED, FAILED, XFAIL, XPASS, SKIPPED = "passed", "failed", "expected failure", "unexpectedly passed", "skipped"


@dataclass(frozen=True)
class Check:
    """One named check of one plugin class; call it to run it (raises AssertionError)."""

    kind: str
    plugin: str
    name: str
    run: Callable[[], None]
    known_failure: str | None = None

    @property
    def id(self) -> str:
        return f"{self.plugin}:{self.name}"

    def __call__(self) -> None:
        self.run()


@dataclass(frozen=True)
class Outcome:
    check: str
    status: str
    detail: str = ""


KIND_CHECKS = {"valuer": valuer_checks, "dataset": dataset_checks, "corruption": corruption_checks,
               "metric": metric_checks}


def _check_params(cls: type, params: dict[str, Any]) -> None:
    """The kit's parameters (test_params) name constructor parameters and have the types
    the command line would give them; else PluginError (a mistake in the plugin, not a check)."""
    from valbench.params import _coerce

    accepted = {p.name for p in constructor_parameters(cls)}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise PluginError(f"{getattr(cls, 'name', cls)}: test_params names no parameter '{unknown[0]}'; "
                          f"parameters: {', '.join(sorted(accepted)) or '(none)'}")
    hints = parameter_types(cls)
    for key, value in params.items():
        try:
            same = _coerce(value, hints.get(key, Any), f"{cls.name}: test_params[{key!r}]") == value
        except ConfigError as exc:
            raise PluginError(str(exc)) from None
        if not same:
            raise PluginError(f"{cls.name}: test_params[{key!r}] = {value!r} is not of the parameter's type")


def checks(cls: type, params: dict[str, Any] | None = None, kind: str | None = None) -> list[Check]:
    """Every named check of ``kind`` (inferred from the class when None) for ``cls``, built
    with ``params`` (default: its ``test_params``)."""
    kind = kind or infer_kind(cls)
    params = kit_params(cls, params)
    _check_params(cls, params)
    named = {**common_checks(kind, cls, params), **KIND_CHECKS[kind](cls, params)}
    known = dict(option(info_of(cls, kind), "known_failures"))
    unknown = sorted(set(known) - set(named))
    if unknown:
        raise PluginError(f"{getattr(cls, 'name', cls)}: known_failures names no check '{unknown[0]}'; "
                          f"checks: {', '.join(named)}")
    name = getattr(cls, "name", cls.__qualname__)
    return [Check(kind, name, n, fn, known.get(n)) for n, fn in named.items()]


def run_check(check: Check) -> Outcome:
    """Run one check and say how it went (never raises for a failing plugin)."""
    try:
        check()
    except Skip as exc:
        return Outcome(check.name, SKIPPED, str(exc))
    except Exception as exc:  # a failed assertion, or the plugin raising
        detail = str(exc) if isinstance(exc, AssertionError) and str(exc) else f"raised {one_line(exc)}"
        if check.known_failure:
            return Outcome(check.name, XFAIL, check.known_failure)
        return Outcome(check.name, FAILED, detail)
    if check.known_failure:
        return Outcome(check.name, XPASS, f"declared as failing ({check.known_failure}) but passes; remove it "
                                          "from known_failures")
    return Outcome(check.name, PASSED)


def check_plugin(cls: type, params: dict[str, Any] | None = None, kind: str | None = None) -> list[Outcome]:
    """Run every check of ``cls``; the outcomes in order (see :func:`run_check`)."""
    return [run_check(c) for c in checks(cls, params, kind)]


def parametrize_with_checks(classes: Iterable[type], params: dict[type, dict[str, Any]] | None = None):
    """A pytest decorator: one test per (plugin, check), ids "name:check"; declared known
    failures are strict xfails with their reason, and a Skip becomes a pytest skip."""
    import pytest

    cases = []
    for cls in classes:
        for c in checks(cls, (params or {}).get(cls)):
            marks = [pytest.mark.xfail(reason=c.known_failure, strict=True)] if c.known_failure else []
            cases.append(pytest.param(_pytest_check(c), id=c.id, marks=marks))
    return pytest.mark.parametrize("check", cases)


def _pytest_check(c: Check) -> Check:
    def run() -> None:
        import pytest

        try:
            c.run()
        except Skip as exc:
            pytest.skip(str(exc))

    return dataclasses.replace(c, run=run)


def check_valuer(cls: type, params: dict[str, Any] | None = None) -> None:
    """Run every valuer check; raise AssertionError listing the failures (known failures excepted)."""
    bad = [o for o in check_plugin(cls, params, "valuer") if o.status in (FAILED, XPASS)]
    assert not bad, "; ".join(f"{o.check}: {o.detail}" for o in bad)
