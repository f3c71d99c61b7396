"""Front door of Atoll's additively homomorphic encryption (Paillier and Okamoto-Uchiyama).

This docstring is the source of truth for the API that protocols code against.

Keys::

    from atoll.crypto import he
    kp = he.generate_keypair(scheme="paillier" | "ou", key_bits=None, precision_bits=None)  # key_bits:
                                                 # the backend's default (2048; 3072 offered)
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

Packing (several small ints per plaintext, headroom checked; ``signed=True``: signed slots, decoded centred)::

    packer = he.Packer(pk, value_bits=40, max_terms=10_000, n_slots=None, signed=False)  # n_slots: max that fits
    packer.slot_bits, packer.n_slots
    enc = packer.encrypt_ints(M, jobs=1)       # M int array (rows, k<=n_slots) -> CipherArray (rows,)
    ... enc + enc, enc.sum(axis=0), enc[mask], X01.T @ enc (non-negative integer X) keep packing ...
    vals = packer.decrypt_ints(sk, enc, k=None)  # -> int64 array enc.shape + (k,)
    packer.pack_ints(M) / packer.unpack_ints(ints, k)   # plaintext helpers
    # homomorphic packing (compression) along the last axis, Horner's rule, spread over the engine:
    packed = packer.pack(enc_1d)                # signed fixed-point values: ceil(len / n_slots) ciphertexts, exp kept
    x = packer.decrypt_packed(sk, packed, count)  # float64 (count,); sums of pack() results decrypt too
    packed = packer.pack(hists, slots=2, jobs=1)  # ciphertexts packed by this Packer with 2 slots each

Histograms (SecureBoost's kernel: sums of encrypted rows per (feature, bin), rows resident on the workers)::

    with he.RowHistograms(enc_rows, codes, n_bins, jobs=1) as rh:   # enc_rows (m,), codes (m, d) ints
        hists = rh.build([rows_a, rows_b])   # [(d, n_bins) CipherArray]: out[f, b] = sum of enc_rows[i],
                                             # i in rows_a with codes[i, f] == b; identical for any jobs

Parallelism: every ``jobs=`` takes a worker count (1 = in-process, <= 0 = all cores) or a
:class:`atoll.crypto.engine.WorkerEngine`; :mod:`atoll.crypto.engine` is THE worker engine of every
algorithm (local processes, forked on Linux; ``ATOLL_HE_START_METHOD=spawn`` to spawn; a Ray engine
later). Decryption ships only the modular exponentiations (secret exponent and modulus cross a local
pipe to this party's own workers). Party processes of ``launch(mode="processes")`` may start workers;
inside some other daemonic process no children may be started, and work then runs in-process with a
one-time warning. Workers stop when the process that owns them ends (cleanly, or killed), so they never
linger as orphans.

Schemes come from one registry (:mod:`atoll.crypto.registry`)::

    he.scheme_names()        # ["paillier", "ou"]: the registered backends
    he.backend("ou")         # HEBackend(name, public_key, private_key, keygen, wire_name, min_key_bits,
                             #           default_key_bits, summary)

``"paillier"`` (:mod:`atoll.crypto.paillier`: n = pq, DJN short-exponent fast encryption, CRT decryption)
and ``"ou"`` (:mod:`atoll.crypto.ou`: Okamoto-Uchiyama, n = p**2 q, plaintexts mod the secret p, faster at
the same modulus size). A new backend is its own module, ending with ``registry.register(HEBackend(...))``,
plus its import line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from atoll.crypto import registry
from atoll.crypto.base import PrivateKeyBase, PublicKeyBase
from atoll.crypto.cipherarray import CipherArray, concatenate, stack
from atoll.crypto.histogram import RowHistograms
from atoll.crypto.packing import Packer
from atoll.crypto.registry import HEBackend

# ---- the HE backends: each module registers itself with atoll.crypto.registry; one line per backend
from atoll.crypto import paillier  # noqa: E402,F401  (registration order = scheme_names() order)
from atoll.crypto import ou  # noqa: E402,F401
# ----

from atoll.crypto.ou import OUPrivateKey, OUPublicKey  # noqa: E402
from atoll.crypto.paillier import PaillierPrivateKey, PaillierPublicKey  # noqa: E402

__all__ = [
    "CipherArray",
    "HEBackend",
    "KeyPair",
    "Packer",
    "PrivateKeyBase",
    "PublicKeyBase",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "OUPublicKey",
    "OUPrivateKey",
    "RowHistograms",
    "backend",
    "check_peer_key",
    "concatenate",
    "generate_keypair",
    "scheme_names",
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


def scheme_names() -> list[str]:
    """Names of the registered HE schemes (the values a ``scheme`` parameter accepts)."""
    return registry.names()


def backend(name: str) -> HEBackend:
    """The registered backend ``name`` (key generation, key classes, wire name, key sizes)."""
    return registry.get(name)


def generate_keypair(scheme: str = "paillier", key_bits: int | None = None, precision_bits: int | None = None,
                     mul_precision_bits: int | None = None) -> KeyPair:
    """Generate a key pair for ``scheme`` (one of :func:`scheme_names`) with a ``key_bits``-bit modulus
    (default: the backend's, 2048)."""
    b = registry.get(scheme)
    pk, sk = b.keygen(b.default_key_bits if key_bits is None else int(key_bits), precision_bits, mul_precision_bits)
    return KeyPair(pk, sk)


def check_peer_key(pk: Any, scheme: str, min_bits: int, precision_bits: int | None = None,
                   who: str = "the peer") -> PublicKeyBase:
    """A public key a peer announced, held to what THIS party was configured for: the scheme,
    at least ``min_bits`` bits (its own ``key_bits``) and the fixed-point precision it expects
    (``precision_bits``, default the scheme's). Raise :class:`CryptoError` naming both values —
    a party never encrypts its data under a key weaker than its own configuration. (The codec
    already refused moduli that are even, prime, squares or with small factors.)"""
    from atoll.crypto.base import DEFAULT_PRECISION_BITS
    from atoll.errors import CryptoError

    if not isinstance(pk, PublicKeyBase):
        raise CryptoError(f"{who} sent a {type(pk).__name__} where a {scheme} public key was expected")
    if pk.scheme != scheme:
        raise CryptoError(f"{who} sent a {pk.scheme} public key; this party is configured for scheme {scheme!r}")
    if pk.key_bits < int(min_bits):
        raise CryptoError(f"{who}'s {scheme} public key has {pk.key_bits} bits; this party is configured for "
                          f"key_bits={int(min_bits)} and encrypts under nothing weaker")
    want = DEFAULT_PRECISION_BITS if precision_bits is None else int(precision_bits)
    if pk.precision_bits != want:
        raise CryptoError(f"{who}'s {scheme} public key encodes {pk.precision_bits} fractional bits; this "
                          f"party is configured for precision_bits={want}")
    return pk
