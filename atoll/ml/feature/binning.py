"""Feature binning and WOE / IV: the pure helpers (no parties, no network).

Every party bins its own columns with these functions; :mod:`atoll.ml.feature.hetero_binning` is the
federated protocol that brings the label counts of a host's bins to the guest under HE, and
:func:`plain_binning` is its centralised twin (the same bins and counts on the joined data).

Bins of one feature (:class:`FeatureBins`):

* ``quantile``: the cut points of SecureBoost's binning (:func:`atoll.ml.vertical.boosting_binning.quantile_cuts`,
  XGBoost's pruned exact quantile summary; values compared in float32 as there);
* ``bucket``: equal-width cuts between the training minimum and maximum;
* ``chimerge``: quantile cuts of ``init_bins`` fine bins, then the adjacent pair with the smallest
  chi-square statistic (Kerber 1992, as FATE's optimal binning) is merged until ``max_bin`` bins remain
  and no pair is below ``chi_threshold`` (``merge_by: iv`` / ``ks``: the pair whose merge loses the least
  IV / KS, FATE's other optimal criteria); with ``monotone`` merging goes on until the WOE is monotone;
* categorical columns (named in ``categorical``): one bin per category seen in training.

Bin ``b`` of a numeric value ``x`` is the number of cuts ``<= x``; missing values (NaN), and categories
not seen in training, go to a bin of their own, always the last one (``n_bins - 1``), kept even when empty.

WOE / IV (FATE's convention, events = label 1 = "bad"): for bin ``i`` with ``e_i`` events and ``n_i``
non-events out of ``E`` and ``N``, ``woe_i = ln((e_i / E) / (n_i / N))`` and
``IV = sum_i (e_i / E - n_i / N) * woe_i``. A bin with no event or no non-event gets ``adjustment`` (0.5)
added to both counts; an empty bin has WOE 0 and adds nothing to the IV. Multi-class labels are taken
one class against the rest (one WOE column and one IV per class; a feature's IV for ranking is the
largest of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError
from atoll.ml.vertical.boosting_binning import quantile_cuts

__all__ = ["BinningParams", "FeatureBins", "fit_bins", "bin_codes", "class_codes", "count_by_bin",
           "woe_iv", "chimerge_groups", "plain_binning", "bins_to_wire", "bins_from_wire"]


class BinningParams(BaseModel):
    """Parameters of hetero feature binning and WOE / IV (the one schema of component and facade)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["quantile", "bucket", "chimerge"] = "quantile"
    max_bin: int = Field(10, ge=2, le=1024, description="bins of values per feature (the missing bin aside)")
    init_bins: int = Field(32, ge=2, le=1024, description="chimerge: fine quantile bins merged from")
    merge_by: Literal["chi2", "iv", "ks"] = Field("chi2", description="chimerge: merge the adjacent pair of "
                                                  "smallest chi2, or the one losing the least IV / KS")
    chi_threshold: float = Field(0.0, ge=0.0, description="chimerge: also merge while a pair's chi2 is below")
    monotone: bool = Field(False, description="chimerge: merge until the WOE is monotone over the value bins")
    categorical: list[str] = Field(default_factory=list, description="columns binned by category")
    adjustment: float = Field(0.5, gt=0.0, description="added to both counts of a bin with a zero count")
    share_woe: bool = Field(False, description="send each host the WOE of its own bins (host-side WOE "
                            "transform and scorecard); leaks each host bin's event rate to that host")
    scheme: Literal["paillier", "ou"] = "paillier"
    key_bits: int = Field(2048, ge=512)
    chunk_bytes: int = Field(4 << 20, ge=1 << 16, description="largest message of encrypted labels")
    n_jobs: int = Field(1, ge=1)


@dataclass
class FeatureBins:
    """The bins of one feature, private to its owner: cut points (numeric) or categories (categorical)."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: np.ndarray  # numeric: sorted interior cuts; categorical: sorted categories

    @property
    def n_bins(self) -> int:
        """Bins of this feature, the missing-value bin (the last) included."""
        return len(self.edges) + (2 if self.kind == "numeric" else 1)

    @property
    def missing_bin(self) -> int:
        return self.n_bins - 1

    def codes(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        nan = np.isnan(x)
        if self.kind == "numeric":
            b = np.searchsorted(self.edges, x.astype(np.float32).astype(np.float64), side="right")
        else:
            b = np.searchsorted(self.edges, x)
            b = np.minimum(b, len(self.edges))
            unseen = self.edges[np.minimum(b, len(self.edges) - 1)] != x if len(self.edges) else np.ones_like(nan)
            b[unseen] = self.missing_bin
        b[nan] = self.missing_bin
        return b.astype(np.int64)

    def labels(self) -> list[str]:
        """A readable name of each bin (for reports)."""
        if self.kind == "categorical":
            return [f"= {v:g}" for v in self.edges] + ["missing / unseen"]
        e = [f"{v:.6g}" for v in self.edges]
        if not e:
            return ["all", "missing"]
        return [f"< {e[0]}"] + [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:])] + [f">= {e[-1]}", "missing"]


def _bucket_cuts(x: np.ndarray, n: int) -> np.ndarray:
    x = x[~np.isnan(x)].astype(np.float32).astype(np.float64)
    if x.size == 0 or x.min() == x.max():
        return np.empty(0)
    cuts = np.linspace(x.min(), x.max(), n + 1)[1:-1].astype(np.float32).astype(np.float64)
    return np.unique(cuts)


def fit_bins(x: np.ndarray, name: str, params: BinningParams) -> FeatureBins:
    """The initial bins of one column (ChiMerge starts from ``init_bins`` quantile bins; see :func:`merge_bins`)."""
    x = np.asarray(x, dtype=np.float64)
    if np.isinf(x).any():
        raise DataError(f"column {name!r} holds +-inf; replace infinities by NaN (missing) or a finite value")
    if name in params.categorical:
        cats = np.unique(x[~np.isnan(x)])
        if len(cats) > 4096:
            raise DataError(f"categorical column {name!r} has {len(cats)} categories (at most 4096)")
        return FeatureBins(name, "categorical", cats)
    if params.method == "bucket":
        return FeatureBins(name, "numeric", _bucket_cuts(x, params.max_bin))
    n = params.init_bins if params.method == "chimerge" else params.max_bin
    return FeatureBins(name, "numeric", quantile_cuts(x, n))


def bin_codes(x: np.ndarray, bins: Sequence[FeatureBins]) -> np.ndarray:
    """(rows, d) bin codes of the columns of ``x`` under their bins."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(bins):
        raise DataError(f"expected {len(bins)} columns to bin, got shape {x.shape}")
    return np.stack([b.codes(x[:, j]) for j, b in enumerate(bins)], axis=1) if bins else np.zeros((len(x), 0), int)


def class_codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..K-1, classes) of a label; a binary label must be 0/1 (1 = event)."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise DataError("the label has missing values; drop or fill those rows before binning")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError("the label has a single class: WOE / IV need events and non-events")
    if len(classes) == 2 and not np.array_equal(classes.astype(np.float64), [0.0, 1.0]):
        raise DataError(f"a binary label must be 0/1 (1 = event), got classes {classes.tolist()}; map it with "
                        "the reader's positive_label")
    return codes.astype(np.int64), classes


def count_by_bin(codes: np.ndarray, n_bins: int, ycodes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_bins, n_classes) integer counts of each class in each bin of one feature (the plaintext kernel)."""
    flat = np.asarray(codes, np.int64) * n_classes + np.asarray(ycodes, np.int64)
    return np.bincount(flat, minlength=n_bins * n_classes).reshape(n_bins, n_classes)


def woe_iv(counts: np.ndarray, adjustment: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(woe (n_bins, C), iv (C,)) of per-bin class counts (n_bins, K): C = 1 for K = 2 (event = class 1),
    else C = K (each class against the rest)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise DataError("counts must be (bins, classes) with at least two classes")
    total = counts.sum(axis=1, keepdims=True)
    ev = counts[:, 1:2] if counts.shape[1] == 2 else counts
    nev = total - ev
    big_e, big_n = ev.sum(axis=0), nev.sum(axis=0)
    if (big_e == 0).any() or (big_n == 0).any():
        raise DataError("a class has no rows (or all of them): WOE / IV need events and non-events")
    empty = (ev == 0) & (nev == 0)
    adj = ((ev == 0) | (nev == 0)) & ~empty
    e = np.where(adj, ev + adjustment, ev) / big_e
    n = np.where(adj, nev + adjustment, nev) / big_n
    with np.errstate(divide="ignore", invalid="ignore"):
        woe = np.where(empty, 0.0, np.log(np.where(empty, 1.0, e) / np.where(empty, 1.0, n)))
    iv = np.where(empty, 0.0, (e - n) * woe).sum(axis=0)
    return woe, iv


def _chi2(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square statistic of two adjacent bins' class counts (Kerber's ChiMerge)."""
    m = np.stack([a, b]).astype(np.float64)
    tot = m.sum()
    if tot == 0:
        return 0.0
    expected = m.sum(axis=1, keepdims=True) * m.sum(axis=0, keepdims=True) / tot
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (m - expected) ** 2 / expected, 0.0)
    return float(terms.sum())


def _ks(counts: np.ndarray) -> float:
    """KS of bins (rows = bins in value order): the largest gap between the cumulative class shares (the
    largest over classes against the rest for multi-class counts)."""
    c = np.asarray(counts, np.float64)
    tot = c.sum(axis=0)
    ev = c[:, 1:2] if c.shape[1] == 2 else c
    nev = c.sum(axis=1, keepdims=True) - ev
    e_tot, n_tot = ev.sum(axis=0), nev.sum(axis=0)
    if (e_tot == 0).any() or (n_tot == 0).any() or not tot.all():
        return 0.0
    return float(np.abs(np.cumsum(ev, axis=0) / e_tot - np.cumsum(nev, axis=0) / n_tot).max())


def _pair_scores(value: list[np.ndarray], missing: np.ndarray, merge_by: str, adjustment: float) -> list[float]:
    """How little merging each adjacent pair costs: chi-square of the pair (ChiMerge), or the IV / KS lost."""
    if merge_by == "chi2":
        return [_chi2(value[j], value[j + 1]) for j in range(len(value) - 1)]
    base = np.vstack(value)

    def metric(m: np.ndarray) -> float:
        if merge_by == "ks":
            return _ks(m)
        return float(np.max(woe_iv(np.vstack([m, missing]), adjustment)[1]))

    before = metric(base)
    out = []
    for j in range(len(value) - 1):
        merged = np.vstack(value[:j] + [value[j] + value[j + 1]] + value[j + 2:])
        out.append(before - metric(merged))
    return out


def chimerge_groups(counts: np.ndarray, max_bin: int, chi_threshold: float = 0.0, monotone: bool = False,
                    adjustment: float = 0.5, merge_by: str = "chi2") -> np.ndarray:
    """Bottom-up merging of the value bins of one feature (the last row of ``counts`` is the missing bin, never
    merged): ``group[i]`` = the merged bin of fine bin ``i`` (non-decreasing, the missing bin last).

    ``merge_by``: ``chi2`` merges the adjacent pair with the smallest chi-square (ChiMerge; also every pair
    below ``chi_threshold``), ``iv`` / ``ks`` the pair whose merge loses the least IV / KS."""
    counts = np.asarray(counts, dtype=np.int64)
    value = [counts[i].copy() for i in range(len(counts) - 1)]
    members = [[i] for i in range(len(value))]

    def merge(j: int) -> None:
        value[j] = value[j] + value[j + 1]
        members[j] += members[j + 1]
        del value[j + 1], members[j + 1]

    while len(value) > 1:
        scores = _pair_scores(value, counts[-1], merge_by, adjustment)
        j = int(np.argmin(scores))
        if len(value) > max_bin or (merge_by == "chi2" and scores[j] < chi_threshold):
            merge(j)
            continue
        if monotone:
            w = woe_iv(np.vstack(value + [counts[-1]]), adjustment)[0][:-1, 0]
            d = np.diff(w)
            if not ((d >= 0).all() or (d <= 0).all()):
                merge(j)
                continue
        break
    group = np.empty(len(counts), dtype=np.int64)
    for g, ms in enumerate(members):
        group[ms] = g
    group[-1] = len(members)
    return group


def merge_bins(bins: FeatureBins, group: np.ndarray) -> FeatureBins:
    """The numeric bins after merging fine bins by ``group`` (from :func:`chimerge_groups`)."""
    keep = [i for i in range(len(bins.edges)) if group[i] != group[i + 1]]  # cut i separates bins i and i + 1
    return FeatureBins(bins.name, bins.kind, np.asarray(bins.edges)[keep])


def merge_counts(counts: np.ndarray, group: np.ndarray) -> np.ndarray:
    out = np.zeros((int(group.max()) + 1, counts.shape[1]), dtype=np.int64)
    np.add.at(out, group, counts)
    return out


def feature_iv(iv: np.ndarray) -> float:
    """One IV per feature for ranking: the IV (binary), the largest one-vs-rest IV (multi-class)."""
    return float(np.max(iv))


def table(bins: FeatureBins, counts: np.ndarray, adjustment: float) -> dict[str, Any]:
    """One feature's fitted binning: bins, counts, WOE and IV (a wire-typed dict)."""
    woe, iv = woe_iv(counts, adjustment)
    return {"counts": np.asarray(counts, np.int64), "woe": woe, "iv": iv, "iv_rank": feature_iv(iv),
            "labels": bins.labels() if bins is not None else None}


def fit_local(x: np.ndarray, names: Sequence[str], params: BinningParams) -> list[FeatureBins]:
    """A party's initial bins of its own columns."""
    return [fit_bins(x[:, j], str(n), params) for j, n in enumerate(names)]


def plain_binning(x: np.ndarray, names: Sequence[str], y: np.ndarray, params: BinningParams
                  ) -> tuple[list[FeatureBins], dict[str, dict[str, Any]]]:
    """The centralised twin: bins, counts, WOE and IV of every column of the joined data ``x``."""
    ycodes, classes = class_codes(y)
    k = len(classes)
    bins = fit_local(np.asarray(x, np.float64), names, params)
    codes = bin_codes(x, bins)
    out: dict[str, dict[str, Any]] = {}
    for j, b in enumerate(bins):
        counts = count_by_bin(codes[:, j], b.n_bins, ycodes, k)
        if params.method == "chimerge" and b.kind == "numeric":
            group = chimerge_groups(counts, params.max_bin, params.chi_threshold, params.monotone,
                                    params.adjustment, params.merge_by)
            b = bins[j] = merge_bins(b, group)
            counts = merge_counts(counts, group)
        out[b.name] = table(b, counts, params.adjustment)
    return bins, out


def bins_to_wire(bins: Sequence[FeatureBins]) -> list[dict[str, Any]]:
    return [{"name": b.name, "kind": b.kind, "edges": np.asarray(b.edges, np.float64)} for b in bins]


def bins_from_wire(items: Sequence[dict[str, Any]]) -> list[FeatureBins]:
    out = []
    for d in items:
        if d.get("kind") not in ("numeric", "categorical"):
            raise DataError("a saved binning has an unknown bin kind")
        edges = np.asarray(d["edges"], np.float64)
        if edges.ndim != 1 or (np.diff(edges) <= 0).any():
            raise DataError("a saved binning has edges that are not strictly increasing")
        out.append(FeatureBins(str(d["name"]), d["kind"], edges))
    return out
