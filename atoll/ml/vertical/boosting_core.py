"""Pure math of SecureBoost: objectives, fixed-point gradients, split search, trees.

Everything here is a pure function of numpy arrays (no parties, no crypto), so
it is tested on its own and shared by the guest, the hosts and the plaintext
mode. Formulas are XGBoost's (Chen and Guestrin, KDD 2016, eqs. 5-7) with the
same conventions as its ``hist`` updater:

* gain of a split = ``G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)``
  (a side with ``H < min_child_weight`` contributes 0), valid only when both
  sides have ``H >= min_child_weight``; a node splits when the best gain is
  ``> 1e-6`` and ``>= gamma`` and both children have ``H > 0``;
* leaf weight ``-G/(H+lambda)`` (0 when ``H < min_child_weight``), times the learning rate;
* features with missing values are scanned twice: missing right (bins
  ``<= t`` left) and missing left (bins ``< t`` plus missing left); ties keep
  the first candidate in (feature, forward-then-backward, bin) order.

Gradients are quantised to integers ``round(g * 2**P)`` with ``P`` chosen so
that every histogram sum stays below ``2**51``: sums of such integers are exact
in float64 and in the encrypted integer domain alike, so the encrypted and the
plaintext modes find bit-identical histograms, splits and leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atoll.errors import ConfigError, DataError

__all__ = [
    "OBJECTIVES", "Objective", "quantize_bits", "quantize", "best_splits", "leaf_weight",
    "calc_gain", "Tree", "SplitInfo",
]

RT_EPS = 1e-6  # XGBoost's kRtEps
SUM_BITS = 51  # |histogram sums| < 2**SUM_BITS (exact in float64)
SLOT_BITS = SUM_BITS + 2  # signed slot width in packed plaintexts


# ----------------------------------------------------------------------------- objectives

@dataclass(frozen=True)
class Objective:
    """A twice-differentiable loss: gradients, initial margin and output transform."""

    name: str

    def n_outputs(self, y: np.ndarray) -> int:
        return int(np.max(y)) + 1 if self.name == "multi:softprob" else 1

    def check_labels(self, y: np.ndarray) -> None:
        if not np.all(np.isfinite(y)):
            raise DataError("labels contain NaN or inf; drop or fill those rows")
        if self.name == "binary:logistic" and not np.all((y == 0) | (y == 1)):
            raise DataError("binary:logistic needs labels 0/1; use objective='multi:softprob' "
                            "for more classes or 'reg:squarederror' for real targets")
        if self.name == "multi:softprob" and (np.any(y < 0) or np.any(y != np.floor(y))):
            raise DataError("multi:softprob needs integer class labels 0 .. K-1")

    def base_margin(self, y: np.ndarray) -> np.ndarray:
        """Initial raw score per output, as XGBoost 3 estimates its intercept.

        Logit of the mean label, the mean label, or centred log class frequencies.
        """
        if self.name == "binary:logistic":
            p = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
            return np.array([np.log(p / (1 - p))])
        if self.name == "reg:squarederror":
            return np.array([float(np.mean(y))])
        # softmax: centred log class frequencies (as XGBoost 3 estimates its intercept vector)
        freq = np.bincount(y.astype(np.int64), minlength=self.n_outputs(y)) / len(y)
        logp = np.log(np.clip(freq, 1e-6, 1.0))
        return logp - logp.mean()

    def grad_hess(self, y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients and hessians, shape (n, K), of the loss at raw scores ``margin`` (n, K)."""
        if self.name == "binary:logistic":
            p = 1.0 / (1.0 + np.exp(-margin[:, 0]))
            return (p - y)[:, None], np.maximum(p * (1 - p), 1e-16)[:, None]
        if self.name == "reg:squarederror":
            return (margin[:, 0] - y)[:, None], np.ones((len(y), 1))
        p = softmax(margin)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
        return p - onehot, np.maximum(2.0 * p * (1 - p), 1e-16)

    def transform(self, margin: np.ndarray) -> np.ndarray:
        if self.name == "binary:logistic":
            return 1.0 / (1.0 + np.exp(-margin[:, 0]))
        if self.name == "reg:squarederror":
            return margin[:, 0]
        return softmax(margin)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


OBJECTIVES = {n: Objective(n) for n in ("binary:logistic", "reg:squarederror", "multi:softprob")}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; use one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


# ----------------------------------------------------------------------------- fixed point

def quantize_bits(n_rows: int, max_abs: float) -> int:
    """Fractional bits P such that ``n_rows * max_abs * 2**P <= 2**SUM_BITS``."""
    if n_rows <= 0 or not max_abs > 0:
        return 40
    p = SUM_BITS - int(np.ceil(np.log2(n_rows * max_abs))) - 1
    return int(min(max(p, -60), 60))  # negative: large targets are rounded to multiples of 2**-p


def quantize(g: np.ndarray, h: np.ndarray, bits: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued float64 copies ``round(g*2**bits[0])``, ``max(round(h*2**bits[1]), 1)``.

    Gradients and hessians have their own scales (``quantize_bits`` of each).
    Hessians are kept >= 1 unit so that every packed row plaintext is positive.
    """
    return np.rint(g * float(2.0 ** bits[0])), np.maximum(np.rint(h * float(2.0 ** bits[1])), 1.0)


# ----------------------------------------------------------------------------- split search

def calc_gain(G: np.ndarray, H: np.ndarray, reg_lambda: float, min_child_weight: float) -> np.ndarray:
    """XGBoost's CalcGain: ``G^2/(H+lambda)``, 0 where ``H < min_child_weight`` or ``H <= 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = G * G / (H + reg_lambda)
    return np.where((H < min_child_weight) | (H <= 0), 0.0, out)


def leaf_weight(G: float, H: float, reg_lambda: float, min_child_weight: float) -> float:
    """XGBoost's CalcWeight without L1 / max_delta_step (learning rate not applied)."""
    if H < min_child_weight or H <= 0:
        return 0.0
    return -G / (H + reg_lambda)


@dataclass(frozen=True)
class SplitInfo:
    """The best split of one node within one party's histogram."""

    gain: float
    feature: int      # index within the party's features
    bin: int          # threshold bin t
    missing_left: bool
    left: tuple[float, float]   # (G_L, H_L)
    right: tuple[float, float]  # (G_R, H_R)


def best_splits(hist: np.ndarray, total: np.ndarray, reg_lambda: float, min_child_weight: float,
                features: np.ndarray | None = None) -> SplitInfo | None:
    """Best split of one node from its histogram.

    ``hist``: (d, B+1, 2) sums of (g, h) per feature and bin, the last bin being
    the missing-value bin; ``total``: (2,) node sums. ``features`` restricts the
    search (column subsampling). Returns None when no split is valid.
    """
    d, nb, _ = hist.shape
    if d == 0:
        return None
    G, H = float(total[0]), float(total[1])
    parent_gain = float(calc_gain(np.array(G), np.array(H), reg_lambda, min_child_weight))
    reg = hist[:, :-1, :]
    # forward: bins <= t left, missing right
    cl = np.cumsum(reg, axis=1)  # (d, B, 2)
    fg_l, fh_l = cl[..., 0], cl[..., 1]
    fg_r, fh_r = G - fg_l, H - fh_l
    # backward: bins >= t right, bins < t and missing left; t runs high to low
    cr = np.cumsum(reg[:, ::-1, :], axis=1)[:, ::-1, :]  # suffix sums: bins >= t
    bg_r, bh_r = cr[..., 0], cr[..., 1]
    bg_l, bh_l = G - bg_r, H - bh_r

    def gains(gl, hl, gr, hr):
        ok = (hl >= min_child_weight) & (hr >= min_child_weight)
        g = calc_gain(gl, hl, reg_lambda, min_child_weight) + calc_gain(gr, hr, reg_lambda, min_child_weight) \
            - parent_gain
        return np.where(ok, g, -np.inf)

    fwd = gains(fg_l, fh_l, fg_r, fh_r)
    bwd = gains(bg_l, bh_l, bg_r, bh_r)[:, ::-1]  # order: t from high to low, as XGBoost scans
    has_missing = (hist[:, -1, 1] != 0) | (hist[:, -1, 0] != 0)
    bwd = np.where(has_missing[:, None], bwd, -np.inf)
    allowed = np.ones(d, dtype=bool) if features is None else np.isin(np.arange(d), features)
    # XGBoost compares float32 gains: near-ties resolve to the first candidate as there
    cand = np.concatenate([fwd, bwd], axis=1).astype(np.float32)  # (d, 2B)
    cand[~allowed] = -np.inf
    flat = int(np.argmax(cand))
    best = float(cand.flat[flat])
    if not np.isfinite(best):
        return None
    best = float(np.float32(best))
    f, k = divmod(flat, cand.shape[1])
    nreg = reg.shape[1]
    if k < nreg:
        t = k
        return SplitInfo(best, f, t, False, (float(fg_l[f, t]), float(fh_l[f, t])),
                         (float(fg_r[f, t]), float(fh_r[f, t])))
    t = nreg - 1 - (k - nreg)  # bins >= t go right: "bins <= t-1 left"
    return SplitInfo(best, f, t - 1, True, (float(bg_l[f, t]), float(bh_l[f, t])),
                     (float(bg_r[f, t]), float(bh_r[f, t])))


def split_ok(s: SplitInfo | None, gamma: float) -> bool:
    """XGBoost's ExpandEntry::IsValid (depth checked by the caller)."""
    return (s is not None and s.gain > RT_EPS and s.gain >= gamma
            and s.left[1] != 0 and s.right[1] != 0)


def go_left(codes: np.ndarray, bin_: int, missing_left: bool, missing_bin: int) -> np.ndarray:
    """Rows (bin codes of one feature) that go left under "bins <= bin_ left"."""
    left = codes.astype(np.int64) <= bin_
    miss = codes == missing_bin
    return np.where(miss, missing_left, left)


# ----------------------------------------------------------------------------- trees

@dataclass
class Tree:
    """One regression tree as the guest stores it.

    Node arrays are indexed by node id (root 0). For an internal node, ``owner``
    names the party that holds its split; the guest stores its own splits'
    (feature, threshold, missing_left) and only the party name for a host's.
    Leaves have ``left == -1`` and their (learning-rate scaled) ``value``.
    """

    output: int = 0  # which output (class) this tree adds to
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    owner: list[str] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    missing_left: list[bool] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add_node(self) -> int:
        self.left.append(-1)
        self.right.append(-1)
        self.owner.append("")
        self.feature.append(-1)
        self.threshold.append(float("nan"))
        self.missing_left.append(False)
        self.gain.append(0.0)
        self.value.append(0.0)
        return len(self.left) - 1

    @property
    def n_nodes(self) -> int:
        return len(self.left)

    def leaves(self) -> list[int]:
        return [i for i in range(self.n_nodes) if self.left[i] < 0]


def reachable_leaves(left: np.ndarray, right: np.ndarray, owner: list[str], me: str,
                     decide, n_rows: int) -> np.ndarray:
    """Leaves each row can reach given only this party's decisions.

    ``decide(node) -> bool array`` (rows going left) is called for the nodes owned
    by ``me``; at other parties' nodes both branches stay possible. Returns a
    (n_rows, n_leaves) boolean matrix, leaves in increasing node id.
    """
    leaves = [i for i in range(len(left)) if left[i] < 0]
    col = {leaf: j for j, leaf in enumerate(leaves)}
    out = np.zeros((n_rows, len(leaves)), dtype=bool)
    stack: list[tuple[int, np.ndarray]] = [(0, np.ones(n_rows, dtype=bool))]
    while stack:
        node, r = stack.pop()
        if left[node] < 0:
            out[:, col[node]] = r
            continue
        if owner[node] == me:
            gl = np.asarray(decide(node), dtype=bool)
            stack.append((int(left[node]), r & gl))
            stack.append((int(right[node]), r & ~gl))
        else:
            stack.append((int(left[node]), r))
            stack.append((int(right[node]), r))
    return out
