"""Vertical (feature-partitioned) federated models: the guest holds labels, hosts hold extra features.

Linear models over additively homomorphic encryption (one class per role, plus a
scikit-learn style facade that runs every party locally):

* :mod:`~atoll.ml.vertical.hetero_lr` — logistic regression (arbiter or two-party mode),
* :mod:`~atoll.ml.vertical.hetero_linr` — linear regression,
* :mod:`~atoll.ml.vertical.hetero_poisson` — Poisson regression with exposure.
"""

from atoll.ml.vertical.hetero_linr import (
    HeteroLinearRegression,
    HeteroLinRArbiter,
    HeteroLinRGuest,
    HeteroLinRHost,
)
from atoll.ml.vertical.hetero_lr import (
    HeteroLogisticRegression,
    HeteroLRArbiter,
    HeteroLRGuest,
    HeteroLRHost,
    HeteroLRParams,
)
from atoll.ml.vertical.hetero_poisson import (
    HeteroPoissonArbiter,
    HeteroPoissonGuest,
    HeteroPoissonHost,
    HeteroPoissonRegression,
)

__all__ = [
    "HeteroLinRArbiter", "HeteroLinRGuest", "HeteroLinRHost", "HeteroLinearRegression",
    "HeteroLRArbiter", "HeteroLRGuest", "HeteroLRHost", "HeteroLRParams", "HeteroLogisticRegression",
    "HeteroPoissonArbiter", "HeteroPoissonGuest", "HeteroPoissonHost", "HeteroPoissonRegression",
]
from atoll.ml.vertical.secureboost import HeteroSecureBoost, SecureBoostGuest, SecureBoostHost, SecureBoostParams  # noqa: E402,F401
