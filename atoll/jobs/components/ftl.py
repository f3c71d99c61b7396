"""``hetero_ftl``: federated transfer learning between a guest with labelled users and a host with
(mostly) other users and other features.

Wraps the role classes of :mod:`atoll.ml.transfer.hetero_ftl` (``mode: plain | he``) and
:mod:`atoll.ml.transfer.ss_ftl` (``mode: ss``) with their ONE parameter model
(:class:`atoll.ml.transfer.FTLParams`); see those modules for the protocol and what each party sees.
The step takes each party's *whole* table (no ``psi`` step before it: the users differ, and the
protocol finds the overlap itself by ECDH-PSI on the ids). A label column at the host (e.g. hidden
labels kept for evaluation) is never read by training.

``predict`` scores the host's rows, by default only those that were not in the training overlap
(``score_overlap: false``), so an ``evaluate`` step measures transfer on held-out users. The scores
go to ``predict_to``: the host (with its ids and, if its table has one, its label column), or the
guest (the host then also sends the ids of the scored rows; the guest has no labels for them).
An arbiter, when the job has one and ``mode: ss``, deals the Beaver triples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.ml.transfer._ftl import FTLParams


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


def _roles(mode: str) -> tuple[type, type]:
    if mode == "ss":
        from atoll.ml.transfer.ss_ftl import SSFTLGuest, SSFTLHost

        return SSFTLGuest, SSFTLHost
    from atoll.ml.transfer.hetero_ftl import FTLGuest, FTLHost

    return FTLGuest, FTLHost


def _deals(tc: TaskContext, p: FTLParams) -> bool:
    from atoll.ml.vertical.ss_lr import resolve_provider

    return p.mode == "ss" and tc.role == "arbiter" and resolve_provider(p.provider, tc.fed) == "dealer"


class FTLStepParams(FTLParams):
    """:class:`~atoll.ml.transfer.FTLParams` plus what the job step adds."""

    score_overlap: bool = False


@register
class HeteroFTL(Component):
    """Federated transfer learning (Liu et al.): plain, HE or secret-sharing mode."""

    name = "hetero_ftl"
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = FTLStepParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        p = cls.Params.model_validate(spec.params)
        if len(job.parties_of("guest")) != 1 or len(job.parties_of("host")) != 1:
            raise job.error(f"{spec.id} (hetero_ftl) takes exactly one guest and one host", "pipeline", index,
                            "component")
        if p.mode == "ss" and p.provider == "dealer" and len(job.parties_of("arbiter")) != 1:
            raise job.error(f"{spec.id} (hetero_ftl) with provider 'dealer' needs one party with role arbiter",
                            "pipeline", index, "params", "provider")

    @staticmethod
    def _algo(params: FTLStepParams, seed: int) -> FTLParams:
        d = params.model_dump()
        d.pop("score_overlap")
        if d["random_state"] is None:
            d["random_state"] = seed
        return FTLParams(**d)

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        p = self._algo(self.params, tc.seed)
        if _deals(tc, p):
            from atoll.ml.transfer.ss_ftl import run_dealer_for

            return {"model": {"component": self.name, "role": "arbiter", "dealer": run_dealer_for(tc.fed)}}
        if tc.role not in ("guest", "host"):
            return {}
        train: Table | None = inputs.get("train")
        if train is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its data")
        guest_cls, host_cls = _roles(p.mode)
        fed = tc.counted("iter", p.max_iter)
        if tc.role == "guest":
            if train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled data")
            role = guest_cls(p)
            part = role.fit(fed, train.values(), train.y.to_numpy(dtype=np.float64), ids=_ids(train))
        else:
            role = host_cls(p)
            part = role.fit(fed, train.values(), ids=_ids(train))
        tc.log.info("trained %d iterations, %.3f s per iteration", part.n_iter,
                    float(np.mean(part.iter_seconds)) if part.iter_seconds else 0.0)
        out = {"component": self.name, "role": tc.role, "columns": list(train.x.columns), "part": part.to_fields()}
        if tc.role == "host":
            # the host's own ids of the training overlap: predict leaves them out by default
            ids = _ids(train)
            out["overlap_ids"] = [ids[i] for i in role.overlap_]
        return {"model": out}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.jobs.artifacts import ids_to_wire
        from atoll.ml.transfer._ftl import FTLPartyModel

        step = cls.Params.model_validate(params)
        p = cls._algo(step, 0)
        if _deals(tc, p):
            from atoll.ml.transfer.ss_ftl import run_dealer_for

            run_dealer_for(tc.fed)
            return None
        if tc.role not in ("guest", "host"):
            return None
        if model is None:
            raise DataError(f"{cls.name} predict: party {tc.party!r} lacks its model part")
        part = FTLPartyModel.from_fields(model["part"])
        guest_cls, host_cls = _roles(p.mode)
        host = tc.parties_of("host")[0]
        if tc.role == "guest":
            score = guest_cls(p).predict(tc.fed, part)
            if p.predict_to != "guest":
                return None
            with tc.fed.scope("ftl_score_ids"):
                ids = tc.fed.recv(host, "ids")
            if not isinstance(ids, list) or len(ids) != len(score) or any(not isinstance(i, str) for i in ids):
                raise DataError(f"{cls.name} predict: the host's ids do not match the scores")
            return {"ids": ids, "score": 1.0 / (1.0 + np.exp(-np.asarray(score))), "label": None, "task": "binary"}
        if data is None:
            raise DataError(f"{cls.name} predict: the host needs the rows to score")
        if list(data.x.columns) != list(model["columns"]):
            raise DataError(f"{cls.name} predict: columns {list(data.x.columns)} differ from the training columns")
        if not step.score_overlap:
            keep = ~np.isin(np.asarray(_ids(data)), np.asarray(model.get("overlap_ids", []), dtype=str))
            data = data.rows(np.flatnonzero(keep))
        if len(data) == 0:
            raise DataError(f"{cls.name} predict: no host row to score outside the training overlap")
        score = host_cls(p).predict(tc.fed, part, data.values())
        if p.predict_to == "guest":
            with tc.fed.scope("ftl_score_ids"):
                tc.fed.send(tc.parties_of("guest")[0], "ids", _ids(data))
            return None
        return {"ids": ids_to_wire(data.ids), "score": 1.0 / (1.0 + np.exp(-np.asarray(score))),
                "label": None if data.y is None else data.y.to_numpy(np.float64), "task": "binary"}
