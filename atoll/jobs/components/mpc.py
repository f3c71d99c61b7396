"""``ss_lr``, ``ss_linr``, ``hetero_pearson``: the secret-sharing (MPC) components.

Derived from the algorithm registry (:mod:`atoll.ml.registry`): the parameter models
(:class:`atoll.ml.vertical.ss_lr.SSGLMParams`, :class:`atoll.ml.vertical.pearson.PearsonParams`),
roles, model parts, checks and twins are declared in the algorithm modules; see their
docstrings for the protocols and what each party sees. They take one guest and one host; an
arbiter, when the job has one, serves as the dealer of correlated randomness (``provider:
auto`` or ``dealer``), otherwise the two parties make it themselves (``he``, or ``ot`` once built).

* ``ss_lr`` / ``ss_linr``: every party keeps its own part of the model (its raw-scale
  coefficients; the guest also the intercept), or with ``reveal: shared`` its weight shares;
  ``predict`` runs the joint scoring of the module. ``centralized_twin``: scikit-learn's model
  of the same family and L2 penalty, for ``--centralized-baseline``.
* ``hetero_pearson``: the correlation matrix (and VIF) across both parties' columns, in each
  party's ``model`` output.
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


def _serves_dealer(tc: TaskContext, provider: str) -> bool:
    from atoll.ml.vertical.ss_lr import resolve_provider

    return tc.role == "arbiter" and resolve_provider(provider, tc.fed) == "dealer"


def _run_dealer(tc: TaskContext, alg: Any) -> dict:
    return alg.role("arbiter")().run(tc.fed)


class SSGLMComponent(AlgorithmComponent):
    """The job step of a secret-shared linear model (``algorithm`` names it)."""

    def _params(self, seed: int) -> Any:
        p = self.params
        return p if p.random_state is not None else p.model_copy(update={"random_state": seed})

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        params = self._params(tc.seed)
        if _serves_dealer(tc, params.provider):
            return {"model": self.part(tc, _run_dealer(tc, self.alg))}
        if tc.role not in ("guest", "host"):
            return {}
        train: Table | None = inputs.get("train")
        if train is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its training data")
        fed = tc.counted("epoch", params.max_iter)
        role = self.alg.role(tc.role)(params)
        if tc.role == "guest":
            if train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            m = role.fit(fed, train.values(), train.y.to_numpy(dtype=np.float64), ids=_ids(train))
        else:
            m = role.fit(fed, train.values(), ids=_ids(train))
        tc.log.info("trained %d epochs, %s", m.n_iter, m.timing)
        return {"model": self.part(tc, m, columns=list(train.x.columns))}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        p = cls.Params.model_validate(params)
        if p.reveal == "shared" and _serves_dealer(tc, p.provider):
            _run_dealer(tc, cls.alg)
            return None
        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        role = cls.alg.role(tc.role)(p)
        u = role.predict(tc.fed, cls.load_part(tc, model), data.values(), ids=_ids(data))
        if tc.role == "host":
            return None
        score = 1.0 / (1.0 + np.exp(-u)) if cls.task == "binary" else u
        return scores(data, score, cls.task)


@register
class SSLR(SSGLMComponent):
    """Two-party secret-shared logistic regression (binary labels 0/1 at the guest)."""

    algorithm = "ss_lr"


@register
class SSLinR(SSGLMComponent):
    """Two-party secret-shared linear regression."""

    algorithm = "ss_linr"


@register
class HeteroPearson(AlgorithmComponent):
    """Secure Pearson correlation and VIF across the guest's and the host's columns."""

    algorithm = "hetero_pearson"
    inputs = {"data": Slot("data")}

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        if _serves_dealer(tc, self.params.provider):
            _run_dealer(tc, self.alg)
            return {}
        if tc.role not in ("guest", "host"):
            return {}
        data: Table | None = inputs.get("data")
        if data is None:
            raise DataError(f"{self.name}: party {tc.party!r} needs its data")
        r = self.alg.role(tc.role)(self.params).run(tc.fed, data.values(), ids=_ids(data),
                                                    columns=list(data.x.columns))
        return {"model": self.part(tc, r)}
