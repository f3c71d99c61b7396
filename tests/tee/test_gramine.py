"""The Gramine launch path as far as a machine without SGX allows: the manifest, the runtime against
a stand-in /dev/attestation, and a clear refusal to launch without Gramine."""

from __future__ import annotations

import hashlib
import os
import re
import sys

import pytest

from atoll.errors import ConfigError
from atoll.tee.base import SealError, TeeError
from atoll.tee.gramine import GramineBackend, GramineRuntime, gramine_manifest
from atoll.tee.measure import build_image

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def test_manifest_lists_exactly_the_measured_files(tmp_path):
    image = build_image("tee-ml", tmp_path / "img")
    text = gramine_manifest(image, enclave_size="1G", max_threads=16)
    filled = re.sub(r"\{\{[^}]*\}\}", "/gramine", text)  # what gramine-manifest's Jinja step fills in
    m = tomllib.loads(filled)
    assert m["sgx"]["enclave_size"] == "1G" and m["sgx"]["remote_attestation"] == "dcap" and m["sgx"]["debug"] is False
    pinned = {t["uri"].removeprefix("file:/atoll/"): t["sha256"] for t in m["sgx"]["trusted_files"] if isinstance(t, dict)}
    assert pinned == image.manifest["files"]
    for rel, sha in pinned.items():
        assert hashlib.sha256((image.path / rel).read_bytes()).hexdigest() == sha
    assert "file:/atoll/manifest.json" in m["sgx"]["trusted_files"]
    assert m["loader"]["argv"][2] == "/atoll/atoll/tee/enclave_boot.py" and "gramine-sgx" in m["loader"]["argv"]
    assert image.measurement in text
    with pytest.raises(ConfigError, match="power of two"):
        gramine_manifest(image, enclave_size="3G")


def test_launch_without_gramine_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="install Gramine.*simulated"):
        GramineBackend().launch("tee-ml", workdir=tmp_path / "w")


@pytest.fixture
def devattest(tmp_path):
    d = tmp_path / "attestation"
    (d / "keys").mkdir(parents=True)
    (d / "attestation_type").write_text("dcap")
    mrenclave = os.urandom(32)
    (d / "my_target_info").write_bytes(mrenclave + bytes(480))
    (d / "keys" / "_sgx_mrenclave").write_bytes(os.urandom(16))
    (d / "quote").write_bytes(b"\x03\x00" + bytes(100))  # Gramine writes the quote after user_report_data
    return d, mrenclave


def test_runtime_uses_dev_attestation(devattest):
    d, mrenclave = devattest
    rt = GramineRuntime("ab" * 32, d)
    assert rt.measurement == mrenclave.hex() and not rt.simulated and rt.backend == "sgx-dcap"
    ev = rt.evidence(b"\x07" * 64)
    assert (d / "user_report_data").read_bytes() == b"\x07" * 64 and ev.backend == "sgx-dcap"
    assert ev.quote == (d / "quote").read_bytes()
    blob = rt.seal(b"model")
    assert rt.unseal(blob) == b"model"
    (d / "keys" / "_sgx_mrenclave").write_bytes(os.urandom(16))   # another CPU / another signer
    with pytest.raises(SealError):
        GramineRuntime("ab" * 32, d).unseal(blob)


def test_runtime_refuses_without_dcap(devattest):
    d, _ = devattest
    (d / "attestation_type").write_text("none")                   # gramine-direct, or no DCAP set up
    with pytest.raises(TeeError, match="attestation type 'none'"):
        GramineRuntime("ab" * 32, d)
