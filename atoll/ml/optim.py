"""First-order optimizers for Atoll's linear models (pure numpy, no parties).

Each party of a vertical model updates only its own slice of the weights, so
every optimizer here is *separable*: the update of one coordinate depends only
on that coordinate's gradient and state (SGD, Adam, soft-threshold L1). Running
one optimizer per party is therefore exactly the same as running one optimizer
over the joined weight vector — the plaintext twin in the tests relies on that.

    opt = Optimizer(OptimizerParams(optimizer="adam", learning_rate=0.05, penalty="l2", alpha=1e-3),
                    n_weights=10, penalized=mask)
    opt.set_epoch(epoch)
    w = opt.step(w, grad)

Learning rate at epoch ``t``: ``lr / (1 + decay * t)`` (or ``lr / sqrt(1 + decay * t)`` with
``decay_sqrt=True``), as in FATE. Penalties: ``l2`` adds ``alpha * w`` to the gradient;
``l1`` applies the proximal soft-threshold ``sign(w) * max(|w| - lr * alpha, 0)`` after
the step. Coordinates where ``penalized`` is False (the intercept) are never penalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atoll.errors import ConfigError

__all__ = ["Optimizer", "OptimizerParams"]

OPTIMIZERS = ("sgd", "adam")
PENALTIES = (None, "none", "l1", "l2")


@dataclass
class OptimizerParams:
    """How weights move: the optimizer, its learning-rate schedule and the penalty."""

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    decay: float = 0.0
    decay_sqrt: bool = False
    penalty: str | None = "l2"
    alpha: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def validate(self) -> "OptimizerParams":
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r} is not supported; use one of {OPTIMIZERS}")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"penalty={self.penalty!r} is not supported; use 'l1', 'l2' or None")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.decay < 0 or self.alpha < 0:
            raise ConfigError("decay and alpha must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("Adam's beta1 and beta2 must lie in [0, 1)")
        return self


class Optimizer:
    """The state of one optimizer over one party's weight vector."""

    def __init__(self, params: OptimizerParams, n_weights: int, penalized: np.ndarray | None = None):
        self.params = params.validate()
        self.penalized = (np.ones(n_weights, dtype=bool) if penalized is None
                          else np.asarray(penalized, dtype=bool))
        if self.penalized.shape != (n_weights,):
            raise ConfigError(f"penalized mask has shape {self.penalized.shape}, expected ({n_weights},)")
        self.epoch = 0
        self.t = 0
        self.m = np.zeros(n_weights)
        self.v = np.zeros(n_weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def lr(self) -> float:
        p = self.params
        f = 1.0 + p.decay * self.epoch
        return p.learning_rate / (np.sqrt(f) if p.decay_sqrt else f)

    def step(self, w: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The new weights after one step along ``grad`` (the loss gradient, penalty excluded)."""
        p = self.params
        g = np.asarray(grad, dtype=np.float64)
        if p.penalty == "l2" and p.alpha > 0:
            g = g + p.alpha * np.where(self.penalized, w, 0.0)
        self.t += 1
        lr = self.lr
        if p.optimizer == "sgd":
            new = w - lr * g
        else:  # adam
            self.m = p.beta1 * self.m + (1 - p.beta1) * g
            self.v = p.beta2 * self.v + (1 - p.beta2) * g * g
            m_hat = self.m / (1 - p.beta1 ** self.t)
            v_hat = self.v / (1 - p.beta2 ** self.t)
            new = w - lr * m_hat / (np.sqrt(v_hat) + p.epsilon)
        if p.penalty == "l1" and p.alpha > 0:
            shrunk = np.sign(new) * np.maximum(np.abs(new) - lr * p.alpha, 0.0)
            new = np.where(self.penalized, shrunk, new)
        return new
