"""Encrypted data files for enclaves, and key wrapping to X25519 keys.

**Key wrapping** (:func:`wrap_to` / :func:`unwrap`): an ephemeral X25519 key agreement
with the recipient's public key, HKDF-SHA256 (salt = both public keys, info = a context
label), AES-256-GCM with the context as associated data (HPKE base mode's shape).

**Data file** (``atoll tee encrypt``'s output), streamed in chunks::

    MAGIC | u32 n | header (canonical JSON, n bytes) | (u32 n | AES-GCM chunk)*

The header is public and holds no value of the data: owner, dataset, key id, row and
chunk counts, column names, the enclave it is encrypted to (backend, measurement, its
measurement-bound X25519 key), the ephemeral key and the wrapped data key. Each chunk is
``wire.dumps({"ids", "x", "y"})`` of up to ``chunk_rows`` rows, encrypted with the fresh
256-bit data key ``DK``; its nonce is its index, its associated data the header digest,
its index and a last-chunk flag (no reordering, dropping or truncation goes unnoticed).

``DK`` is wrapped under ``KEK = HKDF(X25519(eph, enclave_wrap_key) || release_secret)``:
two locks. The first opens only inside an enclave of that measurement on that platform
(its wrap key is derived from the sealing key); the second, ``release_secret``, stays with
the data owner's key-release service, which hands it out — wrapped to a fresh attested key
of the enclave — only for a run its signed authorisation allows (:mod:`atoll.tee.keyrelease`).
What each party sees: the storage and the host running the enclave see the public header
and ciphertext; neither they nor the key-release service alone can open the file. Only an
enclave of the named measurement, given the released secret, reads the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from typing import IO, Any, Iterator

import numpy as np

from atoll import wire
from atoll.errors import CryptoError, DataError
from atoll.tee.base import SIMULATED_MARK, TeeError

MAGIC = b"ATOLLTEE-DATA/1\n"
WRAP_MAGIC = b"ATWRAP1"
MAX_HEADER = 1 << 20


# ------------------------------------------------------------------------- key wrapping
def x25519_keypair() -> tuple[bytes, bytes]:
    """(raw private, raw public) of a fresh X25519 key."""
    sk = os.urandom(32)
    return sk, x25519_public(sk)


def x25519_public(private: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _agree(private: bytes, public: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as e:
        raise CryptoError(f"invalid X25519 key: {e}") from None


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt=salt, info=info).derive(ikm)


def wrap_to(public_key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` to the holder of ``public_key``'s private key, bound to ``context``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    eph_sk, eph_pk = x25519_keypair()
    key = _hkdf(_agree(eph_sk, public_key), eph_pk + public_key, b"atoll-tee/wrap/1" + context)
    nonce = os.urandom(12)
    return WRAP_MAGIC + eph_pk + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unwrap(private_key: bytes, blob: bytes, context: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < 7 + 32 + 12 + 16 or blob[:7] != WRAP_MAGIC:
        raise CryptoError("not a wrapped key")
    eph_pk, nonce, ct = blob[7:39], blob[39:51], blob[51:]
    key = _hkdf(_agree(private_key, eph_pk), eph_pk + x25519_public(private_key), b"atoll-tee/wrap/1" + context)
    try:
        return AESGCM(key).decrypt(nonce, ct, context)
    except InvalidTag:
        raise CryptoError("wrapped key does not open with this key and context") from None


# ------------------------------------------------------------------------- data files
@dataclass(frozen=True)
class EnclaveTarget:
    """The attested enclave a file is encrypted to (from :func:`atoll.tee.datalab.attest_enclave`)."""

    backend: str
    measurement: str
    wrap_public: bytes
    simulated: bool


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _chunk_aad(header_digest: bytes, index: int, last: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, int(last))


def _kek(shared: bytes, release_secret: bytes, core_digest: bytes) -> bytes:
    return _hkdf(shared + release_secret, core_digest, b"atoll-tee/data-key/1")


def encrypt_table(out: IO[bytes], ids: Any, x: np.ndarray, y: np.ndarray | None, columns: list[str],
                  label: str | None, owner: str, dataset: str, target: EnclaveTarget,
                  chunk_rows: int = 4096) -> tuple[dict[str, Any], bytes]:
    """Write one party's rows encrypted to ``target``; return (header, release secret).

    ``ids``: int64 array or sequence of strings; ``x``: float matrix (rows x columns);
    ``y``: the label column or None. The release secret goes to the owner's key-release
    service (never into the file); the data key is forgotten when this returns.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    x = np.ascontiguousarray(x, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != len(columns):
        raise DataError(f"x has shape {x.shape}, the columns name {len(columns)} features")
    if len(ids) != n or (y is not None and len(y) != n):
        raise DataError("ids, x and y must have the same number of rows")
    int_ids = np.asarray(ids).dtype.kind in "iu"
    ids_arr = np.asarray(ids, dtype=np.int64) if int_ids else [str(i) for i in ids]
    if chunk_rows < 1:
        raise DataError("chunk_rows must be >= 1")
    dk, release_secret = os.urandom(32), os.urandom(32)
    eph_sk, eph_pk = x25519_keypair()
    n_chunks = max(1, -(-n // chunk_rows))
    plains = []  # sizes first: the header states the largest chunk (readers bound their buffers by it)
    core = {"format": "atoll-tee-data/1", "owner": owner, "dataset": dataset, "key_id": os.urandom(16).hex(),
            "created": time.time(), "n_rows": int(n), "n_chunks": n_chunks, "chunk_rows": int(chunk_rows),
            "columns": list(map(str, columns)), "label": label, "id_type": "int64" if int_ids else "str",
            "enclave": {"backend": target.backend, "measurement": target.measurement,
                        "wrap_public": target.wrap_public.hex()},
            "eph_public": eph_pk.hex()}
    if target.simulated:
        core["mark"] = SIMULATED_MARK
    max_plain = 0
    for i in range(n_chunks):
        sl = slice(i * chunk_rows, min(n, (i + 1) * chunk_rows))
        part = {"ids": ids_arr[sl], "x": x[sl], "y": None if y is None else np.asarray(y[sl], np.float64)}
        plains.append(part)
        max_plain = max(max_plain, len(wire.dumps(part)))
    core["max_chunk_bytes"] = max_plain + 16
    core_digest = hashlib.sha256(_canon(core)).digest()
    kek = _kek(_agree(eph_sk, target.wrap_public), release_secret, core_digest)
    wk_nonce = os.urandom(12)
    header = dict(core, wrapped_key=(wk_nonce + AESGCM(kek).encrypt(wk_nonce, dk, core_digest)).hex())
    hb = _canon(header)
    digest = hashlib.sha256(hb).digest()
    out.write(MAGIC + struct.pack(">I", len(hb)) + hb)
    aes = AESGCM(dk)
    for i, part in enumerate(plains):
        ct = aes.encrypt(struct.pack(">4xQ", i), wire.dumps(part), _chunk_aad(digest, i, i == n_chunks - 1))
        out.write(struct.pack(">I", len(ct)) + ct)
    return header, release_secret


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = stream.read(n - len(buf))
        if not part:
            raise DataError("the encrypted data file is truncated")
        buf += part
    return bytes(buf)


def read_header(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """(header, header digest) from the start of a data file."""
    if _read_exact(stream, len(MAGIC)) != MAGIC:
        raise DataError("not an Atoll encrypted data file (wrong magic)")
    (n,) = struct.unpack(">I", _read_exact(stream, 4))
    if n > MAX_HEADER:
        raise DataError(f"data file header of {n} bytes is too large")
    hb = _read_exact(stream, n)
    try:
        header = json.loads(hb)
    except ValueError:
        raise DataError("data file header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != "atoll-tee-data/1" or _canon(header) != hb:
        raise DataError("data file header is not a canonical atoll-tee-data/1 header")
    return header, hashlib.sha256(hb).digest()


def open_data_key(header: dict[str, Any], wrap_private: bytes, release_secret: bytes) -> bytes:
    """The data key, from the enclave's measurement-bound key and the owner's released secret."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    core = {k: v for k, v in header.items() if k != "wrapped_key"}
    core_digest = hashlib.sha256(_canon(core)).digest()
    kek = _kek(_agree(wrap_private, bytes.fromhex(header["eph_public"])), release_secret, core_digest)
    blob = bytes.fromhex(header["wrapped_key"])
    try:
        return AESGCM(kek).decrypt(blob[:12], blob[12:], core_digest)
    except InvalidTag:
        raise TeeError("the data key does not open: this enclave is not the one the file was encrypted to, "
                       "or the released secret is not the owner's") from None


def read_chunks(stream: IO[bytes], header: dict[str, Any], digest: bytes, dk: bytes,
                max_chunk_bytes: int) -> Iterator[dict[str, Any]]:
    """Decrypt the chunks one at a time (at most ``max_chunk_bytes`` buffered)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    limit = int(header["max_chunk_bytes"])
    if limit > max_chunk_bytes:
        raise DataError(f"the file's chunks are up to {limit} bytes, more than this reader's "
                        f"{max_chunk_bytes}-byte buffer; re-encrypt with smaller chunk_rows or raise the cap")
    aes = AESGCM(dk)
    n_chunks, rows = int(header["n_chunks"]), 0
    d = len(header["columns"])
    for i in range(n_chunks):
        (n,) = struct.unpack(">I", _read_exact(stream, 4))
        if n > limit:
            raise DataError(f"chunk {i} is {n} bytes, the header promised at most {limit}")
        try:
            plain = aes.decrypt(struct.pack(">4xQ", i), _read_exact(stream, n),
                                _chunk_aad(digest, i, i == n_chunks - 1))
        except InvalidTag:
            raise DataError(f"chunk {i} of the encrypted data does not authenticate: altered, reordered "
                            "or from another file") from None
        part = wire.loads(plain, max_bytes=limit)
        x = part.get("x") if isinstance(part, dict) else None
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != d or len(part["ids"]) != x.shape[0]:
            raise DataError(f"chunk {i} does not hold {d} feature columns")
        rows += x.shape[0]
        yield part
    if rows != int(header["n_rows"]) or stream.read(1):
        raise DataError("the encrypted data holds other rows than its header states")
