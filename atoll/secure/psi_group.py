"""The group of ECDH-PSI: X25519 (RFC 7748) as a commutative blinding function.

PSI needs a map ``x -> k * H(x)`` that commutes (``a * (b * P) == b * (a * P)``)
and hides ``x`` under the decisional Diffie-Hellman assumption. X25519 is
exactly that on 32-byte Montgomery u-coordinates: ``X25519(k, u)`` is the
u-coordinate of ``clamp(k) * P`` where ``P`` has coordinate ``u`` on
Curve25519 or on its quadratic twist, both of which have a prime-order
subgroup of about 2^252 (twist security, Bernstein 2006); clamping clears the
cofactors (8 and 4). Hashing an id to 32 bytes therefore *is* hashing it to the
group (no try-and-increment), as in SecretFlow's Curve25519 ECDH-PSI.

No curve arithmetic lives here. Two interchangeable backends compute the very
same function, byte for byte (checked by a known-answer test when loaded):

* ``ipp``: Intel Cryptography Primitives Library's multi-buffer ``crypto_mb``
  (``mbx_x25519_mb8``: eight X25519 at once with AVX-512 IFMA), shipped by the
  PyPI wheels ``ipp-crypto`` and ``intel-cmplr-lib-rt`` (extra ``psi-fast``) and
  bound here with ``ctypes``. Measured on this project's 2-core Xeon (Sapphire
  Rapids): about 168,000 X25519 per second per core, and ``ctypes`` releases
  the GIL, so threads scale over cores.
* ``cryptography``: ``X25519PrivateKey.exchange`` (OpenSSL), about 22,000 per
  second per core on the same machine. The portable fallback.

``ATOLL_PSI_BACKEND=ipp|cryptography`` forces one; by default the fastest that
loads and passes its self-test is used.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import site
import sys
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from atoll.errors import ConfigError, CryptoError

log = logging.getLogger(__name__)

POINT_BYTES = 32
SCALAR_BYTES = 32

__all__ = ["POINT_BYTES", "SCALAR_BYTES", "Backend", "CryptographyBackend", "IppBackend",
           "get_backend", "hash_to_points", "new_scalar"]


def new_scalar() -> bytes:
    """A fresh secret X25519 scalar from the OS's entropy (clamped by X25519 itself)."""
    return os.urandom(SCALAR_BYTES)


def hash_to_points(items: Sequence[bytes], salt: bytes) -> np.ndarray:
    """``BLAKE2b-256(salt-keyed, item)`` for each item: an ``(n, 32)`` uint8 array of u-coordinates.

    ``salt`` (at most 64 bytes) keys the hash, so each PSI session hashes into
    fresh points and nothing can be precomputed across sessions.
    """
    out = np.empty((len(items), POINT_BYTES), dtype=np.uint8)
    if len(items):
        out[:] = np.frombuffer(b"".join(hashlib.blake2b(x, digest_size=POINT_BYTES, key=salt).digest()
                                        for x in items), dtype=np.uint8).reshape(-1, POINT_BYTES)
    return out


def _check_points(points: np.ndarray) -> np.ndarray:
    if not isinstance(points, np.ndarray) or points.dtype != np.uint8 or points.ndim != 2 \
            or points.shape[1] != POINT_BYTES:
        raise CryptoError(f"expected an (n, {POINT_BYTES}) uint8 array of X25519 points, got "
                          f"{getattr(points, 'dtype', type(points))} {getattr(points, 'shape', '')}")
    return np.ascontiguousarray(points)


def _refuse_zero(out: np.ndarray) -> np.ndarray:
    """X25519 yields all zeros only for a small-order input point: a hash never does, a cheat can."""
    if len(out) and not out.any(axis=1).all():
        raise CryptoError("a point of small order was received (X25519 gave all zeros): the peer "
                          "sent values that are not blinded hashes; stop and check the peer")
    return out


class Backend(Protocol):
    name: str

    def mul(self, scalar: bytes, points: np.ndarray) -> np.ndarray:
        """``X25519(scalar, u)`` for each row of ``points``; same shape and dtype."""


class CryptographyBackend:
    """X25519 through ``cryptography`` (OpenSSL): portable, one call per point."""

    name = "cryptography"

    def mul(self, scalar: bytes, points: np.ndarray) -> np.ndarray:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

        points = _check_points(points)
        key = X25519PrivateKey.from_private_bytes(scalar)
        pub = X25519PublicKey.from_public_bytes
        raw = points.tobytes()
        out = bytearray(len(raw))
        for i in range(0, len(raw), POINT_BYTES):
            try:
                out[i:i + POINT_BYTES] = key.exchange(pub(raw[i:i + POINT_BYTES]))
            except ValueError:  # OpenSSL refuses an all-zero shared secret
                out[i:i + POINT_BYTES] = bytes(POINT_BYTES)
        return _refuse_zero(np.frombuffer(bytes(out), dtype=np.uint8).reshape(points.shape))


_P8 = ctypes.c_void_p * 8
_RUNTIME_DEPS = ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so")


def _lib_dirs() -> list[Path]:
    """Where pip puts the wheels' ``data/lib`` files: the environment's and the user's ``lib``."""
    dirs = [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    try:
        dirs.append(Path(site.getuserbase()) / "lib")
    except Exception:  # noqa: BLE001 - site may be stripped down
        pass
    if os.environ.get("ATOLL_CRYPTO_MB_DIR"):
        dirs.insert(0, Path(os.environ["ATOLL_CRYPTO_MB_DIR"]))
    return [d for d in dict.fromkeys(dirs) if (d / "libcrypto_mb.so").is_file()]


class IppBackend:
    """Eight X25519 per call through Intel's multi-buffer ``crypto_mb`` (AVX-512 IFMA)."""

    name = "ipp"

    def __init__(self) -> None:
        dirs = _lib_dirs()
        if not dirs:
            raise ConfigError("libcrypto_mb.so not found: install the fast PSI backend with "
                              "`pip install 'atoll[psi-fast]'` (x86-64 Linux)")
        d = dirs[0]
        try:
            for dep in _RUNTIME_DEPS:  # Intel compiler runtime that crypto_mb links against
                if (d / dep).is_file():
                    ctypes.CDLL(str(d / dep), mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(str(d / "libcrypto_mb.so"))
        except OSError as e:
            raise ConfigError(f"cannot load {d / 'libcrypto_mb.so'}: {e}; install the Intel runtime "
                              "with `pip install 'atoll[psi-fast]'`") from None
        lib.mbx_is_crypto_mb_applicable.restype = ctypes.c_int
        lib.mbx_is_crypto_mb_applicable.argtypes = [ctypes.c_uint64]
        if not lib.mbx_is_crypto_mb_applicable(0):
            raise ConfigError("this CPU lacks the AVX-512 IFMA instructions crypto_mb needs")
        fn = lib.mbx_x25519_mb8
        fn.restype = ctypes.c_uint64
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._fn = fn
        self.path = str(d / "libcrypto_mb.so")

    def mul(self, scalar: bytes, points: np.ndarray) -> np.ndarray:
        points = _check_points(points)
        n = len(points)
        if len(scalar) != SCALAR_BYTES:
            raise CryptoError(f"an X25519 scalar has {SCALAR_BYTES} bytes, not {len(scalar)}")
        if n == 0:
            return points.copy()
        m = -(-n // 8) * 8  # whole groups of eight; padding lanes compute a throwaway value
        src = np.zeros((m, POINT_BYTES), dtype=np.uint8)
        src[:n] = points
        src[n:] = 9  # a valid point for the padding lanes
        dst = np.empty_like(src)
        key = ctypes.create_string_buffer(scalar, SCALAR_BYTES)
        keys = _P8(*([ctypes.addressof(key)] * 8))
        stride = np.arange(m, dtype=np.uint64) * POINT_BYTES
        src_ptrs = src.ctypes.data + stride  # one pointer per lane, eight per call
        dst_ptrs = dst.ctypes.data + stride
        s0, d0, k0 = src_ptrs.ctypes.data, dst_ptrs.ctypes.data, ctypes.addressof(keys)
        fn = self._fn
        for off in range(0, m * 8, 64):  # 8 pointers of 8 bytes per call
            status = fn(d0 + off, k0, s0 + off)
            if status:
                raise CryptoError(f"crypto_mb refused a value (status {status:#x}): a point of small "
                                  "order was received; the peer sent values that are not blinded "
                                  "hashes, stop and check the peer")
        return _refuse_zero(dst[:n].copy())


_BACKENDS = {"ipp": IppBackend, "cryptography": CryptographyBackend}
_cache: dict[str, Backend] = {}
_lock = threading.Lock()


def _self_test(backend: Backend) -> None:
    """Known-answer test against RFC 7748 section 5.2 and cross-check with ``cryptography``."""
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    want = bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    pts = np.frombuffer(u * 3, dtype=np.uint8).reshape(3, POINT_BYTES)
    got = backend.mul(k, pts)
    if any(bytes(r) != want for r in got):
        raise CryptoError(f"X25519 backend {backend.name!r} failed the RFC 7748 known-answer test")
    if backend.name != "cryptography":
        rnd = hash_to_points([bytes([i]) for i in range(11)], b"self-test")
        scalar = new_scalar()
        if not np.array_equal(backend.mul(scalar, rnd), CryptographyBackend().mul(scalar, rnd)):
            raise CryptoError(f"X25519 backend {backend.name!r} disagrees with cryptography")


def _load(name: str) -> Backend:
    if name not in _cache:
        if name not in _BACKENDS:
            raise ConfigError(f"unknown X25519 backend {name!r}; use one of {sorted(_BACKENDS)}")
        backend = _BACKENDS[name]()
        _self_test(backend)
        _cache[name] = backend
        log.debug("X25519 backend %s loaded", name)
    return _cache[name]


def get_backend(name: str | None = None) -> Backend:
    """The X25519 backend ``name`` (``"ipp"``, ``"cryptography"``), or the fastest that works."""
    name = name or os.environ.get("ATOLL_PSI_BACKEND") or "auto"
    with _lock:
        if name != "auto":
            return _load(name)
        if "auto" not in _cache:
            for cand in ("ipp", "cryptography"):
                try:
                    _cache["auto"] = _load(cand)
                    break
                except (ConfigError, CryptoError, OSError, AttributeError) as e:
                    log.info("X25519 backend %s unavailable: %s", cand, e)
            else:
                raise ConfigError("no X25519 backend works")
        return _cache["auto"]
