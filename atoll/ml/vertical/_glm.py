"""Shared machinery of Atoll's vertical generalised linear models (logistic, linear, Poisson).

The three models differ only in a few pure functions (the residual, the loss and
the mean function); the protocol — who encrypts what, who decrypts what, how
masks travel — is written once here, in :class:`GLMGuest`, :class:`GLMHost` and
:class:`GLMArbiter`. The public modules (:mod:`~atoll.ml.vertical.hetero_lr`,
:mod:`~atoll.ml.vertical.hetero_linr`, :mod:`~atoll.ml.vertical.hetero_poisson`)
bind a family, document the protocol step by step and export the role classes
and the scikit-learn style facades.

The residual of every family is written ``d = scale * (alpha * V + beta)`` where
``V`` is what the hosts contribute (the sum of their partial scores
``U_H = sum_h X_h w_h``, or, for Poisson, the product ``P_H = prod_h exp(X_h w_h)``)
and ``alpha``, ``beta``, ``scale`` are known to the guest alone:

=========  ==========================  =====================  =========  =====
family     d (per row)                 alpha                  beta       scale
=========  ==========================  =====================  =========  =====
logistic   0.25 u + 0.5 - y (Taylor)   1                      u_g+2-4y   0.25
linear     u - y                       1                      u_g - y    1
poisson    e * exp(u) - y              e * exp(u_g)           -y         1
=========  ==========================  =====================  =========  =====

(``u = u_g + U_H`` is the full linear score, ``e`` the exposure.) Gradients are
``X_p.T @ d / n_batch`` for each party ``p``. The loss of a batch is
``const + coef_v . V + coef_u . U_H + coef_sq * sum(U_H**2)`` (see :func:`loss_parts`),
so it can be evaluated under encryption from a few ciphertexts.

Masks: a party that needs a ciphertext decrypted adds a fresh encryption of a
random integer ``R`` (uniform on ``[0, 2**(b + 40))`` where ``2**b`` bounds the
fixed-point plaintext), the key holder decrypts ``G + R`` exactly with
``decrypt_int`` and returns it, and the party subtracts ``R``: the key holder's
view is statistically close (distance <= 2**-40) to uniform and the unmasked
result is exact, so runs are reproducible bit for bit from ``random_state``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from atoll.crypto import he
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import ConfigError, DataError
from atoll.ml.optim import Optimizer, OptimizerParams

log = logging.getLogger(__name__)

FAMILIES = ("logistic", "linear", "poisson")
MODES = ("arbiter", "two_party")
EARLY_STOPPING = ("weight_diff", "loss", "none")
APPROXIMATIONS = ("taylor", "guest_taylor")
MASK_SLACK_BITS = 40
LOG2 = math.log(2.0)


# =============================================================================== parameters
@dataclass
class GLMParams:
    """Everything every party of one vertical GLM job must agree on.

    ``batch_size=None`` (or ``<= 0``, or ``>= n_rows``) means full-batch gradient descent.
    ``early_stopping``: ``"weight_diff"`` stops when the norm of the change of the joint
    weight vector over an epoch falls below ``tol``; ``"loss"`` when the (Taylor) loss
    changes by less than ``tol``; ``"none"`` runs ``max_iter`` epochs.
    ``precision_bits`` / ``mul_precision_bits``: fixed-point fractional bits of encrypted
    values and of plaintext multipliers (``None``: the HE engine's defaults).
    ``approximation`` (logistic only): ``"taylor"`` expands the logistic loss around 0
    (Hardy et al., FATE: ``d = 0.25 u + 0.5 - y``); ``"guest_taylor"`` expands it around
    the guest's own score ``u_g``, linear in the hosts' part only:
    ``d = sigmoid(u_g) + sigmoid'(u_g) U_H - y``, much closer to the exact gradient when the
    guest's features (and the intercept) carry most of the signal. It costs the guest one
    ciphertext-times-plaintext product per row, and the encrypted loss is not available
    (``loss_history`` stays empty; ``early_stopping="loss"`` is refused).
    ``precondition``: every party centres and whitens its *own* features locally (PCA
    whitening, see :func:`whitening`) before training and maps its coefficients back after:
    first-order methods then converge in a few epochs on correlated features. The protocol
    and what crosses the wire are unchanged; penalties then apply to the whitened weights.
    ``precompute``: offline/online split. Before each epoch every party computes the random
    factors of that epoch's encryptions (``pk.precompute``) and the parties synchronise;
    the guest's ``epoch_seconds`` then time the online phase only, ``offline_seconds`` the rest.
    """

    family: str = "logistic"
    mode: str = "arbiter"
    approximation: str = "taylor"
    max_iter: int = 30
    batch_size: int | None = None
    tol: float = 1e-4
    early_stopping: str = "weight_diff"
    compute_loss: bool = True
    fit_intercept: bool = True
    precondition: bool = False
    precompute: bool = False
    optimizer: OptimizerParams = field(default_factory=OptimizerParams)
    scheme: str = "paillier"
    key_bits: int = 2048
    precision_bits: int | None = None
    mul_precision_bits: int | None = None
    random_state: int | None = None
    n_jobs: int = 1

    def validate(self) -> GLMParams:
        if self.family not in FAMILIES:
            raise ConfigError(f"family={self.family!r} is not supported; use one of {FAMILIES}")
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not supported; use 'arbiter' (third party holds "
                              "the key) or 'two_party' (no arbiter)")
        if self.early_stopping not in EARLY_STOPPING:
            raise ConfigError(f"early_stopping={self.early_stopping!r}; use one of {EARLY_STOPPING}")
        if int(self.max_iter) < 1:
            raise ConfigError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.approximation not in APPROXIMATIONS:
            raise ConfigError(f"approximation={self.approximation!r}; use one of {APPROXIMATIONS}")
        if self.approximation != "taylor" and self.family != "logistic":
            raise ConfigError("approximation='guest_taylor' applies to logistic regression only")
        if self.approximation == "guest_taylor" and self.early_stopping == "loss":
            raise ConfigError("approximation='guest_taylor' has no encrypted loss; use "
                              "early_stopping='weight_diff' or 'none'")
        if self.tol < 0:
            raise ConfigError(f"tol must be >= 0, got {self.tol}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool)
                                            or not isinstance(self.batch_size, (int, np.integer))):
            raise ConfigError(f"batch_size must be a whole number of rows, or None for full batch; "
                              f"got {self.batch_size!r}")
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs < 1:
            raise ConfigError(f"n_jobs must be a whole number >= 1 (HE worker processes per party), "
                              f"got {self.n_jobs!r}")
        if self.key_bits < 512:
            raise ConfigError(f"key_bits={self.key_bits} is too small; use 2048 (default) or 3072 "
                              "(1024 only in tests)")
        self.optimizer.validate()
        return self

    @property
    def needs_loss(self) -> bool:
        if self.approximation == "guest_taylor":
            return False
        return self.compute_loss or self.early_stopping == "loss"

    @property
    def needs_weight_diff(self) -> bool:
        """Whether parties report their weight-change norm each epoch (only for that stopping rule)."""
        return self.early_stopping == "weight_diff"

    def plan(self) -> dict:
        """The parameters that must match between parties (checked at the start of a job)."""
        return {"family": self.family, "mode": self.mode, "approximation": self.approximation,
                "max_iter": int(self.max_iter),
                "batch_size": -1 if self.batch_size is None else int(self.batch_size),
                "early_stopping": self.early_stopping, "needs_loss": bool(self.needs_loss),
                "scheme": self.scheme, "tol": float(self.tol)}


@dataclass
class GuestModel:
    """The guest's half of a trained model: its coefficients and the intercept.

    ``epoch_seconds``: wall time of each epoch as the guest saw it (for benchmarks);
    ``offline_seconds``: the randomness precomputation before each epoch (``precompute``).
    """

    family: str
    coef: np.ndarray
    intercept: float
    n_iter: int
    converged: bool
    loss_history: list[float]
    epoch_seconds: list[float] = field(default_factory=list)
    offline_seconds: list[float] = field(default_factory=list)


@dataclass
class HostModel:
    """A host's half of a trained model: the coefficients of its own features only.

    ``offset`` is a constant this host adds to its partial scores (non-zero only with
    ``precondition``, which centres the host's features).
    """

    family: str
    coef: np.ndarray
    n_iter: int
    converged: bool
    offset: float = 0.0


@dataclass
class ArbiterReport:
    """What the arbiter keeps from a run: the loss curve and when it stopped."""

    n_iter: int
    converged: bool
    loss_history: list[float]


# =============================================================================== pure math
def host_share(family: str, u_h: np.ndarray) -> np.ndarray:
    """What a host contributes for its partial score ``u_h``: ``u_h`` or ``exp(u_h)`` (Poisson)."""
    return np.exp(u_h) if family == "poisson" else np.asarray(u_h, dtype=np.float64)


def combine_shares(family: str, shares: Sequence[np.ndarray]) -> np.ndarray:
    """``V`` from the hosts' shares: their sum, or their product for Poisson."""
    out = np.zeros_like(shares[0]) if family != "poisson" else np.ones_like(shares[0])
    for s in shares:
        out = out * s if family == "poisson" else out + s
    return out


def residual_parts(family: str, u_g: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None,
                   approximation: str = "taylor") -> tuple[np.ndarray | None, np.ndarray, float]:
    """``(alpha, beta, scale)`` with ``d = scale * (alpha * V + beta)``; ``alpha`` None means 1."""
    if family == "logistic" and approximation == "guest_taylor":
        s = 0.5 * (1.0 + np.tanh(0.5 * u_g))
        return s * (1.0 - s), s - y, 1.0
    if family == "logistic":
        return None, u_g + 2.0 - 4.0 * y, 0.25
    if family == "linear":
        return None, u_g - y, 1.0
    e = np.ones_like(u_g) if exposure is None else exposure
    return e * np.exp(u_g), -np.asarray(y, dtype=np.float64), 1.0


def residual(family: str, u_g: np.ndarray, v: np.ndarray, y: np.ndarray,
             exposure: np.ndarray | None = None, approximation: str = "taylor") -> np.ndarray:
    """The plaintext residual ``d`` (what the protocol computes under encryption)."""
    alpha, beta, scale = residual_parts(family, u_g, y, exposure, approximation)
    return scale * ((v if alpha is None else alpha * v) + beta)


@dataclass
class LossParts:
    """A batch loss as ``(const + coef_v.V + coef_u.U_H + coef_sq * sum(U_H**2)) / n``."""

    const: float
    coef_v: np.ndarray | None
    coef_u: np.ndarray | None
    coef_sq: float


def loss_parts(family: str, u_g: np.ndarray, y: np.ndarray,
               exposure: np.ndarray | None = None) -> LossParts:
    """Guest-side coefficients of the batch loss.

    logistic (second-order Taylor around 0, labels ``s = 2y - 1``):
    ``log 2 - s u / 2 + u**2 / 8``; linear: ``(u - y)**2 / 2``;
    Poisson (negative log-likelihood up to ``log y!``): ``mu - y * log(mu)``.
    """
    if family == "logistic":
        s = 2.0 * y - 1.0
        const = float(np.sum(LOG2 - 0.5 * s * u_g + 0.125 * u_g ** 2))
        return LossParts(const, -0.5 * s + 0.25 * u_g, None, 0.125)
    if family == "linear":
        r = u_g - y
        return LossParts(float(np.sum(0.5 * r ** 2)), r, None, 0.5)
    log_e = 0.0 if exposure is None else np.log(exposure)
    alpha, _, _ = residual_parts(family, u_g, y, exposure)
    const = float(np.sum(-y * (u_g + log_e)))
    return LossParts(const, alpha, -np.asarray(y, dtype=np.float64), 0.0)


def batch_loss(family: str, u: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> float:
    """Mean loss of a batch from the full score ``u`` (plaintext twin of the encrypted loss)."""
    if family == "logistic":
        s = 2.0 * y - 1.0
        return float(np.mean(LOG2 - 0.5 * s * u + 0.125 * u ** 2))
    if family == "linear":
        return float(np.mean(0.5 * (u - y) ** 2))
    log_e = 0.0 if exposure is None else np.log(exposure)
    return float(np.mean(np.exp(u + log_e) - y * (u + log_e)))


def mean_function(family: str, score: np.ndarray, exposure: np.ndarray | None = None) -> np.ndarray:
    """The model's prediction from the linear score: sigmoid, identity or ``exposure * exp``."""
    score = np.asarray(score, dtype=np.float64)
    if family == "logistic":
        return 0.5 * (1.0 + np.tanh(0.5 * score))
    if family == "linear":
        return score
    return np.exp(score) * (1.0 if exposure is None else exposure)


def batches(n: int, batch_size: int | None, perm: np.ndarray | None) -> list[np.ndarray | slice]:
    """Row selections of one epoch: one full slice, or consecutive chunks of ``perm``."""
    if perm is None:
        return [slice(0, n)]
    return [np.sort(perm[i:i + batch_size]) for i in range(0, n, batch_size)]


def is_full_batch(n: int, batch_size: int | None) -> bool:
    return batch_size is None or batch_size <= 0 or batch_size >= n


def epoch_permutation(rng: np.random.Generator, n: int, batch_size: int | None) -> np.ndarray | None:
    """The guest's shuffle for one epoch (None for full batch)."""
    return None if is_full_batch(n, batch_size) else rng.permutation(n).astype(np.int64)


def whitening(x: np.ndarray, rel_tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Local PCA whitening of one party's features: ``(mean, T)`` with ``(x - mean) @ T`` white.

    Directions with variance below ``rel_tol`` times the largest are dropped (collinear columns).
    Coefficients ``w'`` learned on the whitened features map back as ``coef = T @ w'`` with the
    constant ``-mean @ coef``.
    """
    mean = x.mean(axis=0)
    cov = np.atleast_2d(np.cov(x - mean, rowvar=False, bias=True))
    lam, vec = np.linalg.eigh(cov)
    keep = lam > rel_tol * max(float(lam.max()), 1e-300)
    return mean, vec[:, keep] / np.sqrt(lam[keep])


def prepare(x: np.ndarray, precondition: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The features a party trains on, and the whitening ``(mean, T)`` to undo (None when off)."""
    if not precondition:
        return x, None, None
    mean, t = whitening(x)
    return (x - mean) @ t, mean, t


def restore(w: np.ndarray, mean: np.ndarray | None, t: np.ndarray | None) -> tuple[np.ndarray, float]:
    """``(coef, offset)`` on the original features from weights learned on prepared ones."""
    if t is None:
        return w, 0.0
    coef = t @ w
    return coef, float(-mean @ coef)


def with_intercept(x: np.ndarray, fit_intercept: bool) -> np.ndarray:
    return np.hstack([np.ones((x.shape[0], 1)), x]) if fit_intercept else x


def penalty_mask(n_weights: int, fit_intercept: bool) -> np.ndarray:
    mask = np.ones(n_weights, dtype=bool)
    if fit_intercept:
        mask[0] = False
    return mask


def should_stop(params: GLMParams, losses: list[float], weight_diff: float) -> bool:
    """The convergence rule shared by the coordinator and the plaintext twin."""
    if params.early_stopping == "weight_diff":
        return weight_diff < params.tol
    if params.early_stopping == "loss":
        return len(losses) >= 2 and abs(losses[-1] - losses[-2]) < params.tol
    return False


def encryptions_per_epoch(params: GLMParams, role: str, n_rows: int, n_weights: int) -> int:
    """How many fresh random factors a party's encryptions of one epoch use (an upper bound)."""
    n_batches = 1 if is_full_batch(n_rows, params.batch_size) else math.ceil(n_rows / params.batch_size)
    per_row = 1
    if role == "guest" and params.mode == "two_party" and params.family == "poisson":
        per_row = 2  # [[alpha]] and [[beta]]
    if role == "host" and params.family == "poisson" and params.needs_loss:
        per_row = 2  # [[exp(u)]] and [[u]]
    return per_row * n_rows + n_batches * (n_weights + 4)


def ids_digest(ids: Sequence[Any] | None, n_rows: int) -> str:
    """SHA-256 over the row ids in order (the row count alone when ids are unknown)."""
    h = hashlib.sha256(f"rows={n_rows};".encode())
    if ids is not None:
        for i in ids:
            h.update(str(i).encode())
            h.update(b"\x00")
    return h.hexdigest()


# =============================================================================== plaintext twin
def fit_plaintext(blocks: Sequence[np.ndarray], y: np.ndarray, params: GLMParams,
                  exposure: np.ndarray | None = None) -> tuple[list[np.ndarray], int, list[float]]:
    """Centralised twin of the protocol: the same batches, residuals, optimizers and stopping rule.

    ``blocks[0]`` are the guest's features, ``blocks[1:]`` the hosts'. Returns the weights per
    block as learned (the guest's first, intercept at index 0 when fitted; on the whitened
    features with ``precondition``), the epochs run and the losses.
    """
    params.validate()
    y = np.asarray(y, dtype=np.float64)
    xs = [prepare(np.asarray(b, dtype=np.float64), params.precondition)[0] for b in blocks]
    xs[0] = with_intercept(xs[0], params.fit_intercept)
    n = xs[0].shape[0]
    ws = [np.zeros(x.shape[1]) for x in xs]
    opts = [Optimizer(params.optimizer, xs[0].shape[1], penalty_mask(xs[0].shape[1], params.fit_intercept))]
    opts += [Optimizer(params.optimizer, x.shape[1]) for x in xs[1:]]
    rng = np.random.default_rng(params.random_state)
    losses: list[float] = []
    epoch = 0
    for epoch in range(params.max_iter):
        perm = epoch_permutation(rng, n, params.batch_size)
        start = [w.copy() for w in ws]
        batch_losses = []
        for o in opts:
            o.set_epoch(epoch)
        for idx in batches(n, params.batch_size, perm):
            yb = y[idx]
            eb = None if exposure is None else exposure[idx]
            u_g = xs[0][idx] @ ws[0]
            v = combine_shares(params.family, [host_share(params.family, x[idx] @ w)
                                               for x, w in zip(xs[1:], ws[1:])])
            d = residual(params.family, u_g, v, yb, eb, params.approximation)
            nb = len(yb)
            if params.needs_loss:
                u_h = sum((x[idx] @ w for x, w in zip(xs[1:], ws[1:])), np.zeros(nb))
                batch_losses.append(batch_loss(params.family, u_g + u_h, yb, eb) * nb)
            ws = [o.step(w, x[idx].T @ d / nb) for o, w, x in zip(opts, ws, xs)]
        if params.needs_loss:
            losses.append(float(np.sum(batch_losses)) / n)
        diff = math.sqrt(sum(float(np.sum((w - s) ** 2)) for w, s in zip(ws, start)))
        if should_stop(params, losses, diff):
            break
    return ws, epoch + 1, losses


# =============================================================================== masking
def mask(pk: Any, enc: Any) -> tuple[Any, list[int]]:
    """``enc + [[R]]`` with fresh uniform ``R`` wide enough to hide ``enc``'s plaintexts."""
    bits = max(int(enc.bound).bit_length(), 1) + MASK_SLACK_BITS
    rs = [secrets.randbits(bits) for _ in range(enc.size)]
    r_enc = pk.encrypt_int(np.array(rs, dtype=object).reshape(enc.shape) if enc.shape else rs[0])
    r_enc = CipherArray(pk, r_enc.data, exp=enc.exp, bound=r_enc.bound)
    return enc + r_enc, rs


def unmask(raw: Any, rs: list[int], exp: int) -> np.ndarray:
    """Exact plaintexts from the key holder's ``G + R`` (signed ints) and the masks ``R``."""
    flat = np.asarray(raw, dtype=object).ravel().tolist()
    d = 1 << exp
    return np.array([(int(g) - r) / d for g, r in zip(flat, rs)], dtype=np.float64)


def decrypt_raw(sk: Any, enc: Any, jobs: int = 1) -> list[int]:
    """What a key holder returns for a masked ciphertext: the signed integers, as a list."""
    return [int(v) for v in np.asarray(sk.decrypt_int(enc, jobs=jobs), dtype=object).ravel().tolist()]


def _dot(enc: Any, coef: np.ndarray, jobs: int, precision: int | None) -> Any:
    """``coef . [[v]]`` as a one-element CipherArray."""
    return enc.matvec_t(np.asarray(coef, dtype=np.float64).reshape(-1, 1), jobs=jobs, precision=precision)


def _as_matrix(x: Any, who: str, min_features: int = 0) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{who}'s features must be a 2-d table (rows x features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise DataError(f"{who} has no rows; pass the aligned rows (after PSI) to every party")
    if a.shape[1] < min_features:
        raise DataError(f"{who} has no feature columns; a host must bring at least one feature")
    if not np.isfinite(a).all():
        raise DataError(f"{who}'s features contain NaN or infinity; impute or drop them before training")
    return a


def _check_label(family: str, y: Any, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != n:
        raise DataError(f"the guest has {n} feature rows but {y.shape[0]} labels; pass one label per row")
    if not np.isfinite(y).all():
        raise DataError("labels contain NaN or infinity; drop those rows first")
    if family == "logistic" and not np.isin(np.unique(y), (0.0, 1.0)).all():
        raise DataError(f"logistic regression needs labels in {{0, 1}}, got {np.unique(y)[:5].tolist()}; "
                        "map the positive class to 1")
    if family == "logistic" and np.unique(y).size < 2:
        raise DataError(f"logistic regression needs both classes in the training labels; all are {y[0]:g}")
    if family == "poisson" and ((y < 0).any() or (np.floor(y) != y).any()):
        raise DataError("Poisson regression needs non-negative integer counts as labels")
    return y


def _check_exposure(exposure: Any, n: int) -> np.ndarray | None:
    if exposure is None:
        return None
    e = np.asarray(exposure, dtype=np.float64).ravel()
    if e.shape[0] != n or not (e > 0).all() or not np.isfinite(e).all():
        raise DataError(f"exposure must hold {n} finite positive values (one per row)")
    return e


# =============================================================================== roles
class _Role:
    family = "logistic"

    def __init__(self, params: GLMParams | None = None, **kwargs: Any):
        params = params if params is not None else GLMParams(family=self.family)
        if kwargs:
            params = GLMParams(**{**asdict(params), "optimizer": params.optimizer, **kwargs})
        if params.family != self.family:
            params = GLMParams(**{**asdict(params), "optimizer": params.optimizer, "family": self.family})
        self.params = params.validate()

    @property
    def jobs(self) -> int:
        return self.params.n_jobs

    def _keygen(self) -> Any:
        p = self.params
        return he.generate_keypair(scheme=p.scheme, key_bits=p.key_bits, precision_bits=p.precision_bits)

    def _exchange_keys(self, ctx: Any, peer: str) -> tuple[Any, Any, Any]:
        """(my public key, my private key or None, the key I encrypt for the peer with):
        the arbiter's key in arbiter mode; in two-party mode each side makes its own pair
        and the two exchange public keys (``guest_key`` / ``host_key``)."""
        if self.params.mode == "arbiter":
            pk = self._peer_key(ctx.recv("arbiter", "public_key"), "the arbiter")
            return pk, None, pk
        kp = self._keygen()
        ctx.send(peer, f"{ctx.role}_key", kp.public_key)
        return kp.public_key, kp.private_key, self._peer_key(ctx.recv(peer, f"{peer}_key"), f"the {peer}")

    def _peer_key(self, pk: Any, who: str) -> Any:
        """A received public key, refused unless it meets this party's own scheme, key size and precision."""
        p = self.params
        return he.check_peer_key(pk, p.scheme, p.key_bits, p.precision_bits, who)

    def _check_plan(self, verdict: Any, who: str = "the guest") -> None:
        """Refuse to go on if the guest's plan is not this party's (both sides check)."""
        mine, theirs = self.params.plan(), verdict.get("plan")
        if theirs != mine:
            theirs = theirs if isinstance(theirs, dict) else {}
            diff = {k: (theirs.get(k), mine.get(k)) for k in mine if theirs.get(k) != mine.get(k)}
            raise ConfigError(f"{who} runs with different parameters ({who.split()[-1]}, this party): {diff}; "
                              "use the same parameters at every party")

    def _mul_prec(self) -> int | None:
        return self.params.mul_precision_bits


class GLMGuest(_Role):
    """Guest: holds the labels (and exposure), its own features and the intercept.

    What the guest sees: the public key(s); ciphertexts of the hosts' partial scores it cannot
    decrypt; its own gradient; the loss per epoch; the stop decisions. In two-party mode it also
    holds a private key and decrypts the host's gradient *plus the host's uniform mask*, and
    (``early_stopping="weight_diff"`` only) receives the host's squared weight-change norm.
    """

    def fit(self, ctx: Any, x: Any, y: Any, exposure: Any = None, ids: Sequence[Any] | None = None) -> GuestModel:
        p = self.params
        x = _as_matrix(x, "the guest")
        n = x.shape[0]
        y = _check_label(p.family, y, n)
        exposure = _check_exposure(exposure, n)
        if p.mode == "two_party" and len(ctx.parties_of("host")) != 1:
            raise ConfigError("two_party mode runs with exactly one host; with several hosts use "
                              "mode='arbiter'")
        if exposure is not None and p.family != "poisson":
            raise ConfigError("exposure is only used by Poisson regression")
        with ctx.scope("fit"):
            self._check_alignment(ctx, n, ids, with_arbiter=p.mode == "arbiter", task="train")
            pk, sk, host_pk = self._keys(ctx)
            xp, mean, t = prepare(x, p.precondition)
            xg = with_intercept(xp, p.fit_intercept)
            w = np.zeros(xg.shape[1])
            opt = Optimizer(p.optimizer, xg.shape[1], penalty_mask(xg.shape[1], p.fit_intercept))
            rng = np.random.default_rng(p.random_state)
            losses: list[float] = []
            seconds: list[float] = []
            offline: list[float] = []
            converged = False
            epoch = 0
            for epoch in range(p.max_iter):
                if p.precompute:  # offline phase: randomness for this epoch, then a barrier
                    tic = time.perf_counter()
                    pk.precompute(encryptions_per_epoch(p, "guest", n, xg.shape[1]) - pk.pool_size, jobs=self.jobs)
                    with ctx.scope("offline", epoch):
                        ctx.gather("host", "ready")
                    offline.append(time.perf_counter() - tic)
                tic = time.perf_counter()
                with ctx.scope("epoch", epoch):
                    perm = epoch_permutation(rng, n, p.batch_size)
                    plan = batches(n, p.batch_size, perm)
                    ctx.send("host", "batches", perm)
                    if p.mode == "arbiter":
                        ctx.send("arbiter", "epoch_info", {"n_batches": len(plan), "n_rows": n})
                    opt.set_epoch(epoch)
                    start = w.copy()
                    loss_sum = 0.0
                    for b, idx in enumerate(plan):
                        with ctx.scope("batch", b):
                            eb = None if exposure is None else exposure[idx]
                            w, batch_loss_sum = self._batch(ctx, pk, sk, host_pk, xg[idx], y[idx], eb, w, opt)
                            loss_sum += batch_loss_sum or 0.0
                    dw = float(np.sum((w - start) ** 2))
                    if p.mode == "arbiter":
                        if p.needs_weight_diff:
                            ctx.send("arbiter", "weight_diff", dw)
                        verdict = ctx.recv("arbiter", "verdict")
                        if verdict.get("loss") is not None:
                            losses.append(float(verdict["loss"]))
                        stop = bool(verdict["stop"])
                    else:
                        # two-party: the guest applies the stopping rule
                        if p.needs_loss:
                            losses.append(loss_sum / n)
                        dw_h = float(ctx.recv("host", "weight_diff")) if p.needs_weight_diff else 0.0
                        stop = should_stop(p, losses, math.sqrt(dw + dw_h))
                        ctx.send("host", "verdict", {"stop": stop})
                    seconds.append(time.perf_counter() - tic)
                    log.info("epoch %d: %.2f s%s", epoch, seconds[-1],
                             f", loss {losses[-1]:.6f}" if losses else "")
                    if stop:
                        converged = p.early_stopping != "none"
                        break
        coef, offset = restore(w[1:] if p.fit_intercept else w, mean, t)
        intercept = (float(w[0]) if p.fit_intercept else 0.0) + offset
        return GuestModel(p.family, coef.copy(), intercept, epoch + 1, converged, losses, seconds, offline)

    # ---------------------------------------------------------------- setup
    def _check_alignment(self, ctx: Any, n: int, ids: Sequence[Any] | None, with_arbiter: bool,
                         task: str) -> None:
        mine = ids_digest(ids, n)
        problems = []
        plan = self.params.plan()
        for host, info in ctx.gather("host", "rows").items():
            if int(info["n"]) != n:
                problems.append(f"{host} has {info['n']} rows but the guest has {n}")
            elif info["digest"] != mine:
                problems.append(f"{host}'s rows are not in the guest's order (different ids or order)")
            if info["plan"] != plan:
                diff = {k: (plan.get(k), info["plan"].get(k)) for k in plan if plan.get(k) != info["plan"].get(k)}
                problems.append(f"{host} runs with different parameters (guest, host): {diff}")
        ok = not problems
        reason = "; ".join(problems)
        verdict = {"ok": ok, "reason": reason, "plan": plan}
        ctx.send(["host", "arbiter"] if with_arbiter else "host", "aligned", verdict)
        if not ok:
            raise DataError(f"cannot {task}: {reason}. Align the parties' rows first (run PSI and pass "
                            "every party its rows in the same order), and use the same parameters")

    def _keys(self, ctx: Any) -> tuple[Any, Any, Any]:
        return self._exchange_keys(ctx, "host")

    # ---------------------------------------------------------------- one batch
    def _batch(self, ctx: Any, pk: Any, sk: Any, host_pk: Any, xb: np.ndarray, yb: np.ndarray,
               eb: np.ndarray | None, w: np.ndarray, opt: Optimizer) -> tuple[np.ndarray, float | None]:
        """One batch; returns the new weights and (two-party mode) the batch's summed loss."""
        p = self.params
        jobs, prec = self.jobs, self._mul_prec()
        nb = xb.shape[0]
        u_g = xb @ w
        loss_sum = None
        alpha, beta, scale = residual_parts(p.family, u_g, yb, eb, p.approximation)
        hosts = ctx.parties_of("host")
        enc_beta = None
        if p.mode == "arbiter" and alpha is None:
            # encrypted while the hosts encrypt their shares. beta is encrypted afresh (never added
            # in clear): a host must not be able to strip it off its own ciphertext and read labels
            enc_beta = pk.encrypt(beta, jobs=jobs)
        elif p.mode == "two_party":
            # the host forms [[d / scale]] = [[alpha]] * V + [[beta]] under the guest's key
            parts = {"beta": pk.encrypt(beta, jobs=jobs)}
            if alpha is not None:
                parts["alpha"] = pk.encrypt(alpha, jobs=jobs)
            ctx.send("host", "residual_parts", parts)
        # [[V]] (under the arbiter's key, or the host's key in two-party mode)
        if p.family == "poisson":
            enc_v = ctx.recv(hosts[-1], "share")
        else:
            shares = ctx.gather("host", "share")
            enc_v = shares[hosts[0]]
            for h in hosts[1:]:
                enc_v = enc_v + shares[h]
        if p.mode == "arbiter":
            enc_av = enc_v if alpha is None else enc_v.mul(alpha, jobs=jobs)
            if enc_beta is None:
                enc_beta = pk.encrypt(beta, precision=enc_av.exp, jobs=jobs)
            enc_r = enc_av + enc_beta
            ctx.send("host", "residual", enc_r)
            masked, rs = mask(pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
            ctx.send("arbiter", "masked_gradient", masked)
            if p.needs_loss:
                ctx.send("arbiter", "loss", self._encrypted_loss(ctx, enc_v, u_g, yb, eb, hosts))
            g = unmask(ctx.recv("arbiter", "gradient"), rs, masked.exp)
        else:
            xa = xb if alpha is None else xb * alpha[:, None]
            masked, rs = mask(host_pk, enc_v.matvec_t(xa, jobs=jobs, precision=prec))
            ctx.send("host", "masked_gradient", masked)
            if p.needs_loss:
                masked_loss, loss_rs = mask(host_pk, self._encrypted_loss(ctx, enc_v, u_g, yb, eb, hosts))
                ctx.send("host", "masked_loss", masked_loss)
            # decrypt the host's masked gradient for it
            ctx.send("host", "gradient", decrypt_raw(sk, ctx.recv("host", "masked_gradient_h"), jobs))
            g = unmask(ctx.recv("host", "gradient_g"), rs, masked.exp) + xb.T @ beta
            if p.needs_loss:
                loss_sum = float(unmask(ctx.recv("host", "loss"), loss_rs, masked_loss.exp)[0])
        return opt.step(w, scale * g / nb), loss_sum

    def _encrypted_loss(self, ctx: Any, enc_v: Any, u_g: np.ndarray, yb: np.ndarray,
                        eb: np.ndarray | None, hosts: list[str]) -> Any:
        p = self.params
        jobs, prec = self.jobs, self._mul_prec()
        lp = loss_parts(p.family, u_g, yb, eb)
        extra = ctx.gather("host", "loss_terms")
        total = _dot(enc_v, lp.coef_v, jobs, prec) + lp.const
        if lp.coef_u is not None:
            enc_u = extra[hosts[0]]["u"]
            for h in hosts[1:]:
                enc_u = enc_u + extra[h]["u"]
            total = total + _dot(enc_u, lp.coef_u, jobs, prec)
        if lp.coef_sq:
            sq = extra[hosts[0]]["sq"]
            for h in hosts[1:]:
                sq = sq + extra[h]["sq"]
            total = total + sq.mul(lp.coef_sq)
        return total

    # ---------------------------------------------------------------- joint prediction
    def predict(self, ctx: Any, model: GuestModel, x: Any, ids: Sequence[Any] | None = None) -> np.ndarray:
        """Joint scoring: returns the full linear score ``u`` of every row (apply :func:`mean_function`)."""
        x = _as_matrix(x, "the guest")
        n = x.shape[0]
        if x.shape[1] != model.coef.shape[0]:
            raise DataError(f"the guest's model has {model.coef.shape[0]} features, the data {x.shape[1]}")
        with ctx.scope("predict"):
            self._check_alignment(ctx, n, ids, with_arbiter=False, task="score")
            u = x @ model.coef + model.intercept
            for part in ctx.gather("host", "partial_score").values():
                u = u + np.asarray(part, dtype=np.float64)
        return u


class GLMHost(_Role):
    """Host: holds extra features of the same rows, never labels.

    What a host sees: the public key(s); the epoch's row permutation; ciphertexts of the residual
    it cannot decrypt (arbiter mode) or cannot separate from the guest's encrypted parts
    (two-party mode); its own gradient. It never sees labels, guest features, the loss or scores.
    """

    def fit(self, ctx: Any, x: Any, ids: Sequence[Any] | None = None) -> HostModel:
        p = self.params
        x = _as_matrix(x, ctx.party, min_features=1)
        n = x.shape[0]
        with ctx.scope("fit"):
            self._report_rows(ctx, n, ids, task="train")
            pk, sk, guest_pk = self._keys(ctx)
            x, mean, t = prepare(x, p.precondition)
            w = np.zeros(x.shape[1])
            opt = Optimizer(p.optimizer, x.shape[1])
            epoch, converged = 0, False
            for epoch in range(p.max_iter):
                if p.precompute:
                    pk.precompute(encryptions_per_epoch(p, "host", n, x.shape[1]) - pk.pool_size, jobs=self.jobs)
                    with ctx.scope("offline", epoch):
                        ctx.send("guest", "ready", True)
                with ctx.scope("epoch", epoch):
                    perm = ctx.recv("guest", "batches")
                    if perm is not None:
                        perm = np.asarray(perm, dtype=np.int64)
                        if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
                            raise DataError("the guest sent a row order that is not a permutation of "
                                            "this host's rows")
                    opt.set_epoch(epoch)
                    start = w.copy()
                    for b, idx in enumerate(batches(n, p.batch_size, perm)):
                        with ctx.scope("batch", b):
                            w = self._batch(ctx, pk, sk, guest_pk, x[idx], w, opt)
                    coordinator = "arbiter" if p.mode == "arbiter" else "guest"
                    if p.needs_weight_diff:  # sent only when the stopping rule needs it
                        ctx.send(coordinator, "weight_diff", float(np.sum((w - start) ** 2)))
                    verdict = ctx.recv(coordinator, "verdict")
                    if verdict["stop"]:
                        converged = p.early_stopping != "none"
                        break
        coef, offset = restore(w, mean, t)
        return HostModel(p.family, coef, epoch + 1, converged, offset)

    def _report_rows(self, ctx: Any, n: int, ids: Sequence[Any] | None, task: str) -> None:
        ctx.send("guest", "rows", {"n": n, "digest": ids_digest(ids, n), "plan": self.params.plan()})
        verdict = ctx.recv("guest", "aligned")
        if not verdict["ok"]:
            raise DataError(f"cannot {task}: {verdict['reason']}. Align the parties' rows first (run PSI "
                            "and pass every party its rows in the same order)")
        self._check_plan(verdict)

    def _keys(self, ctx: Any) -> tuple[Any, Any, Any]:
        return self._exchange_keys(ctx, "guest")

    def _batch(self, ctx: Any, pk: Any, sk: Any, guest_pk: Any, xb: np.ndarray, w: np.ndarray,
               opt: Optimizer) -> np.ndarray:
        p = self.params
        jobs, prec = self.jobs, self._mul_prec()
        nb = xb.shape[0]
        u = xb @ w
        share = host_share(p.family, u)
        hosts = ctx.parties_of("host")
        me = hosts.index(ctx.party)
        # 1. send [[share]] (Poisson: a chain of products through the hosts, ending at the guest)
        if p.family == "poisson" and me > 0:
            enc_share = ctx.recv(hosts[me - 1], "share").mul(share, jobs=jobs)
        else:
            enc_share = pk.encrypt(share, jobs=jobs)
        if p.family == "poisson" and me < len(hosts) - 1:
            ctx.send(hosts[me + 1], "share", enc_share)
        else:
            ctx.send("guest", "share", enc_share)
        # 1b. loss terms: [[u]] (Poisson), [[|u|^2]] and the cross terms with earlier hosts
        if p.needs_loss:
            terms: dict[str, Any] = {}
            if p.family == "poisson":
                terms["u"] = pk.encrypt(u, jobs=jobs)
            else:
                enc_u = enc_share
                sq = pk.encrypt(np.array([float(u @ u)]))
                for h in hosts[:me]:
                    sq = sq + _dot(ctx.recv(h, "loss_u"), 2.0 * u, jobs, prec)
                for h in hosts[me + 1:]:
                    ctx.send(h, "loss_u", enc_u)
                terms["sq"] = sq
            ctx.send("guest", "loss_terms", terms)
        # 2-4. gradient through masked decryption
        if p.mode == "arbiter":
            enc_r = ctx.recv("guest", "residual")
            masked, rs = mask(pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
            ctx.send("arbiter", "masked_gradient", masked)
            g = unmask(ctx.recv("arbiter", "gradient"), rs, masked.exp)
        else:
            parts = ctx.recv("guest", "residual_parts")
            if "alpha" in parts:
                enc_r = parts["alpha"].mul(share, jobs=jobs) + parts["beta"]
            else:
                enc_r = parts["beta"] + share
            masked, rs = mask(guest_pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
            ctx.send("guest", "masked_gradient_h", masked)
            ctx.send("guest", "gradient_g", decrypt_raw(sk, ctx.recv("guest", "masked_gradient"), jobs))
            if p.needs_loss:
                ctx.send("guest", "loss", decrypt_raw(sk, ctx.recv("guest", "masked_loss"), jobs))
            g = unmask(ctx.recv("guest", "gradient"), rs, masked.exp)
        scale = residual_parts(p.family, np.zeros(1), np.zeros(1), None, p.approximation)[2]
        return opt.step(w, scale * g / nb)

    def predict(self, ctx: Any, model: HostModel, x: Any, ids: Sequence[Any] | None = None) -> None:
        """Joint scoring: send this host's partial scores to the guest; learns nothing back."""
        x = _as_matrix(x, ctx.party)
        if x.shape[1] != model.coef.shape[0]:
            raise DataError(f"{ctx.party}'s model has {model.coef.shape[0]} features, the data {x.shape[1]}")
        with ctx.scope("predict"):
            self._report_rows(ctx, x.shape[0], ids, task="score")
            ctx.send("guest", "partial_score", x @ model.coef + model.offset)
        return None


class GLMArbiter(_Role):
    """Arbiter (third party C): makes the key pair, decrypts masked values, decides when to stop.

    What the arbiter sees: gradients and losses *plus uniform masks* (nothing), the per-epoch
    loss of the guest's batch (in clear, as in Hardy et al.), and (``early_stopping="weight_diff"``
    only) each party's squared weight-change norm, one number per party per epoch. Never data,
    labels or weights.
    """

    def fit(self, ctx: Any) -> ArbiterReport:
        p = self.params
        if p.mode != "arbiter":
            raise ConfigError("an arbiter takes part only in mode='arbiter'")
        with ctx.scope("fit"):
            verdict = ctx.recv("guest", "aligned")
            if not verdict["ok"]:
                raise DataError(f"cannot train: {verdict['reason']}")
            self._check_plan(verdict)
            kp = self._keygen()
            sk = kp.private_key
            ctx.send(["guest", "host"], "public_key", kp.public_key)
            losses: list[float] = []
            epoch, converged = 0, False
            parties = ["guest", *ctx.parties_of("host")]
            for epoch in range(p.max_iter):
                with ctx.scope("epoch", epoch):
                    info = ctx.recv("guest", "epoch_info")
                    loss_sum = 0.0
                    for b in range(int(info["n_batches"])):
                        with ctx.scope("batch", b):
                            for party in parties:
                                masked = ctx.recv(party, "masked_gradient")
                                ctx.send(party, "gradient", decrypt_raw(sk, masked, self.jobs))
                            if p.needs_loss:
                                loss_sum += float(sk.decrypt(ctx.recv("guest", "loss"))[0])
                    if p.needs_loss:
                        losses.append(loss_sum / int(info["n_rows"]))
                    dw = (sum(float(v) for v in ctx.gather(["guest", "host"], "weight_diff").values())
                          if p.needs_weight_diff else 0.0)
                    stop = should_stop(p, losses, math.sqrt(dw))
                    ctx.send("host", "verdict", {"stop": stop})
                    ctx.send("guest", "verdict", {"stop": stop, "loss": losses[-1] if losses else None})
                    if stop:
                        converged = p.early_stopping != "none"
                        break
        return ArbiterReport(epoch + 1, converged, losses)


def role_classes(family: str, prefix: str, module: str) -> tuple[type[GLMGuest], type[GLMHost], type[GLMArbiter]]:
    """The guest, host and arbiter classes of one family, named ``{prefix}Guest`` etc.

    ``module`` is the public module that binds them to those names (pass ``__name__``), so
    they pickle by name for ``transport="grpc"`` and job components find them there.
    """
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not supported; use one of {FAMILIES}")
    made = []
    for base in (GLMGuest, GLMHost, GLMArbiter):
        role = base.__name__[3:]
        doc = (f"{role} of vertical {family} regression (protocol and views: :mod:`{module}`).\n\n"
               f"    {base.__doc__.split(chr(10), 1)[0]}")
        made.append(type(prefix + role, (base,), {"family": family, "__module__": module, "__doc__": doc}))
    return made[0], made[1], made[2]


# =============================================================================== simulation facade
def _fit_guest(ctx: Any, role: GLMGuest, x: np.ndarray, y: np.ndarray, exposure: np.ndarray | None,
               ids: list | None) -> GuestModel:
    return role.fit(ctx, x, y, exposure=exposure, ids=ids)


def _fit_host(ctx: Any, role: GLMHost, x: np.ndarray, ids: list | None) -> HostModel:
    return role.fit(ctx, x, ids=ids)


def _fit_arbiter(ctx: Any, role: GLMArbiter) -> ArbiterReport:
    return role.fit(ctx)


def _predict_guest(ctx: Any, role: GLMGuest, model: GuestModel, x: np.ndarray, ids: list | None) -> np.ndarray:
    return role.predict(ctx, model, x, ids=ids)


def _predict_host(ctx: Any, role: GLMHost, model: HostModel, x: np.ndarray, ids: list | None) -> None:
    return role.predict(ctx, model, x, ids=ids)


def _table(x: Any) -> tuple[np.ndarray, list | None]:
    """Features as float matrix, plus the row ids when ``x`` is a DataFrame (its index)."""
    ids = None
    if hasattr(x, "index") and hasattr(x, "columns"):
        ids = [str(i) for i in x.index]
    return np.asarray(x, dtype=np.float64), ids


#: the regressors' (linear, Poisson) defaults that differ from logistic regression's: plain SGD
#: with a larger step on locally whitened features. Used as
#: ``__init__ = partialmethod(HeteroGLMEstimator.__init__, **REGRESSOR_DEFAULTS)``.
REGRESSOR_DEFAULTS = {"optimizer": "sgd", "learning_rate": 0.5, "precondition": True}


class HeteroGLMEstimator(BaseEstimator):
    """Common body of the scikit-learn style facades: every party of one job run locally.

    Parameters (scikit-learn names where they mean the same): ``penalty`` ('l2', 'l1' or
    None) and ``alpha`` (its strength on the *mean* loss: scikit-learn's ``C`` is
    ``1 / (alpha * n_rows)``, ``Ridge``'s ``alpha`` is ``alpha * n_rows``); ``max_iter``
    (epochs), ``tol`` and ``early_stopping`` ('weight_diff', 'loss' or 'none');
    ``optimizer`` ('sgd' or 'adam'), ``learning_rate``, ``decay`` and ``decay_sqrt``;
    ``batch_size`` (None: full batch); ``fit_intercept``; ``precondition`` (each party whitens
    its own features locally: faster convergence on correlated features, penalties then act
    on whitened weights); ``compute_loss`` (the encrypted loss each epoch, in
    ``loss_history_``); ``precompute`` (randomness of each epoch's encryptions computed in an
    offline phase, timed apart); ``mode`` ('arbiter' or 'two_party'); ``approximation``
    (logistic only: 'taylor' or 'guest_taylor', see :class:`GLMParams`); ``scheme``
    ('paillier' or 'ou'), ``key_bits``, ``precision_bits``, ``mul_precision_bits`` (fixed
    point); ``random_state``; ``n_jobs`` (HE worker processes per party, with either
    transport); ``transport`` ('inprocess': threads of this process, or 'grpc': one local
    process per party over gRPC with mutual TLS); ``timeout`` (seconds a party waits for a
    message).

    Learned: ``coef_`` (guest's features, then each host's in name order), ``intercept_``,
    ``n_iter_``, ``converged_``, ``loss_history_``, ``epoch_seconds_`` / ``offline_seconds_``,
    and the per-party halves ``guest_model_`` / ``host_models_`` that a real deployment keeps
    apart. A subclass binds a family and, through :func:`functools.partialmethod` on
    ``__init__``, its own defaults.
    """

    #: (guest, host, arbiter) classes of the family, from :func:`role_classes`
    _roles: tuple[type[GLMGuest], type[GLMHost], type[GLMArbiter]] = (GLMGuest, GLMHost, GLMArbiter)

    @property
    def _family(self) -> str:
        return self._roles[0].family

    def __init__(self, *, penalty: str | None = "l2", alpha: float = 0.0, max_iter: int = 30,
                 tol: float = 1e-4, early_stopping: str = "weight_diff", optimizer: str = "adam",
                 learning_rate: float = 0.05, decay: float = 0.0, decay_sqrt: bool = False,
                 batch_size: int | None = None, fit_intercept: bool = True, precondition: bool = False,
                 compute_loss: bool = True, precompute: bool = False, mode: str = "arbiter",
                 approximation: str = "taylor", scheme: str = "paillier", key_bits: int = 2048,
                 precision_bits: int | None = None, mul_precision_bits: int | None = None,
                 random_state: int | None = None, n_jobs: int = 1, transport: str = "inprocess",
                 timeout: float = 600.0):
        self.penalty = penalty
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.decay = decay
        self.decay_sqrt = decay_sqrt
        self.batch_size = batch_size
        self.fit_intercept = fit_intercept
        self.precondition = precondition
        self.compute_loss = compute_loss
        self.precompute = precompute
        self.mode = mode
        self.approximation = approximation
        self.scheme = scheme
        self.key_bits = key_bits
        self.precision_bits = precision_bits
        self.mul_precision_bits = mul_precision_bits
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.transport = transport
        self.timeout = timeout

    # -------------------------------------------------------------- sklearn plumbing
    def _params(self) -> GLMParams:
        opt = OptimizerParams(optimizer=self.optimizer, learning_rate=self.learning_rate, decay=self.decay,
                              decay_sqrt=self.decay_sqrt, penalty=self.penalty, alpha=self.alpha)
        return GLMParams(family=self._family, mode=self.mode, max_iter=self.max_iter,
                         approximation=self.approximation,
                         batch_size=self.batch_size, tol=self.tol, early_stopping=self.early_stopping,
                         compute_loss=self.compute_loss, fit_intercept=self.fit_intercept,
                         precondition=self.precondition, precompute=self.precompute, optimizer=opt,
                         scheme=self.scheme, key_bits=self.key_bits, precision_bits=self.precision_bits,
                         mul_precision_bits=self.mul_precision_bits, random_state=self.random_state,
                         n_jobs=self.n_jobs).validate()

    def _launch_mode(self) -> str:
        if self.transport == "inprocess":
            return "threads"
        if self.transport == "grpc":
            return "processes"
        raise ConfigError(f"transport={self.transport!r}; use 'inprocess' (threads) or 'grpc' "
                          "(one local process per party, gRPC with mutual TLS)")

    def _run(self, parties: dict) -> dict:
        from atoll.errors import AtollError
        from atoll.federation import PartyFailed, launch

        try:
            # HE worker pools of a party process are shut down by atoll.crypto.parallel itself
            return launch(parties, mode=self._launch_mode(), timeout=self.timeout)
        except PartyFailed as e:
            if isinstance(e.error, AtollError):
                raise e.error from e
            raise

    @staticmethod
    def _split(data: dict, need_label: bool) -> tuple[tuple, dict[str, Any]]:
        if not isinstance(data, dict) or "guest" not in data:
            raise DataError('pass the data as {"guest": (X_guest, y), "host_0": X_host_0, ...}')
        hosts = {k: v for k, v in data.items() if k != "guest"}
        bad = [k for k in hosts if not k.startswith("host_")]
        if bad or not hosts:
            raise DataError(f"party names must be 'guest' and 'host_0', 'host_1', ...; got {sorted(data)}"
                            if bad else "at least one host ('host_0') is needed for a vertical model")
        g = data["guest"]
        if isinstance(g, tuple):
            if need_label and len(g) < 2:
                raise DataError("the guest's entry must be (X_guest, y) or (X_guest, y, exposure)")
            g = tuple(g) + (None,) * (3 - len(g))
        else:
            if need_label:
                raise DataError("the guest's entry must be (X_guest, y): the guest holds the labels")
            g = (g, None, None)
        return g, dict(sorted(hosts.items()))

    # -------------------------------------------------------------- fit / predict
    def fit(self, data: dict, exposure: Any = None) -> HeteroGLMEstimator:
        """Train every party in this process (threads) or as local processes (``transport="grpc"``); returns self.

        ``data = {"guest": (X_guest, y), "host_0": X_host_0, ...}``; DataFrames' indexes are used
        as row ids to check alignment.
        """
        from atoll.federation import Party

        params = self._params()
        (xg, y, exp_), hosts = self._split(data, need_label=True)
        exposure = exp_ if exposure is None else exposure
        xg, gids = _table(xg)
        y = np.asarray(y, dtype=np.float64).ravel()
        e = None if exposure is None else np.asarray(exposure, dtype=np.float64).ravel()
        parties = {"guest": Party("guest", _fit_guest, {"role": self._roles[0](params), "x": xg, "y": y,
                                                        "exposure": e, "ids": gids})}
        for name, xh in hosts.items():
            xh, hids = _table(xh)
            parties[name] = Party("host", _fit_host, {"role": self._roles[1](params), "x": xh, "ids": hids})
        if params.mode == "arbiter":
            parties["arbiter"] = Party("arbiter", _fit_arbiter, {"role": self._roles[2](params)})
        out = self._run(parties)
        g: GuestModel = out["guest"]
        self.guest_model_ = g
        self.host_models_ = {name: out[name] for name in hosts}
        self.coef_ = np.concatenate([g.coef] + [m.coef for m in self.host_models_.values()])
        self.intercept_ = g.intercept + sum(m.offset for m in self.host_models_.values())
        self.n_iter_ = g.n_iter
        self.converged_ = g.converged
        self.loss_history_ = list(g.loss_history)
        self.epoch_seconds_ = list(g.epoch_seconds)
        self.offline_seconds_ = list(g.offline_seconds)
        self.n_features_in_ = self.coef_.shape[0]
        self.params_ = params
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "guest_model_"):
            from atoll.errors import AtollError

            raise AtollError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    def decision_function(self, data: dict) -> np.ndarray:
        """Joint scoring of aligned rows: the linear score ``x . w + b`` (the guest's result)."""
        from atoll.federation import Party

        self._check_fitted()
        params = self.params_
        (xg, _, _), hosts = self._split(data, need_label=False)
        if sorted(hosts) != sorted(self.host_models_):
            raise DataError(f"the model was trained with hosts {sorted(self.host_models_)}; "
                            f"got {sorted(hosts)}")
        xg, gids = _table(xg)
        parties = {"guest": Party("guest", _predict_guest, {"role": self._roles[0](params),
                                                            "model": self.guest_model_, "x": xg, "ids": gids})}
        for name, xh in hosts.items():
            xh, hids = _table(xh)
            parties[name] = Party("host", _predict_host, {"role": self._roles[1](params),
                                                          "model": self.host_models_[name], "x": xh,
                                                          "ids": hids})
        return self._run(parties)["guest"]

    @staticmethod
    def _exposure(data: dict, exposure: Any) -> np.ndarray | None:
        if exposure is None and isinstance(data.get("guest"), tuple) and len(data["guest"]) >= 3:
            exposure = data["guest"][2]
        return None if exposure is None else np.asarray(exposure, dtype=np.float64).ravel()

    @staticmethod
    def _labels(data: dict, y: Any) -> np.ndarray:
        if y is None:
            g = data.get("guest")
            if not (isinstance(g, tuple) and len(g) >= 2 and g[1] is not None):
                raise DataError("score() needs labels: pass y=..., or the guest's entry as (X_guest, y)")
            y = g[1]
        return np.asarray(y, dtype=np.float64).ravel()
