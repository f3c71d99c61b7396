"""Atoll: federated learning where every party's raw data stays where it is."""

from atoll._version import __version__

__all__ = ["__version__"]
