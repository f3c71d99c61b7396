"""Fixed-point non-linear functions on shared tensors, each with several implementations.

Every function is a composition of the session's linear operations, Beaver products,
truncations and comparisons (:mod:`atoll.secure.mpc.tensor`), so what each party sees is what
those show: one-time-masked openings only. Accuracies below are the maximum errors measured
against numpy at ``frac_bits = 16`` over the stated domain (tests/secure/mpc/test_functions.py
checks them on random inputs); outside the domain the result is not meaningful.

==============  ===============  ====================================  ==================  ==========
operator        method           how                                   domain              max error
==============  ===============  ====================================  ==================  ==========
sigmoid         ``piecewise``    linear interpolation at 11 knots on   all reals           5e-3 abs
                                 |x| (12 comparisons, 3 stages)
sigmoid         ``poly``         clamp to [-6, 6] (2 comparisons),     all reals           5e-3 abs
                                 odd degree-9 Chebyshev fit in x/6
sigmoid         ``exp``          1 / (1 + exp(-|x|)) by Newton on      all reals           2e-3 abs
                                 [1, 2], mirrored by the sign of x
exp             ``taylor``       exp(x/16) by degree-4 Taylor, then    [-12, 3]            1e-2 abs
                                 4 squarings                                               (3e-2 rel)
exp             ``limit``        (1 + x/256)^256 (8 squarings,         [-4, 2]             4e-2 rel
                                 CrypTen's default; wide-range inits)
log             ``householder``  CrypTen's: 3 iterations of an         [0.1, 100]          3e-3 abs
                                 order-8 Householder step
log             ``newton``       y <- y - 1 + x exp(-y), 4 iterations  [0.1, 100]          2e-2 abs
reciprocal      ``newton``       y <- y (2 - x y), 10 iterations,      [0.05, 64]          2e-3 rel
                                 init 3 exp(0.5 - x) + 0.003
reciprocal      ``goldschmidt``  y (1 + e)(1 + e^2)..., e = 1 - x y0,  [0.05, 64]          5e-3 rel
                                 8 iterations, same init
inv_sqrt        ``newton``       y <- y (3 - x y^2) / 2, 5 iterations  [0.05, 100]         2e-3 rel
inv_sqrt        ``goldschmidt``  coupled g = x y, h = y / 2 iteration  [0.05, 100]         2e-3 rel
sqrt            either           x * inv_sqrt(x) / Goldschmidt's g     [0.05, 100]         2e-3 rel
div             ``newton``       x * reciprocal(y)                     y in [0.05, 64]     3e-3 rel
div             ``goldschmidt``  N, D <- N F, D F with F = 2 - D       y in [0.05, 64]     3e-3 rel
==============  ===============  ====================================  ==================  ==========

Where two implementations exist they trade rounds for accuracy (``poly``: 2 comparisons,
``piecewise``: 12; ``taylor`` exp: 6 rounds, ``limit``: 8) - the seed's "one operator, several
implementations for different scenarios".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from atoll.errors import ConfigError
from atoll.secure.mpc.tensor import SharedTensor, concatenate, stack


def _method(x: SharedTensor, op: str, method: str | None) -> Callable[..., SharedTensor]:
    from atoll.secure.mpc import operators

    return operators.get(op, x.session.method(op, method))


def _bounded(x: SharedTensor, bound: float) -> SharedTensor:
    x.bound = float(bound)
    return x


def powers(x: SharedTensor, n: int) -> list[SharedTensor]:
    """[x, x^2, ..., x^n] in ceil(log2 n) rounds (all products of a round in one Beaver call)."""
    pw: dict[int, SharedTensor] = {1: x}
    have = 1
    while have < n:
        todo = list(range(have + 1, min(2 * have, n) + 1))
        left = stack([pw[k - have] for k in todo])
        right = stack([pw[have] for _ in todo])
        prod = left * right
        for i, k in enumerate(todo):
            pw[k] = prod[i]
        have = todo[-1]
    return [pw[k] for k in range(1, n + 1)]


def polyval(x: SharedTensor, coeffs: Any) -> SharedTensor:
    """sum_k coeffs[k] x^k (public coefficients) with the powers computed in log rounds."""
    c = np.asarray(coeffs, dtype=np.float64)
    deg = len(c) - 1
    out = None
    if deg >= 1:
        pw = powers(x, deg)
        idx = [k for k in range(1, deg + 1) if c[k] != 0.0]
        P = stack([pw[k - 1] for k in idx])                      # (terms, ...)
        w = c[idx].reshape((-1,) + (1,) * x.ndim)
        out = (P * w).sum(axis=0)
    return out + float(c[0]) if out is not None else x.session.public(np.full(x.shape, c[0]))


# ------------------------------------------------------------------------------ sigmoid
_SIG_KNOTS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0])


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _piecewise(a: SharedTensor, knots: np.ndarray, values: np.ndarray) -> SharedTensor:
    """Linear interpolation of ``values`` at ``knots`` (a >= knots[0]), constant past the last knot:
    f(a) = v0 + s0 (a - t0) + sum_i (s_i - s_{i-1}) relu(a - t_i)."""
    slopes = np.diff(values) / np.diff(knots)
    ds = np.diff(np.concatenate([slopes, [0.0]]))               # slope change at knots[1:]
    shifted = stack([a - float(t) for t in knots[1:]])           # (K-1, ...)
    on = 1 - shifted.ltz()                                       # a >= t_i
    relus = on * shifted                                         # (K-1, ...), no truncation
    relus.bound = a.bound
    w = ds.reshape((-1,) + (1,) * a.ndim)
    return (a - float(knots[0])) * float(slopes[0]) + (relus * w).sum(axis=0) + float(values[0])


def sigmoid_piecewise(x: SharedTensor) -> SharedTensor:
    neg = x.ltz()
    sign = 1 - neg * 2
    a = sign * x                                                 # |x|
    a.bound = x.bound
    g = _piecewise(a, _SIG_KNOTS, _sigmoid_np(_SIG_KNOTS)) - 0.5
    return _bounded(sign * g + 0.5, 1.0)


_POLY_R = 6.0


def _sigmoid_poly_coeffs(deg: int = 9) -> np.ndarray:
    u = np.cos(np.linspace(0, np.pi, 4001))                      # Chebyshev-distributed nodes
    cheb = np.polynomial.chebyshev.Chebyshev.fit(u, _sigmoid_np(_POLY_R * u) - 0.5, deg)
    coef = cheb.convert(kind=np.polynomial.Polynomial).coef
    coef[0::2] = 0.0                                             # odd function
    coef[0] = 0.5
    return coef


_POLY_COEF = _sigmoid_poly_coeffs()


def clip(x: SharedTensor, lo: float, hi: float) -> SharedTensor:
    """min(max(x, lo), hi) with two comparisons in one batch."""
    both = stack([x - lo, x - hi])
    bits = both.ltz()                                            # [x < lo], [x < hi]
    below, under_hi = bits[0], bits[1]
    # x < lo -> lo; lo <= x < hi -> x; x >= hi -> hi
    mid = under_hi - below
    out = x.where(mid, 0.0) + below * lo + (1 - under_hi) * hi
    return _bounded(out, max(abs(lo), abs(hi)) + 2.0 ** -x.session.frac_bits)


def sigmoid_poly(x: SharedTensor) -> SharedTensor:
    u = clip(x, -_POLY_R, _POLY_R) * (1.0 / _POLY_R)
    return _bounded(polyval(u, _POLY_COEF), 1.0 + 1e-2)


def sigmoid_exp(x: SharedTensor) -> SharedTensor:
    neg = x.ltz()
    sign = 1 - neg * 2
    a = sign * x
    a.bound = x.bound
    e = exp_limit(-a)                                            # (0, 1]
    e.bound = 1.0 + 1e-3
    r = _recip_unit(e + 1.0)                                     # 1 / (1 + e), in [0.5, 1)
    return _bounded(sign * (r - 0.5) + 0.5, 1.0)


def _recip_unit(d: SharedTensor, iters: int = 3) -> SharedTensor:
    """1/d for d in [1, 2]: linear minimax start 24/17 - 8/17 d, then Newton."""
    y = d * (-8.0 / 17.0) + 24.0 / 17.0
    for _ in range(iters):
        y = y * (2.0 - d * y)
        y.bound = 1.0 + 1e-3
    return y


def sigmoid(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "sigmoid", method)(x)


# ------------------------------------------------------------------------------ exp / log
def exp_limit(x: SharedTensor, iters: int = 8) -> SharedTensor:
    y = x * (1.0 / 2 ** iters) + 1.0
    for _ in range(iters):
        y = y * y
    return y


def exp_taylor(x: SharedTensor, squarings: int = 4) -> SharedTensor:
    y = x * (1.0 / 2 ** squarings)
    y = polyval(y, [1.0, 1.0, 1 / 2, 1 / 6, 1 / 24])
    for _ in range(squarings):
        y = y * y
    return y


def exp(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "exp", method)(x)


def _log_init(x: SharedTensor) -> SharedTensor:
    return x * (1.0 / 120.0) - exp_limit(x * -2.0 - 1.0) * 20.0 + 3.0


def log_householder(x: SharedTensor, iters: int = 3, order: int = 8) -> SharedTensor:
    y = _log_init(x)
    for _ in range(iters):
        h = 1.0 - x * exp_taylor(-y)
        h.bound = 1.0
        pw = powers(h, order)
        y = y - sum((p * (1.0 / k) for k, p in enumerate(pw, 1)), start=x.session.public(np.zeros(x.shape)))
    return y


def log_newton(x: SharedTensor, iters: int = 4) -> SharedTensor:
    y = _log_init(x)
    for _ in range(iters):
        y = y - 1.0 + x * exp_taylor(-y)
    return y


def log(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "log", method)(x)


# ------------------------------------------------------------------------------ reciprocal, sqrt, div
def _recip_init(x: SharedTensor) -> SharedTensor:
    return exp_limit(0.5 - x) * 3.0 + 0.003


def reciprocal_newton(x: SharedTensor, iters: int = 10) -> SharedTensor:
    y = _recip_init(x)
    for _ in range(iters):
        y = y * (2.0 - x * y)
    return y


def reciprocal_goldschmidt(x: SharedTensor, iters: int = 8) -> SharedTensor:
    y = _recip_init(x)
    e = 1.0 - x * y
    for _ in range(iters):
        both = stack([y, e]) * stack([e + 1.0, e])               # y (1 + e), e^2 in one round
        y, e = both[0], both[1]
    return y


def reciprocal(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "reciprocal", method)(x)


def _isqrt_init(x: SharedTensor) -> SharedTensor:
    return exp_limit(-(x * 0.5 + 0.2)) * 2.2 + 0.2 - x * (1.0 / 1024.0)


def inv_sqrt_newton(x: SharedTensor, iters: int = 5) -> SharedTensor:
    y = _isqrt_init(x)
    for _ in range(iters):
        y = y * (3.0 - x * y.square()) * 0.5
    return y


def _goldschmidt_sqrt(x: SharedTensor, iters: int = 5) -> tuple[SharedTensor, SharedTensor]:
    y = _isqrt_init(x)
    g = x * y
    h = y * 0.5
    for _ in range(iters):
        r = 0.5 - g * h
        both = stack([g, h]) * stack([r + 1.0, r + 1.0])
        g, h = both[0], both[1]
    return g, h * 2.0


def inv_sqrt_goldschmidt(x: SharedTensor) -> SharedTensor:
    return _goldschmidt_sqrt(x)[1]


def inv_sqrt(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "inv_sqrt", method)(x)


def sqrt_newton(x: SharedTensor) -> SharedTensor:
    return x * inv_sqrt_newton(x)


def sqrt_goldschmidt(x: SharedTensor) -> SharedTensor:
    return _goldschmidt_sqrt(x)[0]


def sqrt(x: SharedTensor, method: str | None = None) -> SharedTensor:
    return _method(x, "sqrt", method)(x)


def div_newton(x: SharedTensor, y: SharedTensor) -> SharedTensor:
    return x * reciprocal_newton(y)


def div_goldschmidt(x: SharedTensor, y: SharedTensor, iters: int = 8) -> SharedTensor:
    y0 = _recip_init(y)
    both = stack([x, y]) * stack([y0, y0])
    n, d = both[0], both[1]
    for _ in range(iters):
        f = 2.0 - d
        both = stack([n, d]) * stack([f, f])
        n, d = both[0], both[1]
    return n


def div(x: SharedTensor, y: SharedTensor, method: str | None = None) -> SharedTensor:
    """x / y for a positive shared y in the reciprocal's domain."""
    if not isinstance(y, SharedTensor):
        raise ConfigError("div: the denominator must be a SharedTensor (divide by a public value with /)")
    return _method(x, "div", method)(x, y)


IMPLEMENTATIONS: dict[str, dict[str, Callable[..., SharedTensor]]] = {
    "sigmoid": {"piecewise": sigmoid_piecewise, "poly": sigmoid_poly, "exp": sigmoid_exp},
    "exp": {"limit": exp_limit, "taylor": exp_taylor},
    "log": {"householder": log_householder, "newton": log_newton},
    "reciprocal": {"newton": reciprocal_newton, "goldschmidt": reciprocal_goldschmidt},
    "inv_sqrt": {"newton": inv_sqrt_newton, "goldschmidt": inv_sqrt_goldschmidt},
    "sqrt": {"newton": sqrt_newton, "goldschmidt": sqrt_goldschmidt},
    "div": {"newton": div_newton, "goldschmidt": div_goldschmidt},
}

__all__ = ["sigmoid", "exp", "log", "reciprocal", "inv_sqrt", "sqrt", "div", "powers", "polyval", "clip",
           "concatenate"]
