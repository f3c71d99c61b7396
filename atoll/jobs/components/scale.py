"""``scale``: standard or min-max scaling, fitted by each party on its own training columns.

Nothing is sent: each party fits the statistics of its own features on its
training rows and applies them to its other inputs (so test rows never leak into
the fit). The fitted statistics are the step's ``model`` output (used again by
``atoll predict``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["standard", "minmax"] = "standard"
    columns: list[str] | None = None  # default: every feature of the party


def fit_scaler(x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, divisor) so that ``(x - offset) / divisor`` is scaled; constant columns divide by 1."""
    if method == "standard":
        a, b = x.mean(axis=0), x.std(axis=0)
    else:
        a, b = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    b = np.where(b > 0, b, 1.0)
    return a, b


def apply_scaler(table: Table | None, state: dict[str, Any]) -> Table | None:
    if table is None:
        return None
    cols = list(state["columns"])
    missing = [c for c in cols if c not in table.x.columns]
    if missing:
        raise DataError(f"scale: columns {missing} are missing from the data")
    x = table.x.copy()
    x[cols] = (x[cols].to_numpy() - state["offset"]) / state["divisor"]
    return table.with_x(x)


@register
class Scale(Component):
    name = "scale"
    inputs = {"train": Slot("data"), "validate": Slot("data", optional=True),
              "test": Slot("data", optional=True)}
    outputs = {"train": "data", "validate": "data", "test": "data", "model": "model"}
    Params = ScaleParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        train: Table | None = inputs.get("train")
        if train is None:
            return {}
        cols = self.params.columns or list(train.x.columns)
        cols = [c for c in cols if c in train.x.columns]
        if self.params.columns and not cols:
            tc.log.info("none of the columns to scale are mine; passing data through")
        offset, divisor = fit_scaler(train.x[cols].to_numpy(dtype=np.float64), self.params.method)
        state = {"component": self.name, "method": self.params.method, "columns": cols,
                 "offset": offset, "divisor": divisor}
        out: dict[str, Any] = {k: apply_scaler(inputs.get(k), state) for k in ("train", "validate", "test")}
        out["model"] = state
        return out

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        state = saved.get("model")
        if state is None:
            return {}
        return {k: apply_scaler(inputs.get(k), state) for k in ("train", "validate", "test")}
