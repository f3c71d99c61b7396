"""``--centralized-baseline``: the plaintext twin of each federated model (simulation only).

For each ``evaluate`` step fed by ``predict`` of a model step whose component
offers ``centralized_twin``, this joins what the parties fed the model step
(vertical: the parties' columns side by side, on the guest's ids; horizontal:
every client's rows stacked), trains the twin (e.g. scikit-learn
``LogisticRegression`` for ``hetero_lr``) on those training rows, scores it on
exactly the rows the federated ``predict`` scored, and reports each metric as
V_FED (federated), V_SUM (centralised) and their difference. It reads every party's
outputs from the run store, which only a local simulation can do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atoll.jobs import registry
from atoll.jobs.artifacts import Table
from atoll.jobs.component import step_seed
from atoll.jobs.components.evaluate import EvaluateParams, compute_metrics
from atoll.jobs.spec import JobSpec
from atoll.jobs.store import RunStore


def _load(store: RunStore, party: str, ref: str) -> Any:
    step, _, name = ref.partition(".")
    saved = store.party(party).outputs(step)
    return saved[name] if name in saved else None


def _joined(job: JobSpec, store: RunStore, ref: str, label_party: str, layout: str,
            ids: pd.Index | None = None) -> Table:
    if layout == "vertical":
        tables = {p: _load(store, p, ref) for p in job.parties}
        base = tables[label_party]
        ids = base.ids if ids is None else ids
        cols = []
        for p, t in tables.items():
            if t is not None:
                x = t.x.loc[ids]
                x.columns = [f"{p}.{c}" for c in x.columns]
                cols.append(x)
        return Table(pd.concat(cols, axis=1), base.y.loc[ids],
                     None if base.exposure is None else base.exposure.loc[ids])
    raise ValueError(layout)


def _stacked(job: JobSpec, store: RunStore, ref: str) -> Table:
    tables = [t for t in (_load(store, p, ref) for p in job.parties) if t is not None and t.y is not None]
    return Table(pd.concat([t.x for t in tables]).reset_index(drop=True),
                 pd.concat([t.y for t in tables]).reset_index(drop=True))


def centralized_baseline(job: JobSpec, store: RunStore) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for ev in job.pipeline:
        if ev.component != "evaluate":
            continue
        pred = job.component(ev.inputs["scores"].partition(".")[0])
        if pred.component != "predict":
            continue
        model_step = job.component(pred.inputs["model"].partition(".")[0])
        cls = registry.get(model_step.component)
        twin_fn = getattr(cls, "centralized_twin", None)
        train_ref = next((model_step.inputs[k] for k in ("train", "data") if k in model_step.inputs), None)
        if twin_fn is None or train_ref is None:
            continue
        params = cls.Params.model_validate(model_step.params)
        threshold = EvaluateParams.model_validate(ev.params).threshold  # the cut-off the federated side used
        for party in job.parties:
            fed = _load(store, party, f"{ev.id}.metrics")
            if fed is None:
                continue
            task = fed["task"]
            test_scores = _load(store, party, f"{pred.id}.scores")
            if cls.layout == "vertical":
                train = _joined(job, store, train_ref, party, "vertical")
                test = _joined(job, store, pred.inputs["data"], party, "vertical",
                               ids=pd.Index(np.asarray(test_scores["ids"])))
            else:
                train = _stacked(job, store, train_ref)
                test = _load(store, party, pred.inputs["data"])
            if hasattr(cls, "twin_params"):  # e.g. the rounds a boosted model kept after early stopping
                params = cls.twin_params(params, _load(store, party, f"{model_step.id}.model"))
            twin, score_fn = twin_fn(params, step_seed(job.seed, model_step.id), task)
            if train.exposure is not None:  # Poisson with exposure: the twin takes it too
                twin.fit(train.values(), train.y.to_numpy(), exposure=train.exposure.to_numpy())
                score = score_fn(twin, test.values(), exposure=test.exposure.to_numpy())
            else:
                twin.fit(train.values(), train.y.to_numpy())
                score = score_fn(twin, test.values())
            central, _ = compute_metrics(task, test.y.to_numpy(), score, threshold)
            rows.append({"evaluate_step": ev.id, "model_step": model_step.id, "party": party,
                         "component": model_step.component, "task": task,
                         "twin": getattr(twin, "name", type(twin).__name__),
                         "n_train": len(train), "n_test": len(test),
                         "metrics": {k: {"V_FED": fed["metrics"][k], "V_SUM": v,
                                         "diff": fed["metrics"][k] - v}
                                     for k, v in central.items() if k in fed["metrics"]}})
    return rows
