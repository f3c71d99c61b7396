"""The report's credit-scoring sections: IV ranking and WOE tables (binning), kept columns (selection: the
guest's view covers every party), PSI / CSI tables (stability),
points tables (scorecard), from the ``report`` entry those steps put in their ``model`` output.

Each party's entries come from its own outputs (in a node deployment, each node's report shows its own).
"""

from __future__ import annotations

import html
from typing import Any

from atoll.jobs.spec import JobSpec
from atoll.jobs.store import RunStore

KINDS = ("binning", "selection", "stability", "scorecard")


def feature_sections(job: JobSpec, store: RunStore) -> list[dict[str, Any]]:
    out = []
    for c in job.pipeline:
        for p in job.parties:
            saved = store.party(p).outputs(c.id)
            m = saved.get("model") if "model" in saved else None
            if isinstance(m, dict) and isinstance(m.get("report"), dict) and m["report"].get("kind") in KINDS:
                out.append({"step": c.id, "party": p, **m["report"]})
    return out


def _num(v: Any, fmt: str = ".4f") -> str:
    return "" if v is None else format(float(v), fmt)


def feature_html(sections: list[dict[str, Any]]) -> list[str]:
    e = html.escape
    parts: list[str] = []
    for s in sections:
        head = f"{e(s['step'])} at {e(s['party'])}"
        if s["kind"] == "binning":
            parts.append(f"<h2>IV ranking — {head}</h2><table><tr><th>feature</th><th>IV</th></tr>"
                         + "".join(f"<tr><td>{e(k)}</td><td>{_num(v)}</td></tr>" for k, v in s["iv_ranking"])
                         + "</table>")
            for name, t in s["tables"].items():
                rows = "".join(
                    f"<tr><td>{e(str(b))}</td><td>{n}</td><td>{'' if t['events'] is None else t['events'][i]}</td>"
                    f"<td>{_num(t['woe'][i])}</td></tr>" for i, (b, n) in enumerate(zip(t["bins"], t["counts"])))
                parts.append(f"<h3>WOE — {e(name)} (IV {_num(t['iv'])})</h3><table><tr><th>bin</th><th>rows</th>"
                             f"<th>events</th><th>WOE</th></tr>{rows}</table>")
        elif s["kind"] == "selection":
            parts.append(f"<h2>Selection — {head}</h2><p>kept: {e(', '.join(s['kept'])) or 'none'}</p>")
        elif s["kind"] == "stability":
            parts.append(f"<h2>Stability — {head}</h2><table><tr><th>feature</th><th>PSI</th><th>CSI</th></tr>"
                         + "".join(f"<tr><td>{e(str(n))}</td><td>{_num(v)}</td><td>{_num(c, '.2f')}</td></tr>"
                                   for n, v, c in s["rows"]) + "</table>")
        else:
            parts.append(f"<h2>Scorecard — {head}</h2><p>base points {_num(s['base_points'], '.2f')}</p>")
            for name, bins, pts in s["features"]:
                parts.append(f"<h3>{e(name)}</h3><table><tr><th>bin</th><th>points</th></tr>"
                             + "".join(f"<tr><td>{e(str(b))}</td><td>{_num(p, '.2f')}</td></tr>"
                                       for b, p in zip(bins or range(len(pts)), pts)) + "</table>")
    return parts


def feature_plots(sections: list[dict[str, Any]], top: int = 6) -> dict[str, bytes]:
    """Bin plots: the IV ranking, and rows per bin with the WOE of the ``top`` columns by IV (guest's view)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig: Any) -> bytes:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return buf.getvalue()

    files: dict[str, bytes] = {}
    for s in sections:
        if s["kind"] != "binning":
            continue
        tag = f"{s['step']}_{s['party']}"
        names = [k for k, _ in s["iv_ranking"]]
        fig, ax = plt.subplots(figsize=(5, max(2.5, 0.22 * len(names))))
        ax.barh(names[::-1], [v for _, v in s["iv_ranking"]][::-1])
        ax.axvline(0.02, ls=":", c="grey")
        ax.set(xlabel="IV", title=f"IV ranking — {s['step']}")
        ax.tick_params(labelsize=7)
        files[f"iv_{tag}.png"] = png(fig)
        for name in names[:top]:
            t = s["tables"][name]
            fig, ax = plt.subplots(figsize=(5, 3.2))
            x = range(len(t["counts"]))
            ax.bar(x, t["counts"], color="#9ecae1", label="rows")
            ax.set(ylabel="rows", title=f"{name} (IV {t['iv']:.3f})")
            ax.set_xticks(list(x), [str(b) for b in t["bins"]], rotation=45, ha="right", fontsize=6)
            ax2 = ax.twinx()
            ax2.plot(list(x), t["woe"], color="#d62728", marker="o", label="WOE")
            ax2.set_ylabel("WOE")
            files[f"bins_{tag}_{name.replace('.', '_')}.png"] = png(fig)
    return files
