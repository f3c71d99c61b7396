"""Okamoto-Uchiyama specifics: key structure, decryption range checks (the chosen-ciphertext guard), wire."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from atoll import wire
from atoll.crypto import he
from atoll.crypto.ou import OUPrivateKey, OUPublicKey
from atoll.errors import CryptoError, WireError


def test_key_structure(ou_kp):
    pk, sk = ou_kp
    assert isinstance(pk, OUPublicKey) and pk.scheme == "ou"
    assert pk.n == sk.p * sk.p * sk.q and pk.n.bit_length() == 1024
    assert sk.p.bit_length() == 1024 // 3
    assert (sk.p - 1) % sk.t == 0 and gmpy2.is_prime(sk.t)
    # H vanishes under decryption (order t mod p^2), G carries the plaintext
    assert gmpy2.powmod(pk.h, sk.t, sk.psquare) == 1
    assert sk._raw_decrypt([pk.h]) == [0]
    assert sk._raw_decrypt([pk.g]) == [1]
    assert pk.max_int < sk.p // 4


def test_exact_and_randomised(ou_kp):
    pk, sk = ou_kp
    vals = [0, 1, -1, 2 ** 200, -(2 ** 200), pk.max_int, -pk.max_int]
    enc = pk.encrypt_int(vals)
    assert sk.decrypt_int(enc).tolist() == vals
    assert pk.encrypt_int([3]).data[0] != pk.encrypt_int([3]).data[0]


def test_chosen_ciphertext_guard(ou_kp):
    """A crafted ciphertext of a plaintext beyond the safe range (the OU key-recovery attack) is refused."""
    pk, sk = ou_kp
    for m in (pk.max_int + 1, sk.p // 2, sk.p - pk.max_int - 1):
        crafted = he.CipherArray(pk, np.array([gmpy2.powmod(pk.g, m, pk.n)], dtype=object), 0, 0)
        with pytest.raises(CryptoError, match="outside the safe plaintext range"):
            sk.decrypt(crafted)
        with pytest.raises(CryptoError):
            sk.decrypt_int(crafted)
    with pytest.raises(CryptoError, match="safe range"):
        pk.encrypt_int([pk.max_int + 1])


def test_wire(ou_kp):
    pk, sk = ou_kp
    back = wire.loads(wire.dumps(pk))
    assert back == pk and isinstance(back, OUPublicKey)
    with pytest.raises(WireError):
        wire.dumps(sk)
    assert isinstance(sk, OUPrivateKey)
    enc = wire.loads(wire.dumps(pk.encrypt(np.array([2.5, -1.0]))))
    assert np.allclose(sk.decrypt(enc), [2.5, -1.0])
    with pytest.raises(ValueError):
        OUPublicKey._from_fields(dict(pk._fields(), g=0))


def test_parallel_paths_match(ou_kp):
    pk, sk = ou_kp
    rng = np.random.default_rng(5)
    x = rng.normal(size=300)
    enc = pk.encrypt(x, jobs=2)
    assert np.allclose(sk.decrypt(enc, jobs=2), x, atol=1e-9)
    pk.precompute(100, jobs=2)
    assert pk.pool_size >= 100
    assert np.allclose(sk.decrypt(pk.encrypt(x[:100])), x[:100], atol=1e-9)


def test_paillier_and_ou_do_not_mix(paillier_kp, ou_kp):
    a = paillier_kp.public_key.encrypt(np.array([1.0]))
    b = ou_kp.public_key.encrypt(np.array([1.0]))
    with pytest.raises(CryptoError):
        a + b
    with pytest.raises(CryptoError):
        ou_kp.private_key.decrypt(a)
    with pytest.raises(CryptoError, match="unknown HE scheme"):
        he.generate_keypair("rsa")
