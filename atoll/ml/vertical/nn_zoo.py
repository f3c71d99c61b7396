"""Bottom and top models of split learning, built from a declared architecture (never from code).

A party's bottom model is any ``torch.nn.Module`` mapping its feature rows ``(n, d)`` to
``(n, output_dim)``. In a job file (or any place where another party names it) the model is a
:class:`BottomSpec`: a registered builder name and its sizes, nothing else:

* ``mlp``: ``Linear -> act`` per hidden width, then ``Linear(output_dim) -> act`` (tabular);
* ``cnn``: rows are flattened one-channel images ``image_shape = (height, width)``; per entry of
  ``channels`` a ``Conv2d 3x3 -> act -> MaxPool 2x2`` (the pool only while both sides are >= 2),
  then ``Linear(output_dim) -> act``;
* ``gru`` / ``lstm``: rows are flattened sequences ``(seq_len, n_features / seq_len)`` (time
  major); the last hidden state of a one-layer recurrent net of ``hidden_size``, then
  ``Linear(output_dim) -> act``;
* ``identity``: the features themselves (``output_dim`` = their number).

The guest's top model (:class:`TopSpec`) takes the interactive layer's output: ``act``, then
``Linear -> act`` per hidden width, then a linear output layer.

Building is seeded (``torch.random.fork_rng``: the caller's global torch state is left alone),
so a party's federated bottom and the centralised twin's copy start from equal weights.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import ConfigError

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ConfigError("split learning (hetero_nn) needs PyTorch: pip install 'atoll[torch]'") from e

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu"]
_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
BUILDERS = ("mlp", "cnn", "gru", "lstm", "identity")


class BottomSpec(BaseModel):
    """A bottom model by builder name and sizes (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mlp", "cnn", "gru", "lstm", "identity"] = "mlp"
    output_dim: int = Field(8, ge=1, le=4096)
    hidden: list[int] = Field(default_factory=lambda: [16], description="mlp hidden widths")
    activation: Activation = "relu"
    image_shape: tuple[int, int] | None = Field(None, description="cnn: (height, width) of one image")
    channels: list[int] = Field(default_factory=lambda: [8], description="cnn: channels per conv block")
    seq_len: int | None = Field(None, ge=1, description="gru/lstm: time steps per row")
    hidden_size: int = Field(16, ge=1, le=4096, description="gru/lstm: recurrent state width")

    def check_sizes(self) -> "BottomSpec":
        if any(h < 1 or h > 65536 for h in self.hidden) or any(c < 1 or c > 4096 for c in self.channels):
            raise ConfigError("bottom model: widths and channels must be in 1..65536 / 1..4096")
        if len(self.hidden) > 32 or len(self.channels) > 16:
            raise ConfigError("bottom model: at most 32 hidden layers and 16 conv blocks")
        return self


class TopSpec(BaseModel):
    """The guest's top model above the interactive layer."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default_factory=list)
    activation: Activation = "relu"


def part_seed(seed: int, part: str) -> int:
    """The torch seed of one named part (``bottom/guest``, ``bottom/host_0``, ``top``, ...)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{part}".encode()).digest()[:4], "little")


class _Recurrent(nn.Module):
    """Flattened ``(seq_len * channels)`` rows -> last hidden state -> Linear -> act."""

    def __init__(self, cell: str, seq_len: int, channels: int, hidden: int, out: int, act: nn.Module):
        super().__init__()
        self.seq_len, self.channels = seq_len, channels
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(channels, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, out), act)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        seq = x.reshape(x.shape[0], self.seq_len, self.channels)
        out, _ = self.rnn(seq)
        return self.head(out[:, -1, :])


def _build_bottom(spec: BottomSpec, n_features: int) -> nn.Module:
    spec.check_sizes()
    act = _ACT[spec.activation]
    if spec.kind == "identity":
        if spec.output_dim != n_features:
            raise ConfigError(f"an identity bottom has output_dim = its {n_features} features")
        return nn.Identity()
    if spec.kind == "mlp":
        layers: list[nn.Module] = []
        width = n_features
        for h in spec.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, spec.output_dim), act())
    if spec.kind == "cnn":
        if spec.image_shape is None:
            raise ConfigError("a cnn bottom needs image_shape: [height, width]")
        h, w = (int(v) for v in spec.image_shape)
        if h < 1 or w < 1 or h * w != n_features:
            raise ConfigError(f"cnn bottom: image_shape {h}x{w} does not match the party's {n_features} features")
        layers = [nn.Unflatten(1, (1, h, w))]
        c_in = 1
        for c in spec.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), act()]
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = c
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * h * w, spec.output_dim), act())
    if spec.seq_len is None or n_features % spec.seq_len:
        raise ConfigError(f"a {spec.kind} bottom needs seq_len dividing the party's {n_features} features")
    return _Recurrent(spec.kind, spec.seq_len, n_features // spec.seq_len, spec.hidden_size, spec.output_dim, act())


def build_bottom(spec: BottomSpec, n_features: int, seed: int) -> nn.Module:
    """The bottom model of ``spec`` for ``n_features`` inputs, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build_bottom(spec, int(n_features))


def build_top(spec: TopSpec, n_in: int, n_out: int, seed: int) -> nn.Module:
    """act -> (Linear -> act)* -> Linear(n_out), initialised from ``seed``."""
    if any(h < 1 or h > 65536 for h in spec.hidden) or len(spec.hidden) > 32:
        raise ConfigError("top model: at most 32 hidden layers of 1..65536 units")
    act = _ACT[spec.activation]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [act()]
        width = n_in
        for h in spec.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, n_out))


def output_dim(module: nn.Module, n_features: int) -> int:
    """The width of a module's output for ``n_features`` inputs (one dummy row)."""
    was = module.training
    module.eval()
    with torch.no_grad():
        p = next(module.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        device = p.device if p is not None else "cpu"
        out = module(torch.zeros(2, n_features, dtype=dtype, device=device))
    module.train(was)
    if out.ndim != 2:
        raise ConfigError("a bottom model must map (n, d) rows to (n, k) outputs")
    return int(out.shape[1])
