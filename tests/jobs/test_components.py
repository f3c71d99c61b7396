"""Component wrappers pass the job's parameters through faithfully: the federated models of a job
equal the algorithm's plaintext twin (same batches, optimizer, stopping; ``_glm.fit_plaintext``)
on the rows the job trained on, and batch prediction of a saved run gives the run's own scores.
Small slices, 1024-bit keys (tests only), threads mode."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from atoll import wire
from atoll.jobs import parse_job, predict_job, run_job
from atoll.jobs.runner import SavedOutputs

GLM_JOB = textwrap.dedent("""\
    name: glm
    seed: 9
    mode: threads
    parties:
      guest:   {{role: guest, data: {{dataset: {ds}, split: hetero, party: guest, limit: {rows}}}}}
      host_0:  {{role: host,  data: {{dataset: {ds}, split: hetero, party: host, limit: {rows}}}}}
      arbiter: {{role: arbiter}}
    pipeline:
      - {{id: read, component: reader}}
      - {{id: align, component: psi, inputs: {{data: read.data}}}}
      - {{id: split, component: split, inputs: {{data: align.data}}, params: {{test_size: 0.25, stratify: false}}}}
      - {{id: scale, component: scale, inputs: {{train: split.train, test: split.test}}, params: {{method: {scale}}}}}
      - id: train
        component: {comp}
        inputs: {{train: scale.train}}
        params: {{key_bits: 1024, max_iter: {epochs}, batch_size: 64, optimizer: sgd, learning_rate: {lr},
                 early_stopping: none, alpha: 0.01}}
      - {{id: predict, component: predict, inputs: {{model: train.model, data: scale.test}}}}
      - {{id: evaluate, component: evaluate, inputs: {{scores: predict.scores}}}}
    """)


def plaintext_twin_scores(run_dir, comp_seed_params):
    from atoll.jobs.component import step_seed
    from atoll.ml.vertical._glm import fit_plaintext, mean_function, with_intercept

    cls, job = comp_seed_params
    spec = job.component("train")
    params = cls._glm_params(cls.Params.model_validate(spec.params), step_seed(job.seed, "train"))
    g, h = SavedOutputs(run_dir / "guest" / "scale"), SavedOutputs(run_dir / "host_0" / "scale")
    ws, _, _ = fit_plaintext([g["train"].values(), h["train"].values()], g["train"].y.to_numpy(float), params)
    u = with_intercept(g["test"].values(), True) @ ws[0] + h["test"].values() @ ws[1]
    return mean_function(cls.family, u)


@pytest.mark.parametrize("comp,ds,rows,epochs,lr,scale", [
    ("hetero_linr", "motor", 400, 3, 0.05, "standard"),
    ("hetero_poisson", "dvisits", 300, 2, 0.05, "minmax"),
    ("hetero_lr", "breast", 400, 2, 0.2, "standard"),
])
def test_glm_components_equal_the_plaintext_twin(tmp_path, comp, ds, rows, epochs, lr, scale):
    from atoll.jobs.registry import get

    job = parse_job(GLM_JOB.format(ds=ds, rows=rows, comp=comp, epochs=epochs, lr=lr, scale=scale), "glm.yaml")
    r = run_job(job, run_dir=tmp_path / "run")
    scores = wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())
    expected = plaintext_twin_scores(r.run_dir, (get(comp), job))
    np.testing.assert_allclose(scores["score"], expected, rtol=1e-5, atol=1e-6)
    assert r.report["evaluations"][0]["task"] == {"hetero_linr": "regression", "hetero_poisson": "poisson",
                                                  "hetero_lr": "binary"}[comp]
    # the host keeps only its own coefficients; the arbiter no model weights at all
    host = SavedOutputs(r.run_dir / "host_0" / "train")["model"]
    assert host["role"] == "host" and "intercept" not in host and "history" not in host
    arb = SavedOutputs(r.run_dir / "arbiter" / "train")["model"]
    assert "coef" not in arb


def test_batch_prediction_with_hetero_lr_replays_psi_and_scaling(tmp_path):
    job = parse_job(GLM_JOB.format(ds="breast", rows=300, comp="hetero_lr", epochs=1, lr=0.2, scale="standard"),
                    "glm.yaml")
    r = run_job(job, run_dir=tmp_path / "run")
    from atoll import datasets

    g = datasets.load("breast", "hetero", "guest").iloc[:300]
    h = datasets.load("breast", "hetero", "host").iloc[:300]
    g.iloc[::-1].to_csv(tmp_path / "g.csv")        # another order: psi re-aligns
    h.iloc[50:].to_csv(tmp_path / "h.csv")         # fewer rows: only the common ids are scored
    out = predict_job(r.run_dir, out_dir=tmp_path / "pred", data={"guest": {"path": str(tmp_path / "g.csv")},
                                                                  "host_0": {"path": str(tmp_path / "h.csv")}})
    import pandas as pd

    pred = pd.read_csv(out["guest"]).set_index("id")
    assert len(pred) == 250 and set(pred.index) == set(g.index[50:])
    # the 50 guest rows without a match are named in the command's output, not only in party.log
    assert out.warnings == ["step align (psi): 50 of guest's 300 rows had no match at the partners and were "
                            "left out (250 kept)"]
    inside = wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())
    ref = pd.Series(np.asarray(inside["score"]), index=np.asarray(inside["ids"]))
    common = ref.index.intersection(pred.index)
    assert len(common) > 10
    np.testing.assert_allclose(pred.loc[common, "score"], ref.loc[common], rtol=1e-9)


HOMO_NN_JOB = textwrap.dedent("""\
    name: nn
    seed: 4
    mode: threads
    parties:
      server:   {role: server}
      client_0: {role: client, data: {dataset: breast, split: homo, party: guest}}
      client_1: {role: client, data: {dataset: breast, split: homo, party: host}}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.3}}
      - id: train
        component: homo_nn
        inputs: {train: split.train}
        params: {rounds: 8, hidden: [8], learning_rate: 0.1, batch_size: 16}
      - {id: predict, component: predict, inputs: {model: train.model, data: split.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)


def test_homo_nn_clients_share_the_global_model(tmp_path):
    pytest.importorskip("torch")
    text = HOMO_NN_JOB
    from atoll.jobs import JobSpecError

    with pytest.raises(JobSpecError, match="at least 3 clients"):
        parse_job(text.replace("batch_size: 16}", "batch_size: 16, secure_aggregation: true}"), "nn.yaml")
    r = run_job(parse_job(text, "nn.yaml"), run_dir=tmp_path / "run")
    w = {p: SavedOutputs(r.run_dir / p / "train")["model"]["weights"] for p in ("server", "client_0", "client_1")}
    for p in ("client_0", "client_1"):
        assert all(np.array_equal(a, b) for a, b in zip(w["server"], w[p]))
    aucs = {e["party"]: e["metrics"]["auc"] for e in r.report["evaluations"]}
    assert set(aucs) == {"client_0", "client_1"} and min(aucs.values()) > 0.9  # breast: easy, well above chance


def poisson_files(folder, n=400, seed=3):
    """Synthetic counts with exposure: the guest holds id, visits (label), years (exposure) and 2
    features; the host 3 features of the same people, in another row order and scale."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    xg, xh = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
    e = rng.uniform(0.5, 3.0, n)
    y = rng.poisson(e * np.exp(0.2 + np.hstack([xg, xh]) @ np.array([0.4, -0.3, 0.25, 0.2, -0.35])))
    ids = np.arange(1000, 1000 + n)
    pd.DataFrame({"id": ids, "visits": y, "years": e, "g0": 3 * xg[:, 0] + 1, "g1": xg[:, 1]}).to_csv(
        folder / "guest.csv", index=False)
    pd.DataFrame({"id": ids[::-1], "h0": xh[::-1, 0], "h1": 5 * xh[::-1, 1], "h2": xh[::-1, 2]}).to_csv(
        folder / "host.csv", index=False)


POISSON_JOB = textwrap.dedent("""\
    name: poisson
    seed: 5
    mode: threads
    parties:
      guest:   {role: guest, data: {path: guest.csv, label: visits, exposure: years}}
      host_0:  {role: host, data: {path: host.csv}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read, component: reader}
      - {id: align, component: psi, inputs: {data: read.data}}
      - {id: split, component: split, inputs: {data: align.data}, params: {test_size: 0.25, stratify: false}}
      - {id: scale, component: scale, inputs: {train: split.train, test: split.test}}
      - id: train
        component: hetero_poisson
        inputs: {train: scale.train}
        params: {key_bits: 1024, max_iter: 10, optimizer: sgd, learning_rate: 0.3, precondition: true,
                 early_stopping: none}
      - {id: predict, component: predict, inputs: {model: train.model, data: scale.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)


def test_hetero_poisson_with_exposure_matches_sklearn_and_replays(tmp_path):
    """Exposure is kept apart from the features (never scaled), used in training and in the
    predicted counts; with ``precondition`` the federated model reaches the optimum of
    scikit-learn's PoissonRegressor on the joined data (rates y/e, weights e) on held-out rows."""
    poisson_files(tmp_path)
    (tmp_path / "job.yaml").write_text(POISSON_JOB)
    r = run_job(tmp_path / "job.yaml", run_dir=tmp_path / "run", centralized_baseline=True)
    g = SavedOutputs(r.run_dir / "guest" / "scale")
    assert list(g["train"].x.columns) == ["g0", "g1"] and g["model"]["columns"] == ["g0", "g1"]
    test = g["test"]
    import pandas as pd

    raw = pd.read_csv(tmp_path / "guest.csv").set_index("id")
    np.testing.assert_array_equal(test.exposure.to_numpy(), raw.loc[test.ids, "years"].to_numpy())
    # the predicted counts are exposure * exp(u), u from each party's saved part (the host's with
    # the constant its local whitening adds)
    gm = SavedOutputs(r.run_dir / "guest" / "train")["model"]
    hm = SavedOutputs(r.run_dir / "host_0" / "train")["model"]
    h = SavedOutputs(r.run_dir / "host_0" / "scale")["test"]
    assert gm["exposure"] and hm["offset"] != 0.0
    u = test.values() @ gm["coef"] + gm["intercept"] + h.values() @ hm["coef"] + hm["offset"]
    fed = wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())
    np.testing.assert_allclose(fed["score"], test.exposure.to_numpy() * np.exp(u), rtol=1e-9)
    (row,) = r.report["centralized_baseline"]
    assert row["twin"] == "PoissonRegressor" and row["n_test"] == 100
    dev = row["metrics"]["poisson_deviance"]
    assert abs(dev["diff"]) < 0.02 * dev["V_SUM"], dev
    assert abs(row["metrics"]["r2"]["diff"]) < 0.01
    # every party's display shows the epochs as the protocol counts through them
    from atoll.jobs.runner import read_events

    for party in ("guest", "host_0", "arbiter"):
        notes = [e["note"] for e in read_events(r.run_dir / party / "events.jsonl")
                 if e["event"] == "progress" and e["step"] == "train"]
        assert notes == [f"epoch {i}/10" for i in range(1, 11)], (party, notes)
    # atoll predict: the same rows get the same counts (exposure read again from the new file)
    out = predict_job(r.run_dir, out_dir=tmp_path / "pred", data={"guest": {"path": str(tmp_path / "guest.csv")}})
    pred = pd.read_csv(out["guest"]).set_index("id")
    assert len(pred) == 400
    np.testing.assert_allclose(pred.loc[np.asarray(fed["ids"]), "score"], fed["score"], rtol=1e-9)


SB_JOB = textwrap.dedent("""\
    name: sb
    seed: {seed}
    mode: threads
    parties:
      guest:  {{role: guest, data: {{dataset: {ds}, split: hetero, party: guest}}}}
      host_0: {{role: host,  data: {{dataset: {ds}, split: hetero, party: host}}}}
    pipeline:
      - {{id: read, component: reader}}
      - {{id: align, component: psi, inputs: {{data: read.data}}}}
      - {{id: split, component: split, inputs: {{data: align.data}}, params: {split}}}
      - id: train
        component: secureboost
        inputs: {inputs}
        params: {params}
      - {{id: predict, component: predict, inputs: {{model: train.model, data: split.test}}}}
      - {{id: evaluate, component: evaluate, inputs: {{scores: predict.scores}}}}
    """)


def test_secureboost_multiclass_job_equals_xgboost(tmp_path):
    """multi:softprob on vehicle_scale (4 classes): multiclass metrics, one-vs-rest ROC curves and
    plot, the XGBoost twin on the joined data, and per-class probabilities from atoll predict."""
    text = SB_JOB.format(seed=2, ds="vehicle_scale", split="{test_size: 0.25}", inputs="{train: split.train}",
                         params='{objective: "multi:softprob", n_estimators: 2, max_depth: 2, key_bits: 1024}')
    r = run_job(parse_job(text, "mc.yaml"), run_dir=tmp_path / "run", centralized_baseline=True)
    (ev,) = r.report["evaluations"]
    assert ev["task"] == "multiclass" and ev["n"] == 211
    assert set(ev["metrics"]) == {"accuracy", "log_loss", "auc_ovr", "precision_macro", "recall_macro", "f1_macro"}
    assert ev["metrics"]["auc_ovr"] > 0.8  # 4 balanced classes: chance is 0.5
    assert set(r.report["curves"]["evaluate@guest"]["roc_ovr"]) == {"0", "1", "2", "3"}
    assert (r.run_dir / "plots" / "roc_evaluate_guest.png").read_bytes()[:4] == b"\x89PNG"
    (row,) = r.report["centralized_baseline"]
    # lossless: the same trees as the centralised booster
    for k in ("accuracy", "auc_ovr", "log_loss"):
        assert abs(row["metrics"][k]["diff"]) < 1e-3, (k, row)
    out = predict_job(r.run_dir, out_dir=tmp_path / "pred")
    import pandas as pd

    pred = pd.read_csv(out["guest"]).set_index("id")
    assert list(pred.columns) == ["score_0", "score_1", "score_2", "score_3", "predicted", "label"]
    fed = wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())
    ids = np.asarray(fed["ids"])
    np.testing.assert_allclose(pred.loc[ids, ["score_0", "score_1", "score_2", "score_3"]].to_numpy(),
                               fed["score"], rtol=1e-9)
    assert (pred.loc[ids, "predicted"].to_numpy() == np.argmax(fed["score"], axis=1)).all()


def test_secureboost_early_stopping_on_the_validation_split(tmp_path):
    """``split`` makes validation rows, ``secureboost`` stops when their loss stops improving and
    keeps the trees up to the best round at every party; the twin grows that many rounds."""
    text = SB_JOB.format(seed=3, ds="breast", split="{test_size: 0.25, validate_size: 0.25}",
                         inputs="{train: split.train, validate: split.validate}",
                         params="{n_estimators: 8, max_depth: 2, learning_rate: 1.0, key_bits: 1024, "
                                "early_stopping_rounds: 1}")
    from atoll.jobs import JobSpecError

    no_valid = text.replace("inputs: {train: split.train, validate: split.validate}", "inputs: {train: split.train}")
    with pytest.raises(JobSpecError, match="early_stopping_rounds needs validation rows") as e:
        parse_job(no_valid, "es.yaml")
    assert e.value.line == next(i + 1 for i, line in enumerate(no_valid.splitlines()) if "early_stopping" in line)
    r = run_job(parse_job(text, "es.yaml"), run_dir=tmp_path / "run", centralized_baseline=True)
    g = SavedOutputs(r.run_dir / "guest" / "train")["model"]
    h = SavedOutputs(r.run_dir / "host_0" / "train")["model"]
    assert len(g["seconds_per_round"]) < 8  # it stopped early ...
    losses = r.report["histories"]["train"]
    assert len(losses["train_loss"]) == len(losses["valid_loss"]) == len(g["seconds_per_round"])
    assert all(b < a for a, b in zip(losses["train_loss"], losses["train_loss"][1:]))  # boosting lowers it
    assert (r.run_dir / "plots" / "loss_train.png").read_bytes()[:4] == b"\x89PNG"
    assert len(g["trees"]) == len(h["topologies"]) == g["best_iteration"] + 1  # ... and kept the best rounds
    (row,) = r.report["centralized_baseline"]
    assert abs(row["metrics"]["auc"]["diff"]) < 1e-9 and abs(row["metrics"]["log_loss"]["diff"]) < 1e-6


HOMO_DP_JOB = textwrap.dedent("""\
    name: homo_dp
    seed: 6
    mode: threads
    parties:
      server:   {role: server}
      client_0: {role: client, data: {dataset: default_credit, split: homo, party: guest, label: y, limit: 600}}
      client_1: {role: client, data: {dataset: default_credit, split: homo, party: host_1, label: y, limit: 600}}
      client_2: {role: client, data: {dataset: default_credit, split: homo, party: host_2, label: y, limit: 600}}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.25}}
      - id: train
        component: homo_lr
        inputs: {train: split.train}
        params: {rounds: 4, learning_rate: 0.05, batch_size: 32, secure_aggregation: true,
                 secagg_threshold_fraction: 0.6, dp_noise_multiplier: 0.05, dp_clip_norm: 2.0,
                 dp_noise_at: clients}
      - {id: predict, component: predict, inputs: {model: train.model, data: split.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)


def test_homo_lr_job_with_secure_aggregation_and_dp_reports_epsilon(tmp_path):
    r = run_job(parse_job(HOMO_DP_JOB, "homo_dp.yaml"), run_dir=tmp_path / "run")
    model = SavedOutputs(r.run_dir / "server" / "train")["model"]
    eps = model["history"]["epsilon"]
    assert len(eps) == 4 and all(b > a > 0 for a, b in zip(eps, eps[1:]))  # privacy loss accumulates
    aucs = [e["metrics"]["auc"] for e in r.report["evaluations"]]
    # light noise drawn from OS entropy (never from the job's seed): each client's 150 held-out rows
    # give a noisy AUC, so the check is on their mean (0.67-0.73 over repeated runs)
    assert len(aucs) == 3 and np.mean(aucs) > 0.55
    from atoll.jobs import JobSpecError

    robust = HOMO_DP_JOB.replace("secure_aggregation: true,", "strategy: krum, secure_aggregation: false,")
    with pytest.raises(JobSpecError, match=r"homo_dp.yaml:\d+: train: strategy 'krum' needs every client's own"):
        parse_job(robust, "homo_dp.yaml")


def test_secureboost_goss_job_is_lossless_against_the_plain_scheme(tmp_path):
    """GOSS parameters reach the estimator: the encrypted run keeps exactly the plain-scheme run's
    trees (same seed, same sampled rows), and the sampling changes the model."""
    def scores(scheme: str, goss: bool):
        params = (f"{{n_estimators: 3, max_depth: 3, key_bits: 1024, scheme: {scheme}, goss: {str(goss).lower()}, "
                  "top_rate: 0.3, other_rate: 0.2}")
        text = SB_JOB.format(seed=8, ds="breast", split="{test_size: 0.25}", inputs="{train: split.train}",
                             params=params)
        r = run_job(parse_job(text, f"goss_{scheme}_{goss}.yaml"), run_dir=tmp_path / f"{scheme}_{goss}")
        (ev,) = r.report["evaluations"]
        return wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())["score"], ev

    enc, ev = scores("ou", True)
    plain, _ = scores("plain", True)
    full, _ = scores("plain", False)
    np.testing.assert_allclose(enc, plain, atol=1e-12)
    assert not np.allclose(plain, full) and ev["metrics"]["auc"] > 0.9
