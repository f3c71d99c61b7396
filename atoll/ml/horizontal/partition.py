"""Partitioners for experiments: split one data set's rows among simulated clients.

Each returns a list of ``num_clients`` index arrays (disjoint, covering every
row exactly once unless stated) and is a pure function of its inputs and seed.

* :func:`iid`: uniform random split, equal sizes (up to one row).
* :func:`dirichlet`: label skew, per class proportions ~ Dirichlet(alpha)
  (Hsu et al. 2019); small alpha = very skewed.
* :func:`k_classes`: pathological split, each client gets rows of only ``k``
  classes (McMahan et al. 2017's shards).
* :func:`quantity_skew`: client sizes ~ Dirichlet(alpha), labels IID.

Graphs (node sets of one :class:`~atoll.ml.horizontal.graph.Graph`; each client then keeps the
subgraph its nodes induce, :func:`~atoll.ml.horizontal.graph.client_data`):

* :func:`graph_communities`: community detection (Louvain, greedy modularity or label
  propagation from networkx), communities dealt to clients to balance their sizes, a community
  larger than a client's share cut along a breadth-first order (so its pieces stay connected
  where they can): few edges are lost between clients.
* :func:`graph_random`: nodes split uniformly at random (most edges cross clients).
"""

from __future__ import annotations

import numpy as np

from atoll.errors import ConfigError


def _check(n_rows: int, num_clients: int) -> None:
    if num_clients < 1 or n_rows < num_clients:
        raise ConfigError(f"cannot split {n_rows} rows among {num_clients} clients")


def iid(n_rows: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    _check(n_rows, num_clients)
    order = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(p) for p in np.array_split(order, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float = 0.5, seed: int = 0,
              min_size: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Label skew: each class's rows go to clients in Dirichlet(alpha) proportions.

    Redraws (up to ``max_tries``) until every client has ``min_size`` rows.
    """
    labels = np.asarray(labels).ravel()
    _check(len(labels), num_clients)
    if alpha <= 0:
        raise ConfigError("Dirichlet alpha must be positive")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(rows)).astype(int)
            for i, chunk in enumerate(np.split(rows, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(o) for o in out) >= min_size:
            return out
    raise ConfigError(f"no Dirichlet(alpha={alpha}) split gave every client {min_size} rows in "
                      f"{max_tries} tries; raise alpha or lower num_clients")


def k_classes(labels: np.ndarray, num_clients: int, k: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Each client holds rows of exactly ``k`` classes (classes dealt round-robin, rows split evenly)."""
    labels = np.asarray(labels).ravel()
    _check(len(labels), num_clients)
    classes = np.unique(labels)
    if not 1 <= k <= len(classes):
        raise ConfigError(f"k={k} classes per client, but the data has {len(classes)} classes")
    rng = np.random.default_rng(seed)
    # client i gets classes perm[(i*k + j) % C] for j < k; each class's rows are split among its holders
    perm = rng.permutation(classes)
    holders: dict = {c: [] for c in classes}
    for i in range(num_clients):
        for j in range(k):
            holders[perm[(i * k + j) % len(classes)]].append(i)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, hs in holders.items():
        rows = rng.permutation(np.flatnonzero(labels == c))
        if not hs:
            raise ConfigError(f"class {c} has no client: use num_clients * k >= number of classes")
        for h, chunk in zip(hs, np.array_split(rows, len(hs))):
            parts[h].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def quantity_skew(n_rows: int, num_clients: int, alpha: float = 1.0, seed: int = 0,
                  min_size: int = 1) -> list[np.ndarray]:
    """Client sizes in Dirichlet(alpha) proportions (at least ``min_size`` each), rows IID."""
    _check(n_rows, num_clients)
    if n_rows < num_clients * min_size:
        raise ConfigError(f"{n_rows} rows cannot give {num_clients} clients {min_size} rows each")
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(num_clients, alpha))
    extra = n_rows - num_clients * min_size
    sizes = np.floor(p * extra).astype(int)
    sizes[np.argsort(-p)[: extra - sizes.sum()]] += 1
    sizes += min_size
    order = rng.permutation(n_rows)
    return [np.sort(c) for c in np.split(order, np.cumsum(sizes)[:-1])]


def graph_random(graph, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Nodes of ``graph`` split uniformly at random into equal parts."""
    return iid(graph.num_nodes, num_clients, seed)


def graph_communities(graph, num_clients: int, method: str = "louvain", seed: int = 0) -> list[np.ndarray]:
    """Nodes of ``graph`` (a :class:`~atoll.ml.horizontal.graph.Graph`) in ``num_clients`` parts along its communities.

    ``method``: ``"louvain"`` (Blondel et al. 2008), ``"greedy"`` (Clauset-Newman-Moore greedy
    modularity) or ``"label_propagation"`` (asynchronous, Raghavan et al. 2007), all from networkx.
    Communities go, largest first, to the client with the fewest nodes; one larger than
    ``ceil(n / num_clients)`` is first cut into pieces of that size in breadth-first order.
    """
    import networkx as nx
    from networkx.algorithms import community as nxc

    n = graph.num_nodes
    _check(n, num_clients)
    g = graph.to_networkx()
    if method == "louvain":
        comms = nxc.louvain_communities(g, seed=seed)
    elif method == "greedy":
        comms = nxc.greedy_modularity_communities(g)
    elif method == "label_propagation":
        comms = nxc.asyn_lpa_communities(g, seed=seed)
    else:
        raise ConfigError(f"unknown community method {method!r}; use louvain, greedy or label_propagation")
    cap = -(-n // num_clients)
    pieces: list[list[int]] = []
    for c in sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0])):
        if len(c) <= cap:
            pieces.append(c)
            continue
        sub = g.subgraph(c)
        order: list[int] = []
        for comp in sorted(nx.connected_components(sub), key=min):  # breadth-first, from the smallest id
            order += list(nx.bfs_tree(sub, min(comp)))
        pieces += [order[i:i + cap] for i in range(0, len(order), cap)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for piece in sorted(pieces, key=lambda c: (-len(c), min(c))):
        i = int(np.argmin(sizes))  # the lightest client (lowest index on ties)
        parts[i] += piece
        sizes[i] += len(piece)
    if min(sizes) == 0:
        raise ConfigError(f"the graph has too few communities for {num_clients} clients with {method}; "
                          "use fewer clients or graph_random")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
