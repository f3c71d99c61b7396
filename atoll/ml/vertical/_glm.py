"""Shared machinery of Atoll's vertical generalised linear models (logistic, linear, Poisson).

The three models differ only in a few pure functions (the residual, the loss and
the mean function), which a :class:`Family` object holds (:data:`LOGISTIC`, :data:`LINEAR`,
:data:`POISSON`, as SecureBoost's ``Objective``); the protocol — who encrypts what, who
decrypts what, how masks travel — is written once here, in :class:`GLMGuest`,
:class:`GLMHost` and :class:`GLMArbiter`, and what differs between arbiter mode and
two-party mode (who makes keys, who decrypts the masked gradients, who applies the
stopping rule) lives in two exchange objects, :class:`ArbiterExchange` and
:class:`TwoPartyExchange`, whose step helpers the roles call. The parameters are ONE
pydantic model, :class:`GLMParams` (job step, facades and protocol alike). The public
modules (:mod:`~atoll.ml.vertical.hetero_lr`, :mod:`~atoll.ml.vertical.hetero_linr`,
:mod:`~atoll.ml.vertical.hetero_poisson`) bind a family in ordinary role classes,
document the protocol step by step, register the algorithm (:mod:`atoll.ml.registry`)
and export the scikit-learn style facades.

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
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from atoll.crypto import he
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import ConfigError, DataError
from atoll.ml.optim import Optimizer, OptimizerParams
from atoll.ml.facade import FederatedEstimator
from atoll.ml import registry
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, check_scheme, param_error

log = logging.getLogger(__name__)

MODES = ("arbiter", "two_party")
MASK_SLACK_BITS = 40
LOG2 = math.log(2.0)


# =============================================================================== parameters
def _whole(value: Any, name: str, allow_none: bool) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number" + (" (or None)" if allow_none else "")
                         + f", got {value!r}")
    return int(value)


class GLMParams(AlgorithmParams):
    """THE parameters of a vertical GLM (``hetero_lr``, ``hetero_linr``, ``hetero_poisson``): the job
    step's ``params``, the facades' constructor arguments and what every party must agree on.

    ``penalty`` ('l2', 'l1' or None) and ``alpha`` (its strength on the *mean* loss: scikit-learn's
    ``C`` is ``1 / (alpha * n_rows)``, ``Ridge``'s ``alpha`` is ``alpha * n_rows``); ``optimizer``
    ('sgd' or 'adam'), ``learning_rate``, ``decay``, ``decay_sqrt`` (``lr / (1 + decay * t)`` or its
    square root). ``batch_size=None`` (or ``<= 0``, or ``>= n_rows``) means full-batch gradient descent.
    ``early_stopping``: ``"weight_diff"`` stops when the norm of the change of the joint
    weight vector over an epoch falls below ``tol``; ``"loss"`` when the (Taylor) loss
    changes by less than ``tol``; ``"none"`` runs ``max_iter`` epochs.
    ``mode``: ``"arbiter"`` (a third party holds the key) or ``"two_party"`` (no arbiter).
    ``scheme``: an HE scheme of :func:`atoll.crypto.he.scheme_names`; ``key_bits`` its size.
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
    ``random_state``: the guest's batch order (a job derives it from the job's seed when unset);
    ``n_jobs``: HE worker processes per party. ``family`` is pinned by each algorithm.
    """

    pinned: ClassVar[tuple[str, ...]] = ("family",)

    family: Literal["logistic", "linear", "poisson"] = "logistic"
    penalty: Literal["l1", "l2"] | None = "l2"
    alpha: float = Field(0.0, ge=0.0)
    max_iter: int = Field(30, ge=1)
    tol: float = Field(1e-4, ge=0.0)
    early_stopping: Literal["weight_diff", "loss", "none"] = "weight_diff"
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = Field(0.05, gt=0.0)
    decay: float = Field(0.0, ge=0.0)
    decay_sqrt: bool = False
    batch_size: int | None = None
    fit_intercept: bool = True
    compute_loss: bool = True
    mode: Literal["arbiter", "two_party"] = "arbiter"
    approximation: Literal["taylor", "guest_taylor"] = "taylor"
    precondition: bool = False
    precompute: bool = False
    scheme: str = "paillier"
    key_bits: int = Field(2048, ge=512)
    precision_bits: int | None = None
    mul_precision_bits: int | None = None
    random_state: int | None = None
    n_jobs: int = Field(1, ge=1)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v: Any) -> Any:
        return _whole(v, "batch_size (rows per batch; None for full batch)", allow_none=True)

    @field_validator("n_jobs", mode="before")
    @classmethod
    def _n_jobs(cls, v: Any) -> Any:
        return _whole(v, "n_jobs (HE worker processes per party)", allow_none=False)

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return check_scheme(v)

    @model_validator(mode="after")
    def _consistent(self) -> GLMParams:
        if self.approximation != "taylor" and self.family != "logistic":
            raise ValueError("approximation='guest_taylor' applies to logistic regression only")
        if self.approximation == "guest_taylor" and self.early_stopping == "loss":
            raise ValueError("approximation='guest_taylor' has no encrypted loss; use "
                             "early_stopping='weight_diff' or 'none'")
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

    def optimizer_params(self) -> OptimizerParams:
        return OptimizerParams(optimizer=self.optimizer, learning_rate=self.learning_rate, decay=self.decay,
                               decay_sqrt=self.decay_sqrt, penalty=self.penalty, alpha=self.alpha)

    def plan(self) -> dict:
        """The parameters that must match between parties (checked at the start of a job)."""
        return {"family": self.family, "mode": self.mode, "approximation": self.approximation,
                "max_iter": int(self.max_iter),
                "batch_size": -1 if self.batch_size is None else int(self.batch_size),
                "early_stopping": self.early_stopping, "needs_loss": bool(self.needs_loss),
                "scheme": self.scheme, "tol": float(self.tol)}


class HeteroLRParams(GLMParams):
    """Parameters of ``hetero_lr`` (:class:`GLMParams`, family logistic)."""

    family: Literal["logistic"] = "logistic"


class HeteroLinRParams(GLMParams):
    """Parameters of ``hetero_linr`` (:class:`GLMParams`, family linear)."""

    family: Literal["linear"] = "linear"


class HeteroPoissonParams(GLMParams):
    """Parameters of ``hetero_poisson`` (:class:`GLMParams`, family poisson)."""

    family: Literal["poisson"] = "poisson"


#: the regressors' (linear, Poisson) facade defaults that differ from the job defaults: plain SGD
#: with a larger step on locally whitened features (``Algorithm.facade_defaults``)
REGRESSOR_DEFAULTS = {"optimizer": "sgd", "learning_rate": 0.5, "precondition": True}


def check_parties(params: GLMParams, parties: dict[str, list[str]]) -> None:
    """The registry's ``check`` hook: the roles a GLM job needs for its mode."""
    if not parties.get("guest") or not parties.get("host"):
        raise param_error("needs a guest and at least one host")
    if params.mode == "arbiter" and len(parties.get("arbiter", [])) != 1:
        raise param_error("in mode 'arbiter' needs one party with role arbiter (or set params.mode: two_party)")
    if params.mode == "two_party" and len(parties["host"]) != 1:
        raise param_error("in mode 'two_party' takes exactly one host", "mode")


# =============================================================================== families
@dataclass
class LossParts:
    """A batch loss as ``(const + coef_v.V + coef_u.U_H + coef_sq * sum(U_H**2)) / n``."""

    const: float
    coef_v: np.ndarray | None
    coef_u: np.ndarray | None
    coef_sq: float


class Family:
    """What one GLM family changes in the shared protocol: pure functions of numpy arrays.

    ``chained``: the hosts' shares multiply along a chain of hosts (Poisson's ``prod exp(u_h)``)
    instead of adding up at the guest. ``loss_needs_u``: the encrypted loss needs the hosts'
    ``[[u_h]]`` (Poisson) rather than their ``[[|u_h|^2]]`` and cross terms.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = ""
    chained: ClassVar[bool] = False
    loss_needs_u: ClassVar[bool] = False
    uses_exposure: ClassVar[bool] = False

    def host_share(self, u_h: np.ndarray) -> np.ndarray:
        """What a host contributes for its partial score ``u_h``."""
        return np.asarray(u_h, dtype=np.float64)

    def combine(self, shares: Sequence[np.ndarray]) -> np.ndarray:
        """``V`` from the hosts' shares."""
        out = np.zeros_like(shares[0])
        for s in shares:
            out = out + s
        return out

    def residual_parts(self, u_g: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None,
                       approximation: str = "taylor") -> tuple[np.ndarray | None, np.ndarray, float]:
        """``(alpha, beta, scale)`` with ``d = scale * (alpha * V + beta)``; ``alpha`` None means 1."""
        raise NotImplementedError

    def scale(self, approximation: str = "taylor") -> float:
        return self.residual_parts(np.zeros(1), np.zeros(1), None, approximation)[2]

    def loss_parts(self, u_g: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> LossParts:
        raise NotImplementedError

    def batch_loss(self, u: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> float:
        """Mean loss of a batch from the full score ``u`` (plaintext twin of the encrypted loss)."""
        raise NotImplementedError

    def mean(self, score: np.ndarray, exposure: np.ndarray | None = None) -> np.ndarray:
        """The model's prediction from the linear score."""
        return np.asarray(score, dtype=np.float64)

    def check_labels(self, y: np.ndarray) -> None:
        """Refuse labels the family cannot model (raise :class:`DataError`)."""

    def row_encryptions(self, role: str, mode: str, needs_loss: bool) -> int:
        """Fresh encryptions per row and epoch of a party (precomputed randomness)."""
        return 1

    def __repr__(self) -> str:
        return f"<GLM family {self.name}>"


class Logistic(Family):
    """Logistic regression: second-order Taylor expansion of the log loss (or around ``u_g``)."""

    name, task = "logistic", "binary"

    def residual_parts(self, u_g, y, exposure=None, approximation="taylor"):
        if approximation == "guest_taylor":
            s = 0.5 * (1.0 + np.tanh(0.5 * u_g))
            return s * (1.0 - s), s - y, 1.0
        return None, u_g + 2.0 - 4.0 * y, 0.25

    def loss_parts(self, u_g, y, exposure=None):
        """``log 2 - s u / 2 + u**2 / 8`` with labels ``s = 2y - 1`` (Taylor around 0)."""
        s = 2.0 * y - 1.0
        const = float(np.sum(LOG2 - 0.5 * s * u_g + 0.125 * u_g ** 2))
        return LossParts(const, -0.5 * s + 0.25 * u_g, None, 0.125)

    def batch_loss(self, u, y, exposure=None):
        s = 2.0 * y - 1.0
        return float(np.mean(LOG2 - 0.5 * s * u + 0.125 * u ** 2))

    def mean(self, score, exposure=None):
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(score, dtype=np.float64)))

    def check_labels(self, y):
        if not np.isin(np.unique(y), (0.0, 1.0)).all():
            raise DataError(f"logistic regression needs labels in {{0, 1}}, got {np.unique(y)[:5].tolist()}; "
                            "map the positive class to 1")
        if np.unique(y).size < 2:
            raise DataError(f"logistic regression needs both classes in the training labels; all are {y[0]:g}")


class Linear(Family):
    """Linear regression: the squared loss, whose residual ``u - y`` is exactly linear."""

    name, task = "linear", "regression"

    def residual_parts(self, u_g, y, exposure=None, approximation="taylor"):
        return None, u_g - y, 1.0

    def loss_parts(self, u_g, y, exposure=None):
        """``(u - y)**2 / 2``."""
        r = u_g - y
        return LossParts(float(np.sum(0.5 * r ** 2)), r, None, 0.5)

    def batch_loss(self, u, y, exposure=None):
        return float(np.mean(0.5 * (u - y) ** 2))


class Poisson(Family):
    """Poisson regression with exposure: ``mu = e * exp(u)``, multiplicative in the hosts' scores."""

    name, task = "poisson", "poisson"
    chained = loss_needs_u = uses_exposure = True

    def host_share(self, u_h):
        return np.exp(u_h)

    def combine(self, shares):
        out = np.ones_like(shares[0])
        for s in shares:
            out = out * s
        return out

    def residual_parts(self, u_g, y, exposure=None, approximation="taylor"):
        e = np.ones_like(u_g) if exposure is None else exposure
        return e * np.exp(u_g), -np.asarray(y, dtype=np.float64), 1.0

    def loss_parts(self, u_g, y, exposure=None):
        """Negative log-likelihood up to ``log y!``: ``mu - y * log(mu)``."""
        log_e = 0.0 if exposure is None else np.log(exposure)
        alpha, _, _ = self.residual_parts(u_g, y, exposure)
        const = float(np.sum(-y * (u_g + log_e)))
        return LossParts(const, alpha, -np.asarray(y, dtype=np.float64), 0.0)

    def batch_loss(self, u, y, exposure=None):
        log_e = 0.0 if exposure is None else np.log(exposure)
        return float(np.mean(np.exp(u + log_e) - y * (u + log_e)))

    def mean(self, score, exposure=None):
        return np.exp(np.asarray(score, dtype=np.float64)) * (1.0 if exposure is None else exposure)

    def check_labels(self, y):
        if (y < 0).any() or (np.floor(y) != y).any():
            raise DataError("Poisson regression needs non-negative integer counts as labels")

    def row_encryptions(self, role, mode, needs_loss):
        if role == "guest" and mode == "two_party":
            return 2  # [[alpha]] and [[beta]]
        if role == "host" and needs_loss:
            return 2  # [[exp(u)]] and [[u]]
        return 1


LOGISTIC, LINEAR, POISSON = Logistic(), Linear(), Poisson()
FAMILIES: dict[str, Family] = {f.name: f for f in (LOGISTIC, LINEAR, POISSON)}


def get_family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except KeyError:
        raise ConfigError(f"family={family!r} is not supported; use one of {tuple(FAMILIES)}") from None


# the pure math by family name (the plaintext twin and tests read these)
def host_share(family: str | Family, u_h: np.ndarray) -> np.ndarray:
    return get_family(family).host_share(u_h)


def combine_shares(family: str | Family, shares: Sequence[np.ndarray]) -> np.ndarray:
    return get_family(family).combine(shares)


def residual_parts(family: str | Family, u_g: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None,
                   approximation: str = "taylor") -> tuple[np.ndarray | None, np.ndarray, float]:
    return get_family(family).residual_parts(u_g, y, exposure, approximation)


def residual(family: str | Family, u_g: np.ndarray, v: np.ndarray, y: np.ndarray,
             exposure: np.ndarray | None = None, approximation: str = "taylor") -> np.ndarray:
    """The plaintext residual ``d`` (what the protocol computes under encryption)."""
    alpha, beta, scale = residual_parts(family, u_g, y, exposure, approximation)
    return scale * ((v if alpha is None else alpha * v) + beta)


def loss_parts(family: str | Family, u_g: np.ndarray, y: np.ndarray,
               exposure: np.ndarray | None = None) -> LossParts:
    """Guest-side coefficients of the batch loss (see each family's ``loss_parts``)."""
    return get_family(family).loss_parts(u_g, y, exposure)


def batch_loss(family: str | Family, u: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> float:
    return get_family(family).batch_loss(u, y, exposure)


def mean_function(family: str | Family, score: np.ndarray, exposure: np.ndarray | None = None) -> np.ndarray:
    """The model's prediction from the linear score: sigmoid, identity or ``exposure * exp``."""
    return get_family(family).mean(score, exposure)



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


# =============================================================================== pure helpers
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
    per_row = get_family(params.family).row_encryptions(role, params.mode, params.needs_loss)
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
    y = np.asarray(y, dtype=np.float64)
    xs = [prepare(np.asarray(b, dtype=np.float64), params.precondition)[0] for b in blocks]
    xs[0] = with_intercept(xs[0], params.fit_intercept)
    n = xs[0].shape[0]
    ws = [np.zeros(x.shape[1]) for x in xs]
    opts = [Optimizer(params.optimizer_params(), xs[0].shape[1], penalty_mask(xs[0].shape[1], params.fit_intercept))]
    opts += [Optimizer(params.optimizer_params(), x.shape[1]) for x in xs[1:]]
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


def _check_label(family: Family, y: Any, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != n:
        raise DataError(f"the guest has {n} feature rows but {y.shape[0]} labels; pass one label per row")
    if not np.isfinite(y).all():
        raise DataError("labels contain NaN or infinity; drop those rows first")
    family.check_labels(y)
    return y


def _check_exposure(exposure: Any, n: int) -> np.ndarray | None:
    if exposure is None:
        return None
    e = np.asarray(exposure, dtype=np.float64).ravel()
    if e.shape[0] != n or not (e > 0).all() or not np.isfinite(e).all():
        raise DataError(f"exposure must hold {n} finite positive values (one per row)")
    return e


# =============================================================================== exchanges
@dataclass
class Keys:
    """A party's keys for one run: ``pk`` encrypts its own values; in two-party mode ``sk``
    decrypts what the peer masked and ``peer_pk`` encrypts for the peer (arbiter mode: the
    arbiter's key for both, no private key)."""

    pk: Any
    sk: Any
    peer_pk: Any


class ArbiterExchange:
    """The steps of arbiter mode: C makes the only key pair, decrypts the masked gradients and
    applies the stopping rule (protocol steps 1-4 of :mod:`~atoll.ml.vertical.hetero_lr`)."""

    name = "arbiter"
    coordinator = "arbiter"

    def keys(self, role: _Role, ctx: Any, peer: str) -> Keys:
        pk = role._peer_key(ctx.recv("arbiter", "public_key"), "the arbiter")
        return Keys(pk, None, pk)

    def alignment_audience(self) -> list[str]:
        return ["host", "arbiter"]

    def guest_epoch_start(self, ctx: Any, n_batches: int, n: int) -> None:
        ctx.send("arbiter", "epoch_info", {"n_batches": n_batches, "n_rows": n})

    def guest_before_shares(self, role: GLMGuest, ctx: Any, keys: Keys, alpha: Any, beta: np.ndarray) -> Any:
        # encrypted while the hosts encrypt their shares. beta is encrypted afresh (never added
        # in clear): a host must not be able to strip it off its own ciphertext and read labels
        return keys.pk.encrypt(beta, jobs=role.jobs) if alpha is None else None

    def guest_gradient(self, role: GLMGuest, ctx: Any, keys: Keys, xb: np.ndarray, alpha: Any,
                       beta: np.ndarray, enc_beta: Any, enc_v: Any, loss: Any) -> tuple[np.ndarray, float | None]:
        jobs, prec = role.jobs, role.params.mul_precision_bits
        enc_av = enc_v if alpha is None else enc_v.mul(alpha, jobs=jobs)
        if enc_beta is None:
            enc_beta = keys.pk.encrypt(beta, precision=enc_av.exp, jobs=jobs)
        enc_r = enc_av + enc_beta
        ctx.send("host", "residual", enc_r)
        masked, rs = mask(keys.pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
        ctx.send("arbiter", "masked_gradient", masked)
        if loss is not None:
            ctx.send("arbiter", "loss", loss())
        return unmask(ctx.recv("arbiter", "gradient"), rs, masked.exp), None

    def guest_epoch_end(self, role: GLMGuest, ctx: Any, dw: float, loss_sum: float, n: int,
                        losses: list[float]) -> bool:
        if role.params.needs_weight_diff:
            ctx.send("arbiter", "weight_diff", dw)
        verdict = ctx.recv("arbiter", "verdict")
        if verdict.get("loss") is not None:
            losses.append(float(verdict["loss"]))
        return bool(verdict["stop"])

    def host_gradient(self, role: GLMHost, ctx: Any, keys: Keys, xb: np.ndarray, share: np.ndarray) -> np.ndarray:
        jobs, prec = role.jobs, role.params.mul_precision_bits
        enc_r = ctx.recv("guest", "residual")
        masked, rs = mask(keys.pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
        ctx.send("arbiter", "masked_gradient", masked)
        return unmask(ctx.recv("arbiter", "gradient"), rs, masked.exp)


class TwoPartyExchange:
    """The steps of two-party mode (1'-4' of :mod:`~atoll.ml.vertical.hetero_lr`): each side makes
    its own key pair, completes the other's gradient under the other's key, masks it, and has
    the other decrypt it; the guest applies the stopping rule."""

    name = "two_party"
    coordinator = "guest"

    def keys(self, role: _Role, ctx: Any, peer: str) -> Keys:
        kp = role._keygen()
        ctx.send(peer, f"{ctx.role}_key", kp.public_key)
        return Keys(kp.public_key, kp.private_key, role._peer_key(ctx.recv(peer, f"{peer}_key"), f"the {peer}"))

    def alignment_audience(self) -> list[str]:
        return ["host"]

    def guest_epoch_start(self, ctx: Any, n_batches: int, n: int) -> None:
        pass

    def guest_before_shares(self, role: GLMGuest, ctx: Any, keys: Keys, alpha: Any, beta: np.ndarray) -> Any:
        # the host forms [[d / scale]] = [[alpha]] * V + [[beta]] under the guest's key
        parts = {"beta": keys.pk.encrypt(beta, jobs=role.jobs)}
        if alpha is not None:
            parts["alpha"] = keys.pk.encrypt(alpha, jobs=role.jobs)
        ctx.send("host", "residual_parts", parts)
        return None

    def guest_gradient(self, role: GLMGuest, ctx: Any, keys: Keys, xb: np.ndarray, alpha: Any,
                       beta: np.ndarray, enc_beta: Any, enc_v: Any, loss: Any) -> tuple[np.ndarray, float | None]:
        jobs, prec = role.jobs, role.params.mul_precision_bits
        xa = xb if alpha is None else xb * alpha[:, None]
        masked, rs = mask(keys.peer_pk, enc_v.matvec_t(xa, jobs=jobs, precision=prec))
        ctx.send("host", "masked_gradient", masked)
        if loss is not None:
            masked_loss, loss_rs = mask(keys.peer_pk, loss())
            ctx.send("host", "masked_loss", masked_loss)
        # decrypt the host's masked gradient for it
        ctx.send("host", "gradient", decrypt_raw(keys.sk, ctx.recv("host", "masked_gradient_h"), jobs))
        g = unmask(ctx.recv("host", "gradient_g"), rs, masked.exp) + xb.T @ beta
        loss_sum = None
        if loss is not None:
            loss_sum = float(unmask(ctx.recv("host", "loss"), loss_rs, masked_loss.exp)[0])
        return g, loss_sum

    def guest_epoch_end(self, role: GLMGuest, ctx: Any, dw: float, loss_sum: float, n: int,
                        losses: list[float]) -> bool:
        p = role.params
        if p.needs_loss:
            losses.append(loss_sum / n)
        dw_h = float(ctx.recv("host", "weight_diff")) if p.needs_weight_diff else 0.0
        stop = should_stop(p, losses, math.sqrt(dw + dw_h))
        ctx.send("host", "verdict", {"stop": stop})
        return stop

    def host_gradient(self, role: GLMHost, ctx: Any, keys: Keys, xb: np.ndarray, share: np.ndarray) -> np.ndarray:
        jobs, prec = role.jobs, role.params.mul_precision_bits
        parts = ctx.recv("guest", "residual_parts")
        if "alpha" in parts:
            enc_r = parts["alpha"].mul(share, jobs=jobs) + parts["beta"]
        else:
            enc_r = parts["beta"] + share
        masked, rs = mask(keys.peer_pk, enc_r.matvec_t(xb, jobs=jobs, precision=prec))
        ctx.send("guest", "masked_gradient_h", masked)
        ctx.send("guest", "gradient_g", decrypt_raw(keys.sk, ctx.recv("guest", "masked_gradient"), jobs))
        if role.params.needs_loss:
            ctx.send("guest", "loss", decrypt_raw(keys.sk, ctx.recv("guest", "masked_loss"), jobs))
        return unmask(ctx.recv("guest", "gradient"), rs, masked.exp)


EXCHANGES = {"arbiter": ArbiterExchange(), "two_party": TwoPartyExchange()}


# =============================================================================== roles
class _Role:
    """A GLM role: a subclass binds ``family`` (a :class:`Family`); the parameters say the mode."""

    family: ClassVar[Family] = LOGISTIC

    def __init__(self, params: GLMParams | None = None, **kwargs: Any):
        params = params if params is not None else GLMParams(family=self.family.name)
        if kwargs or params.family != self.family.name:
            # the class binds the family whatever params say
            params = GLMParams(**{**params.model_dump(), **kwargs, "family": self.family.name})
        self.params = params
        self.exchange = EXCHANGES[params.mode]

    @property
    def jobs(self) -> int:
        return self.params.n_jobs

    def _keygen(self) -> Any:
        p = self.params
        return he.generate_keypair(scheme=p.scheme, key_bits=p.key_bits, precision_bits=p.precision_bits)

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

    def _optimizer(self, n_weights: int, fit_intercept: bool = False) -> Optimizer:
        return Optimizer(self.params.optimizer_params(), n_weights, penalty_mask(n_weights, fit_intercept))


class GLMGuest(_Role):
    """Guest: holds the labels (and exposure), its own features and the intercept.

    What the guest sees: the public key(s); ciphertexts of the hosts' partial scores it cannot
    decrypt; its own gradient; the loss per epoch; the stop decisions. In two-party mode it also
    holds a private key and decrypts the host's gradient *plus the host's uniform mask*, and
    (``early_stopping="weight_diff"`` only) receives the host's squared weight-change norm.
    """

    def fit(self, ctx: Any, x: Any, y: Any, exposure: Any = None, ids: Sequence[Any] | None = None) -> GuestModel:
        p, ex = self.params, self.exchange
        x = _as_matrix(x, "the guest")
        n = x.shape[0]
        y = _check_label(self.family, y, n)
        exposure = _check_exposure(exposure, n)
        if p.mode == "two_party" and len(ctx.parties_of("host")) != 1:
            raise ConfigError("two_party mode runs with exactly one host; with several hosts use "
                              "mode='arbiter'")
        if exposure is not None and not self.family.uses_exposure:
            raise ConfigError("exposure is only used by Poisson regression")
        with ctx.scope("fit"):
            self._check_alignment(ctx, n, ids, ex.alignment_audience(), task="train")
            keys = ex.keys(self, ctx, "host")
            xp, mean, t = prepare(x, p.precondition)
            xg = with_intercept(xp, p.fit_intercept)
            w = np.zeros(xg.shape[1])
            opt = self._optimizer(xg.shape[1], p.fit_intercept)
            rng = np.random.default_rng(p.random_state)
            losses: list[float] = []
            seconds: list[float] = []
            offline: list[float] = []
            converged = False
            epoch = 0
            for epoch in range(p.max_iter):
                if p.precompute:  # offline phase: randomness for this epoch, then a barrier
                    tic = time.perf_counter()
                    keys.pk.precompute(encryptions_per_epoch(p, "guest", n, xg.shape[1]) - keys.pk.pool_size,
                                       jobs=self.jobs)
                    with ctx.scope("offline", epoch):
                        ctx.gather("host", "ready")
                    offline.append(time.perf_counter() - tic)
                tic = time.perf_counter()
                with ctx.scope("epoch", epoch):
                    perm = epoch_permutation(rng, n, p.batch_size)
                    plan = batches(n, p.batch_size, perm)
                    ctx.send("host", "batches", perm)
                    ex.guest_epoch_start(ctx, len(plan), n)
                    opt.set_epoch(epoch)
                    start = w.copy()
                    loss_sum = 0.0
                    for b, idx in enumerate(plan):
                        with ctx.scope("batch", b):
                            eb = None if exposure is None else exposure[idx]
                            w, batch_loss_sum = self._batch(ctx, keys, xg[idx], y[idx], eb, w, opt)
                            loss_sum += batch_loss_sum or 0.0
                    stop = ex.guest_epoch_end(self, ctx, float(np.sum((w - start) ** 2)), loss_sum, n, losses)
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
    def _check_alignment(self, ctx: Any, n: int, ids: Sequence[Any] | None, audience: list[str],
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
        ctx.send(audience, "aligned", {"ok": ok, "reason": reason, "plan": plan})
        if not ok:
            raise DataError(f"cannot {task}: {reason}. Align the parties' rows first (run PSI and pass "
                            "every party its rows in the same order), and use the same parameters")

    # ---------------------------------------------------------------- one batch
    def _batch(self, ctx: Any, keys: Keys, xb: np.ndarray, yb: np.ndarray, eb: np.ndarray | None,
               w: np.ndarray, opt: Optimizer) -> tuple[np.ndarray, float | None]:
        """One batch; returns the new weights and (two-party mode) the batch's summed loss."""
        p, ex = self.params, self.exchange
        u_g = xb @ w
        alpha, beta, scale = self.family.residual_parts(u_g, yb, eb, p.approximation)
        hosts = ctx.parties_of("host")
        enc_beta = ex.guest_before_shares(self, ctx, keys, alpha, beta)
        # [[V]] (under the arbiter's key, or the host's key in two-party mode)
        if self.family.chained:
            enc_v = ctx.recv(hosts[-1], "share")
        else:
            shares = ctx.gather("host", "share")
            enc_v = shares[hosts[0]]
            for h in hosts[1:]:
                enc_v = enc_v + shares[h]
        loss = (lambda: self._encrypted_loss(ctx, enc_v, u_g, yb, eb, hosts)) if p.needs_loss else None
        g, loss_sum = ex.guest_gradient(self, ctx, keys, xb, alpha, beta, enc_beta, enc_v, loss)
        return opt.step(w, scale * g / xb.shape[0]), loss_sum

    def _encrypted_loss(self, ctx: Any, enc_v: Any, u_g: np.ndarray, yb: np.ndarray,
                        eb: np.ndarray | None, hosts: list[str]) -> Any:
        jobs, prec = self.jobs, self.params.mul_precision_bits
        lp = self.family.loss_parts(u_g, yb, eb)
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
            self._check_alignment(ctx, n, ids, ["host"], task="score")
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
        p, ex = self.params, self.exchange
        x = _as_matrix(x, ctx.party, min_features=1)
        n = x.shape[0]
        with ctx.scope("fit"):
            self._report_rows(ctx, n, ids, task="train")
            keys = ex.keys(self, ctx, "guest")
            x, mean, t = prepare(x, p.precondition)
            w = np.zeros(x.shape[1])
            opt = self._optimizer(x.shape[1])
            epoch, converged = 0, False
            for epoch in range(p.max_iter):
                if p.precompute:
                    keys.pk.precompute(encryptions_per_epoch(p, "host", n, x.shape[1]) - keys.pk.pool_size,
                                       jobs=self.jobs)
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
                            w = self._batch(ctx, keys, x[idx], w, opt)
                    if p.needs_weight_diff:  # sent only when the stopping rule needs it
                        ctx.send(ex.coordinator, "weight_diff", float(np.sum((w - start) ** 2)))
                    verdict = ctx.recv(ex.coordinator, "verdict")
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

    def _batch(self, ctx: Any, keys: Keys, xb: np.ndarray, w: np.ndarray, opt: Optimizer) -> np.ndarray:
        p, fam = self.params, self.family
        jobs, prec = self.jobs, p.mul_precision_bits
        u = xb @ w
        share = fam.host_share(u)
        hosts = ctx.parties_of("host")
        me = hosts.index(ctx.party)
        # 1. send [[share]] (chained families: a chain of products through the hosts, ending at the guest)
        if fam.chained and me > 0:
            enc_share = ctx.recv(hosts[me - 1], "share").mul(share, jobs=jobs)
        else:
            enc_share = keys.pk.encrypt(share, jobs=jobs)
        if fam.chained and me < len(hosts) - 1:
            ctx.send(hosts[me + 1], "share", enc_share)
        else:
            ctx.send("guest", "share", enc_share)
        # 1b. loss terms: [[u]] (Poisson), or [[|u|^2]] and the cross terms with earlier hosts
        if p.needs_loss:
            terms: dict[str, Any] = {}
            if fam.loss_needs_u:
                terms["u"] = keys.pk.encrypt(u, jobs=jobs)
            else:
                sq = keys.pk.encrypt(np.array([float(u @ u)]))
                for h in hosts[:me]:
                    sq = sq + _dot(ctx.recv(h, "loss_u"), 2.0 * u, jobs, prec)
                for h in hosts[me + 1:]:
                    ctx.send(h, "loss_u", enc_share)
                terms["sq"] = sq
            ctx.send("guest", "loss_terms", terms)
        # 2-4. gradient through masked decryption
        g = self.exchange.host_gradient(self, ctx, keys, xb, share)
        return opt.step(w, fam.scale(p.approximation) * g / xb.shape[0])

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


# =============================================================================== model parts
def save_guest(m: GuestModel) -> dict[str, Any]:
    return {"family": m.family, "coef": np.asarray(m.coef), "intercept": float(m.intercept),
            "n_iter": int(m.n_iter), "converged": bool(m.converged),
            "history": {"loss": [float(v) for v in m.loss_history]}}


def load_guest(d: dict[str, Any]) -> GuestModel:
    return GuestModel(d["family"], np.asarray(d["coef"], dtype=np.float64), float(d["intercept"]),
                      int(d["n_iter"]), bool(d["converged"]), [float(v) for v in d["history"]["loss"]])


def save_host(m: HostModel) -> dict[str, Any]:
    return {"family": m.family, "coef": np.asarray(m.coef), "offset": float(m.offset), "n_iter": int(m.n_iter),
            "converged": bool(m.converged)}


def load_host(d: dict[str, Any]) -> HostModel:
    return HostModel(d["family"], np.asarray(d["coef"], dtype=np.float64), int(d["n_iter"]), bool(d["converged"]),
                     float(d.get("offset", 0.0)))


def save_arbiter(r: ArbiterReport) -> dict[str, Any]:
    return {"n_iter": int(r.n_iter), "converged": bool(r.converged),
            "loss_history": [float(v) for v in r.loss_history]}


def load_arbiter(d: dict[str, Any]) -> ArbiterReport:
    return ArbiterReport(int(d["n_iter"]), bool(d["converged"]), [float(v) for v in d["loss_history"]])


PARTS = {"guest": ModelPart(save_guest, load_guest), "host": ModelPart(save_host, load_host),
         "arbiter": ModelPart(save_arbiter, load_arbiter)}


# =============================================================================== centralised twin
class LinearTwin:
    """The scikit-learn model of a family with the same penalty (``C = 1 / (alpha * n_rows)``, ``Ridge``'s
    ``alpha * n_rows``), set from the number of training rows at fit: the baseline of a linear model.
    ``params`` needs ``alpha``, ``penalty`` and ``fit_intercept`` (a GLM's or SS-LR's)."""

    def __init__(self, family: str | Family, params: Any, seed: int):
        self.family, self.params, self.seed = get_family(family), params, seed

    def fit(self, x: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> LinearTwin:
        from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge

        p, n = self.params, len(y)
        if self.family is LOGISTIC:
            c = 1.0 / (p.alpha * n) if p.alpha > 0 and p.penalty else 1e12
            solver = "liblinear" if p.penalty == "l1" and p.alpha > 0 else "lbfgs"
            kw = {"l1_ratio": 1.0} if p.penalty == "l1" and p.alpha > 0 else {}
            self.model = LogisticRegression(C=c, solver=solver, max_iter=5000, random_state=self.seed,
                                            fit_intercept=p.fit_intercept, **kw)
        elif self.family is LINEAR:
            self.model = (Ridge(alpha=p.alpha * n, fit_intercept=p.fit_intercept) if p.alpha > 0
                          else LinearRegression(fit_intercept=p.fit_intercept))
        else:
            self.model = PoissonRegressor(alpha=p.alpha, fit_intercept=p.fit_intercept, max_iter=1000)
        if exposure is not None:
            # Poisson with exposure e (log link, offset log e) has the optimum of a Poisson fit to
            # the rates y / e with sample weights e
            self.model.fit(x, y / exposure, sample_weight=exposure)
        else:
            self.model.fit(x, y)
        self.name = type(self.model).__name__
        return self

    def score(self, x: np.ndarray, exposure: np.ndarray | None = None) -> np.ndarray:
        if self.family is LOGISTIC:
            return self.model.predict_proba(x)[:, 1]
        return self.model.predict(x) * (1.0 if exposure is None else exposure)


def twin_of(family: Family) -> Any:
    """The registry's ``twin`` hook of one family: ``(estimator, score_fn)``."""
    def centralized_twin(params: Any, seed: int, task: str) -> tuple[Any, Any]:
        return LinearTwin(family, params, seed), lambda m, x, **kw: m.score(x, **kw)
    return centralized_twin


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


class HeteroGLMEstimator(FederatedEstimator):
    """Common body of the GLM facades: every party of one job run locally.

    Parameters: those of :class:`GLMParams` (scikit-learn names where they mean the same), with
    the algorithm's facade defaults, plus ``transport`` ('threads': this process, or
    'processes': one local process per party over gRPC with mutual TLS), ``timeout`` (seconds
    a party waits for a message) and ``roles`` (party name -> 'guest' / 'host' / 'arbiter'
    when the data does not use the names 'guest', 'host_0', ...).

    Learned: ``coef_`` (guest's features, then each host's in name order), ``intercept_``,
    ``n_iter_``, ``converged_``, ``loss_history_``, ``epoch_seconds_`` / ``offline_seconds_``,
    ``feature_names_in_`` (per party, from DataFrames), and the per-party halves
    ``guest_model_`` / ``host_models_`` that a real deployment keeps apart. A subclass binds
    an algorithm (``algorithm = HETERO_LR``).
    """

    @property
    def _roles(self) -> tuple[type[GLMGuest], type[GLMHost], type[GLMArbiter]]:
        r = self.algorithm.roles
        return r["guest"], r["host"], r["arbiter"]

    # -------------------------------------------------------------- fit / predict
    def fit(self, data: dict, exposure: Any = None) -> HeteroGLMEstimator:
        """Train every party in this process (threads) or as local processes; returns self.

        ``data = {"guest": (X_guest, y), "host_0": X_host_0, ...}`` (or any names with ``roles=``);
        DataFrames' indexes are the row ids the parties check alignment with.
        """
        from atoll.federation import Party

        params = self._params()
        self._launch_mode()
        d = self._vertical(data, need_label=True, task="train")
        exposure = d.exposure if exposure is None else exposure
        guest_cls, host_cls, arbiter_cls = self._roles
        y = np.asarray(d.y, dtype=np.float64).ravel()
        e = None if exposure is None else np.asarray(exposure, dtype=np.float64).ravel()
        parties = {d.guest: Party("guest", _fit_guest, {"role": guest_cls(params), "x": d.x.x, "y": y,
                                                        "exposure": e, "ids": d.x.ids})}
        for name, t in d.hosts.items():
            parties[name] = Party("host", _fit_host, {"role": host_cls(params), "x": t.x, "ids": t.ids})
        if params.mode == "arbiter":
            parties[self._arbiter_name(list(parties))] = Party("arbiter", _fit_arbiter,
                                                               {"role": arbiter_cls(params)})
        out = self._run(parties)
        g: GuestModel = out[d.guest]
        self.guest_model_ = g
        self.host_models_ = {name: out[name] for name in d.hosts}
        self.coef_ = np.concatenate([g.coef] + [m.coef for m in self.host_models_.values()])
        self.intercept_ = g.intercept + sum(m.offset for m in self.host_models_.values())
        self.n_iter_ = g.n_iter
        self.converged_ = g.converged
        self.loss_history_ = list(g.loss_history)
        self.epoch_seconds_ = list(g.epoch_seconds)
        self.offline_seconds_ = list(g.offline_seconds)
        self.n_features_in_ = self.coef_.shape[0]
        self.params_ = params
        self._remember(d)
        return self

    def decision_function(self, data: dict) -> np.ndarray:
        """Joint scoring of aligned rows: the linear score ``x . w + b`` (the guest's result)."""
        from atoll.federation import Party

        self._check_fitted()
        params = self.params_
        d = self._vertical(data, need_label=False, task="score", like=self._fitted())
        guest_cls, host_cls, _ = self._roles
        parties = {d.guest: Party("guest", _predict_guest, {"role": guest_cls(params), "model": self.guest_model_,
                                                            "x": d.x.x, "ids": d.x.ids})}
        for name, t in d.hosts.items():
            parties[name] = Party("host", _predict_host, {"role": host_cls(params), "model": self.host_models_[name],
                                                          "x": t.x, "ids": t.ids})
        return self._run(parties)[d.guest]

    def _guest_entry(self, data: dict) -> Any:
        names = [k for k in data if self._role_map(list(data)).get(k) == "guest"]
        return data[names[0]] if names else None

    def _exposure(self, data: dict, exposure: Any) -> np.ndarray | None:
        g = self._guest_entry(data)
        if exposure is None and isinstance(g, tuple) and len(g) >= 3:
            exposure = g[2]
        return None if exposure is None else np.asarray(exposure, dtype=np.float64).ravel()

    def _labels(self, data: dict, y: Any) -> np.ndarray:
        if y is None:
            g = self._guest_entry(data)
            if not (isinstance(g, tuple) and len(g) >= 2 and g[1] is not None):
                raise DataError("score() needs labels: pass y=..., or the guest's entry as (X_guest, y)")
            y = g[1]
        return np.asarray(y, dtype=np.float64).ravel()


def register_glm(name: str, params: type[GLMParams], guest: type[GLMGuest], host: type[GLMHost],
                 arbiter: type[GLMArbiter], summary: str, facade_defaults: dict | None = None) -> Algorithm:
    """Register one GLM family's algorithm (its module calls this once)."""
    family = guest.family
    if not (host.family is family is arbiter.family) or params.model_fields["family"].default != family.name:
        raise TypeError(f"{name}: the role classes and the parameter model must bind the same family")
    return registry.register(Algorithm(
        name=name, params=params, roles={"guest": guest, "host": host, "arbiter": arbiter},
        layout="vertical", task=family.task, parts=PARTS, twin=twin_of(family), check=check_parties,
        facade_defaults=facade_defaults or {}, summary=summary))
