"""Models a horizontal client trains: numpy logistic / linear regression (homo LR, no torch).

Every model offers the same small interface (:class:`Model`), so strategies,
the client role and the simulation engine never look inside it:

* ``get_weights() -> list[np.ndarray]`` / ``set_weights(list)``
* ``fit(x, y, config, rng) -> {"loss": ...}``: local training. ``config`` keys:
  ``epochs``, ``batch_size``, ``lr``, ``proximal_mu`` (FedProx: adds
  ``mu/2 ||w - w_global||^2``, with ``w_global`` the weights at the start of fit).
* ``evaluate(x, y) -> {"loss": ..., "accuracy": ...}`` (regression: ``loss`` = MSE, ``r2``)

The torch adapter (:mod:`atoll.ml.horizontal.torch_model`) wraps any
``nn.Module`` in the same interface.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from atoll.errors import DataError


@runtime_checkable
class Model(Protocol):
    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: list[np.ndarray]) -> None: ...

    def fit(self, x: np.ndarray, y: np.ndarray, config: Mapping[str, Any],
            rng: np.random.Generator) -> dict[str, float]: ...

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]: ...


def flatten(weights: list[np.ndarray]) -> np.ndarray:
    """Weights -> one float64 vector (the unit strategies and secure aggregation work on)."""
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights]) if weights else np.zeros(0)


def unflatten(vec: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """Inverse of :func:`flatten`, shaped and typed like ``like``."""
    out, i = [], 0
    for w in like:
        w = np.asarray(w)
        out.append(vec[i:i + w.size].reshape(w.shape).astype(w.dtype, copy=False))
        i += w.size
    if i != len(vec):
        raise DataError(f"weight vector has {len(vec)} values, the model has {i}")
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


class LogisticRegression:
    """Multinomial logistic regression trained by minibatch SGD (homo LR).

    Weights: ``[coef (n_features, n_classes), intercept (n_classes,)]``; labels
    are integers ``0..n_classes-1``. ``l2`` adds ``l2/2 ||coef||^2``.
    """

    def __init__(self, n_features: int, n_classes: int, l2: float = 0.0):
        if n_classes < 2:
            raise DataError("logistic regression needs at least 2 classes")
        self.n_features, self.n_classes, self.l2 = n_features, n_classes, l2
        self.coef_ = np.zeros((n_features, n_classes))
        self.intercept_ = np.zeros(n_classes)

    def get_weights(self) -> list[np.ndarray]:
        return [self.coef_.copy(), self.intercept_.copy()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        coef, b = weights
        self.coef_ = np.array(coef, dtype=np.float64).reshape(self.n_features, self.n_classes)
        self.intercept_ = np.array(b, dtype=np.float64).reshape(self.n_classes)

    def _check(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).ravel()
        if x.ndim != 2 or x.shape[1] != self.n_features or len(x) != len(y):
            raise DataError(f"expected x of shape (n, {self.n_features}) and y of n labels; "
                            f"got {x.shape} and {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise DataError(f"labels must be integers in 0..{self.n_classes - 1}")
        return x, y

    def fit(self, x, y, config, rng) -> dict[str, float]:
        x, y = self._check(x, y)
        epochs, bs, lr = int(config.get("epochs", 1)), int(config.get("batch_size", 32)), float(config.get("lr", 0.1))
        mu = float(config.get("proximal_mu", 0.0))
        w0, b0 = self.coef_.copy(), self.intercept_.copy()
        total, seen = 0.0, 0
        for _ in range(epochs):
            for idx in _batches(len(x), bs, rng):
                xb, yb, rows = x[idx], y[idx], np.arange(len(idx))
                g = _softmax(xb @ self.coef_ + self.intercept_)
                total -= float(np.log(np.maximum(g[rows, yb], 1e-15)).sum())
                seen += len(idx)
                g[rows, yb] -= 1.0  # softmax - onehot
                g /= len(idx)
                gw = xb.T @ g + self.l2 * self.coef_
                gb = g.sum(axis=0)
                if mu:
                    gw = gw + mu * (self.coef_ - w0)
                    gb = gb + mu * (self.intercept_ - b0)
                self.coef_ -= lr * gw
                self.intercept_ -= lr * gb
        return {"loss": total / max(seen, 1)}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def evaluate(self, x, y) -> dict[str, float]:
        x, y = self._check(x, y)
        if not len(y):
            return {"loss": 0.0, "accuracy": 0.0}
        p = self.predict_proba(x)
        loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-15, None)).mean())
        return {"loss": loss, "accuracy": float((p.argmax(axis=1) == y).mean())}


class LinearRegression:
    """Least-squares linear regression trained by minibatch SGD. Weights: ``[coef (d,), intercept ()]``."""

    def __init__(self, n_features: int, l2: float = 0.0):
        self.n_features, self.l2 = n_features, l2
        self.coef_ = np.zeros(n_features)
        self.intercept_ = np.zeros(())

    def get_weights(self) -> list[np.ndarray]:
        return [self.coef_.copy(), np.array(self.intercept_, dtype=np.float64)]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.coef_ = np.array(weights[0], dtype=np.float64).reshape(self.n_features)
        self.intercept_ = np.array(weights[1], dtype=np.float64).reshape(())

    def fit(self, x, y, config, rng) -> dict[str, float]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        epochs, bs, lr = int(config.get("epochs", 1)), int(config.get("batch_size", 32)), float(config.get("lr", 0.01))
        mu = float(config.get("proximal_mu", 0.0))
        w0, b0 = self.coef_.copy(), float(self.intercept_)
        total, seen = 0.0, 0
        for _ in range(epochs):
            for idx in _batches(len(x), bs, rng):
                r = x[idx] @ self.coef_ + self.intercept_ - y[idx]
                total += float(r @ r)
                seen += len(idx)
                gw = x[idx].T @ r * (2 / len(idx)) + self.l2 * self.coef_
                gb = 2 * r.mean()
                if mu:
                    gw = gw + mu * (self.coef_ - w0)
                    gb = gb + mu * (float(self.intercept_) - b0)
                self.coef_ = self.coef_ - lr * gw
                self.intercept_ = np.array(float(self.intercept_) - lr * gb)
        return {"loss": total / max(seen, 1)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_ + float(self.intercept_)

    def evaluate(self, x, y) -> dict[str, float]:
        y = np.asarray(y, dtype=np.float64).ravel()
        r = self.predict(x) - y
        mse = float(np.mean(r ** 2)) if len(y) else 0.0
        var = float(np.var(y)) if len(y) else 0.0
        return {"loss": mse, "r2": 1 - mse / var if var > 0 else 0.0}
