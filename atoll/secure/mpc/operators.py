"""The operator registry: one interface per secure operator, several implementations by name.

    OPERATORS["ltz"]       {"bitdecomp": ...}            + "gc" once atoll.secure.mpc.gc registers it
    OPERATORS["sigmoid"]   {"piecewise", "poly", "exp"}
    OPERATORS["exp"]       {"limit", "taylor"}
    OPERATORS["log"]       {"householder", "newton"}
    OPERATORS["reciprocal"]{"newton", "goldschmidt"}
    OPERATORS["inv_sqrt"]  {"newton", "goldschmidt"}   ("sqrt" likewise)
    OPERATORS["div"]       {"newton", "goldschmidt"}

A caller picks an implementation per call (``x.sigmoid(method="poly")``), per session
(``Session(..., methods={"ltz": "gc"})``) or takes :data:`DEFAULTS`.

Implementations of ``ltz`` work on raw shares: ``fn(session, share) -> share`` where ``share``
is this party's uint64 additive share of x and the result its uint64 additive share of the
integer bit [x < 0] (0 or 1, *not* fixed point). Garbled-circuit operators that take the
transport explicitly register with ``raw=True`` and the signature
``fn(ctx, peer, party_index, share) -> share``; each call then runs inside its own
``ctx.scope("op", n)`` so its messages never collide with the session's::

    from atoll.secure.mpc.operators import register_operator
    register_operator("ltz", "gc", gc_less_than_zero, raw=True)

Every other operator's implementations take and return :class:`SharedTensor`
(``fn(x, **options) -> SharedTensor``; ``div`` takes two).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from typing import Any, Callable

from atoll.errors import ConfigError

OPERATORS: dict[str, dict[str, Callable[..., Any]]] = defaultdict(dict)
_RAW: set[tuple[str, str]] = set()

DEFAULTS: dict[str, str] = {"ltz": "bitdecomp", "sigmoid": "poly", "exp": "taylor", "log": "householder",
                            "reciprocal": "newton", "inv_sqrt": "newton", "sqrt": "newton",
                            "div": "newton"}

#: modules that may register more implementations when imported (absent ones are skipped)
PLUGINS = ("atoll.secure.mpc.gc",)


def register_operator(op: str, name: str, fn: Callable[..., Any], raw: bool = False) -> None:
    """Register implementation ``name`` of operator ``op`` (see the module docstring)."""
    OPERATORS[op][name] = fn
    if raw:
        _RAW.add((op, name))
    else:
        _RAW.discard((op, name))


def _load_plugins() -> None:
    for mod in PLUGINS:
        try:
            importlib.import_module(mod)
        except ImportError:
            continue


def get(op: str, name: str) -> Callable[..., Any]:
    impls = OPERATORS.get(op, {})
    if name not in impls:
        _load_plugins()
        impls = OPERATORS.get(op, {})
    if name not in impls:
        raise ConfigError(f"no implementation {name!r} of secure operator {op!r}; known: {sorted(impls)}")
    return impls[name]


def call(session: Any, op: str, name: str, share: Any) -> Any:
    """Run a raw-share operator (``ltz``) implementation."""
    fn = get(op, name)
    if (op, name) in _RAW:
        ctx = session.ctx
        with ctx.scope("op", session._key(op)):
            return fn(ctx, session.peer, session.party_index, share)
    return fn(session, share)


def _register_builtins() -> None:
    from atoll.secure.mpc import functions, tensor

    register_operator("ltz", "bitdecomp", tensor._ltz_bitdecomp)
    for op, impls in functions.IMPLEMENTATIONS.items():
        for name, fn in impls.items():
            register_operator(op, name, fn)
