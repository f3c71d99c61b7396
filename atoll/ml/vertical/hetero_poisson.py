"""Vertical (hetero) Poisson regression with exposure over Paillier.

The guest holds the counts ``y``, the exposure ``e`` (optional, default 1) and some
features; hosts hold more features of the same aligned rows. The model is
``E[y] = mu = e * exp(u)`` with ``u = u_g + sum_h X_h w_h``; the residual of the
negative log-likelihood ``mu - y log(mu)`` is ``d = mu - y``, which is *multiplicative*
in the hosts' scores: ``mu = e * exp(u_g) * prod_h exp(u_h)``. This follows FATE's
HeteroPoisson (the hosts encrypt ``exp(u_h)`` instead of ``u_h``); the machinery is
shared with :mod:`~atoll.ml.vertical.hetero_lr` (:mod:`atoll.ml.vertical._glm`).

Protocol, arbiter mode:

0. Hosts send the guest their row count and id digest; a mismatch stops the job
   with a :class:`~atoll.errors.DataError` before any key is made.
1. The arbiter makes a Paillier key pair and sends the public key to all.
2. Per batch, ``host_0`` encrypts ``[[exp(u_0)]]`` and passes it down the chain of hosts,
   each multiplying in its own ``exp(u_h)`` (ciphertext times plaintext); the last host
   sends ``[[P]] = [[prod_h exp(u_h)]]`` to the guest (for the loss each host also sends
   ``[[u_h]]``). The guest forms ``[[d]] = [[P]] * (e exp(u_g)) + [[-y]]`` (its part freshly
   encrypted) and sends it to the hosts.
3. Each party computes ``X_p^T [[d]]``, adds a fresh encrypted uniform mask and sends it
   to the arbiter; the guest also sends the encrypted loss
   ``sum(mu) - sum(y (u_g + log e)) - y . U_H``.
4. The arbiter decrypts and returns the masked gradients; each party unmasks and
   updates its own weights; the arbiter decides when to stop.

Two-party mode (no arbiter): each side has its own key pair; the host sends
``[[exp(u_h)]]_H``; the guest sends ``[[e exp(u_g)]]_G`` and ``[[-y]]_G`` and the host
completes ``[[d]]_G = [[e exp(u_g)]]_G * exp(u_h) + [[-y]]_G``; each gradient is masked
and decrypted by the other side.

Joint prediction: hosts send their partial scores to the guest, which adds them and
applies ``e * exp``.

What each party sees
--------------------
As in :mod:`~atoll.ml.vertical.hetero_lr`: the arbiter sees masked gradients
(nothing), the loss per epoch and each party's weight-change norm; the guest sees
ciphertexts it cannot decrypt, its own gradient, the loss and (at prediction) the
joint scores; hosts see the epoch's row order, ciphertexts they cannot decrypt
(including their predecessors' products in the chain) and their own gradient. The
weight-change norms are sent only with ``early_stopping="weight_diff"`` (to the guest in
two-party mode). Semi-honest security; a non-colluding arbiter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.ml import metrics
from atoll.ml.vertical._glm import (
    POISSON,
    REGRESSOR_DEFAULTS,
    GLMArbiter,
    GLMGuest,
    GLMHost,
    HeteroGLMEstimator,
    HeteroPoissonParams,
    register_glm,
)

__all__ = ["HETERO_POISSON", "HeteroPoissonArbiter", "HeteroPoissonGuest", "HeteroPoissonHost",
           "HeteroPoissonParams", "HeteroPoissonRegression"]


class HeteroPoissonGuest(GLMGuest):
    """Guest of vertical Poisson regression: the counts, the exposure, its own features, the intercept."""

    family = POISSON


class HeteroPoissonHost(GLMHost):
    """Host of vertical Poisson regression: extra features of the same rows, a link of the product chain."""

    family = POISSON


class HeteroPoissonArbiter(GLMArbiter):
    """Arbiter of vertical Poisson regression: the key pair, masked decryptions, the stopping rule."""

    family = POISSON


HETERO_POISSON = register_glm("hetero_poisson", HeteroPoissonParams, HeteroPoissonGuest, HeteroPoissonHost,
                              HeteroPoissonArbiter, "vertical Poisson regression (counts at the guest)",
                              facade_defaults=REGRESSOR_DEFAULTS)


class HeteroPoissonRegression(HeteroGLMEstimator):
    """Vertical Poisson regression with a scikit-learn interface; every party simulated locally.

        model = HeteroPoissonRegression(max_iter=30, random_state=0)
        model.fit({"guest": (X_guest, counts, exposure), "host_0": X_host})
        mu = model.predict({"guest": X_guest_new, "host_0": X_host_new}, exposure=e_new)

    ``exposure`` (optional, positive, one per row) is the guest's third entry or the
    ``exposure=`` argument of ``fit`` / ``predict`` / ``score``. Defaults: full-batch SGD,
    learning rate 0.5, each party whitens its own features (``precondition=True``). The
    learned attributes are listed in :class:`~atoll.ml.vertical._glm.HeteroGLMEstimator`.
    """

    algorithm = HETERO_POISSON

    def predict(self, data: dict, exposure: Any = None) -> np.ndarray:
        """Predicted means ``exposure * exp(score)`` for aligned rows (joint prediction)."""
        return POISSON.mean(self.decision_function(data), self._exposure(data, exposure))

    def score(self, data: dict, y: Any = None, exposure: Any = None) -> float:
        """D², the fraction of Poisson deviance explained (scikit-learn's PoissonRegressor.score)."""
        y = self._labels(data, y)
        mu = self.predict(data, exposure)
        null = np.full_like(y, np.average(y))
        return 1.0 - metrics.mean_poisson_deviance(y, mu) / metrics.mean_poisson_deviance(y, null)
