"""The run report (report.json, report.html, ``atoll run``'s summary) says which client each row and
plot is about, shows every model part's coefficients or feature importances (a party's own columns
only, at that party) with the step's parameters, and warns when training ran out of iterations or
psi left rows without a match. Small bundled slices, few iterations, 1024-bit keys (tests only)."""

from __future__ import annotations

import re
import textwrap

from rich.console import Console

from atoll import datasets
from atoll.jobs import parse_job, run_job
from atoll.jobs.runner import SavedOutputs
from atoll.jobs.summary import print_summary

from test_components import HOMO_NN_JOB

# the homo_nn test's job, as a 3-round homo_lr (a linear model: one coefficient per client column)
HOMO_JOB = (HOMO_NN_JOB.replace("name: nn", "name: homo_report").replace("component: homo_nn", "component: homo_lr")
            .replace("{rounds: 8, hidden: [8], learning_rate: 0.1, batch_size: 16}",
                     "{rounds: 3, learning_rate: 0.1, batch_size: 32}"))

HETERO_JOB = textwrap.dedent("""\
    name: {name}
    seed: 9
    mode: threads
    parties:
      guest:   {{role: guest, data: {{dataset: breast, split: hetero, party: guest, limit: 300}}}}
      host_0:  {{role: host,  data: {{dataset: breast, split: hetero, party: host, limit: {host_rows}}}}}
      arbiter: {{role: arbiter}}
    pipeline:
      - {{id: read, component: reader}}
      - {{id: align, component: psi, inputs: {{data: read.data}}}}
      - {{id: split, component: split, inputs: {{data: align.data}}, params: {{test_size: 0.25}}}}
      - {{id: scale, component: scale, inputs: {{train: split.train, test: split.test}}}}
      - id: train
        component: {comp}
        inputs: {{train: scale.train}}
        params: {params}
      - {{id: predict, component: predict, inputs: {{model: train.model, data: scale.test}}}}
      - {{id: evaluate, component: evaluate, inputs: {{scores: predict.scores}}, params: {{threshold: 0.4}}}}
    """)


def summary_text(r) -> str:
    console = Console(record=True, width=200)
    print_summary(r, console)
    return " ".join(console.export_text().split())  # table titles wrap to the table's width


def test_horizontal_report_labels_every_row_and_plot_with_its_client(tmp_path):
    r = run_job(parse_job(HOMO_JOB, "homo.yaml"), run_dir=tmp_path / "run", centralized_baseline=True)
    clients = ("client_0", "client_1")
    assert sorted(e["party"] for e in r.report["evaluations"]) == list(clients)
    assert sorted(row["party"] for row in r.report["centralized_baseline"]) == list(clients)
    html = (r.run_dir / "report.html").read_text()
    for c in clients:
        # the federated-vs-centralised table: every row names its client and its held-out rows
        n_test = next(row["n_test"] for row in r.report["centralized_baseline"] if row["party"] == c)
        assert re.search(rf"<td>train vs LogisticRegression</td><td>{c}</td><td>{n_test}</td><td>auc</td>", html)
        # every ROC and KS plot is the client's own, and says so
        for kind in ("ROC", "KS"):
            assert f"plots/{kind.lower()}_evaluate_{c}.png" in r.report["plots"]
            assert f"<figcaption>{kind} — evaluate @ {c}</figcaption>" in html
    assert "<figcaption>training — train</figcaption>" in html  # the server's loss curve
    # each client's model part: a coefficient per own column (its data's columns), and the step's parameters
    (model,) = r.report["models"]
    assert model["step"] == "train" and model["params"]["rounds"] == 3 and model["params"]["batch_size"] == 32
    for c in clients:
        part = model["parts"][c]
        assert part["weight_kind"] == "coefficient"
        assert {w["column"] for w in part["weights"]} == set(SavedOutputs(r.run_dir / c / "train")["model"]["columns"])
        assert "intercept" in part["facts"]
    assert "rounds=3" in html and "<h4>client_0 (client)</h4>" in html
    assert r.report["warnings"] == []
    text = summary_text(r)
    assert "train (homo_lr) @ client_0" in text and "train (homo_lr) @ client_1" in text
    assert "warning" not in text


def test_non_converged_run_and_unmatched_rows_warn_in_report_and_summary(tmp_path):
    """hetero_lr stopped by max_iter (2 epochs, a tolerance it cannot reach) warns; so does psi when the
    host holds 260 of the guest's 300 ids; coefficients are each party's own columns, at that party."""
    params = "{key_bits: 1024, max_iter: 2, batch_size: 64, learning_rate: 0.2, tol: 1.0e-12}"
    r = run_job(parse_job(HETERO_JOB.format(name="lr_report", host_rows=260, comp="hetero_lr", params=params),
                          "lr.yaml"), run_dir=tmp_path / "run")
    kinds = [(w["kind"], w["step"]) for w in r.report["warnings"]]
    assert kinds == [("not_converged", "train"), ("unmatched_rows", "align")]
    conv, rows = r.report["warnings"]
    assert conv["parties"] == ["guest", "host_0", "arbiter"] and "did not converge in 2 iterations" in conv["text"]
    assert "40 of guest's 300 rows had no match at the partners" in rows["text"] and rows["parties"] == ["guest"]
    assert {(a["party"], a["rows_in"], a["rows_kept"]) for a in r.report["alignment"]} == {
        ("guest", 300, 260), ("host_0", 260, 260)}
    html = (r.run_dir / "report.html").read_text()
    assert html.count("warning: step train (hetero_lr) at guest, host_0, arbiter: did not converge") == 1
    assert "warning: step align (psi): 40 of guest&#x27;s 300 rows had no match" in html
    (model,) = r.report["models"]
    guest_cols = set(datasets.load("breast", "hetero", "guest").columns) - {"y"}
    host_cols = set(datasets.load("breast", "hetero", "host").columns)
    assert {w["column"] for w in model["parts"]["guest"]["weights"]} == guest_cols
    assert {w["column"] for w in model["parts"]["host_0"]["weights"]} == host_cols
    assert not model["parts"]["arbiter"]["weights"]  # the arbiter holds no coefficients
    assert model["params"]["tol"] == 1e-12 and model["params"]["early_stopping"] == "weight_diff"
    assert r.report["parameters"]["evaluate"]["threshold"] == 0.4  # the decision threshold is in the report
    assert "threshold=0.4" in html
    text = summary_text(r)
    assert "warning: step train (hetero_lr) at guest, host_0, arbiter: did not converge in 2" in text
    assert "warning: step align (psi): 40 of guest's 300 rows had no match" in text
    assert "train (hetero_lr) @ guest" in text and "train (hetero_lr) @ host_0" in text


def test_fixed_iterations_do_not_warn_and_secureboost_shows_own_importances(tmp_path):
    """early_stopping: none asks for max_iter epochs: no warning. SecureBoost: the guest's split gain on
    its own columns, the host's count of splits on its own; neither lists the other's columns."""
    lr = run_job(parse_job(HETERO_JOB.format(
        name="lr_fixed", host_rows=300, comp="hetero_lr",
        params="{key_bits: 1024, max_iter: 1, batch_size: 64, early_stopping: none}"), "lr.yaml"),
        run_dir=tmp_path / "lr")
    assert lr.report["warnings"] == [] and all(a["dropped"] == 0 for a in lr.report["alignment"])
    assert "warning" not in (lr.run_dir / "report.html").read_text()
    sb = run_job(parse_job(HETERO_JOB.format(
        name="sb_report", host_rows=300, comp="secureboost",
        params="{n_estimators: 2, max_depth: 2, scheme: plain}"), "sb.yaml"), run_dir=tmp_path / "sb")
    (model,) = sb.report["models"]
    guest, host = model["parts"]["guest"], model["parts"]["host_0"]
    guest_cols = set(datasets.load("breast", "hetero", "guest").columns) - {"y"}
    host_cols = set(datasets.load("breast", "hetero", "host").columns)
    assert guest["weight_kind"] == "split gain" and {w["column"] for w in guest["weights"]} == guest_cols
    assert host["weight_kind"] == "splits" and {w["column"] for w in host["weights"]} == host_cols
    assert guest["facts"]["trees"] == host["facts"]["trees"] == 2
    saved = SavedOutputs(sb.run_dir / "guest" / "train")["model"]
    gains = dict(zip(saved["columns"], saved["feature_gain"]["guest"]))
    assert all(abs(w["value"] - gains[w["column"]]) < 1e-12 for w in guest["weights"])
    assert model["params"]["n_estimators"] == 2 and "n_estimators=2" in (sb.run_dir / "report.html").read_text()


def test_binary_and_regression_evaluations_draw_every_chart_the_board_shows():
    """ROC, KS, gain, lift, precision-recall and the confusion matrix for a binary model; residuals for
    a regression; the confusion counts are the counts at the evaluate step's threshold."""
    import numpy as np

    from atoll.jobs.components.evaluate import compute_metrics
    from atoll.jobs.report import _plots

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    score = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    metrics, curves = compute_metrics("binary", y, score, threshold=0.4)
    counts = np.asarray(curves["confusion"]["counts"])
    pred = score >= 0.4
    assert counts.tolist() == [[int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())],
                               [int((~pred & (y == 1)).sum()), int((pred & (y == 1)).sum())]]
    yr = rng.normal(size=300)
    mr, cr = compute_metrics("regression", yr, yr + rng.normal(0, 0.1, 300), curve_points=50)
    assert len(cr["residuals"]["residual"]) == 50
    files = _plots([{"step": "evaluate", "party": "guest", "metrics": metrics, "curves": curves},
                    {"step": "evaluate_r", "party": "guest", "metrics": mr, "curves": cr}], {})
    for kind in ("roc", "ks", "gain", "lift", "pr", "confusion"):
        assert files[f"{kind}_evaluate_guest.png"].startswith(b"\x89PNG"), kind
    assert files["residuals_evaluate_r_guest.png"].startswith(b"\x89PNG")
