"""Stability: population stability index (PSI) per feature and on the score, characteristic stability (CSI).

For bins with expected shares ``e_i`` (training rows) and actual shares ``a_i`` (scoring rows),
``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)``; a share of zero is replaced by ``eps`` (1e-4) in the
logarithm's argument and its factor, so empty bins count without making the index infinite (the
convention of most scorecard tools). The usual reading: < 0.1 stable, 0.1 - 0.25 some shift, > 0.25 shift.

Characteristic stability of one feature of a scorecard: ``CSI = sum_i (a_i - e_i) * points_i``, the shift of
the mean points that feature contributes.

Feature PSIs use each party's own bins (:mod:`atoll.ml.feature.binning`), computed by that party on its own
columns: nothing is sent. The score's PSI is the guest's, on deciles of the training scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError

__all__ = ["StabilityParams", "psi", "csi", "score_edges", "score_counts"]

EPS = 1e-4


class StabilityParams(BaseModel):
    """Parameters of the ``stability`` component (the one schema)."""

    model_config = ConfigDict(extra="forbid")

    score_bins: int = Field(10, ge=2, le=100, description="quantile bins of the training scores")
    eps: float = Field(EPS, gt=0.0, lt=0.01)
    warn_above: float = Field(0.25, ge=0.0, description="log a warning for a PSI above this")


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        raise DataError("stability: no rows to compare")
    return counts / total


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> tuple[float, np.ndarray]:
    """(PSI, per-bin terms) of two count vectors over the same bins."""
    e, a = _shares(expected), _shares(actual)
    if e.shape != a.shape:
        raise DataError("stability: expected and actual counts are over different bins")
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    terms = (a - e) * np.log(a / e)
    return float(terms.sum()), terms


def csi(expected: np.ndarray, actual: np.ndarray, points: np.ndarray) -> float:
    """Characteristic stability: the shift of a feature's mean points between the two populations."""
    return float(((_shares(actual) - _shares(expected)) * np.asarray(points, np.float64)).sum())


def score_edges(score: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior edges of ``n_bins`` quantile bins of the training scores (duplicates merged)."""
    s = np.asarray(score, np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise DataError("stability: scores must be one finite value per row")
    return np.unique(np.quantile(s, np.linspace(0, 1, n_bins + 1)[1:-1]))


def score_counts(score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, np.asarray(score, np.float64), side="right"),
                       minlength=len(edges) + 1)


def table(name: str, expected: np.ndarray, actual: np.ndarray, eps: float) -> dict[str, Any]:
    value, terms = psi(expected, actual, eps)
    return {"name": name, "psi": value, "expected": np.asarray(expected, np.int64),
            "actual": np.asarray(actual, np.int64), "terms": terms}
