"""crossfit-confidence: valbench's own label-error detector (a model of p(y | x) chosen on the
target, fitted on target + cross-fitted source)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from valbench.seeding import derive_seed, rng
from valbench.testing import check_valuer, easy_task, unsupervised_task
from valbench.types import Learner, Split, ValuationTask
from valbench_plugins.valuers.confident_learning import ConfidentLearningValuer
from valbench_plugins.valuers.crossfit_confidence import CrossfitConfidenceValuer


@pytest.mark.parametrize("params", [{}, {"model": "logistic"}])
def test_conformance(params):
    check_valuer(CrossfitConfidenceValuer, {**CrossfitConfidenceValuer.test_params, **params})


def threshold_task(seed: int, n_source: int = 400, n_target: int = 60):
    """Label 1 iff either of two features passes a threshold (no linear boundary fits it),
    plus 5% label noise the target shares; 20% of the source labels flipped on top."""
    g = rng(seed, "threshold-task")

    def split(n):
        x = g.uniform(0, 1, (n, 5)).astype(np.float32)
        y = ((x[:, 0] > 0.6) | (x[:, 1] > 0.6)).astype(np.int64)
        noisy = g.random(n) < 0.05
        y[noisy] = 1 - y[noisy]
        return x, y

    xs, ys = split(n_source)
    mask = np.zeros(n_source, dtype=np.int8)
    mask[g.choice(n_source, n_source // 5, replace=False)] = 1
    ys = np.where(mask == 1, 1 - ys, ys)
    xt, yt = split(n_target)
    task = ValuationTask(Split(xs, ys).frozen(), Split(xt, yt).frozen(), 2, Learner("mlp", 5, 2), "auroc", seed)
    return task, mask


def test_beats_confident_learning_and_its_own_target_only_round_on_planted_flips():
    """The two ingredients each earn their keep on a small target: boosted trees (a boundary
    no linear model fits) and cross-fitting on the source (more data than the 60 targets)."""
    auc = {"cl": [], "round0": [], "crossfit": []}
    for seed in range(3):
        task, mask = threshold_task(seed)
        for key, valuer in (("cl", ConfidentLearningValuer()), ("round0", CrossfitConfidenceValuer(model="boosted", rounds=0)),
                            ("crossfit", CrossfitConfidenceValuer(model="boosted"))):
            auc[key].append(roc_auc_score(mask, -valuer.value(task).values))
    mean = {k: float(np.mean(v)) for k, v in auc.items()}
    assert mean["crossfit"] >= mean["cl"] + 0.04, mean
    assert mean["crossfit"] >= mean["round0"] + 0.01, mean
    assert min(np.subtract(auc["crossfit"], auc["cl"])) > 0, auc


def test_round_zero_is_the_target_model_and_no_sample_scores_itself():
    from sklearn.ensemble import HistGradientBoostingClassifier

    task, _ = easy_task(n_source=120, n_target=60)
    xs, ys = np.asarray(task.source.x), np.asarray(task.source.y)
    out0 = CrossfitConfidenceValuer(model="boosted", rounds=0, iterations=30, support=0).value(task)
    clf = HistGradientBoostingClassifier(max_depth=2, max_iter=30, learning_rate=0.05, early_stopping=False,
                                         random_state=derive_seed(task.seed, "crossfit-confidence", 0) % 2**32)
    clf.fit(task.target.x, task.target.y)
    np.testing.assert_allclose(out0.values, clf.predict_proba(xs)[np.arange(120), ys], atol=1e-6)
    assert out0.fits == 1

    # rounds=1: flipping sample i's label changes neither the model that scores i's fold
    # (fitted without that fold) nor the other samples of the fold, and turns i's value
    # into 1 - value (binary)
    out = CrossfitConfidenceValuer(model="boosted", rounds=1, folds=4, iterations=30, support=0).value(task)
    assert out.fits == 5
    folds = rng(task.seed, "crossfit-confidence", "folds").permutation(120) % 4
    i = 7
    flipped = ys.copy()
    flipped[i] = 1 - flipped[i]
    task2 = ValuationTask(Split(xs, flipped).frozen(), task.target, 2, task.learner, task.metric, task.seed)
    out2 = CrossfitConfidenceValuer(model="boosted", rounds=1, folds=4, iterations=30, support=0).value(task2)
    same = folds == folds[i]
    same[i] = False
    np.testing.assert_allclose(out2.values[same], out.values[same], atol=1e-9)
    np.testing.assert_allclose(out2.values[i], 1 - out.values[i], atol=1e-9)
    assert not np.allclose(out2.values[folds != folds[i]], out.values[folds != folds[i]])


def test_support_test_ranks_noisy_features_last_by_distance_and_flags_nothing_clean():
    from valbench_plugins.valuers.crossfit_confidence import nearest

    task, _ = easy_task(n_source=150, n_target=80)
    clean = CrossfitConfidenceValuer(model="boosted", iterations=20).value(task)
    assert clean.info["outside_support"] == 0 and (clean.values >= 0).all()
    # feature noise of growing size on the first 30 samples (labels untouched)
    g = rng(1, "noise")
    x = np.array(task.source.x)
    phi = np.linspace(2.0, 8.0, 30)
    x[:30] += phi[:, None] * g.standard_normal((30, x.shape[1])).astype(np.float32)
    noisy = ValuationTask(Split(x, task.source.y).frozen(), task.target, 2, task.learner, task.metric, task.seed)
    out = CrossfitConfidenceValuer(model="boosted", iterations=20).value(noisy)
    far = out.values < 0
    assert out.info["outside_support"] == far.sum() >= 20 and far[:30].sum() == far.sum()
    np.testing.assert_allclose(out.values[far], -nearest(x[far], np.asarray(task.target.x)), rtol=1e-6)
    # the label-confidence ranking of the rest is what it was without the support test
    assert roc_auc_score(np.arange(150) < 30, -out.values) > 0.95
    off = CrossfitConfidenceValuer(model="boosted", iterations=20, support=0).value(noisy)
    assert off.info["outside_support"] == 0 and roc_auc_score(np.arange(150) < 30, -off.values) < 0.8


def test_nearest_matches_brute_force():
    from valbench_plugins.valuers.crossfit_confidence import nearest

    g = np.random.default_rng(0)
    a, b = g.standard_normal((7, 3)), g.standard_normal((5, 3))
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(nearest(a, b, chunk=3), d.min(axis=1), atol=1e-9)
    self_d = np.linalg.norm(a[:, None] - a[None], axis=2) + np.diag(np.full(7, np.inf))
    np.testing.assert_allclose(nearest(a, a, exclude_self=True, chunk=2), self_d.min(axis=1), atol=1e-9)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ValueError, match="needs labels"):
        CrossfitConfidenceValuer().value(unsupervised_task())
    task, _ = easy_task(n_source=3, n_target=20)
    with pytest.raises(ValueError, match="folds=5 is larger than the source set"):
        CrossfitConfidenceValuer().value(task)
    task, _ = easy_task(n_source=30, n_target=20)
    with pytest.raises(ValueError, match="select_folds=30 is larger than the target set"):
        CrossfitConfidenceValuer(select_folds=30).value(task)
    for params, msg in (({"folds": 1}, "folds must be >= 2"), ({"rounds": -1}, "rounds must be >= 0"),
                        ({"model": "svm"}, "model must be"), ({"model": "logistic+logistic"}, "model must be"),
                        ({"model": "logistic+"}, "model must be"), ({"select_folds": 1}, "select_folds must be >= 2"), ({"learning_rate": 0.0}, "learning_rate"),
                        ({"iterations": 0}, "iterations"), ({"max_depth": 0}, "max_depth"),
                        ({"support": -1.0}, "support must be >= 0")):
        with pytest.raises(ValueError, match=msg) as err:
            CrossfitConfidenceValuer(**params).validate()
        assert "\n" not in str(err.value)


def xor_or_linear_task(kind: str, seed: int = 0, n_source: int = 200, n_target: int = 150):
    """``xor``: label = (x0 > 0.5) xor (x1 > 0.5) over 4 uniform features (no linear model
    does better than chance; depth-2 trees fit it exactly). ``linear``: label = sign of a
    random direction over 30 Gaussian features (one hyperplane; additive depth-2 trees need
    many splits to approximate it from 100 rows). 20% of the source labels flipped."""
    g = rng(seed, "xor-or-linear")
    d = 4 if kind == "xor" else 30
    w = g.standard_normal(d)

    def split(n):
        x = (g.uniform(0, 1, (n, d)) if kind == "xor" else g.standard_normal((n, d))).astype(np.float32)
        y = ((x[:, 0] > 0.5) ^ (x[:, 1] > 0.5)) if kind == "xor" else x @ w > 0
        return x, y.astype(np.int64)

    xs, ys = split(n_source)
    mask = (g.random(n_source) < 0.2).astype(np.int8)
    xt, yt = split(n_target)
    learner = Learner("mlp", d, 2, epochs=5)  # a weak learner here: never the best candidate
    return ValuationTask(Split(xs, np.where(mask == 1, 1 - ys, ys)).frozen(), Split(xt, yt).frozen(), 2,
                         learner, "auroc", seed), mask


@pytest.mark.parametrize("kind, best, worst", [("xor", "boosted", "logistic"), ("linear", "logistic", "boosted")])
def test_auto_picks_the_model_with_the_better_heldout_target_likelihood(kind, best, worst):
    """On a problem only trees can fit, auto picks the trees; on a linear one, the linear
    model; the choice is the argmax of the held-out target log-likelihoods it records, and
    its values are then exactly those of the chosen model fixed by hand (which finds the
    flipped labels better than the rejected one)."""
    task, mask = xor_or_linear_task(kind)
    fast = {"support": 0, "iterations": 50, "learning_rate": 0.2}
    out = CrossfitConfidenceValuer(**fast).value(task)
    loglik = out.info["heldout_loglik"]
    assert out.info["model"] == best, loglik
    assert loglik[best] == max(loglik.values()) and loglik[best] > loglik[worst] + 0.1, loglik
    assert out.fits == 1 + 5 + 3 * 3
    fixed = CrossfitConfidenceValuer(model=best, **fast).value(task)
    np.testing.assert_array_equal(out.values, fixed.values)
    other = CrossfitConfidenceValuer(model=worst, **fast).value(task)
    assert roc_auc_score(mask, -out.values) > roc_auc_score(mask, -other.values) + 0.05


def test_fit_learner_sample_weight_multiplies_the_class_balance():
    """The learner candidate trains with the trust weights: weights of one change nothing
    (also under class balance), and zero weight on one class's rows removes what they teach."""
    import dataclasses

    import torch

    from valbench.training.models import fit_learner, predict

    task, _ = easy_task(n_source=120, n_target=60)
    x, y = np.asarray(task.target.x), np.asarray(task.target.y)
    learner = dataclasses.replace(task.learner, epochs=40, lr=1e-2, class_balance=True)

    def fit(w):
        return fit_learner(learner, x, y, 2, seed=0, device="cpu", label="w", sample_weight=w)

    plain, ones, zero = fit(None), fit(np.ones(len(y))), fit((y == 0).astype(float))
    for a, b in zip(plain.parameters(), ones.parameters()):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        p_plain, p_zero = (predict(learner, m, x)[:, 1].mean() for m in (plain, zero))
    assert p_zero < p_plain - 0.2, (p_zero, p_plain)


def test_auto_runs_when_a_target_class_has_one_sample():
    # the selection's class-stratified folds then train on one class in one fold: that fit
    # puts all mass on the class it saw (its held-out sample scores the floor), no crash
    task, _ = easy_task(n_source=60, n_target=30)
    y = np.zeros(30, dtype=np.int64)
    y[0] = 1
    one = ValuationTask(task.source, Split(np.asarray(task.target.x), y).frozen(), 2, task.learner, "auroc", 0)
    out = CrossfitConfidenceValuer(iterations=20, support=0).value(one)
    assert np.isfinite(out.values).all() and out.info["model"] in ("boosted", "logistic", "learner") + tuple(
        m for m in out.info["heldout_loglik"] if "+" in m)
