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
    inside = wire.loads((r.run_dir / "guest" / "predict" / "scores.bin").read_bytes())
    ref = pd.Series(np.asarray(inside["score"]), index=np.asarray(inside["ids"]))
    common = ref.index.intersection(pred.index)
    assert len(common) > 10
    np.testing.assert_allclose(pred.loc[common, "score"], ref.loc[common], rtol=1e-9)


def test_homo_nn_clients_share_the_global_model(tmp_path):
    pytest.importorskip("torch")
    text = textwrap.dedent("""\
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
    from atoll.jobs import JobSpecError

    with pytest.raises(JobSpecError, match="at least 3 clients"):
        parse_job(text.replace("batch_size: 16}", "batch_size: 16, secure_aggregation: true}"), "nn.yaml")
    r = run_job(parse_job(text, "nn.yaml"), run_dir=tmp_path / "run")
    w = {p: SavedOutputs(r.run_dir / p / "train")["model"]["weights"] for p in ("server", "client_0", "client_1")}
    for p in ("client_0", "client_1"):
        assert all(np.array_equal(a, b) for a, b in zip(w["server"], w[p]))
    aucs = {e["party"]: e["metrics"]["auc"] for e in r.report["evaluations"]}
    assert set(aucs) == {"client_0", "client_1"} and min(aucs.values()) > 0.9  # breast: easy, well above chance
