"""Dial-in transport: frames, the Context API over it, who is let in (certificates, hashed and
revocable tokens, rosters), bounded buffers both ways, sessions that end and start again."""

from __future__ import annotations

import json
import stat
import threading
import time

import grpc
import numpy as np
import pytest

from atoll.errors import AuthError, FederationError, PeerFailed, WireError
from atoll.federation import Context
from atoll.federation.certs import TlsConfig, init_certs
from atoll.federation.dialin import (CHUNK, METHOD, DialInClient, DialInServer, JobEnded, decode_frame,
                                     encode_frame, message_frames, read_frames)
from atoll.federation.tokens import TokenStore

ROSTER = {"server": "server", "alice": "client", "bob": "client"}


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return init_certs(["server", "alice", "bob", "mallory"], tmp_path_factory.mktemp("certs"), days=1)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    return init_certs(["alice"], tmp_path_factory.mktemp("other-ca"), days=1)  # same name, another CA


@pytest.fixture
def server(certdir, tmp_path):
    tokens = TokenStore(tmp_path / "tokens.json")
    ep = DialInServer(TlsConfig.load(certdir, "server"), listen="127.0.0.1:0", token_listen="127.0.0.1:0",
                      tokens=tokens, token_check_interval=0.2).start()
    yield ep
    ep.stop(grace=0)


def client(server, certdir, name="alice", **kw):
    return DialInClient(f"127.0.0.1:{server.port}", tls=TlsConfig.load(certdir, name), connect_timeout=5, **kw)


def token_client(server, certdir, token, **kw):
    return DialInClient(f"127.0.0.1:{server.token_port}", token=token, ca_cert=(certdir / "ca.pem").read_bytes(),
                        connect_timeout=5, **kw)


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# --------------------------------------------------------------------------- frames (no network)

def test_a_message_crosses_as_frames_of_at_most_one_grpc_message_each():
    payload = np.random.default_rng(0).bytes(2 * CHUNK + 12345)
    frames, size = message_frames("job/main/x", [payload[:10], memoryview(payload[10:])])
    assert size == len(payload) and len(frames) == 3 and all(len(f) <= CHUNK for f in frames)
    (header, got), = list(read_frames(iter(frames), max_bytes=size))
    assert header == {"t": "msg", "address": "job/main/x", "size": size} and bytes(got) == payload
    with pytest.raises(WireError, match="truncated"):
        list(read_frames(iter(frames[:2]), max_bytes=size))
    with pytest.raises(WireError, match="exceeds the limit"):
        list(read_frames(iter(frames), max_bytes=size - 1))
    with pytest.raises(WireError):
        decode_frame(b"\xff\xff\xff\xff junk")
    assert decode_frame(encode_frame({"t": "bye"}))[0] == {"t": "bye"}


# --------------------------------------------------------------------------- the Context API over it

def test_roles_talk_through_contexts_and_big_arrays_cross_both_ways(server, certdir):
    st = server.open_job("j1", ROSTER, info={"task": "sum"})
    sctx = Context("server", ROSTER, st, timeout=20)
    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB: several frames

    def run_client(name, out):
        ep = client(server, certdir, name)
        t = ep.open_job("j1")
        ctx = Context(name, t.parties_map, t, timeout=20)
        x = ctx.recv("server", "x")
        ctx.send("server", "y", x * (2 if name == "alice" else 3))
        out[name] = (t.info, t.session, sorted(t.parties_map))
        ep.close()

    out = {}
    ts = [threading.Thread(target=run_client, args=(n, out)) for n in ("alice", "bob")]
    for t in ts:
        t.start()
    wait_for(lambda: len(st.sessions()) == 2)
    sctx.send("client", "x", big)
    got = sctx.gather("client", "y")
    for t in ts:
        t.join()
    np.testing.assert_array_equal(got["alice"], big * 2)
    np.testing.assert_array_equal(got["bob"], big * 3)
    # a client learns the job's info, its session, and of the parties only itself and the server
    assert out["alice"][0] == {"task": "sum"} and out["alice"][2] == ["alice", "server"]
    assert out["alice"][1] != out["bob"][1]
    server.close_job("j1")


def test_a_client_that_leaves_is_a_dropout_and_comes_back_as_a_new_session(server, certdir):
    st = server.open_job("j2", ROSTER)
    ctx = Context("server", ROSTER, st, timeout=20)
    ep = client(server, certdir)
    t = ep.open_job("j2")
    first = st.sessions()["alice"]
    t.close()  # it leaves
    wait_for(lambda: "alice" not in st.sessions())
    with pytest.raises(PeerFailed, match="not connected"):
        ctx.send("alice", "x", 1)
    with pytest.raises(PeerFailed, match="alice"):
        ctx.recv("alice", "y", timeout=10)  # marked gone: no waiting for the timeout
    t = ep.open_job("j2")  # back: a new session, sent to only once the server begins it
    second = st.sessions()["alice"]
    assert second != first
    with pytest.raises(PeerFailed, match="rejoins"):
        ctx.send("alice", "x", 1)
    assert st.begin_session("alice", second)
    ctx.send("alice", "x", 5)
    cctx = Context("alice", t.parties_map, t, timeout=10)
    assert cctx.recv("server", "x") == 5
    cctx.send("server", "y", 6)
    assert ctx.recv("alice", "y") == 6
    # the same client connecting again replaces its old connection
    ep2 = client(server, certdir)
    ep2.open_job("j2")
    with pytest.raises(PeerFailed, match="replaced"):
        cctx.recv("server", "never", timeout=10)
    server.close_job("j2")
    with pytest.raises(JobEnded):
        ep2.open_job("j2")  # the job is over: nothing to rejoin
    ep.close()
    ep2.close()


def test_a_client_may_dial_before_the_job_opens_and_learns_when_it_ends(server, certdir):
    ep = client(server, certdir)
    box = {}
    th = threading.Thread(target=lambda: box.update(t=ep.open_job("late")))
    th.start()
    time.sleep(0.5)
    st = server.open_job("late", ROSTER)  # the client was retrying: it joins now
    th.join(timeout=10)
    t = box["t"]
    ctx = Context("alice", t.parties_map, t, timeout=10)
    server.close_job("late")
    with pytest.raises(JobEnded):
        ctx.recv("server", "x")
    assert t.ended
    del st
    ep.close()


# --------------------------------------------------------------------------- who is let in

def test_certificates_from_another_ca_or_off_the_roster_are_refused(server, certdir, foreign):
    server.open_job("j3", ROSTER)
    with pytest.raises(AuthError, match="TLS"):
        client(server, foreign).open_job("j3")  # right name, wrong CA: the handshake fails
    with pytest.raises(AuthError, match="'mallory' is not a client of job 'j3'"):
        client(server, certdir, "mallory").open_job("j3")  # the federation's CA, but not on the roster
    # a token client on the certificate port has no certificate to show: the server hangs up
    with pytest.raises(FederationError, match="a token client dials the server's token port"):
        DialInClient(f"127.0.0.1:{server.port}", token=TokenStore(certdir / "t.json").issue("bob"),
                     ca_cert=(certdir / "ca.pem").read_bytes(), connect_timeout=1).open_job("j3")
    assert server.sessions("j3") == {}
    server.close_job("j3")


def test_tokens_are_stored_hashed_refused_when_wrong_and_revocable_while_connected(server, certdir):
    store = server.tokens
    tok = store.issue("bob", note="bob's laptop")
    raw = store.path.read_text()
    assert tok.split(":")[-1] not in raw and "sha256" in raw           # only the hash is kept
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [t["client"] for t in store.list()] == ["bob"] and "sha256" not in json.dumps(store.list())
    st = server.open_job("j4", ROSTER)
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError, match="enrolment token was refused"):
        token_client(server, certdir, forged).open_job("j4")
    with pytest.raises(AuthError, match="enrolment token was refused"):  # a live token names another client
        token_client(server, certdir, tok.replace(":bob:", ":alice:")).open_job("j4")
    t = token_client(server, certdir, tok).open_job("j4")
    assert t.party == "bob" and "bob" in st.sessions()
    # the operator revokes it (from another shell: a second store object on the same file)
    TokenStore(store.path).revoke(client="bob")
    ctx = Context("bob", t.parties_map, t, timeout=10)
    with pytest.raises(PeerFailed, match="UNAUTHENTICATED"):
        ctx.recv("server", "x")
    wait_for(lambda: "bob" not in st.sessions())
    with pytest.raises(AuthError, match="enrolment token was refused"):
        token_client(server, certdir, tok).open_job("j4")
    with pytest.raises(AuthError, match="not an enrolment token"):
        token_client(server, certdir, "hunter2")
    server.close_job("j4")


# --------------------------------------------------------------------------- bounded buffers

def test_a_client_that_does_not_read_is_dropped_and_the_server_buffers_a_bounded_amount(certdir):
    limit = 1 << 20
    ep = DialInServer(TlsConfig.load(certdir, "server"), listen="127.0.0.1:0", client_buffer_bytes=limit,
                      slow_client_timeout=0.5).start()
    try:
        st = ep.open_job("slow", ROSTER)
        # a raw client: says hello, then never reads a thing
        tls = TlsConfig.load(certdir, "alice")
        ch = grpc.secure_channel(f"127.0.0.1:{ep.port}", grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert),
                                 options=[("grpc.ssl_target_name_override", "server")])
        stop = threading.Event()

        def requests():
            yield encode_frame({"t": "hello", "v": 1, "job": "slow"})
            stop.wait(30)

        call = ch.stream_stream(METHOD)(requests())
        assert decode_frame(next(call))[0]["t"] == "welcome"
        ctx = Context("server", ROSTER, st, timeout=10)
        chunk = np.zeros(1 << 16)  # 512 KiB
        with pytest.raises(PeerFailed, match="reads too slowly"):
            for _ in range(400):  # 200 MiB if nothing stopped it
                ctx.send("alice", "x", chunk)
        assert max(ep.stats()["slow"]["peak_queued_to_clients"].values(), default=0) <= limit
        assert "alice" not in st.sessions()
        stop.set()
        with pytest.raises(grpc.RpcError) as e:
            for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "too slowly" in e.value.details()
        ch.close()
        # and the other way: a client sending more than the server takes is cut off, not buffered
        c = client(ep, certdir, "bob")
        t = c.open_job("slow")
        cctx = Context("bob", t.parties_map, t, timeout=10)
        with pytest.raises((PeerFailed, WireError)):
            for i in range(50):
                cctx.send("server", f"y{i}", chunk)
                time.sleep(0.01)
        assert ep.stats()["slow"]["bytes"] <= limit
        c.close()
    finally:
        ep.stop(grace=0)


def test_a_connection_that_says_no_hello_is_cut_off(certdir):
    ep = DialInServer(TlsConfig.load(certdir, "server"), listen="127.0.0.1:0", hello_timeout=0.3).start()
    try:
        tls = TlsConfig.load(certdir, "alice")
        ch = grpc.secure_channel(f"127.0.0.1:{ep.port}", grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert),
                                 options=[("grpc.ssl_target_name_override", "server")])
        silent = threading.Event()

        def requests():
            silent.wait(10)
            yield b""

        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError):
            next(ch.stream_stream(METHOD)(requests()))
        assert time.monotonic() - t0 < 5  # it does not hold a server thread for ever
        silent.set()
        ch.close()
    finally:
        ep.stop(grace=0)


def test_a_server_needs_an_address_and_tokens_need_a_store(certdir):
    tls = TlsConfig.load(certdir, "server")
    with pytest.raises(FederationError, match="give the server an address"):
        DialInServer(tls)
    with pytest.raises(FederationError, match="token store"):
        DialInServer(tls, token_listen="127.0.0.1:0")
    with pytest.raises(AuthError, match="not both"):
        DialInClient("127.0.0.1:1", tls=TlsConfig.load(certdir, "alice"), token="x")
