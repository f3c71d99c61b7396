"""Z_2^64 fixed point: encoding, exact matmul (numpy and float64 limbs) against Python integers,
SecureML local truncation, the AES-CTR PRG."""

from __future__ import annotations

import numpy as np
import pytest

from atoll.crypto import ring


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    A = a.astype(object)
    B = b.astype(object)
    return (A.dot(B) % (1 << 64)).astype(np.uint64)


def test_encode_decode_round_trip_and_signed_wrap():
    x = np.array([0.0, 1.5, -2.25, 1e6, -1e-5])
    u = ring.encode(x, 16)
    assert u.dtype == np.uint64
    np.testing.assert_allclose(ring.decode(u, 16), x, atol=2 ** -17)
    assert ring.encode(-1.0, 0) == np.uint64(2 ** 64 - 1)  # two's complement
    with pytest.raises(ring.RingOverflow, match="does not fit"):
        ring.encode(2.0 ** 50, 16)
    with pytest.raises(ring.RingOverflow):
        ring.encode(np.nan, 16)


@pytest.mark.parametrize("shape", [(7, 5, 3), (32, 400, 32), (48, 3000, 33)])
def test_matmul_is_exact_mod_2_64(shape):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(0, 2 ** 64, (m, k), dtype=np.uint64)
    b = rng.integers(0, 2 ** 64, (k, n), dtype=np.uint64)
    want = _exact(a, b) if k <= 400 else a @ b  # numpy's integer matmul wraps exactly too
    assert np.array_equal(ring.matmul(a, b), want)
    assert np.array_equal(ring._limb_matmul(a, b), want)  # the float64-limb path itself


def test_limb_products_stay_exact_in_float64():
    # k products of two 16-bit limbs each below 2^32: the sum is below 2^53 up to LIMB_MAX_K terms
    assert 32 + np.log2(ring.LIMB_MAX_K) <= 53
    worst = np.full((32, 8192), 2 ** 64 - 1, dtype=np.uint64)  # every limb 0xffff
    b = np.full((worst.shape[1], 32), 2 ** 64 - 1, dtype=np.uint64)
    assert np.array_equal(ring._limb_matmul(worst, b), worst @ b)


def test_local_truncation_error_is_one_ulp():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1000, 100_000)
    raw = ring.encode(x, 32)                     # a product's scale: 2f = 32 fractional bits
    s0 = rng.integers(0, 2 ** 64, size=raw.shape, dtype=np.uint64)  # seeded: a wrap (p < 2^-20 each) is
    s1 = raw - s0                                                     # possible in 1e5 fresh draws
    t = ring.trunc_local(s0, 16, 0) + ring.trunc_local(s1, 16, 1)
    want = np.floor(ring.signed(raw) / 2 ** 16)
    diff = ring.signed(t) - want
    # |x| < 2^45 here: a wrap has probability < 2^-19 per element; these seeded shares have none
    assert set(np.unique(diff)) <= {-1.0, 0.0, 1.0}


def test_prg_streams_agree_and_differ_by_seed():
    s = ring.new_seed()
    a, b = ring.PRG(s), ring.PRG(s)
    assert np.array_equal(a.ring((3, 4)), b.ring((3, 4)))
    assert np.array_equal(a.ring(5), b.ring(5))
    assert not np.array_equal(ring.PRG(ring.new_seed()).ring(8), ring.PRG(ring.new_seed()).ring(8))
