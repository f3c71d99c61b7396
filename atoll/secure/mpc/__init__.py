"""Two-party secure computation on additive secret shares over Z_2^64.

* :mod:`~atoll.secure.mpc.tensor`: ``Session`` and ``SharedTensor`` (numpy-like operators,
  Beaver products, truncation, comparisons, checked reveal, fixed operands);
* :mod:`~atoll.secure.mpc.providers`: correlated randomness (``TripleProvider``; ``"dealer"``
  with :func:`run_dealer`, ``"he"``; ``"ot"`` from the OT module when present);
* :mod:`~atoll.secure.mpc.beaver`: the pure Beaver formulas;
* :mod:`~atoll.secure.mpc.functions`: sigmoid, exp, log, reciprocal, sqrt, division;
* :mod:`~atoll.secure.mpc.operators`: the registry of operator implementations.
"""

from atoll.crypto.ring import RingOverflow
from atoll.secure.mpc import functions, operators
from atoll.secure.mpc.providers import (
    PROVIDERS,
    DealerProvider,
    HEProvider,
    TripleProvider,
    make_provider,
    register_provider,
    run_dealer,
)
from atoll.secure.mpc.tensor import FixedOperand, Session, SharedTensor, concatenate, stack

operators._register_builtins()

__all__ = ["Session", "SharedTensor", "FixedOperand", "concatenate", "stack", "TripleProvider",
           "DealerProvider", "HEProvider", "PROVIDERS", "make_provider", "register_provider",
           "run_dealer", "RingOverflow", "functions", "operators"]
