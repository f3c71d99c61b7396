"""The simulated backend's quotes, sealing and the RA-TLS channel, in-process (no enclave process)."""

from __future__ import annotations

import os
import time

import pytest

from atoll import wire
from atoll.tee.base import (SIMULATED_MARK, AttestationError, EnclavePolicy, PolicyError, SealError,
                            bind_report_data, verify_evidence)
from atoll.tee.channel import AttestedServer, attested_connect, certificate_evidence
from atoll.tee.simulated import SimulatedPlatform, SimulatedRuntime

M1, M2 = "11" * 32, "22" * 32


@pytest.fixture
def rt(platform):
    return SimulatedRuntime(M1, platform)


def test_quote_binds_key_and_nonce_and_carries_the_mark(rt, platform):
    pol = platform.policy([M1])
    key, nonce = os.urandom(32), os.urandom(32)
    ev = rt.evidence(bind_report_data("wrap-key", key, nonce))
    assert SIMULATED_MARK.encode() in ev.quote
    got = verify_evidence(ev, pol, bind_report_data("wrap-key", key, nonce))
    assert got.simulated and got.measurement == M1 and got.summary()["mark"] == SIMULATED_MARK
    with pytest.raises(AttestationError, match="replayed or stale"):           # another nonce: a replay
        verify_evidence(ev, pol, bind_report_data("wrap-key", key, os.urandom(32)))
    with pytest.raises(AttestationError, match="replayed or stale"):           # another key
        verify_evidence(ev, pol, bind_report_data("wrap-key", os.urandom(32), nonce))
    with pytest.raises(AttestationError, match="older than"):                  # stale
        verify_evidence(ev, pol, bind_report_data("wrap-key", key, nonce), now=time.time() + 3600)


def test_refusals(rt, platform, tmp_path):
    rd = bind_report_data("x", b"k", b"n")
    ev = rt.evidence(rd)
    with pytest.raises(PolicyError, match="allow-list"):
        verify_evidence(ev, platform.policy([M2]), rd)
    with pytest.raises(AttestationError, match="accepts only"):               # simulated not accepted
        verify_evidence(ev, EnclavePolicy(measurements=[M1]), rd)
    other = SimulatedPlatform(tmp_path / "other")                              # an unpinned platform
    with pytest.raises(AttestationError, match="does not pin"):
        verify_evidence(SimulatedRuntime(M1, other).evidence(rd), platform.policy([M1]), rd)
    outer = wire.loads(ev.quote)
    body = bytearray(outer["body"])
    body[-3] ^= 1                                                              # forged body
    forged = type(ev)(ev.backend, wire.dumps({"body": bytes(body), "signature": outer["signature"]}))
    with pytest.raises(AttestationError):
        verify_evidence(forged, platform.policy([M1]), rd)


def test_seal_opens_only_for_the_same_measurement_and_platform(rt, platform, tmp_path):
    blob = rt.seal(b"model bytes", b"aad")
    assert rt.unseal(blob, b"aad") == b"model bytes"
    assert SimulatedRuntime(M1, platform).unseal(blob, b"aad") == b"model bytes"  # a restarted enclave
    with pytest.raises(SealError, match="another measurement"):
        SimulatedRuntime(M2, platform).unseal(blob, b"aad")
    with pytest.raises(SealError, match="another platform"):
        SimulatedRuntime(M1, SimulatedPlatform(tmp_path / "p2")).unseal(blob, b"aad")
    with pytest.raises(SealError):
        rt.unseal(blob, b"other aad")
    assert rt.wrap_private_key() == SimulatedRuntime(M1, platform).wrap_private_key()
    assert rt.wrap_private_key() != SimulatedRuntime(M2, platform).wrap_private_key()


def _echo(chan, client):
    while True:
        msg = chan.recv()
        chan.send({"echo": msg, "client": None if client is None else client.measurement})


def test_attested_channel_checks_the_allow_list_on_both_sides(rt, platform):
    server = AttestedServer(rt, _echo).start()
    try:
        with attested_connect(server.address, platform.policy([M1])) as c:
            assert c.peer.measurement == M1 and c.peer.simulated
            assert c.call({"x": 1}) == {"echo": {"x": 1}, "client": None}
        with pytest.raises(PolicyError, match="allow-list"):
            attested_connect(server.address, platform.policy([M2]))
    finally:
        server.close()
    # mutual: the server accepts only clients that are enclaves of measurement M2
    mutual = AttestedServer(rt, _echo, client_policy=platform.policy([M2])).start()
    try:
        with attested_connect(mutual.address, platform.policy([M1]), runtime=SimulatedRuntime(M2, platform)) as c:
            assert c.call({"y": 2})["client"] == M2
        with pytest.raises(AttestationError, match="attested clients"):
            attested_connect(mutual.address, platform.policy([M1]))           # a plain client
        with pytest.raises(AttestationError, match="refused this client"):
            attested_connect(mutual.address, platform.policy([M1]), runtime=SimulatedRuntime("33" * 32, platform))
    finally:
        mutual.close()


def test_certificate_carries_evidence_bound_to_its_key(rt, platform):
    import socket
    import ssl

    server = AttestedServer(rt, _echo).start()
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(server.address)) as s:
            der = s.getpeercert(binary_form=True)
        from atoll.tee.channel import _spki

        ev = certificate_evidence(der)
        got = verify_evidence(ev, platform.policy([M1]), bind_report_data("ra-tls", _spki(der)))
        assert got.measurement == M1
    finally:
        server.close()


def test_a_server_replaying_another_enclaves_answer_is_refused(rt, platform, monkeypatch):
    """The fresh answer must bind the TLS key of *this* connection: an impostor holding a copied
    quote (for another key) fails."""
    impostor = AttestedServer(rt, _echo)
    real_evidence = rt.evidence

    def copied(report_data):  # answers with evidence for another TLS key
        return real_evidence(bind_report_data("ra-tls", b"someone else's key", report_data[:0]))

    monkeypatch.setattr(impostor.runtime, "evidence", copied)
    impostor.start()
    try:
        with pytest.raises(AttestationError, match="replayed or stale"):
            attested_connect(impostor.address, platform.policy([M1]))
    finally:
        impostor.close()
