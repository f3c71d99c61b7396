"""Graph neural networks for federated node classification, in plain PyTorch (PyG not needed).

Layers (full-batch; the normalised adjacency of :class:`~atoll.ml.horizontal.graph.Graph`):

* :class:`GCNConv`: ``H' = D^-1/2 (A + I) D^-1/2 H W + b`` (Kipf & Welling, ICLR 2017).
* :class:`SAGEConv`: ``h'_v = W_1 h_v + W_2 mean_{u in N(v)} h_u + b`` (GraphSAGE with the mean
  aggregator, Hamilton et al., NeurIPS 2017).

:func:`gcn` and :func:`graphsage` build two-layer (or deeper) networks; :class:`GNNModel` wraps one
in the horizontal :class:`~atoll.ml.horizontal.models.Model` interface: ``fit``/``evaluate`` take
``x`` = :class:`~atoll.ml.horizontal.graph.Nodes` (the labelled nodes of a client's subgraph) and
their labels, and run full-batch epochs over the subgraph. Weights travel as numpy arrays (the
module's ``state_dict``), so every FedAvg-family strategy, DP and secure aggregation apply as for
any other model:

    model_fn = lambda: GNNModel(gcn(16, 5, hidden=32))
    horizontal.simulate(model_fn, graph.client_data(g, partition.graph_communities(g, 10), train),
                        FedAvg(local={"epochs": 2, "lr": 0.01}), rounds=60)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from atoll.errors import ConfigError, DataError
from atoll.ml.horizontal.graph import Graph, Nodes
from atoll.ml.horizontal.torch_model import TorchModel, nn, torch


class Adjacency:
    """A weighted sparse adjacency as edge lists: ``(A z)_i = sum_j w_ij z_j`` by a gather and an
    ``index_add`` (faster than ``torch.sparse`` on CPU for these sizes, and its backward too)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int):
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.cols = torch.as_tensor(cols, dtype=torch.long)
        self.vals = torch.as_tensor(vals, dtype=torch.float32).unsqueeze(1)
        self.n = n

    def __matmul__(self, z: "torch.Tensor") -> "torch.Tensor":
        out = torch.zeros((self.n, z.shape[1]), dtype=z.dtype)
        return out.index_add_(0, self.rows, z[self.cols] * self.vals.to(z.dtype))


def gcn_adjacency(graph: Graph) -> Adjacency:
    """``D^-1/2 (A + I) D^-1/2`` (cached on the graph)."""
    if "gcn" not in graph.cache:
        n = graph.num_nodes
        e = graph.edges
        rows = np.concatenate([e[0], e[1], np.arange(n)])
        cols = np.concatenate([e[1], e[0], np.arange(n)])
        d = 1.0 / np.sqrt(np.bincount(rows, minlength=n).astype(np.float64))
        graph.cache["gcn"] = Adjacency(rows, cols, d[rows] * d[cols], n)
    return graph.cache["gcn"]


def mean_adjacency(graph: Graph) -> Adjacency:
    """``D^-1 A`` (row ``v`` averages ``v``'s neighbours; a node without neighbours gets zeros), cached."""
    if "mean" not in graph.cache:
        n = graph.num_nodes
        e = graph.edges
        rows, cols = np.concatenate([e[0], e[1]]), np.concatenate([e[1], e[0]])
        deg = np.maximum(np.bincount(rows, minlength=n), 1).astype(np.float64)
        graph.cache["mean"] = Adjacency(rows, cols, 1.0 / deg[rows], n)
    return graph.cache["mean"]


class GCNConv(nn.Module):
    """One graph convolution: ``A_hat H W + b``."""

    adjacency = staticmethod(gcn_adjacency)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, h: "torch.Tensor", adj: Adjacency) -> "torch.Tensor":
        return adj @ (h @ self.linear.weight.T) + self.linear.bias


class SAGEConv(nn.Module):
    """GraphSAGE layer, mean aggregator: ``W_1 h_v + W_2 mean(h_u, u in N(v)) + b``."""

    adjacency = staticmethod(mean_adjacency)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.self_linear = nn.Linear(in_features, out_features)
        self.neigh_linear = nn.Linear(in_features, out_features, bias=False)

    def forward(self, h: "torch.Tensor", adj: Adjacency) -> "torch.Tensor":
        return self.self_linear(h) + adj @ self.neigh_linear(h)  # mean(W h_u) = W mean(h_u)


class GNN(nn.Module):
    """A stack of graph layers of one kind with ReLU and dropout between them; ``forward(x, adj)``."""

    def __init__(self, layer: type, sizes: list[int], dropout: float = 0.5):
        super().__init__()
        if len(sizes) < 2:
            raise ConfigError("a GNN needs at least an input and an output size")
        self.layers = nn.ModuleList(layer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = dropout
        self.adjacency = layer.adjacency

    def forward(self, h: "torch.Tensor", adj: Adjacency) -> "torch.Tensor":
        for i, layer in enumerate(self.layers):
            h = nn.functional.dropout(h, self.dropout, self.training)
            h = layer(h, adj)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


def gcn(n_features: int, n_classes: int, hidden: tuple[int, ...] = (32,), dropout: float = 0.5) -> GNN:
    """A GCN: ``n_features -> hidden... -> n_classes``."""
    return GNN(GCNConv, [n_features, *hidden, n_classes], dropout)


def graphsage(n_features: int, n_classes: int, hidden: tuple[int, ...] = (32,), dropout: float = 0.5) -> GNN:
    """A GraphSAGE network (mean aggregator): ``n_features -> hidden... -> n_classes``."""
    return GNN(SAGEConv, [n_features, *hidden, n_classes], dropout)


def adam(weight_decay: float = 5e-4) -> Callable[[Any, float], "torch.optim.Optimizer"]:
    """Optimiser factory: Adam with L2 weight decay (Kipf & Welling's GCN training)."""
    return lambda params, lr: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class GNNModel(TorchModel):
    """A :class:`GNN` as a horizontal model: node classification, full-batch, on :class:`Nodes`.

    ``fit(nodes, labels, config, rng)`` runs ``config["epochs"]`` full-batch steps on the graph of
    ``nodes`` (loss on ``nodes.index``; ``lr``; FedProx's ``proximal_mu``); ``evaluate`` and
    ``predict`` use the whole graph of the nodes given. Default optimiser: :func:`adam`.
    """

    def __init__(self, module: GNN | Callable[[], GNN],
                 optimizer: Callable[[Any, float], "torch.optim.Optimizer"] | None = None):
        super().__init__(module, "classification", optimizer or adam())
        if not hasattr(self.module, "adjacency"):
            raise ConfigError("GNNModel needs a GNN (gcn(...), graphsage(...)) whose layers name their adjacency")

    def _inputs(self, nodes: Nodes, y: np.ndarray | None = None):
        if not isinstance(nodes, Nodes):
            raise DataError("a GNN model takes x = Nodes(graph, index) (see atoll.ml.horizontal.graph)")
        g = nodes.graph
        xt = torch.as_tensor(g.x, dtype=self.x_dtype)
        idx = torch.as_tensor(nodes.index)
        yt = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.long).reshape(-1)
        if yt is not None and len(yt) != len(idx):
            raise DataError(f"{len(yt)} labels for {len(idx)} nodes")
        return xt, self.module.adjacency(g), idx, yt

    def fit(self, x: Nodes, y, config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]:
        epochs, lr = int(config.get("epochs", 1)), float(config.get("lr", 0.01))
        mu = float(config.get("proximal_mu", 0.0))
        torch.default_generator.manual_seed(int(rng.integers(2 ** 31)))  # dropout masks (CPU: no device hooks)
        xt, adj, idx, yt = self._inputs(x, y)
        params = [p for p in self.module.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in params]
        opt = self.optimizer(params, lr)
        self.module.train()
        total = 0.0
        for _ in range(epochs):
            opt.zero_grad()
            loss = self.loss_fn(self.module(xt, adj)[idx], yt)
            total += float(loss.detach())
            self._step(opt, loss, params, start, mu)
        return {"loss": total / max(epochs, 1)}

    @torch.no_grad()
    def evaluate(self, x: Nodes, y) -> dict[str, float]:
        xt, adj, idx, yt = self._inputs(x, y)
        self.module.eval()
        out = self.module(xt, adj)[idx]
        if not len(idx):
            return {"loss": 0.0, "accuracy": 0.0}
        return {"loss": float(self.loss_fn(out, yt)), "accuracy": float((out.argmax(dim=1) == yt).float().mean())}

    @torch.no_grad()
    def predict(self, x: Nodes) -> np.ndarray:
        xt, adj, idx, _ = self._inputs(x)
        self.module.eval()
        return self.module(xt, adj)[idx].argmax(dim=1).cpu().numpy()
