"""Job-scoped federation: one endpoint per party serves many jobs; mailboxes, failure marks and
aborts belong to a job; close_job frees a job; unknown jobs are refused and never buffered.
In-process endpoints and gRPC + mutual TLS endpoints (threads of this process, loopback)."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import numpy as np
import pytest

from atoll.errors import AuthError, FederationError, PeerFailed, UnknownParty, WireError
from atoll.federation import Context, InProcessHub, failure_summary
from atoll.federation.certs import TlsConfig, init_certs
from atoll.federation.grpc_transport import GrpcEndpoint
from atoll.federation.launch import free_ports

ROLES = {"guest": "guest", "host_0": "host", "arbiter": "arbiter"}
SECRET = "id 48213 in /srv/bank/customers.csv"  # what a peer must never learn from a failure


def secret_error() -> BaseException:
    try:
        raise ValueError(SECRET)
    except ValueError as e:
        return e


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return init_certs([*ROLES, "host_1"], tmp_path_factory.mktemp("certs"), days=1)


@pytest.fixture
def grpc_endpoints(certdir):
    names = [*ROLES, "host_1"]
    addrs = {p: f"127.0.0.1:{port}" for p, port in zip(names, free_ports(len(names)))}
    eps = {p: GrpcEndpoint(p, addrs, TlsConfig.load(certdir, p), connect_timeout=2, startup_grace=2)
           for p in addrs}
    yield eps
    for ep in eps.values():
        ep.close(grace=0)


@pytest.fixture
def inproc_endpoints():
    hub = InProcessHub([*ROLES, "host_1"], open_timeout=0.5)
    return {p: hub.endpoint(p) for p in hub.parties}


def open_jobs(eps, job_id, roles=ROLES, timeout=20):
    return {p: Context(p, roles, eps[p].open_job(job_id, roles), timeout=timeout) for p in roles}


@pytest.mark.parametrize("kind", ["inprocess", "grpc"])
def test_a_party_failing_in_one_job_leaves_the_other_job_between_the_same_parties_untouched(
        kind, inproc_endpoints, request):
    eps = inproc_endpoints if kind == "inprocess" else request.getfixturevalue("grpc_endpoints")
    j, k = open_jobs(eps, "job-J"), open_jobs(eps, "job-K")
    j["host_0"].transport.abort(failure_summary(secret_error()))
    t0 = time.perf_counter()
    with pytest.raises(PeerFailed, match="party 'host_0' failed before sending 'x'") as e:
        j["guest"].recv("host_0", "x")
    assert time.perf_counter() - t0 < 2
    assert "ValueError" in str(e.value) and "48213" not in str(e.value) and "/srv" not in str(e.value)
    with pytest.raises(PeerFailed):
        j["arbiter"].recv("host_0", "y")
    # job K: the same three parties, the same endpoints, nothing failed
    k["host_0"].send("guest", "x", np.arange(4))
    k["guest"].send(["host_0", "arbiter"], "w", 7)
    assert k["guest"].recv("host_0", "x").tolist() == [0, 1, 2, 3]
    assert k["host_0"].recv("guest", "w") == 7 and k["arbiter"].recv("guest", "w") == 7
    assert eps["guest"].stats()["job-K"]["failed"] == 0 and eps["guest"].stats()["job-J"]["failed"] == 1
    # a later job with the same partners starts clean too
    eps["guest"].close_job("job-J")
    eps["guest"].open_job("job-J2", ROLES)
    assert eps["guest"].stats()["job-J2"]["failed"] == 0


@pytest.mark.parametrize("kind", ["inprocess", "grpc"])
def test_close_job_frees_its_messages_marks_and_ids(kind, inproc_endpoints, request):
    eps = inproc_endpoints if kind == "inprocess" else request.getfixturevalue("grpc_endpoints")
    j, k = open_jobs(eps, "job-J"), open_jobs(eps, "job-K")
    k["host_0"].send("guest", "kept", 1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(8):  # 8 MB nobody reads
        with j["host_0"].scope("i", i):
            j["host_0"].send("guest", "blob", np.zeros(1 << 17))
    j["arbiter"].transport.abort("RuntimeError")
    full = tracemalloc.get_traced_memory()[0]
    stats = eps["guest"].stats()["job-J"]
    assert stats["messages"] == 8 and stats["bytes"] > 8 << 20 and stats["failed"] == 1
    eps["guest"].close_job("job-J")
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert full - before > 8 << 20
    assert after - before < 1 << 20, f"{(after - before) / 1e6:.1f} MB still held after close_job"
    assert "job-J" not in eps["guest"].stats() and eps["guest"].open_jobs() == ["job-K"]
    # a late message of the closed job is dropped, not buffered and not an error for the sender
    j["host_0"].send("guest", "late", 2)
    assert "job-J" not in eps["guest"].stats()
    with pytest.raises(FederationError, match="not open|closed"):
        j["guest"].recv("host_0", "anything", timeout=1)
    assert k["guest"].recv("host_0", "kept") == 1  # the other job lost nothing


def test_a_receive_waiting_when_its_job_closes_is_woken(inproc_endpoints):
    j = open_jobs(inproc_endpoints, "job-J")
    threading.Timer(0.2, inproc_endpoints["guest"].close_job, args=("job-J",)).start()
    t0 = time.perf_counter()
    with pytest.raises(FederationError, match="job 'job-J' was closed at 'guest'"):
        j["guest"].recv("host_0", "x")
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("kind", ["inprocess", "grpc"])
def test_a_job_the_receiver_never_opened_is_refused_and_never_buffered(kind, inproc_endpoints, request):
    eps = inproc_endpoints if kind == "inprocess" else request.getfixturevalue("grpc_endpoints")
    guest = Context("guest", ROLES, eps["guest"].open_job("job-X", ROLES), timeout=5)
    with pytest.raises((FederationError, PeerFailed), match="did not open job 'job-X'"):
        guest.send("host_0", "x", np.zeros(1000))
    assert eps["host_0"].stats() == {} and eps["host_0"].open_jobs() == []


@pytest.mark.parametrize("kind", ["inprocess", "grpc"])
def test_only_the_parties_of_a_job_may_send_in_it(kind, inproc_endpoints, request):
    eps = inproc_endpoints if kind == "inprocess" else request.getfixturevalue("grpc_endpoints")
    open_jobs(eps, "job-J")  # guest, host_0, arbiter
    intruder = Context("host_1", {"guest": "guest", "host_1": "host"},
                       eps["host_1"].open_job("job-J", {"guest": "guest", "host_1": "host"}))
    with pytest.raises((UnknownParty, AuthError), match="'host_1' is not a party of job 'job-J'"):
        intruder.send("guest", "x", 1)
    assert eps["guest"].stats()["job-J"]["messages"] == 0


def test_a_job_transport_carries_its_own_job_only(grpc_endpoints, inproc_endpoints):
    for eps in (grpc_endpoints, inproc_endpoints):
        t = eps["guest"].open_job("job-J", ROLES)
        with pytest.raises(FederationError, match="not of job 'job-J'"):
            t.send("host_0", "job-K/main/x", b"payload")
        with pytest.raises(FederationError, match="transport is job 'job-J'"):
            Context("guest", ROLES, t, job_id="job-K")
        assert Context("guest", ROLES, t).job_id == "job-J"
        with pytest.raises(FederationError, match="already open"):
            eps["guest"].open_job("job-J", ROLES)
        with pytest.raises(FederationError, match="no '/'"):
            eps["guest"].open_job("a/b", ROLES)


def test_a_push_whose_header_names_another_job_than_its_address_is_refused(grpc_endpoints):
    open_jobs(grpc_endpoints, "job-J")
    open_jobs(grpc_endpoints, "job-K")
    with pytest.raises(WireError, match="not of the header's job 'job-J'"):
        grpc_endpoints["host_0"].push_message("job-J", "guest", "job-K/main/x", b"forged", "id-1")
    assert all(s["messages"] == 0 for s in grpc_endpoints["guest"].stats().values())


def test_a_peer_that_closed_the_job_is_reported_promptly_while_it_stays_up(grpc_endpoints):
    """A node whose task died closes the job; its endpoint (other jobs) stays up. Receivers
    waiting on it in that job learn it from the job state a ping returns, in seconds."""
    j, k = open_jobs(grpc_endpoints, "job-J"), open_jobs(grpc_endpoints, "job-K")
    j["host_0"].send("guest", "hello", 1)
    assert j["guest"].recv("host_0", "hello") == 1
    grpc_endpoints["host_0"].close_job("job-J")  # no abort: the task just vanished
    t0 = time.perf_counter()
    with pytest.raises(PeerFailed, match="party 'host_0' failed before sending 'result'.*closed job 'job-J'"):
        j["guest"].recv("host_0", "result")
    assert time.perf_counter() - t0 < 5
    k["host_0"].send("guest", "result", 42)
    assert k["guest"].recv("host_0", "result") == 42


def test_a_peer_restarted_without_the_job_is_reported_promptly(certdir, grpc_endpoints):
    j = open_jobs(grpc_endpoints, "job-J")
    j["guest"].send("host_0", "hello", 1)  # host_0 had job J open: the push landed
    old = grpc_endpoints["host_0"]
    old.close(grace=0)
    grpc_endpoints["host_0"] = GrpcEndpoint("host_0", old.addresses, TlsConfig.load(certdir, "host_0"))
    t0 = time.perf_counter()
    with pytest.raises(PeerFailed, match="no longer has job 'job-J' open"):
        j["guest"].recv("host_0", "result")
    assert time.perf_counter() - t0 < 5
