"""The operator registry: one interface per secure operator, several implementations by name.

    OPERATORS["ltz"]       {"bitdecomp"}                 + "gc" from atoll.secure.mpc.gc when present
    OPERATORS["relu"]      {"bitdecomp"}                 + "gc" likewise
    OPERATORS["sigmoid"]   {"piecewise", "poly", "exp"}
    OPERATORS["exp"]       {"limit", "taylor"}
    OPERATORS["log"]       {"householder", "newton"}
    OPERATORS["reciprocal"]{"newton", "goldschmidt"}
    OPERATORS["inv_sqrt"]  {"newton", "goldschmidt"}   ("sqrt" likewise)
    OPERATORS["div"]       {"newton", "goldschmidt"}

A caller picks an implementation per call (``x.sigmoid(method="poly")``), per session
(``Session(..., methods={"ltz": "gc"})``) or takes :data:`DEFAULTS`.

Implementations of ``ltz`` and ``relu`` work on raw shares: ``fn(session, share) -> share``
where ``share`` is this party's uint64 additive share of x and the result its uint64 additive
share of the integer bit [x < 0] (0 or 1, *not* fixed point), or of max(x, 0) at x's scale.
Garbled-circuit operators that take the transport explicitly register with ``raw=True`` and
the signature ``fn(ctx, peer, party_index, share) -> share``; each call then runs inside its
own ``ctx.scope("op", n)`` so its messages never collide with the session's::

    from atoll.secure.mpc.operators import register_operator
    register_operator("ltz", "gc", gc.less_than_zero, raw=True)

:data:`GC_FUNCTIONS` does exactly that for ``atoll.secure.mpc.gc`` (``less_than_zero``,
``relu``) the first time an unknown implementation is asked for, so ``method="gc"`` works as
soon as that module is in the tree, and nothing imports it before.

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

DEFAULTS: dict[str, str] = {"ltz": "bitdecomp", "relu": "bitdecomp", "sigmoid": "poly", "exp": "taylor", "log": "householder",
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


#: raw-share functions of the GC module (``fn(ctx, peer, party_index, share) -> share``),
#: registered as implementation ``"gc"`` of these operators as soon as the module imports
GC_FUNCTIONS = {"ltz": "less_than_zero", "relu": "relu"}


def _load_plugins() -> None:
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # not built in this tree
            raise
        if name.endswith(".gc"):
            for op, fn in GC_FUNCTIONS.items():
                if "gc" not in OPERATORS.get(op, {}) and callable(getattr(mod, fn, None)):
                    register_operator(op, "gc", getattr(mod, fn), raw=True)


def get(op: str, name: str) -> Callable[..., Any]:
    impls = OPERATORS.get(op, {})
    if name not in impls:
        _load_plugins()
        impls = OPERATORS.get(op, {})
    if name not in impls:
        raise ConfigError(f"no implementation {name!r} of secure operator {op!r}; known: {sorted(impls)}")
    return impls[name]


def call(session: Any, op: str, name: str, share: Any) -> Any:
    """Run a raw-share operator (``ltz``, ``relu``) implementation."""
    fn = get(op, name)
    if (op, name) in _RAW:
        ctx = session.ctx
        with ctx.scope("op", session._key(op)):
            return fn(ctx, session.peer, session.party_index, share)
    return fn(session, share)


def _register_builtins() -> None:
    from atoll.secure.mpc import functions, tensor

    register_operator("ltz", "bitdecomp", tensor._ltz_bitdecomp)
    register_operator("relu", "bitdecomp", tensor._relu_bitdecomp)
    for op, impls in functions.IMPLEMENTATIONS.items():
        for name, fn in impls.items():
            register_operator(op, name, fn)
