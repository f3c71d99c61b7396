"""Interoperability with python-paillier (``phe``), the independent oracle, for the *same* key in both directions.

The key is made by phe and imported into Atoll (``paillier_keypair_from_primes``), or made by Atoll and
rebuilt in phe from its primes. Values go through each library's own encoding: phe's base-16 exponents
(``mantissa * 16**exponent``) and Atoll's binary fixed point (``integer / 2**exp``) meet when ``exp`` is
a multiple of 4. Both use g = n + 1 and the same signed range (``|m| <= n // 3 - 1``). 1024-bit keys for
speed (marked slow: 2048 bits).
"""

from __future__ import annotations

import gmpy2
import numpy as np
import phe
import pytest

from atoll.crypto import he
from atoll.crypto.paillier import paillier_keypair_from_primes
from atoll.errors import CryptoError


@pytest.fixture(scope="module")
def shared_key():
    """One key known to both libraries: phe generates it, Atoll imports its primes."""
    phe_pk, phe_sk = phe.generate_paillier_keypair(n_length=1024)
    pk, sk = paillier_keypair_from_primes(phe_sk.p, phe_sk.q)
    return phe_pk, phe_sk, pk, sk


def phe_to_atoll(pk, numbers: list) -> he.CipherArray:
    """phe EncryptedNumbers as one Atoll CipherArray: exponents aligned down (phe's own homomorphic step),
    base-16 exponent e -> 4 * -e fractional bits."""
    low = min(min(x.exponent for x in numbers), 0)
    aligned = [x.decrease_exponent_to(low) if x.exponent > low else x for x in numbers]
    data = np.array([gmpy2.mpz(x.ciphertext(be_secure=False)) for x in aligned], dtype=object)
    return he.CipherArray(pk, data, exp=-4 * low, bound=0)


def atoll_to_phe(phe_pk, enc: he.CipherArray) -> list:
    """Atoll ciphertexts as phe EncryptedNumbers (needs a whole number of hex digits of precision)."""
    assert enc.exp % 4 == 0, "phe's exponents are base 16"
    return [phe.EncryptedNumber(phe_pk, int(c), -(enc.exp // 4)) for c in enc.data.ravel()]


def test_same_key_imported_from_phe(shared_key):
    phe_pk, phe_sk, pk, sk = shared_key
    assert int(pk.n) == phe_pk.n and pk.max_int == phe_pk.max_int
    assert sk.p * sk.q == phe_pk.n
    with pytest.raises(CryptoError, match="distinct primes"):
        paillier_keypair_from_primes(phe_sk.p, phe_sk.p)
    with pytest.raises(CryptoError, match="distinct primes"):
        paillier_keypair_from_primes(phe_sk.p, phe_sk.q + 2)


def test_phe_encryptions_and_phe_arithmetic_decrypt_with_atoll(shared_key):
    phe_pk, phe_sk, pk, sk = shared_key
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(size=6) * 1e3, 0.0, -0.5, 1e-6, -123456.75]
    enc = [phe_pk.encrypt(float(v)) for v in x]  # phe picks each number's own exponent
    assert np.allclose(sk.decrypt(phe_to_atoll(pk, enc)), x, rtol=1e-12, atol=1e-12)
    # homomorphic results computed by phe: sums, scalar products, plaintext additions
    k = rng.normal(size=len(x))
    mixed = [e * float(kk) + 2.5 for e, kk in zip(enc, k)]
    assert np.allclose(sk.decrypt(phe_to_atoll(pk, mixed)), x * k + 2.5, rtol=1e-9, atol=1e-9)
    total = sum(enc[1:], enc[0])
    assert sk.decrypt(phe_to_atoll(pk, [total]))[0] == pytest.approx(x.sum(), rel=1e-12, abs=1e-9)
    # exact integers at the edges of the signed range
    ints = [0, 1, -1, 2 ** 200 + 7, -(2 ** 300), phe_pk.max_int, -phe_pk.max_int]
    got = sk.decrypt_int(phe_to_atoll(pk, [phe_pk.encrypt(v) for v in ints]))
    assert got.tolist() == ints


def test_atoll_encryptions_and_atoll_arithmetic_decrypt_with_phe(shared_key):
    phe_pk, phe_sk, pk, sk = shared_key
    rng = np.random.default_rng(1)
    x = rng.normal(size=50) * 10
    enc = pk.encrypt(x)  # fast (short-exponent, fixed-base) encryption, exp 40
    assert np.allclose([phe_sk.decrypt(e) for e in atoll_to_phe(phe_pk, enc)], x, rtol=0, atol=1e-11)
    textbook = pk.encrypt_int_textbook([5, -5])
    assert [phe_sk.decrypt(e) for e in atoll_to_phe(phe_pk, textbook)] == [5, -5]
    # homomorphic results: X.T @ enc (multi-exponentiation, exp 40 + 24), ct * plain, -ct, ct + plain, sum
    X = rng.normal(size=(50, 4))
    for res, want, tol in ((X.T @ enc, X.T @ x, 1e-4), (enc * X[:, 0], x * X[:, 0], 1e-5),
                           (-enc + 1.5, 1.5 - x, 1e-11), (enc.sum(), np.array([x.sum()]), 1e-9)):
        got = [phe_sk.decrypt(e) for e in atoll_to_phe(phe_pk, res)]
        assert np.allclose(got, want, rtol=0, atol=tol)
    ints = [0, -1, 2 ** 250, pk.max_int, -pk.max_int]
    assert [phe_sk.decrypt(e) for e in atoll_to_phe(phe_pk, pk.encrypt_int(ints))] == ints
    # the libraries' ciphertexts combine: phe adds its own encryption to an Atoll one
    a = atoll_to_phe(phe_pk, pk.encrypt(np.array([0.25])))[0]
    assert phe_sk.decrypt(a + phe_pk.encrypt(1.5)) == pytest.approx(1.75, abs=1e-12)


def test_packed_atoll_ciphertexts_decrypt_with_phe(shared_key):
    """A packed plaintext is an ordinary integer to phe: its slots come back with Atoll's unpacking."""
    phe_pk, phe_sk, pk, sk = shared_key
    packer = he.Packer(pk, value_bits=20, max_terms=8)
    M = np.random.default_rng(2).integers(0, 2 ** 20, size=(3, packer.n_slots))
    enc = packer.encrypt_ints(M).sum()
    raw = phe_sk.raw_decrypt(int(enc.data[()]))
    assert np.array_equal(packer.unpack_ints(raw), M.sum(axis=0))


@pytest.mark.slow
def test_2048_bit_key_made_by_atoll_rebuilt_in_phe():
    pk, sk = he.generate_keypair("paillier", key_bits=2048)
    phe_pk = phe.PaillierPublicKey(int(pk.n))
    phe_sk = phe.PaillierPrivateKey(phe_pk, int(sk.p), int(sk.q))
    x = np.array([3.5, -1e6, 2.0 ** -30])
    assert np.allclose([phe_sk.decrypt(e) for e in atoll_to_phe(phe_pk, pk.encrypt(x))], x, rtol=0, atol=1e-11)
    back = phe_to_atoll(pk, [phe_pk.encrypt(float(v)) for v in x])
    assert np.allclose(sk.decrypt(back), x, rtol=1e-12, atol=1e-12)
