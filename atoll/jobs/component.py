"""The component contract: declared inputs/outputs, validated parameters, per-role code.

A component is a small class::

    @register
    class Scale(Component):
        name = "scale"
        inputs = {"train": Slot("data"), "test": Slot("data", optional=True)}
        outputs = {"train": "data", "test": "data", "model": "model"}
        Params = ScaleParams                      # a pydantic model, checked at load time

        def run(self, tc, inputs):                # or run_guest / run_host / run_arbiter ...
            ...
            return {"train": ..., "test": ..., "model": ...}

``run`` is called once per party with a :class:`TaskContext` (its federation
context for this step, its data spec, seed, folder, logger) and the inputs this
party holds (a party that does not hold an input gets ``None``). It returns this
party's outputs (missing ones count as ``None``). The default ``run`` dispatches
to ``run_<role>`` and returns nothing for roles without one.

Optional hooks: ``check`` (static checks at load time, may read file headers),
``infer`` (the step in ``atoll predict``: apply fitted state to new data),
``predict`` on model-producing components (used by the ``predict`` step; start it
with :func:`predicts` and build its result with :func:`scores`), and
``centralized_twin`` (the plaintext model ``--centralized-baseline`` trains).

An algorithm's component derives from :class:`AlgorithmComponent`: its name, parameters,
layout, checks, model parts and twin come from the algorithm registry (:mod:`atoll.ml.registry`),
so a parameter is declared once, in the algorithm's module.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from pydantic import BaseModel, ConfigDict

from atoll.federation import Context

if TYPE_CHECKING:
    import numpy as np

    from atoll.jobs.artifacts import Table
    from atoll.jobs.spec import ComponentSpec, DataSpec, JobSpec


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Slot:
    """An input of a component: the kind it accepts and whether it may be left out."""

    kind: str
    optional: bool = False


@dataclass
class TaskContext:
    """What one party's code sees while running one step of a job."""

    fed: "Context"
    party: str
    role: str
    step: str
    component: str
    job: "JobSpec"
    dir: Path
    seed: int
    log: logging.Logger
    mode: str = "train"  # or "infer" (atoll predict)
    progress_fn: Callable[[float, str], None] | None = field(default=None, repr=False)

    @property
    def data_spec(self) -> "DataSpec | None":
        return self.job.parties[self.party].data

    def parties_of(self, role: str) -> list[str]:
        return self.fed.parties_of(role)

    def progress(self, fraction: float, note: str = "") -> None:
        """Report progress of this step (0..1) to the runner's display."""
        if self.progress_fn is not None:
            self.progress_fn(fraction, note)

    def counted(self, scope: str, total: int) -> "Context":
        """This step's federation context, reporting progress as the protocol counts through
        ``scope`` (e.g. ``"epoch"`` of a GLM, ``"round"`` of SecureBoost): entering
        ``scope=i`` reports ``i / total`` done. Messages and addresses are unchanged."""
        return _CountingContext(self.fed, scope, max(int(total), 1), self.progress)


class _CountingContext(Context):
    """A step's context that reports progress whenever the protocol enters ``scope=i`` of one name."""

    def __init__(self, base: Context, counted: str, total: int, report: Callable[[float, str], None]):
        super().__init__(base.party, base.parties, base.transport, base.job_id, base.task,
                         base.timeout, base.max_bytes)
        self._counted, self._total, self._report = counted, total, report

    @contextmanager
    def scope(self, name: str, value: Any = None) -> Iterator[Context]:
        with super().scope(name, value) as ctx:
            if name == self._counted and isinstance(value, int) and value < self._total:
                self._report(value / self._total, f"{name} {value + 1}/{self._total}")
            yield ctx


def step_seed(job_seed: int, step: str) -> int:
    """A per-step seed derived from the job's seed (same job + seed -> same seeds)."""
    h = hashlib.sha256(f"{job_seed}/{step}".encode()).digest()
    return int.from_bytes(h[:4], "little")


class Component:
    """Base class of every pipeline step (see the module docstring)."""

    name: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Slot]] = {}
    outputs: ClassVar[dict[str, str]] = {}
    Params: ClassVar[type[BaseModel]] = NoParams
    #: for model-producing components: "vertical" or "horizontal" (baseline joins data accordingly)
    layout: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any] | BaseModel | None = None):
        self.params = (params if isinstance(params, BaseModel)
                       else self.Params.model_validate(params or {}))

    # -------------------------------------------------------------- load-time checks
    @classmethod
    def check(cls, job: "JobSpec", spec: "ComponentSpec", index: int, check_data: bool) -> None:
        """Static checks against the whole job (raise ``job.error(...)``)."""

    # -------------------------------------------------------------- running
    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(self, f"run_{tc.role}", None)
        if fn is None:
            return {}
        return fn(tc, inputs) or {}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        """The step in batch prediction; ``saved`` holds this party's outputs from training."""
        from atoll.errors import ConfigError

        raise ConfigError(f"component {self.name!r} cannot be replayed by 'atoll predict'")


# ------------------------------------------------------------------ helpers of predict hooks
def predicts(name: str, tc: TaskContext, model: dict | None, data: "Table | None",
             roles: tuple[str, ...]) -> bool:
    """Whether this party takes part in scoring (its role is in ``roles``), after checking that
    it has its model part and data with the columns the model was trained on."""
    from atoll.errors import DataError

    if tc.role not in roles:
        return False
    if model is None or data is None:
        raise DataError(f"{name} predict: party {tc.party!r} lacks its model part or its data")
    if list(data.x.columns) != list(model["columns"]):
        raise DataError(f"{name} predict: columns {list(data.x.columns)} differ from the training "
                        f"columns {list(model['columns'])}")
    return True


def scores(data: "Table", score: "np.ndarray", task: str) -> dict[str, Any]:
    """The ``scores`` output of a predict hook: ids, scores, the label if the data has one, task.

    ``score``: probabilities of class 1 (binary), one row of class probabilities per sample
    (multiclass), or predictions (regression, poisson).
    """
    import numpy as np

    from atoll.jobs.artifacts import ids_to_wire

    return {"ids": ids_to_wire(data.ids), "score": np.asarray(score, dtype=np.float64),
            "label": None if data.y is None else data.y.to_numpy(np.float64), "task": task}


class AlgorithmComponent(Component):
    """A component derived from a registered algorithm (:mod:`atoll.ml.registry`)::

        @register
        class HeteroLR(GLMComponent):
            algorithm = "hetero_lr"

    takes from the registration its ``name``, ``Params`` (the algorithm's ONE parameter model),
    ``layout``, ``task``, the ``check`` hook (run at load time with the job's parties by
    role), the model-part serialisers (:meth:`part`, :meth:`load_part`) and
    ``centralized_twin``. The subclass writes only how a role feeds its data to the
    algorithm's role classes (``run``) and how saved parts score new rows (``predict``).
    """

    algorithm: ClassVar[str] = ""
    #: the registered algorithm (set from ``algorithm`` when the class is made)
    alg: ClassVar[Any] = None
    task: ClassVar[str] = ""
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("algorithm"):
            from atoll.ml import registry as algorithms

            alg = algorithms.get(cls.algorithm)
            cls.alg, cls.name, cls.Params, cls.layout = alg, alg.name, alg.params, alg.layout
            cls.task = alg.task if isinstance(alg.task, str) else ""
            if alg.twin is not None and "centralized_twin" not in cls.__dict__:
                cls.centralized_twin = staticmethod(alg.twin)
            if not cls.__doc__:
                cls.__doc__ = alg.summary

    @classmethod
    def check(cls, job: "JobSpec", spec: "ComponentSpec", index: int, check_data: bool) -> None:
        from atoll.errors import ConfigError

        if cls.alg.check is None:
            return
        params = cls.Params.model_validate(spec.params)
        parties = {role: job.parties_of(role) for role in {p.role for p in job.parties.values()}}
        try:
            cls.alg.check(params, parties)
        except ConfigError as e:
            field = getattr(e, "field", None)
            if field:  # a parameter at fault
                raise job.error(f"{spec.id}: {e}", "pipeline", index, "params", field) from None
            raise job.error(f"{spec.id} ({cls.name}) {e}", "pipeline", index, "component") from None

    def part(self, tc: TaskContext, obj: Any, **extra: Any) -> dict[str, Any]:
        """This party's ``model`` output: its role's model part as wire types, plus ``extra``."""
        return {"component": self.name, "role": tc.role, **self.alg.save(tc.role, obj), **extra}

    @classmethod
    def load_part(cls, tc: TaskContext, model: dict[str, Any]) -> Any:
        return cls.alg.load(tc.role, model)
