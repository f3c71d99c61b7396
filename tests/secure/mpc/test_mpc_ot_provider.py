"""Beaver triples from OT (Gilboa): c = a * b and C = A @ B exactly mod 2^64, both matrix layouts,
several chunks, shares that look uniform, and a wire audit (no share crosses in clear)."""

from __future__ import annotations

import numpy as np
import pytest

from atoll.errors import CryptoError
from atoll.federation import Party, launch
from atoll.secure.mpc import ot_provider
from atoll.secure.mpc.ot_provider import OTTripleProvider
from mpc_wire_audit import arrays_in, looks_uniform, words_found


def _run(fn, recorder=None):
    def party(ctx, i):
        return fn(OTTripleProvider(ctx, "p1" if i == 0 else "p0", i))
    out = launch({"p0": Party("p", party, {"i": 0}), "p1": Party("p", party, {"i": 1})},
                 recorder=recorder, timeout=60)
    return out["p0"], out["p1"]


def _open(t0, t1):
    return tuple(u + v for u, v in zip(t0, t1))


def test_elementwise_and_matrix_triples_are_exact(monkeypatch):
    monkeypatch.setattr(ot_provider, "_MAX_WORDS", 64 * 40)  # force several chunks

    def triples(p):
        return p.mul((7, 13)), p.matmul(5, 4, 3), p.matmul(2, 3, 6), p.mul(()), p.matmul(3, 0, 2)

    o0, o1 = _run(triples)
    a, b, c = _open(o0[0], o1[0])
    assert a.shape == b.shape == c.shape == (7, 13)
    np.testing.assert_array_equal(c, a * b)
    for k, shape in ((1, (5, 4, 3)), (2, (2, 3, 6))):  # n <= m and n > m take the two layouts
        a, b, c = _open(o0[k], o1[k])
        m, kk, n = shape
        assert a.shape == (m, kk) and b.shape == (kk, n) and c.shape == (m, n)
        np.testing.assert_array_equal(c, a @ b)
    a, b, c = _open(o0[3], o1[3])
    assert np.shape(c) == ()
    with np.errstate(over="ignore"):  # numpy scalars warn where arrays wrap silently
        assert c == a * b
    assert _open(o0[4], o1[4])[2].shape == (3, 2) and not _open(o0[4], o1[4])[2].any()
    # each party's shares look uniform; the two parties' a shares are unrelated
    s0 = np.concatenate([o0[0][i].ravel() for i in range(3)])
    assert looks_uniform(s0, 0.05) and not np.intersect1d(o0[0][0], o1[0][0]).size


def test_bad_arguments():
    with pytest.raises(CryptoError, match="party_index"):
        OTTripleProvider(None, "p1", 2)

    def negative(p):
        return p.matmul(2, -1, 2)

    from atoll.federation.launch import PartyFailed
    with pytest.raises(PartyFailed, match="non-negative"):
        _run(negative)


def test_wire_audit_no_share_crosses_in_clear():
    seen = []
    o0, o1 = _run(lambda p: (p.mul((500,)), p.matmul(6, 5, 4)),
                  recorder=lambda s, r, a, p: seen.append((s, r, a, bytes(p))))
    for s, r, a, p in seen:
        mine = o0 if s == "p0" else o1  # the sender's own secret shares must not reach the peer
        words = np.concatenate([x.ravel() for t in mine for x in t])
        assert not words_found(p, words).size, f"a share of {s} reached {r} at {a}"
    arrays = arrays_in([p for *_, p in seen])
    assert len(arrays) > 8 and all(looks_uniform(x) for x in arrays)
