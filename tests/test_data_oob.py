import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from valbench.seeding import derive_seed, rng
from valbench.testing import check_valuer, easy_task
from valbench.types import Split, ValuationTask
from valbench_plugins.valuers.data_oob import DataOOBValuer
from tests.baseline_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tree_values_equal_the_definition():
    """Recompute Data-OOB by hand: the same bags, the same trees, mean OOB correctness."""
    task, _ = easy_task(n_source=80, n_target=20)
    got = DataOOBValuer(n_bags=30).value(task)
    x, y, n = np.asarray(task.source.x), np.asarray(task.source.y), 80
    draws = rng(task.seed, "data-oob-bags").integers(0, n, size=(30, n))
    hits, seen = np.zeros(n), np.zeros(n)
    for b, idx in enumerate(draws):
        tree = DecisionTreeClassifier(max_features="sqrt", random_state=derive_seed(task.seed, "data-oob-tree", b) % 2**32)
        tree.fit(x[idx], y[idx])
        out = np.setdiff1d(np.arange(n), idx)
        hits[out] += tree.predict(x[out]) == y[out]
        seen[out] += 1
    expected = np.where(seen > 0, hits / np.maximum(seen, 1), 0.0)
    expected[seen == 0] = expected[seen > 0].mean()
    assert np.allclose(got.values, expected) and got.fits == 30 and not got.stopped_early
    assert len(np.unique(got.values)) > 5


def test_batched_logistic_matches_scikit_learn():
    task, _ = easy_task(n_source=120, n_target=20)
    v = DataOOBValuer(learner="logistic", n_bags=3, lbfgs_iterations=500)
    scores = np.full((3, 120), np.nan)
    draws = rng(0, "bags").integers(0, 120, size=(3, 120))
    counts = np.stack([np.bincount(d, minlength=120) for d in draws])
    from valbench.budget import Budget

    class Bar:
        def update(self, k):
            pass

    v._logistic(task, draws, counts, scores, Budget(), Bar())
    x, y = np.asarray(task.source.x), np.asarray(task.source.y)
    for b in range(3):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x[draws[b]], y[draws[b]])
        agree = np.mean(scores[b] == (ref.predict(x) == y))
        assert agree >= 0.99, agree


@pytest.mark.parametrize("params", [None, dict(learner="logistic", n_bags=100),
                                    dict(learner="mlp", n_bags=10, steps=30, lr=1e-2, compile=False)],
                         ids=["tree", "logistic", "mlp"])
def test_conformance(params):
    check_valuer(DataOOBValuer, params)


@pytest.mark.parametrize("params", [{}, dict(learner="logistic"), dict(learner="mlp", steps=5, compile=False)],
                         ids=["tree", "logistic", "mlp"])
def test_fit_budget_gives_fewer_bags(params):
    task, _ = easy_task(n_source=50, n_target=20)
    got = DataOOBValuer(n_bags=40, max_fits=7, **params).value(task)
    assert got.fits == 7 and got.stopped_early and got.info["bags"] == 7
    assert np.isfinite(got.values).all()


def test_logistic_needs_labels():
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    from valbench.training.models import default_learner

    task = ValuationTask(Split(x, x), Split(x, x), None, default_learner(3, None), "r2", 0, "cpu")
    with pytest.raises(ValueError, match="learner=logistic needs class labels"):
        DataOOBValuer(learner="logistic").check(task)
    got = DataOOBValuer(n_bags=5).value(task)  # trees regress reconstructions: -squared error
    assert got.values.shape == (10,) and (got.values <= 0).all()


@pytest.mark.gpu
def test_mlp_and_logistic_bags_on_cuda():
    task, mask = easy_task(device="cuda")
    from sklearn.metrics import roc_auc_score

    for params in (dict(learner="logistic", n_bags=50), dict(learner="mlp", n_bags=20, steps=50, lr=1e-2)):
        got = DataOOBValuer(**params).value(task)
        assert roc_auc_score(mask, -got.values) > 0.7
