"""gRPC transport with mutual TLS: big payloads, identity, limits, retries, failures."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.errors import AuthError, FederationError, FederationTimeout, PeerFailed, WireError
from atoll.federation import Context, Party, PartyFailed, launch
from atoll.federation.certs import TlsConfig, init_certs, make_ca, make_party_cert
from atoll.federation.grpc_transport import GrpcTransport
from atoll.federation.launch import free_port

import fed_protocols as fp

ROLES = {"guest": "guest", "host_0": "host", "host_1": "host"}


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return init_certs(ROLES, tmp_path_factory.mktemp("certs"), days=1)


@pytest.fixture
def transports(certdir):
    addrs = {p: f"127.0.0.1:{free_port()}" for p in ROLES}
    ts = {p: GrpcTransport(p, addrs, TlsConfig.load(certdir, p), connect_timeout=5) for p in ROLES}
    yield ts
    for t in ts.values():
        t.close(grace=0)


def ctxs(transports, job_id="job", timeout=30):
    return {p: Context(p, ROLES, t, job_id=job_id, timeout=timeout) for p, t in transports.items()}


def test_same_protocol_same_result_on_both_transports():
    parties = {"a": Party("input", fp.secure_sum_party, {"values": [1, 2, 3]}),
               "b": Party("input", fp.secure_sum_party, {"values": [10, 20, 30]}),
               "c": Party("input", fp.secure_sum_party, {"values": [100, 200, 300]}),
               "agg": Party("sum", fp.sum_party)}
    threads = launch(parties, mode="threads", job_id="same")
    procs = launch(parties, mode="processes", job_id="same")
    assert threads["agg"].tolist() == procs["agg"].tolist() == [111, 222, 333]
    assert all(np.array_equal(threads[p], procs[p]) for p in parties)


@pytest.mark.slow
def test_three_parties_exchange_a_200mb_array_intact(transports):
    c = ctxs(transports)
    big = np.random.default_rng(0).random(25_000_000)  # 200 MB of float64
    t = threading.Thread(target=lambda: c["guest"].broadcast("host", "big", big))
    t.start()
    got = {p: c[p].recv("guest", "big") for p in ("host_0", "host_1")}
    t.join()
    for p, arr in got.items():
        assert arr.nbytes == 200_000_000 and np.array_equal(arr, big), p
        c[p].send("guest", "back", arr[:1000])
    assert np.array_equal(c["guest"].gather("host", "back")["host_1"], big[:1000])


def test_a_certificate_from_another_ca_is_refused(certdir):
    other_ca, other_key = make_ca()
    cert, key = make_party_cert("host_0", other_ca, other_key)
    addrs = {p: f"127.0.0.1:{free_port()}" for p in ROLES}
    guest = GrpcTransport("guest", addrs, TlsConfig.load(certdir, "guest"))
    # mallory presents a certificate for host_0 from a CA the guest does not trust
    rogue = GrpcTransport("host_0", addrs, TlsConfig("host_0", other_ca, cert, key), connect_timeout=2)
    try:
        with pytest.raises(FederationError, match="could not reach party 'guest'"):
            rogue.send("guest", "job/main/x", b"payload")
        with pytest.raises(FederationTimeout):
            guest.recv("host_0", "job/main/x", 0.5, "'x'")
    finally:
        guest.close(0)
        rogue.close(0)
    with pytest.raises(AuthError, match="not issued by the configured CA"):
        TlsConfig("host_0", open(certdir / "ca.pem", "rb").read(), cert, key).check()


def test_a_party_cannot_send_as_another(transports):
    host = transports["host_0"]
    host.party = "guest"  # the certificate still names host_0
    with pytest.raises(AuthError, match="certificate names 'host_0'; it may not send as 'guest'"):
        host.send("host_1", "job/main/x", b"forged")


def test_oversized_message_is_refused_clearly(certdir):
    addrs = {p: f"127.0.0.1:{free_port()}" for p in ROLES}
    small = GrpcTransport("host_0", addrs, TlsConfig.load(certdir, "host_0"), max_bytes=1 << 20)
    guest = GrpcTransport("guest", addrs, TlsConfig.load(certdir, "guest"))
    try:
        with pytest.raises(WireError, match="exceeds 'host_0''s limit of 1048576 bytes"):
            guest.send("host_0", "job/main/x", b"\0" * (2 << 20))
        small_ctx = Context("host_0", ROLES, small, max_bytes=1 << 20)
        guest.send("host_0", "job/main/ok", b"\0" * 1000)
        assert len(small.recv("guest", "job/main/ok", 5, "'ok'")) == 1000
        assert small_ctx.max_bytes == 1 << 20
    finally:
        small.close(0)
        guest.close(0)


def test_a_retried_send_is_delivered_exactly_once(transports):
    g, h = transports["guest"], transports["host_0"]
    msg_id = uuid.uuid4().hex
    g.push("host_0", "job/main/once", b"first", msg_id)
    g.push("host_0", "job/main/once", b"first", msg_id)  # the retry of a send whose ack was lost
    assert h.recv("guest", "job/main/once", 5, "'once'") == b"first"
    with pytest.raises(FederationTimeout):
        h.recv("guest", "job/main/once", 0.3, "'once'")


def test_two_concurrent_jobs_over_the_same_transports_do_not_mix(transports):
    a, b = ctxs(transports, "job-a"), ctxs(transports, "job-b")
    assert fp.two_jobs_side_by_side(a, b, "host", "host_1", 20) == {"a": list(range(20)),
                                                                    "b": list(range(1000, 1020))}


def test_a_dead_peer_is_reported_as_such_not_as_a_timeout(transports):
    g = ctxs(transports, timeout=60)["guest"]
    transports["guest"].send("host_0", "job/main/hi", b"x")  # host_0 seen alive
    transports["host_0"].close(grace=0)
    t = time.perf_counter()
    with pytest.raises(PeerFailed, match="party 'host_0' failed before sending 'result'.*stopped answering"):
        g.recv("host_0", "result")
    assert time.perf_counter() - t < 15


def test_a_killed_party_process_fails_the_job_promptly_naming_it():
    t = time.perf_counter()
    with pytest.raises(PartyFailed, match="party 'host_0' failed: its process died"):
        launch({"guest": Party("guest", fp.wait_for_result), "host_0": Party("host", fp.die_hard)},
               mode="processes", timeout=120)
    assert time.perf_counter() - t < 30


def test_a_raising_party_process_is_named_with_its_error():
    with pytest.raises(PartyFailed, match="party 'host_0' failed: ValueError: host data is broken"):
        launch({"guest": Party("guest", fp.wait_for_result), "host_0": Party("host", fp.fail_after_hello)},
               mode="processes", timeout=120)


def test_expired_and_misnamed_certificates_are_refused_at_start(tmp_path):
    ca, ca_key = make_ca()
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    cert, key = make_party_cert("guest", ca, ca_key, days=1, not_before=old)
    with pytest.raises(AuthError, match="expired on"):
        TlsConfig("guest", ca, cert, key).check()
    cert, key = make_party_cert("host_0", ca, ca_key)
    with pytest.raises(AuthError, match="names 'host_0', not party 'guest'"):
        TlsConfig("guest", ca, cert, key).check()
    with pytest.raises(AuthError, match="missing"):
        TlsConfig.load(tmp_path, "guest")


def test_cli_certs_init(tmp_path):
    r = CliRunner().invoke(app, ["certs", "init", "--parties", "guest,host,arbiter", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for p in ("guest", "host", "arbiter"):
        TlsConfig.load(tmp_path, p)
    assert (tmp_path / "guest.key").stat().st_mode & 0o077 == 0
    r = CliRunner().invoke(app, ["version"])
    assert r.exit_code == 0 and r.output.strip()


def test_chunking_covers_every_byte_in_order():
    import random

    from atoll.federation.grpc_transport import CHUNK, _chunks

    rng = random.Random(0)
    parts = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 100])))
             for _ in range(50)] + [memoryview(np.arange(CHUNK // 4, dtype=np.int64)), b"tail"]
    chunks = list(_chunks(parts))
    assert b"".join(chunks) == b"".join(bytes(p) for p in parts)
    assert all(len(c) == CHUNK for c in chunks[:-1]) and 0 < len(chunks[-1]) <= CHUNK


def test_party_processes_may_start_worker_pools_of_their_own():
    out = launch({"a": Party("peer", fp.pool_party, {"n": 10}), "b": Party("peer", fp.pool_party, {"n": 4})},
                 mode="processes", timeout=120)
    assert out["a"]["sum"] == 285 and out["b"]["sum"] == 14
    for r in out.values():
        assert r["worker_pids"] and r["me"] not in r["worker_pids"]
