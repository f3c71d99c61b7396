"""Errors raised by Atoll. Each message says what happened and what to do."""

from __future__ import annotations


class AtollError(Exception):
    """Base class of every error Atoll raises on purpose."""


class WireError(AtollError):
    """A value could not be encoded, or received bytes are not a valid message."""


class FederationError(AtollError):
    """A message could not be delivered or received. ``peer``: the party it concerns, when one
    does (a party name of the job, never data: a failure summary may name it)."""

    def __init__(self, *args: object, peer: str | None = None):
        super().__init__(*args)
        self.peer = peer


class FederationTimeout(FederationError):
    """A party did not send an expected message in time."""


class PeerFailed(FederationError):
    """A peer party raised an error, died or disconnected."""


class UnknownParty(FederationError):
    """A party or role name that is not part of this job."""


class AuthError(FederationError):
    """A certificate was refused, or a peer tried to speak for another party."""


class CryptoError(AtollError):
    """Misuse of a cryptographic primitive: wrong key, overflow, bad range."""


class DataError(AtollError):
    """Input data is malformed or does not match what the protocol needs."""


class ConfigError(AtollError):
    """A job file, parameter or command-line option is invalid."""
