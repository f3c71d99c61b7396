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
``predict`` on model-producing components (used by the ``predict`` step), and
``centralized_twin`` (the plaintext model ``--centralized-baseline`` trains).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from atoll.federation import Context
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
