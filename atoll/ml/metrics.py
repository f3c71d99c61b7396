"""Evaluation metrics for Atoll's models (binary and multiclass classification, regression).

Thin, validated wrappers over scikit-learn where it already does the job, plus
the curves behind the ROC and KS plots (for the board's charts):

    >>> from atoll.ml import metrics
    >>> metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> metrics.evaluate_binary(y, scores)      # {"auc": ..., "ks": ..., "accuracy": ...}
    >>> metrics.evaluate_multiclass(y, proba)   # {"accuracy": ..., "auc_ovr": ..., "f1_macro": ...}
    >>> metrics.evaluate_regression(y, pred)    # {"rmse": ..., "mae": ..., "r2": ...}

Every function takes array-likes, checks shapes and values, and raises
:class:`atoll.errors.DataError` with what to fix instead of numpy's errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from atoll.errors import DataError

__all__ = [
    "KSCurve", "ROCCurve", "accuracy", "auc", "evaluate_binary", "evaluate_multiclass",
    "evaluate_regression", "f1", "ks", "ks_curve", "log_loss", "mae", "mean_poisson_deviance",
    "multiclass_log_loss", "multiclass_roc_curves", "precision", "r2", "recall", "rmse", "roc_curve",
]


# ---------------------------------------------------------------------------- validation
def _vectors(y_true, y_other, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64).ravel()
    b = np.asarray(y_other, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise DataError(f"y_true has {a.size} values but {what} has {b.size}; pass one {what} per row")
    if a.size == 0:
        raise DataError("no rows to evaluate: pass at least one label and one prediction")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError(f"y_true or {what} contains NaN or infinity; drop or impute those rows first")
    return a, b


def _binary(y_true, scores, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    y, s = _vectors(y_true, scores, what)
    labels = np.unique(y)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"binary metrics need labels in {{0, 1}}, got values {labels[:5].tolist()}; "
                        "map the positive class to 1 and the other to 0")
    return y.astype(np.int64), s


def _both_classes(y: np.ndarray, name: str) -> None:
    if np.unique(y).size < 2:
        raise DataError(f"{name} is undefined when y_true holds only one class; "
                        "evaluate on rows that contain both classes")


def _hard(y_pred: np.ndarray) -> np.ndarray:
    if not np.isin(np.unique(y_pred), (0.0, 1.0)).all():
        raise DataError("y_pred must hold hard 0/1 predictions; threshold the scores first "
                        "(e.g. scores >= 0.5)")
    return y_pred.astype(np.int64)


# ---------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class ROCCurve:
    """Points of the ROC curve: false/true positive rates at each threshold (descending)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class KSCurve:
    """The KS chart: cumulative TPR and FPR against the score threshold (descending).

    ``ks`` is the largest gap ``tpr - fpr`` and ``threshold`` the score where it occurs.
    """

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    ks: float
    threshold: float


def roc_curve(y_true, scores) -> ROCCurve:
    """ROC curve of binary labels ``y_true`` (0/1) against real-valued ``scores``."""
    y, s = _binary(y_true, scores)
    _both_classes(y, "the ROC curve")
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    return ROCCurve(fpr=fpr, tpr=tpr, thresholds=thr)


def ks_curve(y_true, scores) -> KSCurve:
    """Kolmogorov–Smirnov chart: TPR and FPR at every distinct score threshold."""
    c = roc_curve(y_true, scores)
    gap = c.tpr - c.fpr
    i = int(np.argmax(gap))
    return KSCurve(thresholds=c.thresholds, tpr=c.tpr, fpr=c.fpr, ks=float(gap[i]),
                   threshold=float(c.thresholds[i]))


# ---------------------------------------------------------------------------- binary
def auc(y_true, scores) -> float:
    """Area under the ROC curve (probability a random positive outranks a random negative)."""
    y, s = _binary(y_true, scores)
    _both_classes(y, "AUC")
    return float(skm.roc_auc_score(y, s))


def ks(y_true, scores) -> float:
    """KS statistic: max over thresholds of TPR − FPR."""
    return ks_curve(y_true, scores).ks


def accuracy(y_true, y_pred) -> float:
    """Share of rows where the hard 0/1 prediction equals the label."""
    y, p = _binary(y_true, y_pred, "y_pred")
    return float(skm.accuracy_score(y, _hard(p)))


def precision(y_true, y_pred) -> float:
    """Positive predictive value; 0.0 when nothing is predicted positive."""
    y, p = _binary(y_true, y_pred, "y_pred")
    return float(skm.precision_score(y, _hard(p), zero_division=0))


def recall(y_true, y_pred) -> float:
    """True positive rate; 0.0 when there is no positive row."""
    y, p = _binary(y_true, y_pred, "y_pred")
    return float(skm.recall_score(y, _hard(p), zero_division=0))


def f1(y_true, y_pred) -> float:
    """Harmonic mean of precision and recall; 0.0 when both are 0."""
    y, p = _binary(y_true, y_pred, "y_pred")
    return float(skm.f1_score(y, _hard(p), zero_division=0))


def log_loss(y_true, proba, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of 0/1 labels under predicted probabilities."""
    y, p = _binary(y_true, proba, "proba")
    if (p < 0).any() or (p > 1).any():
        raise DataError("log_loss needs probabilities in [0, 1]; apply the sigmoid to raw scores")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate_binary(y_true, proba, threshold: float = 0.5) -> dict[str, float]:
    """The usual binary report: AUC, KS, log loss, and accuracy/precision/recall/F1 at ``threshold``."""
    hard = (np.asarray(proba, dtype=np.float64) >= threshold).astype(np.int64)
    return {"auc": auc(y_true, proba), "ks": ks(y_true, proba), "log_loss": log_loss(y_true, proba),
            "accuracy": accuracy(y_true, hard), "precision": precision(y_true, hard),
            "recall": recall(y_true, hard), "f1": f1(y_true, hard)}


# ---------------------------------------------------------------------------- multiclass
def _multiclass(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0 .. K-1 and an (n, K) matrix of class probabilities, checked."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"multiclass metrics need one row of K >= 2 class probabilities per sample, got "
                        f"shape {p.shape}; for two classes pass the probability of class 1 to the binary metrics")
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if y.shape[0] != p.shape[0]:
        raise DataError(f"y_true has {y.size} values but proba has {p.shape[0]} rows; pass one row per sample")
    if y.size == 0:
        raise DataError("no rows to evaluate: pass at least one label and one prediction")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise DataError("y_true or proba contains NaN or infinity; drop or impute those rows first")
    if (y != np.floor(y)).any() or (y < 0).any() or (y >= p.shape[1]).any():
        raise DataError(f"multiclass labels must be the integers 0 .. {p.shape[1] - 1} (one column of proba "
                        f"per class), got values {np.unique(y)[:5].tolist()}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise DataError("proba rows must be probabilities summing to 1 (apply the softmax to raw scores)")
    return y.astype(np.int64), p


def multiclass_log_loss(y_true, proba, eps: float = 1e-15) -> float:
    """Mean negative log-probability of the true class."""
    y, p = _multiclass(y_true, proba)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def multiclass_roc_curves(y_true, proba) -> dict[int, ROCCurve]:
    """One-vs-rest ROC curve of each class present in ``y_true`` with some other class."""
    y, p = _multiclass(y_true, proba)
    if np.unique(y).size < 2:
        raise DataError("ROC curves are undefined when y_true holds only one class")
    return {k: roc_curve(y == k, p[:, k]) for k in np.unique(y).tolist()}


def evaluate_multiclass(y_true, proba) -> dict[str, float]:
    """Accuracy, log loss, macro one-vs-rest AUC and macro precision / recall / F1 (argmax class).

    ``auc_ovr`` averages the one-vs-rest AUC of the classes present in ``y_true`` (as
    scikit-learn's ``roc_auc_score(..., multi_class="ovr", average="macro")`` when every class
    occurs); precision / recall / F1 average over the K classes, 0 where a class is never
    predicted or never present.
    """
    y, p = _multiclass(y_true, proba)
    _both_classes(y, "AUC")
    hard = np.argmax(p, axis=1)
    labels = list(range(p.shape[1]))
    aucs = [skm.roc_auc_score(y == k, p[:, k]) for k in np.unique(y)]
    return {"accuracy": float(np.mean(hard == y)), "log_loss": multiclass_log_loss(y, p),
            "auc_ovr": float(np.mean(aucs)),
            "precision_macro": float(skm.precision_score(y, hard, labels=labels, average="macro",
                                                         zero_division=0)),
            "recall_macro": float(skm.recall_score(y, hard, labels=labels, average="macro", zero_division=0)),
            "f1_macro": float(skm.f1_score(y, hard, labels=labels, average="macro", zero_division=0))}


# ---------------------------------------------------------------------------- regression
def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    y, p = _vectors(y_true, y_pred, "y_pred")
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    y, p = _vectors(y_true, y_pred, "y_pred")
    return float(np.mean(np.abs(y - p)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination (1 is perfect, 0 is the mean predictor)."""
    y, p = _vectors(y_true, y_pred, "y_pred")
    if y.size < 2:
        raise DataError("R² needs at least two rows")
    return float(skm.r2_score(y, p))


def mean_poisson_deviance(y_true, y_pred) -> float:
    """Mean Poisson deviance of counts ``y_true`` (>= 0) against predicted means (> 0)."""
    y, p = _vectors(y_true, y_pred, "y_pred")
    if (y < 0).any():
        raise DataError("Poisson deviance needs non-negative counts in y_true")
    if (p <= 0).any():
        raise DataError("Poisson deviance needs strictly positive predicted means")
    return float(skm.mean_poisson_deviance(y, p))


def evaluate_regression(y_true, y_pred) -> dict[str, float]:
    """RMSE, MAE and R² in one dict."""
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred), "r2": r2(y_true, y_pred)}
