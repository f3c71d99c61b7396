"""Paillier specifics: key shape, textbook vs fast encryption, CRT decryption, and interoperability with phe."""

from __future__ import annotations

import gmpy2
import numpy as np
import phe
import pytest

from atoll import wire
from atoll.crypto import he
from atoll.crypto.paillier import PaillierPrivateKey, PaillierPublicKey
from atoll.errors import CryptoError, WireError


def test_key_shape(paillier_kp):
    pk, sk = paillier_kp
    assert pk.key_bits == 1024 and pk.n.bit_length() == 1024
    assert sk.p.bit_length() == sk.q.bit_length() == 512 and sk.p * sk.q == pk.n
    # h_s is an n-th power modulo n^2: it vanishes under the L-function decryption
    assert sk._raw_decrypt([pk.h_s]) == [0]
    assert pk.r_bits >= 448


def test_textbook_and_fast_agree(paillier_kp):
    pk, sk = paillier_kp
    vals = [0, 1, -1, 123456789, -(2 ** 200), pk.max_int, -pk.max_int]
    fast = pk.encrypt_int(vals)
    slow = pk.encrypt_int_textbook(vals)
    assert sk.decrypt_int(fast).tolist() == vals
    assert sk.decrypt_int(slow).tolist() == vals
    small = vals[:5]
    assert sk.decrypt_int(pk.encrypt_int(small) + pk.encrypt_int_textbook(small)).tolist() == [2 * v for v in small]
    with pytest.raises(CryptoError, match="safe plaintext range"):
        fast + slow  # max_int + max_int would wrap around: refused before computing
    # randomised: two encryptions of the same value differ
    assert pk.encrypt_int([5]).data[0] != pk.encrypt_int([5]).data[0]


def test_crt_decryption_matches_textbook_formula(paillier_kp):
    pk, sk = paillier_kp
    n, nsq = pk.n, pk.nsquare
    lam = (sk.p - 1) * (sk.q - 1)
    mu = gmpy2.invert(lam, n)
    cs = pk.encrypt_int([7, 2 ** 300, -5]).data.tolist()
    textbook = [int((gmpy2.powmod(c, lam, nsq) - 1) // n * mu % n) for c in cs]
    assert sk._raw_decrypt(cs) == textbook


def test_out_of_range_refused(paillier_kp):
    pk, sk = paillier_kp
    with pytest.raises(CryptoError, match="safe range"):
        pk.encrypt_int([pk.max_int + 1])
    # a ciphertext of a value in the forbidden middle band is refused at decryption
    mid = pk.n // 2
    c = (1 + mid * pk.n) % pk.nsquare
    bad = he.CipherArray(pk, np.array([gmpy2.mpz(c)], dtype=object), 0, 0)
    with pytest.raises(CryptoError, match="outside the safe plaintext range"):
        sk.decrypt(bad)


def test_phe_ciphertexts_decrypt_with_atoll_key(paillier_kp):
    pk, sk = paillier_kp
    phe_pk = phe.PaillierPublicKey(int(pk.n))
    vals = [0, 42, -42, 2 ** 100 + 3, -(2 ** 90)]
    cts = [phe_pk.raw_encrypt(v % int(pk.n)) for v in vals]
    enc = he.CipherArray(pk, np.array([gmpy2.mpz(c) for c in cts], dtype=object), 0, max(abs(v) for v in vals))
    assert sk.decrypt_int(enc).tolist() == vals
    # phe floats (its own encoding) decrypt to the same numbers through the raw integers
    x = 3.14159
    en = phe_pk.encrypt(x)
    m = sk._to_signed(sk._raw_decrypt([gmpy2.mpz(en.ciphertext(be_secure=False))]))[0]
    assert m * phe.EncodedNumber.BASE ** en.exponent == pytest.approx(x, rel=1e-12)


def test_atoll_ciphertexts_decrypt_with_phe_key(paillier_kp):
    pk, sk = paillier_kp
    phe_pk = phe.PaillierPublicKey(int(pk.n))
    phe_sk = phe.PaillierPrivateKey(phe_pk, int(sk.p), int(sk.q))
    x = np.array([0.5, -1.75, 1000.125, 0.0])
    enc = pk.encrypt(x)
    got = [phe_sk.raw_decrypt(int(c)) for c in enc.data]
    n = int(pk.n)
    signed = [v - n if v > n // 2 else v for v in got]
    assert np.allclose(np.array(signed, dtype=float) / 2.0 ** enc.exp, x, atol=1e-12)
    # homomorphic results too: X.T @ enc computed by Atoll, decrypted by phe
    X = np.array([[1, 2], [3, -4], [5, 6], [7, 8]])
    prod = X.T @ enc
    got = [phe_sk.raw_decrypt(int(c)) for c in prod.data]
    signed = [v - n if v > n // 2 else v for v in got]
    assert np.allclose(np.array(signed, dtype=float) / 2.0 ** prod.exp, X.T @ x, atol=1e-9)


def test_private_key_never_on_the_wire(paillier_kp):
    pk, sk = paillier_kp
    with pytest.raises(WireError):
        wire.dumps(sk)
    with pytest.raises(WireError):
        wire.dumps({"key": sk})
    with pytest.raises(WireError):
        wire.dumps(paillier_kp)
    assert isinstance(sk, PaillierPrivateKey)


def test_public_key_wire_roundtrip_and_validation(paillier_kp):
    pk, _ = paillier_kp
    back = wire.loads(wire.dumps(pk))
    assert isinstance(back, PaillierPublicKey) and back == pk
    fields = pk._fields()
    bad = dict(fields, n=fields["n"] + 1)  # even modulus
    with pytest.raises(ValueError):
        PaillierPublicKey._from_fields(bad)
    with pytest.raises(ValueError):
        PaillierPublicKey._from_fields(dict(fields, h_s=0))


@pytest.mark.slow
def test_2048_bit_roundtrip():
    pk, sk = he.generate_keypair("paillier", key_bits=2048)
    assert pk.n.bit_length() == 2048
    x = np.array([1.0, -2.5, 3.25e8])
    assert np.allclose(sk.decrypt(pk.encrypt(x)), x, rtol=0, atol=1e-9)
    assert sk.decrypt_int(pk.encrypt_int_textbook([-7])).tolist() == [-7]
