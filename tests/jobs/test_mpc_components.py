"""The MPC components in a job (threads mode, motor's 800 rows, the arbiter as dealer): ``ss_linr``
through ``predict`` / ``evaluate`` against its centralised twin in both reveal modes (the
wiring; the 1 % RMSE convergence check is tests/ml/vertical/test_ss_lr.py), and
``hetero_pearson``'s output at each party against numpy on the rows it saw."""

from __future__ import annotations

import textwrap

import numpy as np

from atoll.jobs import parse_job, run_job
from atoll.jobs.runner import SavedOutputs

JOB = textwrap.dedent("""\
    name: mpc
    seed: 5
    mode: threads
    parties:
      guest:   {role: guest, data: {dataset: motor, split: hetero, party: guest, label: motor_speed}}
      host_0:  {role: host,  data: {dataset: motor, split: hetero, party: host}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.25, stratify: false}}
      - {id: corr, component: hetero_pearson, inputs: {data: split.train}}
      - id: train
        component: ss_linr
        inputs: {train: split.train}
        params: {max_iter: 100, learning_rate: 0.4, provider: dealer, reveal: REVEAL}
      - {id: predict, component: predict, inputs: {model: train.model, data: split.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)


def test_ss_linr_job_matches_its_twin_in_both_reveal_modes(tmp_path):
    rmse = {}
    for reveal in ("respectively", "shared"):
        job = parse_job(JOB.replace("REVEAL", reveal), "mpc.yaml")
        r = run_job(job, run_dir=tmp_path / reveal, centralized_baseline=True)
        # the report: each party's coefficients on its own columns, at that party; none when shared
        (model,) = [m for m in r.report["models"] if m["step"] == "train"]
        for party in ("guest", "host_0"):
            part = model["parts"][party]
            own = SavedOutputs(r.run_dir / party / "train")["model"]["columns"]
            if reveal == "respectively":
                assert part["weight_kind"] == "coefficient" and {w["column"] for w in part["weights"]} == set(own)
            else:
                assert not part["weights"] and "secret-shared" in part["facts"]["weights"]
        (row,) = r.report["centralized_baseline"]
        assert row["component"] == "ss_linr"
        m = row["metrics"]["rmse"]
        assert abs(m["diff"]) <= 0.1 * m["V_SUM"], m   # 100 plain SGD epochs on ill-conditioned data
        rmse[reveal] = m["V_FED"]
    assert abs(rmse["shared"] - rmse["respectively"]) <= 1e-3 * rmse["respectively"]


def test_hetero_pearson_component_output(tmp_path):
    job = parse_job(JOB.replace("REVEAL", "respectively"), "mpc.yaml")
    r = run_job(job, run_dir=tmp_path / "run")
    from atoll.jobs.runner import SavedOutputs

    train = SavedOutputs(r.run_dir / "guest" / "split")["train"]
    host_train = SavedOutputs(r.run_dir / "host_0" / "split")["train"]
    ref = np.corrcoef(np.hstack([train.values(), host_train.values()]).T)
    for party in ("guest", "host_0"):
        model = SavedOutputs(r.run_dir / party / "corr")["model"]
        assert np.abs(np.asarray(model["corr"]) - ref).max() <= 1e-4
        assert model["columns"] == list(train.x.columns) + list(host_train.x.columns)
        np.testing.assert_allclose(model["vif"], np.diag(np.linalg.inv(ref)), rtol=1e-3)
