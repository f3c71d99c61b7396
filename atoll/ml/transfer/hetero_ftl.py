"""Hetero federated transfer learning, plain and over additively homomorphic encryption (Paillier / OU).

Liu, Kang, Xing, Chen, Yang, "Secure Federated Transfer Learning", arXiv:1812.03337 (IEEE Intelligent
Systems 2020): two parties whose users and features barely overlap. The guest holds labelled users,
the host (mostly) other users with other features; each maps its features into a common latent space
with its own network, the few overlapping users align the two spaces, and the guest's knowledge
``phi`` scores the host's users. The model, loss (its Taylor form) and gradient formulas are in
:mod:`atoll.ml.transfer._ftl`; this module is the exchange. ``mode="plain"`` runs the very same code
with no encryption (values cross in the clear: the non-private reference); ``mode="he"`` encrypts.

Protocol (``mode="he"``; each party has its own key pair, as in the paper):

0. PSI (:mod:`atoll.secure.psi`, ECDH) on the ids gives both parties the overlap rows in one order.
   They exchange the overlap size, their weight counts and the parameters; any mismatch stops both.
1. Each party makes a key pair (``scheme``, ``key_bits``) and sends the public key; each checks the
   peer's key has the agreed scheme and size.

Per exchange (``max_iter`` of them):

2. Host: ``U_B = Net_B(X_B[overlap])``; sends ``[[U_B]]_B``, ``[[S_B = U_B^T U_B]]_B``,
   ``[[q_B = sum U_B^2]]_B`` (its key).
   Guest: ``U_A = Net_A(X_A)``, ``phi``; sends ``[[P = phi phi^T]]_A`` and
   ``[[C = -y_o phi^T / 2 - 2 gamma U_Ao]]_A`` (its key).
3. Per local step (``local_steps``; 1 = the paper; more = the communication-efficient variant, each
   party reusing the peer's ciphertexts of step 2 with its own up-to-date network):
   host: ``[[T^T vec P]]_A`` and ``[[J_B^T vec C]]_A`` (its Jacobians are plaintext multipliers);
   guest: ``[[v]]_B = -[[U_B]]^T y_o / 2 + [[S_B]] phi / 4``, ``[[K^T v]]_B``, ``[[J_Ao^T vec U_B]]_B``
   and the loss sums ``[[phi . U_B^T y_o]]``, ``[[phi^T S_B phi]]``, ``[[sum U_Ao * U_B]]``, ``[[q_B]]``.
4. Each adds a fresh encryption of a uniform mask (:func:`atoll.ml.vertical._glm.mask`, 40 bits of
   slack) and sends its vector to the key holder, which decrypts exactly and returns ``G + R``; the
   owner removes the mask, finishes its gradient with its own plaintext terms
   (:func:`~atoll.ml.transfer._ftl.host_gradient`, :func:`~atoll.ml.transfer._ftl.guest_gradient`)
   and steps its own optimizer. Scalings (``1/N``, ``1/N_A``) are applied after decryption, so no
   ciphertext is multiplied by a tiny fixed-point number.

Prediction for host users (``predict_to``): to the guest, the guest sends ``[[phi]]_A`` under a fresh
key, the host returns ``[[Net_B(x) phi]]_A``; to the host, the host sends ``[[Net_B(x)]]_B``, the guest
returns ``[[Net_B(x) phi]]_B`` re-randomised. ``mode="plain"`` sends the same values unencrypted.

What each party sees (``mode="he"``, semi-honest)
--------------------------------------------------
* **Guest**: the host's public key, its overlap size and weight count, ``[[U_B]]``, ``[[S_B]]``,
  ``[[q_B]]`` (cannot decrypt), the host's gradient sums plus the host's uniform mask (nothing), its
  own gradient and the loss each step; at prediction to the guest, the scores of the host's users.
* **Host**: the guest's public key, overlap size and weight count, ``[[P]]``, ``[[C]]`` (cannot
  decrypt), the guest's gradient and loss sums plus the guest's mask (nothing), its own gradient each
  step (an aggregate ``dL/dtheta_B`` over the overlap, which depends on the labels: the known
  leakage of gradient-based federated training). At prediction to the host, the scores, which with
  ``d`` or more users reveal ``phi``.
* Neither ever sees the other's features, representations, per-user gradients or labels in clear.
* The decryption service decrypts what the peer sends: a peer that deviates (sends the other's
  ciphertexts instead of masked sums) learns them; with ``scheme="ou"`` a crafted ciphertext can
  also expose the key (see :mod:`atoll.crypto.ou`). Security is semi-honest only, as in the paper.
* ``mode="plain"``: everything above travels in the clear (for testing and as the reference).

Cost per exchange (``N`` overlap users, ``d`` latent, ``P_A``/``P_B`` weights): ``N d + d^2 + 1``
encryptions at the host, ``N d + d^2`` at the guest, multi-exponentiations of ``P_B (N d + d^2)`` and
``P_A (N d + d)`` terms, ``2 P + 4`` masked decryptions per party and local step.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from atoll.errors import ConfigError, CryptoError, DataError
from atoll.ml.transfer._ftl import (
    MAX_WEIGHTS,
    FTLParams,
    FTLPartyModel,
    LocalOptimizer,
    as_matrix,
    forward,
    guest_components,
    guest_gradient,
    host_components,
    host_gradient,
    host_T,
    jacobian,
    local_guest_gradient,
    loss_value,
    make_part,
    n_weights,
    network_for,
    signed_labels,
    standardizer,
    weighted_jacobian,
)

__all__ = ["FTLGuest", "FTLHost", "overlap_rows"]


def overlap_rows(ctx: Any, ids: Sequence[Any]) -> np.ndarray:
    """This party's rows of the users both hold, in the order PSI agreed (ECDH-PSI)."""
    from atoll.secure.psi import PsiParams, run_psi

    with ctx.scope("psi"):
        res = run_psi(ctx, [str(i) for i in ids], PsiParams(result_to="both", progress=False))
    if res.positions is None or res.size == 0:
        raise DataError("FTL: the guest and the host have no user in common; transfer needs an overlap")
    return np.asarray(res.positions, dtype=np.int64)


def _check_plain(value: Any, shape: tuple, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.shape != shape \
            or not np.isfinite(value).all():
        raise DataError(f"FTL: the peer's {what} is not a finite float64 array of shape {shape}")
    return value


def _check_cipher(value: Any, pk: Any, shape: tuple, what: str) -> Any:
    from atoll.crypto.cipherarray import CipherArray

    if not isinstance(value, CipherArray) or value.pk != pk or value.shape != shape or value.packing is not None:
        raise CryptoError(f"FTL: the peer's {what} is not a ciphertext array of shape {shape} under the "
                          "announced key")
    return value


class _FTLRole:
    role = "guest"
    peer_role = "host"
    modes: tuple[str, ...] = ("plain", "he")

    def __init__(self, params: FTLParams | dict | None = None, network: Any = None):
        self.params = params if isinstance(params, FTLParams) else FTLParams.model_validate(params or {})
        if self.params.mode not in self.modes:
            raise ConfigError(f"mode={self.params.mode!r} runs in " + (
                "atoll.ml.transfer.ss_ftl (SSFTLGuest / SSFTLHost)" if self.params.mode == "ss"
                else "atoll.ml.transfer.hetero_ftl (FTLGuest / FTLHost)"))
        self.network = network

    # ------------------------------------------------------------------ setup
    def _peer(self, ctx: Any) -> str:
        peers = ctx.parties_of(self.peer_role)
        if len(peers) != 1:
            raise ConfigError("FTL takes exactly one guest and one host")
        return peers[0]

    def _handshake(self, ctx: Any, peer: str, n_overlap: int, p_mine: int) -> int:
        mine = {"n_overlap": int(n_overlap), "n_weights": int(p_mine), "plan": self.params.plan()}
        ctx.send(peer, "ftl_hello", mine)
        theirs = ctx.recv(peer, "ftl_hello")
        if not isinstance(theirs, dict) or set(theirs) != set(mine):
            raise DataError("FTL: malformed hello from the peer")
        if theirs["plan"] != mine["plan"]:
            raise ConfigError("FTL: the parties run with different parameters; use the same at both")
        if theirs["n_overlap"] != mine["n_overlap"]:
            raise DataError("FTL: the parties disagree on the overlap size; run PSI again")
        p = theirs["n_weights"]
        if type(p) is not int or not 0 < p <= MAX_WEIGHTS:
            raise DataError(f"FTL: the peer announces {p!r} weights, outside 1..{MAX_WEIGHTS}")
        return p

    def _overlap(self, ctx: Any, ids: Sequence[Any] | None, overlap: Sequence[int] | None, n_rows: int) -> np.ndarray:
        """This party's overlap rows: from PSI on ``ids``, or as given (already aligned with the peer's)."""
        ov = overlap_rows(ctx, ids) if overlap is None else np.asarray(overlap, dtype=np.int64)
        if ov.ndim != 1 or ov.size == 0 or ov.min() < 0 or ov.max() >= n_rows:
            raise DataError(f"FTL: the overlap rows are not rows of the {self.role}'s data")
        self.overlap_ = ov
        return ov

    def _keys(self, ctx: Any, peer: str) -> tuple[Any, Any, Any]:
        if self.params.mode == "plain":
            return None, None, None
        from atoll.crypto import he

        p = self.params
        pk, sk = he.generate_keypair(p.scheme, p.key_bits)
        ctx.send(peer, "ftl_pk", pk)
        peer_pk = ctx.recv(peer, "ftl_pk")
        if not isinstance(peer_pk, he.PublicKeyBase) or peer_pk.scheme != p.scheme or peer_pk.key_bits != p.key_bits:
            raise CryptoError(f"FTL: the peer's public key is not a {p.key_bits}-bit {p.scheme} key as agreed")
        return pk, sk, peer_pk

    def _prepare(self, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        x = as_matrix(x, self.role)
        mu, sd = standardizer(x, self.params.standardize)
        net = self.network if self.network is not None else network_for(self.params, self.role, x.shape[1])
        return x, mu, sd, net

    # ------------------------------------------------------------------ crypto helpers
    def _enc(self, pk: Any, x: np.ndarray) -> Any:
        return x if pk is None else pk.encrypt(np.asarray(x, dtype=np.float64), jobs=self.params.n_jobs)

    def _recv_values(self, ctx: Any, peer: str, key: str, pk: Any, shapes: dict[str, tuple]) -> dict:
        got = ctx.recv(peer, key)
        if not isinstance(got, dict) or set(got) != set(shapes):
            raise DataError(f"FTL: malformed {key} from the peer")
        check = (lambda v, s, w: _check_plain(v, s, w)) if pk is None else (lambda v, s, w: _check_cipher(v, pk, s, w))
        return {k: check(got[k], s, f"{key}.{k}") for k, s in shapes.items()}

    def _joint(self, ctx: Any, peer: str, parts: Any, pk: Any, sk: Any, peer_size: int) -> np.ndarray:
        """Turn this party's encrypted sums (under the peer's key) into plaintext via masked decryption,
        while decrypting the peer's masked sums for it. Plain mode: the sums are already plaintext."""
        if pk is None:
            return np.asarray(parts, dtype=np.float64)
        from atoll.ml.vertical._glm import decrypt_raw, mask, unmask

        masked, rs = mask(self.peer_pk, parts)
        ctx.send(peer, "masked", masked)
        theirs = _check_cipher(ctx.recv(peer, "masked"), pk, (peer_size,), "masked sums")
        ctx.send(peer, "decrypted", decrypt_raw(sk, theirs, self.params.n_jobs))
        raw = ctx.recv(peer, "decrypted")
        if not isinstance(raw, list) or len(raw) != parts.size or any(type(v) is not int for v in raw):
            raise DataError("FTL: the peer's decryption does not match what was sent")
        return unmask(raw, rs, masked.exp)

    def _tmul(self, x: np.ndarray, v: Any) -> Any:
        """``x.T @ v`` for a plaintext matrix ``x`` and a plain or encrypted vector (HE: the engine's
        multi-exponentiation on ``n_jobs`` workers)."""
        if isinstance(v, np.ndarray):
            return x.T @ v
        return v.matvec_t(x, jobs=self.params.n_jobs)

    @staticmethod
    def _cat(parts: list) -> Any:
        from atoll.crypto.cipherarray import CipherArray

        if isinstance(parts[0], CipherArray):
            from atoll.crypto import he

            return he.concatenate(parts)
        return np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in parts])


class FTLGuest(_FTLRole):
    """Guest of hetero FTL: labelled users, its features, ``phi`` (see the module docstring)."""

    role, peer_role = "guest", "host"

    def fit(self, ctx: Any, x: Any, y: Any, ids: Sequence[Any] | None = None,
            overlap: Sequence[int] | None = None) -> FTLPartyModel:
        """Train on all guest users ``x`` (labels ``y`` 0/1). ``ids`` (run PSI) or ``overlap`` (this
        party's overlap rows, already aligned with the host's) names the shared users."""
        p = self.params
        x, mu, sd, net = self._prepare(x)
        ys = signed_labels(y, x.shape[0])
        peer = self._peer(ctx)
        ov = self._overlap(ctx, ids, overlap, x.shape[0])
        xs = (x - mu) / sd
        n, n_a, d = ov.size, x.shape[0], p.latent_dim
        pa = n_weights(net)
        pb = self._handshake(ctx, peer, n, pa)
        pk, sk, self.peer_pk = self._keys(ctx, peer)
        opt = LocalOptimizer(net, p)
        losses: list[float] = []
        seconds: list[float] = []
        shapes = {"U": (n, d), "S": (d, d), "q": (1,)}
        with ctx.scope("ftl"):
            for it in range(p.max_iter):
                tic = time.perf_counter()
                with ctx.scope("iter", it):
                    comp = guest_components(forward(net, xs), ys, ov, p.gamma)
                    ctx.send(peer, "guest_comp", {"P": self._enc(pk, comp["P"]), "C": self._enc(pk, comp["C"])})
                    hc = self._recv_values(ctx, peer, "host_comp", self.peer_pk, shapes)
                    for step in range(p.local_steps):
                        with ctx.scope("step", step):
                            loss = self._step(ctx, peer, net, opt, xs, ys, ov, hc, pk, sk, 2 * pb, n, n_a)
                    losses.append(loss)
                seconds.append(time.perf_counter() - tic)
        phi = guest_components(forward(net, xs), ys, ov, p.gamma)["phi"]
        return make_part("guest", p, net, x.shape[1], mu, sd, phi, p.max_iter, losses, seconds)

    def _step(self, ctx: Any, peer: str, net: Any, opt: LocalOptimizer, xs: np.ndarray, ys: np.ndarray,
              ov: np.ndarray, hc: dict, pk: Any, sk: Any, peer_size: int, n: int, n_a: int) -> float:
        p = self.params
        u_a = forward(net, xs)
        comp = guest_components(u_a, ys, ov, p.gamma)
        phi, yo = comp["phi"], comp["yo"]
        k = weighted_jacobian(net, xs, ys)                          # (d, P_A)
        u_ao, j_ao = jacobian(net, xs[ov])                          # (N, d), (N, d, P_A)
        jt = j_ao.reshape(-1, j_ao.shape[-1])
        enc_u, enc_s, enc_q = hc["U"], hc["S"], hc["q"]
        ub_y = enc_u.T @ yo                                         # [[U_B^T y_o]] (d,)
        s_phi = enc_s @ phi                                         # [[S_B phi]] (d,)
        v = ub_y * -0.5 + s_phi * 0.25
        parts = self._cat([self._tmul(k, v), self._tmul(jt, enc_u.ravel()), phi[None, :] @ ub_y, phi[None, :] @ s_phi,
                           u_ao.ravel()[None, :] @ enc_u.ravel(), enc_q])
        vals = self._joint(ctx, peer, parts, pk, sk, peer_size)
        pa = k.shape[1]
        local_g, local_l = local_guest_gradient(net, xs, ys, p.guest_loss_weight)
        grad = guest_gradient(vals[:2 * pa].reshape(2, pa), j_ao.reshape(-1, pa), u_ao, n, n_a, p.gamma, local_g)
        loss = loss_value(vals[2 * pa:], comp, n, p.gamma, local_l)
        opt.step(grad)
        return float(loss)

    def predict(self, ctx: Any, model: FTLPartyModel) -> np.ndarray | None:
        """Joint scoring of the host's users (``phi . Net_B(x)``); the guest's result when ``predict_to``
        is the guest, else None."""
        if model.phi is None:
            raise DataError("FTL: predict needs the guest's model part (it holds phi)")
        peer = self._peer(ctx)
        p = self.params
        with ctx.scope("ftl_predict"):
            n = ctx.recv(peer, "rows")
            if type(n) is not int or not 0 < n <= 1 << 24:
                raise DataError("FTL: the host announces an impossible row count")
            phi = np.asarray(model.phi, dtype=np.float64)
            if p.predict_to == "guest":
                pk, sk = self._fresh_keys()
                ctx.send(peer, "phi", self._enc(pk, phi))
                enc_s = ctx.recv(peer, "scores")
                if pk is None:
                    return _check_plain(enc_s, (n,), "scores")
                return sk.decrypt(_check_cipher(enc_s, pk, (n,), "scores"), jobs=p.n_jobs)
            got = ctx.recv(peer, "rep")
            if p.mode == "plain":
                ctx.send(peer, "scores", _check_plain(got, (n, model.latent_dim), "representation") @ phi)
                return None
            from atoll.crypto.cipherarray import CipherArray

            if not isinstance(got, CipherArray) or got.shape != (n, model.latent_dim) or got.pk.scheme != p.scheme \
                    or got.pk.key_bits != p.key_bits:
                raise CryptoError("FTL: the host's encrypted representation does not match what was agreed")
            ctx.send(peer, "scores", (got @ phi).rerandomize(jobs=p.n_jobs))
            return None

    def _fresh_keys(self) -> tuple[Any, Any]:
        if self.params.mode == "plain":
            return None, None
        from atoll.crypto import he

        return tuple(he.generate_keypair(self.params.scheme, self.params.key_bits))


class FTLHost(_FTLRole):
    """Host of hetero FTL: its users and features, no labels (see the module docstring)."""

    role, peer_role = "host", "guest"

    def fit(self, ctx: Any, x: Any, ids: Sequence[Any] | None = None,
            overlap: Sequence[int] | None = None) -> FTLPartyModel:
        p = self.params
        x, mu, sd, net = self._prepare(x)
        peer = self._peer(ctx)
        ov = self._overlap(ctx, ids, overlap, x.shape[0])
        xo = ((x - mu) / sd)[ov]
        n, d = ov.size, p.latent_dim
        pb = n_weights(net)
        pa = self._handshake(ctx, peer, n, pb)
        pk, sk, self.peer_pk = self._keys(ctx, peer)
        opt = LocalOptimizer(net, p)
        seconds: list[float] = []
        shapes = {"P": (d, d), "C": (n, d)}
        with ctx.scope("ftl"):
            for it in range(p.max_iter):
                tic = time.perf_counter()
                with ctx.scope("iter", it):
                    hc = host_components(forward(net, xo))
                    ctx.send(peer, "host_comp", {k: self._enc(pk, v) for k, v in hc.items()})
                    gc = self._recv_values(ctx, peer, "guest_comp", self.peer_pk, shapes)
                    for step in range(p.local_steps):
                        with ctx.scope("step", step):
                            u_b, j_b = jacobian(net, xo)
                            jt = j_b.reshape(-1, pb)
                            parts = self._cat([self._tmul(host_T(j_b, u_b), gc["P"].ravel()),
                                               self._tmul(jt, gc["C"].ravel())])
                            vals = self._joint(ctx, peer, parts, pk, sk, 2 * pa + 4)
                            opt.step(host_gradient(vals.reshape(2, pb), jt, u_b, p.gamma))
                seconds.append(time.perf_counter() - tic)
        return make_part("host", p, net, x.shape[1], mu, sd, None, p.max_iter, [], seconds)

    def predict(self, ctx: Any, model: FTLPartyModel, x: Any) -> np.ndarray | None:
        """Joint scoring of the host's rows ``x``: the host's result when ``predict_to`` is the host."""
        peer = self._peer(ctx)
        p = self.params
        u = model.represent(x)
        with ctx.scope("ftl_predict"):
            ctx.send(peer, "rows", int(u.shape[0]))
            if p.predict_to == "guest":
                got = ctx.recv(peer, "phi")
                if p.mode == "plain":
                    ctx.send(peer, "scores", u @ _check_plain(got, (model.latent_dim,), "phi"))
                    return None
                from atoll.crypto.cipherarray import CipherArray

                if not isinstance(got, CipherArray) or got.shape != (model.latent_dim,) \
                        or got.pk.scheme != p.scheme or got.pk.key_bits != p.key_bits:
                    raise CryptoError("FTL: the guest's encrypted phi does not match what was agreed")
                ctx.send(peer, "scores", u @ got)
                return None
            pk, sk = FTLGuest._fresh_keys(self)
            ctx.send(peer, "rep", self._enc(pk, u))
            got = ctx.recv(peer, "scores")
            if pk is None:
                return _check_plain(got, (u.shape[0],), "scores")
            return sk.decrypt(_check_cipher(got, pk, (u.shape[0],), "scores"), jobs=p.n_jobs)
