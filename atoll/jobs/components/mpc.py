"""``ss_lr``, ``ss_linr``, ``hetero_pearson``: the secret-sharing (MPC) components.

Each wraps the role classes of its algorithm module and reuses that module's ONE parameter
model (:class:`atoll.ml.vertical.ss_lr.SSGLMParams`, :class:`atoll.ml.vertical.pearson.PearsonParams`);
see the modules' docstrings for the protocols and what each party sees. They take one guest
and one host; an arbiter, when the job has one, serves as the dealer of correlated
randomness (``provider: auto`` or ``dealer``), otherwise the two parties make it themselves
(``he``, or ``ot`` once built).

* ``ss_lr`` / ``ss_linr``: every party keeps its own part of the model (its raw-scale
  coefficients; the guest also the intercept), or with ``reveal: shared`` its weight shares;
  ``predict`` runs the joint scoring of the module. ``centralized_twin``: scikit-learn's model
  of the same family and L2 penalty, for ``--centralized-baseline``.
* ``hetero_pearson``: the correlation matrix (and VIF) across both parties' columns, in each
  party's ``model`` output.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register
from atoll.ml.vertical.pearson import PearsonParams
from atoll.ml.vertical.ss_lr import SSGLMParams


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


def _two_parties(cls: Any, job: Any, spec: Any, index: int, provider: str) -> None:
    if len(job.parties_of("guest")) != 1 or len(job.parties_of("host")) != 1:
        raise job.error(f"{spec.id} ({cls.name}) takes exactly one guest and one host", "pipeline", index,
                        "component")
    if provider == "dealer" and len(job.parties_of("arbiter")) != 1:
        raise job.error(f"{spec.id} ({cls.name}) with provider 'dealer' needs one party with role arbiter",
                        "pipeline", index, "params", "provider")


def _serves_dealer(tc: TaskContext, provider: str) -> bool:
    from atoll.ml.vertical.ss_lr import resolve_provider

    return tc.role == "arbiter" and resolve_provider(provider, tc.fed) == "dealer"


def _run_dealer(tc: TaskContext) -> dict:
    from atoll.secure.mpc import run_dealer

    return run_dealer(tc.fed, [tc.parties_of("guest")[0], tc.parties_of("host")[0]])


class _SSGLMComponent(Component):
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = SSGLMParams
    layout = "vertical"
    family: ClassVar[str] = ""
    task: ClassVar[str] = ""

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        p = cls.Params.model_validate(spec.params)
        _two_parties(cls, job, spec, index, p.provider)

    @classmethod
    def _roles(cls) -> tuple[type, type]:
        from atoll.ml.vertical import ss_lr

        return ((ss_lr.SSLRGuest, ss_lr.SSLRHost) if cls.family == "logistic"
                else (ss_lr.SSLinRGuest, ss_lr.SSLinRHost))

    def _params(self, seed: int) -> SSGLMParams:
        p = self.params
        return p if p.random_state is not None else p.model_copy(update={"random_state": seed})

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        params = self._params(tc.seed)
        if _serves_dealer(tc, params.provider):
            report = _run_dealer(tc)
            return {"model": {"component": self.name, "role": "arbiter", "dealer": report}}
        if tc.role not in ("guest", "host"):
            return {}
        guest_cls, host_cls = self._roles()
        train: Table | None = inputs.get("train")
        if train is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its training data")
        fed = tc.counted("epoch", params.max_iter)
        if tc.role == "guest":
            if train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            m = guest_cls(params).fit(fed, train.values(), train.y.to_numpy(dtype=np.float64), ids=_ids(train))
        else:
            m = host_cls(params).fit(fed, train.values(), ids=_ids(train))
        tc.log.info("trained %d epochs, %s", m.n_iter, m.timing)
        out = {"component": self.name, "role": tc.role, "family": m.family, "n_iter": int(m.n_iter),
               "columns": list(train.x.columns), "intercept": float(m.intercept),
               "coef": None if m.coef is None else np.asarray(m.coef),
               "timing": {k: float(v) for k, v in m.timing.items()},
               "epoch_seconds": [float(s) for s in m.epoch_seconds]}
        if m.shares is not None:
            out["shares"] = {"w": m.shares["w"], "frac": int(m.shares["frac"]), "dg": int(m.shares["dg"]),
                             "dh": int(m.shares["dh"]), "mu": np.asarray(m.shares["mu"]),
                             "sd": np.asarray(m.shares["sd"])}
        return {"model": out}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.ml.vertical.ss_lr import SSPartyModel

        p = cls.Params.model_validate(params)
        if p.reveal == "shared" and _serves_dealer(tc, p.provider):
            _run_dealer(tc)
            return None
        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        guest_cls, host_cls = cls._roles()
        pm = SSPartyModel(model["family"], tc.role, None if model.get("coef") is None else np.asarray(model["coef"]),
                          float(model.get("intercept", 0.0)), int(model["n_iter"]), model.get("shares"))
        role = (guest_cls if tc.role == "guest" else host_cls)(p)
        u = role.predict(tc.fed, pm, data.values(), ids=_ids(data))
        if tc.role == "host":
            return None
        score = 1.0 / (1.0 + np.exp(-u)) if cls.family == "logistic" else u
        return scores(data, score, cls.task)

    @classmethod
    def centralized_twin(cls, params: SSGLMParams, seed: int, task: str) -> tuple[Any, Any]:
        from atoll.jobs.components.glm import _Twin

        return _Twin(cls.family, params, seed), lambda m, x, **kw: m.score(x, **kw)


@register
class SSLR(_SSGLMComponent):
    """Two-party secret-shared logistic regression (binary labels 0/1 at the guest)."""

    name = "ss_lr"
    family = "logistic"
    task = "binary"


@register
class SSLinR(_SSGLMComponent):
    """Two-party secret-shared linear regression."""

    name = "ss_linr"
    family = "linear"
    task = "regression"


@register
class HeteroPearson(Component):
    """Secure Pearson correlation and VIF across the guest's and the host's columns."""

    name = "hetero_pearson"
    inputs = {"data": Slot("data")}
    outputs = {"model": "model"}
    Params = PearsonParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        _two_parties(cls, job, spec, index, cls.Params.model_validate(spec.params).provider)

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.vertical.pearson import PearsonGuest, PearsonHost

        if _serves_dealer(tc, self.params.provider):
            _run_dealer(tc)
            return {}
        if tc.role not in ("guest", "host"):
            return {}
        data: Table | None = inputs.get("data")
        if data is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its data")
        role = (PearsonGuest if tc.role == "guest" else PearsonHost)(self.params)
        r = role.run(tc.fed, data.values(), ids=_ids(data), columns=list(data.x.columns))
        return {"model": {"component": self.name, "role": tc.role, "columns": r.columns,
                          "corr": np.asarray(r.corr), "vif": None if r.vif is None else np.asarray(r.vif),
                          "own": [r.own.start, r.own.stop]}}
