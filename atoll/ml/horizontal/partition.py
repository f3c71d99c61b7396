"""Partitioners for experiments: split one data set's rows among simulated clients.

Each returns a list of ``num_clients`` index arrays (disjoint, covering every
row exactly once unless stated) and is a pure function of its inputs and seed.

* :func:`iid`: uniform random split, equal sizes (up to one row).
* :func:`dirichlet`: label skew, per class proportions ~ Dirichlet(alpha)
  (Hsu et al. 2019); small alpha = very skewed.
* :func:`k_classes`: pathological split, each client gets rows of only ``k``
  classes (McMahan et al. 2017's shards).
* :func:`quantity_skew`: client sizes ~ Dirichlet(alpha), labels IID.
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
