"""Vertical (feature-partitioned) federated models: the guest holds labels, hosts hold extra features.

Linear models over additively homomorphic encryption (one class per role, plus a
scikit-learn style facade that runs every party locally):

* :mod:`~atoll.ml.vertical.hetero_lr` — logistic regression (arbiter or two-party mode),
* :mod:`~atoll.ml.vertical.hetero_linr` — linear regression,
* :mod:`~atoll.ml.vertical.hetero_poisson` — Poisson regression with exposure.

On two-party secret sharing (:mod:`atoll.secure.mpc`):

* :mod:`~atoll.ml.vertical.ss_lr` — logistic and linear regression (SS-SGD),
* :mod:`~atoll.ml.vertical.pearson` — Pearson correlation and VIF across the parties.

Each module registers its algorithms in :mod:`atoll.ml.registry` (one parameter model, the
role classes, model parts, twin); the facades (:mod:`atoll.ml.facade`) and job components
derive from that registration.
"""

# Names load on first use (PEP 562), so that importing one submodule (e.g. the
# light HE worker module, in a freshly spawned worker process) does not import
# every model and scikit-learn.
_EXPORTS = {
    "hetero_linr": ["HeteroLinRArbiter", "HeteroLinRGuest", "HeteroLinRHost", "HeteroLinRParams",
                    "HeteroLinearRegression"],
    "hetero_lr": ["HeteroLRArbiter", "HeteroLRGuest", "HeteroLRHost", "HeteroLRParams", "HeteroLogisticRegression"],
    "hetero_poisson": ["HeteroPoissonArbiter", "HeteroPoissonGuest", "HeteroPoissonHost", "HeteroPoissonParams",
                       "HeteroPoissonRegression"],
    "secureboost": ["HeteroSecureBoost", "SecureBoostGuest", "SecureBoostHost", "SecureBoostParams"],
    "ss_lr": ["SSGLMParams", "SSLRGuest", "SSLRHost", "SSLinRGuest", "SSLinRHost", "SSLinearRegression",
              "SSLogisticRegression"],
    "pearson": ["HeteroPearson", "PearsonGuest", "PearsonHost", "PearsonParams", "hetero_pearson"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
