"""Okamoto-Uchiyama encryption behind the same interface as Paillier (CipherArray, packing, wire).

Protocol (key owner = the party that decrypts):

1. Key generation (Okamoto and Uchiyama, "A new public-key cryptosystem as secure
   as factoring", EUROCRYPT 1998, with the speed-up of Coron, Naccache and
   Paillier, "Accelerating Okamoto-Uchiyama public-key cryptosystem",
   Electronics Letters 1999, as in SecretFlow HEU): a secret prime t (224 bits
   for keys up to 2048 bits, 256 above), a prime p = t*u + 1 of ``key_bits // 3``
   bits, a prime q, n = p**2 * q of exactly ``key_bits`` bits. Pick g in Z_n with
   ``g**(p-1) mod p**2 != 1`` and an independent g'; publish
   ``(n, G = g**u mod n, H = g'**(n*u) mod n)``. Private key (p, q, t).
   Modulo p**2, H has order dividing t and G has order p*t.
2. Encryption of m (|m| <= max_int = 2**(|p| - 3) - 1, negatives as ``G**-|m|``):
   ``c = G**m * H**r mod n`` with a short random exponent r of ``r_bits`` = twice
   the security level of the modulus (224 bits up to 2048-bit keys, 256 above):
   the best generic attack on a short exponent (Pollard's kangaroo, van
   Oorschot-Wiener) costs 2**(r_bits/2). (HEU uses 110 bits at 2048.)
   Both powers use precomputed fixed-base tables (for G, G**-1 and H), so an
   encryption costs about ``|m|/w + r_bits/w`` multiplications modulo n (not n**2).
   ``PublicKey.precompute(k)`` moves the ``H**r`` part offline (each factor used once).
3. Decryption: ``c**t mod p**2 = G**(m t)`` (the H part vanishes), so
   ``m = L(c**t mod p**2) / L(G**t mod p**2) mod p`` with ``L(x) = (x - 1) / p``:
   one exponentiation with a 224-bit exponent modulo p**2. A value in the
   forbidden middle band of Z_p is refused.
4. Homomorphic operations are products, inverses and powers modulo n
   (:mod:`atoll.crypto.cipherarray`).

What each party sees:

* Non-key-holders see (n, g, h) and ciphertexts: semantically secure under the
  p-subgroup assumption (and short-exponent discrete logarithms for r).
* **Chosen-ciphertext weakness**: OU is totally breakable by anyone who can get
  *arbitrary* ciphertexts decrypted: decrypting ``g**M`` for some M >= p returns
  ``M mod p``, and ``gcd(M - (M mod p), n)`` reveals p. Therefore (a) the key
  owner never exposes a decryption oracle: protocols decrypt only values whose
  layout they expect, and only reveal masked or aggregated results; (b) every
  decryption is range-checked: plaintexts must lie in ``[0, max_int]`` or
  ``[p - max_int, p)`` with ``max_int = 2**(|p| - 3)``, otherwise a
  :class:`CryptoError` is raised and nothing is returned. The range check is a
  tripwire, not a defence on its own: for a ciphertext crafted from some
  ``M >= p``, ``M mod p`` still lands in the accepted range with probability
  ``2 * max_int / p`` (between 1/4 and 1/2), and if that decrypted value reaches
  the attacker, p is revealed. A cheating party also learns one bit per
  attempt (accepted or refused) if it sees the outcome, and about |p| such bits
  recover p by binary search: a failed decryption must abort the protocol,
  never be reported back and retried. So under OU, a protocol in which the key
  owner returns to a party the decryption of a ciphertext that party supplied
  (e.g. masked gradients sent to an arbiter and returned) is safe only against
  semi-honest parties; where a party may deviate, use Paillier (a Paillier
  decryption oracle does not reveal the factors).
* The key owner sees everything it decrypts, as with Paillier.
"""

from __future__ import annotations

import logging
import secrets
import threading

import gmpy2
from gmpy2 import mpz

from atoll.crypto import base, engine, registry
from atoll.crypto.base import PrivateKeyBase, PublicKeyBase
from atoll.crypto.engine import Jobs
from atoll.errors import CryptoError

log = logging.getLogger(__name__)

__all__ = ["OUPublicKey", "OUPrivateKey", "generate_ou_keypair"]

DEFAULT_WINDOW = 12
MIN_KEY_BITS = 768
G_WINDOW = 12


def _p_bits(key_bits: int) -> int:
    return key_bits // 3


def short_exponent_bits(key_bits: int) -> int:
    """Bits of the random exponent r: twice the security level of the modulus (112 bits up to 2048, else 128)."""
    return 224 if key_bits <= 2048 else 256


class OUPublicKey(PublicKeyBase):
    """Okamoto-Uchiyama public key (n = p^2 q, g, h)."""

    scheme = "ou"

    def __init__(self, n, g, h, precision_bits: int = base.DEFAULT_PRECISION_BITS,
                 mul_precision_bits: int = base.DEFAULT_MUL_PRECISION_BITS, window: int = DEFAULT_WINDOW):
        super().__init__(n, precision_bits, mul_precision_bits, window,
                         short_exponent_bits(int(mpz(n).bit_length())))
        self.g = mpz(g)
        self.h = mpz(h)
        self.p_bits = _p_bits(self.key_bits)
        self._max_int = (1 << (self.p_bits - 3)) - 1
        self._tables: tuple | None = None
        self._lock = threading.Lock()

    @property
    def cipher_modulus(self):
        return self.n

    @property
    def max_int(self) -> int:
        return self._max_int

    def _get_tables(self) -> tuple:
        if self._tables is None:
            with self._lock:
                if self._tables is None:
                    mbits = self._max_int.bit_length()
                    self._tables = (
                        base.shared_table(self.g, self.n, mbits, G_WINDOW, prebuild_bits=48),
                        base.shared_table(gmpy2.invert(self.g, self.n), self.n, mbits, G_WINDOW, prebuild_bits=48),
                        base.shared_table(self.h, self.n, self.r_bits, self.window),
                    )
        return self._tables

    def _lift(self, ints: list) -> list:
        tg, tginv, _ = self._get_tables()
        ints = [int(m) for m in ints]
        if all(m >= 0 for m in ints):
            return tg.pow_list(ints)
        pos = tg.pow_list([m if m >= 0 else 0 for m in ints])
        neg = tginv.pow_list([-m if m < 0 else 0 for m in ints])
        return [a if m >= 0 else b for m, a, b in zip(ints, pos, neg)]

    def _fresh_masks(self, count: int) -> list:
        rb = self.r_bits
        return self._get_tables()[2].pow_list([secrets.randbits(rb) for _ in range(count)])

    def _fields(self) -> dict:
        return {"n": int(self.n), "g": int(self.g), "h": int(self.h), "precision_bits": self.precision_bits,
                "mul_precision_bits": self.mul_precision_bits}

    @classmethod
    def _from_fields(cls, d: dict) -> "OUPublicKey":
        d = cls._check_fields(d, ("n", "g", "h"), MIN_KEY_BITS)
        n, g, h = d["n"], d["g"], d["h"]
        for v in (g, h):
            if not 1 < v < n or gmpy2.gcd(v, n) != 1:
                raise ValueError("g and h must be units modulo n")
        return cls(n, g, h, d["precision_bits"], d["mul_precision_bits"])


class OUPrivateKey(PrivateKeyBase):
    """Okamoto-Uchiyama private key (p, q). Never encodable; decryptions are range-checked."""

    __wire_forbidden__ = True

    def __init__(self, public_key: OUPublicKey, p, q, t):
        p, q, t = mpz(p), mpz(q), mpz(t)
        if p * p * q != public_key.n:
            raise CryptoError("p^2 q does not equal the public modulus n")
        if (p - 1) % t:
            raise CryptoError("t does not divide p - 1")
        self.public_key = public_key
        self.p, self.q, self.t = p, q, t
        self.psquare = p * p
        if gmpy2.powmod(public_key.h % self.psquare, t, self.psquare) != 1:
            raise CryptoError("H does not have order t modulo p^2; regenerate the key")
        gt = gmpy2.powmod(public_key.g % self.psquare, t, self.psquare)
        lg = (gt - 1) // p
        if lg % p == 0:
            raise CryptoError("G does not have order divisible by p modulo p^2; regenerate the key")
        self.lg_inv = gmpy2.invert(lg, p)

    @property
    def plain_modulus(self) -> int:
        return int(self.p)

    def _raw_decrypt(self, cs: list, jobs: Jobs = 1) -> list:
        if not cs:
            return []
        p, p2, li = self.p, self.psquare, self.lg_inv
        u = engine.powmod_list([c % p2 for c in cs], self.t, p2, jobs)
        return [(x - 1) // p * li % p for x in u]


def generate_ou_keypair(key_bits: int = 2048, precision_bits: int | None = None,
                        mul_precision_bits: int | None = None,
                        window: int = DEFAULT_WINDOW) -> tuple[OUPublicKey, OUPrivateKey]:
    """Generate an Okamoto-Uchiyama key pair with n = p^2 q of exactly ``key_bits`` bits."""
    key_bits, precision_bits, mul_precision_bits = base.key_settings(
        "ou", key_bits, MIN_KEY_BITS, precision_bits, mul_precision_bits)
    pb = _p_bits(key_bits)
    qb = key_bits - 2 * pb
    tb = short_exponent_bits(key_bits)
    while True:
        t = base.random_prime(tb, mod4_3=False)
        while True:  # p = t*u + 1 of exactly pb bits
            u = mpz(secrets.randbits(pb - tb)) | (mpz(1) << (pb - tb - 1))
            p = t * u + 1
            if p.bit_length() == pb and gmpy2.is_prime(p, 40):
                break
        q = base.random_prime(qb, mod4_3=False)
        n = p * p * q
        if p != q and n.bit_length() == key_bits:
            break
    p2 = p * p
    while True:
        g0 = base.random_below(n)
        if gmpy2.gcd(g0, n) == 1 and gmpy2.powmod(g0 % p2, p - 1, p2) != 1:
            break
    while True:
        g1 = base.random_below(n)
        if gmpy2.gcd(g1, n) == 1:
            break
    g = gmpy2.powmod(g0, u, n)
    h = gmpy2.powmod(g1, n * u, n)
    pk = OUPublicKey(n, g, h, precision_bits, mul_precision_bits, window)
    return pk, OUPrivateKey(pk, p, q, t)


BACKEND = registry.register(registry.HEBackend(
    name="ou", public_key=OUPublicKey, private_key=OUPrivateKey, keygen=generate_ou_keypair,
    wire_name="atoll.he.OUPublicKey", min_key_bits=MIN_KEY_BITS, default_key_bits=2048,
    summary="Okamoto-Uchiyama (n = p^2 q): faster than Paillier at the same modulus; see the chosen-ciphertext note"))
