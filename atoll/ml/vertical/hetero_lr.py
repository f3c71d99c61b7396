"""Vertical (hetero) logistic regression over Paillier: with an arbiter, or between two parties.

The guest holds the labels ``y`` (0/1) and some features; each host holds more
features of the same, already aligned rows (PSI is its own component). The
logistic loss is replaced by its second-order Taylor expansion around 0, so the
residual is linear in the score: ``d = 0.25 u + 0.5 - y`` (``u = u_g + sum_h u_h``,
``u_p = X_p w_p``), equivalently ``0.25 u - 0.5 s`` for labels ``s`` in {-1, 1}.

``approximation="guest_taylor"`` instead expands the loss around the guest's own
score: ``d = sigmoid(u_g) + sigmoid'(u_g) U_H - y`` (exact in the guest's part, linear
in the hosts'); the protocol below is unchanged except that the guest multiplies
``[[U_H]]`` by ``sigmoid'(u_g)`` row by row before adding its fresh part.

Protocol, arbiter mode (Hardy et al., "Private federated learning on vertically
partitioned data via entity resolution and additively homomorphic encryption",
arXiv:1711.10677, 2017; FATE's hetero LR). Per job:

0. Every host sends the guest its row count and a digest of its row ids; the
   guest checks they match its own (and that all parties run the same
   parameters) and tells everyone; a mismatch stops the job with a
   :class:`~atoll.errors.DataError` before any key is made.
1. The arbiter C creates a Paillier key pair and sends the public key to the
   guest and the hosts.

Per epoch the guest draws the row order (seeded) and sends it to the hosts; per batch:

2. Each host computes ``u_h = X_h w_h`` and sends ``[[u_h]]`` to the guest (with
   ``compute_loss``: also ``[[|u_h|^2]]``, and ``[[u_h]]`` to later hosts, which add
   their encrypted cross terms ``2 u_j . u_h``). The guest forms the encrypted residual
   ``[[4d]] = sum_h [[u_h]] + [[u_g + 2 - 4y]]`` (its own part freshly encrypted, so a
   host cannot strip it off its ciphertext) and sends it to the hosts.
3. Every party computes its encrypted gradient ``X_p^T [[4d]]`` with the engine's
   multi-exponentiation kernel, adds a fresh encryption of a uniform mask and sends
   it to the arbiter; the guest also sends the encrypted batch loss
   ``sum(log 2 - s u / 2 + u^2 / 8)``.
4. The arbiter decrypts and returns each masked gradient to its owner, who
   removes the mask, scales by ``0.25 / n_batch`` and updates its own weights with its
   own optimizer (SGD or Adam, learning-rate decay, L1/L2). At the end of the epoch
   (``early_stopping="weight_diff"`` only) every party sends the arbiter the squared
   norm of its weight change; the arbiter checks convergence (loss change or
   weight-change norm) and tells everyone whether to stop.

Two-party mode (no arbiter; after Yang et al., "Parallel distributed logistic
regression for vertical federated learning without third-party coordinator",
arXiv:1911.09824, 2019). Each side makes its own key pair, so nobody ever decrypts
another party's data, and each protects what it asks the other to decrypt with its
own uniform mask. This differs on purpose from the single-key variant (FATE 2's
coordinated LR without arbiter: only the guest holds a key and the host hides its
gradient with a mask and noise): there the guest needs the full residual ``d`` for its
own gradient, and ``d`` together with its own part gives it ``u_h = X_h w_h`` row by
row unless the host adds noise, which then biases the guest's gradient. With a key
pair per side the guest gets its exact gradient and never ``u_h`` or ``d``:

1'. Guest and host exchange public keys.
2'. The host sends ``[[u_h]]_H`` (its own key). The guest sends
    ``[[u_g + 2 - 4y]]_G`` (its key) to the host.
3'. Host gradient: the host forms ``[[4d]]_G = [[u_g + 2 - 4y]]_G + u_h`` and
    ``X_h^T [[4d]]_G`` plus its own uniform mask, which the guest decrypts and returns.
    Guest gradient: ``X_g^T (u_g + 2 - 4y)`` in clear plus ``X_g^T [[u_h]]_H`` with the
    guest's uniform mask, which the host decrypts and returns. The guest's loss
    travels the same way (masked, decrypted by the host).
4'. Both unmask and update; the guest checks convergence and tells the host (with
    ``early_stopping="weight_diff"`` the host first sends the guest the squared norm of
    its weight change).

Joint prediction (both modes): each host sends its partial scores ``X_h w_h`` of
the rows to score to the guest, which adds its own and applies the sigmoid. Hosts
learn nothing about the scores.

What each party sees
--------------------
Arbiter mode:

* **Arbiter**: the public key it made; masked gradients (uniform: nothing); the
  Taylor loss per epoch in clear (as in Hardy et al. and FATE); with
  ``early_stopping="weight_diff"`` each party's squared weight-change norm per epoch.
  No data, labels, weights or scores.
* **Guest**: ``[[u_h]]`` (cannot decrypt), its own gradients and weights, the loss,
  the scores at prediction (which, with one host, reveal ``X_h w_h`` row by row: the
  nature of joint scoring, as in FATE).
* **Host**: the row order of each epoch, ``[[4d]]`` (cannot decrypt; freshly
  randomised), its own gradients — which are aggregates ``X_h^T d`` of the residual,
  the known leakage of this protocol family.
* Collusion: arbiter + guest or arbiter + host decrypts everything the other sent
  — the protocol's trust assumption is a non-colluding arbiter.

Two-party mode:

* **Guest**: holds its private key and sees the host's gradient *plus the host's
  uniform mask* (nothing), ``[[u_h]]_H`` (cannot decrypt), its own gradient and the
  loss (as in arbiter mode). One thing more than in arbiter mode: with
  ``early_stopping="weight_diff"`` it receives the host's squared weight-change norm
  each epoch (with plain SGD and no penalty that is ``lr**2 |X_h^T d|**2 / n**2``, one
  scalar per epoch about the host's gradient). Use ``early_stopping="loss"`` or
  ``"none"`` and the host sends nothing of the kind.
* **Host**: holds its own private key and sees the guest's masked gradient and
  masked loss (uniform: nothing), ``[[u_g + 2 - 4y]]_G`` (cannot decrypt), its own
  gradient and the stop decisions. Compared with arbiter mode it learns nothing more.
* Leaks (both modes): a host's own gradient ``X_h^T d`` is an aggregate of the
  residual, hence of the labels (the known leakage of this protocol family); a
  malicious guest can choose the residual it encrypts (e.g. one-hot) and so read a
  host's feature column through the host's gradient over many batches — true of the
  arbiter mode too when guest and arbiter collude. Both modes are secure against
  semi-honest (honest-but-curious) parties only; in two-party mode collusion is moot
  (there are two parties) and no third party has to be trusted.
* Scheme: every key holder decrypts masked ciphertexts that another party sent and
  returns the result to it. With ``scheme="paillier"`` (the default) that reveals
  nothing about the key. With ``scheme="ou"`` (Okamoto-Uchiyama, about 3x faster) it
  is a decryption oracle: a party that deviates and sends a crafted ciphertext can
  learn the key's secret prime from the answer (see :mod:`atoll.crypto.ou`). Use OU
  only where every party is trusted to follow the protocol.

Cost per epoch (``n`` rows, ``d_g + d_h`` weights): ``2n`` encryptions (the hosts'
``[[u_h]]`` and the guest's fresh part of the residual; in two-party mode the same
two), one ``n``-term multi-exponentiation per weight (``X_p^T [[d]]``, the engine's
bucket kernel) plus one for the loss, and ``d_g + d_h + 1`` decryptions; the
ciphertext vectors cross the wire twice. Encryption randomness can be precomputed
in an offline phase (``precompute=True``). Packing does not help the encryptions: every
row's residual is multiplied by a different feature value, so each needs its own
ciphertext. The ``d_p + 1`` masked decryptions per batch are not packed either: they are
a small share of an epoch with full batches (330 of them against 2 x 100,000 encryptions
on the 30 + 300 feature workload), and the engine's packed decryption returns float64,
which cannot carry the exact integers ``G + R`` the masks rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.ml import metrics
from atoll.ml.vertical._glm import (
    LOGISTIC,
    ArbiterReport,
    GLMArbiter,
    GLMGuest,
    GLMHost,
    GuestModel,
    HeteroGLMEstimator,
    HeteroLRParams,
    HostModel,
    register_glm,
)

__all__ = ["HETERO_LR", "ArbiterReport", "GuestModel", "HeteroLRArbiter", "HeteroLRGuest", "HeteroLRHost",
           "HeteroLRParams", "HeteroLogisticRegression", "HostModel"]


class HeteroLRGuest(GLMGuest):
    """Guest of vertical logistic regression: labels 0/1, its own features, the intercept."""

    family = LOGISTIC


class HeteroLRHost(GLMHost):
    """Host of vertical logistic regression: extra features of the same rows, never labels."""

    family = LOGISTIC


class HeteroLRArbiter(GLMArbiter):
    """Arbiter of vertical logistic regression: the key pair, masked decryptions, the stopping rule."""

    family = LOGISTIC


HETERO_LR = register_glm("hetero_lr", HeteroLRParams, HeteroLRGuest, HeteroLRHost, HeteroLRArbiter,
                         "vertical logistic regression (binary labels 0/1 at the guest)")


class HeteroLogisticRegression(HeteroGLMEstimator):
    """Vertical logistic regression with a scikit-learn interface; every party simulated locally.

        model = HeteroLogisticRegression(max_iter=30, key_bits=2048, random_state=0)
        model.fit({"guest": (X_guest, y), "host_0": X_host})
        proba = model.predict_proba({"guest": X_guest_new, "host_0": X_host_new})[:, 1]

    Labels are 0/1. Defaults: Adam, learning rate 0.05, full batch, L2 with ``alpha=0``,
    arbiter mode, Taylor approximation around 0, 2048-bit Paillier. The parameters are
    :class:`~atoll.ml.vertical._glm.GLMParams`' (plus ``transport``, ``timeout``, ``roles``);
    the learned attributes are listed in :class:`~atoll.ml.vertical._glm.HeteroGLMEstimator`.
    """

    algorithm = HETERO_LR

    classes_ = np.array([0, 1])

    def predict_proba(self, data: dict) -> np.ndarray:
        """``(n, 2)`` probabilities of class 0 and class 1 for aligned rows (joint prediction)."""
        p1 = LOGISTIC.mean(self.decision_function(data))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, data: dict, threshold: float = 0.5) -> np.ndarray:
        """Hard 0/1 predictions."""
        return (self.predict_proba(data)[:, 1] >= threshold).astype(np.int64)

    def score(self, data: dict, y: Any = None) -> float:
        """Accuracy on labelled rows (scikit-learn's ``score`` for classifiers)."""
        return metrics.accuracy(self._labels(data, y), self.predict(data))
