"""Shared pieces of federated transfer learning (Liu et al., arXiv:1812.03337): the ONE parameter
model, the representation networks, the pure loss and gradient formulas, the model parts and their
(de)serialisers, and the centralised twin. The protocols live in :mod:`atoll.ml.transfer.hetero_ftl`
(plain and HE) and :mod:`atoll.ml.transfer.ss_ftl` (secret sharing); both compute exactly the
gradients written down here, only the arithmetic differs.

The model. The guest A holds ``N_A`` labelled users (features ``X_A``, labels ``y`` in {-1, +1}),
the host B holds other users (features ``X_B``); ``N`` users are held by both (the overlap, found by
PSI). Each party maps its features into a common ``d``-dimensional space with its own network:
``U_A = Net_A(X_A)``, ``U_B = Net_B(X_B)``. The guest's knowledge is the vector

    phi = (1 / N_A) sum_j y_j u_A_j                                  (d,)

and a host user ``x`` is scored ``phi . Net_B(x)`` (probability ``sigmoid`` of it). Training minimises,
over the overlap rows ``i`` (``u_A_i``, ``u_B_i`` the same user at both parties),

    L = (1/N) sum_i [log 2 - y_i s_i / 2 + s_i**2 / 8]              (s_i = phi . u_B_i; the logistic
        + (gamma / N) sum_i |u_A_i - u_B_i|**2                         loss to second order, Liu et al.)
        + w_g (1/N_A) sum_j [log 2 - y_j t_j / 2 + t_j**2 / 8]       (t_j = phi . u_A_j, optional,
                                                                      guest-local; 0 in the paper)

plus each party's own L2 penalty on its network weights (its optimizer's weight decay). The Taylor
form makes every gradient a *linear* function of the other party's quantities, so it can be
evaluated under additively homomorphic encryption or on secret shares. With ``J_B`` the per-row
Jacobian of ``U_B`` (overlap rows) by the host's weights, ``J_Ao`` that of the guest's overlap rows,
``K = d(y^T U_A) / d theta_A`` (d x P_A):

    dL/dtheta_B = (1/N) [ 1/4 sum_kl P_kl T_kl + J_B^T vec(C) + 2 gamma J_B^T vec(U_B) ]
        P = phi phi^T (guest's),  C = -y phi^T / 2 - 2 gamma U_Ao (guest's, N x d),
        T_kl = sum_i J_B[i, k, :] u_B_i[l] (host's)
    dL/dtheta_A = K^T v / (N N_A) + (2 gamma / N) [ J_Ao^T vec(U_Ao) - J_Ao^T vec(U_B) ] + w_g (local)
        v = -U_B^T y / 2 + S_B phi / 4,  S_B = U_B^T U_B (host's)
    L  = log 2 + (1/N) [ -phi . (U_B^T y) / 2 + phi^T S_B phi / 8 ]
         + (gamma/N) [ sum |U_Ao|**2 - 2 sum U_Ao * U_B + q_B ] + local,   q_B = sum |U_B|**2

:func:`host_gradient` and :func:`guest_gradient` evaluate these in the clear (tested against autograd
on the same loss: :class:`CentralFTL`, the centralised twin).
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from atoll import wire
from atoll.errors import ConfigError, DataError

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ConfigError("federated transfer learning needs PyTorch: pip install 'atoll[torch]'") from e

LOG2 = math.log(2.0)
#: the most weights a peer may announce for its network (bounds every buffer sized from it)
MAX_WEIGHTS = 1_000_000
MAX_LATENT = 1024
# torch.func's transforms keep process-global state (forward-AD levels): parties running as threads of
# one process (the in-process launch) take turns
_FUNC_LOCK = threading.Lock()


class FTLParams(BaseModel):
    """Parameters of hetero federated transfer learning (the one schema: roles, facade, job component)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["plain", "he", "ss"] = Field("he", description="plain: no encryption (the same protocol "
                                               "in the clear); he: Paillier/OU with masks; ss: secret sharing")
    latent_dim: int = Field(4, ge=1, le=MAX_LATENT, description="dimension d of the common space")
    guest_hidden: list[int] = Field(default_factory=lambda: [8], description="hidden layer sizes of the "
                                    "guest's MLP ([] = linear map)")
    host_hidden: list[int] = Field(default_factory=lambda: [8], description="hidden layer sizes of the host's MLP")
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"
    gamma: float = Field(1.0, ge=0.0, description="weight of the alignment term |u_A - u_B|^2")
    guest_loss_weight: float = Field(0.0, ge=0.0, description="weight of the guest's own Taylor loss on its "
                                     "labelled users (local to the guest; 0 = the paper's loss)")
    l2: float = Field(0.0, ge=0.0, description="each party's weight decay on its own network")
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(0.05, gt=0.0)
    max_iter: int = Field(30, ge=1, description="exchanges (iterations)")
    local_steps: int = Field(1, ge=1, le=100, description="communication-efficient variant: updates per "
                             "exchange, each party reusing the peer's components of the last exchange")
    standardize: bool = Field(True, description="each party standardises its own columns locally")
    scheme: str = Field("paillier", description="HE scheme (mode he; atoll.crypto's registry)")
    key_bits: int = Field(2048, ge=512)
    provider: Literal["auto", "dealer", "he", "ot"] = Field("auto", description="SS correlated randomness "
                                                            "(mode ss): as in ss_lr")
    frac_bits: int = Field(20, ge=8, le=24, description="SS fixed-point fractional bits (mode ss)")
    predict_to: Literal["guest", "host"] = Field("guest", description="who receives the host users' scores")
    n_jobs: int = Field(1, ge=1, description="HE worker processes")
    random_state: int | None = Field(None, description="seeds both networks' initial weights")

    @field_validator("guest_hidden", "host_hidden")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if len(v) > 8 or any(not 1 <= int(h) <= 4096 for h in v):
            raise ValueError("hidden layers: at most 8, each of 1..4096 units")
        return [int(h) for h in v]

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        from atoll.crypto import he

        if v not in he.scheme_names():
            raise ValueError(f"unknown HE scheme {v!r}; use one of {he.scheme_names()}")
        return v

    def plan(self) -> dict:
        """What both parties must agree on (everything but local parallelism)."""
        d = self.model_dump()
        d.pop("n_jobs")
        return d

    def seed(self, role: str) -> int:
        base = 0 if self.random_state is None else int(self.random_state)
        return (base * 1_000_003 + (1 if role == "guest" else 2)) % (2 ** 63)


# ============================================================================ networks
_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def build_mlp(n_in: int, hidden: Sequence[int], latent: int, activation: str, seed: int) -> nn.Module:
    """A float64 MLP ``n_in -> hidden... -> latent``, initialised from ``seed`` alone (PyTorch's default
    uniform(+-1/sqrt(fan_in)) scheme, drawn from its own generator: no global RNG state)."""
    gen = torch.Generator().manual_seed(int(seed))
    sizes = [int(n_in), *hidden, int(latent)]
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        lin = nn.Linear(sizes[k], sizes[k + 1]).double()
        bound = 1.0 / math.sqrt(sizes[k])
        with torch.no_grad():
            lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen, dtype=torch.float64) * 2 * bound - bound)
            lin.bias.copy_(torch.rand(lin.bias.shape, generator=gen, dtype=torch.float64) * 2 * bound - bound)
        layers.append(lin)
        if k < len(sizes) - 2:
            layers.append(_ACT[activation]())
    return nn.Sequential(*layers)


def network_for(params: FTLParams, role: str, n_in: int) -> nn.Module:
    hidden = params.guest_hidden if role == "guest" else params.host_hidden
    return build_mlp(n_in, hidden, params.latent_dim, params.activation, params.seed(role))


def n_weights(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def forward(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _functional(net: nn.Module, x: np.ndarray):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [p.numel() for _, p in net.named_parameters()]
    xt = torch.as_tensor(x, dtype=torch.float64)

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        return torch.func.functional_call(net, {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}, (xt,))

    flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    return f, flat


def jacobian(net: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, J)``: the outputs (n, d) and their Jacobian by the flattened weights (n, d, P)."""
    f, flat = _functional(net, x)
    with torch.no_grad():
        out = f(flat)
    n_out, p = out.numel(), flat.numel()
    with _FUNC_LOCK:
        jac = (torch.func.jacrev if n_out <= p else torch.func.jacfwd)(f)(flat)
    return out.detach().numpy(), jac.detach().numpy()


def weighted_jacobian(net: nn.Module, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``d(w^T Net(x)) / d theta`` (d x P): the Jacobian of a weighted sum of output rows."""
    f, flat = _functional(net, x)
    wt = torch.as_tensor(w, dtype=torch.float64)
    with _FUNC_LOCK:
        return torch.func.jacrev(lambda t: wt @ f(t))(flat).detach().numpy()


def local_guest_gradient(net: nn.Module, x: np.ndarray, y: np.ndarray, weight: float) -> tuple[np.ndarray, float]:
    """Gradient and value of the guest-local term ``w_g * mean_j taylor(y_j, phi . u_A_j)`` (autograd)."""
    p = n_weights(net)
    if weight == 0.0:
        return np.zeros(p), 0.0
    net.zero_grad()
    u = net(torch.as_tensor(x, dtype=torch.float64))
    yt = torch.as_tensor(y, dtype=torch.float64)
    phi = (yt[:, None] * u).mean(0)
    t = u @ phi
    loss = weight * (LOG2 - 0.5 * yt * t + 0.125 * t * t).mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).detach().numpy(), float(loss.detach())


class LocalOptimizer:
    """One party's optimizer over its own network (torch's Adam or SGD, weight decay = ``l2``)."""

    def __init__(self, net: nn.Module, params: FTLParams):
        self.net = net
        cls = torch.optim.Adam if params.optimizer == "adam" else torch.optim.SGD
        self.opt = cls(net.parameters(), lr=params.learning_rate, weight_decay=params.l2)

    def step(self, grad: np.ndarray) -> None:
        g = torch.as_tensor(np.asarray(grad, dtype=np.float64))
        off = 0
        for p in self.net.parameters():
            k = p.numel()
            p.grad = g[off:off + k].reshape(p.shape).clone()
            off += k
        self.opt.step()


# ============================================================================ pure formulas
def guest_components(u_a: np.ndarray, y: np.ndarray, overlap: np.ndarray, gamma: float) -> dict[str, np.ndarray]:
    """The guest's side of an exchange: ``phi``, ``P = phi phi^T`` and ``C = -y_o phi^T / 2 - 2 gamma U_Ao``."""
    phi = (y[:, None] * u_a).mean(axis=0)
    yo = y[overlap]
    return {"phi": phi, "P": np.outer(phi, phi), "C": -0.5 * yo[:, None] * phi[None, :] - 2.0 * gamma * u_a[overlap],
            "yo": yo, "u_ao": u_a[overlap]}


def host_components(u_b: np.ndarray) -> dict[str, np.ndarray]:
    """The host's side: ``U_B`` (overlap rows), ``S_B = U_B^T U_B`` and ``q_B = sum |U_B|^2``."""
    return {"U": u_b, "S": u_b.T @ u_b, "q": np.array([float(np.sum(u_b * u_b))])}


def host_T(jac_b: np.ndarray, u_b: np.ndarray) -> np.ndarray:
    """``T`` as a (d*d, P) matrix: row ``k*d + l`` is ``sum_i J_B[i, k, :] u_B[i, l]``."""
    d = u_b.shape[1]
    return np.einsum("ikp,il->klp", jac_b, u_b).reshape(d * d, -1)


def host_gradient(parts: np.ndarray, jt: np.ndarray, u_b: np.ndarray, gamma: float) -> np.ndarray:
    """Host gradient from ``parts = [T^T vec(P), J_B^T vec(C)]`` (the two sums computed jointly) and its
    own term ``2 gamma J_B^T vec(U_B)``; ``jt`` is ``J_B`` as an (N*d, P) matrix."""
    return (0.25 * parts[0] + parts[1] + 2.0 * gamma * (jt.T @ u_b.ravel())) / u_b.shape[0]


def guest_gradient(parts: np.ndarray, j_ao: np.ndarray, u_ao: np.ndarray, n: int, n_a: int, gamma: float,
                   local: np.ndarray) -> np.ndarray:
    """Guest gradient from ``parts = [K^T v, J_Ao^T vec(U_B)]`` (computed jointly) and its own terms."""
    return parts[0] / (n * n_a) + (2.0 * gamma / n) * (j_ao.T @ u_ao.ravel() - parts[1]) + local


def loss_value(parts: np.ndarray, comp: dict, n: int, gamma: float, local: float) -> float:
    """The loss from ``parts = [phi.(U_B^T y), phi^T S_B phi, sum U_Ao * U_B, q_B]`` (computed jointly)."""
    quad = float(np.sum(comp["u_ao"] ** 2))
    return (LOG2 + (-0.5 * parts[0] + 0.125 * parts[1]) / n
            + gamma / n * (quad - 2.0 * parts[2] + parts[3]) + local)


def plain_exchange(u_a: np.ndarray, y: np.ndarray, overlap: np.ndarray, u_b: np.ndarray, jac_b: np.ndarray,
                   j_ao: np.ndarray, k: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The jointly computed sums of one exchange, in the clear: (host parts, guest parts, loss parts).
    The reference the HE and SS protocols are tested against."""
    g = guest_components(u_a, y, overlap, gamma)
    h = host_components(u_b)
    jt = jac_b.reshape(-1, jac_b.shape[-1])
    hp = np.stack([host_T(jac_b, u_b).T @ g["P"].ravel(), jt.T @ g["C"].ravel()])
    ub_y = u_b.T @ g["yo"]
    v = -0.5 * ub_y + 0.25 * h["S"] @ g["phi"]
    gp = np.stack([k.T @ v, j_ao.reshape(-1, j_ao.shape[-1]).T @ u_b.ravel()])
    lp = np.array([g["phi"] @ ub_y, g["phi"] @ h["S"] @ g["phi"], float(np.sum(g["u_ao"] * u_b)), h["q"][0]])
    return hp, gp, lp


# ============================================================================ data helpers
def as_matrix(x: Any, who: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{who}'s features must be a non-empty 2-d table (rows x features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{who}'s features contain NaN or infinite values; impute them first")
    return a


def signed_labels(y: Any, n: int) -> np.ndarray:
    yy = np.asarray(y, dtype=np.float64).ravel()
    if yy.shape[0] != n or not np.isin(yy, (0.0, 1.0)).all():
        raise DataError("the guest needs one 0/1 label per row")
    return 2.0 * yy - 1.0


def standardizer(x: np.ndarray, on: bool) -> tuple[np.ndarray, np.ndarray]:
    if not on:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mu, sd = x.mean(axis=0), x.std(axis=0)
    return mu, np.where(sd > 0, sd, 1.0)


# ============================================================================ model parts
@dataclass
class FTLPartyModel:
    """One party's part of a trained FTL model: its network weights and standardisation; the guest's
    part also holds ``phi`` (its knowledge: the host never sees it)."""

    role: str
    n_features: int
    hidden: list[int]
    latent_dim: int
    activation: str
    weights: list[np.ndarray]
    mu: np.ndarray
    sd: np.ndarray
    phi: np.ndarray | None = None
    n_iter: int = 0
    losses: list[float] = field(default_factory=list)
    iter_seconds: list[float] = field(default_factory=list)
    timing: dict = field(default_factory=dict)       # SS mode: the session's offline / online split

    def network(self) -> nn.Module:
        net = build_mlp(self.n_features, self.hidden, self.latent_dim, self.activation, 0)
        params = list(net.parameters())
        if len(params) != len(self.weights) or any(tuple(p.shape) != w.shape for p, w in zip(params, self.weights)):
            raise DataError("FTL model part: the weights do not fit the declared network")
        with torch.no_grad():
            for p, w in zip(params, self.weights):
                p.copy_(torch.as_tensor(w, dtype=torch.float64))
        return net

    def represent(self, x: Any) -> np.ndarray:
        """This party's representation of its rows (raw feature scale in)."""
        x = as_matrix(x, self.role)
        if x.shape[1] != self.n_features:
            raise DataError(f"the {self.role}'s model takes {self.n_features} features, got {x.shape[1]}")
        return forward(self.network(), (x - self.mu) / self.sd)

    def to_fields(self) -> dict:
        return {"format": "atoll.ftl.part/1", "role": self.role, "n_features": int(self.n_features),
                "hidden": [int(h) for h in self.hidden], "latent_dim": int(self.latent_dim),
                "activation": self.activation, "weights": [np.asarray(w, dtype=np.float64) for w in self.weights],
                "mu": np.asarray(self.mu, dtype=np.float64), "sd": np.asarray(self.sd, dtype=np.float64),
                "phi": None if self.phi is None else np.asarray(self.phi, dtype=np.float64),
                "n_iter": int(self.n_iter), "losses": [float(v) for v in self.losses],
                "iter_seconds": [float(v) for v in self.iter_seconds]}

    @classmethod
    def from_fields(cls, d: Any) -> "FTLPartyModel":
        try:
            if not isinstance(d, dict) or d.get("format") != "atoll.ftl.part/1":
                raise ValueError("not an FTL model part")
            role = d["role"]
            if role not in ("guest", "host") or d["activation"] not in _ACT:
                raise ValueError("bad role or activation")
            n, dim = int(d["n_features"]), int(d["latent_dim"])
            hidden = [int(h) for h in d["hidden"]]
            if not (0 < n <= 100_000 and 0 < dim <= MAX_LATENT and len(hidden) <= 8
                    and all(0 < h <= 4096 for h in hidden)):
                raise ValueError("bad network sizes")
            weights = [np.asarray(w, dtype=np.float64) for w in d["weights"]]
            mu, sd = np.asarray(d["mu"], dtype=np.float64), np.asarray(d["sd"], dtype=np.float64)
            phi = None if d["phi"] is None else np.asarray(d["phi"], dtype=np.float64)
            if mu.shape != (n,) or sd.shape != (n,) or (phi is not None and phi.shape != (dim,)):
                raise ValueError("bad standardisation or phi shape")
            part = cls(role, n, hidden, dim, d["activation"], weights, mu, sd, phi, int(d["n_iter"]),
                       [float(v) for v in d["losses"]], [float(v) for v in d["iter_seconds"]])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"cannot load the FTL model part: {e}") from None
        part.network()  # the weights must fit the declared network
        return part


def save_part(part: FTLPartyModel, path: Any) -> None:
    """Write a party's model part with the safe wire codec (no pickle)."""
    data = wire.dumps(part.to_fields())
    if isinstance(path, io.BytesIO):
        path.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def load_part(path: Any, max_bytes: int = 1 << 28) -> FTLPartyModel:
    """Read a model part written by :func:`save_part` (validated: shapes must fit the declared network)."""
    if isinstance(path, io.BytesIO):
        data = path.getvalue()
    else:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    return FTLPartyModel.from_fields(wire.loads(data, max_bytes=max_bytes))


def make_part(role: str, params: FTLParams, net: nn.Module, n_features: int, mu: np.ndarray, sd: np.ndarray,
              phi: np.ndarray | None, n_iter: int, losses: list[float], seconds: list[float]) -> FTLPartyModel:
    hidden = params.guest_hidden if role == "guest" else params.host_hidden
    return FTLPartyModel(role, n_features, list(hidden), params.latent_dim, params.activation,
                         [p.detach().numpy().copy() for p in net.parameters()], mu, sd,
                         None if phi is None else np.asarray(phi, dtype=np.float64).copy(),
                         n_iter, losses, seconds)


# ============================================================================ centralised twin
class CentralFTL:
    """The centralised twin: the same networks, loss and optimizers trained in one place with autograd
    on the pooled data (the oracle of the federated modes; no party boundary).

        twin = CentralFTL(params).fit(x_guest, y_guest, x_host, guest_overlap_rows, host_overlap_rows)
        twin.decision_function(x_host_new)      # phi . Net_B(x)
    """

    def __init__(self, params: FTLParams | dict | None = None):
        self.params = params if isinstance(params, FTLParams) else FTLParams.model_validate(params or {})

    def fit(self, xa: Any, y: Any, xb: Any, overlap_a: Any, overlap_b: Any) -> "CentralFTL":
        p = self.params
        xa, xb = as_matrix(xa, "guest"), as_matrix(xb, "host")
        ys = signed_labels(y, xa.shape[0])
        oa, ob = np.asarray(overlap_a, dtype=np.int64), np.asarray(overlap_b, dtype=np.int64)
        if oa.shape != ob.shape or oa.size == 0:
            raise DataError("the overlap needs the same number (> 0) of guest and host rows")
        self.mu_a_, self.sd_a_ = standardizer(xa, p.standardize)
        self.mu_b_, self.sd_b_ = standardizer(xb, p.standardize)
        ta = torch.as_tensor((xa - self.mu_a_) / self.sd_a_)
        tb = torch.as_tensor(((xb - self.mu_b_) / self.sd_b_)[ob])
        yt = torch.as_tensor(ys)
        na, nb = network_for(p, "guest", xa.shape[1]), network_for(p, "host", xb.shape[1])
        opts = [LocalOptimizer(na, p), LocalOptimizer(nb, p)]
        n = oa.size
        self.losses_ = []
        for _ in range(p.max_iter):
            for net in (na, nb):
                net.zero_grad()
            ua, ub = na(ta), nb(tb)
            phi = (yt[:, None] * ua).mean(0)
            s = ub @ phi
            yo = yt[oa]
            loss = (LOG2 - 0.5 * yo * s + 0.125 * s * s).sum() / n + p.gamma / n * ((ua[oa] - ub) ** 2).sum()
            if p.guest_loss_weight:
                t = ua @ phi
                loss = loss + p.guest_loss_weight * (LOG2 - 0.5 * yt * t + 0.125 * t * t).mean()
            ga = torch.autograd.grad(loss, list(na.parameters()), retain_graph=True)
            gb = torch.autograd.grad(loss, list(nb.parameters()))
            self.losses_.append(float(loss.detach()))
            for opt, g in zip(opts, (ga, gb)):
                opt.step(torch.cat([t.reshape(-1) for t in g]).detach().numpy())
        self.guest_net_, self.host_net_ = na, nb
        self.phi_ = (ys[:, None] * forward(na, (xa - self.mu_a_) / self.sd_a_)).mean(0)
        self.n_iter_ = p.max_iter
        return self

    def decision_function(self, xb: Any) -> np.ndarray:
        xb = as_matrix(xb, "host")
        return forward(self.host_net_, (xb - self.mu_b_) / self.sd_b_) @ self.phi_
