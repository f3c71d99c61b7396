"""Two-party additive secret sharing over Z_2^64 with fixed point: ``Session`` and ``SharedTensor``.

    sess = Session(ctx, peer="host", party_index=0, provider="dealer", dealer="arbiter",
                   frac_bits=16, trunc="pair")       # or provider="he" / "ot" / a TripleProvider
    x = sess.share(x_mine, owner=0)                   # the owner passes the value, the other None + shape
    y = sess.share(None, owner=1, shape=(n, d))
    z = (x * y + 3.0) @ w - x.sum(axis=0)             # numpy-like; x * y via Beaver, then truncation
    z.reveal()                                        # both parties get the floats
    z.reveal(to=0)                                    # only party 0 (the other gets None)
    sess.timing()                                     # {"offline_s": ..., "online_s": ..., "rounds": ...}

Protocol steps (semi-honest, two parties, one provider of correlated randomness):
  1. sharing a private value: the owner holds x as its share, the other party 0 (no message);
  2. addition, subtraction, public scaling by integers, reshaping, indexing: local;
  3. products: Beaver (:mod:`atoll.secure.mpc.beaver`), one round, then truncation by the
     fractional bits the product gained;
  4. truncation (``trunc=``): ``"pair"`` (default; Escudero et al. CRYPTO'20-style probabilistic
     truncation with a truncation pair: open c = x + 2^62 + r, one round; result floor(x/2^f) or
     +1; exact as long as |x| < 2^62, no wrap probability), ``"exact"`` (``"pair"`` plus the borrow
     [c mod 2^f < r mod 2^f] from a boolean comparison: exactly floor(x/2^f), log2(f) + 1 more
     rounds; results then do not depend on the randomness, so every provider gives identical
     outputs), ``"local"`` (SecureML: no communication, one-ulp error, a wrap with probability
     about |x| / 2^63 per element - see :mod:`atoll.crypto.ring`);
  5. reveal: each party sends its share to the receiving party(ies).

Overflow is detected, not silent. Every tensor carries ``bound``, a public bound on |value|
propagated through the operations (None when unknown, e.g. after comparisons of unbounded
inputs... or when the bound would exceed the ring). ``Session(strict_bounds=True)`` raises
:class:`atoll.crypto.ring.RingOverflow` as soon as an operation *could* leave the ring; by
default such a tensor's bound becomes unknown. ``reveal(checked=True)`` (the default) raises
``RingOverflow`` when a revealed value lies outside its bound, or - bound unknown - outside
``value_limit`` (default 2^(62 - 2f): the range in which a value can still be multiplied); a
wrapped value lands there with overwhelming probability over a tensor of any size.
``sess.all_within(x, limit)`` checks ``|x| <= limit`` securely and reveals one bit (used by
training loops every epoch).

What each party sees: the opened d = x - a, e = y - b of every product and c = x + 2^62 + r of
every truncation (uniform, one-time masked); the XOR-masked words of the boolean circuits;
the values revealed to it, and nothing else. Message keys carry a per-session counter, so
both parties must run the same sequence of operations (as any SPMD program does).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from atoll.crypto import ring
from atoll.crypto.ring import RingOverflow
from atoll.errors import ConfigError, CryptoError
from atoll.secure.mpc import beaver
from atoll.secure.mpc.providers import FixedMask, TripleProvider, as_share, make_provider

U64 = np.uint64
TRUNC_METHODS = ("pair", "exact", "local")
#: the most elements a peer may announce for one shared tensor (2 GiB of shares)
MAX_SHARE_ELEMENTS = 1 << 28
_SHIFT62 = U64(1 << 62)


def _is_integral(x: np.ndarray) -> bool:
    return x.dtype.kind in "iub" or (x.dtype.kind == "f" and bool(np.all(np.isfinite(x)))
                                     and bool(np.all(x == np.rint(x))) and np.abs(x).max(initial=0) < 2 ** 52)


class Session:
    """One party's end of a two-party secret-shared computation (see the module docstring)."""

    def __init__(self, ctx: Any, peer: str, party_index: int, provider: str | TripleProvider = "dealer",
                 frac_bits: int = ring.DEFAULT_FRAC_BITS, trunc: str = "pair", strict_bounds: bool = False,
                 value_limit: float | None = None, methods: dict[str, str] | None = None,
                 **provider_options: Any):
        if party_index not in (0, 1):
            raise ConfigError("party_index is 0 or 1")
        if not 0 < frac_bits <= 28:
            raise ConfigError("frac_bits must be in 1..28 (products need 2 * frac_bits < 62)")
        if trunc not in TRUNC_METHODS:
            raise ConfigError(f"unknown truncation {trunc!r}; use one of {TRUNC_METHODS}")
        self.ctx, self.peer, self.party_index = ctx, peer, int(party_index)
        self.frac_bits, self.trunc, self.strict_bounds = int(frac_bits), trunc, strict_bounds
        self.value_limit = float(value_limit) if value_limit else 2.0 ** (ring.SAFE_BITS - 2 * frac_bits)
        self.methods: dict[str, str] = dict(methods or {})
        self._n = 0
        self.rounds = 0
        self.bytes_sent = 0
        self._online = 0.0
        self._offline = 0.0
        self._depth = 0
        self._t0 = 0.0
        self._p0 = 0.0
        self.provider = (provider if isinstance(provider, TripleProvider)
                         else make_provider(provider, ctx, peer, party_index, **provider_options))

    # ------------------------------------------------------------------ clock
    @contextlib.contextmanager
    def _clock(self) -> Iterator[None]:
        """Online time: wall time in top-level operations minus the provider (offline) time in them."""
        if self._depth == 0:
            self._t0, self._p0 = time.perf_counter(), self._offline
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._online += (time.perf_counter() - self._t0) - (self._offline - self._p0)

    def _from_provider(self, method: str, *args: Any) -> Any:
        """Call the provider, timing it as the offline phase (whatever the provider measures)."""
        tic = time.perf_counter()
        try:
            return getattr(self.provider, method)(*args)
        finally:
            self._offline += time.perf_counter() - tic

    def timing(self) -> dict[str, float]:
        """Seconds spent making correlated randomness (offline) and in the protocol (online)."""
        return {"offline_s": self._offline, "online_s": self._online, "rounds": self.rounds,
                "bytes_sent": self.bytes_sent}

    # ------------------------------------------------------------------ messaging
    def _key(self, kind: str) -> str:
        self._n += 1
        return f"ss{self._n}{kind}"

    def _swap(self, parts: list[np.ndarray], kind: str = "o") -> list[np.ndarray]:
        """Send my parts, receive the peer's (one round)."""
        parts = [np.asarray(p, dtype=U64) for p in parts]
        key = self._key(kind)
        self.ctx.send(self.peer, key, parts)
        self.rounds += 1
        self.bytes_sent += sum(p.nbytes for p in parts)
        theirs = self.ctx.recv(self.peer, key)
        if isinstance(theirs, list) and len(theirs) == len(parts):
            theirs = [as_share(t, p.shape) for t, p in zip(theirs, parts)]
        if (not isinstance(theirs, list) or len(theirs) != len(parts)
                or any(not isinstance(t, np.ndarray) or t.dtype != U64 or t.shape != p.shape
                       for t, p in zip(theirs, parts))):
            raise CryptoError("secret sharing: the peer's shares do not match this party's (shapes or "
                              "types differ): both parties must run the same computation")
        return theirs

    def open(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """Open arithmetic sharings (sum of both shares)."""
        return [p + t for p, t in zip(parts, self._swap(parts))]

    def open_xor(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """Open XOR sharings."""
        return [p ^ t for p, t in zip(parts, self._swap(parts, "x"))]

    # ------------------------------------------------------------------ construction
    def share(self, x: Any = None, owner: int = 0, shape: Sequence[int] | None = None,
              bound: float | None = None, integer: bool = False) -> "SharedTensor":
        """Secret-share a private value of party ``owner`` (the others pass ``shape``).

        ``bound``: a public bound on |x| (the owner's data define it when not given, and it is
        then told to the peer: pass one to keep even that private). ``integer``: encode exactly
        (no fractional bits; e.g. 0/1 labels).
        """
        frac = 0 if integer else self.frac_bits
        if self.party_index == owner:
            if x is None:
                raise ConfigError("the owner of a shared value must pass it")
            a = np.asarray(x, dtype=np.float64)
            share = ring.encode_int(np.rint(a).astype(np.int64)) if integer else ring.encode(a, frac)
            if bound is None:
                bound = float(np.abs(a).max(initial=0.0))
                send = True
            else:
                send = False
            key = self._key("sh")
            self.ctx.send(self.peer, key, {"shape": list(share.shape),
                                           "bound": float(bound) if send else None})
        else:
            key = self._key("sh")
            meta = self.ctx.recv(self.peer, key)
            if not isinstance(meta, dict) or "shape" not in meta:
                raise CryptoError("secret sharing: malformed share announcement")
            try:
                got = tuple(int(s) for s in meta["shape"])
                announced = None if meta.get("bound") is None else float(meta["bound"])
            except (TypeError, ValueError):
                raise CryptoError("secret sharing: malformed share announcement") from None
            if shape is not None and tuple(shape) != got:
                raise CryptoError(f"secret sharing: the owner shares shape {got}, expected {tuple(shape)}")
            if any(d < 0 for d in got) or int(np.prod(got, dtype=np.float64)) > MAX_SHARE_ELEMENTS:
                raise CryptoError(f"secret sharing: the owner announces shape {got}, beyond "
                                  f"{MAX_SHARE_ELEMENTS} elements; share it in parts")
            if announced is not None and not (np.isfinite(announced) and announced >= 0):
                raise CryptoError("secret sharing: the owner announces an impossible bound")
            share = np.zeros(got, dtype=U64)
            if bound is None and announced is not None:
                bound = announced
        # the encoding rounds by up to half a unit: the bound covers the encoded value
        return SharedTensor(self, share, frac, None if bound is None else float(bound) + 2.0 ** -(frac + 1))

    def public(self, x: Any, integer: bool = False) -> "SharedTensor":
        """A public value as a (trivial) sharing: party 0 holds it, party 1 zero."""
        a = np.asarray(x, dtype=np.float64)
        frac = 0 if integer else self.frac_bits
        enc = ring.encode_int(np.rint(a).astype(np.int64)) if integer else ring.encode(a, frac)
        share = enc if self.party_index == 0 else np.zeros_like(enc)
        return SharedTensor(self, share, frac, float(np.abs(a).max(initial=0.0)) + 2.0 ** -(frac + 1))

    def from_share(self, share: np.ndarray, frac: int | None = None, bound: float | None = None
                   ) -> "SharedTensor":
        """Wrap a raw uint64 share (e.g. from a GC operator)."""
        return SharedTensor(self, np.asarray(share, dtype=U64), self.frac_bits if frac is None else frac, bound)

    # ------------------------------------------------------------------ bounds
    def _bound(self, bound: float | None, frac: int, what: str) -> float | None:
        if bound is None:
            return None
        if bound * 2.0 ** frac >= 2.0 ** ring.SAFE_BITS:
            if self.strict_bounds:
                raise RingOverflow(
                    f"{what} may reach {bound:.3g}, which does not fit Z_2^64 with {frac} fractional bits "
                    f"before truncation; scale the inputs down or lower frac_bits (now {self.frac_bits})")
            return None
        return bound

    # ------------------------------------------------------------------ products
    def _ole_bits(self, bits_mine: np.ndarray) -> np.ndarray:
        """Arithmetic shares of b0 xor b1 from each party's private bit (0/1 uint64)."""
        return bits_mine - U64(2) * self._from_provider("ole", bits_mine)

    def mul_shares(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.broadcast_arrays(x, y)
        return beaver.mul(np.ascontiguousarray(x), np.ascontiguousarray(y), self._from_provider("mul", x.shape),
                          self.party_index, self.open)

    def and_shares(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return beaver.and_(x, y, self._from_provider("and_triples", x.shape), self.party_index, self.open_xor)

    def and2_shares(self, x: np.ndarray, y1: np.ndarray, y2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """XOR shares of x & y1 and x & y2 in one round (three words opened with an AND pair)."""
        t = self._from_provider("and_pairs", x.shape)
        if t is None:
            both = self.and_shares(np.stack([x, x]), np.stack([y1, y2]))
            return both[0], both[1]
        a, b, b2, c, c2 = t
        d, e, e2 = self.open_xor([x ^ a, y1 ^ b, y2 ^ b2])
        z1 = c ^ (d & b) ^ (a & e)
        z2 = c2 ^ (d & b2) ^ (a & e2)
        if self.party_index == 0:
            z1, z2 = z1 ^ (d & e), z2 ^ (d & e2)
        return z1, z2

    def matmul_shares(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        m, k = x.shape
        n = y.shape[1]
        return beaver.matmul(x, y, self._from_provider("matmul", m, k, n), self.party_index, self.open)

    # ------------------------------------------------------------------ truncation
    def truncate(self, share: np.ndarray, bits: int, method: str | None = None) -> np.ndarray:
        """Divide a shared value by 2**bits (method: the session's ``trunc`` unless given)."""
        with np.errstate(over="ignore"):
            return self._truncate(np.asarray(share, dtype=U64), bits, method)

    def _truncate(self, share: np.ndarray, bits: int, method: str | None) -> np.ndarray:
        method = method or self.trunc
        if bits == 0:
            return share
        if method == "local":
            return ring.trunc_local(share, bits, self.party_index)
        if method not in ("pair", "exact"):
            raise ConfigError(f"unknown truncation {method!r}; use one of {TRUNC_METHODS}")
        tp = self._from_provider("trunc_pairs", share.shape, bits)
        x = share + (_SHIFT62 if self.party_index == 0 else U64(0))
        (c,) = self.open([x + tp.r])
        c_msb = c >> U64(63)
        c_low = c & U64((1 << 63) - 1)
        p0 = self.party_index == 0
        b = (c_msb if p0 else U64(0)) + tp.r_msb * (U64(1) - U64(2) * c_msb)
        y = ((c_low >> U64(bits)) if p0 else U64(0)) - tp.r_hi + (b << U64(63 - bits))
        if method == "exact":
            y = y - self._less_public(c & U64((1 << bits) - 1), tp.r_low, bits)
        return y - (U64(1 << (62 - bits)) if p0 else U64(0))

    def _less_public(self, c: np.ndarray, r_xor: np.ndarray, bits: int) -> np.ndarray:
        """Arithmetic shares of [c < r] for public c and XOR-shared r, both ``bits`` wide."""
        p0 = self.party_index == 0
        gt = r_xor & ~c                                  # r_i = 1, c_i = 0 (AND with a public word)
        eq = r_xor ^ ((~c) if p0 else U64(0))            # r_i == c_i
        G = prefix_carry(self, gt, eq, bits)
        bit = (G >> U64(bits - 1)) & U64(1)
        return self._ole_bits(bit)

    # ------------------------------------------------------------------ reveal
    def reveal_share(self, share: np.ndarray, to: int | None = None) -> np.ndarray | None:
        """Open a raw share to both parties (``to=None``) or to party ``to`` only."""
        if to is None:
            return self.open([share])[0]
        key = self._key("rv")
        if self.party_index == to:
            theirs = self.ctx.recv(self.peer, key)
            theirs = as_share(theirs, share.shape)
            if not isinstance(theirs, np.ndarray) or theirs.dtype != U64 or theirs.shape != share.shape:
                raise CryptoError("secret sharing: the peer's share does not match")
            return share + theirs
        self.ctx.send(self.peer, key, share)
        self.rounds += 1
        self.bytes_sent += share.nbytes
        return None

    def _check(self, raw: np.ndarray, frac: int, bound: float | None, what: str) -> None:
        v = np.abs(ring.signed(raw).astype(np.float64)) / 2.0 ** frac
        if not v.size:
            return
        worst = float(v.max())
        limit = self.value_limit if bound is None else bound * (1 + 1e-9) + 4.0 * 2.0 ** -frac
        if worst > limit:
            raise RingOverflow(
                f"{what}: a revealed value has magnitude {worst:.3g}, beyond "
                f"{'its tracked bound' if bound is not None else 'the representable range'} {limit:.3g} "
                f"(Z_2^64, {frac} fractional bits): the computation overflowed. Scale the inputs down, "
                f"lower frac_bits, or lower the learning rate")

    def all_within(self, x: "SharedTensor", limit: float) -> bool:
        """Securely check |x| <= limit for every element; both parties learn only the verdict."""
        with self._clock():
            lim = ring.encode(limit, x.frac)
            both = np.concatenate([(lim - x.share.ravel()) if self.party_index == 0 else (U64(0) - x.share.ravel()),
                                   (lim + x.share.ravel()) if self.party_index == 0 else x.share.ravel()])
            neg = ltz_shares(self, both)                 # 1 where limit - x < 0 or limit + x < 0
            total = neg.sum(dtype=U64)
            (out,) = self.open([np.asarray([total], dtype=U64)])
            return int(out[0]) == 0

    # ------------------------------------------------------------------ offline planning
    @contextlib.contextmanager
    def recording(self) -> Iterator[list]:
        """Record the provider requests of a block (a plan to pre-generate with ``offline``)."""
        plan: list = []
        prev = self.provider.recording
        self.provider.recording = plan
        try:
            yield plan
        finally:
            self.provider.recording = prev

    def offline(self, plan: Iterable[tuple]) -> float:
        """Pre-generate correlated randomness for ``plan`` (both parties, same plan)."""
        return self._from_provider("offline", plan)

    def close(self) -> None:
        self.provider.close()

    # ------------------------------------------------------------------ operator choice
    def method(self, op: str, method: str | None) -> str:
        from atoll.secure.mpc import operators

        return method or self.methods.get(op) or operators.DEFAULTS[op]

    def fixed(self, x: "SharedTensor") -> "FixedOperand":
        """Mask a matrix once for many products with fresh right-hand sides (see FixedOperand)."""
        return FixedOperand(x)


def prefix_carry(sess: Session, G: np.ndarray, P: np.ndarray, width: int) -> np.ndarray:
    """Kogge-Stone prefix over XOR-shared words: bit i of the result is the carry out of
    bits 0..i (G: generate, P: propagate, mutually exclusive per bit). ceil(log2 width) rounds."""
    s = 1
    while s < width:
        sh = U64(s)
        last = 2 * s >= width
        if last:
            G = G ^ sess.and_shares(P, G << sh)
        else:
            g, P = sess.and2_shares(P, G << sh, P << sh)
            G = G ^ g
        s *= 2
    return G


def msb_xor(sess: Session, share: np.ndarray) -> np.ndarray:
    """XOR shares (bit 63 of a word) of the most significant bit of a shared ring element,
    by bit decomposition: a parallel prefix adder over the two shares (7 rounds)."""
    p0 = sess.party_index == 0
    zero = np.zeros_like(share)
    u, v = (share, zero) if p0 else (zero, share)
    g = sess.and_shares(u, v)             # x0 & x1
    p = share                             # x0 ^ x1 as XOR shares (x0, x1)
    G = prefix_carry(sess, g, p, 63)      # carries out of bits 0..62
    return (p ^ (G << U64(1)))            # bit 63 = p_63 ^ carry into 63


def ltz_shares(sess: Session, share: np.ndarray) -> np.ndarray:
    """Arithmetic shares of [x < 0] (0/1) for a shared ring element x (two's complement)."""
    from atoll.secure.mpc import operators

    name = sess.method("ltz", None)
    return operators.call(sess, "ltz", name, share)


def _ltz_bitdecomp(sess: Session, share: np.ndarray) -> np.ndarray:
    bit = (msb_xor(sess, share) >> U64(63)) & U64(1)
    return sess._ole_bits(bit)


def _relu_bitdecomp(sess: Session, share: np.ndarray) -> np.ndarray:
    """Shares of max(x, 0): [x >= 0] (the session's ltz) times x, one Beaver product."""
    neg = ltz_shares(sess, share)
    pos = (U64(1) if sess.party_index == 0 else U64(0)) - neg
    return sess.mul_shares(pos, share)


class SharedTensor:
    """One party's share of a secret-shared fixed-point tensor (see the module docstring)."""

    __array_priority__ = 1000

    def __init__(self, session: Session, share: np.ndarray, frac: int, bound: float | None):
        self.session, self.frac, self.bound = session, int(frac), bound
        self.share = np.asarray(share, dtype=U64)

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, ...]:
        return self.share.shape

    @property
    def ndim(self) -> int:
        return self.share.ndim

    @property
    def size(self) -> int:
        return self.share.size

    def __len__(self) -> int:
        return len(self.share)

    def __repr__(self) -> str:
        return f"SharedTensor(shape={self.shape}, frac={self.frac}, bound={self.bound})"

    def _like(self, share: np.ndarray, frac: int | None = None, bound: float | None = ...) -> "SharedTensor":
        return SharedTensor(self.session, share, self.frac if frac is None else frac,
                            self.bound if bound is ... else bound)

    def reveal(self, to: int | None = None, checked: bool = True) -> np.ndarray | None:
        """The plain values (float64; int64 for integer tensors) at ``to`` (None: both)."""
        s = self.session
        with s._clock():
            raw = s.reveal_share(self.share, to)
        if raw is None:
            return None
        if checked:
            s._check(raw, self.frac, self.bound, "reveal")
        return ring.signed(raw).copy() if self.frac == 0 else ring.decode(raw, self.frac)

    # ------------------------------------------------------------------ scale handling
    def _to_frac(self, frac: int) -> np.ndarray:
        """This share at ``frac`` fractional bits (only ever up: a local shift)."""
        if frac == self.frac:
            return self.share
        if frac < self.frac:
            raise CryptoError("internal: cannot lower fractional bits without truncation")
        return self.share << U64(frac - self.frac)

    def _finish(self, share: np.ndarray, frac: int, bound: float | None, what: str) -> "SharedTensor":
        s = self.session
        bound = s._bound(bound, frac, what)
        target = s.frac_bits if frac > s.frac_bits else frac
        if frac > target:
            share = s.truncate(share, frac - target)
            bound = None if bound is None else bound + 2.0 ** -target
        return SharedTensor(s, share, target, bound)

    def _coerce(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            if other.session is not self.session:
                raise CryptoError("cannot combine shared tensors of different sessions")
            return other
        a = np.asarray(other, dtype=np.float64)
        return self.session.public(a, integer=self.frac == 0 and _is_integral(a))

    # ------------------------------------------------------------------ linear operations
    def __add__(self, other: Any) -> "SharedTensor":
        o = self._coerce(other)
        frac = max(self.frac, o.frac)
        b = None if self.bound is None or o.bound is None else self.bound + o.bound
        return SharedTensor(self.session, self._to_frac(frac) + o._to_frac(frac), frac,
                            self.session._bound(b, frac, "a sum"))

    __radd__ = __add__

    def __neg__(self) -> "SharedTensor":
        return self._like(U64(0) - self.share)

    def __sub__(self, other: Any) -> "SharedTensor":
        return self + (-self._coerce(other))

    def __rsub__(self, other: Any) -> "SharedTensor":
        return self._coerce(other) + (-self)

    def __mul__(self, other: Any) -> "SharedTensor":
        s = self.session
        with s._clock():
            if isinstance(other, SharedTensor):
                o = self._coerce(other)
                share = s.mul_shares(self.share, o.share)
                b = None if self.bound is None or o.bound is None else self.bound * o.bound
                return self._finish(share, self.frac + o.frac, b, "a product")
            a = np.asarray(other, dtype=np.float64)
            if _is_integral(a):
                b = None if self.bound is None else self.bound * float(np.abs(a).max(initial=0))
                share = self.share * ring.encode_int(a.astype(np.int64))
                return SharedTensor(s, share, self.frac, s._bound(b, self.frac, "a product"))
            amax = float(np.abs(a).max(initial=0))
            f = s.frac_bits + self._extra_bits(amax)
            b = None if self.bound is None else self.bound * amax
            share = self.share * ring.encode(a, f)
            return self._finish(share, self.frac + f, b, "a product")

    __rmul__ = __mul__

    def _extra_bits(self, amax: float) -> int:
        """Extra fractional bits for a small public multiplier (1/n, a learning rate) so that it
        keeps about frac_bits significant bits, as far as the ring's headroom allows."""
        if amax <= 0 or amax >= 0.5:
            return 0
        s = self.session
        extra = min(int(-math.floor(math.log2(amax))) - 1, 30)
        if self.bound is None:
            return max(extra, 0)
        while extra > 0 and self.bound * amax * 2.0 ** (self.frac + s.frac_bits + extra) >= 2.0 ** ring.SAFE_BITS:
            extra -= 1
        return max(extra, 0)

    def __truediv__(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            from atoll.secure.mpc import functions

            return functions.div(self, other)
        return self * (1.0 / np.asarray(other, dtype=np.float64))

    def square(self) -> "SharedTensor":
        return self * self

    def __matmul__(self, other: Any) -> "SharedTensor":
        s = self.session
        with s._clock():
            if isinstance(other, SharedTensor):
                o = self._coerce(other)
                x, y = self.share, o.share
                vx, vy = x.ndim == 1, y.ndim == 1
                X = x[None, :] if vx else x
                Y = y[:, None] if vy else y
                out = s.matmul_shares(X, Y)
                if vx:
                    out = out[0]
                if vy:
                    out = out[..., 0]
                k = X.shape[1]
                b = None if self.bound is None or o.bound is None else self.bound * o.bound * k
                return self._finish(out, self.frac + o.frac, b, "a matrix product")
            a = np.asarray(other, dtype=np.float64)
            k = a.shape[0]
            if _is_integral(a):
                share = ring.matmul(self.share, ring.encode_int(a.astype(np.int64)))
                b = None if self.bound is None else self.bound * float(np.abs(a).max(initial=0)) * k
                return SharedTensor(s, share, self.frac, s._bound(b, self.frac, "a matrix product"))
            share = ring.matmul(self.share, ring.encode(a, s.frac_bits))
            b = None if self.bound is None else self.bound * float(np.abs(a).max(initial=0)) * k
            return self._finish(share, self.frac + s.frac_bits, b, "a matrix product")

    def __rmatmul__(self, other: Any) -> "SharedTensor":
        s = self.session
        with s._clock():
            a = np.asarray(other, dtype=np.float64)
            k = a.shape[-1]
            if _is_integral(a):
                share = ring.matmul(ring.encode_int(a.astype(np.int64)), self.share)
                b = None if self.bound is None else self.bound * float(np.abs(a).max(initial=0)) * k
                return SharedTensor(s, share, self.frac, s._bound(b, self.frac, "a matrix product"))
            share = ring.matmul(ring.encode(a, s.frac_bits), self.share)
            b = None if self.bound is None else self.bound * float(np.abs(a).max(initial=0)) * k
            return self._finish(share, self.frac + s.frac_bits, b, "a matrix product")

    def sum(self, axis: int | None = None, keepdims: bool = False) -> "SharedTensor":
        n = self.size if axis is None else self.shape[axis]
        b = None if self.bound is None else self.bound * n
        return SharedTensor(self.session, self.share.sum(axis=axis, dtype=U64, keepdims=keepdims),
                            self.frac, self.session._bound(b, self.frac, "a sum"))

    def mean(self, axis: int | None = None, keepdims: bool = False) -> "SharedTensor":
        n = self.size if axis is None else self.shape[axis]
        total = self.sum(axis, keepdims)
        out = total * (1.0 / n)
        out.bound = self.bound if self.bound is None else self.bound + 2.0 ** -self.session.frac_bits
        return out

    def reshape(self, *shape: Any) -> "SharedTensor":
        return self._like(self.share.reshape(*shape))

    def ravel(self) -> "SharedTensor":
        return self._like(self.share.ravel())

    def transpose(self, *axes: Any) -> "SharedTensor":
        return self._like(self.share.transpose(*axes))

    @property
    def T(self) -> "SharedTensor":
        return self._like(self.share.T)

    def __getitem__(self, idx: Any) -> "SharedTensor":
        return self._like(self.share[idx])

    def __setitem__(self, idx: Any, value: "SharedTensor") -> None:
        v = self._coerce(value)
        self.share[idx] = v._to_frac(self.frac) if v.frac <= self.frac else self.session.truncate(
            v.share, v.frac - self.frac)
        if self.bound is not None:
            self.bound = None if v.bound is None else max(self.bound, v.bound)

    def copy(self) -> "SharedTensor":
        return self._like(self.share.copy())

    # ------------------------------------------------------------------ comparisons
    def ltz(self, method: str | None = None) -> "SharedTensor":
        """[x < 0] as a shared 0/1 integer tensor (exact)."""
        from atoll.secure.mpc import operators

        s = self.session
        with s._clock():
            name = s.method("ltz", method)
            return SharedTensor(s, operators.call(s, "ltz", name, self.share), 0, 1.0)

    def __lt__(self, other: Any) -> "SharedTensor":
        return (self - other).ltz()

    def __gt__(self, other: Any) -> "SharedTensor":
        return (self._coerce(other) - self).ltz()

    def __le__(self, other: Any) -> "SharedTensor":
        return 1 - (self._coerce(other) - self).ltz()

    def __ge__(self, other: Any) -> "SharedTensor":
        return 1 - (self - other).ltz()

    def sign(self, method: str | None = None) -> "SharedTensor":
        """1 for x >= 0, -1 for x < 0 (integer tensor)."""
        return 1 - self.ltz(method) * 2

    def relu(self, method: str | None = None) -> "SharedTensor":
        """max(x, 0) (``bitdecomp``: the comparison bit times x, one more product; ``gc``: a
        garbled circuit, when atoll.secure.mpc.gc is in the tree)."""
        from atoll.secure.mpc import operators

        s = self.session
        with s._clock():
            return SharedTensor(s, operators.call(s, "relu", s.method("relu", method), self.share),
                                self.frac, self.bound)

    def abs(self, method: str | None = None) -> "SharedTensor":
        out = self.sign(method) * self
        out.bound = self.bound
        return out

    def where(self, cond: "SharedTensor", other: Any) -> "SharedTensor":
        """cond ? self : other, for a shared 0/1 ``cond`` (integer tensor)."""
        o = self._coerce(other)
        out = o + cond * (self - o)
        out.bound = None if self.bound is None or o.bound is None else max(self.bound, o.bound)
        return out

    # ------------------------------------------------------------------ non-linear (see functions)
    def sigmoid(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.sigmoid(self, method)

    def exp(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.exp(self, method)

    def log(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.log(self, method)

    def reciprocal(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.reciprocal(self, method)

    def sqrt(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.sqrt(self, method)

    def inv_sqrt(self, method: str | None = None) -> "SharedTensor":
        from atoll.secure.mpc import functions

        return functions.inv_sqrt(self, method)


def concatenate(tensors: Sequence[SharedTensor], axis: int = 0) -> SharedTensor:
    """numpy.concatenate of shared tensors of one session (brought to a common scale)."""
    if not tensors:
        raise ConfigError("concatenate needs at least one tensor")
    frac = max(t.frac for t in tensors)
    bounds = [t.bound for t in tensors]
    share = np.concatenate([t._to_frac(frac) for t in tensors], axis=axis)
    return SharedTensor(tensors[0].session, share, frac, None if None in bounds else max(bounds))


def stack(tensors: Sequence[SharedTensor], axis: int = 0) -> SharedTensor:
    frac = max(t.frac for t in tensors)
    bounds = [t.bound for t in tensors]
    share = np.stack([t._to_frac(frac) for t in tensors], axis=axis)
    return SharedTensor(tensors[0].session, share, frac, None if None in bounds else max(bounds))


class FixedOperand:
    """A shared matrix X masked once (E = X - A opened once) for many products ``X @ y`` and
    ``X.T @ y`` with fresh y (SecureML's reuse of the data mask: each product then opens only
    y - B). Falls back to ordinary matrix triples when the provider has no fixed masks.

    What each party sees: E once (uniform: A is a one-time mask of X), then y - B per product.
    """

    def __init__(self, x: SharedTensor):
        if x.ndim != 2:
            raise ConfigError("a fixed operand is a matrix")
        self.x = x
        s = x.session
        with s._clock():
            self.mask: FixedMask | None = s._from_provider("fixed", *x.shape)
            self.e = None if self.mask is None else s.open([x.share - self.mask.a])[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape

    def _product(self, y: SharedTensor, transpose: bool) -> SharedTensor:
        s, x = self.x.session, self.x
        vec = y.ndim == 1
        Y = y.share[:, None] if vec else y.share
        if self.mask is None:
            X = x.share.T if transpose else x.share
            out = s.matmul_shares(np.ascontiguousarray(X), Y)
        else:
            b, c = s._from_provider("fixed_matmul", self.mask, Y.shape[1], transpose)
            (f,) = s.open([Y - b])
            E = self.e.T if transpose else self.e
            A = self.mask.a.T if transpose else self.mask.a
            out = beaver.matmul_opened(np.ascontiguousarray(E), f, np.ascontiguousarray(A), b, c,
                                       s.party_index)
        if vec:
            out = out[:, 0]
        k = x.shape[0] if transpose else x.shape[1]
        bd = None if x.bound is None or y.bound is None else x.bound * y.bound * k
        return x._finish(out, x.frac + y.frac, bd, "a matrix product")

    def __matmul__(self, y: SharedTensor) -> SharedTensor:
        with self.x.session._clock():
            return self._product(y, False)

    def t_matmul(self, y: SharedTensor) -> SharedTensor:
        """X.T @ y."""
        with self.x.session._clock():
            return self._product(y, True)
