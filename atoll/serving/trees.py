"""SecureBoost's joint routing compiled for serving: the same answers, in a few numpy operations.

Joint prediction (step 6 of :mod:`atoll.ml.vertical.secureboost`) walks every tree node by node
for each request; at 100 trees that walk dominates a one-row request. Here each party's part is
compiled once, when it is loaded:

* every split the party owns, across all trees, becomes one column of (feature, threshold,
  missing-goes-left): one vectorised comparison decides them all for a batch of rows, with the
  same float32 rounding as training (``_threshold_left``);
* each tree becomes a small matrix ``A`` (this party's splits x leaves) with +1 where a leaf's
  path goes left at that split, -1 where it goes right, 0 off the path; a row can still reach a
  leaf iff ``(2D - 1) @ A`` equals the number of non-zeros of the leaf's column.

The host's answer and the guest's combination are bit-for-bit those of
:func:`~atoll.ml.vertical.secureboost.host_reach` and :func:`~atoll.ml.vertical.secureboost.route_margin`
(leaves in increasing node id, packed bit matrices); the tests compare them with ``atoll predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from atoll.errors import DataError


def path_matrix(left: Sequence[int], right: Sequence[int], owner: Sequence[str], me: str
                ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(this party's split nodes, A (splits x leaves) of +1/-1/0, conditions per leaf)."""
    leaves = [i for i in range(len(left)) if left[i] < 0]
    col = {leaf: j for j, leaf in enumerate(leaves)}
    nodes = [i for i in range(len(left)) if left[i] >= 0 and owner[i] == me]
    row = {n: k for k, n in enumerate(nodes)}
    a = np.zeros((len(nodes), len(leaves)))
    stack: list[tuple[int, list[tuple[int, int]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if left[node] < 0:
            for n, d in path:
                a[row[n], col[node]] = d
            continue
        mine = node in row
        stack.append((int(left[node]), path + [(node, 1)] if mine else path))
        stack.append((int(right[node]), path + [(node, -1)] if mine else path))
    return nodes, a, np.abs(a).sum(axis=0)


@dataclass
class CompiledRouting:
    """One party's splits over all trees and the block-diagonal path matrix of every tree's leaves."""

    feature: np.ndarray       # (K,) int: the party's splits, all trees in order
    threshold: np.ndarray     # (K,) float
    missing_left: np.ndarray  # (K,) bool
    paths: Any                # (K, L) sparse: +1 / -1 / 0, L = the leaves of all trees in order
    need: np.ndarray          # (L,) conditions on each leaf's path
    starts: np.ndarray        # (T,) the first leaf column of each tree

    @classmethod
    def build(cls, topologies: Sequence[tuple[Sequence[int], Sequence[int], Sequence[str]]],
              splits: Sequence[Mapping[int, tuple[int, float, bool]]], me: str) -> "CompiledRouting":
        from scipy import sparse

        f, t, m, blocks, need, starts, leaves = [], [], [], [], [], [], 0
        for (left, right, owner), split in zip(topologies, splits):
            nodes, a, n = path_matrix(left, right, owner, me)
            for node in nodes:
                fe, th, ml = split[node]
                f.append(int(fe))
                t.append(float(th))
                m.append(bool(ml))
            blocks.append(sparse.csr_matrix(a) if a.shape[0] else sparse.csr_matrix((0, a.shape[1])))
            need.append(n)
            starts.append(leaves)
            leaves += a.shape[1]
        paths = sparse.block_diag(blocks, format="csr") if blocks else sparse.csr_matrix((0, 0))
        return cls(np.asarray(f, dtype=np.int64), np.asarray(t, dtype=np.float64), np.asarray(m, dtype=bool),
                   paths, np.concatenate(need) if need else np.zeros(0), np.asarray(starts, dtype=np.int64))

    def reach(self, x: np.ndarray) -> np.ndarray:
        """(rows x leaves of all trees): the leaves each row can still reach given this party's splits."""
        n = len(x)
        if not len(self.feature):
            return np.ones((n, len(self.need)), dtype=bool)
        x32 = np.asarray(x, dtype=np.float64)[:, self.feature].astype(np.float32).astype(np.float64)
        d = np.where(np.isnan(x32), self.missing_left, x32 < self.threshold) * 2.0 - 1.0
        return np.asarray((self.paths.T @ d.T).T) == self.need


def compile_host(model: Any, party: str) -> CompiledRouting:
    """A host's part (:class:`SecureBoostHostModel`) compiled."""
    return CompiledRouting.build([(t["left"], t["right"], t["owner"]) for t in model.topologies], model.lookup, party)


def compile_guest(model: Any) -> tuple[CompiledRouting, np.ndarray]:
    """The guest's part: its own splits compiled, and the (leaves x outputs) matrix of leaf values."""
    splits = [{i: (t.feature[i], t.threshold[i], t.missing_left[i]) for i in range(t.n_nodes)
               if t.left[i] >= 0 and t.owner[i] == "guest"} for t in model.trees]
    routing = CompiledRouting.build([(t.left, t.right, t.owner) for t in model.trees], splits, "guest")
    values = np.zeros((len(routing.need), model.n_outputs))
    col = 0
    for t in model.trees:
        for i in range(t.n_nodes):
            if t.left[i] < 0:
                values[col, t.output] = t.value[i]
                col += 1
    return routing, values


def host_answer(routing: CompiledRouting, x: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """What a host answers: the leaves of all trees each row can reach, as packed bits and their shape."""
    m = routing.reach(x)
    return np.packbits(m.ravel()).tobytes(), m.shape


def guest_margin(compiled: tuple[CompiledRouting, np.ndarray], x: np.ndarray, reach: Mapping[str, Any]) -> np.ndarray:
    """The margin (without base) from the guest's rows and every host's answer; refuses a wrong shape."""
    routing, values = compiled
    mask = routing.reach(x)
    for host, msg in reach.items():
        try:
            raw, shape = msg
            if tuple(int(v) for v in shape) != mask.shape or not isinstance(raw, (bytes, bytearray)) \
                    or len(raw) != (mask.size + 7) // 8:
                raise ValueError
        except (TypeError, ValueError):
            raise DataError(f"{host} answered with the wrong shape (expected {mask.shape[0]} rows x "
                            f"{mask.shape[1]} leaves of all trees)") from None
        mask &= np.unpackbits(np.frombuffer(raw, np.uint8), count=mask.size).astype(bool).reshape(mask.shape)
    if mask.shape[1] and not np.all(np.add.reduceat(mask, routing.starts, axis=1) == 1):
        raise DataError("joint prediction did not route every row to exactly one leaf per tree; are the "
                        "parties' rows aligned (same ids), and do they serve the same version?")
    return mask.astype(np.float64) @ values


# ------------------------------------------------------------------------ masked level (one host)
def masked_query(compiled: tuple[CompiledRouting, np.ndarray], x: np.ndarray, pk: Any) -> Any:
    """The guest's masked query: ``[[Mg[i, l] * value_l]]`` for every row and leaf, under its own key.

    The host can only select and add these ciphertexts (by its own reachable leaves), so the guest
    decrypts nothing but each row's sum over all trees: the margin. Single-output models only.
    """
    routing, values = compiled
    if values.shape[1] != 1:
        raise DataError("masked scoring of trees serves single-output models (binary, regression)")
    return pk.encrypt(routing.reach(x) * values[:, 0])


def masked_answer(routing: CompiledRouting, x: np.ndarray, query: Any) -> Any:
    """The host's masked answer: per row, the re-randomised sum of the query's ciphertexts at the
    leaves this host's splits let the row reach (the others are multiplied by 0)."""
    mask = routing.reach(x)
    if getattr(query, "shape", None) != mask.shape:
        raise DataError(f"the masked query has shape {getattr(query, 'shape', None)}, this host's trees "
                        f"{mask.shape}")
    return (query * mask.astype(np.int64)).sum(axis=1).rerandomize()
