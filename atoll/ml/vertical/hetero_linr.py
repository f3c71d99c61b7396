"""Vertical (hetero) linear regression over Paillier: squared loss, same protocol as hetero LR.

The guest holds the continuous label ``y`` and some features, each host more
features of the same aligned rows. The residual of the squared loss
``(u - y)^2 / 2`` is exactly linear in the score, ``d = u - y`` with
``u = u_g + sum_h X_h w_h``, so no approximation is needed. This is FATE's hetero
LinR (the protocol of Hardy et al., arXiv:1711.10677, applied to the squared
loss); the machinery is shared with :mod:`~atoll.ml.vertical.hetero_lr`
(:mod:`atoll.ml.vertical._glm`).

Protocol, arbiter mode:

0. Hosts send the guest their row count and id digest; a mismatch stops the job
   with a :class:`~atoll.errors.DataError` before any key is made.
1. The arbiter makes a Paillier key pair and sends the public key to all.
2. Per batch, each host sends ``[[u_h]]`` (and, for the loss, ``[[|u_h|^2]]`` and
   encrypted cross terms between hosts); the guest forms
   ``[[d]] = sum_h [[u_h]] + [[u_g - y]]`` (its part freshly encrypted) and sends it to
   the hosts.
3. Each party computes ``X_p^T [[d]]``, adds a fresh encrypted uniform mask and sends it
   to the arbiter; the guest also sends the encrypted loss
   ``sum((u_g - y)^2 + 2 (u_g - y) U_H + U_H^2) / 2``.
4. The arbiter decrypts and returns the masked gradients; each party unmasks and
   updates its own weights; the arbiter decides when to stop.

Two-party mode (no arbiter): as in hetero LR, each side has its own key pair; the
host sends ``[[u_h]]_H``, the guest ``[[u_g - y]]_G``; each gradient is completed
under the other's key, masked, and decrypted by the other side.

Joint prediction: hosts send their partial scores to the guest, which adds them.

What each party sees
--------------------
Exactly as in :mod:`~atoll.ml.vertical.hetero_lr`: the arbiter sees masked
gradients (nothing), the loss per epoch and each party's weight-change norm; the
guest sees ciphertexts it cannot decrypt, its own gradient, the loss and (at
prediction) the joint scores; hosts see the epoch's row order, ciphertexts they
cannot decrypt and their own gradient. In two-party mode each side decrypts only
the other's masked values; with ``early_stopping="weight_diff"`` the guest also gets the
host's squared weight-change norm per epoch (the arbiter's job in arbiter mode).
Semi-honest security; a non-colluding arbiter.
"""

from __future__ import annotations

from typing import Any

from atoll.ml import metrics
from atoll.ml.vertical._glm import (
    LINEAR,
    REGRESSOR_DEFAULTS,
    GLMArbiter,
    GLMGuest,
    GLMHost,
    HeteroGLMEstimator,
    HeteroLinRParams,
    register_glm,
)

__all__ = ["HETERO_LINR", "HeteroLinRArbiter", "HeteroLinRGuest", "HeteroLinRHost", "HeteroLinRParams",
           "HeteroLinearRegression"]


class HeteroLinRGuest(GLMGuest):
    """Guest of vertical linear regression: the continuous label, its own features, the intercept."""

    family = LINEAR


class HeteroLinRHost(GLMHost):
    """Host of vertical linear regression: extra features of the same rows, never labels."""

    family = LINEAR


class HeteroLinRArbiter(GLMArbiter):
    """Arbiter of vertical linear regression: the key pair, masked decryptions, the stopping rule."""

    family = LINEAR


HETERO_LINR = register_glm("hetero_linr", HeteroLinRParams, HeteroLinRGuest, HeteroLinRHost, HeteroLinRArbiter,
                           "vertical linear regression", facade_defaults=REGRESSOR_DEFAULTS)


class HeteroLinearRegression(HeteroGLMEstimator):
    """Vertical linear regression with a scikit-learn interface; every party simulated locally.

        model = HeteroLinearRegression(max_iter=30, random_state=0)
        model.fit({"guest": (X_guest, y), "host_0": X_host})
        y_hat = model.predict({"guest": X_guest_new, "host_0": X_host_new})

    Defaults: full-batch SGD, learning rate 0.5, each party whitens its own features
    (``precondition=True``; the job component keeps :class:`~atoll.ml.vertical._glm.GLMParams`'
    defaults). The learned attributes are listed in :class:`~atoll.ml.vertical._glm.HeteroGLMEstimator`.
    """

    algorithm = HETERO_LINR

    def predict(self, data: dict) -> Any:
        """Predicted values for aligned rows (joint prediction)."""
        return self.decision_function(data)

    def score(self, data: dict, y: Any = None) -> float:
        """R² on labelled rows (scikit-learn's ``score`` for regressors)."""
        return metrics.r2(self._labels(data, y), self.predict(data))
