"""Hetero federated transfer learning on additive secret shares (Liu et al., arXiv:1812.03337, the
secret-sharing variant with Beaver triples).

The same model, loss and gradient decomposition as :mod:`atoll.ml.transfer.hetero_ftl` (formulas in
:mod:`atoll.ml.transfer._ftl`); the jointly computed sums run on a two-party
:class:`~atoll.secure.mpc.tensor.Session` over Z_2^64 (``frac_bits`` fixed point) instead of under
HE. Correlated randomness comes from ``provider``: the arbiter as a dealer (``"dealer"``; ``"auto"``
when the job has an arbiter), or the two parties alone (``"he"``, or ``"ot"`` when built).

Protocol (guest = party 0, host = party 1):

0. PSI on the ids, then the hello of :class:`~atoll.ml.transfer.hetero_ftl.FTLGuest` (overlap size,
   weight counts, parameters; any mismatch stops both).

Per exchange:

1. Host secret-shares ``U_B`` (overlap rows), ``S_B = U_B^T U_B`` and ``q_B``; guest shares
   ``P = phi phi^T`` and ``C = -y_o phi^T / 2 - 2 gamma U_Ao``.
2. Per local step: the host shares its ``T`` (d^2 x P_B) and ``J_B`` (N d x P_B); the guest its
   ``phi``, ``y_o``, ``K`` (d x P_A), ``J_Ao`` (N d x P_A) and ``U_Ao``. Beaver products give
   ``[T^T vec P, J_B^T vec C]`` (revealed to the host only) and ``4v = -2 U_B^T y_o + S_B phi``,
   ``[K^T 4v, J_Ao^T vec U_B]`` and the four loss sums (revealed to the guest only).
3. Each finishes its gradient in the clear (:func:`~atoll.ml.transfer._ftl.host_gradient`,
   :func:`~atoll.ml.transfer._ftl.guest_gradient`) and steps its own optimizer.

Prediction: the host shares ``Net_B(x)``, the guest ``phi``; the product is revealed to
``predict_to`` only.

What each party sees (semi-honest)
----------------------------------
* Both: the one-time-masked openings of the session (Beaver's ``x - a``, ``y - b`` and the truncation
  masks: uniform), the peer's overlap size and weight count, and the *shapes* of what is shared.
* **Guest**: its own gradient and the loss; at prediction to the guest, the scores.
* **Host**: its own gradient (an aggregate over the overlap, as in the HE mode); at prediction to
  the host, the scores (which with ``d`` or more users reveal ``phi``).
* Neither sees the other's features, representations, per-user gradients or labels.
* **Dealer** (provider ``"dealer"``): the kinds and shapes of the requests; it must not collude.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from atoll.errors import DataError
from atoll.ml.transfer._ftl import (
    FTLPartyModel,
    LocalOptimizer,
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
    signed_labels,
    weighted_jacobian,
)
from atoll.ml.transfer.hetero_ftl import _FTLRole

__all__ = ["SSFTLGuest", "SSFTLHost", "run_dealer_for"]

GUEST, HOST = 0, 1


def _pow2(x: np.ndarray) -> float:
    """The power of two above max |x| (the public bound an owner keeps to itself)."""
    m = float(np.abs(x).max(initial=0.0))
    return 2.0 ** math.ceil(math.log2(m)) if m > 0 else 1.0


def run_dealer_for(ctx: Any) -> dict:
    """The arbiter's role when it deals the correlated randomness (provider ``dealer``)."""
    from atoll.secure.mpc import run_dealer

    return run_dealer(ctx, [ctx.parties_of("guest")[0], ctx.parties_of("host")[0]])


class _SSFTLRole(_FTLRole):
    modes = ("ss",)
    index = GUEST

    def _session(self, ctx: Any, peer: str) -> Any:
        from atoll.ml.vertical.ss_lr import SSGLMParams
        from atoll.secure.mpc import Session

        p = self.params
        # the provider choice of the SS components (dealer / he / ot, "auto"), one place
        ss = SSGLMParams(provider=p.provider, frac_bits=p.frac_bits, trunc="pair", scheme=p.scheme,
                         key_bits=p.key_bits)
        return Session(ctx, peer, self.index, **ss.session_options(ctx, peer, self.index))

    def _share(self, sess: Any, x: np.ndarray | None, owner: int, shape: tuple) -> Any:
        """Share ``x`` of ``owner``; the owner keeps its bound (a power of two) to itself."""
        if self.index == owner:
            x = np.asarray(x, dtype=np.float64).reshape(shape)
            return sess.share(x, owner=owner, shape=shape, bound=_pow2(x))
        return sess.share(None, owner=owner, shape=shape)

    def _iterate(self, ctx: Any, peer: str, iteration: Any) -> tuple[list[float], dict]:
        """Run ``iteration(session)`` ``max_iter`` times in one session: seconds per iteration, timing."""
        seconds: list[float] = []
        sess = self._session(ctx, peer)
        try:
            with ctx.scope("ss_ftl"):
                for it in range(self.params.max_iter):
                    tic = time.perf_counter()
                    with ctx.scope("iter", it):
                        iteration(sess)
                    seconds.append(time.perf_counter() - tic)
            return seconds, sess.timing()
        finally:
            sess.close()

    def _exchange(self, sess: Any, mine: dict, n: int, d: int) -> dict:
        """Step 1: the peer-facing components, shared once per exchange (same order at both)."""
        g = self.index == GUEST
        return {"U": self._share(sess, None if g else mine["U"], HOST, (n, d)),
                "S": self._share(sess, None if g else mine["S"], HOST, (d, d)),
                "q": self._share(sess, None if g else mine["q"], HOST, (1,)),
                "P": self._share(sess, mine["P"] if g else None, GUEST, (d * d,)),
                "C": self._share(sess, mine["C"] if g else None, GUEST, (n * d,))}

    def _sums(self, sess: Any, sh: dict, mine: dict, n: int, d: int, pa: int, pb: int) -> np.ndarray | None:
        """Step 2: both parties run this same sequence; each gets only its own revealed sums."""
        from atoll.secure.mpc import concatenate

        g = self.index == GUEST
        t = self._share(sess, None if g else mine["T"], HOST, (d * d, pb))
        jb = self._share(sess, None if g else mine["JB"], HOST, (n * d, pb))
        phi = self._share(sess, mine["phi"] if g else None, GUEST, (d,))
        yo = self._share(sess, mine["yo"] if g else None, GUEST, (n,))
        k = self._share(sess, mine["K"] if g else None, GUEST, (d, pa))
        ja = self._share(sess, mine["JA"] if g else None, GUEST, (n * d, pa))
        uao = self._share(sess, mine["UAo"] if g else None, GUEST, (n * d,))
        host_sums = concatenate([t.T @ sh["P"], jb.T @ sh["C"]])
        ub_y = sh["U"].T @ yo                                   # U_B^T y_o (d,)
        s_phi = sh["S"] @ phi                                   # S_B phi (d,)
        v4 = ub_y * -2 + s_phi                                  # 4 v (integer scaling: exact)
        u_flat = sh["U"].reshape(n * d)
        guest_sums = concatenate([k.T @ v4, ja.T @ u_flat, (phi @ ub_y).reshape(1), (phi @ s_phi).reshape(1),
                                  (uao @ u_flat).reshape(1), sh["q"]])
        a = host_sums.reveal(to=HOST)
        b = guest_sums.reveal(to=GUEST)
        return b if g else a


class SSFTLGuest(_SSFTLRole):
    """Guest of SS-FTL (labelled users, its features, ``phi``)."""

    role, peer_role, index = "guest", "host", GUEST

    def fit(self, ctx: Any, x: Any, y: Any, ids: Sequence[Any] | None = None,
            overlap: Sequence[int] | None = None) -> FTLPartyModel:
        p = self.params
        x, mu, sd, net = self._prepare(x)
        ys = signed_labels(y, x.shape[0])
        peer = self._peer(ctx)
        ov = self._overlap(ctx, ids, overlap, x.shape[0])
        xs = (x - mu) / sd
        n, n_a, d, pa = ov.size, x.shape[0], p.latent_dim, n_weights(net)
        pb = self._handshake(ctx, peer, n, pa)
        opt = LocalOptimizer(net, p)
        losses: list[float] = []

        def iteration(sess: Any) -> None:
            comp = guest_components(forward(net, xs), ys, ov, p.gamma)
            sh = self._exchange(sess, {"P": comp["P"], "C": comp["C"]}, n, d)
            for _ in range(p.local_steps):
                comp = guest_components(forward(net, xs), ys, ov, p.gamma)
                u_ao, j_ao = jacobian(net, xs[ov])
                mine = {"phi": comp["phi"], "yo": comp["yo"], "K": weighted_jacobian(net, xs, ys),
                        "JA": j_ao.reshape(-1, pa), "UAo": u_ao.ravel()}
                vals = self._sums(sess, sh, mine, n, d, pa, pb)
                local_g, local_l = local_guest_gradient(net, xs, ys, p.guest_loss_weight)
                parts = np.stack([vals[:pa] / 4.0, vals[pa:2 * pa]])
                loss = loss_value(vals[2 * pa:], comp, n, p.gamma, local_l)
                opt.step(guest_gradient(parts, j_ao.reshape(-1, pa), u_ao, n, n_a, p.gamma, local_g))
            losses.append(float(loss))

        seconds, timing = self._iterate(ctx, peer, iteration)
        phi = guest_components(forward(net, xs), ys, ov, p.gamma)["phi"]
        part = make_part("guest", p, net, x.shape[1], mu, sd, phi, p.max_iter, losses, seconds)
        part.timing = timing
        return part

    def predict(self, ctx: Any, model: FTLPartyModel) -> np.ndarray | None:
        if model.phi is None:
            raise DataError("FTL: predict needs the guest's model part (it holds phi)")
        peer = self._peer(ctx)
        with ctx.scope("ss_ftl_predict"):
            n = ctx.recv(peer, "rows")
            if type(n) is not int or not 0 < n <= 1 << 24:
                raise DataError("FTL: the host announces an impossible row count")
            sess = self._session(ctx, peer)
            try:
                u = self._share(sess, None, HOST, (n, model.latent_dim))
                phi = self._share(sess, model.phi, GUEST, (model.latent_dim,))
                to = GUEST if self.params.predict_to == "guest" else HOST
                return (u @ phi).reveal(to=to)
            finally:
                sess.close()


class SSFTLHost(_SSFTLRole):
    """Host of SS-FTL (its users and features, no labels)."""

    role, peer_role, index = "host", "guest", HOST

    def fit(self, ctx: Any, x: Any, ids: Sequence[Any] | None = None,
            overlap: Sequence[int] | None = None) -> FTLPartyModel:
        p = self.params
        x, mu, sd, net = self._prepare(x)
        peer = self._peer(ctx)
        ov = self._overlap(ctx, ids, overlap, x.shape[0])
        xo = ((x - mu) / sd)[ov]
        n, d, pb = ov.size, p.latent_dim, n_weights(net)
        pa = self._handshake(ctx, peer, n, pb)
        opt = LocalOptimizer(net, p)

        def iteration(sess: Any) -> None:
            sh = self._exchange(sess, host_components(forward(net, xo)), n, d)
            for _ in range(p.local_steps):
                u_b, j_b = jacobian(net, xo)
                jt = j_b.reshape(-1, pb)
                vals = self._sums(sess, sh, {"T": host_T(j_b, u_b), "JB": jt}, n, d, pa, pb)
                opt.step(host_gradient(vals.reshape(2, pb), jt, u_b, p.gamma))

        seconds, timing = self._iterate(ctx, peer, iteration)
        part = make_part("host", p, net, x.shape[1], mu, sd, None, p.max_iter, [], seconds)
        part.timing = timing
        return part

    def predict(self, ctx: Any, model: FTLPartyModel, x: Any) -> np.ndarray | None:
        peer = self._peer(ctx)
        u = model.represent(x)
        with ctx.scope("ss_ftl_predict"):
            ctx.send(peer, "rows", int(u.shape[0]))
            sess = self._session(ctx, peer)
            try:
                su = self._share(sess, u, HOST, u.shape)
                phi = self._share(sess, None, GUEST, (model.latent_dim,))
                to = GUEST if self.params.predict_to == "guest" else HOST
                return (su @ phi).reveal(to=to)
            finally:
                sess.close()
