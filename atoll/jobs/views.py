"""Views of a run shared by the static report (:mod:`atoll.jobs.report`, ``atoll run``'s summary)
and the node's board (:mod:`atoll.board.views`): pure functions of what a party kept, so the
report, the board and the command's output cannot disagree.

* :func:`model_summary`: one party's own model part as a person reads it (facts, the weight of
  each of its own columns, a convergence warning);
* :func:`alignment`: how many rows each party kept at each ``psi`` step, and a warning when some
  had no match at the partners.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: the components whose weights are ``[coef, intercept]`` of a linear model over the client's columns
_HOMO_LINEAR = ("homo_lr", "homo_linr")


def _floats(v: Any) -> list[float] | None:
    try:
        return [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        return None


def _homo_linear(model: Mapping[str, Any], n_cols: int) -> tuple[list[float], float] | None:
    """A horizontal linear model's coefficients and intercept; for the two-class softmax of homo LR,
    the log-odds of class 1 against class 0 (``w1 - w0``), which is what a binary LR coefficient is."""
    w = model.get("weights")
    if model.get("component") not in _HOMO_LINEAR or not isinstance(w, list) or len(w) != 2:
        return None
    try:
        coef, b = np.asarray(w[0], dtype=np.float64), np.asarray(w[1], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    if coef.ndim == 2 and coef.shape == (n_cols, 2) and b.size == 2:
        return [float(v) for v in coef[:, 1] - coef[:, 0]], float(b[1] - b[0])
    if coef.ndim == 1 and coef.size == n_cols and b.size == 1:
        return [float(v) for v in coef], float(b[0])
    return None


def convergence_warning(model: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """``""``, or why a model part says it did not converge: it ran ``max_iter`` iterations before its
    stopping rule (tolerance) was met. A step with ``early_stopping: none`` asked for a fixed number
    of iterations: no warning then."""
    if model.get("converged") is not False:
        return ""
    if params is not None and params.get("early_stopping") == "none":
        return ""
    return (f"did not converge in {model.get('n_iter', '?')} iterations (raise max_iter or the "
            "learning rate, or loosen the tolerance)")


def model_summary(model: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """This party's own part of a trained model, as a person reads it: facts (iterations,
    convergence, intercept, trees), the weight of each of its own columns (coefficients of a
    linear model, vertical or horizontal; split gain of a boosted one; splits a host owns), and
    warnings (a model that did not converge). Another party's columns never appear: a part holds
    only its owner's. ``params`` (the step's parameters, when known) tells a fixed-length run
    (``early_stopping: none``) from one that ran out of iterations."""
    if not isinstance(model, dict):
        return None
    cols = [str(c) for c in model.get("columns") or []]
    facts: dict[str, Any] = {}
    for k in ("family", "objective", "n_iter", "converged", "intercept", "offset", "best_iteration",
              "n_features"):
        v = model.get(k, ...)
        v = v.item() if isinstance(v, np.generic) else v
        if v is None or isinstance(v, (int, float, str, bool)):
            facts[k] = v
    if isinstance(model.get("trees"), list):
        facts["trees"] = len(model["trees"])
    elif isinstance(model.get("topologies"), list):
        facts["trees"] = len(model["topologies"])
    if model.get("coef") is None and model.get("shares") is not None:  # SS-LR with reveal: shared
        facts.pop("intercept", None)
        facts["weights"] = "secret-shared between the parties: no party holds a coefficient"
    weights, kind = None, ""
    coef = _floats(model["coef"]) if model.get("coef") is not None else None
    homo = _homo_linear(model, len(cols))
    if coef is not None and len(coef) == len(cols):
        weights, kind = coef, "coefficient"
    elif homo is not None:
        weights, kind = homo[0], "coefficient"
        facts["intercept"] = homo[1]
    elif isinstance(model.get("feature_gain"), dict) and model.get("role") == "guest":
        gain = _floats(model["feature_gain"].get("guest"))
        if gain is not None and len(gain) == len(cols):
            weights, kind = gain, "split gain"
    elif isinstance(model.get("lookup"), list):  # a host's splits: which of its features each one uses
        counts = [0.0] * len(cols)
        for tree in model["lookup"]:
            for split in tree if isinstance(tree, list) else []:
                f = int(split[1]) if isinstance(split, (list, tuple)) and len(split) > 1 else -1
                if 0 <= f < len(counts):
                    counts[f] += 1
        weights, kind = counts, "splits"
    rows = [] if weights is None else sorted(({"column": c, "value": w} for c, w in zip(cols, weights)),
                                             key=lambda r: -abs(r["value"]))
    warning = convergence_warning(model, params)
    return {"component": model.get("component"), "role": model.get("role"), "facts": facts,
            "weight_kind": kind, "weights": rows, "warnings": [warning] if warning else []}


def alignment_row(step: str, party: str, rows_in: int, rows_kept: int) -> dict[str, Any]:
    """One party's rows before and after an alignment step, with a warning when some were dropped."""
    dropped = rows_in - rows_kept
    warning = (f"{dropped} of {party}'s {rows_in} rows had no match at the partners and were left out "
               f"({rows_kept} kept)" if dropped > 0 else "")
    return {"step": step, "party": party, "rows_in": rows_in, "rows_kept": rows_kept, "dropped": dropped,
            "warning": warning}


def alignment(job: Any, store: Any) -> list[dict[str, Any]]:
    """Every ``psi`` step's rows in and kept at each party whose part of the store holds both
    (:func:`alignment_row`). ``job`` is a :class:`atoll.jobs.spec.JobSpec`, ``store`` a run store."""
    out = []
    for c in job.pipeline:
        if c.component != "psi" or "data" not in c.inputs:
            continue
        producer, _, name = c.inputs["data"].partition(".")
        for p in job.parties:
            run = store.party(p)
            before, after = run.outputs(producer), run.outputs(c.id)
            if name in before and "data" in after:
                out.append(alignment_row(c.id, p, len(before[name]), len(after["data"])))
    return out
