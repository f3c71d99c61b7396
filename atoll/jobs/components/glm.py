"""``hetero_lr``, ``hetero_linr``, ``hetero_poisson``: vertical linear models over Paillier.

Derived from the algorithm registry (:mod:`atoll.ml.registry`; the algorithms, their ONE
parameter model :class:`~atoll.ml.vertical._glm.GLMParams`, role classes, model parts and
twin are declared in :mod:`atoll.ml.vertical.hetero_lr` etc., whose docstrings give the
protocol and what each party sees): the guest runs ``...Guest.fit(ctx, x, y, ids=...)``,
each host ``...Host.fit(ctx, x, ids=...)``, the arbiter ``...Arbiter.fit(ctx)``.
Every party keeps only its own part of the model (its coefficients; the guest
also the intercept and loss curve; the arbiter its report). ``predict`` runs
the joint scoring of the same module: hosts send partial scores, the guest adds
them up. ``centralized_twin`` is the scikit-learn model of the same family and
penalty (``C = 1 / (alpha * n_rows)``), for ``--centralized-baseline``.

Exposure (``hetero_poisson``): name the column in the guest's data spec
(``data: {..., label: visits, exposure: years}``). The reader keeps it apart from
the features like the label (no step scales it), the guest trains with it
(``mean = exposure * exp(u)``) and ``predict`` returns the predicted counts
``exposure * exp(u)`` of the scored rows. It never leaves the guest.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import AlgorithmComponent, TaskContext, predicts, scores
from atoll.jobs.registry import register


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


def _exposure(table: Table) -> np.ndarray | None:
    return None if table.exposure is None else table.exposure.to_numpy(dtype=np.float64)


class GLMComponent(AlgorithmComponent):
    """The job step of a registered vertical GLM (``algorithm`` names it)."""

    family: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.alg is not None:
            cls.family = cls.alg.role("guest").family

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        super().check(job, spec, index, check_data)
        if not cls.family.uses_exposure:
            for party in job.parties_of("guest"):
                data = job.parties[party].data
                if data is not None and data.exposure is not None:
                    raise job.error(f"party {party!r}: data.exposure is used by hetero_poisson only, but "
                                    f"step {spec.id!r} is {cls.name}", "parties", party, "data", "exposure")

    @classmethod
    def _glm_params(cls, params: Any, seed: int) -> Any:
        """The step's parameters with ``random_state`` derived from the job's seed when unset."""
        return params if params.random_state is not None else params.model_copy(update={"random_state": seed})

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        params = self._glm_params(self.params, tc.seed)
        train: Table | None = inputs.get("train")
        fed = tc.counted("epoch", params.max_iter)  # progress per epoch in the runner's display
        if tc.role == "guest":
            if train is None or train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            m = self.alg.role("guest")(params).fit(fed, train.values(), train.y.to_numpy(dtype=np.float64),
                                                   exposure=_exposure(train), ids=_ids(train))
            tc.log.info("trained %d epochs (converged=%s), last loss %s", m.n_iter, m.converged,
                        m.loss_history[-1] if m.loss_history else "n/a")
            return {"model": self.part(tc, m, columns=list(train.x.columns),
                                       exposure=_exposure(train) is not None)}
        if tc.role == "host":
            if train is None:
                raise DataError(f"{self.name}: the host needs its training data")
            m = self.alg.role("host")(params).fit(fed, train.values(), ids=_ids(train))
            return {"model": self.part(tc, m, columns=list(train.x.columns))}
        if tc.role == "arbiter" and params.mode == "arbiter":
            return {"model": self.part(tc, self.alg.role("arbiter")(params).fit(fed))}
        return {}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        gp = cls._glm_params(cls.Params.model_validate(params), tc.seed)
        role = cls.alg.role(tc.role)(gp)
        if tc.role == "host":
            role.predict(tc.fed, cls.load_part(tc, model), data.values(), ids=_ids(data))
            return None
        exposure = _exposure(data)
        if model.get("exposure") and exposure is None:
            raise DataError(f"{cls.name} predict: the model was trained with an exposure column; the "
                            "guest's data needs it too (data.exposure)")
        u = role.predict(tc.fed, cls.load_part(tc, model), data.values(), ids=_ids(data))
        return scores(data, cls.family.mean(u, exposure), cls.task)


@register
class HeteroLR(GLMComponent):
    """Vertical logistic regression (binary labels 0/1 at the guest)."""

    algorithm = "hetero_lr"


@register
class HeteroLinR(GLMComponent):
    """Vertical linear regression."""

    algorithm = "hetero_linr"


@register
class HeteroPoisson(GLMComponent):
    """Vertical Poisson regression (counts at the guest)."""

    algorithm = "hetero_poisson"
