"""PSI against independent implementations: libsodium's X25519 for the group, openmined-psi for the result."""

from __future__ import annotations

import random

import numpy as np
import pytest
from nacl.bindings import crypto_scalarmult

from atoll.errors import ConfigError
from atoll.federation import Party, launch
from atoll.secure import psi_group
from atoll.secure.psi import psi


def _backends() -> list[str]:
    out = []
    for name in ("cryptography", "ipp"):
        try:
            psi_group.get_backend(name)
            out.append(name)
        except ConfigError:  # not installed, or a CPU without AVX-512 IFMA
            pass
    return out


@pytest.mark.parametrize("name", _backends())
def test_blinding_matches_libsodium(name):
    """Every backend computes libsodium's crypto_scalarmult (X25519) byte for byte, on hashed ids
    (whose top bit X25519 ignores) and on already blinded values, for fresh scalars."""
    backend = psi_group.get_backend(name)
    pts = psi_group.hash_to_points([f"id-{i}".encode() for i in range(64)], b"\x01" * 32)
    assert (pts[:, 31] >= 128).any() and (pts[:, 31] < 128).any()
    for _ in range(3):
        k = psi_group.new_scalar()
        got = backend.mul(k, pts)
        want = np.frombuffer(b"".join(crypto_scalarmult(k, bytes(u)) for u in pts), np.uint8).reshape(-1, 32)
        assert np.array_equal(got, want)
        k2 = psi_group.new_scalar()
        twice = np.frombuffer(b"".join(crypto_scalarmult(k2, bytes(u)) for u in got), np.uint8).reshape(-1, 32)
        assert np.array_equal(backend.mul(k2, got), twice)


def _openmined(guest_ids: list[str], host_ids: list[str]) -> list[str]:
    om = pytest.importorskip("private_set_intersection.python")
    server = om.server.CreateWithNewKey(True)
    client = om.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(guest_ids), host_ids, om.DataStructure.RAW)
    response = server.ProcessRequest(client.CreateRequest(guest_ids))
    return sorted(guest_ids[i] for i in client.GetIntersection(setup, response))


@pytest.mark.parametrize("protocol", ["ecdh", "kkrt"])
@pytest.mark.parametrize("overlap", [0, 137, 600])
def test_same_intersection_as_openmined_psi(overlap, protocol):
    rng = random.Random(overlap)
    universe = [f"{rng.getrandbits(40):010x}" for _ in range(1400)]
    g = universe[:600]
    h = universe[:overlap] + universe[600:600 + 700 - overlap]
    rng.shuffle(g)
    rng.shuffle(h)
    want = _openmined(g, h)
    out = launch({"guest": Party("guest", psi, {"ids": g, "protocol": protocol}),
                  "host_0": Party("host", psi, {"ids": h, "protocol": protocol})})
    assert len(want) == overlap
    assert out["guest"] == out["host_0"] == want
