"""Graphs for federated node classification: the data type, a seeded benchmark graph, client subgraphs.

Subgraph federated learning (as in FedSage, Zhang et al. NeurIPS 2021, and FederatedScope-GNN's
splitters): one graph's nodes are divided among clients (:func:`atoll.ml.horizontal.partition.graph_communities`
or :func:`~atoll.ml.horizontal.partition.graph_random`); each client keeps the subgraph its nodes
induce (edges to other clients' nodes are not visible to it) and trains a GNN on its labelled nodes.

* :class:`Graph`: node features ``x`` ``(n, d)``, undirected ``edges`` ``(2, m)`` (each edge once,
  ``u < v``), labels ``y``.
* :class:`Nodes`: some nodes of a graph; it is the ``x`` a GNN model is fitted and evaluated on
  (``model.fit(Nodes(g, train_idx), g.y[train_idx], ...)``), so GNNs use the same
  :class:`~atoll.ml.horizontal.models.Model` interface, strategies and roles as every other model.
* :func:`sbm_graph`: a stochastic block model with class-dependent Gaussian node features,
  seeded (no download): communities are classes, features alone are weakly informative.
* :func:`client_data`: the clients' subgraphs as :class:`~atoll.ml.horizontal.roles.ClientData`.

Pure numpy; :meth:`Graph.to_networkx` needs networkx (installed with torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from atoll.errors import DataError


@dataclass(eq=False)
class Graph:
    """An undirected graph with node features and (optionally) node labels."""

    x: np.ndarray
    edges: np.ndarray
    y: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False)  # derived matrices (a GNN's adjacency)

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float64)
        e = np.asarray(self.edges, dtype=np.int64).reshape(2, -1)
        if self.x.ndim != 2:
            raise DataError(f"node features must be a matrix (nodes x features), got shape {self.x.shape}")
        n = len(self.x)
        if e.size and (e.min() < 0 or e.max() >= n):
            raise DataError(f"edges name nodes outside 0..{n - 1}")
        lo, hi = np.minimum(e[0], e[1]), np.maximum(e[0], e[1])
        keep = lo != hi  # self-loops are the model's business (GCN adds them)
        key = np.unique(lo[keep] * n + hi[keep])
        self.edges = np.stack([key // n, key % n]) if key.size else np.zeros((2, 0), dtype=np.int64)
        if self.y is not None:
            self.y = np.asarray(self.y).astype(np.int64).ravel()
            if len(self.y) != n:
                raise DataError(f"{len(self.y)} labels for {n} nodes")

    @property
    def num_nodes(self) -> int:
        return len(self.x)

    def degrees(self) -> np.ndarray:
        return np.bincount(self.edges.ravel(), minlength=self.num_nodes)

    def subgraph(self, nodes: np.ndarray) -> "Graph":
        """The subgraph ``nodes`` induce, relabelled ``0..len(nodes)-1`` in the given order."""
        nodes = np.asarray(nodes, dtype=np.int64)
        new = np.full(self.num_nodes, -1, dtype=np.int64)
        new[nodes] = np.arange(len(nodes))
        a, b = new[self.edges[0]], new[self.edges[1]]
        keep = (a >= 0) & (b >= 0)
        return Graph(self.x[nodes], np.stack([a[keep], b[keep]]), None if self.y is None else self.y[nodes])

    def to_networkx(self):
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.num_nodes))
        g.add_edges_from(self.edges.T.tolist())
        return g


@dataclass(eq=False)
class Nodes:
    """Nodes ``index`` of ``graph``: what a GNN trains on, or is evaluated on, with the whole graph as context."""

    graph: Graph
    index: np.ndarray

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64).ravel()
        if self.index.size and (self.index.min() < 0 or self.index.max() >= self.graph.num_nodes):
            raise DataError("node index outside the graph")

    def __len__(self) -> int:
        return len(self.index)


def sbm_graph(n_nodes: int = 2000, n_classes: int = 5, p_in: float = 0.02, p_out: float = 0.002,
              n_features: int = 16, signal: float = 0.5, seed: int = 0) -> Graph:
    """A stochastic block model: ``n_classes`` equal communities (the labels), an edge inside a
    community with probability ``p_in`` and across with ``p_out``; node features are
    ``mu_y + N(0, I)`` with class means ``mu_c ~ N(0, signal^2 I)``. Seeded, so the same graph
    comes back for the same arguments."""
    if n_classes < 2 or n_nodes < 2 * n_classes:
        raise DataError("an SBM needs at least 2 classes and 2 nodes per class")
    rng = np.random.default_rng(seed)
    y = np.sort(rng.permutation(np.arange(n_nodes) % n_classes))
    y = y[rng.permutation(n_nodes)]
    iu, ju = np.triu_indices(n_nodes, k=1)
    p = np.where(y[iu] == y[ju], p_in, p_out)
    hit = rng.random(len(iu)) < p
    mu = rng.normal(scale=signal, size=(n_classes, n_features))
    x = mu[y] + rng.normal(size=(n_nodes, n_features))
    return Graph(x, np.stack([iu[hit], ju[hit]]), y)


def split_nodes(n_nodes: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out test node indices (a seeded random split)."""
    if not 0 < test_fraction < 1:
        raise DataError("test_fraction must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(n_nodes)
    k = int(round(test_fraction * n_nodes))
    return np.sort(order[k:]), np.sort(order[:k])


def client_data(graph: Graph, parts: Sequence[np.ndarray], train: np.ndarray, test: np.ndarray | None = None):
    """Each client's subgraph (the nodes of its part and the edges among them) as ``ClientData``:
    trains on its part's nodes among ``train``, evaluates locally on those among ``test``."""
    from atoll.ml.horizontal.roles import ClientData

    if graph.y is None:
        raise DataError("node classification needs labels on the graph")
    is_train = np.zeros(graph.num_nodes, dtype=bool)
    is_train[np.asarray(train)] = True
    is_test = np.zeros(graph.num_nodes, dtype=bool)
    if test is not None:
        is_test[np.asarray(test)] = True
    out = []
    for part in parts:
        part = np.asarray(part, dtype=np.int64)
        sub = graph.subgraph(part)
        tr, te = np.flatnonzero(is_train[part]), np.flatnonzero(is_test[part])
        out.append(ClientData(Nodes(sub, tr), sub.y[tr], Nodes(sub, te) if len(te) else None,
                              sub.y[te] if len(te) else None))
    return out
