"""Canary release and rollback: which model version scores which request id.

The router keeps a ``stable`` version and, during a canary, a ``canary`` version with the share
``fraction`` of traffic. The choice is a pure function of the id: SHA-256 of a per-router salt
and the id, read as a number in [0, 1), below ``fraction`` → canary. So the same id scores with
the same version on every call and on every guest replica (the salt is part of the config), and
the share converges to ``fraction`` over many ids. :meth:`promote` makes the canary stable
(keeping the old stable for rollback), :meth:`rollback` restores the previous version: every id
scores exactly as before the release.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from atoll.errors import ConfigError


def bucket(salt: str, request_id: str) -> float:
    """Where ``request_id`` falls in [0, 1) for this salt (uniform, deterministic)."""
    h = hashlib.sha256(f"{salt}\x00{request_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


@dataclass(frozen=True)
class Routes:
    stable: str
    canary: str | None = None
    fraction: float = 0.0
    previous: str | None = None


class VersionRouter:
    """Stable / canary versions and the id → version rule (see the module docstring)."""

    def __init__(self, stable: str, canary: str | None = None, fraction: float = 0.0, salt: str = "atoll"):
        self.salt = salt
        self._lock = threading.Lock()
        self._routes = Routes(stable)
        if canary is not None:
            self.start_canary(canary, fraction)

    @property
    def routes(self) -> Routes:
        return self._routes

    def version_for(self, request_id: str) -> str:
        r = self._routes
        if r.canary is not None and bucket(self.salt, request_id) < r.fraction:
            return r.canary
        return r.stable

    def start_canary(self, version: str, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"canary fraction {fraction} must be between 0 and 1")
        with self._lock:
            if version == self._routes.stable:
                raise ConfigError(f"{version!r} is already the stable version")
            self._routes = Routes(self._routes.stable, version, float(fraction), self._routes.previous)

    def promote(self) -> None:
        """The canary becomes stable for every id; the old stable is kept for :meth:`rollback`."""
        with self._lock:
            r = self._routes
            if r.canary is None:
                raise ConfigError("no canary to promote")
            self._routes = Routes(r.canary, None, 0.0, r.stable)

    def rollback(self) -> None:
        """Drop the canary, or (after a promotion) restore the previous stable version."""
        with self._lock:
            r = self._routes
            if r.canary is not None:
                self._routes = Routes(r.stable, None, 0.0, r.previous)
            elif r.previous is not None:
                self._routes = Routes(r.previous, None, 0.0, None)
            else:
                raise ConfigError("nothing to roll back: no canary and no previous version")

    def versions(self) -> set[str]:
        r = self._routes
        return {v for v in (r.stable, r.canary) if v is not None}
