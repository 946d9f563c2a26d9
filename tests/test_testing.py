"""The conformance kit catches what it promises to catch: each broken plugin below fails
the named check with a message that says what to change, and declared failures are
reported, never hidden."""
from __future__ import annotations

import numpy as np
import pytest

from valbench.errors import PluginError
from valbench.testing import FAILED, PASSED, SKIPPED, XFAIL, XPASS, check_plugin, checks, parametrize_with_checks
from valbench.types import Split, Splits, Truth


class GoodValuer:
    """Distance of each sample to its own class's target centroid (a real, simple valuer)."""

    name = "good"
    supervised_only = True

    def __init__(self, *, k: int = 3):
        self.k = k

    def validate(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def check(self, task):
        if self.k > len(task.target):
            raise ValueError(f"k={self.k} is larger than the target set")

    def value(self, task):
        x = np.asarray(task.source.x).reshape(len(task.source), -1)
        t = np.asarray(task.target.x).reshape(len(task.target), -1)
        centroids = np.stack([t[np.asarray(task.target.y) == c].mean(axis=0) for c in range(task.n_classes)])
        return -((x - centroids[np.asarray(task.source.y)]) ** 2).sum(axis=1)


def outcome(cls, name, **kw):
    return {o.check: o for o in check_plugin(cls, **kw)}[name]


def broken(**members):
    return type("Broken", (GoodValuer,), {"name": "broken", **members})


def test_a_correct_valuer_passes_every_check_that_applies():
    expected = {c.name: PASSED for c in checks(GoodValuer)}
    expected["unsupervised"] = SKIPPED  # supervised_only: reported as skipped with the reason, not as passed
    report = check_plugin(GoodValuer)
    assert {o.check: o.status for o in report} == expected
    assert "supervised_only" in {o.check: o for o in report}["unsupervised"].detail


@pytest.mark.parametrize("value, check, message", [
    (lambda self, task: list(GoodValuer.value(self, task)), "returns-finite-array", "is a list; return a numpy"),
    (lambda self, task: np.full(len(task.source), np.nan), "returns-finite-array", "NaN or infinite"),
    (lambda self, task: np.zeros(len(task.source) + 1), "returns-finite-array", r"expected \(150,\)"),
    (lambda self, task: np.arange(len(task.source)), "returns-finite-array", "dtype int64; return floats"),
    (lambda self, task: np.random.default_rng().standard_normal(len(task.source)), "deterministic", "same task.seed"),
])
def test_broken_answers_are_caught(value, check, message):
    got = outcome(broken(value=value), check)
    assert got.status == FAILED and __import__("re").search(message, got.detail), got


def test_writing_to_the_inputs_is_caught_with_a_message():
    def value(self, task):
        x = task.source.x
        x.flags.writeable = True  # what numpy allows on a view: the kit must still see it
        x[0] = 99.0
        return GoodValuer.value(self, task)

    got = outcome(broken(value=value), "inputs-unchanged")
    assert got.status == FAILED and "task.source.x" in got.detail and "writeable" in got.detail, got


def test_the_four_bugs_a_review_found_are_caught():
    """k=0 accepted, k larger than the target set, a crash without labels, a crash on image x."""
    class FourBugs:
        name = "four-bugs"

        def __init__(self, *, k: int = 10):
            self.k = k

        def value(self, task):
            x = np.asarray(task.source.x)
            t = np.asarray(task.target.x)
            if x.ndim != 2:
                raise ValueError("expected 2-D features")  # bug: image-shaped x
            d = ((x[:, None, :] - t[None]) ** 2).sum(-1)
            near = np.argpartition(d, self.k - 1, axis=1)[:, :self.k]  # bugs: k=0, k > n_target
            return (task.target.y[near] == task.source.y[:, None]).mean(axis=1).astype(float)  # bug: no labels

    report = {o.check: o for o in check_plugin(FourBugs)}
    assert report["parameter-edges"].status == FAILED and "k=0" in report["parameter-edges"].detail
    assert report["small-task"].status == FAILED and "12 source and 6 target" in report["small-task"].detail
    assert report["unsupervised"].status == FAILED and "supervised_only = True" in report["unsupervised"].detail
    assert report["image-shaped"].status == FAILED and "image-shaped" in report["image-shaped"].detail


def test_values_that_ignore_the_sample_order_are_caught():
    sorted_values = broken(value=lambda self, task: np.sort(GoodValuer.value(self, task)))
    assert outcome(sorted_values, "values-follow-samples").status == FAILED


def test_parameters_must_be_stored_unchanged():
    def __init__(self, *, k: int = 3):
        self.k = k * 2

    assert outcome(broken(__init__=__init__), "stores-parameters").status == FAILED


def test_known_failures_are_reported_with_their_reason_and_must_stay_true():
    noise = broken(value=lambda self, task: np.random.default_rng(task.seed).standard_normal(len(task.source)),
                   known_failures={"beats-chance": "noise on purpose"})
    got = outcome(noise, "beats-chance")
    assert got.status == XFAIL and got.detail == "noise on purpose"
    stale = broken(known_failures={"beats-chance": "was noise once"})
    assert outcome(stale, "beats-chance").status == XPASS
    with pytest.raises(PluginError, match="known_failures names no check 'beats-chanse'"):
        checks(broken(known_failures={"beats-chanse": "typo"}))


class FlipAll:
    name = "flip-all"
    truth_kind = "mask"
    supervised_only = True

    def apply(self, source, n_classes, rng):
        y = (np.asarray(source.y) + 1) % n_classes
        return Split(source.x, y), Truth("mask", np.ones(len(source), dtype=np.int8))


def test_a_correct_corruption_passes_and_global_randomness_is_caught():
    assert {o.status for o in check_plugin(FlipAll) if o.check != "unsupervised"} == {PASSED}
    sloppy = type("Sloppy", (FlipAll,), {"name": "sloppy", "apply": lambda self, s, k, rng: (
        Split(s.x, s.y), Truth("mask", (np.random.random(len(s)) < 0.5).astype(np.int8)))})
    assert outcome(sloppy, "uses-only-its-rng").status == FAILED
    in_place = type("InPlace", (FlipAll,), {"name": "in-place", "apply": lambda self, s, k, rng: (
        s.y.setflags(write=True) or s, Truth("mask", np.zeros(len(s), dtype=np.int8)))})
    assert outcome(in_place, "valid-output").status == FAILED
    nan_features = type("NaNs", (FlipAll,), {"name": "nans", "apply": lambda self, s, k, rng: (
        Split(np.full(s.x.shape, np.nan, dtype=np.float32), s.y), Truth("mask", np.zeros(len(s), dtype=np.int8)))})
    report = {o.check: o for o in check_plugin(nan_features)}
    assert report["uses-only-its-rng"].status == PASSED  # NaN equals NaN here: not mistaken for randomness
    assert report["valid-output"].status == FAILED and "finite" in report["valid-output"].detail
    out_of_range = type("OutOfRange", (FlipAll,), {"name": "out-of-range", "apply": lambda self, s, k, rng: (
        Split(s.x, np.full(len(s), k, dtype=np.int64)), Truth("mask", np.ones(len(s), dtype=np.int8)))})
    assert "labels must be int class indices" in outcome(out_of_range, "valid-output").detail


class LowAUROC:
    """AUROC of the values themselves: lower is better, and says so."""

    name = "low-auroc"
    truth_kind = "mask"
    higher_is_better = False

    def score(self, values, truth):
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(truth.values, values))


def test_metric_orientation_must_match_higher_is_better():
    assert outcome(LowAUROC, "orientation-and-extremes").status == PASSED
    lying = type("Lying", (LowAUROC,), {"name": "lying", "higher_is_better": True})
    got = outcome(lying, "orientation-and-extremes")
    assert got.status == FAILED and "higher_is_better=True" in got.detail


class Shuffled:
    name = "shuffled"

    def fingerprint(self):
        return "fixed"

    def load(self, seed):
        g = np.random.default_rng()  # bug: ignores the seed
        x = g.standard_normal((30, 3)).astype(np.float32)
        y = np.arange(30) % 2
        return Splits(Split(x[:10], y[:10]), Split(x[10:20], y[10:20]), Split(x[20:], y[20:]), n_classes=2)


def test_a_dataset_that_ignores_its_seed_is_caught():
    report = {o.check: o.status for o in check_plugin(Shuffled)}
    assert report["same-seed-same-splits"] == FAILED and report["shapes-and-labels"] == PASSED


def test_a_dataset_whose_files_are_missing_is_skipped_with_the_reason():
    from valbench_plugins.datasets.blog import Blog

    got = outcome(Blog, "shapes-and-labels")
    assert got.status == SKIPPED and "BlogFeedback" in got.detail


@parametrize_with_checks([GoodValuer, FlipAll, LowAUROC])
def test_parametrize_with_checks_gives_one_test_per_check(check):
    check()


def test_parametrize_ids_and_strict_xfail():
    noise = broken(known_failures={"beats-chance": "why"})
    mark = parametrize_with_checks([noise]).args
    ids = [p.id for p in mark[1]]
    assert ids[0] == "broken:registers" and "broken:beats-chance" in ids
    xfail = next(p for p in mark[1] if p.id == "broken:beats-chance").marks[0]
    assert xfail.name == "xfail" and xfail.kwargs == {"reason": "why", "strict": True}


def test_state_set_in_check_is_not_there_in_value():
    """The harness calls check(task) and value(task) on separate instances; so does the kit."""
    def check(self, task):
        self.classes = np.unique(task.target.y)

    def value(self, task):
        assert len(self.classes) == 2
        return GoodValuer.value(self, task)

    got = outcome(broken(check=check, value=value), "returns-finite-array")
    assert got.status == FAILED and "AttributeError" in got.detail


def test_changing_the_annotations_is_caught_as_such():
    def value(self, task):
        task.source_annotations.pop("quality", None)  # a dict the kit hands out: the harness's is read-only
        return GoodValuer.value(self, task)

    needy = broken(value=value, requires_annotations=("quality",))
    got = outcome(needy, "inputs-unchanged")
    assert got.status == FAILED and "source_annotations" in got.detail


def test_a_seed_other_than_zero_is_tried():
    def value(self, task):
        v = GoodValuer.value(self, task)
        return v if task.seed == 0 else np.full(len(v), np.nan)

    got = outcome(broken(value=value), "image-shaped")
    assert got.status == FAILED and "NaN" in got.detail


def test_valuation_bookkeeping_is_checked():
    from valbench.types import Valuation

    bad_fits = broken(value=lambda self, task: Valuation(GoodValuer.value(self, task), fits=-5))
    assert "fits must be None or a count" in outcome(bad_fits, "returns-finite-array").detail
    bad_info = broken(value=lambda self, task: Valuation(GoodValuer.value(self, task), info={"x": object()}))
    assert "JSON-serialisable" in outcome(bad_info, "returns-finite-array").detail


def test_test_params_are_checked_like_command_line_parameters():
    with pytest.raises(PluginError, match="test_params names no parameter 'kk'; parameters: k"):
        checks(broken(test_params={"kk": 2}))
    with pytest.raises(PluginError, match=r"test_params\['k'\] = '2' is not of the parameter's type"):
        checks(broken(test_params={"k": "2"}))


def test_a_parameter_the_command_line_cannot_give_is_refused_at_registration():
    def __init__(self, *, ks: list = None):
        self.ks = ks

    got = outcome(broken(__init__=__init__), "registers")
    assert got.status == FAILED and "parameter 'ks' is annotated" in got.detail


def test_an_encoder_that_mixes_rows_is_caught():
    class BatchCentred:
        key = "batch-centred"

        def encode(self, x, device="cpu"):
            x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
            return x - x.mean(axis=0)  # row i depends on the whole batch

    class WithEncoder(Shuffled):
        name = "with-encoder"

        def load(self, seed):
            g = np.random.default_rng(seed)
            x = g.standard_normal((30, 3)).astype(np.float32)
            y = np.arange(30) % 2
            return Splits(Split(x[:10], y[:10]), Split(x[10:20], y[10:20]), Split(x[20:], y[20:]), n_classes=2,
                          encoder=BatchCentred())

    got = outcome(WithEncoder, "shapes-and-labels")
    assert got.status == FAILED and "row i must depend on x[i] only" in got.detail
