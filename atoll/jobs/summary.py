"""Printing a finished run: metrics and the federated-vs-centralised table (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from atoll.jobs.runner import RunResult

_ORDER = ("auc", "auc_ovr", "ks", "log_loss", "accuracy", "precision", "recall", "f1", "precision_macro",
          "recall_macro", "f1_macro", "rmse", "mae", "r2", "poisson_deviance")


def _keys(d: dict) -> list[str]:
    return [k for k in _ORDER if k in d] + sorted(k for k in d if k not in _ORDER)


def comparison_tables(report: dict, metrics: tuple[str, ...] | None = None) -> list[RichTable]:
    """One table per (model step, party): V_FED, V_SUM and their difference per metric."""
    out = []
    for row in report.get("centralized_baseline") or []:
        t = RichTable(title=f"{row['model_step']} ({row['component']}, federated) vs {row['twin']} "
                            f"(centralised) — {row['n_test']} held-out rows at {row['party']}")
        t.add_column("metric")
        for col in ("V_FED", "V_SUM", "diff"):
            t.add_column(col, justify="right")
        for k in _keys(row["metrics"]):
            if metrics and k not in metrics:
                continue
            v = row["metrics"][k]
            t.add_row(k, f"{v['V_FED']:.4f}", f"{v['V_SUM']:.4f}", f"{v['diff']:+.4f}")
        out.append(t)
    return out


def print_summary(result: RunResult, console: Console | None = None,
                  metrics: tuple[str, ...] | None = None) -> None:
    console = console or Console()
    rep = result.report
    for ev in rep["evaluations"]:
        t = RichTable(title=f"{ev['step']} @ {ev['party']} — {ev['task']}, {ev['n']} held-out rows")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k in _keys(ev["metrics"]):
            t.add_row(k, f"{ev['metrics'][k]:.4f}")
        console.print(t)
    for tee in rep.get("tee") or []:
        mark = f"[bold red]{tee['mark']}[/]: " if tee.get("simulated") else ""
        console.print(f"{mark}step {tee['step']} ran in a {tee['backend']} enclave (measurement "
                      f"{tee['measurement'][:16]}..., {tee.get('rows_joined', 0)} rows joined, peak "
                      f"{tee.get('peak_rss_mb', 0):.0f} MB)", highlight=False)
    for t in comparison_tables(rep, metrics):
        console.print(t)
    console.print(f"run folder: {result.run_dir}  (report: {result.run_dir / 'report.html'}); "
                  f"{result.seconds:.1f} s", highlight=False)
