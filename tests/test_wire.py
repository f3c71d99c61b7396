"""The wire codec: round trips, refusals, and a fuzz run where only WireError may escape."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import wire
from atoll.errors import WireError


@wire.message("test.Point")
@dataclasses.dataclass
class Point:
    x: int
    label: str
    values: np.ndarray

    def __eq__(self, other):
        return (self.x, self.label) == (other.x, other.label) and np.array_equal(self.values, other.values)


class Secret:
    __wire_forbidden__ = True


def roundtrip(obj):
    return wire.loads(wire.dumps(obj))


@pytest.mark.parametrize("obj", [
    None, True, False, 0, -1, 2**4096 + 17, -(2**300), 1.5, float("inf"), -0.0, "", "héllo ✓ 用户",
    b"", b"\x00\xff", [], [1, [2, [3]]], (1, "a"), {"a": 1, "b": [None, (2.5,)]},
])
def test_roundtrip_plain_values(obj):
    out = roundtrip(obj)
    assert out == obj and type(out) is type(obj)


@pytest.mark.parametrize("dtype", ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                   "f2", "f4", "f8", "c8", "c16", ">f8", ">i4"])
def test_roundtrip_arrays(dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((3, 4, 5)) * 100).astype(dtype)
    out = roundtrip(a)
    assert out.shape == a.shape and out.dtype.kind == a.dtype.kind and np.array_equal(out, a)
    assert out.dtype.byteorder in "<|=" and out.flags.writeable


def test_roundtrip_noncontiguous_and_empty_arrays():
    a = np.arange(24.0).reshape(4, 6)[:, ::2]
    assert np.array_equal(roundtrip(a), a)
    e = np.zeros((0, 7))
    assert roundtrip(e).shape == (0, 7)
    assert roundtrip(np.float64(2.5)) == 2.5 and roundtrip(np.int64(-3)) == -3


def test_arrays_from_bytearray_share_memory_and_are_writable():
    data = bytearray(wire.dumps(np.arange(10.0)))
    a = wire.loads(data)
    a[0] = 42.0
    assert a.flags.writeable and a[0] == 42.0


def test_bigint_array_roundtrip():
    vals = [0, 1, 2**2047 + 5, 2**4000]
    b = wire.BigIntArray(vals, shape=(2, 2))
    out = roundtrip(b)
    assert out == b and out.shape == (2, 2) and out.width == 501


def test_registered_message_roundtrip():
    p = Point(3, "x", np.arange(3))
    assert roundtrip(p) == p
    assert roundtrip({"p": [p, p]})["p"][1] == p


@pytest.mark.parametrize("obj,what", [
    (object(), "not a wire type"),
    ({1: 2}, "dict keys must be str"),
    (np.array(["a"]), "dtype"),
    (np.array([object()]), "dtype"),
    ({1.5, 2}, "not a wire type"),
    (Secret(), "never leave its owner"),
    ([Secret()], "never leave its owner"),
])
def test_refuses_unknown_and_forbidden_types(obj, what):
    with pytest.raises(WireError, match=what):
        wire.dumps(obj)


def test_forbidden_type_cannot_be_registered():
    with pytest.raises(WireError):
        wire.register(Secret, "test.Secret", lambda s: {}, lambda d: Secret())


def test_depth_limit_both_ways():
    deep: list = []
    cur = deep
    for _ in range(wire.MAX_DEPTH + 5):
        cur.append([])
        cur = cur[0]
    with pytest.raises(WireError, match="deeper"):
        wire.dumps(deep)
    hostile = bytes([wire.VERSION]) + bytes([7, 1]) * 10_000 + bytes([0])
    with pytest.raises(WireError, match="deeper"):
        wire.loads(hostile)


def test_size_limit_and_version():
    data = wire.dumps(np.zeros(1000))
    with pytest.raises(WireError, match="exceeds the limit"):
        wire.loads(data, max_bytes=100)
    with pytest.raises(WireError, match="version"):
        wire.loads(bytes([99]) + data[1:])
    with pytest.raises(WireError, match="empty"):
        wire.loads(b"")
    with pytest.raises(WireError, match="trailing"):
        wire.loads(data + b"\x00")


def test_lies_about_sizes_do_not_allocate():
    # a list claiming 2^60 items, an array claiming 2^40 x 2^40 float64s, a bigint array of 2^50 values
    huge = bytes([wire.VERSION, 7]) + bytes([0x80] * 8 + [0x10])
    with pytest.raises(WireError):
        wire.loads(huge)
    arr = bytes([wire.VERSION, 10, 12, 2]) + bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20]) * 2
    with pytest.raises(WireError):
        wire.loads(arr)
    big = bytes([wire.VERSION, 11, 8, 1]) + bytes([0x80] * 7 + [0x02])
    with pytest.raises(WireError):
        wire.loads(big)


def test_unknown_message_type_is_never_imported():
    name = b"os.system"
    payload = bytes([wire.VERSION, 12, len(name)]) + name + wire.dumps({"cmd": "true"})[1:]
    with pytest.raises(WireError, match="unknown message type"):
        wire.loads(payload)


def test_registered_type_with_wrong_fields_is_refused():
    good = wire.dumps(Point(1, "a", np.arange(2)))
    bad = good.replace(b"label", b"lebal")
    with pytest.raises(WireError):
        wire.loads(bad)


def test_invalid_utf8_and_bool_array():
    with pytest.raises(WireError, match="UTF-8"):
        wire.loads(bytes([wire.VERSION, 5, 2, 0xC3, 0x28]))
    with pytest.raises(WireError, match="bool"):
        wire.loads(bytes([wire.VERSION, 10, 1, 1, 2, 1, 7]))


# ---------------------------------------------------------------------------- fuzzing

_SAMPLES = [wire.dumps(x) for x in [
    None, 12345678901234567890, -3, 2.5, "abc", b"xyz", [1, "a", (None, 2.0)],
    {"k": {"n": [1, 2, 3]}, "arr": np.arange(6, dtype="i4").reshape(2, 3)},
    wire.BigIntArray([5, 2**100], width=13), Point(1, "p", np.ones(2)),
    np.linspace(0, 1, 5).astype("f4"), [np.zeros((2, 0)), b"\x00" * 10],
]]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 3 and len(b) > 1:
            i = rng.randrange(len(b))
            b[i:i + rng.randint(1, 8)] = b""
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def test_fuzz_mutated_messages_raise_only_wire_error():
    """10,000 mutated valid messages: each decodes to something or raises WireError."""
    rng = random.Random(1234)
    errors = 0
    for i in range(10_000):
        data = _mutate(rng, rng.choice(_SAMPLES))
        try:
            wire.loads(data, max_bytes=1 << 20)
        except WireError:
            errors += 1
    assert errors > 5_000  # most mutations must be caught, not silently accepted


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_raise_only_wire_error(data):
    try:
        wire.loads(bytes([wire.VERSION]) + data, max_bytes=1 << 16)
    except WireError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(_json)
def test_hypothesis_roundtrip(obj):
    assert wire.loads(wire.dumps(obj)) == obj


def test_he_types_decode_in_a_process_that_never_imported_crypto():
    """A host receives the arbiter's public key before its own code touched any crypto: the codec imports
    nothing (it sits below the schemes, a bare ``atoll.wire`` refuses the name and still has not imported
    ``atoll.crypto``); the federation, the codec's user, loads the HE registry, so keys and ciphertexts decode."""
    import subprocess
    import sys

    from atoll.crypto import he

    pk, _ = he.generate_keypair("paillier", 1024)
    blob = wire.dumps({"pk": pk, "c": pk.encrypt([1.5, -2.0])})
    code = ("import sys, atoll.wire as w\n"
            "from atoll.errors import WireError\n"
            "assert 'atoll.crypto' not in sys.modules\n"
            "blob = sys.stdin.buffer.read()\n"
            "try:\n"
            "    w.loads(blob)\n"
            "    sys.exit('the bare codec decoded a type nobody registered')\n"
            "except WireError as e:\n"
            "    assert 'unknown message type' in str(e), e\n"
            "assert 'atoll.crypto' not in sys.modules\n"
            "import atoll.federation  # what a receiving party's code imports\n"
            "d = w.loads(blob)\n"
            "print(type(d['pk']).__name__, type(d['c']).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["PaillierPublicKey", "CipherArray"]


def test_unknown_name_in_a_provided_name_space_is_still_rejected():
    from atoll.crypto import he  # noqa: F401

    good = wire.dumps(he.generate_keypair("paillier", 1024).public_key)
    bad = good.replace(b"atoll.he.PaillierPublicKey", b"atoll.he.PaillierPublicKez")
    with pytest.raises(WireError, match="unknown message type"):
        wire.loads(bad)
