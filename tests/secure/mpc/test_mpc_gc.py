"""Garbled-circuit operators on Z_2^64 shares, two parties over the in-process federation, against
numpy (exact): sign, ReLU, comparison, equality, max / argmax, A2Y -> Y2A, circuits on garbled
values; random values plus 0, +-1, +-2^62, the extremes and shares that wrap around the ring;
the offline / online split; and a wire audit."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.crypto.bitmatrix import words_to_bits
from atoll.crypto.circuit import Builder
from atoll.errors import CryptoError
from atoll.federation import Party, launch
from atoll.federation.launch import PartyFailed
from atoll.secure.mpc import gc
from mpc_wire_audit import arrays_in, looks_uniform, words_found

EDGES = np.array([0, 1, -1, 2, -2, 2**62, -2**62, 2**62 - 1, -2**62 + 1, 2**63 - 1, -2**63, 7, -7],
                 dtype=np.int64)


def _share(v: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    r = rng.integers(0, 2**64, v.shape, dtype=np.uint64)
    r.flat[:3] = [0, 2**64 - 1, 2**63]  # shares at the ends of the ring: x0 + x1 wraps
    return r, v.astype(np.int64).view(np.uint64) - r


def _run(fn, recorder=None, **shared):
    """``fn(ctx, peer, i, **{name: share_i})`` at both parties; returns (out0, out1)."""
    def party(ctx, i):
        return fn(ctx, "p1" if i == 0 else "p0", i, **{k: v[i] for k, v in shared.items()})
    out = launch({"p0": Party("p", party, {"i": 0}), "p1": Party("p", party, {"i": 1})},
                 recorder=recorder, timeout=60)
    return out["p0"], out["p1"]


def _open(pair):
    a, b = pair
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b


def _values(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64, endpoint=True)
    y = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64, endpoint=True)
    gx, gy = np.meshgrid(EDGES, EDGES)
    x = np.concatenate([x, gx.ravel(), EDGES, rng.integers(-5, 5, 50)])
    y = np.concatenate([y, gy.ravel(), EDGES, rng.integers(-5, 5, 50)])  # equal and near pairs
    return x, y, rng


def test_sign_relu_compare_equal_exact_on_edges_and_wrap():
    x, y, rng = _values()
    xs, ys = _share(x, rng), _share(y, rng)

    def ops(ctx, peer, i, x, y):
        return {"ltz": gc.less_than_zero(ctx, peer, i, x), "relu": gc.relu(ctx, peer, i, x),
                "lt": gc.compare(ctx, peer, i, x, y), "eq": gc.equal(ctx, peer, i, x, y),
                "lt_fast": gc.compare(ctx, peer, i, x, y, exact=False)}

    o = _open(_run(ops, x=xs, y=ys))
    np.testing.assert_array_equal(o["ltz"], (x < 0).astype(np.uint64))
    np.testing.assert_array_equal(o["relu"].view(np.int64), np.maximum(x, 0))
    np.testing.assert_array_equal(o["lt"], (x < y).astype(np.uint64))
    np.testing.assert_array_equal(o["eq"], (x == y).astype(np.uint64))
    # the cheap comparison is the sign of x - y: right wherever x - y does not overflow
    fits = np.abs(x.astype(object) - y.astype(object)) < 2**63
    assert fits.sum() > 300 and (~fits).sum() > 20
    np.testing.assert_array_equal(o["lt_fast"][fits], (x < y)[fits].astype(np.uint64))


def test_max_argmax_over_axes_numpy_ties_and_shapes():
    rng = np.random.default_rng(5)
    v = rng.integers(-3, 3, (6, 5, 4)).astype(np.int64)  # many ties: the first maximum wins
    v[0, 0] = EDGES[:4]
    v[1, :, 2] = EDGES[5:10]
    vs = _share(v, rng)

    def ops(ctx, peer, i, v):
        m, a = gc.max_argmax(ctx, peer, i, v, axis=1)
        return {"max2": gc.max(ctx, peer, i, v), "arg2": gc.argmax(ctx, peer, i, v),
                "max0": gc.max(ctx, peer, i, v, axis=0), "arg0": gc.argmax(ctx, peer, i, v, axis=0),
                "m1": m, "a1": a, "hot": gc.argmax(ctx, peer, i, v, axis=1, one_hot=True),
                "one": gc.argmax(ctx, peer, i, v[:, :1], axis=1)}

    o = _open(_run(ops, v=vs))
    for key, axis in (("max2", -1), ("max0", 0), ("m1", 1)):
        np.testing.assert_array_equal(o[key].view(np.int64), v.max(axis=axis))
    for key, axis in (("arg2", -1), ("arg0", 0), ("a1", 1)):
        np.testing.assert_array_equal(o[key], v.argmax(axis=axis))
    hot = np.moveaxis(np.eye(5, dtype=np.uint64)[v.argmax(axis=1)], -1, 1)
    np.testing.assert_array_equal(o["hot"], hot)
    np.testing.assert_array_equal(o["one"], np.zeros((6, 4), np.uint64))


def test_a2y_y2a_round_trip_and_circuits_on_garbled_values():
    x, y, rng = _values(200, 3)
    xs, ys = _share(x, rng), _share(y, rng)
    b = Builder()
    u, w = b.inputs(64), b.inputs(64)
    lt_circ = b.build([[b.lt_signed(u, w)], b.sub(u, w)])

    def ops(ctx, peer, i, x, y):
        gx, gy = gc.a2y(ctx, peer, i, x), gc.a2y(ctx, peer, i, y)
        back = gc.y2a(ctx, peer, i, gx)
        low = gc.y2a(ctx, peer, i, gc.a2y(ctx, peer, i, x, bits=20))
        lt, diff = gc.evaluate(ctx, peer, i, lt_circ, [gx, gy])               # stays garbled
        lt_a, diff_a = gc.evaluate(ctx, peer, i, lt_circ, [gx, gy], outputs="arith")
        return {"back": back, "low": low, "lt": gc.y2a(ctx, peer, i, lt), "diff": gc.y2a(ctx, peer, i, diff),
                "lt_a": lt_a, "diff_a": diff_a}

    o = _open(_run(ops, x=xs, y=ys))
    np.testing.assert_array_equal(o["back"].view(np.int64), x)
    np.testing.assert_array_equal(o["low"], x.view(np.uint64) & np.uint64(2**20 - 1))
    for k in ("lt", "lt_a"):
        np.testing.assert_array_equal(o[k], (x < y).astype(np.uint64))
    for k in ("diff", "diff_a"):
        np.testing.assert_array_equal(o[k], x.view(np.uint64) - y.view(np.uint64))


def test_offline_online_split_gives_the_same_results():
    x, _, rng = _values(300, 7)
    xs = _share(x, rng)
    b = Builder()
    a0, a1 = b.inputs(64), b.inputs(64)
    circ = b.build([[b.add(a0, a1)[-1]]])

    def split(ctx, peer, i, x):
        party = gc.gc_session(ctx, peer, i)
        prep = party.prepare(circ, x.size, 64, 64)           # offline: no input needed
        (share,) = party.finish(prep, words_to_bits(x))      # online
        return share

    o = _open(_run(split, x=xs))
    np.testing.assert_array_equal(o, (x < 0).astype(np.uint64))


def test_misuse_is_refused():
    rng = np.random.default_rng(0)
    xs = _share(np.arange(10), rng)

    def both_garblers(ctx, peer, i, x):
        return gc.less_than_zero(ctx, peer, 0, x)

    with pytest.raises(PartyFailed) as err:
        _run(both_garblers, x=xs)
    assert "party_index 0 and 1" in str(err.value)

    def floats(ctx, peer, i, x):
        return gc.relu(ctx, peer, i, x.astype(np.float64))

    with pytest.raises(PartyFailed) as err:
        _run(floats, x=xs)
    assert isinstance(err.value.error, CryptoError) and "uint64" in str(err.value)

    def mismatched(ctx, peer, i, x):  # the parties disagree on the number of values
        return gc.less_than_zero(ctx, peer, i, x if i == 0 else x[:5])

    with pytest.raises(PartyFailed) as err:
        _run(mismatched, x=xs)
    assert "same operator on the same shapes" in str(err.value) or "same transfers" in str(err.value)

    def other_circuits(ctx, peer, i, x):  # same sizes and AND count, different circuits
        return gc.less_than_zero(ctx, peer, i, x) if i == 0 else gc.equal(ctx, peer, i, x, x)

    with pytest.raises(PartyFailed) as err:
        _run(other_circuits, x=xs)
    assert "another circuit" in str(err.value)

    def twice(ctx, peer, i, x):
        party = gc.gc_session(ctx, peer, i)
        b = Builder()
        u, w = b.inputs(64), b.inputs(64)
        prep = party.prepare(b.build([b.add(u, w)]), x.size, 64, 64)
        party.finish(prep, words_to_bits(x))
        party.finish(prep, words_to_bits(x))

    with pytest.raises(PartyFailed) as err:
        _run(twice, x=xs)
    assert "once" in str(err.value)


# ------------------------------------------------------------------------------- wire audit
def test_wire_audit_inputs_and_results_never_cross():
    """Neither party receives the other's input shares, the plaintext inputs or the results
    (as 8-byte words), and every array each receives looks uniform, even for all-zero inputs
    (so bits sent in clear would show)."""
    rng = np.random.default_rng(9)
    x = rng.integers(-2**40, 2**40, 512)
    x[:256] = 0
    xs = (rng.integers(0, 2**64, 512, dtype=np.uint64), None)
    xs = (xs[0], x.view(np.uint64) - xs[0])
    zeros = (np.zeros(512, np.uint64), np.zeros(512, np.uint64))  # x = 0 with all-zero shares
    seen = []

    def ops(ctx, peer, i, x, z):
        return {"ltz": gc.less_than_zero(ctx, peer, i, x), "relu": gc.relu(ctx, peer, i, z),
                "y": gc.y2a(ctx, peer, i, gc.a2y(ctx, peer, i, z)), "max": gc.max(ctx, peer, i, x.reshape(64, 8))}

    o = _open(_run(ops, recorder=lambda s, r, a, p: seen.append((s, r, a, bytes(p))), x=xs, z=zeros))
    np.testing.assert_array_equal(o["ltz"], (x < 0).astype(np.uint64))
    assert not o["relu"].any() and not o["y"].any()
    secrets = {"p0": [xs[1], x.view(np.uint64)], "p1": [xs[0], x.view(np.uint64)]}  # what each must not get
    result = (o["ltz"], o["max"])
    for s, r, a, p in seen:
        words = np.concatenate([w.ravel() for w in secrets[r] + list(result)])
        words = words[(words > 2**16) & (words < 2**64 - 2**16)]  # small words occur in any encoding
        assert words.size > 300
        assert not words_found(p, words).size, f"a secret word reached {r} at {a}"
    arrays = arrays_in([p for _, _, _, p in seen])
    assert len(arrays) > 10 and all(looks_uniform(a) for a in arrays if a.size)
    assert {type(wire.loads(p)).__name__ for _, _, _, p in seen} <= {"dict", "ndarray"}
