"""Every job in examples/ runs end to end, and its federated model matches its centralised twin.

For speed these runs use a slice of each party's rows (``limit``), 1024-bit keys
(the examples use 2048) and, where a slice is smaller than the example's batch,
a smaller batch; everything else is the example file as shipped. Threads mode
(the same component code as processes mode; processes are covered by
test_runner's kill/resume test and by ``make demo``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from atoll.jobs import parse_job, run_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def quick(name: str, rows: int, **train_params) -> object:
    path = EXAMPLES / name
    raw = yaml.safe_load(path.read_text())
    raw["mode"] = "threads"
    for party in raw["parties"].values():
        if party.get("data"):
            party["data"]["limit"] = rows
    for step in raw["pipeline"]:
        if step["component"] in ("hetero_lr", "secureboost", "homo_lr"):
            params = step.setdefault("params", {})
            if "key_bits" in params:
                params["key_bits"] = 1024
            params.update(train_params)
    return parse_job(yaml.safe_dump(raw, sort_keys=False), str(path))


def comparison(report: dict) -> dict:
    rows = report["centralized_baseline"]
    assert rows, "no centralised comparison in the report"
    return rows


def test_every_example_is_tested():
    shipped = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert shipped == {"credit_scoring_hetero_lr.yaml", "credit_scoring_secureboost.yaml",
                       "credit_scoring_homo_secagg.yaml", "credit_scoring_tee.yaml",  # tee: tests/tee/test_job.py
                       "credit_scoring_ss_lr.yaml",
                       "transfer_learning_ftl.yaml",  # ftl: tests/jobs/test_ftl_component.py
                       "credit_scorecard.yaml"}  # scorecard: tests/jobs/test_feature_components.py
    for name in shipped:  # and each validates as shipped (bundled data, every column present)
        parse_job((EXAMPLES / name).read_text(), str(EXAMPLES / name))


def test_credit_scoring_hetero_lr(tmp_path):
    job = quick("credit_scoring_hetero_lr.yaml", 3000, batch_size=512)
    r = run_job(job, run_dir=tmp_path / "run", centralized_baseline=True)
    (row,) = comparison(r.report)
    assert row["n_test"] == 600 and row["n_train"] == 2400
    auc = row["metrics"]["auc"]
    assert auc["V_SUM"] > 0.68
    assert abs(auc["diff"]) < 0.02, auc
    assert abs(row["metrics"]["ks"]["diff"]) < 0.05
    assert (r.run_dir / "plots" / "loss_train.png").exists()


def test_credit_scoring_ss_lr(tmp_path):
    job = quick("credit_scoring_ss_lr.yaml", 3000)
    r = run_job(job, run_dir=tmp_path / "run", centralized_baseline=True)
    (row,) = comparison(r.report)
    assert row["component"] == "ss_lr" and row["n_test"] == 600
    assert abs(row["metrics"]["auc"]["diff"]) < 0.01, row["metrics"]["auc"]
    corr = r.outputs["guest"]["pearson"]["model"]["corr"] if hasattr(r, "outputs") else None
    assert corr is None or np.isfinite(corr).all()


def test_credit_scoring_secureboost(tmp_path):
    job = quick("credit_scoring_secureboost.yaml", 3000, n_estimators=3, max_depth=3)
    r = run_job(job, run_dir=tmp_path / "run", centralized_baseline=True)
    (row,) = comparison(r.report)
    auc = row["metrics"]["auc"]
    assert auc["V_SUM"] > 0.7
    # lossless: same trees as XGBoost / HistGradientBoosting up to binning details
    assert abs(auc["diff"]) < 0.02, auc


def test_credit_scoring_homo_secagg(tmp_path):
    job = quick("credit_scoring_homo_secagg.yaml", 2000, rounds=5)
    r = run_job(job, run_dir=tmp_path / "run", centralized_baseline=True)
    rows = comparison(r.report)
    assert {row["party"] for row in rows} == {"client_0", "client_1", "client_2"}
    for row in rows:
        assert row["n_test"] == 400
        assert abs(row["metrics"]["auc"]["diff"]) < 0.03, row
    # atoll predict: each client applies its own copy of the global model to its own rows
    import numpy as np
    import pandas as pd

    from atoll import wire
    from atoll.jobs import predict_job

    out = predict_job(r.run_dir, out_dir=tmp_path / "pred")
    assert set(out) == {"client_0", "client_1", "client_2"}
    for party, f in out.items():
        pred = pd.read_csv(f).set_index("id")
        inside = wire.loads((r.run_dir / party / "predict" / "scores.bin").read_bytes())
        assert len(pred) == 2000
        np.testing.assert_allclose(pred.loc[np.asarray(inside["ids"]), "score"], inside["score"], rtol=1e-9)


def test_same_seed_same_metrics_with_real_algorithms(tmp_path):
    """Two runs of a job, same seed, same metrics and the very same scores (1024-bit keys, small
    slices). SecureBoost runs once as processes (gRPC + mTLS: each party imports only what its own
    code needs) and once as threads: the transport changes nothing. Hetero LR runs twice in threads
    mode (its processes path is what ``make demo`` runs; the toy runner tests repeat runs too)."""
    from atoll import wire

    def once(name, rows, mode, **params):
        job = quick(name, rows, **params)
        raw = yaml.safe_load(job.text)
        raw["mode"] = mode
        job = parse_job(yaml.safe_dump(raw, sort_keys=False), job.source)
        r = run_job(job, run_dir=tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}")
        return r.report["evaluations"][0]["metrics"], wire.loads((r.run_dir / "guest/predict/scores.bin").read_bytes())

    a, sa = once("credit_scoring_secureboost.yaml", 1500, "processes", n_estimators=2, max_depth=2)
    b, sb = once("credit_scoring_secureboost.yaml", 1500, "threads", n_estimators=2, max_depth=2)
    assert a == b
    assert list(sa["ids"]) == list(sb["ids"]) and (sa["score"] == sb["score"]).all()
    c, sc = once("credit_scoring_hetero_lr.yaml", 800, "threads", batch_size=256, max_iter=1)
    d, sd = once("credit_scoring_hetero_lr.yaml", 800, "threads", batch_size=256, max_iter=1)
    assert c == d and (sc["score"] == sd["score"]).all()


def test_demo_prints_the_comparison_table(tmp_path, monkeypatch, capsys):
    """``make demo``'s code path on a slice (threads, 1024-bit keys; the real demo: all rows, processes)."""
    import atoll.demo as demo

    job = quick("credit_scoring_hetero_lr.yaml", 1000, batch_size=256, max_iter=1)
    (tmp_path / "examples").mkdir()
    small = tmp_path / "examples" / "credit_scoring_hetero_lr.yaml"
    small.write_text(job.text)
    monkeypatch.setattr(demo, "EXAMPLE", small)
    monkeypatch.chdir(tmp_path)
    code = 0
    try:
        demo.main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    assert "federated (V_FED)" in out and "AUC" in out and "KS" in out
    report = next((tmp_path / "runs").glob("demo-*/report.json"))
    row = yaml.safe_load(report.read_text())["centralized_baseline"][0]["metrics"]
    inside = all(abs(row[k]["diff"]) <= demo.TOLERANCE[k] for k in ("auc", "ks"))
    assert code == (0 if inside else 1)
