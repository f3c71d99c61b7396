"""The run's report: ``report.json``, ``report.html`` and PNG plots (ROC, KS, loss), kept by the run store."""

from __future__ import annotations

import base64
import html
import io
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from atoll.jobs.spec import JobSpec
from atoll.jobs.store import RunStore
from atoll.jobs.views import alignment, model_summary

if TYPE_CHECKING:
    from atoll.jobs.resume import ResumePlan


def _steps_table(job: JobSpec, store: RunStore) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for c in job.pipeline:
        out[c.id] = {}
        for p in job.parties:
            rec = store.party(p).record(c.id)
            out[c.id][p] = rec.seconds if rec else None
    return out


def _histories(job: JobSpec, store: RunStore) -> dict[str, dict[str, list[float]]]:
    out = {}
    for c in job.pipeline:
        for p in job.parties:
            saved = store.party(p).outputs(c.id)
            if "model" in saved:
                m = saved["model"]
                if isinstance(m, dict) and m.get("history"):
                    out.setdefault(c.id, {}).update(
                        {k: [float(x) for x in np.asarray(v).ravel()] for k, v in m["history"].items()})
    return out


def evaluations(job: JobSpec, store: RunStore) -> list[dict[str, Any]]:
    """The ``metrics`` output of every ``evaluate`` step at every party that has one."""
    out = []
    for c in job.pipeline:
        if c.component != "evaluate":
            continue
        for p in job.parties:
            saved = store.party(p).outputs(c.id)
            if "metrics" in saved:
                out.append({"step": c.id, "party": p, **saved["metrics"]})
    return out


def _parameters(job: JobSpec) -> dict[str, dict[str, Any]]:
    """Every step's parameters as the component ran them (the job file's, defaults filled in)."""
    from atoll.jobs import registry

    out = {}
    for c in job.pipeline:
        try:
            out[c.id] = registry.get(c.component).Params.model_validate(c.params).model_dump(mode="json")
        except Exception:  # noqa: BLE001 - a job that ran validated them; show what the file says otherwise
            out[c.id] = dict(c.params)
    return out


def _models(job: JobSpec, store: RunStore, params: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model step's parts, one per party that kept one (:func:`atoll.jobs.views.model_summary`:
    a party's own columns only), with the step's parameters."""
    out = []
    for c in job.pipeline:
        parts = {}
        for p in job.parties:
            saved = store.party(p).outputs(c.id)
            if "model" in saved:
                summary = model_summary(saved["model"], params.get(c.id))
                if summary is not None and (summary["facts"] or summary["weights"] or summary["warnings"]):
                    parts[p] = summary
        if parts:
            out.append({"step": c.id, "component": c.component, "params": params.get(c.id, {}), "parts": parts})
    return out


def _warnings(models: list[dict[str, Any]], aligned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a person must not miss: models that did not converge (one line per step, naming its
    parties) and parties whose rows had no match at an alignment step."""
    out = []
    for m in models:
        seen: dict[str, list[str]] = {}
        for party, part in m["parts"].items():
            for w in part["warnings"]:
                seen.setdefault(w, []).append(party)
        out += [{"kind": "not_converged", "step": m["step"], "parties": ps,
                 "text": f"step {m['step']} ({m['component']}) at {', '.join(ps)}: {w}"} for w, ps in seen.items()]
    out += [{"kind": "unmatched_rows", "step": a["step"], "parties": [a["party"]],
             "text": f"step {a['step']} (psi): {a['warning']}"} for a in aligned if a["warning"]]
    return out


def _tee_runs(job: JobSpec, store: RunStore) -> list[dict[str, Any]]:
    """Which enclave backend ran each TEE step (from the enclave host's saved model part)."""
    out = []
    for c in job.pipeline:
        for p in job.parties:
            saved = store.party(p).outputs(c.id)
            for key in ("model", "scores"):
                m = saved.get(key) if key in saved else None
                if isinstance(m, dict) and isinstance(m.get("tee"), dict) and m.get("role", "arbiter") == "arbiter":
                    out.append({"step": c.id, "party": p, **m["tee"]})
    return out


def _plots(evaluations: list[dict[str, Any]], histories: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, bytes] = {}
    for ev in evaluations:
        curves = ev.get("curves") or {}
        tag = f"{ev['step']}_{ev['party']}"
        who = f"{ev['step']} @ {ev['party']}"  # every plot names its party (each client has its own)
        if "roc" in curves:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], label=f"AUC {ev['metrics']['auc']:.4f}")
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {who}")
            ax.legend(loc="lower right")
            files[f"roc_{tag}.png"] = _png(plt, fig)
        if "roc_ovr" in curves:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            for k, c in curves["roc_ovr"].items():
                ax.plot(c["fpr"], c["tpr"], label=f"class {k} vs rest")
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate",
                   title=f"ROC (one-vs-rest, macro AUC {ev['metrics']['auc_ovr']:.4f}) — {who}")
            ax.title.set_fontsize(9)
            ax.legend(loc="lower right", fontsize=8)
            files[f"roc_{tag}.png"] = _png(plt, fig)
        if "ks" in curves:
            k = curves["ks"]
            tpr, fpr = np.asarray(k["tpr"]), np.asarray(k["fpr"])
            pi = float(k.get("positive_share", 0.5))
            frac = pi * tpr + (1 - pi) * fpr  # share of rows scored at or above each threshold
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(frac, tpr, label="TPR (cum. positives)")
            ax.plot(frac, fpr, label="FPR (cum. negatives)")
            i = int(np.argmax(tpr - fpr))
            ax.vlines(frac[i], fpr[i], tpr[i], colors="red", label=f"KS {k['ks']:.4f}")
            ax.set(xlabel="share of rows scored at or above the threshold", ylabel="rate", title=f"KS — {who}")
            ax.legend(loc="lower right")
            files[f"ks_{tag}.png"] = _png(plt, fig)
            ok = frac > 0
            precision = np.where(ok, pi * tpr / np.where(ok, frac, 1), 1.0)
            fig, ax = plt.subplots(figsize=(4.5, 4))  # cumulative gains: positives found in the top share
            ax.plot(frac, tpr, label="model")
            ax.plot([0, 1], [0, 1], ls=":", c="grey", label="random")
            ax.set(xlabel="share of rows, highest scores first", ylabel="share of positives found",
                   title=f"Gain — {who}")
            ax.legend(loc="lower right")
            files[f"gain_{tag}.png"] = _png(plt, fig)
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(frac[ok], precision[ok] / pi if pi > 0 else precision[ok])
            ax.axhline(1.0, ls=":", c="grey")
            ax.set(xlabel="share of rows, highest scores first", ylabel="lift (precision / base rate)",
                   title=f"Lift — {who}")
            files[f"lift_{tag}.png"] = _png(plt, fig)
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(tpr[ok], precision[ok])
            ax.axhline(pi, ls=":", c="grey", label=f"base rate {pi:.3f}")
            ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {who}", ylim=(0, 1.02))
            ax.legend(loc="upper right")
            files[f"pr_{tag}.png"] = _png(plt, fig)
        if "confusion" in curves:
            c = np.asarray(curves["confusion"]["counts"])
            fig, ax = plt.subplots(figsize=(4, 3.6))
            ax.imshow(c, cmap="Blues")
            for (i, j), v in np.ndenumerate(c):
                ax.text(j, i, str(v), ha="center", va="center", color="black")
            ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="true",
                   title=f"Confusion at {curves['confusion']['threshold']:g} — {who}")
            ax.title.set_fontsize(9)
            files[f"confusion_{tag}.png"] = _png(plt, fig)
        if "residuals" in curves:
            r = curves["residuals"]
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.scatter(r["predicted"], r["residual"], s=6, alpha=0.6)
            ax.axhline(0.0, ls=":", c="grey")
            ax.set(xlabel="prediction", ylabel="label - prediction", title=f"Residuals — {who}")
            files[f"residuals_{tag}.png"] = _png(plt, fig)
    from matplotlib.ticker import MaxNLocator

    for step, hist in histories.items():
        series = {name: values for name, values in hist.items() if values}  # no legend entry without data
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for name, values in series.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=name)
        ax.set(xlabel="iteration", title=f"training — {step}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
        ax.legend()
        files[f"loss_{step}.png"] = _png(plt, fig)
    return files


def _png(plt: Any, fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def build_report(job: JobSpec, store: RunStore, centralized_baseline: bool = False,
                 resume: "ResumePlan | None" = None, seconds: float | None = None) -> dict[str, Any]:
    """Build the report from the run store, keep it there (JSON, HTML, plots) and return it.

    After a resume, ``resume`` (the plan the runner followed) says which steps were kept
    and which ran again and why: ``report["resume"] = {"kept": [...], "ran_again": {step:
    [reason, ...]}}``.
    """
    evals = evaluations(job, store)
    histories = _histories(job, store)
    baseline = None
    if centralized_baseline:
        from atoll.jobs.baseline import centralized_baseline as cb

        baseline = cb(job, store)
    plots = _plots(evals, histories)
    from atoll.jobs.feature_report import feature_plots, feature_sections

    feature = feature_sections(job, store)
    plots.update(feature_plots(feature))
    params = _parameters(job)
    models = _models(job, store, params)
    aligned = alignment(job, store)
    report = {
        "job": job.name, "seed": job.seed, "run_dir": str(store), "finished": time.time(),
        "seconds": seconds, "parties": {p: s.role for p, s in job.parties.items()},
        "steps": _steps_table(job, store), "resumed_skipped": list(resume.keep) if resume else [],
        "resume": {"kept": list(resume.keep), "ran_again": dict(resume.rerun)} if resume else None,
        "evaluations": [{k: v for k, v in e.items() if k != "curves"} for e in evals],
        "curves": {f"{e['step']}@{e['party']}": e.get("curves") for e in evals},
        "histories": histories, "centralized_baseline": baseline, "tee": _tee_runs(job, store),
        "plots": [f"plots/{name}" for name in plots], "feature": feature,
        "parameters": params, "models": models, "alignment": aligned, "warnings": _warnings(models, aligned),
    }
    report = _jsonable(report)
    store.save_report(report, _html(report, plots), plots)
    return report


def _jsonable(o: Any) -> Any:
    """The report as plain JSON values (outputs come back from the store as numpy values)."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return o


def _html(r: dict[str, Any], plots: dict[str, bytes]) -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>Atoll report — {e(r['job'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{margin:.5em}</style>",
             f"<h1>Atoll job <code>{e(r['job'])}</code></h1>",
             f"<p>seed {r['seed']} · parties: {e(', '.join(f'{p} ({q})' for p, q in r['parties'].items()))}"
             + (f" · {r['seconds']:.1f} s" if r.get("seconds") else "") + "</p>"]
    for w in r.get("warnings") or []:
        parts.append(f"<p class='warning' style='color:#b00;font-weight:bold'>warning: {e(w['text'])}</p>")
    for t in r.get("tee") or []:
        banner = (f"<p style='color:#b00;font-weight:bold'>{e(t['mark'])}: the enclave of step "
                  f"{e(t['step'])} was simulated; its host saw everything</p>" if t.get("simulated") else "")
        parts.append(f"<h2>Trusted execution — {e(t['step'])}</h2>{banner}<p>backend <b>{e(t['backend'])}</b>"
                     f" · measurement <code>{e(t['measurement'])}</code> · {t.get('rows_joined', 0)} rows joined"
                     f" · peak enclave memory {t.get('peak_rss_mb', 0):.0f} MB</p>")
    if r["evaluations"]:
        keys = sorted({k for ev in r["evaluations"] for k in ev["metrics"]})
        parts.append("<h2>Metrics (held-out rows)</h2><table><tr><th>step</th><th>party</th><th>rows</th>"
                     + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr>")
        for ev in r["evaluations"]:
            parts.append(f"<tr><td>{e(ev['step'])}</td><td>{e(ev['party'])}</td><td>{ev['n']}</td>"
                         + "".join(f"<td>{ev['metrics'].get(k, float('nan')):.4f}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
    if r.get("centralized_baseline"):
        parts.append("<h2>Federated vs centralised (same held-out rows)</h2><table><tr><th>model</th>"
                     "<th>party</th><th>rows</th><th>metric</th><th>V_FED</th><th>V_SUM</th><th>diff</th></tr>")
        for row in r["centralized_baseline"]:
            for k, v in row["metrics"].items():
                parts.append(f"<tr><td>{e(row['model_step'])} vs {e(row['twin'])}</td><td>{e(row['party'])}</td>"
                             f"<td>{row['n_test']}</td><td>{e(k)}</td>"
                             f"<td>{v['V_FED']:.4f}</td><td>{v['V_SUM']:.4f}</td><td>{v['diff']:+.4f}</td></tr>")
        parts.append("</table>")
    from atoll.jobs.feature_report import feature_html

    parts += feature_html(r.get("feature") or [])
    parts += _models_html(r.get("models") or [])
    if r.get("alignment"):
        parts.append("<h2>Alignment (rows kept by psi)</h2><table><tr><th>step</th><th>party</th><th>rows in</th>"
                     "<th>kept</th><th>no match</th></tr>")
        for a in r["alignment"]:
            parts.append(f"<tr><td>{e(a['step'])}</td><td>{e(a['party'])}</td><td>{a['rows_in']}</td>"
                         f"<td>{a['rows_kept']}</td><td>{a['dropped']}</td></tr>")
        parts.append("</table>")
    ran_again = (r.get("resume") or {}).get("ran_again", {})
    parts.append("<h2>Steps (seconds per party)</h2><table><tr><th>step</th>"
                 + "".join(f"<th>{e(p)}</th>" for p in r["parties"]) + "</tr>")
    for step, per in r["steps"].items():
        cells = "".join(f"<td>{'' if v is None else f'{v:.2f}'}</td>" for v in per.values())
        mark = (" (resumed: kept)" if step in r["resumed_skipped"]
                else " (resumed: ran again)" if step in ran_again else "")
        parts.append(f"<tr><td>{e(step)}{mark}</td>{cells}</tr>")
    parts.append("</table>")
    if r.get("parameters"):
        parts.append("<h2>Parameters</h2><table><tr><th>step</th><th style='text-align:left'>parameters</th></tr>")
        for step, params in r["parameters"].items():
            parts.append(f"<tr><td>{e(step)}</td><td style='text-align:left'><code>{e(_params_text(params))}"
                         "</code></td></tr>")
        parts.append("</table>")
    if r.get("resume"):
        parts.append("<h2>Resume</h2><p>kept (inputs unchanged): "
                     + (e(", ".join(r["resume"]["kept"])) or "none") + "</p>")
        if ran_again:
            parts.append("<table><tr><th>ran again</th><th>why</th></tr>")
            for step, reasons in ran_again.items():
                parts.append(f"<tr><td>{e(step)}</td><td style='text-align:left'>{e('; '.join(reasons))}</td></tr>")
            parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, data in plots.items():
            b64 = base64.b64encode(data).decode()
            parts.append(f"<figure style='display:inline-block'><img alt='{e(name)}' "
                         f"src='data:image/png;base64,{b64}'><figcaption>{e(_plot_caption(name, r))}"
                         "</figcaption></figure>")
    return "\n".join(parts)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(none)"


def _plot_caption(name: str, r: dict[str, Any]) -> str:
    """``roc_evaluate_client_0.png`` → ``ROC — evaluate @ client_0`` (the party, from the report's list)."""
    kind, _, rest = name.removesuffix(".png").partition("_")
    for ev in r.get("evaluations") or []:
        if rest == f"{ev['step']}_{ev['party']}":
            return f"{kind.upper()} — {ev['step']} @ {ev['party']}"
    return f"{'training' if kind == 'loss' else kind.upper()} — {rest}"


def _models_html(models: list[dict[str, Any]]) -> list[str]:
    """Each model step: its parameters, then each party's own part (facts, weights of its own columns)."""
    e = html.escape
    out = ["<h2>Models</h2>"] if models else []
    for m in models:
        out.append(f"<h3>{e(m['step'])} ({e(m['component'])})</h3><p>parameters: <code>"
                   f"{e(_params_text(m['params']))}</code></p>")
        for party, part in m["parts"].items():
            facts = " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in part["facts"].items())
            out.append(f"<h4>{e(party)} ({e(str(part['role']))})</h4><p>{e(facts)}</p>")
            out += [f"<p class='warning' style='color:#b00'>warning: {e(w)}</p>" for w in part["warnings"]]
            if part["weights"]:
                out.append(f"<table class='weights'><tr><th>column</th><th>{e(part['weight_kind'])}</th></tr>"
                           + "".join(f"<tr><td>{e(w['column'])}</td><td>{w['value']:.4g}</td></tr>"
                                     for w in part["weights"]) + "</table>")
    return out
