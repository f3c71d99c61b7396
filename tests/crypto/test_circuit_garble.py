"""Circuit builder blocks against numpy (plain evaluation), their AND counts, slot reuse, and
half-gates garbling against the plain evaluation of the same circuit (random circuits too)."""

from __future__ import annotations

import numpy as np
import pytest

from atoll.crypto import aes
from atoll.crypto import garble as gb
from atoll.crypto.bitmatrix import bits_to_words, words_to_bits
from atoll.crypto.circuit import ONE, ZERO, Builder
from atoll.errors import CryptoError

EDGES = np.array([0, 1, -1, 2, -2, 2**62, -2**62, 2**62 - 1, 2**63 - 1, -2**63, 12345, -12345], dtype=np.int64)


def _values(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**64, n, dtype=np.uint64)
    y = rng.integers(0, 2**64, n, dtype=np.uint64)
    e = EDGES.view(np.uint64)
    gx, gy = np.meshgrid(e, e)  # every pair of edge values
    x = np.concatenate([x, gx.ravel(), e])
    y = np.concatenate([y, gy.ravel(), e])  # ... and equal pairs
    return x, y


def _delta() -> np.ndarray:
    d = aes.random_blocks(1)[0]
    d[0] |= np.uint64(1)
    return d


def _garbled(circ, bits):
    """Garble, evaluate on the active labels, decode with the point bits."""
    n = bits.shape[0]
    delta = _delta()
    zero = aes.random_blocks((circ.n_inputs, n))
    tables, out_zero = gb.garble(circ, zero, delta, tweak0=77)
    active = zero ^ (bits.T.astype(np.uint64)[..., None] * delta)
    out = gb.evaluate(circ, active, tables, tweak0=77)
    # each output label is exactly the zero label or the one label
    is0 = (out == out_zero).all(axis=-1)
    is1 = (out == (out_zero ^ delta)).all(axis=-1)
    assert (is0 ^ is1).all()
    return (gb.point(out) ^ gb.point(out_zero)).T, is1.T.astype(np.uint8)


def test_word_blocks_match_numpy_with_edge_values_and_wrap():
    b = Builder()
    x, y = b.inputs(64), b.inputs(64)
    mx, am = b.max_argmax([x, y])
    circ = b.build([b.add(x, y), b.sub(x, y), b.neg(x), [b.lt_signed(x, y)], [b.lt_unsigned(x, y)],
                    [b.eq(x, y)], mx, am, b.mux_word(x[0], x, y)])
    xv, yv = _values(300, 1)
    bits = np.concatenate([words_to_bits(xv), words_to_bits(yv)], axis=1)
    for out in (circ.evaluate_plain(bits), _garbled(circ, bits)[0]):
        w = lambda i, j: bits_to_words(out[:, i:j])
        np.testing.assert_array_equal(w(0, 64), xv + yv)                # wraps mod 2^64
        np.testing.assert_array_equal(w(64, 128), xv - yv)
        np.testing.assert_array_equal(w(128, 192), np.uint64(0) - xv)
        np.testing.assert_array_equal(out[:, 192], xv.view(np.int64) < yv.view(np.int64))
        np.testing.assert_array_equal(out[:, 193], xv < yv)
        np.testing.assert_array_equal(out[:, 194], xv == yv)
        np.testing.assert_array_equal(w(195, 259).view(np.int64), np.maximum(xv.view(np.int64), yv.view(np.int64)))
        np.testing.assert_array_equal(out[:, 259], np.argmax(np.stack([xv.view(np.int64), yv.view(np.int64)]), 0))
        np.testing.assert_array_equal(w(260, 324), np.where(xv & np.uint64(1), yv, xv))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_max_argmax_of_k_values_first_index_on_ties(k):
    rng = np.random.default_rng(k)
    v = rng.integers(-3, 3, (200, k)).astype(np.int64)  # many ties
    v[:5] = rng.choice(EDGES, (5, k))
    b = Builder()
    words = [b.inputs(64) for _ in range(k)]
    mx, idx = b.max_argmax(words)
    circ = b.build([mx, idx, b.one_hot(idx, k)])
    bits = words_to_bits(v.view(np.uint64)).reshape(200, 64 * k)
    out, _ = _garbled(circ, bits)
    ib = len(idx)
    np.testing.assert_array_equal(bits_to_words(out[:, :64]).view(np.int64), v.max(axis=1))
    np.testing.assert_array_equal(bits_to_words(out[:, 64:64 + ib]), v.argmax(axis=1))
    np.testing.assert_array_equal(out[:, 64 + ib:], np.eye(k, dtype=np.uint8)[v.argmax(axis=1)])


def test_and_counts_constant_folding_and_slot_reuse():
    def count(make):
        b = Builder()
        x, y = b.inputs(64), b.inputs(64)
        return b.build(make(b, x, y))
    assert count(lambda b, x, y: [b.add(x, y)]).n_and == 63
    assert count(lambda b, x, y: [[b.add(x, y)[-1]]]).n_and == 63          # the sign: the carry chain
    assert count(lambda b, x, y: [[b.lt_signed(x, y)]]).n_and == 64
    assert count(lambda b, x, y: [[b.eq(x, y)]]).n_and == 63
    assert count(lambda b, x, y: [b.mux_word(x[0], x, y)]).n_and == 64
    assert count(lambda b, x, y: [b.add(x, b.const_word(0, 64))]).n_and == 0  # x + 0 folds away
    sign = count(lambda b, x, y: [[b.add(x, y)[-1]]])
    assert sign.n_slots <= 130  # inputs' slots are reused by the carries
    b = Builder()
    x = b.inputs(3)
    assert b.and_(x[0], ONE) == x[0] and b.and_(x[0], ZERO) == ZERO and b.xor(x[1], x[1]) == ZERO
    assert b.and_(x[2], x[2]) == x[2] and b.xor(x[0], ONE) != x[0]
    with pytest.raises(CryptoError, match="before the first gate"):
        b.inputs(1)


def test_constant_outputs_are_materialised():
    b = Builder()
    x = b.inputs(2)
    circ = b.build([[ZERO, ONE, b.xor(x[0], x[0])], [x[1]]])
    bits = np.array([[0, 1], [1, 0]], np.uint8)
    out, _ = _garbled(circ, bits)
    np.testing.assert_array_equal(out, [[0, 1, 0, 1], [0, 1, 0, 0]])


def test_random_circuits_garble_like_their_plain_evaluation():
    rng = np.random.default_rng(11)
    for trial in range(5):
        b = Builder()
        wires = b.inputs(12)
        for _ in range(150):
            op = rng.integers(0, 3)
            a, c = (int(w) for w in rng.choice(wires, 2))
            wires.append(b.xor(a, c) if op == 0 else b.and_(a, c) if op == 1 else b.inv(a))
            wires = [w for w in wires if w >= 0] or [0]
        outs = [[int(w)] for w in rng.choice(wires, 10)]
        circ = b.build(outs)
        bits = rng.integers(0, 2, (64, 12)).astype(np.uint8)
        out, _ = _garbled(circ, bits)
        np.testing.assert_array_equal(out, circ.evaluate_plain(bits))


def test_garbling_rejects_bad_delta_and_shapes():
    b = Builder()
    x = b.inputs(2)
    circ = b.build([[b.and_(x[0], x[1])]])
    zero = aes.random_blocks((2, 4))
    with pytest.raises(CryptoError, match="lowest bit"):
        gb.garble(circ, zero, np.array([2, 0], np.uint64), 0)
    with pytest.raises(CryptoError, match="labels"):
        gb.garble(circ, zero[:1], _delta(), 0)
    tables, _ = gb.garble(circ, zero, _delta(), 0)
    with pytest.raises(CryptoError, match="tables"):
        gb.evaluate(circ, zero, tables[:, :2], 0)


def test_a_wrong_tweak_or_table_gives_garbage_not_the_other_label():
    b = Builder()
    x = b.inputs(2)
    circ = b.build([[b.and_(x[0], x[1])]])
    delta = _delta()
    zero = aes.random_blocks((2, 32))
    tables, oz = gb.garble(circ, zero, delta, 5)
    out = gb.evaluate(circ, zero ^ delta, tables, 6)  # the evaluator must use the garbler's tweaks
    assert not (out == oz).all(axis=-1).any() and not (out == (oz ^ delta)).all(axis=-1).any()
