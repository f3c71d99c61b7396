"""``evaluate``: metrics of a ``predict`` step's scores, and the ROC / KS curves (binary: also the confusion
matrix at the threshold; regression: a sample of residuals) as data.

Runs at each party that holds both scores and labels (the guest in vertical
jobs, every client in horizontal ones); nothing is sent. Binary tasks get AUC,
KS, log loss, accuracy, precision, recall, F1 and the ROC and KS curves (thinned
to at most ``curve_points`` points; the report draws them as PNG); multiclass
tasks (scores = one row of class probabilities per sample) get accuracy, log
loss, macro one-vs-rest AUC, macro precision / recall / F1 and one ROC curve per
class (one-vs-rest); regression gets RMSE, MAE, R² (and Poisson deviance for
count models).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.jobs.artifacts import write_json
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.ml import metrics as M


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["auto", "binary", "multiclass", "regression", "poisson"] = "auto"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    curve_points: int = Field(200, ge=10)


def _thin(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def compute_metrics(task: str, y: np.ndarray, score: np.ndarray, threshold: float = 0.5,
                    curve_points: int = 200) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, curves) for labels ``y`` and scores (probabilities or predictions)."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if task == "multiclass":
        rocs = M.multiclass_roc_curves(y, score)
        curves = {"roc_ovr": {str(k): {"fpr": c.fpr[_thin(len(c.fpr), curve_points)],
                                       "tpr": c.tpr[_thin(len(c.tpr), curve_points)]}
                              for k, c in rocs.items()}}
        return M.evaluate_multiclass(y, score), curves
    if task == "binary":
        metrics = M.evaluate_binary(y, score, threshold)
        ks = M.ks_curve(y, score)
        keep = np.union1d(_thin(len(ks.thresholds), curve_points), [int(np.argmax(ks.tpr - ks.fpr))])
        thr = np.clip(ks.thresholds[keep], -1e300, 1e300)  # the first threshold is +inf
        curves = {"roc": {"fpr": ks.fpr[keep], "tpr": ks.tpr[keep]},
                  "ks": {"threshold": thr, "tpr": ks.tpr[keep], "fpr": ks.fpr[keep],
                         "ks": ks.ks, "at": ks.threshold, "positive_share": float(np.mean(y == 1))}}
        pred = score >= threshold
        curves["confusion"] = {"threshold": float(threshold),  # rows: true 0 / 1; columns: predicted 0 / 1
                               "counts": [[int(np.sum(~pred & (y != 1))), int(np.sum(pred & (y != 1)))],
                                          [int(np.sum(~pred & (y == 1))), int(np.sum(pred & (y == 1)))]]}
        return metrics, curves
    metrics = M.evaluate_regression(y, score)
    if task == "poisson" and (score > 0).all() and (y >= 0).all():
        metrics["poisson_deviance"] = M.mean_poisson_deviance(y, score)
    keep = _thin(len(y), curve_points)  # a thinned sample of (prediction, residual) for the residual plot
    return metrics, {"residuals": {"predicted": score[keep], "residual": (y - score)[keep]}}


def infer_task(scores: dict[str, Any], label: np.ndarray) -> str:
    task = scores.get("task")
    if task:
        return task
    if np.ndim(scores["score"]) == 2:
        return "multiclass"
    return "binary" if np.isin(np.unique(label), (0, 1)).all() else "regression"


@register
class Evaluate(Component):
    name = "evaluate"
    inputs = {"scores": Slot("scores")}
    outputs = {"metrics": "metrics"}
    Params = EvaluateParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        scores = inputs.get("scores")
        if not scores or scores.get("label") is None:
            return {}
        y = np.asarray(scores["label"], dtype=np.float64)
        task = self.params.task if self.params.task != "auto" else infer_task(scores, y)
        metrics, curves = compute_metrics(task, y, np.asarray(scores["score"]),
                                          self.params.threshold, self.params.curve_points)
        result = {"task": task, "n": int(len(y)), "metrics": metrics, "curves": curves,
                  "model_step": scores.get("model_step", "")}
        write_json(tc.dir / "metrics.json", result)
        tc.log.info("%s on %d rows: %s", task, len(y),
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return {"metrics": result}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        return self.run(tc, inputs)
