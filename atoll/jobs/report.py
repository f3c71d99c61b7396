"""The job-level report: ``report.json``, ``report.html`` and PNG plots (ROC, KS, loss)."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from atoll.jobs.artifacts import write_json
from atoll.jobs.spec import JobSpec


def _steps_table(job: JobSpec, run_dir: Path) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for c in job.pipeline:
        out[c.id] = {}
        for p in job.parties:
            f = run_dir / p / c.id / "done.json"
            out[c.id][p] = json.loads(f.read_text()).get("seconds") if f.exists() else None
    return out


def _histories(job: JobSpec, run_dir: Path) -> dict[str, dict[str, list[float]]]:
    from atoll.jobs.runner import SavedOutputs

    out = {}
    for c in job.pipeline:
        for p in job.parties:
            saved = SavedOutputs(run_dir / p / c.id)
            if "model" in saved:
                m = saved["model"]
                if isinstance(m, dict) and m.get("history"):
                    out.setdefault(c.id, {}).update(
                        {k: [float(x) for x in np.asarray(v).ravel()] for k, v in m["history"].items()})
    return out


def _tee_runs(job: JobSpec, run_dir: Path) -> list[dict[str, Any]]:
    """Which enclave backend ran each TEE step (from the enclave host's saved model part)."""
    from atoll.jobs.runner import SavedOutputs

    out = []
    for c in job.pipeline:
        for p in job.parties:
            saved = SavedOutputs(run_dir / p / c.id)
            for key in ("model", "scores"):
                m = saved.get(key) if key in saved else None
                if isinstance(m, dict) and isinstance(m.get("tee"), dict) and m.get("role", "arbiter") == "arbiter":
                    out.append({"step": c.id, "party": p, **m["tee"]})
    return out


def _plots(evaluations: list[dict[str, Any]], histories: dict[str, Any], plot_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(exist_ok=True)
    files = []
    for ev in evaluations:
        curves = ev.get("curves") or {}
        tag = f"{ev['step']}_{ev['party']}"
        if "roc" in curves:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], label=f"AUC {ev['metrics']['auc']:.4f}")
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {ev['step']}")
            ax.legend(loc="lower right")
            files.append(_save(plt, fig, plot_dir / f"roc_{tag}.png"))
        if "roc_ovr" in curves:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            for k, c in curves["roc_ovr"].items():
                ax.plot(c["fpr"], c["tpr"], label=f"class {k} vs rest")
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate",
                   title=f"ROC (one-vs-rest, macro AUC {ev['metrics']['auc_ovr']:.4f}) — {ev['step']}")
            ax.title.set_fontsize(9)
            ax.legend(loc="lower right", fontsize=8)
            files.append(_save(plt, fig, plot_dir / f"roc_{tag}.png"))
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
            ax.set(xlabel="share of rows scored at or above the threshold", ylabel="rate", title=f"KS — {ev['step']}")
            ax.legend(loc="lower right")
            files.append(_save(plt, fig, plot_dir / f"ks_{tag}.png"))
    for step, hist in histories.items():
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for name, values in hist.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=name)
        ax.set(xlabel="iteration", title=f"training — {step}")
        ax.legend()
        files.append(_save(plt, fig, plot_dir / f"loss_{step}.png"))
    return files


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_report(job: JobSpec, run_dir: Path, centralized_baseline: bool = False,
                 skipped: list[str] | None = None, seconds: float | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.html`` and ``plots/``; return the report dict."""
    evaluations = []
    for c in job.pipeline:
        if c.component != "evaluate":
            continue
        for p in job.parties:
            f = run_dir / p / c.id / "metrics.json"
            if f.exists():
                m = json.loads(f.read_text())
                evaluations.append({"step": c.id, "party": p, **m})
    histories = _histories(job, run_dir)
    baseline = None
    if centralized_baseline:
        from atoll.jobs.baseline import centralized_baseline as cb

        baseline = cb(job, run_dir)
    plots = _plots(evaluations, histories, run_dir / "plots")
    report = {
        "job": job.name, "seed": job.seed, "run_dir": str(run_dir), "finished": time.time(),
        "seconds": seconds, "parties": {p: s.role for p, s in job.parties.items()},
        "steps": _steps_table(job, run_dir), "resumed_skipped": skipped or [],
        "evaluations": [{k: v for k, v in e.items() if k != "curves"} for e in evaluations],
        "curves": {f"{e['step']}@{e['party']}": e.get("curves") for e in evaluations},
        "histories": histories, "centralized_baseline": baseline, "tee": _tee_runs(job, run_dir),
        "plots": [str(p.relative_to(run_dir)) for p in plots],
    }
    write_json(run_dir / "report.json", report)
    (run_dir / "report.html").write_text(_html(report, plots))
    return report


def _html(r: dict[str, Any], plots: list[Path]) -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>Atoll report — {e(r['job'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{margin:.5em}</style>",
             f"<h1>Atoll job <code>{e(r['job'])}</code></h1>",
             f"<p>seed {r['seed']} · parties: {e(', '.join(f'{p} ({q})' for p, q in r['parties'].items()))}"
             + (f" · {r['seconds']:.1f} s" if r.get("seconds") else "") + "</p>"]
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
                     "<th>metric</th><th>V_FED</th><th>V_SUM</th><th>diff</th></tr>")
        for row in r["centralized_baseline"]:
            for k, v in row["metrics"].items():
                parts.append(f"<tr><td>{e(row['model_step'])} vs {e(row['twin'])}</td><td>{e(k)}</td>"
                             f"<td>{v['V_FED']:.4f}</td><td>{v['V_SUM']:.4f}</td><td>{v['diff']:+.4f}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Steps (seconds per party)</h2><table><tr><th>step</th>"
                 + "".join(f"<th>{e(p)}</th>" for p in r["parties"]) + "</tr>")
    for step, per in r["steps"].items():
        cells = "".join(f"<td>{'' if v is None else f'{v:.2f}'}</td>" for v in per.values())
        parts.append(f"<tr><td>{e(step)}{' (resumed: kept)' if step in r['resumed_skipped'] else ''}</td>{cells}</tr>")
    parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for p in plots:
            b64 = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<img alt='{e(p.name)}' src='data:image/png;base64,{b64}'>")
    return "\n".join(parts)
