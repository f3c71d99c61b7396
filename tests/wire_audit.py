"""Helpers of the wire audits (tests of what crosses the wire)."""

import numpy as np


def arrays(obj):
    """Every numpy array inside a decoded wire value (dicts, lists and tuples walked)."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from arrays(v)
