"""``split``: train / validation / test rows, the same rows at every party.

Vertical jobs: the guest (label holder) draws the split with the step's seed
(stratified by label if asked) and sends the ids of each part to the hosts; each
host takes those rows of its own data. Hosts learn which of the (already
aligned) ids are train or test rows, nothing else; the arbiter gets nothing.
Horizontal jobs: each client splits its own rows locally; nothing is sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atoll.errors import DataError
from atoll.jobs.artifacts import Table, ids_to_wire
from atoll.jobs.component import Component, Slot, TaskContext, step_seed
from atoll.jobs.registry import register


class SplitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_size: float = Field(0.2, ge=0.0, lt=1.0)
    validate_size: float = Field(0.0, ge=0.0, lt=1.0)
    stratify: bool = True
    shuffle: bool = True

    @model_validator(mode="after")
    def _sizes(self) -> "SplitParams":
        if self.test_size + self.validate_size >= 1.0:
            raise ValueError("test_size + validate_size must leave some training rows (< 1)")
        return self


def split_positions(n: int, y: np.ndarray | None, p: SplitParams, seed: int) -> dict[str, np.ndarray]:
    """Row positions of each part (pure; sorted within each part to keep file order)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if p.stratify and y is not None:
        _, inv = np.unique(y, return_inverse=True)
        groups = [np.flatnonzero(inv == k) for k in range(inv.max() + 1)]
    parts: dict[str, list[np.ndarray]] = {"train": [], "validate": [], "test": []}
    for g in groups:
        g = rng.permutation(g) if p.shuffle else g
        n_test = int(round(len(g) * p.test_size))
        n_val = int(round(len(g) * p.validate_size))
        parts["test"].append(g[:n_test])
        parts["validate"].append(g[n_test:n_test + n_val])
        parts["train"].append(g[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def ids_from_wire(value: Any, like: pd.Index) -> pd.Index:
    """This party's own ids for the ids the guest sent, matched the way PSI matches them
    (:func:`atoll.secure.psi.canonical_id`: Unicode NFC, surrounding spaces, 133 and 133.0
    are one id), in the guest's order."""
    from atoll.secure.psi import canonical_id

    mine: dict[str, Any] = {}
    for i in like:
        mine.setdefault(canonical_id(i), i)
    out, missing = [], 0
    for g in (value.tolist() if isinstance(value, np.ndarray) else value):
        own = mine.get(canonical_id(g))
        if own is None:
            missing += 1
        else:
            out.append(own)
    if missing:
        raise DataError(f"the guest's split names {missing} ids that are not in this party's data; "
                        "were the parties aligned (psi) first?")
    return pd.Index(out, dtype=like.dtype)


@register
class Split(Component):
    name = "split"
    inputs = {"data": Slot("data")}
    outputs = {"train": "data", "validate": "data", "test": "data"}
    Params = SplitParams

    @staticmethod
    def _part(k: str, rows: Any, pick: Any) -> Table | None:
        """Part ``k`` from ``pick(rows)``; an empty validation or test part is no part (None)."""
        return pick(rows) if len(rows) or k == "train" else None

    def _parts(self, table: Table, positions: dict[str, np.ndarray]) -> dict[str, Table | None]:
        return {k: self._part(k, pos, table.rows) for k, pos in positions.items()}

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        table: Table | None = inputs.get("data")
        hosts = tc.parties_of("host")
        if tc.role == "guest":
            if table is None or table.y is None:
                raise DataError("split: the guest needs its labelled data as input")
            pos = split_positions(len(table), table.y.to_numpy(), self.params, tc.seed)
            if hosts:
                tc.fed.send("host", "ids", {k: ids_to_wire(table.ids[v]) for k, v in pos.items()})
            tc.log.info("split %d rows: %s", len(table), {k: len(v) for k, v in pos.items()})
            return self._parts(table, pos)
        if tc.role == "host":
            if table is None:
                raise DataError("split: the host needs its data as input")
            parts = tc.fed.recv("guest", "ids")
            return {k: self._part(k, ids_from_wire(v, table.ids), table.take) for k, v in parts.items()}
        if tc.role == "client":
            if table is None:
                raise DataError("split: the client needs its data as input")
            y = None if table.y is None else table.y.to_numpy()
            pos = split_positions(len(table), y, self.params, step_seed(tc.seed, tc.party))
            return self._parts(table, pos)
        return {}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        data = inputs.get("data")
        return {"train": data, "validate": data, "test": data}
