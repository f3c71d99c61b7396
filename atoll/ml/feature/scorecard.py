"""Scorecard: points per bin from a logistic model fitted on WOE features (Siddiqi, "Credit Risk Scorecards").

With ``factor = PDO / ln 2`` and ``offset = base_score - factor * ln(base_odds)``, a row whose model log-odds
of the event (label 1, "bad") is ``u = b0 + sum_j b_j * woe_j`` scores ``offset - factor * u``: the score
is ``base_score`` where the odds of a non-event are ``base_odds``, and ``PDO`` more points double them.
The score splits into base points ``offset - factor * b0`` (the guest's; a host's constant term
``c_h`` of hetero LR adds ``-factor * c_h`` to its own share) and, for feature ``j`` in bin ``i``, the
points ``-factor * b_j * woe_ji``: a table each party holds for its own features.

Protocol (scoring): each host sums the points of its own features per row (``-factor * x_woe @ b_h`` from
its WOE columns and its coefficients) and sends the per-row sums to the guest, who adds its base points
and its own features' points.

What each party sees: a host, nothing (it sends); the guest, each host's per-row sum of points, which is
an affine function of the host's partial score that hetero LR's prediction already sends it, never a
host's coefficients, bins or WOE.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import CryptoError, DataError
from atoll.federation import Context

__all__ = ["ScorecardParams", "factor_offset", "points", "score_from_log_odds", "ScorecardGuest", "ScorecardHost"]


class ScorecardParams(BaseModel):
    """Parameters of the scorecard (the one schema of component and facade)."""

    model_config = ConfigDict(extra="forbid")

    base_score: float = 600.0
    pdo: float = Field(50.0, gt=0.0, description="points to double the odds")
    base_odds: float = Field(1.0, gt=0.0, description="odds of a non-event (good:bad) at base_score")


def factor_offset(p: ScorecardParams) -> tuple[float, float]:
    factor = p.pdo / math.log(2.0)
    return factor, p.base_score - factor * math.log(p.base_odds)


def score_from_log_odds(u: np.ndarray, p: ScorecardParams) -> np.ndarray:
    """The score of rows of event log-odds ``u`` (the hand formula)."""
    factor, offset = factor_offset(p)
    return offset - factor * np.asarray(u, np.float64)


def points(woe: np.ndarray, coef: float, p: ScorecardParams) -> np.ndarray:
    """Points of each bin of one feature: ``-factor * coef * woe``."""
    factor, _ = factor_offset(p)
    return -factor * float(coef) * np.asarray(woe, np.float64)


def feature_tables(columns: Sequence[str], coef: np.ndarray, woe: dict[str, np.ndarray],
                   labels: dict[str, list[str]], p: ScorecardParams) -> list[dict[str, Any]]:
    """One party's points table: for each of its model's columns, the points of each of its bins."""
    out = []
    for c, b in zip(columns, np.asarray(coef, np.float64)):
        if c not in woe:
            raise DataError(f"scorecard: column {c!r} has no WOE: the model must be trained on the WOE columns "
                            "of a binning step (woe_transform)")
        w = np.asarray(woe[c], np.float64)
        if w.ndim == 2:
            if w.shape[1] != 1:
                raise DataError("scorecard: multi-class WOE; a scorecard needs a binary label")
            w = w[:, 0]
        out.append({"name": str(c), "coef": float(b), "woe": w, "points": points(w, b, p),
                    "bins": labels.get(c)})
    return out


class ScorecardGuest:
    """Guest side of scoring: its base points and features' points plus each host's per-row sums."""

    def __init__(self, params: ScorecardParams):
        self.params = params

    def score(self, ctx: Context, x_woe: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
        factor, offset = factor_offset(self.params)
        x = np.asarray(x_woe, np.float64)
        total = (offset - factor * float(intercept)) - factor * (x @ np.asarray(coef, np.float64))
        for h in ctx.parties_of("host"):
            part = ctx.recv(h, "points")
            if not isinstance(part, np.ndarray) or part.shape != (len(x),) or part.dtype.kind != "f" \
                    or not np.isfinite(part).all():
                raise CryptoError(f"a host's points are not one finite number per row ({len(x)} rows)")
            total = total + part
        return total


class ScorecardHost:
    """Host side of scoring: the sum of its own features' points per row, sent to the guest."""

    def __init__(self, params: ScorecardParams):
        self.params = params

    def score(self, ctx: Context, x_woe: np.ndarray, coef: np.ndarray, offset: float = 0.0) -> None:
        factor, _ = factor_offset(self.params)
        x = np.asarray(x_woe, np.float64)
        ctx.send("guest", "points", -factor * (x @ np.asarray(coef, np.float64) + float(offset)))
