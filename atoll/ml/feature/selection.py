"""Hetero feature selection: every party keeps the columns that pass, learning only which of its own do.

Protocol (guest = label holder with the WOE / IV tables of :mod:`atoll.ml.feature.hetero_binning`):

1. Each party applies the local criteria to its own columns (:func:`local_mask`: missing rate, number of
   distinct values, variance, VIF across both parties' columns from :mod:`atoll.ml.vertical.pearson` (each
   party holds the VIF of its own columns there), the ``drop`` list; the ``keep`` list forces a column in)
   and each host sends the guest two boolean vectors over its columns: which pass the local criteria and
   which are forced in.
2. The guest combines them with the IV of every feature (:func:`combine`): a column stays if it passed the
   local criteria, its IV is at least ``iv_threshold`` and (``min_importance``) its share of a SecureBoost
   model's split gain -- which the guest holds for every party's columns -- is at least that, and, with
   ``top_k``, ranks among the ``top_k`` largest IVs of all parties' surviving columns (ties: guest first,
   then hosts in order, then column order); forced columns always stay.
3. The guest sends each host the boolean vector of its own columns that stay; every party drops the others
   from its data (the same selection is applied again at prediction time).

What each party sees: a host, which of its own columns stay (nothing of the guest's columns, the IVs or the
labels); the guest, which host columns passed the host's local criteria and which were forced (column
names come from the binning step) and the IVs it already had.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation import Context

__all__ = ["SelectionParams", "local_mask", "combine", "HeteroSelectionGuest", "HeteroSelectionHost"]


class SelectionParams(BaseModel):
    """Parameters of feature selection (the one schema of component and facade)."""

    model_config = ConfigDict(extra="forbid")

    iv_threshold: float | None = Field(0.02, ge=0.0, description="drop columns whose IV is below")
    top_k: int | None = Field(None, ge=1, description="keep at most this many columns, by IV, over all parties")
    max_missing_rate: float | None = Field(None, ge=0.0, le=1.0)
    min_unique: int | None = Field(2, ge=1, description="drop columns with fewer distinct non-missing values")
    min_variance: float | None = Field(None, ge=0.0)
    min_importance: float | None = Field(None, ge=0.0, le=1.0, description="drop columns whose share of a "
                                         "SecureBoost model's total split gain is below")
    max_vif: float | None = Field(None, gt=0.0, description="drop columns whose VIF (from a hetero_pearson "
                                  "step over both parties' columns) is above")
    keep: list[str] = Field(default_factory=list, description="columns always kept (each party its own)")
    drop: list[str] = Field(default_factory=list, description="columns always dropped (each party its own)")


def local_mask(x: np.ndarray, columns: Sequence[str], p: SelectionParams,
               vif: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(passes the local criteria, forced in) for each column of one party; ``vif``: this party's columns' VIFs
    (needed with ``max_vif``)."""
    if p.max_vif is not None and vif is None:
        raise ConfigError("max_vif needs the VIF of the columns: inputs: {pearson: PEARSON_STEP.model} (a "
                          "hetero_pearson step with exchange_local: true)")
    x = np.asarray(x, dtype=np.float64)
    n = max(len(x), 1)
    ok = np.ones(len(columns), dtype=bool)
    for j, c in enumerate(columns):
        col = x[:, j]
        nan = np.isnan(col)
        vals = col[~nan]
        if p.max_missing_rate is not None and nan.sum() / n > p.max_missing_rate:
            ok[j] = False
        if p.min_unique is not None and len(np.unique(vals)) < p.min_unique:
            ok[j] = False
        if p.min_variance is not None and (vals.var() if vals.size else 0.0) < p.min_variance:
            ok[j] = False
        if c in p.drop:
            ok[j] = False
        if p.max_vif is not None and vif is not None:
            if c not in vif:
                raise DataError(f"column {c!r} has no VIF: run the hetero_pearson step on the same columns")
            if not vif[c] <= p.max_vif:  # an infinite (or NaN) VIF: perfectly collinear
                ok[j] = False
    forced = np.array([c in p.keep for c in columns], dtype=bool)
    clash = [c for c in columns if c in p.keep and c in p.drop]
    if clash:
        raise ConfigError(f"columns {clash} are both in keep and in drop")
    return ok, forced


def combine(parties: dict[str, tuple[list[str], np.ndarray, np.ndarray]], iv: dict[str, float] | None,
            p: SelectionParams, gains: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The columns each party keeps: ``parties[party] = (column keys, local ok, forced)`` in guest-then-host
    order; ``iv[key]`` is each column's IV (keys as in the guest's binning tables); ``gains[party]`` the split
    gain of each of that party's columns in a SecureBoost model (for ``min_importance``)."""
    if iv is None and (p.iv_threshold is not None or p.top_k is not None):
        raise ConfigError("selection by IV (iv_threshold, top_k) needs the binning step's model: "
                          "inputs: {binning: BINNING_STEP.model}")
    if p.min_importance is not None:
        if gains is None or set(gains) != set(parties) or any(
                np.shape(gains[q]) != (len(parties[q][0]),) for q in parties):
            raise ConfigError("min_importance needs a secureboost step's model over the same columns of every "
                              "party: inputs: {importance: SECUREBOOST_STEP.model}")
        total = float(sum(np.asarray(g, np.float64).sum() for g in gains.values()))
    rank: list[tuple[float, int, str, int]] = []
    out: dict[str, np.ndarray] = {}
    for order, (party, (keys, ok, forced)) in enumerate(parties.items()):
        keep = ok.copy()
        if p.min_importance is not None:
            share = np.asarray(gains[party], np.float64) / total if total > 0 else np.zeros(len(keys))
            keep &= share >= p.min_importance
        if iv is not None:
            missing = [k for k in keys if k not in iv]
            if missing:
                raise DataError(f"columns {missing[:5]} have no IV: bin them in the binning step first")
            vals = np.array([iv[k] for k in keys], dtype=np.float64)
            if p.iv_threshold is not None:
                keep &= vals >= p.iv_threshold
            rank += [(-vals[j], order, party, j) for j in np.flatnonzero(keep & ~forced)]
        out[party] = keep
    if p.top_k is not None:
        n_forced = sum(int(f.sum()) for _, _, f in parties.values())
        room = max(p.top_k - n_forced, 0)
        for _, _, party, j in sorted(rank)[room:]:
            out[party][j] = False
    for party, (_, _, forced) in parties.items():
        out[party] = out[party] | forced
    return out


def _ivs(tables: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {k: float(t["iv_rank"]) for k, t in tables.items()}


class HeteroSelectionGuest:
    """Guest side: gathers the hosts' local masks, decides every party's columns by IV, tells each host its own."""

    def __init__(self, params: SelectionParams):
        self.params = params

    def fit(self, ctx: Context, x: np.ndarray, columns: Sequence[str],
            tables: dict[str, dict[str, Any]] | None, host_columns: dict[str, list[str]] | None = None,
            vif: dict[str, float] | None = None, gains: dict[str, np.ndarray] | None = None
            ) -> dict[str, np.ndarray]:
        """``{party: kept mask}`` over every party's columns (the guest's own under ``ctx.party``)."""
        p = self.params
        ok, forced = local_mask(x, columns, p, vif)
        parties = {ctx.party: ([str(c) for c in columns], ok, forced)}
        for h in ctx.parties_of("host"):
            msg = ctx.recv(h, "local")
            if not isinstance(msg, dict) or set(msg) != {"ok", "forced"}:
                raise CryptoError("a host's selection masks have an unexpected layout")
            hok, hforced = np.asarray(msg["ok"]), np.asarray(msg["forced"])
            names = (host_columns or {}).get(h)
            if hok.dtype != bool or hforced.dtype != bool or hok.shape != hforced.shape or hok.ndim != 1 or (
                    names is not None and len(names) != len(hok)):
                raise CryptoError("a host's selection masks do not match its binned columns")
            keys = [f"{h}.{c}" for c in names] if names is not None else [f"{h}.{j}" for j in range(len(hok))]
            parties[h] = (keys, hok, hforced)
        keep = combine(parties, None if tables is None else _ivs(tables), p, gains)
        for h in ctx.parties_of("host"):
            ctx.send(h, "keep", keep[h])
        return keep


class HeteroSelectionHost:
    """Host side: applies the local criteria, learns which of its own columns stay."""

    def __init__(self, params: SelectionParams):
        self.params = params

    def fit(self, ctx: Context, x: np.ndarray, columns: Sequence[str],
            vif: dict[str, float] | None = None) -> np.ndarray:
        ok, forced = local_mask(x, columns, self.params, vif)
        ctx.send("guest", "local", {"ok": ok, "forced": forced})
        keep = ctx.recv("guest", "keep")
        if not isinstance(keep, np.ndarray) or keep.dtype != bool or keep.shape != ok.shape:
            raise CryptoError("the guest's selection does not match this host's columns")
        if (forced & ~keep).any():
            raise CryptoError("the guest dropped a column this host forced in")
        return keep
