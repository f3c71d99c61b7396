"""Every non-linear operator and implementation against numpy on random inputs over its
documented domain, within the error documented in atoll.secure.mpc.functions."""

from __future__ import annotations

import numpy as np

from atoll.secure.mpc import functions as F
from mpc_harness import run2

RNG = np.random.default_rng(11)


def _logu(lo, hi, n=200):
    return np.exp(RNG.uniform(np.log(lo), np.log(hi), n))


def _sig(x):
    return 1 / (1 + np.exp(-x))


# (operator, method, reference, inputs, "abs"/"rel", tolerance) - the table in functions.py
CASES = [
    ("sigmoid", m, _sig, np.concatenate([RNG.uniform(-10, 10, 200), [-40.0, 40.0, 0.0]]), "abs", tol)
    for m, tol in (("piecewise", 5e-3), ("poly", 5e-3), ("exp", 2e-3))
] + [
    ("exp", "taylor", np.exp, RNG.uniform(-12, 3, 200), "abs", 1e-2),
    ("exp", "limit", np.exp, RNG.uniform(-4, 2, 200), "rel", 4e-2),
    ("log", "householder", np.log, _logu(0.1, 100), "abs", 3e-3),
    ("log", "newton", np.log, _logu(0.1, 100), "abs", 2e-2),
] + [(op, m, ref, _logu(0.05, hi), "rel", 5e-3 if (op, m) == ("reciprocal", "goldschmidt") else 2e-3)
     for op, ref, hi in (("reciprocal", lambda x: 1 / x, 64), ("inv_sqrt", lambda x: x ** -0.5, 100),
                         ("sqrt", np.sqrt, 100))
     for m in ("newton", "goldschmidt")]


def test_every_operator_within_its_documented_error():
    # both parties draw the same inputs from RNG: run the draws once, outside
    nums = np.random.default_rng(5).normal(0, 5, 100)
    dens = np.exp(np.random.default_rng(6).uniform(np.log(0.05), np.log(64), 100))

    def fn2(s, idx):
        out = {}
        for op, m, _, x, _, _ in CASES:
            t = s.share(x if idx == 0 else None, owner=0, shape=x.shape)
            out[(op, m)] = getattr(F, op)(t, m).reveal()
        num = s.share(nums if idx == 0 else None, owner=0, shape=nums.shape)
        den = s.share(dens if idx == 1 else None, owner=1, shape=dens.shape)
        out["div"] = {m: F.div(num, den, m).reveal() for m in ("newton", "goldschmidt")}
        return out

    got, _ = run2(fn2)
    for op, m, ref, x, kind, tol in CASES:
        err = np.abs(got[(op, m)] - ref(x))
        if kind == "rel":
            err = err / np.abs(ref(x))
        assert err.max() <= tol, (op, m, kind, err.max())
    for m, v in got["div"].items():
        assert (np.abs(v - nums / dens) / np.maximum(np.abs(nums / dens), 1.0)).max() <= 3e-3, m


def test_sigmoid_implementations_share_one_interface():
    x = np.linspace(-8, 8, 33)

    def fn(s, idx):
        t = s.share(x if idx == 0 else None, owner=0, shape=x.shape)
        return {m: t.sigmoid(m).reveal() for m in ("poly", "piecewise", "exp")}, t.sigmoid().reveal()

    (by_method, default), _ = run2(fn)
    np.testing.assert_allclose(default, by_method["poly"], atol=1e-3)  # the documented default
    for v in by_method.values():
        assert np.all(np.diff(v) >= -2e-3) and np.abs(v - _sig(x)).max() < 5e-3


def test_polyval_and_powers():
    x = RNG.uniform(-1, 1, 50)

    def fn(s, idx):
        t = s.share(x if idx == 0 else None, owner=0, shape=x.shape)
        return [p.reveal() for p in F.powers(t, 5)], F.polyval(t, [1.0, -2.0, 0.5, 0.0, 0.25]).reveal()

    (pw, pv), _ = run2(fn)
    for k, p in enumerate(pw, 1):
        np.testing.assert_allclose(p, x ** k, atol=1e-4)
    np.testing.assert_allclose(pv, 1 - 2 * x + 0.5 * x ** 2 + 0.25 * x ** 4, atol=1e-4)
