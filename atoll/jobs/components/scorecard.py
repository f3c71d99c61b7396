"""``scorecard``: points per bin from a hetero LR trained on WOE columns, and the score of each row.

Wraps :mod:`atoll.ml.feature.scorecard` (see there for the formula, the protocol and what each party sees).
Inputs: ``model`` (a ``hetero_lr`` step trained on ``woe_transform`` output), ``binning`` (the binning step),
``data`` (the WOE rows to score) and optionally ``train`` (the training WOE rows, scored too: the expected
distribution of a ``stability`` step). Each party's ``model`` output is its own points table (the guest's
also the base points); the guest's ``scores`` / ``train_scores`` hold the rows' scores (task
``scorecard``). ``atoll predict`` scores the new rows with the saved tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, scores
from atoll.jobs.registry import register
from atoll.ml.feature.scorecard import ScorecardParams


@register
class Scorecard(Component):
    """Points tables from a logistic model on WOE features; scores (guest)."""

    name = "scorecard"
    inputs = {"model": Slot("model"), "binning": Slot("model"), "data": Slot("data"),
              "train": Slot("data", optional=True)}
    outputs = {"model": "model", "scores": "scores", "train_scores": "scores"}
    Params = ScorecardParams
    #: ``atoll predict`` scores the new rows with this step too (see atoll.jobs.runner.predict_job)
    monitor = True

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        producer = job.component(spec.inputs.get("model", "").partition(".")[0])
        if producer is not None and producer.component != "hetero_lr":
            raise job.error(f"{spec.id}: a scorecard is made from a hetero_lr step, not {producer.component!r}",
                            "pipeline", index, "inputs", "model")

    def _score(self, tc: TaskContext, model: dict[str, Any], data: Table, what: str) -> np.ndarray | None:
        from atoll.ml.feature.scorecard import ScorecardGuest, ScorecardHost

        if list(data.x.columns) != list(model["columns"]):
            raise DataError(f"scorecard: the {what} columns {list(data.x.columns)} differ from the model's "
                            f"{list(model['columns'])}")
        with tc.fed.scope("rows", what):
            if tc.role == "guest":
                return ScorecardGuest(self.params).score(tc.fed, data.values(), np.asarray(model["coef"]),
                                                         float(model["intercept"]))
            ScorecardHost(self.params).score(tc.fed, data.values(), np.asarray(model["coef"]),
                                             float(model.get("offset", 0.0)))
        return None

    def _outputs(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for slot, key in (("train", "train_scores"), ("data", "scores")):
            data = inputs.get(slot)
            if data is None:
                continue
            s = self._score(tc, inputs["model"], data, slot)
            if s is not None:
                out[key] = scores(data, s, "scorecard")
        return out

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.feature.hetero_binning import model_from_wire
        from atoll.ml.feature.scorecard import factor_offset, feature_tables

        if tc.role not in ("guest", "host"):
            return {}
        lr, binning = inputs.get("model"), inputs.get("binning")
        if lr is None or binning is None or inputs.get("data") is None:
            raise DataError(f"scorecard: party {tc.party!r} lacks its model part, binning or data")
        bm = model_from_wire(binning)
        woe = {k: t["woe"] for k, t in bm.tables.items() if k in lr["columns"]}
        labels = {b.name: b.labels() for b in bm.bins}
        table = feature_tables(lr["columns"], np.asarray(lr["coef"]), woe, labels, self.params)
        factor, offset = factor_offset(self.params)
        base = (offset - factor * float(lr["intercept"]) if tc.role == "guest"
                else -factor * float(lr.get("offset", 0.0)))
        model = {"component": self.name, "role": tc.role, "base_points": base, "factor": factor,
                 "offset": offset, "features": table,
                 "report": {"kind": "scorecard", "base_points": base,
                            "features": [[f["name"], f["bins"], f["points"].tolist()] for f in table]}}
        return {"model": model, **self._outputs(tc, inputs)}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        if tc.role not in ("guest", "host") or inputs.get("model") is None:
            return {}
        return self._outputs(tc, inputs)
