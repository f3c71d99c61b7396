"""Printing a finished run: warnings, metrics, each party's model part and the federated-vs-centralised
table (rich), from the report (the same views as ``report.html`` and the board)."""

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


def model_tables(report: dict, top: int = 10) -> list[RichTable]:
    """One table per (model step, party): the weight of each of the party's own columns (the
    ``top`` largest in magnitude; all of them in report.html), its facts in the title."""
    out = []
    for m in report.get("models") or []:
        for party, part in m["parts"].items():
            facts = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in part["facts"].items())
            if not part["weights"]:
                continue
            more = len(part["weights"]) - top
            t = RichTable(title=f"{m['step']} ({m['component']}) @ {party}",
                          caption=facts + (f"; {more} more columns in report.html" if more > 0 else ""))
            t.add_column("column")
            t.add_column(part["weight_kind"], justify="right")
            for w in part["weights"][:top]:
                t.add_row(w["column"], f"{w['value']:.4g}")
            out.append(t)
    return out


def print_warnings(warnings: list[dict], console: Console) -> None:
    for w in warnings:
        console.print(f"[bold yellow]warning:[/] {w['text']}", highlight=False)


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
    for t in model_tables(rep):
        console.print(t)
    for t in comparison_tables(rep, metrics):
        console.print(t)
    print_warnings(rep.get("warnings") or [], console)  # under the tables, where the eye ends
    console.print(f"run folder: {result.run_dir}  (report: {result.run_dir / 'report.html'}); "
                  f"{result.seconds:.1f} s", highlight=False)
