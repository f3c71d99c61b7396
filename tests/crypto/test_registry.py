"""The HE backend registry: one table of schemes, and a third backend added by registration alone.

The toy backend below is textbook Paillier written from scratch (r**n randomness, no CRT): its own key
classes, wire name and key generation, registered with one call -- and then key generation, the wire,
CipherArray algebra, packing, histograms and the worker engine all work with it, with no other edit.
512-bit keys: speed only, never security.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from atoll import wire
from atoll.crypto import base, he, registry
from atoll.errors import CryptoError

ROOT = Path(__file__).resolve().parents[2] / "atoll"


def test_one_place_lists_the_schemes():
    assert he.scheme_names() == ["paillier", "ou"]
    for name in he.scheme_names():
        b = he.backend(name)
        assert b.name == name and b.public_key.scheme == name
        assert b.default_key_bits == 2048 and 0 < b.min_key_bits < 2048
        assert wire._BY_NAME[b.wire_name].cls is b.public_key
    assert he.backend("paillier").min_key_bits == 512 and he.backend("ou").min_key_bits == 768
    # grep: the backends' modules are imported in exactly one place, and register themselves once each
    importers = [p for p in ROOT.rglob("*.py")
                 if "from atoll.crypto import paillier" in p.read_text() or "import atoll.crypto.ou" in p.read_text()]
    assert [p.name for p in importers] == ["he.py"]
    registrations = [p.name for p in ROOT.rglob("*.py") if "registry.register(registry.HEBackend(" in p.read_text()]
    assert sorted(registrations) == ["ou.py", "paillier.py"]


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(CryptoError, match="unknown HE scheme 'rsa'; known schemes: paillier, ou"):
        he.generate_keypair("rsa", 1024)
    import dataclasses

    ou = he.backend("ou")
    assert registry.register(ou) is ou  # the same registration twice: a no-op
    with pytest.raises(CryptoError, match="already registered"):
        registry.register(dataclasses.replace(ou, min_key_bits=1024))
    with pytest.raises(CryptoError, match="scheme = 'rsa'"):
        registry.register(dataclasses.replace(ou, name="rsa"))


def test_keygen_uses_the_backend_bounds():
    with pytest.raises(CryptoError, match="at least 768"):
        he.generate_keypair("ou", 512)


# ----------------------------------------------------------------------------- a third backend

class ToyPublicKey(base.PublicKeyBase):
    """Textbook Paillier: c = (1 + m n) r**n mod n**2."""

    scheme = "toy"

    def __init__(self, n, precision_bits: int = base.DEFAULT_PRECISION_BITS,
                 mul_precision_bits: int = base.DEFAULT_MUL_PRECISION_BITS):
        super().__init__(n, precision_bits, mul_precision_bits)
        self.nsquare = self.n * self.n

    @property
    def cipher_modulus(self):
        return self.nsquare

    @property
    def max_int(self) -> int:
        return int(self.n // 3 - 1)

    def _lift(self, ints: list) -> list:
        return [(1 + (mpz(m) % self.n) * self.n) % self.nsquare for m in ints]

    def _fresh_masks(self, count: int) -> list:
        return [gmpy2.powmod(base.random_below(self.n), self.n, self.nsquare) for _ in range(count)]

    def _fields(self) -> dict:
        return {"n": int(self.n), "precision_bits": self.precision_bits, "mul_precision_bits": self.mul_precision_bits}

    @classmethod
    def _from_fields(cls, d: dict) -> "ToyPublicKey":
        d = cls._check_fields(d, ("n",), 256)
        return cls(d["n"], d["precision_bits"], d["mul_precision_bits"])


class ToyPrivateKey(base.PrivateKeyBase):
    def __init__(self, public_key: ToyPublicKey, p, q):
        self.public_key = public_key
        n = public_key.n
        self.lam = base.lcm(mpz(p) - 1, mpz(q) - 1)
        self.mu = gmpy2.invert((gmpy2.powmod(n + 1, self.lam, n * n) - 1) // n, n)

    @property
    def plain_modulus(self) -> int:
        return int(self.public_key.n)

    def _raw_decrypt(self, cs: list, jobs=1) -> list:
        n, nsq = self.public_key.n, self.public_key.nsquare
        return [(gmpy2.powmod(c, self.lam, nsq) - 1) // n * self.mu % n for c in cs]


def toy_keygen(key_bits: int, precision_bits=None, mul_precision_bits=None):
    key_bits, precision_bits, mul_precision_bits = base.key_settings("toy", key_bits, 256, precision_bits,
                                                                     mul_precision_bits)
    while True:
        p, q = base.random_prime(key_bits // 2), base.random_prime(key_bits // 2)
        if p != q and (p * q).bit_length() == key_bits:
            break
    pk = ToyPublicKey(p * q, precision_bits, mul_precision_bits)
    return pk, ToyPrivateKey(pk, p, q)


@pytest.fixture
def toy():
    b = registry.register(registry.HEBackend(name="toy", public_key=ToyPublicKey, private_key=ToyPrivateKey,
                                             keygen=toy_keygen, wire_name="tests.ToyPublicKey", min_key_bits=256,
                                             default_key_bits=512, summary="textbook Paillier (tests only)"))
    yield b
    registry._unregister("toy")


def test_a_registered_backend_works_everywhere_with_no_other_edit(toy):
    assert he.scheme_names() == ["paillier", "ou", "toy"] and he.backend("toy") is toy
    pk, sk = he.generate_keypair("toy")  # the backend's default size
    assert isinstance(pk, ToyPublicKey) and pk.key_bits == 512
    rng = np.random.default_rng(secrets.randbits(32))
    x, X = rng.normal(size=30), rng.normal(size=(30, 3))
    enc = pk.encrypt(x)
    # the wire: the key by its own name, the ciphertexts through the registry's scheme table
    got_pk, got = wire.loads(wire.dumps((pk, enc)))
    assert got_pk == pk and np.allclose(sk.decrypt(got), x, atol=1e-9)
    # CipherArray algebra
    assert np.allclose(sk.decrypt(enc + enc * 2.0 - 1.0), 3 * x - 1, atol=1e-6)
    assert np.allclose(sk.decrypt(X.T @ enc), X.T @ x, atol=1e-5)
    groups = rng.integers(0, 4, 30)
    assert np.allclose(sk.decrypt(enc.bincount(groups, 4)), np.bincount(groups, x, 4), atol=1e-9)
    # packing and the histogram kernel
    packer = he.Packer(pk, value_bits=20, signed=True)
    M = rng.integers(-1000, 1000, size=(30, 2))
    rows = packer.encrypt_ints(M)
    assert np.array_equal(packer.decrypt_ints(sk, rows, k=2), M)
    codes = rng.integers(0, 5, size=(30, 2))
    (h,) = he.RowHistograms(rows, codes, 5).build([np.arange(30)])
    want = np.zeros((2, 5, 2), dtype=np.int64)
    for f in range(2):
        np.add.at(want[f], codes[:, f], M)
    assert np.array_equal(packer.decrypt_ints(sk, packer.pack(h.ravel(), slots=2), k=packer.n_slots // 2 * 2)
                          .reshape(-1, 2)[:10].reshape(2, 5, 2), want)
    # the worker engine (keys reach the workers by their wire fields)
    xs = np.tile(x, 4)  # enough values to go to the workers
    assert np.allclose(sk.decrypt(pk.encrypt(xs, jobs=2), jobs=2), xs, atol=1e-9)
    # a received ciphertext of an unregistered scheme is refused
    blob = wire.dumps(enc)
    registry._unregister("toy")
    with pytest.raises(wire.WireError, match="unknown HE scheme 'toy'"):
        wire.loads(blob)
