"""Packing: round trips, sums within headroom, and refusal to overflow."""

from __future__ import annotations

import numpy as np
import pytest

from atoll.crypto import he
from atoll.errors import CryptoError


def test_pack_roundtrip_and_capacity(kp):
    pk, sk = kp
    packer = he.Packer(pk, value_bits=16, max_terms=100)
    assert packer.slot_bits == 16 + 7
    assert packer.n_slots * packer.slot_bits <= pk.max_int.bit_length()
    rng = np.random.default_rng(0)
    M = rng.integers(0, 2 ** 16, size=(5, packer.n_slots))
    enc = packer.encrypt_ints(M)
    assert enc.shape == (5,)
    assert np.array_equal(packer.decrypt_ints(sk, enc), M)
    total = enc.sum()
    assert np.array_equal(packer.decrypt_ints(sk, total), M.sum(axis=0))
    mask = np.array([1, 0, 1, 1, 0])
    assert np.array_equal(packer.decrypt_ints(sk, mask @ enc), mask @ M)
    assert np.array_equal(packer.decrypt_ints(sk, enc[:2] + enc[2:4], k=3), (M[:2] + M[2:4])[:, :3])


def test_pack_refuses_overflow(kp):
    pk, sk = kp
    packer = he.Packer(pk, value_bits=8, max_terms=4)
    enc = packer.encrypt_ints(np.full((8, 3), 255))
    assert np.array_equal(packer.decrypt_ints(sk, enc[:4].sum(), k=3), [1020] * 3)
    with pytest.raises(CryptoError, match="spill"):
        enc[:5].sum()
    with pytest.raises(CryptoError, match="spill"):
        enc[0] * 5
    with pytest.raises(CryptoError, match="outside"):
        packer.encrypt_ints(np.array([[256]]))
    with pytest.raises(CryptoError, match="outside"):
        packer.encrypt_ints(np.array([[-1]]))
    with pytest.raises(CryptoError, match="not packed"):
        packer.decrypt_ints(sk, -enc[0])
    with pytest.raises(CryptoError, match="fit"):
        he.Packer(pk, value_bits=8, n_slots=10_000)


def test_homomorphic_pack_of_signed_fixed_point(kp):
    pk, sk = kp
    rng = np.random.default_rng(6)
    x = rng.normal(size=23) * 100
    enc = pk.encrypt(x, precision=20)
    packer = he.Packer(pk, value_bits=48, max_terms=4)
    packed = packer.pack(enc)
    assert len(packed) == -(-23 // packer.n_slots)
    assert np.allclose(packer.decrypt_packed(sk, packed, 23), x, atol=2 ** -20)
    # packed results of several parties can be summed before the single decryption
    y = rng.normal(size=23)
    total = packed + packer.pack(pk.encrypt(y, precision=20))
    assert np.allclose(packer.decrypt_packed(sk, total, 23), x + y, atol=2 ** -19)
    with pytest.raises(CryptoError, match="do not fit"):
        he.Packer(pk, value_bits=16).pack(enc)
