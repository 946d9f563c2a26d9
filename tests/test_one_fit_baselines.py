"""The one-fit baselines: target-loss and confident-learning (self-confidence, as in cleanlab)."""
import numpy as np
import pytest

from sklearn.metrics import roc_auc_score

from valbench.testing import check_valuer, easy_task
from valbench.types import Split, ValuationTask
from valbench_plugins.valuers.confident_learning import ConfidentLearningValuer
from valbench_plugins.valuers.target_loss import TargetLossValuer
from valbench.training.models import predict


def test_target_loss_conformance_and_definition():
    easy, mask = easy_task()
    assert roc_auc_score(mask, -TargetLossValuer().value(easy).values) >= 0.8
    task, _ = easy_task(n_source=60, n_target=40)
    task = ValuationTask(task.source, task.target, 2, task.learner.with_recipe(epochs=20), "auroc", 0)
    out = TargetLossValuer().value(task)
    assert out.fits == 1 and (out.values <= 0).all()
    # minus the cross-entropy of each source label under the model fitted on the target set
    from valbench.training.models import TARGET_MODEL, fit_learner

    model = fit_learner(task.learner, task.target.x, task.target.y, 2, seed=task.seed, device="cpu",
                        label=TARGET_MODEL)
    p = predict(task.learner, model, task.source.x)
    np.testing.assert_allclose(out.values, np.log(p[np.arange(60), task.source.y]), atol=1e-5)
    # confident-learning with the task's learner fitted on the target set is the same model
    cl = ConfidentLearningValuer(model="learner").value(task).values
    np.testing.assert_allclose(np.log(cl), out.values, atol=1e-5)


def test_target_loss_unsupervised_uses_reconstruction_error():
    from valbench.training.models import default_learner

    g = np.random.default_rng(0)
    clean = g.standard_normal((80, 5)).astype(np.float32)
    noisy = clean.copy()
    noisy[:20] += 3 * g.standard_normal((20, 5)).astype(np.float32)
    target = g.standard_normal((60, 5)).astype(np.float32)
    learner = default_learner(5, None).with_recipe(epochs=30)
    task = ValuationTask(Split(noisy, noisy).frozen(), Split(target, target).frozen(), None, learner, "r2", 0)
    out = TargetLossValuer().value(task)
    assert out.values[:20].mean() < out.values[20:].mean()


@pytest.mark.parametrize("params", [{}, {"probabilities": "cv"}, {"model": "learner"}])
def test_confident_learning_conformance(params):
    check_valuer(ConfidentLearningValuer, params)
    task, mask = easy_task()
    assert roc_auc_score(mask, -ConfidentLearningValuer(**params).value(task).values) >= 0.8


def test_self_confidence_is_the_out_of_sample_probability_of_the_given_label():
    from sklearn.linear_model import LogisticRegression

    task, _ = easy_task()
    out = ConfidentLearningValuer().value(task)
    clf = LogisticRegression(max_iter=1000).fit(task.target.x, task.target.y)
    expected = clf.predict_proba(task.source.x)[np.arange(len(task.source)), task.source.y]
    np.testing.assert_allclose(out.values, expected, atol=1e-6)
    assert out.fits == 1 and out.info == {"probabilities": "target", "model": "logistic"}


def test_cross_validated_self_confidence_is_the_out_of_fold_probability():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from valbench.seeding import derive_seed

    task, _ = easy_task(n_source=100)
    out = ConfidentLearningValuer(probabilities="cv", folds=4).value(task)
    assert out.fits == 4
    # each sample's value comes from the fold model fitted without it
    x, y = np.asarray(task.source.x), np.asarray(task.source.y)
    cv = StratifiedKFold(4, shuffle=True, random_state=derive_seed(task.seed, "confident-learning", "folds") % 2**32)
    expected = np.empty(len(y))
    for fit_idx, out_idx in cv.split(x, y):
        assert not set(fit_idx) & set(out_idx)
        clf = LogisticRegression(max_iter=1000).fit(x[fit_idx], y[fit_idx])
        expected[out_idx] = clf.predict_proba(x[out_idx])[np.arange(len(out_idx)), y[out_idx]]
    np.testing.assert_allclose(out.values, expected, atol=1e-6)
    in_sample = LogisticRegression(max_iter=1000).fit(x, y).predict_proba(x)[np.arange(len(y)), y]
    assert not np.allclose(out.values, in_sample, atol=1e-3)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        ConfidentLearningValuer(folds=1).validate()


def test_cv_folds_larger_than_every_class_refused():
    task, _ = easy_task()
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0])  # largest class: 5
    task = ValuationTask(Split(task.source.x[:8], y).frozen(), task.target, 2, task.learner, "auroc", 0)
    with pytest.raises(ValueError, match="folds=6 is larger than every class of the source set \\(largest class: 5 samples\\)"):
        ConfidentLearningValuer(probabilities="cv", folds=6).check(task)
    with pytest.raises(ValueError, match="folds=9 is larger than the source set \\(8 samples\\)"):
        ConfidentLearningValuer(probabilities="cv", folds=9).check(task)
    one = Split(task.target.x, np.zeros(len(task.target), dtype=np.int64))
    with pytest.raises(ValueError, match="at least two classes in the target set"):
        ConfidentLearningValuer().check(ValuationTask(task.source, one, 2, task.learner, "auroc", 0))


def test_multiclass_with_a_class_absent_from_the_fit():
    g = np.random.default_rng(0)
    xs, ys = g.standard_normal((30, 3)).astype(np.float32), np.array([0, 1, 2] * 10)
    xt, yt = g.standard_normal((20, 3)).astype(np.float32), np.array([0, 1] * 10)  # class 2 never in target
    from valbench.types import Learner

    task = ValuationTask(Split(xs, ys).frozen(), Split(xt, yt).frozen(), 3, Learner("mlp", 3, 3), "accuracy", 0)
    v = ConfidentLearningValuer().value(task).values
    assert np.all(v[ys == 2] == 0) and np.all(v[ys != 2] > 0)


@pytest.mark.gpu
@pytest.mark.parametrize("valuer", [TargetLossValuer(), ConfidentLearningValuer(model="learner")])
def test_runs_on_cuda(valuer):
    from sklearn.metrics import roc_auc_score

    task, mask = easy_task(device="cuda")
    values = np.asarray(getattr(valuer.value(task), "values"))
    assert np.isfinite(values).all() and roc_auc_score(mask, -values) > 0.8
