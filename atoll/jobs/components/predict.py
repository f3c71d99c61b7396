"""``predict``: apply a trained model step to data; the label holder gets the scores.

The model step's component class does the work (its ``predict`` class method runs
the same role code it trained with, e.g. hosts send their partial scores to the
guest), so adding a model never touches this step. The output ``scores`` holds
``ids``, ``score`` (probability for classifiers, prediction for regressors),
``label`` (if the data has one) and ``task``, at the parties that get scores.
"""

from __future__ import annotations

from typing import Any

from atoll.errors import ConfigError
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import get, register


@register
class Predict(Component):
    name = "predict"
    inputs = {"model": Slot("model"), "data": Slot("data")}
    outputs = {"scores": "scores"}

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        producer = spec.inputs.get("model", "").partition(".")[0]
        pcls = get(job.component(producer).component)
        if not hasattr(pcls, "predict"):
            raise job.error(f"{spec.id}: step {producer!r} ({pcls.name}) makes no model that can predict",
                            "pipeline", index, "inputs", "model")

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        model = inputs.get("model")
        producer = tc.job.component(tc.job.component(tc.step).inputs["model"].partition(".")[0])
        cls = get(producer.component)
        predict = getattr(cls, "predict", None)
        if predict is None:
            raise ConfigError(f"{producer.component} cannot predict")
        scores = predict(tc, model, inputs.get("data"), producer.params)
        if scores:
            scores = dict(scores, model_step=producer.id)
            n = len(scores["score"])
            tc.log.info("scored %d rows with %s", n, producer.id)
        return {"scores": scores} if scores else {}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        return self.run(tc, inputs)
