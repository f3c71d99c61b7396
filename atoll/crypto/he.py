"""Front door of Atoll's additively homomorphic encryption (Paillier and Okamoto-Uchiyama).

This docstring is the source of truth for the API that protocols code against.

Keys::

    from atoll.crypto import he
    kp = he.generate_keypair(scheme="paillier" | "ou", key_bits=2048, precision_bits=None)
    pk, sk = kp.public_key, kp.private_key     # also: pk, sk = kp
    pk.scheme ("paillier" | "ou"), pk.key_bits, pk.precision_bits (default 40 fractional bits
    of encrypted reals), pk.mul_precision_bits (default 24 fractional bits of non-integral
    plaintext multipliers), pk.max_int (largest safe |plaintext integer|), pk.fingerprint

``pk`` is a registered wire type (``ctx.send(peer, "pk", pk)`` works); ``sk`` has
``__wire_forbidden__`` and can never be encoded.

Encryption / decryption (any shape; ``jobs``: worker count, 1 = in-process, <=0 = all cores)::

    enc = pk.encrypt(x, precision=None, jobs=1)  # floats -> fixed point with `precision` fractional
                                                 # bits (default pk.precision_bits); integer dtypes exact
    enc = pk.encrypt_int(ints, jobs=1)           # Python/numpy ints of any size (exponent 0)
    pk.precompute(count, jobs=1)                 # offline randomness pool; each factor used once
    pk.warm_up(jobs)                             # build fixed-base tables now (here and in `jobs` workers)
    x   = sk.decrypt(enc, jobs=1)                # float64 ndarray, same shape, divided by 2**enc.exp
    m   = sk.decrypt_int(enc, jobs=1)            # object ndarray of signed Python ints (raw fixed point)

Paillier only: ``pk.encrypt_int_textbook(ints)`` (r**n randomness, for cross-checks), and
``atoll.crypto.paillier.paillier_keypair_from_primes(p, q)`` to import a key made elsewhere (e.g.
python-paillier's ``private_key.p``, ``.q``): ciphertexts then decrypt in both libraries (tested).

``CipherArray`` (numpy-like; ``enc.shape``, ``len(enc)``, ``enc.exp``, ``enc.bound``)::

    enc + enc, enc + plain, plain + enc, enc - ..., -enc        # scales aligned automatically
    enc * plain, plain * enc, enc.mul(plain, precision=None)     # elementwise, numpy broadcasting
    enc / scalar                                                 # = enc * (1 / scalar)
    enc * enc  -> TypeError (only additively homomorphic)
    enc.sum(axis=None | int)
    enc.bincount(groups, n_groups)  # out[g] = sum of rows i with groups[i] == g (one mulmod per element):
                                    # histogram kernel, e.g. SecureBoost bins; keeps packing
    enc[idx]   # ints, slices, boolean masks, integer arrays; enc.reshape(...), enc.ravel(), enc.T
    X.T @ enc  # plaintext (n, d).T times cipher (n,) or (n, k) -> (d,) / (d, k): bucket multi-exponentiation
    enc.matvec_t(X, jobs=1, precision=None)                      # same, with explicit parallelism
    enc @ B    # cipher (n,) or (m, n) times plaintext (n,) / (n, d)
    enc.rerandomize(jobs=1)     # fresh randomness (do it before sending results of `enc * 0` etc.)
    enc.upscale(exp)            # more fractional bits
    he.concatenate([a, b], axis=0), he.stack([a, b], axis=0)

Integer-valued plaintext multipliers (int dtypes, or floats that are all whole, e.g. 0/1
masks) are used exactly with no added fractional bits. Every array tracks ``bound`` (max
|plaintext integer|); an operation whose result could leave the safe range raises
:class:`atoll.errors.CryptoError`, and decryption refuses values outside the safe range.
A ``CipherArray`` is a registered wire type (its public key travels with it).

Packing (several small non-negative ints per plaintext, headroom checked)::

    packer = he.Packer(pk, value_bits=40, max_terms=10_000, n_slots=None)  # n_slots: max that fits
    packer.slot_bits, packer.n_slots
    enc = packer.encrypt_ints(M)               # M int array (rows, k<=n_slots) -> CipherArray (rows,)
    ... enc + enc, enc.sum(axis=0), enc[mask], X01.T @ enc (non-negative integer X) keep packing ...
    vals = packer.decrypt_ints(sk, enc, k=None)  # -> int64 array enc.shape + (k,)
    packer.pack_ints(M) / packer.unpack_ints(ints, k)   # plaintext helpers
    # homomorphic packing of existing signed fixed-point ciphertexts (e.g. masked gradients
    # before the key holder decrypts them): |values| < 2**(value_bits-1) checked by bound
    packed = packer.pack(enc_1d)                # ceil(len / n_slots) ciphertexts, exp kept
    x = packer.decrypt_packed(sk, packed, count)  # float64 (count,); packed sums of several
                                                  # pack() results (<= max_terms) decrypt too

Parallelism: ``jobs > 1`` forks a cached pool of worker processes on Linux (set
``ATOLL_HE_START_METHOD=spawn`` to spawn instead); decryption ships only the modular
exponentiations (secret exponent and modulus cross a local pipe to this party's own
workers). ``jobs <= 0`` means all cores. Party processes of ``launch(mode="processes")`` may start
workers; inside some other daemonic process no children may be started, and work then
runs in-process with a one-time warning. Workers stop when the process that owns them ends
(cleanly, or killed), so they never linger as orphans.

Schemes: ``"paillier"`` (:mod:`atoll.crypto.paillier`: n = pq, DJN short-exponent fast
encryption, CRT decryption) and ``"ou"`` (:mod:`atoll.crypto.ou`: Okamoto-Uchiyama,
n = p**2 q, plaintexts mod the secret p, faster at the same modulus size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from atoll.crypto.base import SCHEMES, PrivateKeyBase, PublicKeyBase
from atoll.crypto.cipherarray import CipherArray, concatenate, stack
from atoll.crypto.packing import Packer
from atoll.crypto.ou import OUPrivateKey, OUPublicKey, generate_ou_keypair
from atoll.crypto.paillier import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair
from atoll.errors import CryptoError

__all__ = [
    "CipherArray",
    "KeyPair",
    "Packer",
    "PrivateKeyBase",
    "PublicKeyBase",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "OUPublicKey",
    "OUPrivateKey",
    "SCHEMES",
    "concatenate",
    "generate_keypair",
    "stack",
]


@dataclass(frozen=True)
class KeyPair:
    """A public key and its private key. Unpacks as ``pk, sk = keypair``."""

    public_key: PublicKeyBase
    private_key: PrivateKeyBase

    __wire_forbidden__ = True

    def __iter__(self) -> Iterator[Any]:
        return iter((self.public_key, self.private_key))


def generate_keypair(scheme: str = "paillier", key_bits: int = 2048, precision_bits: int | None = None,
                     mul_precision_bits: int | None = None) -> KeyPair:
    """Generate a key pair for ``scheme`` ("paillier" or "ou") with a ``key_bits``-bit modulus."""
    if scheme == "paillier":
        pk, sk = generate_paillier_keypair(key_bits, precision_bits, mul_precision_bits)
    elif scheme == "ou":
        pk, sk = generate_ou_keypair(key_bits, precision_bits, mul_precision_bits)
    else:
        raise CryptoError(f"unknown HE scheme {scheme!r}: use 'paillier' or 'ou'")
    return KeyPair(pk, sk)
