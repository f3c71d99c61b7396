"""Atoll: federated learning where every party's raw data stays where it is."""

__version__ = "0.1.0"
