"""``impute``, ``encode``, ``sample``: data preparation, each party on its own columns.

Thin wrappers of :mod:`atoll.ml.feature.prepare`. ``impute`` fills missing values (mean, median, most
frequent, constant) and optionally caps outliers at training quantiles; ``encode`` turns categorical columns
(numeric codes) into one-hot or ordinal columns. Both send nothing: each party fits on its ``train`` rows and
applies the same state to ``validate`` / ``test``; the state is the step's ``model`` output, applied again by
``atoll predict``. A column a party does not hold is ignored by that party; ``PARTY.COLUMN`` names the
column of that party only (when parties have columns of the same name).

``sample`` draws rows at the guest (a share, stratified by label, without replacement) and sends their ids
to the hosts, like ``split`` (hosts learn which aligned ids were drawn); ``atoll predict`` passes every row
through.
"""

from __future__ import annotations

from typing import Any, Callable

from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.errors import DataError
from atoll.jobs.artifacts import ids_to_wire
from atoll.jobs.components.split import ids_from_wire
from atoll.ml.feature.prepare import (
    EncodeParams,
    ImputeParams,
    SampleParams,
    apply_encode,
    apply_impute,
    fit_encode,
    fit_impute,
    sample_positions,
)

DATA_SLOTS = ("train", "validate", "test")


def own_columns(names: list[str] | None, tc: TaskContext) -> list[str] | None:
    """The column names of a parameter list that concern this party: bare names, and ``PARTY.COLUMN`` of its own."""
    if names is None:
        return None
    out = []
    for n in names:
        prefix, dot, rest = n.partition(".")
        if dot and prefix in tc.job.parties:
            if prefix == tc.party:
                out.append(rest)
        else:
            out.append(n)
    return out


def localised(params: Any, tc: TaskContext, *fields: str) -> Any:
    """``params`` with each list field of column names narrowed to this party's (see :func:`own_columns`)."""
    return params.model_copy(update={f: own_columns(getattr(params, f), tc) for f in fields})


class LocalTransform(Component):
    """A step each party fits on its own training rows (``fit_fn``) and applies to every data input
    (``apply_fn(x, state)``), again in ``atoll predict`` from the saved state."""

    inputs = {"train": Slot("data"), "validate": Slot("data", optional=True), "test": Slot("data", optional=True)}
    outputs = {"train": "data", "validate": "data", "test": "data", "model": "model"}
    fit_fn: Callable[..., dict[str, Any]]
    apply_fn: Callable[..., Any]

    def apply(self, state: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        apply = type(self).apply_fn
        return {k: None if inputs.get(k) is None else inputs[k].with_x(apply(inputs[k].x, state))
                for k in DATA_SLOTS}

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        train: Table | None = inputs.get("train")
        if train is None:
            return {}
        state = type(self).fit_fn(train.x, localised(self.params, tc, "columns"))
        tc.log.info("%s: %d columns", self.name, len(state["columns"]))
        out = self.apply(state, inputs)
        out["model"] = {"component": self.name, **state}
        return out

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        state = saved.get("model")
        return {} if state is None else self.apply(state, inputs)


@register
class Impute(LocalTransform):
    """Fill missing values (and cap outliers) per party on its own columns."""

    name = "impute"
    Params = ImputeParams
    fit_fn = staticmethod(fit_impute)
    apply_fn = staticmethod(apply_impute)


@register
class Encode(LocalTransform):
    """One-hot or ordinal encoding of categorical columns, per party on its own columns."""

    name = "encode"
    Params = EncodeParams
    fit_fn = staticmethod(fit_encode)
    apply_fn = staticmethod(apply_encode)


@register
class Sample(Component):
    """Random or stratified sampling of rows, the same rows at every party (the guest draws)."""

    name = "sample"
    inputs = {"data": Slot("data")}
    outputs = {"data": "data"}
    Params = SampleParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        table: Table | None = inputs.get("data")
        if tc.role not in ("guest", "host"):
            return {}
        if table is None:
            raise DataError(f"sample: party {tc.party!r} needs its data as input")
        if tc.role == "guest":
            pos = sample_positions(len(table), None if table.y is None else table.y.to_numpy(), self.params,
                                   tc.seed)
            tc.fed.send("host", "ids", ids_to_wire(table.ids[pos]))
            tc.log.info("sampled %d of %d rows", len(pos), len(table))
            return {"data": table.rows(pos)}
        ids = ids_from_wire(tc.fed.recv("guest", "ids"), table.ids)
        if ids.has_duplicates:
            raise DataError("sample: the guest's ids repeat; sampling draws each row at most once")
        return {"data": table.take(ids)}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        return {"data": inputs.get("data")}
