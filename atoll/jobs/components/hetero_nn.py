"""``hetero_nn``: split learning (vertical neural network) as a job component.

Wraps the role classes of :mod:`atoll.ml.vertical.hetero_nn` (see its docstring for the protocol
and what each party sees) and reuses its ONE parameter model,
:class:`~atoll.ml.vertical.hetero_nn.HeteroNNParams`. The architecture is declared in the job
file (``bottom`` / ``bottoms`` per party: a builder name of :mod:`atoll.ml.vertical.nn_zoo` and
its sizes; ``top``; ``interactive_units``): never code from another party.

* a guest and one or more hosts; with ``mode: ss`` an arbiter, when the job has one, deals the
  correlated randomness (``provider: auto`` or ``dealer``);
* every party keeps only its own part (:class:`~atoll.ml.vertical.hetero_nn.HeteroNNPartModel`
  as a dict: its bottom's weights, its share of the interactive weights; the guest also its
  interactive part, the top model, the history with the label-leakage report);
* ``predict`` runs the joint prediction (each party its own bottom);
* ``centralized_twin``: :class:`~atoll.ml.vertical.hetero_nn.CentralSplitNN`, the same
  architecture in torch on the joined columns, same seeds and epochs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.errors import ConfigError, DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register

try:  # the parameter model lives with the algorithm, which needs torch
    from atoll.ml.vertical.hetero_nn import HeteroNNParams
except (ImportError, ConfigError):  # pragma: no cover - no torch: the component registers, check() says why
    from pydantic import BaseModel, ConfigDict

    class HeteroNNParams(BaseModel):  # type: ignore[no-redef]
        model_config = ConfigDict(extra="allow")

TASKS = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


class _TwinParams(HeteroNNParams):
    """The federated run's parameters plus the column blocks of the joined table (for the twin)."""

    blocks: list[tuple[str, int]] = []
    guest: str = "guest"


@register
class HeteroNN(Component):
    """Split learning: bottom models per party, a protected interactive layer, the guest's top model."""

    name = "hetero_nn"
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = HeteroNNParams
    layout = "vertical"

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise job.error(f"{spec.id} (hetero_nn) needs PyTorch: pip install 'atoll[torch]'",
                            "pipeline", index, "component") from None
        p = cls.Params.model_validate(spec.params)
        if len(job.parties_of("guest")) != 1 or not job.parties_of("host"):
            raise job.error(f"{spec.id} (hetero_nn) needs one guest and at least one host", "pipeline", index,
                            "component")
        if p.mode == "ss" and p.provider == "dealer" and len(job.parties_of("arbiter")) != 1:
            raise job.error(f"{spec.id} (hetero_nn) with provider 'dealer' needs one party with role arbiter",
                            "pipeline", index, "params", "provider")
        unknown = set(p.bottoms) - set(job.parties)
        if unknown:
            raise job.error(f"{spec.id} (hetero_nn): bottoms names parties the job does not have: "
                            f"{sorted(unknown)}", "pipeline", index, "params", "bottoms")

    def _params(self, seed: int) -> Any:
        p = self.params
        return p if "random_state" in p.model_fields_set else p.model_copy(update={"random_state": seed})

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.vertical.hetero_nn import HeteroNNGuest, HeteroNNHost, run_dealers, serves_dealer

        params = self._params(tc.seed)
        if tc.role == "arbiter":
            if serves_dealer(params, tc.fed):
                return {"model": {"component": self.name, "role": "arbiter", "params": params.model_dump(mode="json"),
                                  "dealer": run_dealers(tc.fed)}}
            return {}
        if tc.role not in ("guest", "host"):
            return {}
        train: Table | None = inputs.get("train")
        if train is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its training data")
        fed = tc.counted("epoch", params.epochs)
        if tc.role == "guest":
            if train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            part = HeteroNNGuest(params).fit(fed, train.values(), train.y.to_numpy(dtype=np.float64),
                                             ids=_ids(train))
        else:
            part = HeteroNNHost(params).fit(fed, train.values(), ids=_ids(train))
        tc.log.info("trained %s epochs (%s layer)", part.history.get("epochs"), params.mode)
        out = {"component": self.name, **part.to_dict(), "columns": list(train.x.columns)}
        if tc.role == "guest":
            feats = part.report.get("host_features", {})
            out["blocks"] = [[p, len(train.x.columns) if p == tc.party else int(feats.get(p, 0))]
                             for p in tc.job.parties if p == tc.party or p in feats]
        return {"model": out}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.ml.vertical.hetero_nn import (HeteroNNGuest, HeteroNNHost, HeteroNNParams as P,
                                                 HeteroNNPartModel, run_dealers, serves_dealer)

        if tc.role == "arbiter":
            if model and model.get("params") and serves_dealer(P.model_validate(model["params"]), tc.fed):
                run_dealers(tc.fed)
            return None
        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        part = HeteroNNPartModel.from_dict(model)
        p = P.model_validate(part.params)
        if tc.role == "host":
            HeteroNNHost(p).predict(tc.fed, part, data.values(), ids=_ids(data))
            return None
        score = HeteroNNGuest(p).predict(tc.fed, part, data.values(), ids=_ids(data))
        return scores(data, score, TASKS[p.task])

    @staticmethod
    def twin_params(params: Any, model: dict[str, Any]) -> Any:
        """The guest's resolved parameters (seed included) and the parties' column blocks."""
        return _TwinParams.model_validate({**model["params"], "blocks": [tuple(b) for b in model["blocks"]],
                                           "guest": model["party"]})

    @staticmethod
    def centralized_twin(params: Any, seed: int, task: str) -> tuple[Any, Any]:
        return _Twin(params), lambda m, x: m.score(x)


class _Twin:
    """:class:`CentralSplitNN` on the joined table, its columns cut back into the parties' blocks."""

    name = "CentralSplitNN (torch)"

    def __init__(self, params: Any):
        self.params = params

    def _blocks(self, x: np.ndarray) -> list[np.ndarray]:
        blocks = list(getattr(self.params, "blocks", []))
        if sum(n for _, n in blocks) != x.shape[1]:
            raise DataError("hetero_nn baseline: the joined columns do not match the parties' blocks")
        cut, start = {}, 0
        for party, n in blocks:
            cut[party] = x[:, start:start + n]
            start += n
        guest = self.params.guest
        self.hosts = sorted(p for p in cut if p != guest)
        return [cut[guest]] + [cut[h] for h in self.hosts]

    def fit(self, x: np.ndarray, y: np.ndarray) -> "_Twin":
        from atoll.ml.vertical.hetero_nn import CentralSplitNN, HeteroNNParams as P

        xs = self._blocks(np.asarray(x, dtype=np.float64))
        plain = P.model_validate(self.params.model_dump(exclude={"blocks", "guest"}))
        self.model = CentralSplitNN(plain, self.params.guest, self.hosts).fit(xs, y)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_scores(self._blocks(np.asarray(x, dtype=np.float64)))
