"""The codec and the gRPC server's header handling under hostile input (issue 19).

The fuzz runs a bounded number of hypothesis examples (``ATOLL_FUZZ_EXAMPLES``, default 300;
set it to 100000 for a long run).
"""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import wire
from atoll.errors import WireError
from atoll.federation.grpc_transport import GrpcEndpoint
from atoll.federation.launch import free_port

EXAMPLES = int(os.environ.get("ATOLL_FUZZ_EXAMPLES", "300"))


class Aborted(Exception):
    pass


class FakeContext:
    """What _on_push needs of a grpc.ServicerContext: abort() raises, as gRPC's does."""

    def __init__(self):
        self.code = None

    def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted(code, details)

    def auth_context(self):
        return {}


@pytest.fixture(scope="module")
def endpoint():
    ep = GrpcEndpoint("b", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{free_port()}"}, None,
                      mailbox_limits={"max_peer_bytes": 1 << 20})
    ep.open_job("j", ["a", "b"])
    yield ep
    ep.close(grace=0)


def push(ep, first: bytes, *rest: bytes):
    ctx = FakeContext()
    try:
        ep._on_push(iter([first, *rest]), ctx)
    except Aborted:
        pass
    return ctx


def good(**over):
    h = {"id": "m", "job": "j", "sender": "a", "receiver": "b", "address": "j/main/k", "size": 3}
    h.update(over)
    return h


@pytest.mark.parametrize("bad", [np.zeros(3), [1, 2, 3], "id", 7, None, b"xyz"])
def test_a_header_that_is_not_a_dict_is_refused_as_malformed(endpoint, bad):
    ctx = push(endpoint, wire.dumps(bad))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and "malformed push header" in ctx.details


@pytest.mark.parametrize("size", [True, False, -1, 1.5, "3", None])
def test_a_header_size_that_is_not_a_plain_integer_is_refused(endpoint, size):
    ctx = push(endpoint, wire.dumps(good(size=size)), b"abc")
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_well_formed_push_is_delivered_once(endpoint):
    ctx = push(endpoint, wire.dumps(good(id="ok1")), b"abc")
    assert ctx.code is None
    assert endpoint.jobs.get("j").mailbox.take("a", "j/main/k", 1, "k") == b"abc"


def test_a_0d_array_round_trips_as_0d():
    for a in (np.array(3.5), np.array(7, dtype=np.int64), np.array(True)):
        back = wire.loads(wire.dumps(a))
        assert back.shape == () and back.dtype == a.dtype and back == a


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12)
_field = _values | st.sampled_from(["a", "b", "j", "j/main/k", "x/main/k", "m"]) | st.integers(0, 64)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=st.dictionaries(st.sampled_from(["id", "job", "sender", "receiver", "address", "size", "x"]),
                              _field, max_size=7),
       chunks=st.lists(st.binary(max_size=80), max_size=4))
def test_fuzz_push_headers_end_in_a_status_never_an_uncaught_error(endpoint, fields, chunks):
    ctx = push(endpoint, wire.dumps(fields), *chunks)  # anything but Aborted propagates and fails
    assert ctx.code is None or isinstance(ctx.code, grpc.StatusCode)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200))
def test_fuzz_raw_header_bytes(endpoint, data):
    push(endpoint, data, b"x")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300))
def test_fuzz_codec_raises_only_wire_errors(data):
    try:
        wire.loads(bytes([1]) + data)
    except WireError:
        pass


def test_concurrent_pushes_are_bounded_by_what_they_declare_before_any_byte_arrives():
    ep = GrpcEndpoint("b", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{free_port()}"}, None,
                      mailbox_limits={"max_peer_bytes": 1 << 20})
    try:
        ep.open_job("j", ["a", "b"])
        second = {}

        def first_stream():
            yield wire.dumps(good(id="big1", size=700_000))
            # while the first push is in flight, a second one claims 700 kB more: refused at once
            second["ctx"] = push(ep, wire.dumps(good(id="big2", size=700_000)), b"y" * 700_000)
            yield b"x" * 700_000

        ctx = FakeContext()
        ep._on_push(first_stream(), ctx)
        assert ctx.code is None
        assert second["ctx"].code == grpc.StatusCode.RESOURCE_EXHAUSTED and "1048576 bytes at most" in \
            second["ctx"].details
        assert ep.stats()["j"] == {"messages": 1, "bytes": 700_000, "failed": 0, "ids": 1}
    finally:
        ep.close(grace=0)


def test_a_send_to_a_peer_that_had_the_job_open_and_died_fails_fast(monkeypatch):
    """A send must not retry for the whole connect_timeout (meant for peers still starting) once
    its peer had the job open and stopped answering: the job would hang instead of failing."""
    import time

    from atoll.errors import PeerFailed
    from atoll.federation import grpc_transport

    monkeypatch.setattr(grpc_transport, "GONE_AFTER", 0.5)
    addrs = {"a": f"127.0.0.1:{free_port()}", "b": f"127.0.0.1:{free_port()}"}
    a = GrpcEndpoint("a", addrs, None, connect_timeout=60)
    b = GrpcEndpoint("b", addrs, None)
    try:
        ta, _ = a.open_job("j", ["a", "b"]), b.open_job("j", ["a", "b"])
        ta.send("b", "j/main/k", b"one")  # b had the job open ...
        b.close(grace=0)                    # ... and its process dies
        t0 = time.monotonic()
        with pytest.raises(PeerFailed, match="stopped answering"):
            ta.send("b", "j/main/k2", b"two")
        assert time.monotonic() - t0 < 30  # not the 60 s meant for start-up
    finally:
        a.close(grace=0)
