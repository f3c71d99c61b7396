"""Secure Pearson correlation and VIF across a guest's and a host's columns (FATE's HeteroPearson).

Protocol (guest = party 0, host = party 1, on one :class:`~atoll.secure.mpc.tensor.Session`):
  1. both exchange row counts, an id digest and feature counts; a mismatch stops both;
  2. each party standardises its own columns locally, z = (x - mean) / std (population std),
     and computes its own block of the correlation matrix, z^T z / n, in the clear;
  3. both secret-share their z (no message beyond the shape: each share is one party's block)
     and compute the cross block Z_g^T Z_h by one Beaver matrix product;
  4. the cross block is revealed to the parties named by ``reveal_to`` (both, as FATE does, or
     the guest only);
  5. with ``exchange_local`` (default) both also send their own blocks, so each assembles the
     full matrix and VIF_j = [R^-1]_jj over all columns; without it a party's VIF covers its
     own columns (FATE's ``calc_local_vif``).

What each party sees: the peer's row and feature counts and the power of two above its
largest |z| (the public bound for overflow tracking), the one-time-masked openings of the
matrix product, and the cross correlations (its own block it computed itself; the peer's own block too with
``exchange_local``). Never a
feature value, a mean or a scale of the peer. A dealer (``provider="dealer"``) sees the
request shapes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, field_validator

from atoll.errors import ConfigError, DataError
from atoll.ml import registry
from atoll.ml.facade import FederatedEstimator
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, check_scheme
from atoll.ml.vertical._glm import _as_matrix, ids_digest
from atoll.ml.vertical.ss_lr import GUEST, HOST, SSDealer, _bound_pow2, _dealer, check_two_parties, resolve_provider
from atoll.secure.mpc import Session


class PearsonParams(AlgorithmParams):
    """Parameters of secure Pearson / VIF (facade and job component)."""

    reveal_to: Literal["both", "guest"] = "both"
    exchange_local: bool = Field(True, description="also send each party's own-block correlations to the "
                                 "other (needed for VIF across parties); off: VIF of own columns only")
    provider: Literal["auto", "dealer", "he", "ot"] = "auto"
    frac_bits: int = Field(16, ge=8, le=24)
    scheme: str = "paillier"  # of the 'he' provider: atoll.crypto.he.scheme_names()
    key_bits: int = Field(2048, ge=512)

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return check_scheme(v)


@dataclass
class PearsonResult:
    """What one party learns: the full matrix (or its own block only, for a host with
    ``reveal_to="guest"``), column names in order (guest's, then host's), VIF where known."""

    corr: np.ndarray
    columns: list[str]
    vif: np.ndarray | None
    own: slice


def standardize(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    if np.any(sd == 0):
        raise DataError("a column is constant; Pearson correlation is undefined for it (drop it first)")
    return (x - x.mean(axis=0)) / sd


def vif(corr: np.ndarray) -> np.ndarray:
    """Variance inflation factors from a correlation matrix: the diagonal of its inverse."""
    return np.diag(np.linalg.pinv(corr))


class _PearsonRole:
    index = GUEST
    role, peer_role = "guest", "host"

    def __init__(self, params: PearsonParams | dict | None = None):
        self.params = params if isinstance(params, PearsonParams) else PearsonParams.model_validate(params or {})

    def run(self, ctx: Any, x: Any, ids: Sequence[Any] | None = None,
            columns: Sequence[str] | None = None) -> PearsonResult:
        p = self.params
        x = _as_matrix(x, self.role, min_features=1)
        n, d = x.shape
        cols = list(columns) if columns is not None else [f"{self.role}_x{i}" for i in range(d)]
        peers = ctx.parties_of(self.peer_role)
        if len(peers) != 1:
            raise ConfigError("secure Pearson takes one guest and one host")
        peer = peers[0]
        with ctx.scope("pearson"):
            ctx.send(peer, "rows", {"n": n, "d": d, "digest": ids_digest(ids, n), "plan": p.model_dump(),
                                    "columns": cols if p.reveal_to == "both" or self.index == HOST else None})
            theirs = ctx.recv(peer, "rows")
            if (not isinstance(theirs, dict) or int(theirs.get("n", -1)) != n
                    or theirs.get("digest") != ids_digest(ids, n) or theirs.get("plan") != p.model_dump()):
                raise DataError("cannot correlate: the parties' rows or parameters differ; align the rows "
                                "first (PSI) and use the same parameters")
            d_peer = int(theirs["d"])
            if not 0 < d_peer <= 100_000:
                raise DataError("secure Pearson: the peer announces an impossible feature count")
            z = standardize(x)
            own = z.T @ z / n
            name = resolve_provider(p.provider, ctx)
            opts: dict[str, Any] = {"provider": name, "frac_bits": p.frac_bits, "trunc": "pair"}
            if name == "dealer":
                opts["dealer"] = ctx.parties_of("arbiter")[0]
            elif name == "he":
                opts.update(scheme=p.scheme, key_bits=p.key_bits)
            sess = Session(ctx, peer, self.index, **opts)
            try:
                dg, dh = (d, d_peer) if self.index == GUEST else (d_peer, d)
                zg = sess.share(z if self.index == GUEST else None, owner=GUEST, shape=(n, dg),
                                bound=_bound_pow2(z) if self.index == GUEST else None)
                zh = sess.share(z if self.index == HOST else None, owner=HOST, shape=(n, dh),
                                bound=_bound_pow2(z) if self.index == HOST else None)
                cross = zg.T @ zh
                to = None if p.reveal_to == "both" else GUEST
                c = cross.reveal(to=to)
            finally:
                sess.close()
        if c is None:  # a host with reveal_to="guest": only its own block
            return PearsonResult(own, cols, vif(own), slice(0, d))
        c = c / n
        peer_own = np.full((d_peer, d_peer), np.nan)
        if p.exchange_local:
            with ctx.scope("pearson"):
                ctx.send(peer, "local", own)
                got = ctx.recv(peer, "local")
            if not isinstance(got, np.ndarray) or got.shape != (d_peer, d_peer):
                raise DataError("secure Pearson: the peer's local block does not match its feature count")
            peer_own = got.astype(np.float64)
        peer_cols = list(theirs.get("columns") or [f"{self.peer_role}_x{i}" for i in range(d_peer)])
        if self.index == GUEST:
            full = np.block([[own, c], [c.T, peer_own]])
            names, own_slice = cols + peer_cols, slice(0, d)
        else:
            full = np.block([[peer_own, c], [c.T, own]])
            names, own_slice = peer_cols + cols, slice(d_peer, d_peer + d)
        v = vif(full) if p.exchange_local else vif(own)
        return PearsonResult(full, names, v, own_slice)


class PearsonGuest(_PearsonRole):
    """Guest side of secure Pearson."""


class PearsonHost(_PearsonRole):
    """Host side of secure Pearson."""

    index, role, peer_role = HOST, "host", "guest"


def _run(ctx: Any, role: _PearsonRole, x: Any, ids: Any = None, columns: Any = None) -> PearsonResult:
    return role.run(ctx, x, ids, columns)


def save_result(r: PearsonResult) -> dict[str, Any]:
    return {"columns": list(r.columns), "corr": np.asarray(r.corr), "vif": None if r.vif is None else np.asarray(r.vif),
            "own": [r.own.start, r.own.stop]}


def load_result(d: dict[str, Any]) -> PearsonResult:
    return PearsonResult(np.asarray(d["corr"]), list(d["columns"]), None if d["vif"] is None else np.asarray(d["vif"]),
                         slice(int(d["own"][0]), int(d["own"][1])))


HETERO_PEARSON = registry.register(Algorithm(
    name="hetero_pearson", params=PearsonParams, roles={"guest": PearsonGuest, "host": PearsonHost,
                                                        "arbiter": SSDealer},
    layout="", parts={"guest": ModelPart(save_result, load_result), "host": ModelPart(save_result, load_result)},
    check=check_two_parties, summary="secure Pearson correlation and VIF across the guest's and the host's columns"))


class HeteroPearson(FederatedEstimator):
    """Secure Pearson / VIF with a scikit-learn interface: both parties (and a dealer) run locally.

        est = HeteroPearson().fit({"guest": X_guest, "host_0": X_host})
        est.corr_, est.vif_, est.columns_          # the guest's result; est.host_result_ the host's

    Parameters: :class:`PearsonParams`' plus ``use_dealer``, ``transport``, ``timeout``, ``roles``.
    DataFrames give column names and row ids (their index, checked for alignment).
    """

    algorithm = HETERO_PEARSON
    extra_params = {"use_dealer": True}

    def fit(self, data: dict) -> "HeteroPearson":
        from atoll.federation import Party

        p = self._params()
        self._launch_mode()
        d = self._vertical(data, need_label=False, task="correlate")
        if len(d.hosts) != 1:
            raise DataError("secure Pearson is two-party: pass one host ('host_0')")
        (hname, th), = d.hosts.items()
        parties = {d.guest: Party("guest", _run, {"role": PearsonGuest(p), "x": d.x.x, "ids": d.x.ids,
                                                  "columns": d.x.columns}),
                   hname: Party("host", _run, {"role": PearsonHost(p), "x": th.x, "ids": th.ids,
                                               "columns": th.columns})}
        if p.provider == "dealer" or (p.provider == "auto" and self.use_dealer):
            parties[self._arbiter_name(list(parties))] = Party("arbiter", _dealer)
        out = self._run(parties)
        self.guest_result_, self.host_result_ = out[d.guest], out[hname]
        self.corr_, self.vif_, self.columns_ = self.guest_result_.corr, self.guest_result_.vif, self.guest_result_.columns
        self._remember(d)
        return self


def hetero_pearson(guest_x: Any, host_x: Any, use_dealer: bool = True, transport: str = "threads",
                   timeout: float = 600.0, **params: Any) -> tuple[PearsonResult, PearsonResult]:
    """Run both parties (and a dealer) locally: returns (guest's result, host's result)
    (:class:`HeteroPearson`'s ``guest_result_`` and ``host_result_``)."""
    est = HeteroPearson(use_dealer=use_dealer, transport=transport, timeout=timeout, **params)
    est.fit({"guest": guest_x, "host_0": host_x})
    return est.guest_result_, est.host_result_
