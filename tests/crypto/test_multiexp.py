"""Pure exponentiation kernels against gmpy2.powmod: fixed-base tables, bucket multi-exponentiation, batch inversion."""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from atoll.crypto.multiexp import FixedBaseTable, batch_invert, best_window, multi_exp, multi_exp_signed

N = gmpy2.next_prime(mpz(secrets.randbits(1024)) | (mpz(1) << 1023))  # a prime modulus: every base is a unit


def test_fixed_base_table_matches_powmod():
    base = mpz(secrets.randbits(1000))
    for window in (1, 5, 8, 12):
        table = FixedBaseTable(base, N, 300, window, prebuild_bits=16)
        exps = [0, 1, 2 ** 299, 2 ** 300 - 1] + [secrets.randbits(300) for _ in range(20)]
        assert table.pow_list(exps) == [gmpy2.powmod(base, e, N) for e in exps]
    with pytest.raises(ValueError):
        table.pow(2 ** 300)
    with pytest.raises(ValueError):
        table.pow(-1)


@pytest.mark.parametrize("bits", [1, 7, 27, 70])
def test_multi_exp_matches_product_of_powmods(bits):
    rng = np.random.default_rng(bits)
    bases = [mpz(secrets.randbits(1000)) % N for _ in range(300)]
    exps = [int(v) for v in rng.integers(0, 2 ** min(bits, 62), size=300)]
    if bits > 62:
        exps = [secrets.randbits(bits) for _ in range(300)]
    exps[::7] = [0] * len(exps[::7])
    want = mpz(1)
    for b, e in zip(bases, exps):
        want = want * gmpy2.powmod(b, e, N) % N
    assert multi_exp(bases, exps, N) == want
    if bits <= 62:
        assert multi_exp(bases, np.array(exps, dtype=np.int64), N) == want
    signed = [e if i % 2 else -e for i, e in enumerate(exps)]
    want_s = mpz(1)
    for b, e in zip(bases, signed):
        want_s = want_s * gmpy2.powmod(b, e, N) % N
    assert multi_exp_signed(bases, signed, N) == want_s
    if bits <= 62:
        assert multi_exp_signed(bases, np.array(signed, dtype=np.int64), N) == want_s
    assert multi_exp(bases, [0] * 300, N) == 1


def test_batch_invert_and_window_choice():
    vals = [mpz(secrets.randbits(900)) % N for _ in range(57)]
    assert batch_invert(vals, N) == [gmpy2.invert(v, N) for v in vals]
    assert batch_invert([], N) == []
    assert best_window(1, 1) == 1
    assert 6 <= best_window(10_000, 27) <= 11
