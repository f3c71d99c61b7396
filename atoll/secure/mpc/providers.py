"""Correlated randomness for two-party secret sharing: one interface, several providers.

A provider serves ONE party (bound at construction to its ``Context``, its peer and its
``party_index``) and hands out this party's shares of

* ``mul(shape)``: Beaver triples ``a, b, c = a * b`` (elementwise, Z_2^64);
* ``matmul(m, k, n)``: matrix triples ``A (m,k), B (k,n), C = A @ B``;
* ``and_triples(shape)``: XOR-shared bit triples on uint64 words (64 AND gates per word);
  ``and_pairs(shape)``: two of them sharing the first operand (None where not offered);
* ``trunc_pairs(shape, f)``: truncation pairs ``r, r_hi = (r mod 2^63) >> f, r_msb`` (arithmetic
  shares) and ``r mod 2^f`` (XOR shares), used by pair-based truncation;
* ``ole(u)``: shares of ``u0 * u1`` where ``u0`` is party 0's private input and ``u1`` party 1's;
* ``fixed(m, k)`` / ``fixed_matmul(mask, n, transpose)``: a reusable mask ``A`` of one matrix and
  fresh triples ``C = A @ B`` (or ``A.T @ B``) for it (SecureML's trick: a data matrix is masked
  and opened once, then every epoch only opens the small right-hand side).

Only ``mul`` and ``matmul`` are abstract; the others have generic defaults built on them (so a
provider written against the two abstract methods, e.g. the OT-based one, works everywhere),
which providers override when they can do better. ``fixed`` returns ``None`` when unsupported;
shared tensors then fall back to fresh matrix triples.

Providers (registry :data:`PROVIDERS`; ``make_provider(name, ctx, peer, party_index, **options)``):

``"dealer"`` - :class:`DealerProvider` with :func:`run_dealer` on a third party (the arbiter or
    anyone). Protocol:
      1. the dealer draws two 16-byte seeds and sends seed_i to party i;
      2. party i expands every share it needs from AES-CTR(seed_i), in request order;
      3. party 1 sends each request (kind and shape only; a batch of them in ``offline``) to the
         dealer, which replays both seeds, computes the correlated value and returns party 1's
         correction share (e.g. ``c1 = (a0 + a1)(b0 + b1) - c0``);
      4. party 0 never talks to the dealer after step 1.
    What each party sees: pseudorandom shares, and (party 1) corrections that are uniformly
    random given its own seed. What the dealer sees: the kinds and shapes of the requests -
    nothing about inputs, shares or results (it never receives a message of the computation;
    it must not collude with a party: semi-honest, non-colluding third party).

``"he"`` - :class:`HEProvider`, two parties and no third. Protocol (Paillier or OU from
    :mod:`atoll.crypto.he`, one key pair per party; the "HE-based" triples of SecureML / SPU's
    Cheetah predecessor):
      1. each party generates a key pair and sends its public key; each checks the peer's
         scheme and modulus size against its own;
      2. for a cross product of private u_me and v_peer: I send Enc_me(u_me); the peer returns
         Enc_me(u_me * v_peer + R) with R uniform in [0, 2^(bits(u v) + 40)), rerandomised, and
         keeps -R mod 2^64; I decrypt and reduce mod 2^64. Both directions run at once;
      3. a triple's ``c_i = a_i b_i + [a_i b_peer] + [a_peer b_i]`` from two cross products
         (matrix triples the same with ``Enc(A) @ B``).
    What each party sees: the peer's ciphertexts (semantically secure) and ``u v + R``,
    statistically hiding the peer's input (40-bit statistical security). No third party.

The OT-based provider (Gilboa multiplication on OT extension) lives in
``atoll.secure.mpc.ot_provider``; ``make_provider("ot", ...)`` imports it and registers its
``OTTripleProvider`` on first use (nothing imports it before). It implements ``mul`` and
``matmul``; AND triples and truncation pairs then come from the generic defaults (64
arithmetic triples per AND word, 64 ``ole`` per truncation pair), which is correct but slow
for comparison-heavy work until it overrides ``and_triples`` / ``ole`` with OT-native ones.

Timing: every provider call is attributed to the *offline* phase by the session's clock
(:class:`atoll.secure.mpc.tensor.Session`), everything else to the *online* phase;
``offline(plan)`` pre-generates a whole plan (one dealer round trip for all of it).
"""

from __future__ import annotations

import abc
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from atoll.crypto import ring
from atoll.errors import ConfigError, CryptoError

U64 = np.uint64
Shape = tuple[int, ...]

#: largest number of ring elements the dealer serves (or stores as fixed masks) in one go
MAX_DEALER_ELEMENTS = 1 << 27
#: statistical security parameter of the HE masks
STAT_BITS = 40


def _shape(shape: Any) -> Shape:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ConfigError(f"negative dimension in shape {shape}")
    return shape


def _size(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


@dataclass
class TruncPair:
    """This party's shares of a truncation pair for ``frac_bits`` (see the module docstring)."""

    r: np.ndarray        # arithmetic share of r (uniform in Z_2^64)
    r_hi: np.ndarray     # arithmetic share of (r mod 2^63) >> frac_bits
    r_msb: np.ndarray    # arithmetic share of r >> 63 (0 or 1)
    r_low: np.ndarray    # XOR share of r mod 2^frac_bits
    frac_bits: int


@dataclass
class FixedMask:
    """A reusable mask A (this party's share ``a``) of one (m, k) matrix; ``id`` is shared."""

    id: int
    shape: tuple[int, int]
    a: np.ndarray


class TripleProvider(abc.ABC):
    """Beaver triples for one party of a two-party computation (bound at construction to ctx, peer, party_index)."""

    name = ""

    #: defaults at class level, so a subclass that does not call ``super().__init__`` (it only
    #: needs ``ctx``, ``peer``, ``party_index``) still gets the generic methods
    recording: list[tuple] | None = None
    seconds = 0.0  # time this provider measured itself (the session times every call anyway)
    _n = 0
    _depth = 0

    def __init__(self, ctx: Any, peer: str, party_index: int):
        if party_index not in (0, 1):
            raise ConfigError("party_index is 0 or 1")
        self.ctx, self.peer, self.party_index = ctx, peer, int(party_index)

    @property
    def _pool(self) -> dict[tuple, deque]:
        return self.__dict__.setdefault("_pool_", defaultdict(deque))

    @property
    def _masks(self) -> dict[int, FixedMask]:
        return self.__dict__.setdefault("_masks_", {})

    # ------------------------------------------------------------------ the interface
    @abc.abstractmethod
    def mul(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of a, b, c = a*b (elementwise, mod 2^64)."""

    @abc.abstractmethod
    def matmul(self, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of A (m,k), B (k,n), C = A@B."""

    # ------------------------------------------------------------------ generic defaults
    def _key(self, kind: str) -> str:
        self._n += 1
        return f"tp{self._n}{kind}"

    def _exchange(self, kind: str, value: Any) -> Any:
        key = self._key(kind)
        self.ctx.send(self.peer, key, value)
        return self.ctx.recv(self.peer, key)

    def ole(self, mine: np.ndarray) -> np.ndarray:
        """Shares of u0 * u1 (elementwise) where this party's private input is ``mine``.

        Default: one Beaver multiplication of the sharings (u0, 0) and (0, u1).
        """
        mine = np.asarray(mine, dtype=U64)
        a, b, c = self.mul(mine.shape)
        zero = np.zeros_like(mine)
        x, y = (mine, zero) if self.party_index == 0 else (zero, mine)
        peer = self._exchange("ole", np.stack([x - a, y - b]))
        if not isinstance(peer, np.ndarray) or peer.dtype != U64 or peer.shape != (2,) + mine.shape:
            raise CryptoError("correlated randomness: the peer's masked values do not match (shape or "
                              "type); both parties must run the same computation")
        d = x - a + peer[0]
        e = y - b + peer[1]
        z = c + d * b + e * a
        return z + d * e if self.party_index == 0 else z

    def and_triples(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """XOR shares of uint64 words a, b, c = a & b."""
        return self._request("and", _shape(shape))

    def and_pairs(self, shape: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
        """XOR shares of a, b, b2, c = a & b, c2 = a & b2 (two AND triples sharing a: the
        prefix adder's two ANDs with one common operand open three words instead of four), or
        None when the provider has no such pairs (two ordinary triples are used then)."""
        return None

    def random_bits(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Shared uniform random bits: (arithmetic shares, this party's XOR share 0/1)."""
        return self._request("bits", _shape(shape))

    def trunc_pairs(self, shape: tuple[int, ...], frac_bits: int) -> TruncPair:
        """Truncation pairs for ``frac_bits`` (see the module docstring)."""
        return self._request("trunc", _shape(shape), int(frac_bits))

    def fixed(self, m: int, k: int) -> FixedMask | None:
        """A reusable mask for one (m, k) matrix, or None if this provider has none."""
        return None

    def fixed_matmul(self, mask: FixedMask, n: int, transpose: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Shares of a fresh B and of C = A @ B (B: (k, n)) or A.T @ B (B: (m, n))."""
        raise CryptoError(f"provider {self.name!r} has no fixed masks")

    # ------------------------------------------------------------------ generic generation
    def _gen_and(self, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The low bits of 64 arithmetic triples per word (a triple mod 2^64 is a triple mod 2,
        and its shares mod 2 are XOR shares)."""
        a, b, c = self.mul((64,) + shape)
        weights = (U64(1) << np.arange(64, dtype=U64)).reshape((64,) + (1,) * len(shape))
        pack = lambda t: np.bitwise_or.reduce((t & U64(1)) * weights, axis=0)  # noqa: E731
        return pack(a), pack(b), pack(c)

    def _gen_bits(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """Each party draws a bit; b = b0 xor b1 = b0 + b1 - 2 b0 b1 (one ``ole``)."""
        mine = ring.random_ring(shape) & U64(1)
        prod = self.ole(mine)
        return mine - U64(2) * prod, mine

    def _gen_trunc(self, shape: Shape, frac_bits: int) -> TruncPair:
        """r assembled from 64 shared random bits per element."""
        arith, xor = self.random_bits((64,) + shape)
        j = np.arange(64, dtype=U64).reshape((64,) + (1,) * len(shape))
        r = (arith << j).sum(axis=0, dtype=U64)
        hi = np.arange(frac_bits, 63)
        r_hi = (arith[hi] << (j[hi] - U64(frac_bits))).sum(axis=0, dtype=U64)
        r_low = (np.bitwise_or.reduce(xor[:frac_bits] << j[:frac_bits], axis=0) if frac_bits
                 else np.zeros(shape, U64))
        return TruncPair(r, r_hi, arith[63].copy(), r_low, frac_bits)

    # ------------------------------------------------------------------ pooling / offline
    def _request(self, kind: str, *args: Any) -> Any:
        """Serve an item from the pool filled by ``offline``, else make it now."""
        key = (kind,) + tuple(args)
        top = self._depth == 0
        if top and self.recording is not None:
            self.recording.append(key)
        pool = self._pool.get(key)
        if pool:
            return pool.popleft()
        t = time.perf_counter()
        self._depth += 1
        try:
            return self._make([key])[0]
        finally:
            self._depth -= 1
            if top:
                self.seconds += time.perf_counter() - t

    def _make(self, keys: Sequence[tuple]) -> list:
        """Make several items (subclasses may batch them; default: one by one)."""
        return [self._make_one(k) for k in keys]

    def _make_one(self, key: tuple) -> Any:
        kind, args = key[0], key[1:]
        if kind == "and":
            return self._gen_and(*args)
        if kind == "bits":
            return self._gen_bits(*args)
        if kind == "trunc":
            return self._gen_trunc(*args)
        if kind == "mul":
            return self.mul(*args)
        if kind == "matmul":
            return self.matmul(*args)
        if kind == "fixed_mm":
            mask = self._masks[args[0]]
            return self.fixed_matmul(mask, args[3], args[4])
        raise CryptoError(f"provider {self.name!r} cannot pre-generate {kind!r}")

    def offline(self, plan: Iterable[tuple]) -> float:
        """Pre-generate the items of ``plan`` (as recorded in ``recording``); both parties must
        pass the same plan. Returns the seconds it took."""
        t = time.perf_counter()
        keys = [tuple(k) for k in plan if k[0] != "fixed"]  # masks get ids in online order
        self._depth += 1
        try:
            for key, item in zip(keys, self._make(keys)):
                self._pool[key].append(item)
        finally:
            self._depth -= 1
        dt = time.perf_counter() - t
        self.seconds += dt
        return dt


    def close(self) -> None:
        """Tell any helper (the dealer) this party is done."""


# =============================================================================== dealer
def _draw(kind: str, args: tuple, prg: ring.PRG, party: int, correction: bool = False) -> dict:
    """The pseudorandom parts of one item for ``party``, drawn in a fixed order.

    Party 1's correction values are not drawn (they come from the dealer); the dealer calls
    this for both parties to replay their streams.
    """
    if kind == "mul":
        (shape,) = args
        out = {"a": prg.ring(shape), "b": prg.ring(shape)}
        if party == 0:
            out["c"] = prg.ring(shape)
    elif kind == "matmul":
        m, k, n = args
        out = {"a": prg.ring((m, k)), "b": prg.ring((k, n))}
        if party == 0:
            out["c"] = prg.ring((m, n))
    elif kind in ("and", "and2"):
        (shape,) = args
        out = {"a": prg.ring(shape), "b": prg.ring(shape)}
        if kind == "and2":
            out["b2"] = prg.ring(shape)
        if party == 0:
            out["c"] = prg.ring(shape)
            if kind == "and2":
                out["c2"] = prg.ring(shape)
    elif kind == "trunc":
        shape, f = args
        out = {"r": prg.ring(shape)}
        if party == 0:
            out.update(r_hi=prg.ring(shape), r_msb=prg.ring(shape), r_low=prg.ring(shape))
    elif kind == "fixed":
        m, k = args
        out = {"a": prg.ring((m, k))}
    elif kind == "fixed_mm":
        handle, rows, cols, n, transpose = args
        out = {"b": prg.ring((rows if transpose else cols, n))}
        if party == 0:
            out["c"] = prg.ring((cols if transpose else rows, n))
    else:
        raise CryptoError(f"unknown correlated-randomness kind {kind!r}")
    return out


def _item_size(kind: str, args: tuple) -> int:
    if kind in ("mul", "and", "and2"):
        return _size(args[0])
    if kind == "trunc":
        return _size(args[0])
    if kind == "matmul":
        m, k, n = args
        return m * k + k * n + m * n
    if kind == "fixed":
        return args[0] * args[1]
    if kind == "fixed_mm":
        return (args[1] + args[2]) * args[3]
    return 0


def _check_item(key: Any) -> tuple:
    """Validate one request from party 1 (the dealer trusts nothing it receives)."""
    if not isinstance(key, (list, tuple)) or not key or key[0] not in _DEALER_KINDS:
        raise CryptoError("dealer: malformed request")
    kind = key[0]
    try:
        if kind in ("mul", "and", "and2"):
            args = (_shape(key[1]),)
        elif kind == "trunc":
            args = (_shape(key[1]), int(key[2]))
            if not 0 <= args[1] < 62:
                raise ValueError
        elif kind == "matmul":
            args = tuple(int(v) for v in key[1:4])
        elif kind == "fixed":
            args = tuple(int(v) for v in key[1:3])
        else:  # fixed_mm
            args = (int(key[1]), int(key[2]), int(key[3]), int(key[4]), bool(key[5]))
    except (TypeError, ValueError, IndexError):
        raise CryptoError(f"dealer: malformed {kind!r} request") from None
    if any(isinstance(a, int) and a < 0 for a in args):
        raise CryptoError("dealer: negative size in a request")
    return (kind,) + args


_DEALER_KINDS = ("mul", "matmul", "and", "and2", "trunc", "fixed", "fixed_mm")


class DealerProvider(TripleProvider):
    """Correlated randomness from a trusted dealer (see the module docstring)."""

    name = "dealer"

    def __init__(self, ctx: Any, peer: str, party_index: int, dealer: str = "arbiter", channel: str = ""):
        super().__init__(ctx, peer, party_index)
        self.dealer = dealer
        # the dealer talks on its own channel at the root of the task, whatever scope the
        # parties' computation is in (the dealer does not follow it)
        self._dctx = ctx.for_task(ctx.task)
        self._channel = f"mpc_dealer{channel}"
        with self._dctx.scope(self._channel):
            seed = self._dctx.recv(dealer, f"seed{self.party_index}")
        if not isinstance(seed, bytes) or len(seed) != 16:
            raise CryptoError("dealer: the seed must be 16 bytes")
        self._prg = ring.PRG(seed)
        self._req = 0

    def _ask(self, keys: list[tuple]) -> list:
        """Party 1: send requests, receive corrections (one round trip)."""
        self._req += 1
        with self._dctx.scope(self._channel):
            self._dctx.send(self.dealer, f"req{self._req}", [list(_wire_key(k)) for k in keys])
            out = self._dctx.recv(self.dealer, f"resp{self._req}")
        if not isinstance(out, list) or len(out) != len(keys):
            raise CryptoError("dealer: response does not match the request")
        return out

    def _make(self, keys: Sequence[tuple]) -> list:
        mine = [k for k in keys if k[0] in _DEALER_KINDS]
        draws = [_draw(k[0], k[1:], self._prg, self.party_index) for k in mine]
        if self.party_index == 1 and mine:
            for d, c in zip(draws, self._ask(mine)):
                if not isinstance(c, dict):
                    raise CryptoError("dealer: malformed response")
                d.update(c)
        made = iter([self._assemble(k, d) for k, d in zip(mine, draws)])
        return [next(made) if k[0] in _DEALER_KINDS else self._make_one(k) for k in keys]

    def _assemble(self, key: tuple, d: dict) -> Any:
        kind = key[0]
        try:
            if kind == "and2":
                sh = d["a"].shape
                return d["a"], d["b"], d["b2"], _u64(d["c"], sh), _u64(d["c2"], sh)
            if kind in ("mul", "matmul", "and"):
                return d["a"], d["b"], _u64(d["c"], d["a"].shape if kind != "matmul"
                                            else (key[1], key[3]))
            if kind == "trunc":
                sh = key[1]
                return TruncPair(d["r"], _u64(d["r_hi"], sh), _u64(d["r_msb"], sh),
                                 _u64(d["r_low"], sh), key[2])
            if kind == "fixed":
                return d["a"]
            _h, rows, cols, n, transpose = key[1:]
            return d["b"], _u64(d["c"], (cols if transpose else rows, n))
        except KeyError:
            raise CryptoError("dealer: a response lacks a share") from None

    def mul(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._request("mul", _shape(shape))

    def matmul(self, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._request("matmul", int(m), int(k), int(n))

    def and_pairs(self, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        return self._request("and2", _shape(shape))

    def fixed(self, m: int, k: int) -> FixedMask:
        a = self._request("fixed", int(m), int(k))
        mask = FixedMask(len(self._masks) + 1, (int(m), int(k)), a)
        self._masks[mask.id] = mask
        return mask

    def fixed_matmul(self, mask: FixedMask, n: int, transpose: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        m, k = mask.shape
        return self._request("fixed_mm", mask.id, m, k, int(n), bool(transpose))

    def close(self) -> None:
        if self.party_index == 1:
            self._req += 1
            with self._dctx.scope(self._channel):
                self._dctx.send(self.dealer, f"req{self._req}", [["done"]])


def as_share(x: Any, shape: tuple | None = None) -> Any:
    """A received share as a uint64 array of ``shape``: the codec sends 0-d arrays as shape (1,)
    (and numpy scalars as ints); anything else is returned unchanged for the caller to refuse."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    elif isinstance(x, int) and not isinstance(x, bool) and 0 <= x < (1 << 64):
        x = np.asarray(x, dtype=U64)
    if (shape is not None and isinstance(x, np.ndarray) and x.shape != tuple(shape)
            and x.size == 1 and tuple(shape) == ()):
        x = x.reshape(())
    return x


def _u64(x: Any, shape: tuple) -> np.ndarray:
    """A received share: exactly a uint64 array of the expected shape."""
    x = as_share(x, shape)
    if not isinstance(x, np.ndarray) or x.dtype != U64 or x.shape != tuple(shape):
        raise CryptoError("dealer: a response share has the wrong type or shape")
    return x


def _wire_key(key: tuple) -> tuple:
    kind, *args = key
    if kind in ("mul", "and", "and2"):
        return (kind, list(args[0]))
    if kind == "trunc":
        return (kind, list(args[0]), args[1])
    return (kind, *args)


def run_dealer(ctx: Any, parties: Sequence[str], max_elements: int = MAX_DEALER_ELEMENTS,
               channel: str = "") -> dict:
    """The dealer's role: serve party ``parties[1]``'s requests until it says done.

    ``parties`` = (party with index 0, party with index 1); ``channel`` tells apart several
    sessions with one dealer in one task (the parties pass the same ``channel``). Returns a small report
    (requests and elements served). The dealer holds fixed masks (their sum A) for
    ``fixed_mm`` requests, at most ``max_elements`` ring elements in all.
    """
    p0, p1 = parties
    ctx = ctx.for_task(ctx.task)
    chan = f"mpc_dealer{channel}"
    seeds = [ring.new_seed(), ring.new_seed()]
    with ctx.scope(chan):
        ctx.send(p0, "seed0", seeds[0])
        ctx.send(p1, "seed1", seeds[1])
    prgs = [ring.PRG(s) for s in seeds]
    fixed: dict[int, np.ndarray] = {}
    stored = 0
    served = requests = 0
    n = 0
    while True:
        n += 1
        with ctx.scope(chan):
            req = ctx.recv(p1, f"req{n}")
        if req == [["done"]]:
            break
        if not isinstance(req, list) or not req:
            raise CryptoError("dealer: malformed request")
        keys = [_check_item(k) for k in req]
        total = sum(_item_size(k[0], k[1:]) for k in keys)
        if total > max_elements:
            raise CryptoError(f"dealer: a request for {total} ring elements is over the limit "
                              f"{max_elements}; ask in smaller batches")
        out = []
        for key in keys:
            kind, args = key[0], key[1:]
            d0 = _draw(kind, args, prgs[0], 0)
            d1 = _draw(kind, args, prgs[1], 1)
            if kind == "and2":
                a = d0["a"] ^ d1["a"]
                out.append({"c": (a & (d0["b"] ^ d1["b"])) ^ d0["c"],
                            "c2": (a & (d0["b2"] ^ d1["b2"])) ^ d0["c2"]})
            elif kind in ("mul", "and"):
                a, b = d0["a"] + d1["a"], d0["b"] + d1["b"]
                if kind == "mul":
                    out.append({"c": a * b - d0["c"]})
                else:
                    a, b = d0["a"] ^ d1["a"], d0["b"] ^ d1["b"]
                    out.append({"c": (a & b) ^ d0["c"]})
            elif kind == "matmul":
                c = ring.matmul(d0["a"] + d1["a"], d0["b"] + d1["b"])
                out.append({"c": c - d0["c"]})
            elif kind == "trunc":
                _shape_, f = args
                r = d0["r"] + d1["r"]
                low63 = r & U64((1 << 63) - 1)
                out.append({"r_hi": (low63 >> U64(f)) - d0["r_hi"],
                            "r_msb": (r >> U64(63)) - d0["r_msb"],
                            "r_low": (r & U64((1 << f) - 1)) ^ d0["r_low"]})
            elif kind == "fixed":
                m, k = args
                if stored + m * k > max_elements:
                    raise CryptoError("dealer: too many fixed masks stored; ask for fewer or smaller")
                stored += m * k
                fixed[len(fixed) + 1] = d0["a"] + d1["a"]
                out.append({})
            else:  # fixed_mm
                handle, rows, cols, nn, transpose = args
                A = fixed.get(handle)
                if A is None or A.shape != (rows, cols):
                    raise CryptoError("dealer: unknown fixed mask in a request")
                B = d0["b"] + d1["b"]
                c = ring.matmul(A.T, B) if transpose else ring.matmul(A, B)
                out.append({"c": c - d0["c"]})
        served += total
        requests += 1
        with ctx.scope(chan):
            ctx.send(p1, f"resp{n}", out)
    return {"requests": requests, "elements": served}


# =============================================================================== HE
class HEProvider(TripleProvider):
    """Two-party triples from additively homomorphic encryption (see the module docstring)."""

    name = "he"

    def __init__(self, ctx: Any, peer: str, party_index: int, scheme: str = "paillier",
                 key_bits: int = 2048, jobs: int = 1):
        super().__init__(ctx, peer, party_index)
        from atoll.crypto import he

        t = time.perf_counter()
        self.jobs = jobs
        self.pk, self.sk = he.generate_keypair(scheme, key_bits)
        peer_pk = self._exchange("pk", self.pk)
        if getattr(peer_pk, "scheme", None) != scheme or getattr(peer_pk, "key_bits", 0) < key_bits:
            raise CryptoError(f"HE provider: the peer's key is not {scheme} with at least {key_bits} "
                              "bits; both parties must use the same scheme and key size")
        if peer_pk.max_int.bit_length() < 128 + 64 + STAT_BITS + 8:
            raise CryptoError("HE provider: keys are too small for 64-bit triples; use >= 512 bits")
        self.peer_pk = peer_pk
        self._enc_fixed: dict[int, Any] = {}
        self.seconds += time.perf_counter() - t

    @staticmethod
    def _ints(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.asarray(x, dtype=U64), dtype=object)

    def _mask(self, shape: Shape, bits: int) -> np.ndarray:
        flat = [secrets.randbits(bits) for _ in range(_size(shape))]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)

    def _reduce(self, sk_plain: np.ndarray) -> np.ndarray:
        mod = 1 << 64
        flat = [int(v) % mod for v in np.asarray(sk_plain, dtype=object).ravel()]
        return np.array(flat, dtype=U64).reshape(np.shape(sk_plain))

    def _cross(self, u_mine: np.ndarray | None, op: Callable[[Any], Any] | None, prod_bits: int,
               send_u: bool = True, enc_peer: Any = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """One symmetric round of cross products.

        I send Enc_me(u_mine) (unless ``send_u`` is False: the peer already holds it); I apply
        ``op`` (a function of the peer's ciphertext, using my own plaintext) to the peer's
        ciphertext (``enc_peer`` if given), mask it and send it back. Returns (my share of
        f(u_mine, v_peer), my share of f(u_peer, v_mine)).
        """
        key = self._key("he")
        if send_u:
            self.ctx.send(self.peer, key + "u", self.pk.encrypt_int(self._ints(u_mine), jobs=self.jobs))
            enc_peer = self.ctx.recv(self.peer, key + "u")
            if getattr(enc_peer, "shape", None) != np.shape(u_mine):
                raise CryptoError("HE provider: the peer's ciphertexts do not match this party's shape")
        if getattr(enc_peer, "pk", None) != self.peer_pk:
            raise CryptoError("HE provider: the peer's ciphertexts are not under its announced key")
        res = op(enc_peer)
        R = self._mask(res.shape, prod_bits + STAT_BITS)
        masked = (res + R).rerandomize(jobs=self.jobs)
        self.ctx.send(self.peer, key + "v", masked)
        back = self.ctx.recv(self.peer, key + "v")
        if getattr(back, "pk", None) != self.pk or back.shape != res.shape:
            raise CryptoError("HE provider: a reply is not under my key")
        mine = self._reduce(self.sk.decrypt_int(back, jobs=self.jobs))
        other = np.uint64(0) - self._reduce(R)
        return mine, other

    def mul(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._request("mul", _shape(shape))

    def matmul(self, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._request("matmul", int(m), int(k), int(n))

    def _make_one(self, key: tuple) -> Any:
        kind, args = key[0], key[1:]
        if kind == "mul":
            return self._gen_mul(*args)
        if kind == "matmul":
            return self._gen_matmul(*args)
        if kind == "fixed_mm":
            return self._gen_fixed_mm(self._masks[args[0]], args[3], args[4])
        return super()._make_one(key)

    def _gen_mul(self, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = ring.random_ring(shape), ring.random_ring(shape)
        bi = self._ints(b)
        s1, s2 = self._cross(a, lambda enc: enc * bi, 128)
        return a, b, a * b + s1 + s2

    def _gen_matmul(self, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        A, B = ring.random_ring((m, k)), ring.random_ring((k, n))
        Bi = self._ints(B)
        s1, s2 = self._cross(A, lambda enc: enc @ Bi, 128 + max(k, 1).bit_length())
        return A, B, ring.matmul(A, B) + s1 + s2

    def ole(self, mine: np.ndarray) -> np.ndarray:
        """Party 0 encrypts, party 1 multiplies (one direction; half the work of a triple)."""
        t = time.perf_counter()
        mine = np.asarray(mine, dtype=U64)
        key = self._key("ole")
        if self.party_index == 0:
            self.ctx.send(self.peer, key, self.pk.encrypt_int(self._ints(mine), jobs=self.jobs))
            back = self.ctx.recv(self.peer, key + "r")
            if getattr(back, "pk", None) != self.pk or back.shape != mine.shape:
                raise CryptoError("HE provider: a reply is not under my key")
            out = self._reduce(self.sk.decrypt_int(back, jobs=self.jobs))
        else:
            enc = self.ctx.recv(self.peer, key)
            if enc.pk != self.peer_pk or enc.shape != mine.shape:
                raise CryptoError("HE provider: the peer's ciphertexts do not match")
            R = self._mask(mine.shape, 128 + STAT_BITS)
            self.ctx.send(self.peer, key + "r", (enc * self._ints(mine) + R).rerandomize(jobs=self.jobs))
            out = np.uint64(0) - self._reduce(R)
        if self._depth == 0:
            self.seconds += time.perf_counter() - t
        return out

    def fixed(self, m: int, k: int) -> FixedMask:
        t = time.perf_counter()
        A = ring.random_ring((m, k))
        enc_peer = self._exchange("fix", self.pk.encrypt_int(self._ints(A), jobs=self.jobs))
        if enc_peer.pk != self.peer_pk or enc_peer.shape != (m, k):
            raise CryptoError("HE provider: the peer's fixed mask does not match")
        mask = FixedMask(len(self._masks) + 1, (m, k), A)
        self._masks[mask.id] = mask
        self._enc_fixed[mask.id] = enc_peer
        self.seconds += time.perf_counter() - t
        return mask

    def fixed_matmul(self, mask: FixedMask, n: int, transpose: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        m, k = mask.shape
        return self._request("fixed_mm", mask.id, m, k, int(n), bool(transpose))

    def _gen_fixed_mm(self, mask: FixedMask, n: int, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
        enc_peer, A = self._enc_fixed[mask.id], mask.a
        m, k = mask.shape
        B = ring.random_ring((m if transpose else k, n))
        Bi = self._ints(B)
        op = (lambda enc: enc.T @ Bi) if transpose else (lambda enc: enc @ Bi)
        s1, s2 = self._cross(None, op, 128 + max(m, k).bit_length(), send_u=False, enc_peer=enc_peer)
        return B, (ring.matmul(A.T, B) if transpose else ring.matmul(A, B)) + s1 + s2


# =============================================================================== registry
PROVIDERS: dict[str, type[TripleProvider]] = {"dealer": DealerProvider, "he": HEProvider}


def register_provider(name: str, cls: type[TripleProvider]) -> None:
    """Make a provider class available by name (the OT module calls this on import)."""
    PROVIDERS[name] = cls


def make_provider(name: str, ctx: Any, peer: str, party_index: int, **options: Any) -> TripleProvider:
    """Construct a provider by name: ``dealer`` (option ``dealer=`` party name), ``he`` (options
    ``scheme``, ``key_bits``, ``jobs``), ``ot`` (once ``atoll.secure.mpc.ot_provider`` exists)."""
    if name == "ot" and name not in PROVIDERS:
        try:
            import importlib

            mod = importlib.import_module("atoll.secure.mpc.ot_provider")
        except ModuleNotFoundError as e:
            if not (e.name and "atoll.secure.mpc.ot_provider".startswith(e.name)):
                raise
        else:
            if "ot" not in PROVIDERS and hasattr(mod, "OTTripleProvider"):
                register_provider("ot", mod.OTTripleProvider)
    cls = PROVIDERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown triple provider {name!r}; known: {sorted(PROVIDERS)}")
    return cls(ctx, peer, party_index, **options)
