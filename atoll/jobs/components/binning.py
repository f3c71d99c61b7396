"""``hetero_binning``, ``feature_select``, ``woe_transform``: binning with WOE / IV, selection, WOE encoding.

Thin wrappers of :mod:`atoll.ml.feature.hetero_binning` and :mod:`atoll.ml.feature.selection` (see those
modules for the protocols and what each party sees):

* ``hetero_binning`` (input ``train``): every party bins its own columns; the guest gets WOE / IV of all of
  them (the host's under HE). Output ``model``: each party's bins; the guest's also holds every table
  (counts, WOE, IV; host columns named ``PARTY.COLUMN``), a host's its own WOE with ``share_woe``.
* ``feature_select`` (inputs ``binning`` = a binning model, ``pearson`` = a ``hetero_pearson`` model for
  ``max_vif``, ``importance`` = a ``secureboost`` model for ``min_importance``, all optional; ``train``,
  ``validate``, ``test``):
  every party keeps the columns the criteria keep and drops the others from each input. Output ``model``:
  each party's kept columns (applied again by ``atoll predict``).
* ``woe_transform`` (inputs ``binning``, ``train``, ``validate``, ``test``): each party replaces each of its
  binned columns by the WOE of its bin (one column per class, ``COLUMN_woe_K``, for multi-class labels).
  A host needs ``share_woe: true`` in the binning step. Nothing is sent.

Fitted state is each step's ``model`` output; in ``atoll predict`` the binning is not fitted again, the
selection and the WOE of the training run are applied to the new rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.components.prepare import LocalTransform, localised
from atoll.jobs.registry import register
from atoll.ml.feature.binning import BinningParams
from atoll.ml.feature.selection import SelectionParams

DATA_SLOTS = ("train", "validate", "test")


def _needs_guest_and_host(job: Any, spec: Any, index: int, name: str) -> None:
    if not job.parties_of("guest") or not job.parties_of("host"):
        raise job.error(f"{spec.id} ({name}) needs a guest and at least one host", "pipeline", index, "component")


@register
class HeteroBinning(Component):
    """Bins of every party's columns and WOE / IV at the guest (host columns under HE)."""

    name = "hetero_binning"
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = BinningParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        _needs_guest_and_host(job, spec, index, cls.name)

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.feature.hetero_binning import HeteroBinningGuest, HeteroBinningHost, model_to_wire

        train = _train_of(tc, inputs, self.name)
        if train is None:
            return {}
        cols = list(train.x.columns)
        if tc.role == "guest":
            if train.y is None:
                raise DataError(f"{self.name}: the guest needs labelled training data")
            m = HeteroBinningGuest(localised(self.params, tc, "categorical")).fit(
                tc.fed, train.values(), train.y.to_numpy(), cols)
            best = sorted(m.tables.items(), key=lambda kv: -kv[1]["iv_rank"])[:5]
            tc.log.info("binned %d columns; top IV: %s", len(m.tables),
                        ", ".join(f"{k} {t['iv_rank']:.3f}" for k, t in best))
        else:
            m = HeteroBinningHost(localised(self.params, tc, "categorical")).fit(tc.fed, train.values(), cols)
            tc.log.info("binned %d own columns", len(m.bins))
        model = {"component": self.name, **model_to_wire(m)}
        if tc.role == "guest":
            model["report"] = binning_report(m)
        return {"model": model}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        return {"model": saved.get("model")} if saved.get("model") is not None else {}


def binning_report(m: Any) -> dict[str, Any]:
    """The guest's IV ranking and WOE tables, for the run report."""
    ranking = sorted(((k, t["iv_rank"]) for k, t in m.tables.items()), key=lambda kv: -kv[1])
    own = {b.name: b for b in m.bins}
    tables = {}
    for k, t in m.tables.items():
        labels = own[k].labels() if k in own else [f"bin {i}" for i in range(len(t["woe"]))]
        counts = np.asarray(t["counts"])
        tables[k] = {"bins": labels, "counts": counts.sum(axis=1).tolist(),
                     "events": counts[:, 1].tolist() if counts.shape[1] == 2 else None,
                     "woe": np.asarray(t["woe"])[:, 0].tolist(), "iv": float(t["iv_rank"])}
    return {"kind": "binning", "iv_ranking": [[k, float(v)] for k, v in ranking], "tables": tables}


def _train_of(tc: TaskContext, inputs: dict[str, Any], name: str) -> Table | None:
    """A guest's or host's training rows (None at other roles)."""
    if tc.role not in ("guest", "host"):
        return None
    if inputs.get("train") is None:
        raise DataError(f"{name}: party {tc.party!r} needs its training data")
    return inputs["train"]


def own_vif(pearson: dict[str, Any] | None) -> dict[str, float] | None:
    """This party's columns' VIFs from its ``hetero_pearson`` model part (None without one)."""
    if pearson is None:
        return None
    if pearson.get("vif") is None:
        raise DataError("feature_select: the hetero_pearson step computed no VIF across the parties; set its "
                        "exchange_local: true")
    a, b = pearson["own"]
    return {str(c): float(v) for c, v in zip(pearson["columns"][a:b], np.asarray(pearson["vif"])[a:b])}


def select_columns(x: pd.DataFrame, state: dict[str, Any]) -> pd.DataFrame:
    cols = list(state["columns"])
    missing = [c for c in cols if c not in x.columns]
    if missing:
        raise DataError(f"feature_select: columns {missing} are missing from the data")
    return x[cols]


@register
class FeatureSelect(LocalTransform):
    """Selection by IV / top-k / missing rate / distinct values / variance / lists; each party its own columns."""

    name = "feature_select"
    inputs = {"binning": Slot("model", optional=True), "pearson": Slot("model", optional=True),
              "importance": Slot("model", optional=True),
              "train": Slot("data"), "validate": Slot("data", optional=True), "test": Slot("data", optional=True)}
    outputs = {"train": "data", "validate": "data", "test": "data", "model": "model"}
    Params = SelectionParams
    apply_fn = staticmethod(select_columns)

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        _needs_guest_and_host(job, spec, index, cls.name)
        p = cls.Params.model_validate(spec.params)
        if p.min_importance is not None and "importance" not in spec.inputs:
            raise job.error(f"{spec.id}: min_importance needs inputs: {{importance: SECUREBOOST_STEP.model}}",
                            "pipeline", index, "inputs")
        if p.max_vif is not None and "pearson" not in spec.inputs:
            raise job.error(f"{spec.id}: max_vif needs inputs: {{pearson: PEARSON_STEP.model}} (a hetero_pearson "
                            "step)", "pipeline", index, "inputs")
        if (p.iv_threshold is not None or p.top_k is not None) and "binning" not in spec.inputs:
            raise job.error(f"{spec.id}: selection by IV (iv_threshold, top_k) needs inputs: "
                            "{binning: BINNING_STEP.model} (or set iv_threshold: null)",
                            "pipeline", index, "inputs")

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.feature.selection import HeteroSelectionGuest, HeteroSelectionHost

        train = _train_of(tc, inputs, self.name)
        if train is None:
            return {}
        cols = list(train.x.columns)
        binning = inputs.get("binning")
        vif = own_vif(inputs.get("pearson"))
        boost = inputs.get("importance")
        if boost is not None and list(boost.get("columns", [])) != cols:
            raise DataError("feature_select: the importance model was trained on other columns than this "
                            "step's train input; select from the secureboost step's own training data")
        if tc.role == "guest":
            tables = None if binning is None else binning["tables"]
            hosts = None if binning is None else binning["hosts"]
            keep_all = HeteroSelectionGuest(localised(self.params, tc, "keep", "drop")).fit(
                tc.fed, train.values(), cols, tables, hosts, vif,
                None if boost is None else {q: np.asarray(g) for q, g in boost["feature_gain"].items()})
            keep = keep_all[tc.party]
            dropped = {p: int((~k).sum()) for p, k in keep_all.items()}
            tc.log.info("kept %d of %d columns (dropped per party: %s)", sum(int(k.sum()) for k in keep_all.values()),
                        sum(len(k) for k in keep_all.values()), dropped)
            names = {tc.party: cols, **{h: [f"{h}.{c}" for c in v] for h, v in (hosts or {}).items()}}
            report = {"kind": "selection", "kept": [n for p, k in keep_all.items() if p in names
                                                    for n, kk in zip(names[p], k) if kk]}
        else:
            keep = HeteroSelectionHost(localised(self.params, tc, "keep", "drop")).fit(
                tc.fed, train.values(), cols, vif)
            tc.log.info("kept %d of my %d columns", int(keep.sum()), len(cols))
            report = {"kind": "selection", "kept": [c for c, k in zip(cols, keep) if k]}
        kept = [c for c, k in zip(cols, keep) if k]
        state = {"component": self.name, "columns": kept, "dropped": [c for c, k in zip(cols, keep) if not k],
                 "report": report}
        return {**self.apply(state, inputs), "model": state}


class WoeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] | None = None  # default: every binned column of the party present in the data


def woe_encode(table: Table | None, binning: dict[str, Any], columns: list[str] | None) -> Table | None:
    """Each binned column replaced by the WOE of its bin (one column per class for multi-class labels)."""
    from atoll.ml.feature.hetero_binning import model_from_wire

    if table is None:
        return None
    m = model_from_wire(binning)
    bins = {b.name: b for b in m.bins}
    names = [c for c in table.x.columns if c in bins and (columns is None or c in columns)]
    if names and not all(c in m.tables for c in names):
        raise DataError("woe_transform: this host has no WOE of its bins; set share_woe: true in the binning "
                        "step (the host then learns the WOE of its own bins only)")
    parts = {}
    for c in table.x.columns:
        if c not in names:
            parts[c] = table.x[c].to_numpy(np.float64)
            continue
        woe = np.asarray(m.tables[c]["woe"], np.float64)
        codes = bins[c].codes(table.x[c].to_numpy(np.float64))
        if woe.shape[1] == 1:
            parts[c] = woe[codes, 0]
        else:
            for k in range(woe.shape[1]):
                parts[f"{c}_woe_{k}"] = woe[codes, k]
    return table.with_x(pd.DataFrame(parts, index=table.x.index))


@register
class WoeTransform(Component):
    """Replace binned columns by their WOE (each party its own; a host needs ``share_woe``)."""

    name = "woe_transform"
    inputs = {"binning": Slot("model"), "train": Slot("data"),
              "validate": Slot("data", optional=True), "test": Slot("data", optional=True)}
    outputs = {"train": "data", "validate": "data", "test": "data", "model": "model"}
    Params = WoeParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        binning = inputs.get("binning")
        if binning is None or inputs.get("train") is None:
            return {}
        cols = localised(self.params, tc, "columns").columns
        out: dict[str, Any] = {k: woe_encode(inputs.get(k), binning, cols) for k in DATA_SLOTS}
        out["model"] = {"component": self.name, "columns": list(out["train"].x.columns)}
        return out

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        out = self.run(tc, inputs)
        out.pop("model", None)
        return out
