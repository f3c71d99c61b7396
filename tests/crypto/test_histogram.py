"""Encrypted histograms and compression: equal to the plaintext sums exactly, for any number of workers.

Keys are 1024-bit here (tests only; speed).
"""

from __future__ import annotations

import numpy as np
import pytest

from atoll.crypto import he
from atoll.crypto.multiexp import grouped_products
from atoll.errors import CryptoError


def plain_hist(values: np.ndarray, codes: np.ndarray, n_bins: int) -> np.ndarray:
    out = np.zeros((codes.shape[1], n_bins) + values.shape[1:], dtype=np.int64)
    for f in range(codes.shape[1]):
        np.add.at(out[f], codes[:, f], values)
    return out


@pytest.fixture(scope="module")
def rows(ou_kp):
    pk, _ = ou_kp
    rng = np.random.default_rng(11)
    m, d, nb = 700, 4, 9
    vals = np.stack([rng.integers(-2 ** 40, 2 ** 40, m), rng.integers(1, 2 ** 40, m)], axis=1)  # signed g, h > 0
    codes = rng.integers(0, nb, size=(m, d)).astype(np.uint8)
    codes[:, 3] = rng.integers(0, 2, m)  # a feature with two populated bins (most bins empty)
    packer = he.Packer(pk, value_bits=53, signed=True)
    return packer, packer.encrypt_ints(vals), vals, codes, nb


def test_grouped_products_is_the_product_per_group():
    N = 2 ** 127 - 1
    vals = [3, 5, 7, 11, 13]
    codes = np.array([[0, 1], [1, 1], [0, 0], [2, 1], [0, 1]])
    assert grouped_products(vals, codes, 3, N) == [3 * 7 * 13, 5, 11, 7, 3 * 5 * 11 * 13, 1]


def test_histograms_equal_plaintext_sums_for_one_and_two_workers(ou_kp, rows):
    pk, sk = ou_kp
    packer, enc, vals, codes, nb = rows
    rng = np.random.default_rng(12)
    subsets = [np.arange(len(vals)), np.sort(rng.choice(len(vals), 250, replace=False)), np.array([5]),
               np.array([], dtype=np.int64)]
    with he.RowHistograms(enc, codes, nb, jobs=1) as one, he.RowHistograms(enc, codes, nb, jobs=2) as two:
        h1, h2 = one.build(subsets), two.build(subsets)
    for s, a, b in zip(subsets, h1, h2):
        assert a.shape == (codes.shape[1], nb)
        assert a.data.tolist() == b.data.tolist()  # the same ciphertexts, bit for bit
        got = packer.decrypt_ints(sk, a, k=2)
        assert np.array_equal(got, plain_hist(vals[s], codes[s], nb))
        assert a.packing[1] <= np.abs(vals).max() * max(len(s), 1)


def test_compression_of_histograms_decrypts_to_the_same_sums(ou_kp, rows):
    pk, sk = ou_kp
    packer, enc, vals, codes, nb = rows
    subsets = [np.arange(0, 700, 2), np.arange(1, 700, 2), np.arange(0, 700, 3)]
    hists = he.RowHistograms(enc, codes, nb, jobs=2).build(subsets)
    flat = he.stack([h.ravel() for h in hists])
    per = packer.n_slots // 2
    for jobs in (1, 2):
        packed = packer.pack(flat, slots=2, jobs=jobs)
        assert packed.shape == (3, -(-codes.shape[1] * nb // per))
        if jobs == 1:
            first = packed.data.tolist()
        else:
            assert packed.data.tolist() == first
        slots = packer.decrypt_ints(sk, packed.rerandomize(jobs=jobs), k=per * 2)
        for i, s in enumerate(subsets):
            got = slots[i].reshape(-1, 2)[:codes.shape[1] * nb].reshape(codes.shape[1], nb, 2)
            assert np.array_equal(got, plain_hist(vals[s], codes[s], nb))


def test_signed_packing_round_trip_and_overflow(ou_kp):
    pk, sk = ou_kp
    packer = he.Packer(pk, value_bits=8, max_terms=4, signed=True)
    M = np.array([[-127, 127, 0], [5, -6, 7]])
    enc = packer.encrypt_ints(M)
    assert np.array_equal(packer.decrypt_ints(sk, enc, k=3), M)
    assert np.array_equal(packer.decrypt_ints(sk, -enc, k=3), -M)  # signed slots survive negation
    assert np.array_equal(packer.decrypt_ints(sk, enc * -3, k=3), -3 * M)
    four = he.concatenate([enc[:1]] * 4)
    assert np.array_equal(packer.decrypt_ints(sk, four.sum(), k=3), 4 * M[0])
    with pytest.raises(CryptoError, match="spill"):
        he.concatenate([enc[:1]] * 5).sum()
    with pytest.raises(CryptoError, match="outside"):
        packer.encrypt_ints(np.array([[128]]))
    with pytest.raises(CryptoError, match="unsigned"):
        he.Packer(pk, value_bits=8, max_terms=4).decrypt_ints(sk, enc)


def test_histogram_inputs_are_checked(ou_kp, rows):
    packer, enc, vals, codes, nb = rows
    with pytest.raises(CryptoError, match="codes"):
        he.RowHistograms(enc, codes[:10], nb)
    with pytest.raises(CryptoError, match="bin codes"):
        he.RowHistograms(enc, codes, 3)
    rh = he.RowHistograms(enc, codes, nb)
    with pytest.raises(CryptoError, match="row subsets"):
        rh.build([np.array([len(vals)])])
    with pytest.raises(CryptoError, match="slot"):
        he.Packer(ou_kp.public_key, value_bits=40, signed=True).pack(rh.build([np.arange(3)])[0].ravel(), slots=2)


def test_horner_pack_equals_the_product_of_shifted_powers():
    import secrets

    import gmpy2
    from gmpy2 import mpz

    from atoll.crypto.multiexp import horner_pack

    N = mpz(secrets.randbits(512)) | 1
    vals = [mpz(secrets.randbelow(int(N))) for _ in range(23)]
    vals = [mpz(1) if i % 3 == 1 else v for i, v in enumerate(vals)] + [mpz(1)] * 4  # ones (empty bins) skipped
    for per in (1, 2, 5, 6, 30):
        want = []
        for s in range(0, len(vals), per):
            acc = mpz(1)
            for k, c in enumerate(vals[s:s + per]):
                acc = acc * gmpy2.powmod(c, mpz(1) << (7 * k), N) % N
            want.append(acc)
        assert horner_pack(vals, per, 7, N) == want
