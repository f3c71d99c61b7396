"""Vertical neural networks (split learning): bottom models per party, a protected interactive
layer, the top model at the guest.

The guest holds the labels, its features and three models: its bottom ``f_g``, its part of the
interactive layer (``Linear(d_g, k)`` with the bias) and the top model ``t``. Each host h holds its
features and its bottom ``f_h``; the interactive weights ``W_h`` (``d_h x k``) of its bottom
output are protected according to ``mode``. With ``A = f(X)`` per party, one mini-batch is

    z = A_g W_g + b + sum_h A_h W_h,     loss = L(t(z), y)

(FATE's HeteroNN: Zhang et al., "Additively homomorphic encryption based deep neural network
for asymmetrically collaborative machine learning", 2020; its SSHE interactive layer in FATE 2.x;
Vepakomma et al., "Split learning for health", 2018, for the plain scheme).

Protocol (every party runs the same batches of one seeded permutation: the row order is public):
  1. handshake: row count, an id digest and the parameters must agree; each host announces the
     width ``d_h`` of its bottom output; the guest draws W_h's initial value from the seed;
  2. forward: each party runs its bottom model on the batch; the guest obtains ``A_h W_h``:
     * ``ss`` (default): A_h is secret-shared by the host, W_h lives as two additive shares over
       Z_2^64 (:mod:`atoll.secure.mpc`); ``A_h W_h`` is a Beaver matrix product revealed to the
       guest only;
     * ``he``: the host sends ``[[A_h]]`` (its own Paillier / OU key); W_h is the same two ring
       shares; the guest returns ``[[A_h W_g]] + [[R]]`` (R 40 bits wider than the product), the
       host decrypts, reduces mod 2^64, adds ``A_h W_hshare`` and sends its share; the guest
       adds ``-R`` (FATE 1.x's scheme with the weight noise kept as a ring share);
     * ``plain``: the host sends A_h in clear and the guest holds W_h (split learning without
       protection: fast, and it leaks the bottom outputs; labelled as such everywhere);
  3. the guest runs the interactive sum, the top model and the loss, and back-propagates to
     ``delta = dL/dz``; its own parts take an optimiser step (SGD or Adam);
  4. the guest applies the label-leakage defence to ``delta``
     (:mod:`atoll.ml.vertical.label_leakage`: ``noise`` with epsilon reported, ``max_norm``,
     ``group_average``; ``mixup`` instead mixes every party's batch rows and the labels);
  5. backward to the host: ``dA_h = delta W_h^T`` is computed on shares (``ss``: Beaver;
     ``he``: ``delta [[W_hshare]]^T + delta W_gshare^T + 2^64 R``) and revealed to the host only;
     the host back-propagates it through its bottom model and steps its optimiser;
  6. the interactive weights: ``W_h <- W_h - lr_i * A_h^T delta`` on shares (``ss``: Beaver then
     pair truncation; ``he``: ``[[A_h]]^T (lr_i delta) + [[R]]`` decrypted by the host, truncated in
     the integers before reduction). ``ss`` checks ``|W_h| <= weight_limit`` securely once per
     epoch (one revealed bit);
  7. optional early stopping: after each epoch a joint forward on the validation rows; the guest
     tells the hosts whether to stop.
  Joint prediction: each party runs only its own bottom; step 2 in inference mode; the guest
  runs the top model.

What each party sees:
* guest: its data and models, ``A_h W_h`` per host and batch (the interactive layer's input from
  that host: k numbers per row, never A_h itself in ``ss`` / ``he``), the one-time-masked
  openings of the MPC session or ciphertexts under the host's key, each host's row count,
  feature count and bottom output width (no bound on ``|A_h|`` is announced). It knows W_h's
  seeded initial value, not its trained value (the updates are shared).
* host h: its data and bottom model, ``dA_h = delta W_h^T`` per batch (the gradient it needs:
  label leakage comes from here; see the defences), one share of W_h (uniform-looking), masked
  openings or, in ``he``, ``A_h W_gshare + R`` and ``A_h^T (lr delta) + R`` (40-bit statistical
  masks). Never labels, predictions, the loss, the guest's features or W_h.
* dealer (``ss`` with an arbiter): request shapes only.
* ``plain``: the guest also sees every A_h and W_h in clear.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll import wire
from atoll.crypto import ring
from atoll.crypto.dp import noise_rng
from atoll.errors import ConfigError, CryptoError, DataError
from atoll.ml.vertical import label_leakage as leak
from atoll.ml.vertical._glm import MASK_SLACK_BITS, _as_matrix, ids_digest
from atoll.ml.vertical.nn_zoo import BottomSpec, TopSpec, build_bottom, build_top, output_dim, part_seed

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover
    raise ConfigError("hetero_nn needs PyTorch: pip install 'atoll[torch]'") from e

GUEST, HOST = 0, 1
#: extra fractional bits of ``lr_i * delta`` in the weight update (the product is truncated back)
UPDATE_BITS = 24
MAX_WIDTH = 4096


class HeteroNNParams(BaseModel):
    """Parameters of split learning (the one schema: roles, job component, twin)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["binary", "multiclass", "regression"] = "binary"
    n_classes: int | None = Field(None, ge=2, le=10_000, description="multiclass; default: max label + 1")
    bottom: BottomSpec = Field(default_factory=BottomSpec, description="every party's bottom model")
    bottoms: dict[str, BottomSpec] = Field(default_factory=dict, description="per party name, overrides bottom")
    interactive_units: int = Field(8, ge=1, le=MAX_WIDTH)
    top: TopSpec = Field(default_factory=TopSpec)
    mode: Literal["ss", "he", "plain"] = Field("ss", description="interactive layer: secret sharing, HE, "
                                               "or plain split learning (no protection: leaks bottom outputs)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = Field(0.01, gt=0.0)
    interactive_lr: float = Field(0.1, gt=0.0, description="SGD step of the interactive weights")
    shuffle: bool = True
    random_state: int = 0
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    early_stopping_rounds: int | None = Field(None, ge=1)
    defence: Literal["none", "noise", "max_norm", "group_average", "mixup"] = "none"
    clip_norm: float = Field(1.0, gt=0.0)
    noise_multiplier: float = Field(1.0, ge=0.0)
    group_size: int = Field(8, ge=1, description="group_average: rows per averaged group")
    mixup_alpha: float = Field(1.0, gt=0.0, description="mixup: lam ~ Beta(alpha, alpha) per batch")
    noise_seed: int | None = Field(None, description="tests only: seeds the defence noise (else OS entropy)")
    provider: Literal["auto", "dealer", "he", "ot"] = "auto"
    frac_bits: int = Field(16, ge=8, le=24)
    trunc: Literal["pair", "exact"] = "pair"
    weight_limit: float = Field(1e3, gt=0.0)
    scheme: Literal["paillier", "ou"] = "paillier"
    key_bits: int = Field(2048, ge=512)
    n_jobs: int = Field(1, ge=1, le=256, description="he: worker processes per party for encryption, "
                        "decryption and products (atoll.crypto.engine)")
    device: str = Field("cpu", max_length=16, description="torch device of the bottom and top models: cpu, "
                        "cuda, cuda:N, or auto (cuda where torch sees one)")
    predict_batch: int = Field(4096, ge=1)

    def bottom_for(self, party: str) -> BottomSpec:
        return self.bottoms.get(party, self.bottom)

    def plan(self) -> dict:
        d = self.model_dump(mode="json")
        d.pop("device")
        d.pop("noise_seed")
        return d


# ============================================================================ pure helpers
def epoch_batches(n: int, size: int, shuffle: bool, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[s:s + size] for s in range(0, n, size)]


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): a seeded public split."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(part_seed(seed, "validation")).permutation(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def initial_interactive(seed: int, host_index: int, d_h: int, k: int, fan_in: int) -> np.ndarray:
    """W_h's initial value (torch's Linear default: uniform in +-1/sqrt(fan_in))."""
    rng = np.random.default_rng(part_seed(seed, f"interactive/{host_index}"))
    lim = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-lim, lim, size=(d_h, k))


def n_outputs(params: HeteroNNParams, y: np.ndarray | None) -> int:
    if params.task == "multiclass":
        if params.n_classes is not None:
            return int(params.n_classes)
        return int(np.max(y)) + 1
    return 1


def loss_fn(task: str) -> nn.Module:
    return {"binary": nn.BCEWithLogitsLoss(), "multiclass": nn.CrossEntropyLoss(),
            "regression": nn.MSELoss()}[task]


def target(y: np.ndarray, task: str, device: Any) -> "torch.Tensor":
    if task == "multiclass":
        return torch.as_tensor(y, dtype=torch.long, device=device)
    return torch.as_tensor(y, dtype=torch.float32, device=device).reshape(-1, 1)


def mixed_target(y: np.ndarray, task: str, n_out: int, lam: float, perm: np.ndarray, device: Any) -> "torch.Tensor":
    """The mixup target: mixed labels (binary, regression) or mixed one-hot rows (multiclass)."""
    if task == "multiclass":
        onehot = np.eye(n_out)[y.astype(np.int64)]
        return torch.as_tensor(leak.mix(onehot, lam, perm), dtype=torch.float32, device=device)
    return torch.as_tensor(leak.mix(y, lam, perm), dtype=torch.float32, device=device).reshape(-1, 1)


def batch_rows(x: np.ndarray, rows: np.ndarray, mixing: tuple[float, np.ndarray] | None) -> np.ndarray:
    return x[rows] if mixing is None else leak.mix(x[rows], *mixing)


def scores_of(out: "torch.Tensor", task: str) -> np.ndarray:
    """Probabilities of class 1 (binary), class probabilities (multiclass) or predictions."""
    with torch.no_grad():
        if task == "binary":
            return torch.sigmoid(out[:, 0]).double().cpu().numpy()
        if task == "multiclass":
            return torch.softmax(out, dim=1).double().cpu().numpy()
        return out[:, 0].double().cpu().numpy()


def make_optimizer(params: HeteroNNParams, modules: Sequence[nn.Module]) -> "torch.optim.Optimizer | None":
    ps = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not ps:
        return None
    if params.optimizer == "adam":
        return torch.optim.Adam(ps, lr=params.learning_rate)
    return torch.optim.SGD(ps, lr=params.learning_rate)


def state_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_state(module: nn.Module, arrays: dict[str, np.ndarray]) -> nn.Module:
    sd = module.state_dict()
    if set(arrays) != set(sd) or any(np.asarray(arrays[k]).shape != tuple(v.shape) for k, v in sd.items()):
        raise DataError("the saved model part does not match the declared architecture")
    module.load_state_dict({k: torch.as_tensor(np.asarray(arrays[k])).to(v.dtype).reshape(v.shape)
                            for k, v in sd.items()})
    return module


def resolve_device(name: str) -> "torch.device":
    """``cpu``, ``cuda[:i]``, or ``auto`` (CUDA where torch sees a device, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device here; use device='cpu' or 'auto'")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown torch device {name!r}; use cpu, cuda, cuda:N or auto") from None


def _pow2(a: np.ndarray) -> float:
    m = float(np.abs(a).max(initial=0.0))
    return 2.0 ** math.ceil(math.log2(m)) if m > 0 else 1.0


def _mod64(ints: Any) -> np.ndarray:
    flat = np.asarray(ints, dtype=object)
    return np.array([int(v) % (1 << 64) for v in flat.ravel()], dtype=np.uint64).reshape(flat.shape)


def _obj(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    out.ravel()[:] = [int(v) for v in np.asarray(a).ravel()]
    return out


def _check_array(x: Any, shape: tuple[int, ...], what: str, dtype: Any = None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or tuple(x.shape) != tuple(shape) or (dtype is not None and x.dtype != dtype):
        raise DataError(f"hetero_nn: the peer's {what} does not have the agreed shape {tuple(shape)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"hetero_nn: the peer's {what} is not finite")
    return x


# ============================================================================ interactive layer links
class _Link:
    """One guest-host pair's interactive layer, at one side. ``state`` is saved with the model."""

    def begin_epoch(self) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def close(self) -> None:
        pass


class _PlainGuest(_Link):
    def __init__(self, ctx: Any, host: str, w: np.ndarray):
        self.ctx, self.host, self.w = ctx, host, np.asarray(w, dtype=np.float64)
        self.a: np.ndarray | None = None

    def forward(self, n: int, train: bool) -> np.ndarray:
        a = _check_array(self.ctx.recv(self.host, "a"), (n, self.w.shape[0]), "bottom output")
        self.a = a if train else None
        return a @ self.w

    def backward(self, delta: np.ndarray, lr: float) -> None:
        self.ctx.send(self.host, "grad", delta @ self.w.T)
        self.w = self.w - lr * (self.a.T @ delta)

    def state(self) -> dict:
        return {"w": self.w}


class _PlainHost(_Link):
    def __init__(self, ctx: Any, guest: str, d: int):
        self.ctx, self.guest, self.d = ctx, guest, d
        self.n = 0

    def forward(self, a: np.ndarray, train: bool) -> None:
        self.n = a.shape[0]
        self.ctx.send(self.guest, "a", np.asarray(a, dtype=np.float64))

    def backward(self) -> np.ndarray:
        return _check_array(self.ctx.recv(self.guest, "grad"), (self.n, self.d), "gradient")

    def state(self) -> dict:
        return {}


class _SSLink(_Link):
    """Both sides of the secret-shared layer (the same code at each party: SPMD)."""

    def __init__(self, sess: Any, index: int, d: int, k: int, w0: np.ndarray | None, share: dict | None,
                 weight_limit: float):
        self.sess, self.index, self.d, self.k, self.limit = sess, index, d, k, weight_limit
        if share is not None:
            self.w = sess.from_share(np.asarray(share["w"], dtype=np.uint64), int(share["frac"]), weight_limit)
        else:
            self.w = sess.share(w0 if index == GUEST else None, owner=GUEST, shape=(d, k),
                                bound=weight_limit if index == GUEST else None)
            self.w.bound = weight_limit
        self.a = None
        self.n = 0
        self._rec: contextlib.ExitStack | None = None
        self._recorded: list | None = None
        self._plan: list | None = None

    def begin_epoch(self) -> None:
        if self._plan is not None:
            self.sess.offline(self._plan)
        else:
            self._rec = contextlib.ExitStack()
            self._recorded = self._rec.enter_context(self.sess.recording())

    def end_epoch(self) -> None:
        if not self.sess.all_within(self.w, self.limit):
            from atoll.crypto.ring import RingOverflow

            raise RingOverflow(f"the interactive weights left [-{self.limit:g}, {self.limit:g}]: lower "
                               "interactive_lr, or raise weight_limit")
        self.w.bound = self.limit
        if self._rec is not None:
            self._rec.close()
            self._plan, self._rec = list(self._recorded or []), None

    def _forward(self, a: np.ndarray | None, n: int, train: bool) -> np.ndarray | None:
        s = self.sess
        A = s.share(a if self.index == HOST else None, owner=HOST, shape=(n, self.d),
                    bound=_pow2(a) if self.index == HOST else None)
        self.a, self.n = (A if train else None), n
        return (A @ self.w).reveal(to=GUEST)

    def _backward(self, delta: np.ndarray | None, lr: float) -> np.ndarray | None:
        s, n = self.sess, self.n
        g = self.index == GUEST
        D = s.share(delta * n if g else None, owner=GUEST, shape=(n, self.k), bound=_pow2(delta * n) if g else None)
        grad = (D @ self.w.T).reveal(to=HOST)
        D2 = s.share(np.rint(delta * lr * 2.0 ** UPDATE_BITS) if g else None, owner=GUEST, shape=(n, self.k),
                     integer=True, bound=_pow2(delta * lr * 2.0 ** UPDATE_BITS) if g else None)
        G = self.a.T @ D2
        upd = s.from_share(s.truncate(G.share, UPDATE_BITS), G.frac, None)
        self.w = self.w - upd
        self.w.bound = None
        self.a = None
        return None if grad is None else grad / n

    def state(self) -> dict:
        return {"w": self.w.share.copy(), "frac": int(self.w.frac)}

    def close(self) -> None:
        self.sess.close()


class _SSGuest(_SSLink):
    def forward(self, n: int, train: bool) -> np.ndarray:
        return self._forward(None, n, train)

    def backward(self, delta: np.ndarray, lr: float) -> None:
        self._backward(delta, lr)


class _SSHost(_SSLink):
    def forward(self, a: np.ndarray, train: bool) -> None:
        self._forward(np.asarray(a, dtype=np.float64), a.shape[0], train)

    def backward(self) -> np.ndarray:
        return self._backward(None, 0.0)


class _HEGuest(_Link):
    """Guest side of the HE layer: W_h = wg (here) + wh (host) mod 2^64, f fractional bits."""

    def __init__(self, ctx: Any, host: str, pk: Any, d: int, k: int, frac: int, w0: np.ndarray | None,
                 share: dict | None, jobs: int = 1):
        self.ctx, self.host, self.pk, self.d, self.k, self.f, self.jobs = ctx, host, pk, d, k, frac, jobs
        self.wg = (np.asarray(share["w"], dtype=np.uint64) if share is not None else ring.encode(w0, frac))
        self.enc_a = None
        self.n = 0

    def _recv_enc(self, key: str, shape: tuple[int, ...]) -> Any:
        from atoll.crypto.cipherarray import CipherArray

        c = self.ctx.recv(self.host, key)
        if not isinstance(c, CipherArray) or c.pk != self.pk or tuple(c.shape) != tuple(shape):
            raise CryptoError(f"hetero_nn: the host's {key} is not a ciphertext array of shape {shape} "
                              "under its announced key")
        return c

    def forward(self, n: int, train: bool) -> np.ndarray:
        from atoll.ml.vertical._glm import mask

        enc_a = self._recv_enc("he_a", (n, self.d))
        masked, rs = mask(self.pk, enc_a.T.matvec_t(ring.signed(self.wg), jobs=self.jobs).T)   # [[A]] wg
        self.ctx.send(self.host, "he_aw", masked)
        mine = np.uint64(0) - _mod64(rs).reshape(n, self.k)
        theirs = _check_array(self.ctx.recv(self.host, "he_z"), (n, self.k), "share", np.uint64)
        self.enc_a, self.n = (enc_a if train else None), n
        return ring.decode(mine + theirs, 2 * self.f)

    def backward(self, delta: np.ndarray, lr: float) -> None:
        from atoll.ml.vertical._glm import mask

        n, f = self.n, self.f
        enc_wh = self._recv_enc("he_w", (self.d, self.k))
        dint = np.rint(delta * n * 2.0 ** f).astype(np.int64)
        enc = enc_wh.T.matvec_t(dint.T, jobs=self.jobs)         # [[delta wh^T]] (exact integers)
        plain = ring.matmul(ring.encode_int(dint), np.ascontiguousarray(self.wg.T))  # delta wg^T mod 2^64
        bits = max(int(enc.bound).bit_length(), 64) + MASK_SLACK_BITS
        hide = np.empty(plain.shape, dtype=object)
        hide.ravel()[:] = [int(p) + (secrets.randbits(bits) << 64) for p in plain.ravel().tolist()]
        self.ctx.send(self.host, "he_da", enc + self.pk.encrypt_int(hide, jobs=self.jobs))
        d2 = np.rint(delta * lr * 2.0 ** (f + UPDATE_BITS)).astype(np.int64)
        masked, rs = mask(self.pk, self.enc_a.matvec_t(d2, jobs=self.jobs).T)   # [[A^T lr delta]]
        self.ctx.send(self.host, "he_g", masked)
        shift = f + UPDATE_BITS
        mine = np.array([(-(r >> shift)) % (1 << 64) for r in rs], dtype=np.uint64).reshape(self.d, self.k)
        self.wg = self.wg - mine
        self.enc_a = None

    def state(self) -> dict:
        return {"w": self.wg.copy(), "frac": self.f}


class _HEHost(_Link):
    def __init__(self, ctx: Any, guest: str, kp: Any, d: int, k: int, frac: int, share: dict | None,
                 jobs: int = 1):
        self.ctx, self.guest, self.kp, self.d, self.k, self.f, self.jobs = ctx, guest, kp, d, k, frac, jobs
        self.wh = np.asarray(share["w"], dtype=np.uint64) if share is not None else np.zeros((d, k), np.uint64)
        self.n = 0

    def _recv_enc(self, key: str, shape: tuple[int, ...]) -> Any:
        from atoll.crypto.cipherarray import CipherArray

        c = self.ctx.recv(self.guest, key)
        if not isinstance(c, CipherArray) or c.pk != self.kp.public_key or tuple(c.shape) != tuple(shape):
            raise CryptoError(f"hetero_nn: the guest's {key} is not a ciphertext array of shape {shape} "
                              "under this party's key")
        return c

    def forward(self, a: np.ndarray, train: bool) -> None:
        n = a.shape[0]
        aint = np.rint(np.asarray(a, dtype=np.float64) * 2.0 ** self.f).astype(np.int64)
        self.ctx.send(self.guest, "he_a", self.kp.public_key.encrypt_int(aint, jobs=self.jobs))
        raw = self.kp.private_key.decrypt_int(self._recv_enc("he_aw", (n, self.k)), jobs=self.jobs)
        mine = _mod64(raw) + ring.matmul(ring.encode_int(aint), self.wh)
        self.ctx.send(self.guest, "he_z", mine)
        self.n = n

    def backward(self) -> np.ndarray:
        n, f = self.n, self.f
        self.ctx.send(self.guest, "he_w", self.kp.public_key.encrypt_int(ring.signed(self.wh)))
        da = ring.decode(_mod64(self.kp.private_key.decrypt_int(self._recv_enc("he_da", (n, self.d)),
                                                                jobs=self.jobs)), 2 * f)
        raw = self.kp.private_key.decrypt_int(self._recv_enc("he_g", (self.d, self.k)), jobs=self.jobs)
        shift = f + UPDATE_BITS
        upd = np.array([(int(v) >> shift) % (1 << 64) for v in raw.ravel()], dtype=np.uint64)
        self.wh = self.wh - upd.reshape(self.d, self.k)
        return da / n

    def state(self) -> dict:
        return {"w": self.wh.copy(), "frac": self.f}


# ============================================================================ model parts
@dataclass
class HeteroNNPartModel:
    """One party's part of a trained split network (safe to save: arrays, numbers, strings)."""

    role: str
    party: str
    params: dict
    n_features: int
    bottom: dict[str, np.ndarray]
    links: dict[str, dict] = field(default_factory=dict)      # guest: per host; host: {"guest": ...}
    interactive: dict[str, np.ndarray] | None = None            # guest: its Linear(d_g, k)
    top: dict[str, np.ndarray] | None = None
    n_out: int = 1
    host_dims: dict[str, int] = field(default_factory=dict)
    history: dict = field(default_factory=dict)                 # guest: loss, val_loss, epoch_seconds
    report: dict = field(default_factory=dict)                  # mode, epochs, leakage, epsilon, ...

    def to_dict(self) -> dict:
        return {"role": self.role, "party": self.party, "params": self.params, "n_features": self.n_features,
                "bottom": self.bottom, "links": self.links, "interactive": self.interactive, "top": self.top,
                "n_out": self.n_out, "host_dims": self.host_dims, "history": self.history, "report": self.report}

    @classmethod
    def from_dict(cls, d: dict) -> "HeteroNNPartModel":
        if not isinstance(d, dict) or d.get("role") not in ("guest", "host"):
            raise DataError("not a hetero_nn model part")
        return cls(d["role"], str(d["party"]), dict(d["params"]), int(d["n_features"]), dict(d["bottom"]),
                   dict(d.get("links") or {}), d.get("interactive"), d.get("top"), int(d.get("n_out", 1)),
                   {str(k): int(v) for k, v in (d.get("host_dims") or {}).items()}, dict(d.get("history") or {}),
                   dict(d.get("report") or {}))

    def save(self, path: str) -> None:
        """Write this part with atoll's safe codec (no pickle)."""
        with open(path, "wb") as fh:
            fh.write(wire.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str) -> "HeteroNNPartModel":
        with open(path, "rb") as fh:
            return cls.from_dict(wire.loads(fh.read()))


# ============================================================================ roles
class _Role:
    role = "guest"
    index = GUEST

    def __init__(self, params: HeteroNNParams | dict | None = None, bottom: nn.Module | None = None,
                 probe: list | None = None):
        """``bottom``: a torch module in place of the declared one (Python API only). ``probe``:
        simulation hook; a host appends ``(rows, per-example gradient)`` of every batch to it."""
        self.params = params if isinstance(params, HeteroNNParams) else HeteroNNParams.model_validate(params or {})
        self._bottom = bottom
        self.probe = probe

    def _device(self) -> Any:
        return resolve_device(self.params.device)

    def _make_bottom(self, party: str, n_features: int, seed_part: str) -> nn.Module:
        if self._bottom is not None:
            return self._bottom
        return build_bottom(self.params.bottom_for(party), n_features, part_seed(self.params.random_state, seed_part))

    def _session(self, ctx: Any, peer: str, host_name: str) -> Any:
        from atoll.ml.vertical.ss_lr import resolve_provider
        from atoll.secure.mpc import Session

        p = self.params
        name = resolve_provider(p.provider, ctx)
        opts: dict[str, Any] = {"provider": name, "frac_bits": p.frac_bits, "trunc": p.trunc}
        if name == "dealer":
            opts.update(dealer=ctx.parties_of("arbiter")[0], channel=host_name)
        elif name == "he":
            opts.update(scheme=p.scheme, key_bits=p.key_bits)
        return Session(ctx, peer, self.index, **opts)

    def _handshake_msg(self, x: np.ndarray, ids: Sequence[Any] | None) -> dict:
        return {"n": int(x.shape[0]), "digest": ids_digest(ids, x.shape[0]), "plan": self.params.plan()}

    @staticmethod
    def _check_peer(mine: dict, theirs: Any) -> None:
        if not isinstance(theirs, dict):
            raise DataError("hetero_nn: malformed handshake from a peer")
        problems = []
        if theirs.get("n") != mine["n"]:
            problems.append(f"the parties have {mine['n']} and {theirs.get('n')} rows")
        elif theirs.get("digest") != mine["digest"]:
            problems.append("the parties' rows are not in the same order (different ids or order)")
        if theirs.get("plan") != mine["plan"]:
            problems.append("the parties run with different parameters")
        if problems:
            raise DataError("cannot train: " + "; ".join(problems) + ". Align the rows first (PSI) and use the "
                            "same parameters at every party")


class HeteroNNGuest(_Role):
    """Guest (labels, its features, bottom + interactive part + top model) of split learning."""

    def fit(self, ctx: Any, x: Any, y: Any, ids: Sequence[Any] | None = None) -> HeteroNNPartModel:
        p = self.params
        dev = self._device()
        x = _as_matrix(x, "guest", min_features=1)
        n = x.shape[0]
        y = np.asarray(y, dtype=np.float64).ravel()
        if y.shape[0] != n or not np.isfinite(y).all():
            raise DataError("the guest needs one finite label per row")
        if p.task == "binary" and not np.isin(y, (0.0, 1.0)).all():
            raise DataError("task 'binary' needs labels 0/1")
        if p.task == "multiclass" and (np.any(y < 0) or np.any(y != np.rint(y))):
            raise DataError("task 'multiclass' needs labels 0, 1, ..., n_classes - 1")
        hosts = ctx.parties_of("host")
        if not hosts:
            raise ConfigError("hetero_nn needs at least one host")
        mine = self._handshake_msg(x, ids)
        with ctx.scope("hetero_nn"):
            ctx.broadcast(hosts, "hello", mine)
            dims, feats = {}, {}
            for h in hosts:
                theirs = ctx.recv(h, "hello")
                self._check_peer(mine, theirs)
                d, d_in = theirs.get("d_out"), theirs.get("d_in")
                if not isinstance(d, int) or not 0 < d <= MAX_WIDTH or not isinstance(d_in, int) or not 0 < d_in <= 10_000_000:
                    raise DataError("hetero_nn: a host announces an impossible bottom output width")
                dims[h], feats[h] = d, d_in
            n_out = n_outputs(p, y)
            if p.task == "multiclass" and int(np.max(y)) >= n_out:
                raise DataError(f"labels go up to {int(np.max(y))} but n_classes is {n_out}")
            bottom = self._make_bottom(ctx.party, x.shape[1], "bottom/guest").to(dev)
            d_g = output_dim(bottom, x.shape[1])
            k = p.interactive_units
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(part_seed(p.random_state, "interactive/guest"))
                inter = nn.Linear(d_g, k).to(dev)
            top = build_top(p.top, k, n_out, part_seed(p.random_state, "top")).to(dev)
            fan_in = d_g + sum(dims.values())
            links = self._links(ctx, hosts, dims, k, fan_in, None)
            try:
                hist, report = self._train(ctx, hosts, links, bottom, inter, top, x, y, dev)
                report["host_features"] = feats
            finally:
                for link in links.values():
                    link.close()
        return HeteroNNPartModel("guest", ctx.party, p.model_dump(mode="json"), x.shape[1], state_arrays(bottom),
                                 {h: link.state() for h, link in links.items()}, state_arrays(inter),
                                 state_arrays(top), n_out, dims, hist, report)

    def _links(self, ctx: Any, hosts: list[str], dims: dict[str, int], k: int, fan_in: int,
               shares: dict | None) -> dict[str, _Link]:
        p = self.params
        out: dict[str, _Link] = {}
        for i, h in enumerate(hosts):
            w0 = initial_interactive(p.random_state, i, dims[h], k, fan_in) if shares is None else None
            st = None if shares is None else shares[h]
            if p.mode == "plain":
                out[h] = _PlainGuest(ctx, h, w0 if st is None else st["w"])
            elif p.mode == "ss":
                out[h] = _SSGuest(self._session(ctx, h, h), GUEST, dims[h], k, w0, st, p.weight_limit)
            else:
                pk = ctx.recv(h, "he_pk")
                if getattr(pk, "scheme", None) != p.scheme or getattr(pk, "key_bits", 0) < p.key_bits:
                    raise CryptoError(f"hetero_nn: host {h}'s key is not {p.scheme} with at least {p.key_bits} bits")
                out[h] = _HEGuest(ctx, h, pk, dims[h], k, p.frac_bits, w0, st, p.n_jobs)
        return out

    def _forward(self, links: dict[str, _Link], bottom: nn.Module, inter: nn.Module, top: nn.Module,
                 xb: np.ndarray, dev: Any, train: bool) -> tuple["torch.Tensor", list["torch.Tensor"]]:
        a_g = bottom(torch.as_tensor(xb, dtype=torch.float32, device=dev))
        zs = [torch.as_tensor(link.forward(len(xb), train), dtype=torch.float32, device=dev).requires_grad_(train)
              for link in links.values()]
        z = inter(a_g) + sum(zs)
        if train:
            z.retain_grad()
        return top(z), [z]

    def _train(self, ctx: Any, hosts: list[str], links: dict[str, _Link], bottom: nn.Module, inter: nn.Module,
               top: nn.Module, x: np.ndarray, y: np.ndarray, dev: Any) -> dict:
        p = self.params
        lossf = loss_fn(p.task)
        opt = make_optimizer(p, [bottom, inter, top])
        tr, va = validation_split(x.shape[0], p.validation_fraction, p.random_state)
        rng = np.random.default_rng(part_seed(p.random_state, "batches"))
        mix_rng = np.random.default_rng(part_seed(p.random_state, "mixup"))
        noise = noise_rng(p.noise_seed)
        n_out = top[-1].out_features
        # epoch_cpu_seconds: CPU time of this process in the epoch (in a threads simulation: every party's)
        hist: dict[str, Any] = {"loss": [], "val_loss": [], "epoch_seconds": [], "epoch_cpu_seconds": []}
        report: dict[str, Any] = {"mode": p.mode}
        best, since = math.inf, 0
        last_delta: list[np.ndarray] = []
        last_rows: list[np.ndarray] = []
        for epoch in range(p.epochs):
            tic, cpu = time.perf_counter(), time.process_time()
            with ctx.scope("epoch", epoch):
                for link in links.values():
                    link.begin_epoch()
                total = 0.0
                last_delta, last_rows = [], []
                for j, idx in enumerate(epoch_batches(len(tr), p.batch_size, p.shuffle, rng)):
                    rows = tr[idx]
                    mixing = leak.mixup_plan(mix_rng, len(rows), p.mixup_alpha) if p.defence == "mixup" else None
                    with ctx.scope("batch", j):
                        bottom.train(), top.train()
                        out, (z,) = self._forward(links, bottom, inter, top, batch_rows(x, rows, mixing), dev, True)
                        tgt = (target(y[rows], p.task, dev) if mixing is None
                               else mixed_target(y[rows], p.task, n_out, *mixing, dev))
                        loss = lossf(out, tgt)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        total += float(loss.detach()) * len(rows)
                        nb = len(rows)
                        delta = z.grad.detach().double().cpu().numpy()
                        sent = leak.defend(delta * nb, p.defence, noise, p.clip_norm, p.noise_multiplier,
                                           p.group_size) / nb
                        last_delta.append(sent * nb)
                        last_rows.append(rows)
                        for link in links.values():
                            link.backward(sent, p.interactive_lr)
                hist["loss"].append(total / len(tr))
                stop = False
                if len(va):
                    with ctx.scope("validate"):
                        vl = self._val_loss(ctx, links, bottom, inter, top, x[va], y[va], dev, lossf)
                    hist["val_loss"].append(vl)
                    if vl < best - 1e-6:
                        best, since = vl, 0
                    else:
                        since += 1
                    stop = p.early_stopping_rounds is not None and since >= p.early_stopping_rounds
                for link in links.values():
                    link.end_epoch()
                if len(va):
                    ctx.broadcast(hosts, "stop", bool(stop))
            hist["epoch_seconds"].append(time.perf_counter() - tic)
            hist["epoch_cpu_seconds"].append(time.process_time() - cpu)
            if stop:
                break
        report["epochs"] = len(hist["loss"])
        if p.task == "binary" and last_rows:
            rows = np.concatenate(last_rows)
            g = np.concatenate(last_delta)
            # the attacks on the (defended) cut-layer gradient of the last epoch; every host's gradient
            # is a linear image of it (delta W_h^T)
            report["leakage"] = {"norm_auc": leak.norm_attack_auc(g, y[rows]),
                               "direction_auc": leak.direction_attack_auc(g, y[rows], 0)}
        if p.defence == "noise":
            report["epsilon"] = leak.noise_epsilon(p.noise_multiplier, report["epochs"])
        return hist, report

    def _val_loss(self, ctx: Any, links: dict, bottom: nn.Module, inter: nn.Module, top: nn.Module, xv: np.ndarray,
                  yv: np.ndarray, dev: Any, lossf: nn.Module) -> float:
        total = 0.0
        bottom.eval(), top.eval()
        for j, s in enumerate(range(0, len(xv), self.params.predict_batch)):
            with ctx.scope("vbatch", j), torch.no_grad():
                out, _ = self._forward(links, bottom, inter, top, xv[s:s + self.params.predict_batch], dev, False)
                yy = yv[s:s + self.params.predict_batch]
                total += float(lossf(out, target(yy, self.params.task, dev))) * len(yy)
        return total / len(xv)

    def predict(self, ctx: Any, model: HeteroNNPartModel, x: Any, ids: Sequence[Any] | None = None) -> np.ndarray:
        """Joint prediction: scores (binary: P(y=1); multiclass: probabilities; regression: values)."""
        p = self.params
        dev = self._device()
        x = _as_matrix(x, "guest", min_features=1)
        hosts = ctx.parties_of("host")
        if sorted(hosts) != sorted(model.host_dims):
            raise DataError(f"the model was trained with hosts {sorted(model.host_dims)}; this job has {hosts}")
        bottom = load_state(self._make_bottom(ctx.party, model.n_features, "bottom/guest"), model.bottom).to(dev)
        inter = nn.Linear(output_dim(bottom, model.n_features), p.interactive_units)
        inter = load_state(inter, model.interactive).to(dev)
        top = load_state(build_top(p.top, p.interactive_units, model.n_out, 0), model.top).to(dev)
        bottom.eval(), top.eval()
        mine = self._handshake_msg(x, ids)
        out = []
        with ctx.scope("hetero_nn_predict"):
            ctx.broadcast(hosts, "hello", mine)
            for h in hosts:
                self._check_peer(mine, ctx.recv(h, "hello"))
            links = self._links(ctx, hosts, model.host_dims, p.interactive_units, 0, model.links)
            try:
                for j, s in enumerate(range(0, x.shape[0], p.predict_batch)):
                    with ctx.scope("batch", j), torch.no_grad():
                        o, _ = self._forward(links, bottom, inter, top, x[s:s + p.predict_batch], dev, False)
                        out.append(scores_of(o, p.task))
            finally:
                for link in links.values():
                    link.close()
        return np.concatenate(out)


class HeteroNNHost(_Role):
    """Host (its features and bottom model) of split learning."""

    role = "host"
    index = HOST

    def _setup(self, ctx: Any, x: np.ndarray, ids: Sequence[Any] | None, d_out: int) -> str:
        guest = ctx.parties_of("guest")
        if len(guest) != 1:
            raise ConfigError("hetero_nn takes exactly one guest")
        guest = guest[0]
        mine = self._handshake_msg(x, ids)
        ctx.send(guest, "hello", {**mine, "d_out": int(d_out), "d_in": int(x.shape[1])})
        self._check_peer(mine, ctx.recv(guest, "hello"))
        return guest

    def _link(self, ctx: Any, guest: str, d: int, share: dict | None) -> _Link:
        p = self.params
        if p.mode == "plain":
            return _PlainHost(ctx, guest, d)
        if p.mode == "ss":
            return _SSHost(self._session(ctx, guest, ctx.party), HOST, d, p.interactive_units, None, share,
                           p.weight_limit)
        from atoll.crypto import he

        kp = he.generate_keypair(p.scheme, p.key_bits)
        ctx.send(guest, "he_pk", kp.public_key)
        return _HEHost(ctx, guest, kp, d, p.interactive_units, p.frac_bits, share, p.n_jobs)

    def fit(self, ctx: Any, x: Any, ids: Sequence[Any] | None = None) -> HeteroNNPartModel:
        p = self.params
        dev = self._device()
        x = _as_matrix(x, "host", min_features=1)
        hosts = ctx.parties_of("host")
        i = hosts.index(ctx.party)
        bottom = self._make_bottom(ctx.party, x.shape[1], f"bottom/host/{i}").to(dev)
        d = output_dim(bottom, x.shape[1])
        opt = make_optimizer(p, [bottom])
        with ctx.scope("hetero_nn"):
            guest = self._setup(ctx, x, ids, d)
            link = self._link(ctx, guest, d, None)
            tr, va = validation_split(x.shape[0], p.validation_fraction, p.random_state)
            rng = np.random.default_rng(part_seed(p.random_state, "batches"))
            mix_rng = np.random.default_rng(part_seed(p.random_state, "mixup"))
            epochs = 0
            try:
                for epoch in range(p.epochs):
                    with ctx.scope("epoch", epoch):
                        link.begin_epoch()
                        for j, idx in enumerate(epoch_batches(len(tr), p.batch_size, p.shuffle, rng)):
                            rows = tr[idx]
                            mixing = (leak.mixup_plan(mix_rng, len(rows), p.mixup_alpha)
                                      if p.defence == "mixup" else None)
                            with ctx.scope("batch", j):
                                bottom.train()
                                a = bottom(torch.as_tensor(batch_rows(x, rows, mixing), dtype=torch.float32,
                                                           device=dev))
                                link.forward(a.detach().double().cpu().numpy(), True)
                                g = link.backward()
                                if self.probe is not None:
                                    self.probe.append((rows, g * len(rows)))
                                if opt is not None:
                                    opt.zero_grad()
                                    a.backward(torch.as_tensor(g, dtype=a.dtype, device=dev))
                                    opt.step()
                        stop = False
                        if len(va):
                            with ctx.scope("validate"):
                                self._infer(ctx, link, bottom, x[va], dev, "vbatch")
                        link.end_epoch()
                        if len(va):
                            stop = ctx.recv(guest, "stop") is True
                    epochs += 1
                    if stop:
                        break
            finally:
                link.close()
        return HeteroNNPartModel("host", ctx.party, p.model_dump(mode="json"), x.shape[1], state_arrays(bottom),
                                 {"guest": link.state()}, report={"epochs": epochs, "mode": p.mode})

    def _infer(self, ctx: Any, link: _Link, bottom: nn.Module, x: np.ndarray, dev: Any, scope: str) -> None:
        bottom.eval()
        for j, s in enumerate(range(0, x.shape[0], self.params.predict_batch)):
            with ctx.scope(scope, j), torch.no_grad():
                a = bottom(torch.as_tensor(x[s:s + self.params.predict_batch], dtype=torch.float32, device=dev))
                link.forward(a.double().cpu().numpy(), False)

    def predict(self, ctx: Any, model: HeteroNNPartModel, x: Any, ids: Sequence[Any] | None = None) -> None:
        dev = self._device()
        x = _as_matrix(x, "host", min_features=1)
        if x.shape[1] != model.n_features:
            raise DataError(f"the host's model was trained on {model.n_features} features, got {x.shape[1]}")
        i = ctx.parties_of("host").index(ctx.party)
        bottom = load_state(self._make_bottom(ctx.party, model.n_features, f"bottom/host/{i}"), model.bottom).to(dev)
        d = output_dim(bottom, model.n_features)
        with ctx.scope("hetero_nn_predict"):
            guest = self._setup(ctx, x, ids, d)
            link = self._link(ctx, guest, d, model.links.get("guest"))
            try:
                self._infer(ctx, link, bottom, x, dev, "batch")
            finally:
                link.close()
        return None


def run_dealers(ctx: Any) -> dict:
    """The arbiter as the dealer of every guest-host session (``ss`` with provider dealer)."""
    from atoll.secure.mpc import run_dealer

    guest = ctx.parties_of("guest")[0]
    hosts = ctx.parties_of("host")
    if len(hosts) == 1:
        return {hosts[0]: run_dealer(ctx, [guest, hosts[0]], channel=hosts[0])}
    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def serve(h: str) -> None:
        try:
            out[h] = run_dealer(ctx, [guest, h], channel=h)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=serve, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def serves_dealer(params: HeteroNNParams, ctx: Any) -> bool:
    from atoll.ml.vertical.ss_lr import resolve_provider

    return params.mode == "ss" and bool(ctx.parties_of("arbiter")) and resolve_provider(params.provider, ctx) == "dealer"


# ============================================================================ centralised twin
class CentralSplitNN:
    """The same architecture trained centrally in torch on the joined features (the oracle and the
    job baseline): same seeds, initial weights, batches, optimisers and early stopping as the
    federated run, the interactive weights of each host block stepped by SGD at ``interactive_lr``.
    ``blocks``: the guest's features, then each host's, in ``host_names`` order."""

    def __init__(self, params: HeteroNNParams | dict, guest: str = "guest", host_names: Sequence[str] = ("host_0",),
                 bottoms: dict[str, nn.Module] | None = None):
        self.params = params if isinstance(params, HeteroNNParams) else HeteroNNParams.model_validate(params)
        self.guest, self.host_names = guest, list(host_names)
        self._given = dict(bottoms or {})

    def _bottom(self, party: str, n: int, part: str) -> nn.Module:
        if party in self._given:
            return self._given[party]
        return build_bottom(self.params.bottom_for(party), n, part_seed(self.params.random_state, part))

    def fit(self, blocks: Sequence[np.ndarray], y: np.ndarray) -> "CentralSplitNN":
        p = self.params
        dev = resolve_device(p.device)
        blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
        y = np.asarray(y, dtype=np.float64).ravel()
        self.bottoms_ = [self._bottom(self.guest, blocks[0].shape[1], "bottom/guest").to(dev)]
        self.bottoms_ += [self._bottom(h, b.shape[1], f"bottom/host/{i}").to(dev)
                          for i, (h, b) in enumerate(zip(self.host_names, blocks[1:]))]
        dims = [output_dim(m, b.shape[1]) for m, b in zip(self.bottoms_, blocks)]
        k = p.interactive_units
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(part_seed(p.random_state, "interactive/guest"))
            self.inter_ = nn.Linear(dims[0], k).to(dev)
        self.n_out_ = n_outputs(p, y)
        self.top_ = build_top(p.top, k, self.n_out_, part_seed(p.random_state, "top")).to(dev)
        fan_in = sum(dims)
        self.w_ = [torch.tensor(initial_interactive(p.random_state, i, d, k, fan_in), dtype=torch.float64,
                                device=dev, requires_grad=True) for i, d in enumerate(dims[1:])]
        opt = make_optimizer(p, [*self.bottoms_, self.inter_, self.top_])
        wopt = torch.optim.SGD(self.w_, lr=p.interactive_lr)
        lossf = loss_fn(p.task)
        tr, va = validation_split(len(y), p.validation_fraction, p.random_state)
        rng = np.random.default_rng(part_seed(p.random_state, "batches"))
        self.history_: dict[str, Any] = {"loss": [], "val_loss": [], "epoch_seconds": [], "epoch_cpu_seconds": []}
        best, since = math.inf, 0
        for _ in range(p.epochs):
            tic, cpu = time.perf_counter(), time.process_time()
            total = 0.0
            for idx in epoch_batches(len(tr), p.batch_size, p.shuffle, rng):
                rows = tr[idx]
                self._train_mode(True)
                out = self._forward([b[rows] for b in blocks], dev)
                loss = lossf(out, target(y[rows], p.task, dev))
                opt.zero_grad()
                wopt.zero_grad()
                loss.backward()
                opt.step()
                wopt.step()
                total += float(loss.detach()) * len(rows)
            self.history_["loss"].append(total / len(tr))
            stop = False
            if len(va):
                self._train_mode(False)
                with torch.no_grad():
                    vl = float(lossf(self._forward([b[va] for b in blocks], dev), target(y[va], p.task, dev)))
                self.history_["val_loss"].append(vl)
                if vl < best - 1e-6:
                    best, since = vl, 0
                else:
                    since += 1
                stop = p.early_stopping_rounds is not None and since >= p.early_stopping_rounds
            self.history_["epoch_seconds"].append(time.perf_counter() - tic)
            self.history_["epoch_cpu_seconds"].append(time.process_time() - cpu)
            if stop:
                break
        return self

    def _train_mode(self, on: bool) -> None:
        for m in [*self.bottoms_, self.top_]:
            m.train(on)

    def _forward(self, xs: Sequence[np.ndarray], dev: Any) -> "torch.Tensor":
        a = [m(torch.as_tensor(x, dtype=torch.float32, device=dev)) for m, x in zip(self.bottoms_, xs)]
        z = self.inter_(a[0])
        for ah, w in zip(a[1:], self.w_):
            z = z + (ah.double() @ w).float()
        return self.top_(z)

    def predict_scores(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        self._train_mode(False)
        dev = resolve_device(self.params.device)
        with torch.no_grad():
            return scores_of(self._forward([np.asarray(b, dtype=np.float64) for b in blocks], dev),
                             self.params.task)


# ============================================================================ simulation
def _fit_party(ctx: Any, role: _Role, x: Any, y: Any = None, ids: Any = None) -> Any:
    if isinstance(role, HeteroNNGuest):
        return role.fit(ctx, x, y, ids)
    return role.fit(ctx, x, ids)


def _predict_party(ctx: Any, role: _Role, model: HeteroNNPartModel, x: Any, ids: Any = None) -> Any:
    return role.predict(ctx, model, x, ids)


def _dealer_party(ctx: Any) -> dict:
    return run_dealers(ctx)


def simulate_fit(params: HeteroNNParams | dict, xg: np.ndarray, y: np.ndarray, hosts: dict[str, np.ndarray],
                 dealer: bool = True, probes: dict[str, list] | None = None,
                 bottoms: dict[str, nn.Module] | None = None, recorder: Any = None,
                 mode: str = "threads") -> tuple[HeteroNNPartModel, dict[str, HeteroNNPartModel]]:
    """Train every party in this process (threads; or ``mode="processes"``: gRPC + mTLS on loopback).
    ``dealer``: start an arbiter as the dealer of ``ss`` mode."""
    from atoll.federation import Party, launch

    params = params if isinstance(params, HeteroNNParams) else HeteroNNParams.model_validate(params)
    bottoms = bottoms or {}
    probes = probes or {}
    parties = {"guest": Party("guest", _fit_party, {"role": HeteroNNGuest(params, bottoms.get("guest")),
                                                    "x": xg, "y": y})}
    for h, xh in hosts.items():
        parties[h] = Party("host", _fit_party, {"role": HeteroNNHost(params, bottoms.get(h), probes.get(h)), "x": xh})
    if dealer and params.mode == "ss" and params.provider in ("auto", "dealer"):
        parties["arbiter"] = Party("arbiter", _dealer_party)
    kw = {"recorder": recorder} if recorder is not None else {}
    out = launch(parties, mode=mode, **kw)
    return out["guest"], {h: out[h] for h in hosts}


def simulate_predict(params: HeteroNNParams | dict, guest: HeteroNNPartModel, hosts: dict[str, HeteroNNPartModel],
                     xg: np.ndarray, xhs: dict[str, np.ndarray], dealer: bool = True,
                     bottoms: dict[str, nn.Module] | None = None) -> np.ndarray:
    from atoll.federation import Party, launch

    params = params if isinstance(params, HeteroNNParams) else HeteroNNParams.model_validate(params)
    bottoms = bottoms or {}
    parties = {"guest": Party("guest", _predict_party, {"role": HeteroNNGuest(params, bottoms.get("guest")),
                                                        "model": guest, "x": xg})}
    for h, xh in xhs.items():
        parties[h] = Party("host", _predict_party, {"role": HeteroNNHost(params, bottoms.get(h)),
                                                    "model": hosts[h], "x": xh})
    if dealer and params.mode == "ss" and params.provider in ("auto", "dealer"):
        parties["arbiter"] = Party("arbiter", _dealer_party)
    return launch(parties)["guest"]
