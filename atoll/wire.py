"""The safe wire codec: the only way values cross from one party to another.

``dumps(obj) -> bytes`` and ``loads(data, max_bytes=...) -> obj`` accept a closed
set of types and nothing else:

    None, bool, int (any size), float, str, bytes, list, tuple, dict (str keys),
    numpy arrays (allow-listed dtypes, little-endian raw bytes, never object dtype),
    ``BigIntArray`` (arrays of non-negative big integers, fixed-width big-endian:
    ciphertexts), and message types registered with :func:`message` or
    :func:`register`.

Decoding never imports, looks up or calls anything named by the payload except
the constructors of explicitly registered message types. The codec imports no
other part of Atoll (it sits below the schemes): the types above it register
themselves -- :mod:`atoll.crypto.registry` registers every HE backend's public
key and ``CipherArray`` when the backends are imported, and
:mod:`atoll.federation` imports them before it decodes anything. Every malformed,
truncated, oversized, too-deep or otherwise hostile input raises
:class:`atoll.errors.WireError`; sizes are checked before memory is allocated,
so a few bytes can never claim gigabytes, and the decoded value's estimated size in
memory is bounded too (at most ``MAX_EXPANSION`` times the input, plus a small slack:
ten million empty dicts in 20 MB are refused, not built). Types marked ``__wire_forbidden__``
(private keys) refuse to be encoded at all.

Layout: one version byte, then one value. A value is a tag byte followed by its
body; lengths and counts are unsigned LEB128 varints (at most 10 bytes).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, Callable

import numpy as np

from atoll.errors import WireError

__all__ = [
    "BigIntArray",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "VERSION",
    "dumps",
    "dumps_parts",
    "loads",
    "message",
    "register",
]

VERSION = 1
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB
MAX_DEPTH = 64
MAX_NDIM = 32
#: a decoded value may take at most this many times its input's bytes in memory (plus
#: ``EXPANSION_SLACK``): a few bytes of empty dicts must not become gigabytes of objects
MAX_EXPANSION = 16
EXPANSION_SLACK = 32 << 20

_T_NONE, _T_FALSE, _T_TRUE, _T_INT, _T_FLOAT, _T_STR, _T_BYTES = range(7)
_T_LIST, _T_TUPLE, _T_DICT, _T_ARRAY, _T_BIGINTS, _T_MESSAGE = range(7, 13)

_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("?"),
    2: np.dtype("<i1"), 3: np.dtype("<i2"), 4: np.dtype("<i4"), 5: np.dtype("<i8"),
    6: np.dtype("<u1"), 7: np.dtype("<u2"), 8: np.dtype("<u4"), 9: np.dtype("<u8"),
    10: np.dtype("<f2"), 11: np.dtype("<f4"), 12: np.dtype("<f8"),
    13: np.dtype("<c8"), 14: np.dtype("<c16"),
}
_DTYPE_CODES = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}


class BigIntArray:
    """An n-d array of non-negative integers of at most ``width`` bytes each.

    The wire form of ciphertext arrays: each value is written big-endian in
    exactly ``width`` bytes. ``values`` is a flat list in C order.
    """

    __slots__ = ("values", "shape", "width")

    def __init__(self, values: list, shape: tuple[int, ...] | None = None, width: int | None = None):
        self.values = list(values)
        self.shape = (len(self.values),) if shape is None else tuple(int(s) for s in shape)
        if math.prod(self.shape) != len(self.values):
            raise WireError(f"BigIntArray shape {self.shape} does not hold {len(self.values)} values")
        if width is None:
            width = max((max(int(v).bit_length() for v in self.values) + 7) // 8, 1) if self.values else 1
        self.width = int(width)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BigIntArray) and self.shape == other.shape
                and [int(v) for v in self.values] == [int(v) for v in other.values])

    def __repr__(self) -> str:
        return f"BigIntArray(shape={self.shape}, width={self.width})"


@dataclasses.dataclass(frozen=True)
class _Registered:
    name: str
    cls: type
    to_fields: Callable[[Any], dict]
    from_fields: Callable[[dict], Any]


_BY_NAME: dict[str, _Registered] = {}
_BY_CLASS: dict[type, _Registered] = {}

def register(cls: type, name: str, to_fields: Callable[[Any], dict],
             from_fields: Callable[[dict], Any]) -> type:
    """Allow ``cls`` on the wire under ``name``.

    ``to_fields(obj)`` returns a dict of wire types; ``from_fields(d)`` rebuilds
    the object and must validate what it is given (raise ValueError/TypeError on
    bad input; the codec turns that into a WireError).
    """
    if getattr(cls, "__wire_forbidden__", False):
        raise WireError(f"{cls.__name__} is marked as never encodable")
    if name in _BY_NAME and _BY_NAME[name].cls is not cls:
        raise WireError(f"wire name {name!r} is already registered for {_BY_NAME[name].cls.__name__}")
    entry = _Registered(name, cls, to_fields, from_fields)
    _BY_NAME[name] = entry
    _BY_CLASS[cls] = entry
    return cls


def message(name: str) -> Callable[[type], type]:
    """Class decorator registering a dataclass whose fields are wire types."""

    def wrap(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@wire.message needs a dataclass, got {cls.__name__}")
        names = tuple(f.name for f in dataclasses.fields(cls))

        def to_fields(obj: Any) -> dict:
            return {n: getattr(obj, n) for n in names}

        def from_fields(d: dict) -> Any:
            if set(d) != set(names):
                raise ValueError(f"fields {sorted(d)} do not match {sorted(names)}")
            return cls(**d)

        return register(cls, name, to_fields, from_fields)

    return wrap


# --------------------------------------------------------------------------- encode

def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL = [bytes([i]) for i in range(0x80)]  # one-byte varints, the common case


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` (wire types only) to bytes; raise WireError otherwise."""
    return b"".join(dumps_parts(obj))


def dumps_parts(obj: Any) -> list:
    """Like :func:`dumps`, as a list of buffers whose concatenation is the message.

    Large arrays appear as zero-copy memoryviews, so a transport can stream
    them without first joining the whole message in memory.
    """
    parts: list = [bytes([VERSION])]
    _encode(obj, parts, 0)
    return parts


_STR_TAG = bytes([_T_STR])
_BYTES_TAG = bytes([_T_BYTES])


def _encode(obj: Any, out: list, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(obj)
    if t is str:  # fast paths for the commonest exact types; the general chain below handles the rest
        b = obj.encode("utf-8", "surrogatepass")
        out.append(_STR_TAG + _uvarint(len(b)))
        out.append(b)
    elif t is bytes:
        out.append(_BYTES_TAG + _uvarint(len(obj)))
        out.append(obj)
    elif obj is None:
        out.append(bytes([_T_NONE]))
    elif obj is True or obj is False or isinstance(obj, np.bool_):
        out.append(bytes([_T_TRUE if obj else _T_FALSE]))
    elif isinstance(obj, (int, np.integer)) or type(obj).__name__ == "mpz":
        n = int(obj)
        mag = abs(n).to_bytes((abs(n).bit_length() + 7) // 8, "big")
        out.append(bytes([_T_INT, 1 if n < 0 else 0]) + _uvarint(len(mag)))
        out.append(mag)
    elif isinstance(obj, (float, np.floating)):
        out.append(bytes([_T_FLOAT]) + struct.pack("<d", float(obj)))
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        out.append(bytes([_T_STR]) + _uvarint(len(b)))
        out.append(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        out.append(bytes([_T_BYTES]) + _uvarint(len(b)))
        out.append(b)
    elif isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        out.append(bytes([_T_LIST if type(obj) is list else _T_TUPLE]) + _uvarint(len(obj)))
        for item in obj:
            _encode(item, out, depth + 1)
    elif type(obj) is dict:
        out.append(bytes([_T_DICT]) + _uvarint(len(obj)))
        for k, v in obj.items():
            if not isinstance(k, str):
                raise WireError(f"dict keys must be str on the wire, got {type(k).__name__}")
            _encode(k, out, depth + 1)
            _encode(v, out, depth + 1)
    elif isinstance(obj, np.ndarray):
        _encode_array(obj, out)
    elif isinstance(obj, BigIntArray):
        _encode_bigints(obj, out)
    elif getattr(type(obj), "__wire_forbidden__", False):
        raise WireError(f"{type(obj).__name__} must never leave its owner: it cannot be encoded")
    elif type(obj) in _BY_CLASS:
        entry = _BY_CLASS[type(obj)]
        fields = entry.to_fields(obj)
        if type(fields) is not dict:
            raise WireError(f"{entry.name}: to_fields must return a dict")
        name = entry.name.encode()
        out.append(bytes([_T_MESSAGE]) + _uvarint(len(name)))
        out.append(name)
        _encode(fields, out, depth + 1)
    else:
        raise WireError(
            f"type {type(obj).__module__}.{type(obj).__qualname__} is not a wire type; "
            "send plain values, numpy arrays, or register a message type with atoll.wire.message")


def _encode_array(a: np.ndarray, out: list) -> None:
    dt = a.dtype
    code = _DTYPE_CODES.get((dt.kind, dt.itemsize)) if dt.kind in "biufc" else None
    if code is None:
        raise WireError(f"numpy dtype {dt} is not allowed on the wire")
    if a.ndim > MAX_NDIM:
        raise WireError(f"array has {a.ndim} dimensions; at most {MAX_NDIM} are allowed")
    a = np.ascontiguousarray(a, dtype=_DTYPES[code]).reshape(a.shape)  # a 0-d array stays 0-d
    head = bytearray([_T_ARRAY, code, a.ndim])
    for s in a.shape:
        head += _uvarint(s)
    out.append(bytes(head))
    out.append(memoryview(a).cast("B") if a.size else b"")


def _encode_bigints(b: BigIntArray, out: list) -> None:
    head = bytearray([_T_BIGINTS]) + _uvarint(b.width) + bytes([len(b.shape)])
    for s in b.shape:
        head += _uvarint(s)
    out.append(bytes(head))
    w = b.width
    try:
        out.append(b"".join(int(v).to_bytes(w, "big") for v in b.values))
    except OverflowError:
        raise WireError(f"a BigIntArray value is negative or wider than {w} bytes") from None


# --------------------------------------------------------------------------- decode

class _Reader:
    __slots__ = ("buf", "pos", "end", "writable", "budget", "limit")

    def __init__(self, buf: memoryview, writable: bool):
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.writable = writable
        # estimated bytes the decoded objects may take (see MAX_EXPANSION)
        self.limit = self.budget = MAX_EXPANSION * len(buf) + EXPANSION_SLACK

    def spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise WireError(f"a message of {self.end} bytes would decode to more than {self.limit} bytes "
                            f"of objects ({MAX_EXPANSION}x its size): refused as hostile")

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.end - self.pos:
            raise WireError(f"truncated message: need {n} bytes at offset {self.pos}, "
                            f"{self.end - self.pos} left")
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WireError(f"truncated message at offset {self.pos}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def uvarint(self) -> int:
        pos = self.pos
        if pos < self.end and self.buf[pos] < 0x80:  # one-byte varint, the common case
            self.pos = pos + 1
            return self.buf[pos]
        n = shift = 0
        for _ in range(10):
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise WireError("malformed length: varint longer than 10 bytes")

    def left(self) -> int:
        return self.end - self.pos


def loads(data: bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode bytes made by :func:`dumps`. Raises WireError on any bad input.

    Arrays decoded from a ``bytearray`` share its memory (no copy) and are
    writable; from ``bytes`` they are copied.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"loads needs bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    mv = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    r = _Reader(mv, writable=isinstance(data, bytearray))
    if r.left() == 0:
        raise WireError("empty message")
    version = r.byte()
    if version != VERSION:
        raise WireError(f"unsupported wire version {version} (this Atoll speaks {VERSION}); "
                        "upgrade the older party")
    try:
        value = _decode(r, 0)
    except WireError:
        raise
    except RecursionError:
        raise WireError("message nested too deeply") from None
    except Exception as e:  # a registered constructor rejected its fields, etc.
        raise WireError(f"malformed message: {type(e).__name__}: {e}") from None
    if r.left():
        raise WireError(f"{r.left()} trailing bytes after the message")
    return value


def _decode(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"message nested deeper than {MAX_DEPTH} levels")
    tag = r.byte()
    if tag == _T_NONE:
        return None
    if tag == _T_FALSE:
        return False
    if tag == _T_TRUE:
        return True
    if tag == _T_INT:
        sign = r.byte()
        if sign > 1:
            raise WireError(f"bad integer sign byte {sign}")
        mag = r.take(r.uvarint())
        r.spend(32 + len(mag))
        n = int.from_bytes(mag, "big")
        return -n if sign else n
    if tag == _T_FLOAT:
        r.spend(24)
        return struct.unpack("<d", r.take(8))[0]
    if tag == _T_STR:
        try:
            raw = r.take(r.uvarint())
            r.spend(80 + len(raw))
            return str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise WireError(f"string is not valid UTF-8: {e}") from None
    if tag == _T_BYTES:
        raw = r.take(r.uvarint())
        r.spend(33 + len(raw))
        return bytes(raw)
    if tag in (_T_LIST, _T_TUPLE):
        n = r.uvarint()
        if n > r.left():  # each item needs at least one byte
            raise WireError(f"list claims {n} items but only {r.left()} bytes remain")
        r.spend(56 + 8 * n)
        items = [_decode(r, depth + 1) for _ in range(n)]
        return items if tag == _T_LIST else tuple(items)
    if tag == _T_DICT:
        n = r.uvarint()
        if 2 * n > r.left():
            raise WireError(f"dict claims {n} entries but only {r.left()} bytes remain")
        r.spend(64 + 48 * n)
        d = {}
        for _ in range(n):
            if r.byte() != _T_STR:
                raise WireError("dict key is not a string")
            r.pos -= 1
            k = _decode(r, depth + 1)
            if k in d:
                raise WireError(f"duplicate dict key {k!r}")
            d[k] = _decode(r, depth + 1)
        return d
    if tag == _T_ARRAY:
        return _decode_array(r)
    if tag == _T_BIGINTS:
        return _decode_bigints(r)
    if tag == _T_MESSAGE:
        name = r.take(r.uvarint())
        try:
            name_s = str(name, "ascii")
        except UnicodeDecodeError:
            raise WireError("message type name is not ASCII") from None
        entry = _BY_NAME.get(name_s)
        if entry is None:
            raise WireError(f"unknown message type {name_s[:80]!r}")
        if r.byte() != _T_DICT:
            raise WireError(f"message {name_s} has no field dict")
        r.pos -= 1
        fields = _decode(r, depth + 1)
        r.spend(64)
        return entry.from_fields(fields)
    raise WireError(f"unknown type tag {tag} at offset {r.pos - 1}")


def _shape(r: _Reader, ndim: int) -> tuple[int, ...]:
    if ndim > MAX_NDIM:
        raise WireError(f"array claims {ndim} dimensions; at most {MAX_NDIM} are allowed")
    shape = tuple(r.uvarint() for _ in range(ndim))
    if any(s >= 1 << 48 for s in shape):
        raise WireError(f"array dimension too large in shape {shape}")
    return shape


def _decode_array(r: _Reader) -> np.ndarray:
    code = r.byte()
    dt = _DTYPES.get(code)
    if dt is None:
        raise WireError(f"dtype code {code} is not allowed on the wire")
    shape = _shape(r, r.byte())
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes > r.left():
        raise WireError(f"array of shape {shape} needs {nbytes} bytes, only {r.left()} remain")
    r.spend(112 + nbytes)
    raw = r.take(nbytes)
    a = np.frombuffer(raw, dtype=dt)
    if not r.writable:
        a = a.copy()
    if dt == np.dtype("?") and a.size and a.view(np.uint8).max() > 1:
        raise WireError("bool array holds values other than 0 and 1")
    return a.reshape(shape)


def _decode_bigints(r: _Reader) -> BigIntArray:
    width = r.uvarint()
    if width == 0 or width > 1 << 16:
        raise WireError(f"BigIntArray width {width} out of range (1..65536 bytes)")
    shape = _shape(r, r.byte())
    count = math.prod(shape)
    if count * width > r.left():
        raise WireError(f"BigIntArray of shape {shape} needs {count * width} bytes, only {r.left()} remain")
    r.spend(56 + count * (36 + width))
    raw = bytes(r.take(count * width))
    frm = int.from_bytes
    values = [frm(raw[i:i + width], "big") for i in range(0, count * width, width)]
    out = BigIntArray.__new__(BigIntArray)
    out.values, out.shape, out.width = values, shape, width
    return out
