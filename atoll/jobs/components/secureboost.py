"""``secureboost``: lossless vertical gradient boosting (SecureBoost).

Wraps the role classes of :mod:`atoll.ml.vertical.secureboost` (see that module
for the protocol and what each party sees): the guest runs
``SecureBoostGuest.fit(ctx, x, y)`` and keeps the trees (its own thresholds,
only the owner of each host split) and leaf values; each host runs
``SecureBoostHost.fit(ctx, x)`` and keeps its private lookup table (its split
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

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register


class SecureBoostStepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(10, ge=1)
    max_depth: int = Field(5, ge=1)
    learning_rate: float = Field(0.3, gt=0.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    gamma: float = Field(0.0, ge=0.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    max_bin: int = Field(32, ge=2)
    subsample: float = Field(1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0)
    goss: bool = False  # gradient-based one-side sampling (needs subsample: 1)
    top_rate: float = Field(0.2, gt=0.0, lt=1.0)
    other_rate: float = Field(0.1, gt=0.0, lt=1.0)
    objective: Literal["binary:logistic", "reg:squarederror", "multi:softprob"] = "binary:logistic"
    scheme: Literal["ou", "paillier", "plain"] = "ou"
    key_bits: int = Field(2048, ge=512)
    random_state: int | None = None  # default: derived from the job's seed
    n_jobs: int = Field(1, ge=1)
    #: stop when the loss on the ``validate`` input has not improved for this many rounds, and keep
    #: the trees up to the best round (needs ``inputs: {validate: ...}``)
    early_stopping_rounds: int | None = Field(None, ge=1)


#: what the ``evaluate`` step computes for each objective
TASKS = {"binary:logistic": "binary", "reg:squarederror": "regression", "multi:softprob": "multiclass"}
_TREE_FIELDS = ("left", "right", "owner", "feature", "threshold", "missing_left", "gain", "value")


def _sb_params(p: SecureBoostStepParams, seed: int) -> Any:
    from atoll.ml.vertical.secureboost import SecureBoostParams

    kw = p.model_dump()
    kw["random_state"] = seed if p.random_state is None else p.random_state
    return SecureBoostParams(**kw)


def guest_model_to_wire(m: Any) -> dict[str, Any]:
    return {"objective": m.objective, "base_margin": np.asarray(m.base_margin, np.float64),
            "n_outputs": int(m.n_outputs),
            "trees": [{"output": int(t.output), **{f: list(getattr(t, f)) for f in _TREE_FIELDS}}
                      for t in m.trees],
            "feature_gain": {k: np.asarray(v) for k, v in m.feature_gain.items()},
            "feature_count": {k: np.asarray(v) for k, v in m.feature_count.items()},
            "best_iteration": m.best_iteration, "seconds_per_round": list(m.seconds_per_round),
            # per-round losses: the report plots them
            "history": {k: [float(v) for v in getattr(m, k)] for k in ("train_loss", "valid_loss")
                        if getattr(m, k)}}


def guest_model_from_wire(d: dict[str, Any]) -> Any:
    from atoll.ml.vertical.boosting_core import Tree
    from atoll.ml.vertical.secureboost import SecureBoostGuestModel

    trees = []
    for t in d["trees"]:
        tree = Tree(output=int(t["output"]))
        for f in _TREE_FIELDS:
            setattr(tree, f, list(t[f]))
        tree.left = [int(v) for v in tree.left]
        tree.right = [int(v) for v in tree.right]
        tree.feature = [int(v) for v in tree.feature]
        tree.missing_left = [bool(v) for v in tree.missing_left]
        trees.append(tree)
    return SecureBoostGuestModel(d["objective"], np.asarray(d["base_margin"]), int(d["n_outputs"]), trees,
                                 dict(d["feature_gain"]), dict(d["feature_count"]), d["best_iteration"],
                                 list(d["seconds_per_round"]),
                                 train_loss=list(d.get("history", {}).get("train_loss", [])),
                                 valid_loss=list(d.get("history", {}).get("valid_loss", [])))


def host_model_to_wire(m: Any) -> dict[str, Any]:
    return {"topologies": [{"left": np.asarray(t["left"]), "right": np.asarray(t["right"]),
                            "owner": list(t["owner"])} for t in m.topologies],
            "lookup": [[[int(node), int(f), float(thr), bool(ml)] for node, (f, thr, ml) in sorted(lk.items())]
                       for lk in m.lookup]}


def host_model_from_wire(d: dict[str, Any]) -> Any:
    from atoll.ml.vertical.secureboost import SecureBoostHostModel

    topo = [{"left": np.asarray(t["left"], np.int32), "right": np.asarray(t["right"], np.int32),
             "owner": list(t["owner"])} for t in d["topologies"]]
    lookup = [{int(node): (int(f), float(thr), bool(ml)) for node, f, thr, ml in lk} for lk in d["lookup"]]
    return SecureBoostHostModel(topo, lookup)


@register
class SecureBoost(Component):
    """Vertical gradient-boosted trees; the guest holds labels and the HE key."""

    name = "secureboost"
    inputs = {"train": Slot("data"), "validate": Slot("data", optional=True)}
    outputs = {"model": "model"}
    Params = SecureBoostStepParams
    layout = "vertical"

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        if not job.parties_of("guest") or not job.parties_of("host"):
            raise job.error(f"{spec.id} (secureboost) needs a guest and at least one host",
                            "pipeline", index, "component")
        if spec.params.get("early_stopping_rounds") is not None and "validate" not in spec.inputs:
            raise job.error(f"{spec.id}: early_stopping_rounds needs validation rows: add inputs: "
                            "{validate: STEP.validate} (split with validate_size > 0)",
                            "pipeline", index, "params", "early_stopping_rounds")

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.vertical.secureboost import SecureBoostGuest, SecureBoostHost

        params = _sb_params(self.params, tc.seed)
        train: Table | None = inputs.get("train")
        valid: Table | None = inputs.get("validate")
        if "validate" in tc.job.component(tc.step).inputs and valid is None and tc.role in ("guest", "host"):
            raise DataError("secureboost: the validate input is empty; split with validate_size > 0")
        fed = tc.counted("round", params.n_estimators)  # progress per boosting round in the display
        if tc.role == "guest":
            if train is None or train.y is None:
                raise DataError("secureboost: the guest needs labelled training data")
            eval_set = None if valid is None else (valid.values(), valid.y.to_numpy(np.float64))
            m = SecureBoostGuest(params).fit(fed, train.values(), train.y.to_numpy(np.float64), eval_set=eval_set)
            tc.log.info("secureboost: %d trees, %.1f s per round", len(m.trees),
                        float(np.mean(m.seconds_per_round)) if m.seconds_per_round else 0.0)
            return {"model": {"component": self.name, "role": "guest", "columns": list(train.x.columns),
                              **guest_model_to_wire(m)}}
        if tc.role == "host":
            if train is None:
                raise DataError("secureboost: the host needs its training data")
            m = SecureBoostHost(params).fit(fed, train.values(), eval_x=None if valid is None else valid.values())
            return {"model": {"component": self.name, "role": "host", "columns": list(train.x.columns),
                              **host_model_to_wire(m)}}
        return {}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.ml.vertical.boosting_core import get_objective
        from atoll.ml.vertical.secureboost import SecureBoostGuest, SecureBoostHost

        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        p = _sb_params(cls.Params.model_validate(params), tc.seed)
        if tc.role == "host":
            SecureBoostHost(p).predict(tc.fed, data.values(), host_model_from_wire(model))
            return None
        gm = guest_model_from_wire(model)
        margin = SecureBoostGuest(p).predict_margin(tc.fed, data.values(), gm)
        return scores(data, get_objective(gm.objective).transform(margin), TASKS[gm.objective])

    @staticmethod
    def twin_params(params: SecureBoostStepParams, model: dict[str, Any]) -> SecureBoostStepParams:
        """The twin grows as many rounds as the federated model kept (after early stopping)."""
        if model.get("best_iteration") is None:
            return params
        return params.model_copy(update={"n_estimators": int(model["best_iteration"]) + 1})

    @staticmethod
    def centralized_twin(params: SecureBoostStepParams, seed: int, task: str) -> tuple[Any, Any]:
        p = params
        try:
            import xgboost as xgb

            kw = dict(n_estimators=p.n_estimators, max_depth=p.max_depth, learning_rate=p.learning_rate,
                      reg_lambda=p.reg_lambda, gamma=p.gamma, min_child_weight=p.min_child_weight,
                      max_bin=p.max_bin, subsample=p.subsample, colsample_bytree=p.colsample_bytree,
                      tree_method="hist", random_state=seed)
            if task == "binary":
                return xgb.XGBClassifier(**kw), lambda m, x: m.predict_proba(x)[:, 1]
            if task == "multiclass":
                return xgb.XGBClassifier(objective="multi:softprob", **kw), lambda m, x: m.predict_proba(x)
            return xgb.XGBRegressor(**kw), lambda m, x: m.predict(x)
        except ImportError:
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

            kw = dict(max_iter=p.n_estimators, max_depth=p.max_depth, learning_rate=p.learning_rate,
                      l2_regularization=p.reg_lambda, max_bins=min(p.max_bin, 255), min_samples_leaf=1,
                      early_stopping=False, random_state=seed)
            if task == "binary":
                return HistGradientBoostingClassifier(**kw), lambda m, x: m.predict_proba(x)[:, 1]
            if task == "multiclass":
                return HistGradientBoostingClassifier(**kw), lambda m, x: m.predict_proba(x)
            return HistGradientBoostingRegressor(**kw), lambda m, x: m.predict(x)
