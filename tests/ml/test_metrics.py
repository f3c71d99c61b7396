"""atoll.ml.metrics against scikit-learn / hand-computed values, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from atoll.errors import DataError
from atoll.ml import metrics


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    scores = np.clip(0.35 * y + rng.normal(0.3, 0.25, 500), 0.001, 0.999)
    return y, scores


def test_auc_small_hand_example():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_binary_metrics_match_sklearn(binary):
    y, s = binary
    hard = (s >= 0.5).astype(int)
    assert metrics.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert metrics.accuracy(y, hard) == pytest.approx(skm.accuracy_score(y, hard))
    assert metrics.precision(y, hard) == pytest.approx(skm.precision_score(y, hard))
    assert metrics.recall(y, hard) == pytest.approx(skm.recall_score(y, hard))
    assert metrics.f1(y, hard) == pytest.approx(skm.f1_score(y, hard))
    assert metrics.log_loss(y, s) == pytest.approx(skm.log_loss(y, s), rel=1e-9)


def test_ks_equals_max_distance_between_class_cdfs(binary):
    y, s = binary
    # independent computation: KS = max |F_pos(t) - F_neg(t)| over all thresholds
    thresholds = np.unique(s)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    f_pos = np.searchsorted(pos, thresholds, side="right") / pos.size
    f_neg = np.searchsorted(neg, thresholds, side="right") / neg.size
    expected = np.max(np.abs(f_neg - f_pos))
    assert metrics.ks(y, s) == pytest.approx(expected, abs=1e-12)
    curve = metrics.ks_curve(y, s)
    assert curve.ks == pytest.approx(expected, abs=1e-12)
    assert curve.tpr.shape == curve.fpr.shape == curve.thresholds.shape
    roc = metrics.roc_curve(y, s)
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(metrics.auc(y, s), abs=1e-12)


def test_regression_metrics():
    y = np.array([3.0, -0.5, 2.0, 7.0])
    p = np.array([2.5, 0.0, 2.0, 8.0])
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(0.375))
    assert metrics.mae(y, p) == pytest.approx(0.5)
    assert metrics.r2(y, p) == pytest.approx(skm.r2_score(y, p))
    assert metrics.evaluate_regression(y, p)["rmse"] == pytest.approx(np.sqrt(0.375))
    counts, mu = np.array([0.0, 1.0, 4.0]), np.array([0.5, 1.0, 2.0])
    # 2 * sum(y log(y/mu) - (y - mu)) / n, with 0 log 0 = 0
    by_hand = 2 * (0.5 + 0.0 + (4 * np.log(2) - 2)) / 3
    assert metrics.mean_poisson_deviance(counts, mu) == pytest.approx(by_hand)


def test_evaluate_binary_report(binary):
    y, s = binary
    rep = metrics.evaluate_binary(y, s)
    assert set(rep) == {"auc", "ks", "log_loss", "accuracy", "precision", "recall", "f1"}
    assert rep["auc"] == pytest.approx(skm.roc_auc_score(y, s))


@pytest.fixture(scope="module")
def multiclass():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, 600)
    logits = rng.normal(size=(600, 4)) + 1.2 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_multiclass_metrics_match_sklearn(multiclass):
    y, p = multiclass
    rep = metrics.evaluate_multiclass(y, p)
    hard = p.argmax(axis=1)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, hard))
    assert rep["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert rep["auc_ovr"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert rep["f1_macro"] == pytest.approx(skm.f1_score(y, hard, average="macro"))
    assert rep["precision_macro"] == pytest.approx(skm.precision_score(y, hard, average="macro"))
    assert rep["recall_macro"] == pytest.approx(skm.recall_score(y, hard, average="macro"))
    curves = metrics.multiclass_roc_curves(y, p)
    assert sorted(curves) == [0, 1, 2, 3]
    for k, c in curves.items():  # each one-vs-rest curve integrates to that class's AUC
        assert np.trapezoid(c.tpr, c.fpr) == pytest.approx(skm.roc_auc_score(y == k, p[:, k]), abs=1e-12)


@pytest.mark.parametrize("call", [
    lambda: metrics.evaluate_multiclass([0, 1, 4], np.full((3, 3), 1 / 3)),    # label beyond the columns
    lambda: metrics.evaluate_multiclass([0, 1], [0.2, 0.8]),                  # 1-D scores
    lambda: metrics.evaluate_multiclass([0, 1], [[0.5, 0.6], [0.5, 0.5]]),    # rows do not sum to 1
    lambda: metrics.evaluate_multiclass([1, 1], [[0.5, 0.5], [0.5, 0.5]]),    # one class only
    lambda: metrics.evaluate_multiclass([0.5, 1], [[0.5, 0.5], [0.5, 0.5]]),  # not integer labels
])
def test_bad_multiclass_inputs_raise_data_error(call):
    with pytest.raises(DataError):
        call()


@pytest.mark.parametrize("call", [
    lambda: metrics.auc([0, 1, 2], [0.1, 0.2, 0.3]),          # not binary labels
    lambda: metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]),          # one class only
    lambda: metrics.auc([0, 1], [0.1, 0.2, 0.3]),             # length mismatch
    lambda: metrics.rmse([1.0, np.nan], [1.0, 2.0]),          # NaN
    lambda: metrics.accuracy([0, 1], [0.2, 0.7]),             # scores instead of hard labels
    lambda: metrics.log_loss([0, 1], [-0.1, 0.5]),            # not probabilities
    lambda: metrics.mean_poisson_deviance([1.0], [0.0]),      # non-positive mean
    lambda: metrics.rmse([], []),                             # empty
])
def test_bad_inputs_raise_data_error(call):
    with pytest.raises(DataError):
        call()
