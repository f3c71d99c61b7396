"""Two-party secret-shared logistic and linear regression on vertically partitioned data.

The guest holds the labels and its feature columns, the host its columns, the rows aligned
(PSI). No third party is needed: correlated randomness comes from HE (``provider="he"``) or
OT (``"ot"``, when built); an arbiter may serve as a dealer (``"dealer"``, the fast path).
This is the SS-SGD of SecretFlow SPU / FATE's SSHE-LR class, on :mod:`atoll.secure.mpc`.

Protocol (guest = party 0, host = party 1; every step is an operation of one
:class:`~atoll.secure.mpc.tensor.Session`):
  1. both exchange row counts, an id digest and the parameters; a mismatch stops both;
  2. each party standardises its own columns locally (its means and scales never leave it)
     and secret-shares them; the guest shares the labels. X = [X_g | X_h | 1] is a sharing
     with no message (each party's share is its own block, zeros elsewhere);
  3. X is cut into fixed batches; each batch is masked once (E = X_b - A_b opened, SecureML's
     reusable mask), weights w start as a sharing of zeros;
  4. per batch: z = X_b w (Beaver with the fixed mask: opens w - B only), p = sigmoid(z)
     (logistic; :mod:`atoll.secure.mpc.functions`, ``sigmoid=``) or p = z (linear),
     g = X_b^T (p - y_b) / |b| + alpha w, w <- w - lr g; all shared;
  5. after each epoch a secure range check reveals one bit: whether every |w_j| is within
     ``weight_limit`` (fixed-point overflow stops training with a clear error instead of
     wrecking it silently);
  6. ``reveal="respectively"``: each party receives only its own weights (the guest also the
     intercept) and restores them to its raw feature scale; ``reveal="shared"``: the weights
     stay secret-shared and prediction runs on shares.
  Joint prediction: the host sends its partial scores X_h w_h to the guest (respectively), or
  the score X w is computed on shares and revealed to the guest only (shared).

What each party sees (semi-honest): the one-time-masked openings of the session (E once per
batch, w - B and the truncation and comparison masks per step), the peer's row count,
feature count, the power of two above its largest |standardised feature| (the public bound
that overflow tracking uses), one range-check bit per epoch, and at the end its own weights.
The host never sees labels, the guest's features, predictions or the loss; neither sees the
other's weights (respectively). A dealer sees request shapes only. At prediction the guest
learns the host's partial scores (as in FATE), the host nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, field_validator

from atoll.errors import ConfigError, DataError
from atoll.ml import registry
from atoll.ml.facade import FederatedEstimator
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, check_scheme, param_error
from atoll.ml.vertical._glm import LINEAR, LOGISTIC, _as_matrix, ids_digest, twin_of
from atoll.secure.mpc import Session, SharedTensor, concatenate, run_dealer
from atoll.crypto.ring import RingOverflow

GUEST, HOST = 0, 1


class SSGLMParams(AlgorithmParams):
    """Parameters of SS logistic / linear regression (the one schema: facade and job components)."""

    max_iter: int = Field(30, ge=1, description="epochs")
    batch_size: int | None = Field(None, ge=1, description="rows per batch; None: full batch")
    learning_rate: float = Field(1.0, gt=0.0)
    penalty: Literal["l2"] | None = "l2"
    alpha: float = Field(0.0, ge=0.0, description="L2 strength on the mean loss (sklearn C = 1/(alpha n))")
    fit_intercept: bool = True
    standardize: bool = Field(True, description="each party standardises its own columns locally")
    sigmoid: Literal["poly", "piecewise", "exp", "taylor"] = "poly"
    provider: Literal["auto", "dealer", "he", "ot"] = Field(
        "auto", description="correlated randomness: dealer (needs an arbiter), he, ot; auto: the dealer "
                            "when the job has an arbiter, else ot if built, else he")
    frac_bits: int = Field(16, ge=8, le=24)
    trunc: Literal["pair", "exact", "local"] = "pair"
    reveal: Literal["respectively", "shared"] = "respectively"
    weight_limit: float = Field(1e4, gt=0.0, description="secure per-epoch check |w| <= this")
    scheme: str = Field("paillier", description="HE scheme of the 'he' provider (atoll.crypto.he.scheme_names())")
    key_bits: int = Field(2048, ge=512)
    shuffle: bool = Field(False, description="cut batches from one permutation of the rows drawn from "
                          "random_state (both parties draw the same one; the order is public)")
    random_state: int | None = None

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return check_scheme(v)

    def session_options(self, ctx: Any, peer: str, index: int) -> dict:
        name = resolve_provider(self.provider, ctx)
        opts: dict[str, Any] = {"provider": name, "frac_bits": self.frac_bits, "trunc": self.trunc}
        if name == "dealer":
            opts["dealer"] = ctx.parties_of("arbiter")[0]
        elif name == "he":
            opts.update(scheme=self.scheme, key_bits=self.key_bits)
        return opts

    def plan(self) -> dict:
        """What both parties must agree on."""
        return self.model_dump()


def resolve_provider(name: str, ctx: Any) -> str:
    if name != "auto":
        if name == "dealer" and not ctx.parties_of("arbiter"):
            raise ConfigError("provider='dealer' needs a party with role arbiter (the dealer)")
        return name
    if ctx.parties_of("arbiter"):
        return "dealer"
    try:
        import atoll.secure.mpc.ot_provider  # noqa: F401
        return "ot"
    except ImportError:
        return "he"


@dataclass
class SSPartyModel:
    """One party's part of a trained model."""

    family: str
    role: str
    coef: np.ndarray | None                  # its own raw-scale weights (respectively)
    intercept: float = 0.0                   # guest: intercept; host: its offset (-sum w mu / sd)
    n_iter: int = 0
    shares: dict | None = None               # reveal="shared": this party's weight shares + scaling
    epoch_seconds: list[float] = field(default_factory=list)
    timing: dict = field(default_factory=dict)


def _bound_pow2(x: np.ndarray) -> float:
    m = float(np.abs(x).max(initial=0.0))
    return 2.0 ** math.ceil(math.log2(m)) if m > 0 else 1.0


def _standardize(x: np.ndarray, on: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not on:
        return x, np.zeros(x.shape[1]), np.ones(x.shape[1])
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x - mu) / sd, mu, sd


def _batches(n: int, size: int | None, shuffle: bool = False, seed: int | None = None) -> list[Any]:
    """Fixed batches (the same every epoch: each is masked once): slices, or index arrays of one
    seeded permutation."""
    b = n if size is None else min(int(size), n)
    if not shuffle:
        return [slice(s, min(s + b, n)) for s in range(0, n, b)]
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[s:s + b]) for s in range(0, n, b)]


def _rows(b: Any) -> int:
    return b.stop - b.start if isinstance(b, slice) else len(b)


def _sigmoid(z: SharedTensor, method: str) -> SharedTensor:
    if method == "taylor":  # SPU's 't1': 0.5 + x / 4, no comparison
        out = z * 0.25 + 0.5
        return out
    return z.sigmoid(method)


class _SSGLMRole:
    family = "logistic"
    index = GUEST
    role = "guest"
    peer_role = "host"

    def __init__(self, params: SSGLMParams | dict | None = None):
        self.params = params if isinstance(params, SSGLMParams) else SSGLMParams.model_validate(params or {})

    # ------------------------------------------------------------------ setup
    def _handshake(self, ctx: Any, x: np.ndarray, ids: Sequence[Any] | None) -> tuple[str, int, dict]:
        peer = ctx.parties_of(self.peer_role)
        if len(peer) != 1:
            raise ConfigError(f"SS {self.family} regression takes exactly one guest and one host")
        peer = peer[0]
        mine = {"n": int(x.shape[0]), "d": int(x.shape[1]), "digest": ids_digest(ids, x.shape[0]),
                "plan": self.params.plan(), "family": self.family}
        ctx.send(peer, "rows", mine)
        theirs = ctx.recv(peer, "rows")
        if not isinstance(theirs, dict):
            raise DataError("SS regression: malformed handshake from the peer")
        problems = []
        if int(theirs.get("n", -1)) != mine["n"]:
            problems.append(f"the parties have {mine['n']} and {theirs.get('n')} rows")
        elif theirs.get("digest") != mine["digest"]:
            problems.append("the parties' rows are not in the same order (different ids or order)")
        if theirs.get("plan") != mine["plan"] or theirs.get("family") != self.family:
            problems.append("the parties run with different parameters")
        if problems:
            raise DataError("cannot train: " + "; ".join(problems) + ". Align the rows first (PSI) and use "
                            "the same parameters at both parties")
        d_peer = int(theirs["d"])
        if not 0 < d_peer <= 100_000:
            raise DataError("SS regression: the peer announces an impossible feature count")
        return peer, d_peer, theirs

    def _session(self, ctx: Any, peer: str) -> Session:
        return Session(ctx, peer, self.index, **self.params.session_options(ctx, peer, self.index))

    # ------------------------------------------------------------------ training (both parties)
    def fit(self, ctx: Any, x: Any, y: Any = None, ids: Sequence[Any] | None = None) -> SSPartyModel:
        p = self.params
        x = _as_matrix(x, self.role, min_features=1)
        n = x.shape[0]
        if self.index == GUEST:
            y = np.asarray(y, dtype=np.float64).ravel()
            if y.shape[0] != n or not np.isfinite(y).all():
                raise DataError("the guest needs one finite label per row")
            if self.family == "logistic" and not np.isin(y, (0.0, 1.0)).all():
                raise DataError("logistic regression needs labels 0/1")
        peer, d_peer, _ = self._handshake(ctx, x, ids)
        xs, mu, sd = _standardize(x, p.standardize)
        sess = self._session(ctx, peer)
        try:
            with ctx.scope("ss_glm"):
                return self._train(ctx, sess, xs, mu, sd, y, d_peer)
        finally:
            sess.close()

    def _train(self, ctx: Any, sess: Session, xs: np.ndarray, mu: np.ndarray, sd: np.ndarray,
               y: np.ndarray | None, d_peer: int) -> SSPartyModel:
        p = self.params
        n, d_me = xs.shape
        dg, dh = (d_me, d_peer) if self.index == GUEST else (d_peer, d_me)
        me = self.index
        xg = sess.share(xs if me == GUEST else None, owner=GUEST, shape=(n, dg),
                        bound=_bound_pow2(xs) if me == GUEST else None)
        xh = sess.share(xs if me == HOST else None, owner=HOST, shape=(n, dh),
                        bound=_bound_pow2(xs) if me == HOST else None)
        parts = [xg, xh] + ([sess.public(np.ones((n, 1)))] if p.fit_intercept else [])
        X = concatenate(parts, axis=1)
        yy = sess.share(y if me == GUEST else None, owner=GUEST, shape=(n,), bound=None if me == GUEST else None)
        d = X.shape[1]
        batches = _batches(n, p.batch_size, p.shuffle, p.random_state)
        fixed = [sess.fixed(X[b]) for b in batches]
        w = sess.public(np.zeros(d))
        decay = np.full(d, 1.0 - p.learning_rate * (p.alpha if p.penalty == "l2" else 0.0))
        if p.fit_intercept:
            decay[-1] = 1.0
        seconds: list[float] = []
        plan: list | None = None
        for epoch in range(p.max_iter):
            tic = time.perf_counter()
            with ctx.scope("epoch", epoch):
                if plan is not None:
                    sess.offline(plan)
                rec = sess.recording() if plan is None else None
                with (rec if rec is not None else contextlib.nullcontext()) as recorded:
                    for b, F in zip(batches, fixed):
                        z = F @ w
                        pred = _sigmoid(z, p.sigmoid) if self.family == "logistic" else z
                        err = pred - yy[b]
                        g = F.t_matmul(err)
                        w = w * decay - g * (p.learning_rate / _rows(b))
                    if not sess.all_within(w, p.weight_limit):
                        raise RingOverflow(f"the weights left [-{p.weight_limit:g}, {p.weight_limit:g}] in epoch "
                                       f"{epoch}: lower learning_rate, raise alpha, or raise weight_limit")
                if rec is not None:
                    plan = list(recorded)
            seconds.append(time.perf_counter() - tic)
        timing = sess.timing()
        return self._finish(sess, w, dg, dh, mu, sd, epoch + 1, seconds, timing)

    def _finish(self, sess: Session, w: SharedTensor, dg: int, dh: int, mu: np.ndarray, sd: np.ndarray,
                n_iter: int, seconds: list[float], timing: dict) -> SSPartyModel:
        p = self.params
        if p.reveal == "shared":
            return SSPartyModel(self.family, self.role, None, 0.0, n_iter,
                                {"w": w.share, "frac": w.frac, "dg": dg, "dh": dh, "mu": mu, "sd": sd},
                                seconds, timing)
        wg = w[:dg].reveal(to=GUEST)
        wh = w[dg:dg + dh].reveal(to=HOST)
        b = w[dg + dh:].reveal(to=GUEST) if p.fit_intercept else None
        mine = wg if self.index == GUEST else wh
        coef = mine / sd
        offset = -float(coef @ mu)
        intercept = offset + (float(b[0]) if (self.index == GUEST and b is not None) else 0.0)
        return SSPartyModel(self.family, self.role, coef, intercept, n_iter, None, seconds, timing)

    # ------------------------------------------------------------------ prediction
    def predict(self, ctx: Any, model: SSPartyModel, x: Any, ids: Sequence[Any] | None = None) -> np.ndarray | None:
        """Joint linear scores (guest's result; the host returns None)."""
        x = _as_matrix(x, self.role, min_features=1)
        peer = ctx.parties_of(self.peer_role)[0]
        with ctx.scope("ss_predict"):
            ctx.send(peer, "rows", {"n": int(x.shape[0]), "digest": ids_digest(ids, x.shape[0]),
                                    "shared": model.shares is not None})
            theirs = ctx.recv(peer, "rows")
            if int(theirs.get("n", -1)) != x.shape[0] or theirs.get("digest") != ids_digest(ids, x.shape[0]) \
                    or bool(theirs.get("shared")) != (model.shares is not None):
                raise DataError("cannot predict: the parties' rows (or model kinds) differ; align the rows first")
            if model.shares is None:
                u = x @ model.coef + model.intercept
                if self.index == HOST:
                    ctx.send(peer, "partial", u)
                    return None
                part = ctx.recv(peer, "partial")
                if not isinstance(part, np.ndarray) or part.shape != u.shape:
                    raise DataError("the host's partial scores do not match the rows")
                return u + part
            return self._predict_shared(ctx, peer, model, x)

    def _predict_shared(self, ctx: Any, peer: str, model: SSPartyModel, x: np.ndarray) -> np.ndarray | None:
        s = model.shares
        sess = self._session(ctx, peer)
        try:
            n = x.shape[0]
            xs = (x - s["mu"]) / s["sd"]
            xg = sess.share(xs if self.index == GUEST else None, owner=GUEST, shape=(n, s["dg"]),
                            bound=_bound_pow2(xs) if self.index == GUEST else None)
            xh = sess.share(xs if self.index == HOST else None, owner=HOST, shape=(n, s["dh"]),
                            bound=_bound_pow2(xs) if self.index == HOST else None)
            parts = [xg, xh] + ([sess.public(np.ones((n, 1)))] if self.params.fit_intercept else [])
            X = concatenate(parts, axis=1)
            w = sess.from_share(s["w"], s["frac"], bound=self.params.weight_limit)
            return (X @ w).reveal(to=GUEST)
        finally:
            sess.close()


class SSLRGuest(_SSGLMRole):
    """Guest (labels + its columns) of SS logistic regression."""


class SSLRHost(_SSGLMRole):
    """Host (its columns) of SS logistic regression."""

    index, role, peer_role = HOST, "host", "guest"


class SSLinRGuest(_SSGLMRole):
    """Guest (labels + its columns) of SS linear regression."""

    family = "linear"


class SSLinRHost(_SSGLMRole):
    """Host (its columns) of SS linear regression."""

    family = "linear"
    index, role, peer_role = HOST, "host", "guest"


class SSDealer:
    """The arbiter when it serves as the dealer of correlated randomness (provider 'dealer').

    What the dealer sees: the shapes of the triples the parties ask for, nothing else.
    """

    def __init__(self, params: SSGLMParams | dict | None = None):
        self.params = params

    def run(self, ctx: Any) -> dict:
        return run_dealer(ctx, [ctx.parties_of("guest")[0], ctx.parties_of("host")[0]])


def _dealer(ctx: Any) -> dict:
    """The arbiter's role when it serves as the dealer (provider 'dealer')."""
    return SSDealer().run(ctx)


def check_two_parties(params: Any, parties: dict[str, list[str]]) -> None:
    """The registry's ``check`` hook of the two-party MPC algorithms (SS-LR, Pearson)."""
    if len(parties.get("guest", [])) != 1 or len(parties.get("host", [])) != 1:
        raise param_error("takes exactly one guest and one host")
    if params.provider == "dealer" and len(parties.get("arbiter", [])) != 1:
        raise param_error("with provider 'dealer' needs one party with role arbiter", "provider")


def save_part(m: SSPartyModel) -> dict[str, Any]:
    out = {"family": m.family, "n_iter": int(m.n_iter), "intercept": float(m.intercept),
           "coef": None if m.coef is None else np.asarray(m.coef),
           "timing": {k: float(v) for k, v in m.timing.items()},
           "epoch_seconds": [float(s) for s in m.epoch_seconds]}
    if m.shares is not None:
        out["shares"] = {"w": m.shares["w"], "frac": int(m.shares["frac"]), "dg": int(m.shares["dg"]),
                         "dh": int(m.shares["dh"]), "mu": np.asarray(m.shares["mu"]),
                         "sd": np.asarray(m.shares["sd"])}
    return out


def _loader(role: str) -> Any:
    def load(d: dict[str, Any]) -> SSPartyModel:
        return SSPartyModel(d["family"], role, None if d.get("coef") is None else np.asarray(d["coef"]),
                            float(d.get("intercept", 0.0)), int(d["n_iter"]), d.get("shares"))
    return load


def save_dealer(report: dict) -> dict[str, Any]:
    return {"dealer": report}


PARTS = {"guest": ModelPart(save_part, _loader("guest")), "host": ModelPart(save_part, _loader("host")),
         "arbiter": ModelPart(save_dealer, lambda d: d["dealer"])}

SS_LR = registry.register(Algorithm(
    name="ss_lr", params=SSGLMParams, roles={"guest": SSLRGuest, "host": SSLRHost, "arbiter": SSDealer},
    layout="vertical", task=LOGISTIC.task, parts=PARTS, twin=twin_of(LOGISTIC), check=check_two_parties,
    summary="two-party secret-shared logistic regression (binary labels 0/1 at the guest)"))
SS_LINR = registry.register(Algorithm(
    name="ss_linr", params=SSGLMParams, roles={"guest": SSLinRGuest, "host": SSLinRHost, "arbiter": SSDealer},
    layout="vertical", task=LINEAR.task, parts=PARTS, twin=twin_of(LINEAR), check=check_two_parties,
    summary="two-party secret-shared linear regression"))


def _fit(ctx: Any, role: _SSGLMRole, x: Any, y: Any = None, ids: Any = None) -> SSPartyModel:
    return role.fit(ctx, x, y, ids)


def _predict(ctx: Any, role: _SSGLMRole, model: SSPartyModel, x: Any, ids: Any = None) -> Any:
    return role.predict(ctx, model, x, ids)


# ============================================================================ facades
class _SSEstimator(FederatedEstimator):
    """scikit-learn style facade: both parties (and the dealer) run in this process as threads
    (``transport="threads"``) or as local processes over gRPC with mutual TLS (``"processes"``).

    Parameters: those of :class:`SSGLMParams`, plus ``use_dealer``, ``transport``, ``timeout``
    and ``roles``. ``provider="auto"`` here means the dealer (an arbiter is started for it) when
    ``use_dealer=True`` (default), else two-party HE/OT triples.
    Learned: ``coef_`` (guest's features then the host's, raw scale), ``intercept_``,
    ``n_iter_``, ``epoch_seconds_``, ``timing_`` (offline / online seconds, rounds, bytes),
    ``feature_names_in_`` (per party), ``guest_model_`` / ``host_models_``.
    """

    extra_params = {"use_dealer": True}

    def _with_dealer(self, params: SSGLMParams) -> bool:
        return params.provider == "dealer" or (params.provider == "auto" and self.use_dealer)

    def _roles_of(self) -> tuple[type[_SSGLMRole], type[_SSGLMRole]]:
        return self.algorithm.roles["guest"], self.algorithm.roles["host"]

    def fit(self, data: dict) -> "_SSEstimator":
        from atoll.federation import Party

        params = self._params()
        self._launch_mode()
        d = self._vertical(data, need_label=True, task="train")
        if len(d.hosts) != 1:
            raise DataError("SS regression is two-party: pass one host ('host_0')")
        (hname, th), = d.hosts.items()
        guest_cls, host_cls = self._roles_of()
        parties = {d.guest: Party("guest", _fit, {"role": guest_cls(params), "x": d.x.x,
                                                  "y": np.asarray(d.y, dtype=np.float64).ravel(), "ids": d.x.ids}),
                   hname: Party("host", _fit, {"role": host_cls(params), "x": th.x, "ids": th.ids})}
        if self._with_dealer(params):
            parties[self._arbiter_name(list(parties))] = Party("arbiter", _dealer)
        out = self._run(parties)
        g, h = out[d.guest], out[hname]
        self.guest_model_, self.host_models_ = g, {hname: h}
        self.params_ = params
        self.n_iter_ = g.n_iter
        self.epoch_seconds_ = list(g.epoch_seconds)
        self.timing_ = dict(g.timing)
        if g.coef is not None:
            self.coef_ = np.concatenate([g.coef, h.coef])
            self.intercept_ = g.intercept + h.intercept
            self.n_features_in_ = self.coef_.shape[0]
        self._remember(d)
        return self

    def decision_function(self, data: dict) -> np.ndarray:
        from atoll.federation import Party

        self._check_fitted()
        params = self.params_
        d = self._vertical(data, need_label=False, task="score", like=self._fitted())
        (hname, th), = d.hosts.items()
        guest_cls, host_cls = self._roles_of()
        parties = {d.guest: Party("guest", _predict, {"role": guest_cls(params), "model": self.guest_model_,
                                                      "x": d.x.x, "ids": d.x.ids}),
                   hname: Party("host", _predict, {"role": host_cls(params),
                                                   "model": self.host_models_[hname], "x": th.x, "ids": th.ids})}
        if self.guest_model_.shares is not None and self._with_dealer(params):
            parties[self._arbiter_name(list(parties))] = Party("arbiter", _dealer)
        return self._run(parties)[d.guest]


class SSLogisticRegression(_SSEstimator):
    """Two-party secret-shared logistic regression (see the module docstring)."""

    algorithm = SS_LR

    def predict_proba(self, data: dict) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(data)))
        return np.column_stack([1 - p, p])

    def predict(self, data: dict) -> np.ndarray:
        return (self.decision_function(data) > 0).astype(np.int64)


class SSLinearRegression(_SSEstimator):
    """Two-party secret-shared linear regression (see the module docstring)."""

    algorithm = SS_LINR

    def predict(self, data: dict) -> np.ndarray:
        return self.decision_function(data)
