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
