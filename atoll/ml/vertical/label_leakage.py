"""Label leakage in split learning: the two standard attacks and the guest's defences (pure functions).

A host receives, per example i of a batch, the gradient ``g_i = dL/dA_i`` of the loss with respect
to its bottom output. Li et al., "Label Leakage and Protection in Two-party Split Learning"
(ICLR 2022) show two ways for the host to infer binary labels from them:

1. **norm attack**: score ``||g_i||``: with imbalanced classes the rarer class has larger
   gradients (``|p - y|`` is large where the model is wrong, and it is mostly wrong on the
   rare class);
2. **direction attack**: score ``cos(g_i, g_ref)`` for a reference example: for a binary
   logit output, ``dL/dlogit = p - y`` is negative for positives and positive for negatives,
   so examples of one class point one way and the others the opposite way.

The attack's AUC against the true labels measures the leakage; we report
``max(AUC, 1 - AUC)`` (the attacker may pick the orientation), so 0.5 is no leakage.

Defences applied by the guest to the cut-layer gradient ``delta`` (rows: examples) before any
of it goes to a host (``defend``):

* ``noise`` (label DP by the Gaussian mechanism): each row clipped to L2 norm ``clip_norm``,
  then ``N(0, (noise_multiplier * clip_norm)^2)`` added per coordinate. Changing one
  example's label moves its clipped row by at most ``2 * clip_norm``, so each release is the
  Gaussian mechanism with multiplier ``noise_multiplier / 2``; :func:`noise_epsilon` composes
  one release per example per epoch with the RDP accountant of :mod:`atoll.crypto.dp`;
* ``max_norm`` (Li et al.'s heuristic): row j gets isotropic noise of variance
  ``(max_i ||g_i||^2 - ||g_j||^2) / d`` so every row's expected squared norm equals the
  batch's largest (the norm attack loses its signal; no formal epsilon);
* ``group_average`` (gradient averaging): the batch's rows are cut into random groups of
  ``group_size`` and each row is replaced by its group's mean, so a host sees one gradient per
  group (the group's sum is kept: the batch gradient of a host's bottom output changes only by
  which rows share it; no formal epsilon);
* ``mixup`` (Zhang et al., ICLR 2018, as a label-leakage defence): every party trains each batch
  on ``lam x_i + (1 - lam) x_perm(i)`` (one ``lam ~ Beta(alpha, alpha)`` and permutation per
  batch, drawn from the seeded batch order that all parties share) and the guest on the mixed
  labels, so the gradient of row i carries a mixture of two labels (:func:`mixup_plan`; it acts
  on the inputs, :func:`defend` leaves the gradient as is).

What each party sees: these functions run at one party on its own numbers.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from atoll.errors import ConfigError

Defence = Literal["none", "noise", "max_norm", "group_average", "mixup"]


def _auc(score: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).ravel()
    if len(np.unique(y)) != 2:
        return None
    a = float(roc_auc_score(y, np.asarray(score, dtype=np.float64).ravel()))
    return max(a, 1.0 - a)


def norm_attack_auc(grads: np.ndarray, y: np.ndarray) -> float | None:
    """AUC of the norm attack (``max(AUC, 1 - AUC)``; None unless ``y`` is binary)."""
    g = np.asarray(grads, dtype=np.float64).reshape(len(grads), -1)
    return _auc(np.linalg.norm(g, axis=1), y)


def direction_attack_auc(grads: np.ndarray, y: np.ndarray, reference: int = 0) -> float | None:
    """AUC of the direction attack: cosine with the gradient of example ``reference``."""
    g = np.asarray(grads, dtype=np.float64).reshape(len(grads), -1)
    ref = g[int(reference)]
    norms = np.linalg.norm(g, axis=1) * (np.linalg.norm(ref) or 1.0)
    cos = (g @ ref) / np.where(norms > 0, norms, 1.0)
    return _auc(cos, y)


def clip_rows(g: np.ndarray, clip: float) -> np.ndarray:
    """Each row scaled down to L2 norm at most ``clip``."""
    if not clip > 0:
        raise ConfigError(f"clip_norm must be positive, got {clip}")
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g * np.minimum(1.0, clip / np.where(norms > 0, norms, 1.0))


def group_average(g: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Each row replaced by the mean of its random group of ``size`` rows (the last group smaller)."""
    if size < 1:
        raise ConfigError(f"group_size must be >= 1, got {size}")
    out = np.empty_like(g)
    perm = rng.permutation(len(g))
    for s in range(0, len(g), size):
        rows = perm[s:s + size]
        out[rows] = g[rows].mean(axis=0)
    return out


def mixup_plan(rng: np.random.Generator, n: int, alpha: float) -> tuple[float, np.ndarray]:
    """(lam, perm) of one mixup batch of ``n`` rows."""
    if not alpha > 0:
        raise ConfigError(f"mixup_alpha must be positive, got {alpha}")
    return float(rng.beta(alpha, alpha)), rng.permutation(n)


def mix(a: np.ndarray, lam: float, perm: np.ndarray) -> np.ndarray:
    return lam * a + (1.0 - lam) * a[perm]


def defend(delta: np.ndarray, defence: Defence, rng: np.random.Generator, clip_norm: float = 1.0,
           noise_multiplier: float = 1.0, group_size: int = 8) -> np.ndarray:
    """The cut-layer gradient as the hosts may receive it (``delta``: per-example rows)."""
    g = np.asarray(delta, dtype=np.float64)
    if defence in ("none", "mixup"):
        return g
    if defence == "noise":
        if noise_multiplier < 0:
            raise ConfigError("noise_multiplier must be >= 0")
        return clip_rows(g, clip_norm) + rng.normal(0.0, noise_multiplier * clip_norm, size=g.shape)
    if defence == "max_norm":
        sq = np.sum(g * g, axis=1, keepdims=True)
        std = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0) / max(g.shape[1], 1))
        return g + rng.normal(size=g.shape) * std
    if defence == "group_average":
        return group_average(g, group_size, rng)
    raise ConfigError(f"unknown defence {defence!r}; use none, noise, max_norm, group_average or mixup")


def noise_epsilon(noise_multiplier: float, epochs: int, delta: float = 1e-5) -> float:
    """Label-DP epsilon of the ``noise`` defence after ``epochs`` (one release per example each)."""
    if noise_multiplier <= 0:
        return math.inf
    from atoll.crypto.dp import PrivacyAccountant

    acc = PrivacyAccountant(delta=delta)
    return acc.step(noise_multiplier / 2.0, 1.0, count=max(int(epochs), 1))
