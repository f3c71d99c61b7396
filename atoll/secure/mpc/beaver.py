"""Beaver multiplication as pure functions (the transport is injected as ``open_fn``).

Two parties hold additive shares over Z_2^64 (``uint64``, wrapping). With a triple
``a, b, c = a*b`` from a provider (see :mod:`atoll.secure.mpc.providers`), the product of
``x`` and ``y`` costs one opening round (Beaver, CRYPTO'91):

    1. each party opens d = x - a and e = y - b (``open_fn`` sends this party's shares of
       both and returns the sums);
    2. z_i = c_i + d * b_i + a_i * e (+ d * e at party 0).

Matrices the same with ``@`` (and the exact ring matmul of :func:`atoll.crypto.ring.matmul`);
AND of XOR-shared words the same with ``&`` and ``^``.

What each party sees: d and e, uniformly random because a and b are (one-time masks).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from atoll.crypto import ring

OpenFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def mul(x: np.ndarray, y: np.ndarray, triple: tuple, party_index: int, open_fn: OpenFn) -> np.ndarray:
    """This party's share of x * y (elementwise, same shapes)."""
    a, b, c = triple
    d, e = open_fn([x - a, y - b])
    z = c + d * b + a * e
    return z + d * e if party_index == 0 else z


def matmul(x: np.ndarray, y: np.ndarray, triple: tuple, party_index: int, open_fn: OpenFn) -> np.ndarray:
    """This party's share of x @ y (2-D)."""
    a, b, c = triple
    d, e = open_fn([x - a, y - b])
    return matmul_opened(d, e, a, b, c, party_index)


def matmul_opened(d: np.ndarray, e: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                  party_index: int) -> np.ndarray:
    """Step 2 of a matrix product once d = x - a and e = y - b are open (two ring matmuls)."""
    left = ring.matmul(d, e + b) if party_index == 0 else ring.matmul(d, b)
    return c + left + ring.matmul(a, e)


def and_(x: np.ndarray, y: np.ndarray, triple: tuple, party_index: int, open_fn: OpenFn) -> np.ndarray:
    """This party's XOR share of x & y (bitwise on uint64 words)."""
    a, b, c = triple
    d, e = open_fn([x ^ a, y ^ b])
    z = c ^ (d & b) ^ (a & e)
    return z ^ (d & e) if party_index == 0 else z
