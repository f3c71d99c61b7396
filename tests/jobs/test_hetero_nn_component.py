"""The ``hetero_nn`` component in a job (threads, a 4,000-row slice of default_credit, the arbiter
as dealer): secret-shared layer through ``predict`` / ``evaluate`` against its centralised twin
(``--centralized-baseline``), each party keeping only its part; load-time checks."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")

from atoll.jobs import parse_job, run_job  # noqa: E402

JOB = textwrap.dedent("""\
    name: split_nn
    seed: 3
    mode: threads
    parties:
      guest:   {role: guest, data: {dataset: default_credit, split: hetero, party: guest, label: y, limit: 4000}}
      host_0:  {role: host,  data: {dataset: default_credit, split: hetero, party: host, limit: 4000}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.25}}
      - id: train
        component: hetero_nn
        inputs: {train: split.train}
        params:
          mode: ss
          epochs: 3
          batch_size: 256
          bottom: {kind: mlp, hidden: [16], output_dim: 8}
          bottoms: {host_0: {kind: mlp, hidden: [12], output_dim: 6}}
          top: {hidden: [8]}
      - {id: predict, component: predict, inputs: {model: train.model, data: split.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)


def test_hetero_nn_job_matches_its_central_twin(tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = run_job(parse_job(JOB, "split_nn.yaml"), run_dir=tmp_path / "run", centralized_baseline=True)
    finally:
        torch.set_num_threads(before)
    (row,) = r.report["centralized_baseline"]
    assert row["component"] == "hetero_nn" and row["n_test"] == 1000
    auc = row["metrics"]["auc"]
    print(f"\njob AUC federated {auc['V_FED']:.4f} central {auc['V_SUM']:.4f}")
    assert auc["V_SUM"] > 0.65 and abs(auc["diff"]) <= 0.01, auc
    from atoll.jobs.runner import SavedOutputs

    g = SavedOutputs(r.run_dir / "guest" / "train")["model"]
    h = SavedOutputs(r.run_dir / "host_0" / "train")["model"]
    assert g["host_dims"] == {"host_0": 6} and g["top"] and h["top"] is None     # the top stays at the guest
    assert np.asarray(g["links"]["host_0"]["w"]).dtype == np.uint64                # W_h only as shares
    assert g["report"]["leakage"]["norm_auc"] > 0.9                              # reported next to the AUC


def test_hetero_nn_job_checks():
    from atoll.errors import AtollError

    bad = JOB.replace("bottoms: {host_0:", "bottoms: {host_9:")
    with pytest.raises(AtollError, match="host_9"):
        parse_job(bad, "split_nn.yaml")
    with pytest.raises(AtollError):
        parse_job(JOB.replace("mode: ss", "mode: secret"), "split_nn.yaml")
