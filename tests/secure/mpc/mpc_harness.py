"""Run a two-party secret-shared computation in threads: ``run2(fn, provider=...)`` calls
``fn(session, party_index)`` at both parties and returns (party 0's result, party 1's result).

HE-provider runs use 512-bit keys (speed; the protocol is the same at 2048 bits)."""

from __future__ import annotations

from typing import Any, Callable

from atoll.federation import Party, launch
from atoll.secure.mpc import Session, run_dealer

HE_KEY_BITS = 512


def _party(ctx: Any, idx: int, fn: Callable, provider: str, options: dict) -> Any:
    opts = dict(options)
    if provider == "dealer":
        opts.setdefault("dealer", "dealer")
    elif provider == "he":
        opts.setdefault("key_bits", HE_KEY_BITS)
    peer = "p1" if idx == 0 else "p0"
    if not isinstance(provider, str):  # a TripleProvider class: constructed as (ctx, peer, party_index)
        provider = provider(ctx, peer, idx)
    sess = Session(ctx, peer, idx, provider=provider, **opts)
    try:
        return fn(sess, idx)
    finally:
        sess.close()


def run2(fn: Callable, provider: Any = "dealer", recorder: Any = None, **options: Any) -> tuple[Any, Any]:
    parties = {"p0": Party("a", _party, {"idx": 0, "fn": fn, "provider": provider, "options": options}),
               "p1": Party("b", _party, {"idx": 1, "fn": fn, "provider": provider, "options": options})}
    if provider == "dealer":
        parties["dealer"] = Party("dealer", run_dealer, {"parties": ["p0", "p1"]})
    out = launch(parties, recorder=recorder, timeout=60)
    return out["p0"], out["p1"]

