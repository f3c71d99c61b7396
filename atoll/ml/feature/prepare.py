"""Data preparation, each party on its own columns, fitted on training rows: imputation, capping, encoding.

Nothing is sent: every function here is local to one party (the job components ``impute`` and ``encode``
call them at each party). Fitted state is a wire-typed dict (saved as the step's model part) that
:func:`apply_impute` / :func:`apply_encode` apply again to validation, test and prediction rows.

* imputation: ``mean``, ``median``, ``most_frequent`` or ``constant`` per column, from the training rows;
  a column with no value at all is filled with ``fill_value`` (or refused, if none is given);
* capping: values clipped to the training quantiles ``[cap_lower, cap_upper]`` (outliers);
* sampling (:func:`sample_positions`, the guest's draw for the ``sample`` component, which sends the drawn
  ids to the hosts): a random or label-stratified share of the rows, without replacement (ids stay unique);
* encoding of categorical columns (numeric codes): ``onehot`` (one 0/1 column per training category,
  ``COLUMN=VALUE``; unseen categories and missing values give all zeros) or ``ordinal`` (the category's rank
  among the training categories, ``-1`` for unseen or missing).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError

__all__ = ["ImputeParams", "EncodeParams", "SampleParams", "fit_impute", "apply_impute", "fit_encode", "apply_encode",
           "sample_positions"]


class ImputeParams(BaseModel):
    """Parameters of imputation and capping (the one schema of the ``impute`` component)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["mean", "median", "most_frequent", "constant"] = "median"
    fill_value: float | None = None  # strategy constant; also the fill of columns with no value at all
    columns: list[str] | None = None  # default: every column of the party
    cap_lower: float | None = Field(None, ge=0.0, le=1.0, description="clip below this training quantile")
    cap_upper: float | None = Field(None, ge=0.0, le=1.0, description="clip above this training quantile")


class EncodeParams(BaseModel):
    """Parameters of categorical encoding (the one schema of the ``encode`` component)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["onehot", "ordinal"] = "onehot"
    columns: list[str] = Field(default_factory=list, description="categorical columns (each party its own)")
    max_categories: int = Field(64, ge=1)


def fit_impute(x: pd.DataFrame, p: ImputeParams) -> dict[str, Any]:
    cols = [c for c in (p.columns if p.columns is not None else list(x.columns)) if c in x.columns]
    fills, lo, hi = [], [], []
    for c in cols:
        v = x[c].to_numpy(np.float64)
        v = v[~np.isnan(v)]
        if p.strategy == "constant" or v.size == 0:
            if p.fill_value is None:
                raise DataError(f"impute: column {c!r} has no value in the training rows; give fill_value")
            fill = float(p.fill_value)
        elif p.strategy == "mean":
            fill = float(v.mean())
        elif p.strategy == "median":
            fill = float(np.median(v))
        else:
            vals, counts = np.unique(v, return_counts=True)
            fill = float(vals[np.argmax(counts)])  # the smallest of the most frequent values
        fills.append(fill)
        lo.append(float(np.quantile(v, p.cap_lower)) if p.cap_lower is not None and v.size else -np.inf)
        hi.append(float(np.quantile(v, p.cap_upper)) if p.cap_upper is not None and v.size else np.inf)
    return {"columns": cols, "fill": np.asarray(fills, np.float64), "lower": np.asarray(lo, np.float64),
            "upper": np.asarray(hi, np.float64)}


def apply_impute(x: pd.DataFrame, state: dict[str, Any]) -> pd.DataFrame:
    cols = list(state["columns"])
    missing = [c for c in cols if c not in x.columns]
    if missing:
        raise DataError(f"impute: columns {missing} are missing from the data")
    out = x.copy()
    v = out[cols].to_numpy(np.float64)
    v = np.where(np.isnan(v), np.asarray(state["fill"])[None, :], v)
    out[cols] = np.clip(v, np.asarray(state["lower"]), np.asarray(state["upper"]))
    return out


def fit_encode(x: pd.DataFrame, p: EncodeParams) -> dict[str, Any]:
    cols = [c for c in p.columns if c in x.columns]
    cats = []
    for c in cols:
        v = x[c].to_numpy(np.float64)
        u = np.unique(v[~np.isnan(v)])
        if len(u) > p.max_categories:
            raise DataError(f"encode: column {c!r} has {len(u)} categories, more than max_categories="
                            f"{p.max_categories}; is it really categorical?")
        cats.append(u)
    return {"method": p.method, "columns": cols, "categories": cats}


def apply_encode(x: pd.DataFrame, state: dict[str, Any]) -> pd.DataFrame:
    cols = list(state["columns"])
    missing = [c for c in cols if c not in x.columns]
    if missing:
        raise DataError(f"encode: columns {missing} are missing from the data")
    parts: dict[str, np.ndarray] = {}
    cats = dict(zip(cols, state["categories"]))
    for c in x.columns:
        v = x[c].to_numpy(np.float64)
        if c not in cats:
            parts[c] = v
            continue
        u = np.asarray(cats[c], np.float64)
        if state["method"] == "onehot":
            for val in u:
                parts[f"{c}={val:g}"] = (v == val).astype(np.float64)
        else:
            pos = np.searchsorted(u, v)
            hit = (pos < len(u)) & (u[np.minimum(pos, len(u) - 1)] == v) if len(u) else np.zeros(len(v), bool)
            parts[c] = np.where(hit, pos, -1).astype(np.float64)
    return pd.DataFrame(parts, index=x.index)



class SampleParams(BaseModel):
    """Parameters of row sampling (the one schema of the ``sample`` component)."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.5, gt=0.0, le=1.0, description="rows drawn, as a share of the rows")
    stratify: bool = Field(True, description="draw the same share of every label class")


def sample_positions(n: int, y: np.ndarray | None, p: SampleParams, seed: int) -> np.ndarray:
    """Row positions drawn (sorted, to keep file order); stratified by ``y`` when asked and given."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if p.stratify and y is not None:
        _, inv = np.unique(np.asarray(y), return_inverse=True)
        groups = [np.flatnonzero(inv == k) for k in range(int(inv.max()) + 1)] if n else []
    picked = [rng.choice(g, size=int(round(len(g) * p.fraction)), replace=False) for g in groups]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
