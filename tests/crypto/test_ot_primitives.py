"""The pure pieces under OT and garbling: the bit-matrix transpose (against unpack/transpose/pack),
AES (FIPS-197 known answer; the TCCR hash and the PRG against per-block ``cryptography`` calls),
CO15 base OT algebra (and its refusal of bad points), IKNP / KKRT algebra."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl import bindings as sodium

from atoll.crypto import aes
from atoll.crypto import ot as otc
from atoll.crypto.bitmatrix import bits_to_words, transpose, words_to_bits
from atoll.errors import CryptoError


def _naive_transpose(m: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(m.view(np.uint8), axis=1, bitorder="little")
    return np.ascontiguousarray(np.packbits(bits.T, axis=1, bitorder="little")).view(np.uint64)


@pytest.mark.parametrize("rows,words", [(64, 1), (128, 3), (128, 600), (512, 5), (192, 2), (64, 1100)])
def test_transpose_matches_unpack_transpose_pack(rows, words):
    m = np.random.default_rng(rows * 7 + words).integers(0, 2**64, (rows, words), dtype=np.uint64)
    keep = m.copy()
    t = transpose(m)
    assert t.shape == (64 * words, rows // 64)
    np.testing.assert_array_equal(t, _naive_transpose(m))
    np.testing.assert_array_equal(m, keep)  # the input is untouched
    np.testing.assert_array_equal(transpose(t), m)  # transposing twice gives the matrix back


def test_transpose_refuses_bad_shapes():
    with pytest.raises(CryptoError, match="multiple"):
        transpose(np.zeros((63, 1), np.uint64))
    with pytest.raises(CryptoError):
        transpose(np.zeros((64, 1), np.uint32))


def test_words_bits_round_trip():
    x = np.array([0, 1, 2**63, 2**64 - 1, 0xDEADBEEF], dtype=np.uint64)
    b = words_to_bits(x)
    assert b.shape == (5, 64) and b[1, 0] == 1 and b[2, 63] == 1 and b[3].all() and not b[0].any()
    np.testing.assert_array_equal(bits_to_words(b), x)
    np.testing.assert_array_equal(bits_to_words(words_to_bits(x, 8)), x & np.uint64(0xFF))


def test_aes_fips197_known_answer():
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    pt = np.frombuffer(bytes.fromhex("00112233445566778899aabbccddeeff"), np.uint64).reshape(1, 2)
    assert aes.permute(pt, key).tobytes().hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_tccr_is_the_gkwy20_formula_block_by_block():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2**64, (5, 2), dtype=np.uint64)
    tw = rng.integers(0, 2**64, 5, dtype=np.uint64)
    h = aes.tccr(x, tw, 0x1234)
    enc = Cipher(algorithms.AES(aes.FIXED_KEY), modes.ECB()).encryptor()
    for i in range(5):
        lo, hi = int(x[i, 0]), int(x[i, 1])
        s = np.array([lo ^ hi, lo], dtype=np.uint64)
        y = s ^ np.array([int(tw[i]), 0x1234], dtype=np.uint64)
        expect = np.frombuffer(enc.update(y.tobytes()), np.uint64) ^ s
        np.testing.assert_array_equal(h[i], expect)
    # sigma is an orthomorphism: sigma(x) ^ x is invertible (here: distinct on distinct x)
    s = aes.sigma(x) ^ x
    assert len({tuple(r) for r in s.tolist()}) == 5


def test_prg_rows_is_aes_ctr_and_continues_its_stream():
    seeds = np.frombuffer(bytes(range(32)), np.uint8).reshape(2, 16)
    out = aes.prg_rows(seeds, 64)
    for i in range(2):
        ref = Cipher(algorithms.AES(seeds[i].tobytes()), modes.CTR(bytes(16))).encryptor().update(bytes(64))
        assert out[i].tobytes() == ref
    np.testing.assert_array_equal(aes.prg_rows(seeds, 32, offset_blocks=2), out[:, 32:])
    assert aes.random_words(1000).dtype == np.uint64 and len(set(aes.random_words(1000).tolist())) == 1000


def test_co15_keys_agree_on_the_chosen_message_only():
    a, a_pt = otc.co15_sender_start()
    c = np.array([0, 1, 1, 0, 1], np.uint8)
    points, kc = otc.co15_receiver(a_pt, c, b"tag")
    k0, k1 = otc.co15_sender_keys(a, a_pt, points, b"tag")
    np.testing.assert_array_equal(np.where(c[:, None] == 1, k1, k0), kc)
    assert not (np.where(c[:, None] == 1, k0, k1) == kc).all(axis=1).any()
    # a different session tag gives unrelated keys
    k0b, _ = otc.co15_sender_keys(a, a_pt, points, b"other")
    assert not (k0b == k0).all(axis=1).any()


def test_co15_refuses_identity_small_order_and_garbage_points():
    a, a_pt = otc.co15_sender_start()
    identity = (1).to_bytes(32, "little")
    small = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")  # order 8
    for bad in (identity, small, bytes(32), b"\xff" * 32, b"short"):
        assert not (len(bad) == 32 and sodium.crypto_core_ed25519_is_valid_point(bad))
        with pytest.raises(CryptoError, match="not a valid edwards25519 point"):
            otc.co15_sender_keys(a, a_pt, [bad], b"t")
        with pytest.raises(CryptoError, match="not a valid edwards25519 point"):
            otc.co15_receiver(bad, np.zeros(1, np.uint8), b"t")


def test_iknp_algebra_gives_correlated_rows():
    rng = np.random.default_rng(5)
    k, n = 128, 256
    g0 = rng.integers(0, 2**64, (k, n // 64), dtype=np.uint64)
    g1 = rng.integers(0, 2**64, (k, n // 64), dtype=np.uint64)
    s = rng.integers(0, 2, k).astype(np.uint8)
    r_bits = rng.integers(0, 2, n).astype(np.uint8)
    r = np.packbits(r_bits, bitorder="little").view(np.uint64)
    u, t = otc.iknp_receiver(g0, g1, r)
    gs = np.where(s[:, None] == 1, g1, g0)
    q = otc.iknp_sender(gs, s, u)
    s_words = np.packbits(s, bitorder="little").view(np.uint64)
    np.testing.assert_array_equal(q, t ^ (r_bits[:, None].astype(np.uint64) * s_words))


def test_prc_codewords_are_far_apart_and_row_hash_is_keyed():
    keys = otc.prc_keys(b"seed")
    x = np.zeros((200, 2), np.uint64)
    x[:, 0] = np.arange(200)
    c = otc.prc(x, keys)
    assert c.shape == (200, 8)
    d = np.unpackbits((c[:, None, :] ^ c[None, :, :]).view(np.uint8), axis=-1).sum(axis=-1)
    off = d[~np.eye(200, dtype=bool)]
    assert off.min() > 180 and abs(off.mean() - 256) < 5  # >= 128 needed; ~256 expected
    h = otc.row_hash(c, np.arange(200, dtype=np.uint64), b"k1" * 16)
    assert h.shape == (200, 2) and len({tuple(r) for r in h.tolist()}) == 200
    assert not (otc.row_hash(c, np.arange(200, dtype=np.uint64), b"k2" * 16) == h).all(axis=1).any()
    # another output length is another function (BLAKE2's parameter block), not a prefix
    assert not (otc.row_hash(c, np.arange(200, dtype=np.uint64), b"k1" * 16, 8)[:, :2] == h).all(axis=1).any()
    with pytest.raises(CryptoError):
        otc.row_hash(c, np.arange(200, dtype=np.uint64), b"k" * 32, 9)
    with pytest.raises(CryptoError, match="32-byte"):
        otc.row_hash(c, np.arange(200, dtype=np.uint64), b"k")
