"""``secureboost``: lossless vertical gradient boosting (SecureBoost).

Derived from the algorithm registry (:mod:`atoll.ml.registry`): the parameters
(:class:`~atoll.ml.vertical.secureboost.SecureBoostParams`), roles, model parts and twin are
declared in :mod:`atoll.ml.vertical.secureboost` (see that module for the protocol and what
each party sees): the guest runs ``SecureBoostGuest.fit(ctx, x, y, ids=...)`` and keeps the
trees (its own thresholds, only the owner of each host split) and leaf values; each host runs
``SecureBoostHost.fit(ctx, x, ids=...)`` and keeps its private lookup table (its split
thresholds). The arbiter takes no part. With a ``validate`` input (the split's
validation rows) the hosts route those rows each round exactly as in prediction,
the guest tracks their loss, and ``early_stopping_rounds`` stops training and
keeps the trees up to the best round at every party. ``predict`` is the joint
routing of the same module. ``centralized_twin`` is XGBoost (if installed) or
scikit-learn's ``HistGradientBoosting`` with the same number of trees, depth, learning rate,
L2 term and bins (and as many rounds as the federated model kept), trained on
the joined data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import AlgorithmComponent, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


@register
class SecureBoost(AlgorithmComponent):
    """Vertical gradient-boosted trees; the guest holds labels and the HE key."""

    algorithm = "secureboost"
    inputs = {"train": Slot("data"), "validate": Slot("data", optional=True)}

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        super().check(job, spec, index, check_data)
        if spec.params.get("early_stopping_rounds") is not None and "validate" not in spec.inputs:
            raise job.error(f"{spec.id}: early_stopping_rounds needs validation rows: add inputs: "
                            "{validate: STEP.validate} (split with validate_size > 0)",
                            "pipeline", index, "params", "early_stopping_rounds")

    @staticmethod
    def _seeded(p: Any, seed: int) -> Any:
        return p if p.random_state is not None else p.model_copy(update={"random_state": seed})

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        params = self._seeded(self.params, tc.seed)
        train: Table | None = inputs.get("train")
        valid: Table | None = inputs.get("validate")
        if "validate" in tc.job.component(tc.step).inputs and valid is None and tc.role in ("guest", "host"):
            raise DataError("secureboost: the validate input is empty; split with validate_size > 0")
        fed = tc.counted("round", params.n_estimators)  # progress per boosting round in the display
        if tc.role == "guest":
            if train is None or train.y is None:
                raise DataError("secureboost: the guest needs labelled training data")
            eval_set = None if valid is None else (valid.values(), valid.y.to_numpy(np.float64))
            m = self.alg.role("guest")(params).fit(fed, train.values(), train.y.to_numpy(np.float64),
                                                   eval_set=eval_set, ids=_ids(train))
            tc.log.info("secureboost: %d trees, %.1f s per round", len(m.trees),
                        float(np.mean(m.seconds_per_round)) if m.seconds_per_round else 0.0)
            return {"model": self.part(tc, m, columns=list(train.x.columns))}
        if tc.role == "host":
            if train is None:
                raise DataError("secureboost: the host needs its training data")
            m = self.alg.role("host")(params).fit(fed, train.values(), eval_x=None if valid is None else valid.values(),
                                                  ids=_ids(train))
            return {"model": self.part(tc, m, columns=list(train.x.columns))}
        return {}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.ml.vertical.boosting_core import get_objective
        from atoll.ml.vertical.secureboost import TASKS

        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        p = cls._seeded(cls.Params.model_validate(params), tc.seed)
        part = cls.load_part(tc, model)
        if tc.role == "host":
            cls.alg.role("host")(p).predict(tc.fed, data.values(), part, ids=_ids(data))
            return None
        margin = cls.alg.role("guest")(p).predict_margin(tc.fed, data.values(), part, ids=_ids(data))
        return scores(data, get_objective(part.objective).transform(margin), TASKS[part.objective])

    @staticmethod
    def twin_params(params: Any, model: dict[str, Any]) -> Any:
        """The twin grows as many rounds as the federated model kept (after early stopping)."""
        from atoll.ml.vertical.secureboost import twin_params

        return twin_params(params, model.get("best_iteration"))
