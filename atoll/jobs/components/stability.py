"""``stability``: population stability index (PSI) of every party's binned columns and of the score.

Wraps :mod:`atoll.ml.feature.stability`. Each party compares, on its own bins (the ``binning`` input), the
distribution of its own columns in ``expected`` (training rows) and ``actual`` (e.g. the test rows); the
guest also compares the scores of ``expected_scores`` and ``actual_scores`` (deciles of the expected
scores), and, given the ``scorecard`` model, each of its features' characteristic stability (CSI). Nothing
is sent. The expected counts are the step's ``model``: in ``atoll predict`` the step runs again on the new
rows (their ``actual``) against the training distribution, so the report of a scoring run is its
stability against training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.ml.feature.stability import StabilityParams, csi, score_counts, score_edges, table


def _feature_counts(data: Table, bins: list[Any]) -> dict[str, np.ndarray]:
    return {b.name: np.bincount(b.codes(data.x[b.name].to_numpy(np.float64)), minlength=b.n_bins)
            for b in bins if b.name in data.x.columns}


@register
class Stability(Component):
    """PSI per feature (each party its own) and on the score (guest); CSI with a scorecard."""

    name = "stability"
    inputs = {"binning": Slot("model", optional=True), "expected": Slot("data", optional=True),
              "actual": Slot("data", optional=True), "expected_scores": Slot("scores", optional=True),
              "actual_scores": Slot("scores", optional=True), "scorecard": Slot("model", optional=True)}
    outputs = {"model": "model"}
    Params = StabilityParams
    #: ``atoll predict`` runs this step again on the new rows (see atoll.jobs.runner.predict_job)
    monitor = True

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        has = set(spec.inputs)
        if not ({"binning", "expected", "actual"} <= has or {"expected_scores", "actual_scores"} <= has):
            raise job.error(f"{spec.id} (stability) compares features (inputs binning, expected, actual) or "
                            "scores (inputs expected_scores, actual_scores)", "pipeline", index, "inputs")

    def _compare(self, tc: TaskContext, inputs: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.feature.hetero_binning import model_from_wire

        p = self.params
        out: dict[str, Any] = {"component": self.name, "features": [], "score": None, "expected": expected}
        actual = inputs.get("actual")
        if inputs.get("binning") is not None and actual is not None and expected.get("features"):
            counts = _feature_counts(actual, model_from_wire(inputs["binning"]).bins)
            points = {}
            if inputs.get("scorecard") is not None:
                points = {f["name"]: np.asarray(f["points"]) for f in inputs["scorecard"]["features"]}
            for name, exp in expected["features"].items():
                if name in counts:
                    t = table(name, exp, counts[name], p.eps)
                    if name in points:
                        t["csi"] = csi(exp, counts[name], points[name])
                    out["features"].append(t)
        sc = inputs.get("actual_scores")
        if sc is not None and expected.get("score_edges") is not None:
            act = score_counts(np.asarray(sc["score"]), np.asarray(expected["score_edges"]))
            out["score"] = table("score", expected["score_counts"], act, p.eps)
        shifted = [t["name"] for t in out["features"] + ([out["score"]] if out["score"] else [])
                   if t["psi"] > p.warn_above]
        if shifted:
            tc.log.warning("stability: PSI above %.2f for %s", p.warn_above, ", ".join(shifted))
        out["report"] = {"kind": "stability", "rows": [[t["name"], float(t["psi"]), t.get("csi")] for t in
                                                       out["features"] + ([out["score"]] if out["score"] else [])]}
        return out

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.feature.hetero_binning import model_from_wire

        expected: dict[str, Any] = {"features": {}, "score_edges": None, "score_counts": None}
        exp_data = inputs.get("expected")
        if inputs.get("binning") is not None and exp_data is not None:
            expected["features"] = _feature_counts(exp_data, model_from_wire(inputs["binning"]).bins)
        sc = inputs.get("expected_scores")
        if sc is not None:
            edges = score_edges(np.asarray(sc["score"]), self.params.score_bins)
            expected["score_edges"] = edges
            expected["score_counts"] = score_counts(np.asarray(sc["score"]), edges)
        if not expected["features"] and expected["score_edges"] is None:
            return {}
        return {"model": self._compare(tc, inputs, expected)}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        model = saved.get("model")
        if model is None:
            return {}
        return {"model": self._compare(tc, inputs, model["expected"])}
