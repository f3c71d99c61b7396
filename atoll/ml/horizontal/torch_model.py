"""Adapter: any ``torch.nn.Module`` as a horizontal :class:`~atoll.ml.horizontal.models.Model`.

Optional: needs the ``torch`` extra (``pip install 'atoll[torch]'``). Weights
travel as numpy arrays (the module's ``state_dict``, buffers included), never as
pickles. Training is the standard step: minibatch SGD (or a given optimiser
factory) on ``loss_fn``, plus FedProx's proximal term when the config asks.

    model = TorchModel(lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))

:func:`mlp` and :func:`cnn` build the two example networks the tests train on
digits (``TorchModel(mlp(64, 10))``, ``TorchModel(cnn(8, 10))``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from atoll.errors import ConfigError

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ConfigError("the torch adapter needs PyTorch: pip install 'atoll[torch]'") from e


class TorchModel:
    """Wrap a module (or a factory of one) for federated training.

    ``task``: ``"classification"`` (cross-entropy, integer labels, reports
    accuracy) or ``"regression"`` (MSE). ``optimizer``: a factory
    ``params, lr -> torch.optim.Optimizer`` (default plain SGD).
    """

    def __init__(self, module: nn.Module | Callable[[], nn.Module], task: str = "classification",
                 optimizer: Callable[[Any, float], "torch.optim.Optimizer"] | None = None,
                 x_dtype: "torch.dtype" = torch.float32):
        if task not in ("classification", "regression"):
            raise ConfigError("task must be 'classification' or 'regression'")
        self.module = module() if not isinstance(module, nn.Module) else module
        self.task = task
        self.optimizer = optimizer or (lambda params, lr: torch.optim.SGD(params, lr=lr))
        self.x_dtype = x_dtype
        self.loss_fn = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()

    def get_weights(self) -> list[np.ndarray]:
        return [t.detach().cpu().numpy().copy() for t in self.module.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        sd = self.module.state_dict()
        if len(weights) != len(sd):
            raise ConfigError(f"got {len(weights)} weight arrays, the module has {len(sd)}")
        self.module.load_state_dict({k: torch.as_tensor(np.asarray(w)).to(v.dtype).reshape(v.shape)
                                     for (k, v), w in zip(sd.items(), weights)})

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple["torch.Tensor", "torch.Tensor"]:
        xt = torch.as_tensor(np.asarray(x), dtype=self.x_dtype)
        yt = (torch.as_tensor(np.asarray(y), dtype=torch.long) if self.task == "classification"
              else torch.as_tensor(np.asarray(y), dtype=self.x_dtype).reshape(len(y), -1))
        return xt, yt

    def fit(self, x, y, config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]:
        epochs, bs, lr = int(config.get("epochs", 1)), int(config.get("batch_size", 32)), float(config.get("lr", 0.01))
        mu = float(config.get("proximal_mu", 0.0))
        torch.manual_seed(int(rng.integers(2 ** 31)))
        xt, yt = self._tensors(x, y)
        params = [p for p in self.module.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in params]
        opt = self.optimizer(params, lr)
        self.module.train()
        total, seen = 0.0, 0
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(len(xt)), max(1, int(np.ceil(len(xt) / bs)))):
                idx_t = torch.as_tensor(idx)
                opt.zero_grad()
                loss = self.loss_fn(self.module(xt[idx_t]), yt[idx_t])
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                self._step(opt, loss, params, start, mu)
        return {"loss": total / max(seen, 1)}

    @staticmethod
    def _step(opt: "torch.optim.Optimizer", loss: "torch.Tensor", params: list, start: list, mu: float) -> None:
        """One optimiser step on ``loss`` plus FedProx's ``mu/2 ||w - w_start||^2`` when ``mu`` is set."""
        if mu:
            loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
        loss.backward()
        opt.step()

    @torch.no_grad()
    def evaluate(self, x, y) -> dict[str, float]:
        xt, yt = self._tensors(x, y)
        self.module.eval()
        out = self.module(xt)
        res = {"loss": float(self.loss_fn(out, yt))}
        if self.task == "classification":
            res["accuracy"] = float((out.argmax(dim=1) == yt).float().mean())
        return res

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        out = self.module(torch.as_tensor(np.asarray(x), dtype=self.x_dtype))
        return (out.argmax(dim=1) if self.task == "classification" else out).cpu().numpy()


def mlp(n_features: int, n_outputs: int, hidden: tuple[int, ...] = (32,)) -> nn.Module:
    """Example: a multilayer perceptron ``Linear -> ReLU -> ... -> Linear``."""
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_outputs))


def cnn(side: int, n_outputs: int, channels: int = 8) -> nn.Module:
    """Example: a small CNN for ``side x side`` one-channel images given as flat rows
    (conv 3x3 -> ReLU -> 2x2 max-pool -> linear); ``side`` must be even."""
    if side % 2:
        raise ConfigError("cnn() pools 2x2: give an even image side")
    return nn.Sequential(nn.Unflatten(1, (1, side, side)), nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * (side // 2) ** 2, n_outputs))
