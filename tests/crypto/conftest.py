"""Keys shared by the HE tests: generated once per session (1024-bit moduli for speed, except where marked slow)."""

from __future__ import annotations

import pytest

from atoll.crypto import he


@pytest.fixture(scope="session")
def paillier_kp() -> he.KeyPair:
    return he.generate_keypair("paillier", key_bits=1024)


@pytest.fixture(scope="session")
def ou_kp() -> he.KeyPair:
    return he.generate_keypair("ou", key_bits=1024)


@pytest.fixture(scope="session", params=["paillier", "ou"])
def kp(request, paillier_kp, ou_kp) -> he.KeyPair:
    return paillier_kp if request.param == "paillier" else ou_kp
