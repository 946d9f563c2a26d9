
import numpy as np
import pytest

from valbench.budget import Budget, check_budget_params


def test_fit_budget_stops_and_records():
    b = Budget(max_fits=5)
    done = 0
    while not b.exhausted(next_cost=2):
        b.spend(2)
        done += 1
    assert done == 2 and b.fits == 4 and b.stopped_early
    v = b.valuation(np.zeros(3), engine="x")
    assert v.fits == 4 and v.stopped_early and v.info["engine"] == "x"


def test_time_budget():
    b = Budget(max_seconds=60.0)
    assert not b.exhausted() and not b.stopped_early
    b.started -= 61.0  # as if a minute had passed (no sleeping, no dependence on machine load)
    assert b.exhausted() and b.stopped_early


def test_unlimited_budget_never_stops():
    b = Budget()
    b.spend(10**6)
    assert not b.exhausted() and not b.valuation(np.zeros(1)).stopped_early


def test_param_checks():
    with pytest.raises(ValueError, match="max_fits"):
        check_budget_params(0, None)
    with pytest.raises(ValueError, match="max_seconds"):
        check_budget_params(None, -1.0)
