"""``psi``: align the guest's and hosts' rows by private set intersection.

Wraps :func:`atoll.secure.psi.run_psi` (``protocol: ecdh`` or ``kkrt``; see
:mod:`atoll.secure.psi` and :mod:`atoll.secure.psi_kkrt` for the protocol
steps and what each party sees). Each guest/host keeps the rows whose
id every party holds, in one order common to all parties; the arbiter takes no
part. The step logs the sizes it saw.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atoll.errors import ConfigError, DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register


class PsiStepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: str = "ecdh"           # "ecdh" (X25519) or "kkrt" (OT extension)
    duplicates: Literal["error", "drop"] = "error"
    strip: bool = True
    batch_size: int = Field(65536, ge=1)
    workers: int | None = Field(None, ge=1)

    @field_validator("protocol")
    @classmethod
    def _known(cls, v: str) -> str:
        from atoll.secure.psi import protocol_roles

        protocol_roles(v)  # ConfigError naming the available protocols
        return v


@register
class Psi(Component):
    name = "psi"
    inputs = {"data": Slot("data")}
    outputs = {"data": "data"}
    Params = PsiStepParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        if not job.parties_of("guest") or not job.parties_of("host"):
            raise job.error(f"{spec.id} (psi) aligns a guest with hosts: the job needs a party with "
                            "role guest and at least one with role host", "pipeline", index, "component")

    def _align(self, tc: TaskContext, table: Table | None) -> dict[str, Any]:
        if tc.role not in ("guest", "host"):
            return {}
        if table is None:
            raise DataError(f"psi: party {tc.party!r} has no data to align")
        from atoll.secure.psi import PsiParams, run_psi

        p = self.params
        res = run_psi(tc.fed, table.ids, PsiParams(protocol=p.protocol, result_to="both",
                                                   duplicates=p.duplicates, strip=p.strip,
                                                   batch_size=p.batch_size, workers=p.workers,
                                                   progress=False))
        if res.positions is None:
            raise ConfigError("psi: this party did not learn its aligned rows")
        if res.size == 0:
            raise DataError(f"psi: no id in common between the parties ({tc.party} has {len(table)} ids); "
                            "check that every party uses the same id column and format")
        tc.log.info("psi: %d of my %d ids are held by every party", res.size, len(table))
        return {"data": table.rows(res.positions)}

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        return self._align(tc, inputs.get("data"))

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        return self._align(tc, inputs.get("data"))
