"""``hetero_lr``, ``hetero_linr``, ``hetero_poisson``: vertical linear models over Paillier.

Each wraps the role classes of its algorithm module
(:mod:`atoll.ml.vertical.hetero_lr` etc.; see their docstrings for the protocol
and what each party sees): the guest runs ``...Guest.fit(ctx, x, y, ids=...)``,
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

import importlib
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext, predicts, scores
from atoll.jobs.registry import register


class GLMStepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    penalty: Literal["l1", "l2"] | None = "l2"
    alpha: float = Field(0.0, ge=0.0)
    max_iter: int = Field(30, ge=1)
    tol: float = Field(1e-4, ge=0.0)
    early_stopping: Literal["weight_diff", "loss", "none"] = "weight_diff"
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = Field(0.05, gt=0.0)
    decay: float = Field(0.0, ge=0.0)
    decay_sqrt: bool = False
    batch_size: int | None = None
    fit_intercept: bool = True
    compute_loss: bool = True
    mode: Literal["arbiter", "two_party"] = "arbiter"
    approximation: Literal["taylor", "guest_taylor"] = "taylor"  # logistic only, see GLMParams
    precondition: bool = False  # each party whitens its own features locally (faster convergence)
    precompute: bool = False    # offline/online split of the encryption randomness per epoch
    scheme: Literal["paillier", "ou"] = "paillier"
    key_bits: int = Field(2048, ge=512)
    precision_bits: int | None = None
    mul_precision_bits: int | None = None
    random_state: int | None = None  # default: derived from the job's seed
    n_jobs: int = Field(1, ge=1)


def _ids(table: Table) -> list[str]:
    return [str(i) for i in table.ids]


class _GLMComponent(Component):
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = GLMStepParams
    layout = "vertical"
    module: ClassVar[str] = ""
    prefix: ClassVar[str] = ""
    family: ClassVar[str] = ""
    task: ClassVar[str] = ""

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        p = cls.Params.model_validate(spec.params)
        if not job.parties_of("guest") or not job.parties_of("host"):
            raise job.error(f"{spec.id} ({cls.name}) needs a guest and at least one host",
                            "pipeline", index, "component")
        if p.mode == "arbiter" and len(job.parties_of("arbiter")) != 1:
            raise job.error(f"{spec.id} ({cls.name}) in mode 'arbiter' needs one party with role arbiter "
                            "(or set params.mode: two_party)", "pipeline", index, "params")
        if p.mode == "two_party" and len(job.parties_of("host")) != 1:
            raise job.error(f"{spec.id} ({cls.name}) in mode 'two_party' takes exactly one host",
                            "pipeline", index, "params", "mode")
        if cls.family != "poisson":
            for party in job.parties_of("guest"):
                data = job.parties[party].data
                if data is not None and data.exposure is not None:
                    raise job.error(f"party {party!r}: data.exposure is used by hetero_poisson only, but "
                                    f"step {spec.id!r} is {cls.name}", "parties", party, "data", "exposure")

    @classmethod
    def _roles(cls) -> Any:
        mod = importlib.import_module(cls.module)
        return (getattr(mod, f"{cls.prefix}Guest"), getattr(mod, f"{cls.prefix}Host"),
                getattr(mod, f"{cls.prefix}Arbiter"))

    @classmethod
    def _glm_params(cls, params: GLMStepParams, seed: int) -> Any:
        from atoll.ml.optim import OptimizerParams
        from atoll.ml.vertical._glm import GLMParams

        p = params
        opt = OptimizerParams(optimizer=p.optimizer, learning_rate=p.learning_rate, decay=p.decay,
                              decay_sqrt=p.decay_sqrt, penalty=p.penalty, alpha=p.alpha)
        return GLMParams(family=cls.family, mode=p.mode, max_iter=p.max_iter, batch_size=p.batch_size,
                         tol=p.tol, early_stopping=p.early_stopping, compute_loss=p.compute_loss,
                         fit_intercept=p.fit_intercept, approximation=p.approximation,
                         precondition=p.precondition, precompute=p.precompute, optimizer=opt,
                         scheme=p.scheme, key_bits=p.key_bits,
                         precision_bits=p.precision_bits, mul_precision_bits=p.mul_precision_bits,
                         random_state=p.random_state if p.random_state is not None else seed,
                         n_jobs=p.n_jobs).validate()

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        guest_cls, host_cls, arbiter_cls = self._roles()
        params = self._glm_params(self.params, tc.seed)
        train: Table | None = inputs.get("train")
        fed = tc.counted("epoch", params.max_iter)  # progress per epoch in the runner's display
        if tc.role == "guest":
            if train is None or train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            m = guest_cls(params).fit(fed, train.values(), train.y.to_numpy(dtype=np.float64),
                                      exposure=_exposure(train), ids=_ids(train))
            tc.log.info("trained %d epochs (converged=%s), last loss %s", m.n_iter, m.converged,
                        m.loss_history[-1] if m.loss_history else "n/a")
            return {"model": {"component": self.name, "role": "guest", "family": m.family,
                              "coef": np.asarray(m.coef), "intercept": float(m.intercept),
                              "n_iter": int(m.n_iter), "converged": bool(m.converged),
                              "columns": list(train.x.columns), "exposure": _exposure(train) is not None,
                              "history": {"loss": [float(v) for v in m.loss_history]}}}
        if tc.role == "host":
            if train is None:
                raise DataError(f"{self.name}: the host needs its training data")
            m = host_cls(params).fit(fed, train.values(), ids=_ids(train))
            return {"model": {"component": self.name, "role": "host", "family": m.family,
                              "coef": np.asarray(m.coef), "offset": float(m.offset), "n_iter": int(m.n_iter),
                              "converged": bool(m.converged), "columns": list(train.x.columns)}}
        if tc.role == "arbiter" and self.params.mode == "arbiter":
            r = arbiter_cls(params).fit(fed)
            return {"model": {"component": self.name, "role": "arbiter", "n_iter": int(r.n_iter),
                              "converged": bool(r.converged),
                              "loss_history": [float(v) for v in r.loss_history]}}
        return {}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        from atoll.ml.vertical._glm import GuestModel, HostModel, mean_function

        if not predicts(cls.name, tc, model, data, ("guest", "host")):
            return None
        guest_cls, host_cls, _ = cls._roles()
        gp = cls._glm_params(cls.Params.model_validate(params), tc.seed)
        if tc.role == "host":
            hm = HostModel(model["family"], np.asarray(model["coef"]), model["n_iter"], model["converged"],
                           float(model.get("offset", 0.0)))
            host_cls(gp).predict(tc.fed, hm, data.values(), ids=_ids(data))
            return None
        gm = GuestModel(model["family"], np.asarray(model["coef"]), model["intercept"], model["n_iter"],
                        model["converged"], list(model["history"]["loss"]))
        exposure = _exposure(data)
        if model.get("exposure") and exposure is None:
            raise DataError(f"{cls.name} predict: the model was trained with an exposure column; the "
                            "guest's data needs it too (data.exposure)")
        u = guest_cls(gp).predict(tc.fed, gm, data.values(), ids=_ids(data))
        return scores(data, mean_function(cls.family, u, exposure), cls.task)


def _exposure(table: Table) -> np.ndarray | None:
    return None if table.exposure is None else table.exposure.to_numpy(dtype=np.float64)


class _Twin:
    """A scikit-learn model whose penalty is set from the number of training rows at fit."""

    def __init__(self, family: str, params: GLMStepParams, seed: int):
        self.family, self.params, self.seed = family, params, seed

    def fit(self, x: np.ndarray, y: np.ndarray, exposure: np.ndarray | None = None) -> "_Twin":
        from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge

        p, n = self.params, len(y)
        if self.family == "logistic":
            c = 1.0 / (p.alpha * n) if p.alpha > 0 and p.penalty else 1e12
            solver = "liblinear" if p.penalty == "l1" and p.alpha > 0 else "lbfgs"
            kw = {"l1_ratio": 1.0} if p.penalty == "l1" and p.alpha > 0 else {}
            self.model = LogisticRegression(C=c, solver=solver, max_iter=5000, random_state=self.seed,
                                            fit_intercept=p.fit_intercept, **kw)
        elif self.family == "linear":
            self.model = (Ridge(alpha=p.alpha * n, fit_intercept=p.fit_intercept) if p.alpha > 0
                          else LinearRegression(fit_intercept=p.fit_intercept))
        else:
            self.model = PoissonRegressor(alpha=p.alpha, fit_intercept=p.fit_intercept, max_iter=1000)
        if exposure is not None:
            # Poisson with exposure e (log link, offset log e) has the optimum of a Poisson fit to
            # the rates y / e with sample weights e
            self.model.fit(x, y / exposure, sample_weight=exposure)
        else:
            self.model.fit(x, y)
        self.name = type(self.model).__name__
        return self

    def score(self, x: np.ndarray, exposure: np.ndarray | None = None) -> np.ndarray:
        if self.family == "logistic":
            return self.model.predict_proba(x)[:, 1]
        return self.model.predict(x) * (1.0 if exposure is None else exposure)


def _twin(cls: type[_GLMComponent]) -> Any:
    def centralized_twin(params: GLMStepParams, seed: int, task: str) -> tuple[Any, Any]:
        return _Twin(cls.family, params, seed), lambda m, x, **kw: m.score(x, **kw)
    return centralized_twin


@register
class HeteroLR(_GLMComponent):
    """Vertical logistic regression (binary labels 0/1 at the guest)."""

    name = "hetero_lr"
    module = "atoll.ml.vertical.hetero_lr"
    prefix = "HeteroLR"
    family = "logistic"
    task = "binary"


@register
class HeteroLinR(_GLMComponent):
    """Vertical linear regression."""

    name = "hetero_linr"
    module = "atoll.ml.vertical.hetero_linr"
    prefix = "HeteroLinR"
    family = "linear"
    task = "regression"


@register
class HeteroPoisson(_GLMComponent):
    """Vertical Poisson regression (counts at the guest)."""

    name = "hetero_poisson"
    module = "atoll.ml.vertical.hetero_poisson"
    prefix = "HeteroPoisson"
    family = "poisson"
    task = "poisson"


for _c in (HeteroLR, HeteroLinR, HeteroPoisson):
    _c.centralized_twin = staticmethod(_twin(_c))
