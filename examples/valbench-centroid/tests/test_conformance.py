"""The conformance kit on the installed plugin: one test per check, ids "centroid:<check>"."""
import pytest

from valbench.testing import easy_task, parametrize_with_checks
from valbench_centroid import CentroidValuer


@parametrize_with_checks([CentroidValuer])
def test_conformance(check):
    check()


@parametrize_with_checks([CentroidValuer], params={CentroidValuer: {"metric": "cosine"}})
def test_conformance_cosine(check):
    check()


def test_refuses_a_target_without_a_source_class():
    import dataclasses

    task, _ = easy_task()
    one_class = task.target.take(task.target.y == 0)
    with pytest.raises(ValueError, match="no sample of class 1"):
        CentroidValuer().check(dataclasses.replace(task, target=one_class))
