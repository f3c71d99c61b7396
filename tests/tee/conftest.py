"""Shared fixtures of the TEE tests: one simulated platform and one genuine enclave per session."""

from __future__ import annotations

import os

import pytest

from atoll.tee.authorisation import PartyKeys
from atoll.tee.simulated import SimulatedBackend, SimulatedPlatform


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim-platform")
    old = os.environ.get("ATOLL_TEE_SIM_DIR")
    os.environ["ATOLL_TEE_SIM_DIR"] = str(folder)  # the job components and the enclaves read it
    yield SimulatedPlatform(folder)
    if old is None:
        os.environ.pop("ATOLL_TEE_SIM_DIR", None)
    else:
        os.environ["ATOLL_TEE_SIM_DIR"] = old


@pytest.fixture(scope="session")
def enclave(platform, tmp_path_factory):
    e = SimulatedBackend().launch("tee-ml", workdir=tmp_path_factory.mktemp("enclave"), platform_dir=platform.folder)
    yield e
    e.stop()


@pytest.fixture(scope="session")
def policy(platform, enclave):
    return platform.policy([enclave.measurement], address=f"{enclave.address[0]}:{enclave.address[1]}")


@pytest.fixture
def keys():
    return {n: PartyKeys.generate(n) for n in ("bank", "shop", "auditor")}
