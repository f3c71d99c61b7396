"""Encrypted data files: round trip, both locks needed, tampering refused, no raw value on disk."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from atoll import datasets, wire
from atoll.errors import CryptoError, DataError
from atoll.tee.base import SIMULATED_MARK, TeeError
from atoll.tee.envelope import (EnclaveTarget, encrypt_table, open_data_key, read_chunks, read_header, unwrap,
                                wrap_to, x25519_keypair, x25519_public)


def windows(blob: bytes, width: int = 8) -> set[bytes]:
    return {blob[i:i + width] for i in range(len(blob) - width + 1)}


@pytest.fixture
def breast():
    g = datasets.load("breast", "hetero", "guest")
    y = g.pop("y").to_numpy(np.float64)
    return g.index.to_numpy(np.int64), g.to_numpy(np.float64), y, list(g.columns)


@pytest.fixture
def target():
    sk, pk = x25519_keypair()
    return sk, EnclaveTarget("simulated", "ab" * 32, pk, True)


def encrypted(breast, target, chunk_rows=100):
    ids, x, y, cols = breast
    buf = io.BytesIO()
    header, secret = encrypt_table(buf, ids, x, y, cols, "y", "bank", "breast", target[1], chunk_rows)
    return buf.getvalue(), header, secret


def decrypt(blob, wrap_sk, secret, limit=1 << 20):
    f = io.BytesIO(blob)
    header, digest = read_header(f)
    dk = open_data_key(header, wrap_sk, secret)
    return list(read_chunks(f, header, digest, dk, limit))


def test_round_trip_in_chunks(breast, target):
    blob, header, secret = encrypted(breast, target)
    parts = decrypt(blob, target[0], secret)
    assert len(parts) == header["n_chunks"] == 6
    ids, x, y, _ = breast
    assert np.array_equal(np.concatenate([p["ids"] for p in parts]), ids)
    assert np.array_equal(np.vstack([p["x"] for p in parts]), x)
    assert np.array_equal(np.concatenate([p["y"] for p in parts]), y)
    assert header["mark"] == SIMULATED_MARK and blob.count(SIMULATED_MARK.encode()) == 1


def test_no_raw_value_on_disk(breast, target):
    """Disk audit: no feature value (float64 or float32 bytes, or its CSV text) and no id in the file;
    the positive control finds them all in the plaintext of the same chunks."""
    blob, header, secret = encrypted(breast, target)
    ids, x, y, _ = breast
    seen8 = windows(blob, 8)
    values = np.unique(x)
    assert not any(v.tobytes() in seen8 for v in values)
    x32 = x.astype(np.float32)  # two neighbouring features as float32 (a 4-byte window alone matches by chance)
    assert not any(x32[i, j:j + 2].tobytes() in seen8 for i in range(len(x32)) for j in range(x32.shape[1] - 1))
    assert not any(int(i).to_bytes(8, "little") in seen8 for i in ids)
    text = blob.decode("latin-1")
    assert not any(f"{v:.6f}" in text for v in values[:500])
    plain = b"".join(wire.dumps(p) for p in decrypt(blob, target[0], secret))
    control = windows(plain, 8)
    assert all(v.tobytes() in control for v in values)


def test_both_locks_are_needed(breast, target):
    blob, header, secret = encrypted(breast, target)
    f = io.BytesIO(blob)
    h, _ = read_header(f)
    with pytest.raises(TeeError, match="does not open"):
        open_data_key(h, target[0], os.urandom(32))                 # without the owner's release secret
    with pytest.raises(TeeError, match="does not open"):
        open_data_key(h, os.urandom(32), secret)                    # another enclave's wrap key
    bad = dict(h, columns=h["columns"][::-1])                        # a header rewritten by storage
    with pytest.raises(TeeError):
        open_data_key(bad, target[0], secret)


@pytest.mark.parametrize("attack", ["flip", "truncate", "swap", "drop_last", "append"])
def test_tampering_is_refused(breast, target, attack):
    blob, header, secret = encrypted(breast, target)
    f = io.BytesIO(blob)
    read_header(f)
    start = f.tell()
    # chunk boundaries
    offs, pos = [], start
    while pos < len(blob):
        n = int.from_bytes(blob[pos:pos + 4], "big")
        offs.append((pos, pos + 4 + n))
        pos += 4 + n
    chunks = [blob[a:b] for a, b in offs]
    if attack == "flip":
        evil = bytearray(blob)
        evil[offs[2][0] + 50] ^= 1
    elif attack == "truncate":
        evil = blob[:-10]
    elif attack == "swap":
        evil = blob[:start] + chunks[1] + chunks[0] + b"".join(chunks[2:])
    elif attack == "drop_last":
        evil = blob[:start] + b"".join(chunks[:-1])
    else:
        evil = blob + chunks[0]
    with pytest.raises(DataError):
        decrypt(bytes(evil), target[0], secret)


def test_hostile_sizes_are_bounded(breast, target):
    blob, header, secret = encrypted(breast, target)
    with pytest.raises(DataError, match="buffer"):
        decrypt(blob, target[0], secret, limit=1000)                # the reader's cap is below the file's chunks
    evil = blob[:16] + (1 << 30).to_bytes(4, "big") + blob[20:]
    with pytest.raises(DataError, match="too large"):
        read_header(io.BytesIO(evil))
    with pytest.raises(DataError, match="magic"):
        read_header(io.BytesIO(b"PK\x03\x04" + blob[4:]))


def test_wrap_to_binds_key_and_context():
    sk, pk = x25519_keypair()
    blob = wrap_to(pk, b"secret", b"ctx")
    assert unwrap(sk, blob, b"ctx") == b"secret" and x25519_public(sk) == pk
    with pytest.raises(CryptoError):
        unwrap(sk, blob, b"other")
    with pytest.raises(CryptoError):
        unwrap(x25519_keypair()[0], blob, b"ctx")
