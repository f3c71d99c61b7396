"""Two jobs at once between the same three parties, each party one OS process with ONE gRPC +
mutual TLS endpoint serving both (the node's shape): one party's task in job J dies mid-protocol;
job K finishes with the same model as when it runs alone. Hetero LR on 160 rows of breast,
1024-bit Paillier keys (tests only), two epochs."""

from __future__ import annotations

import textwrap

import numpy as np

from atoll.federation import Party, launch
from atoll.jobs import parse_job, run_job
from atoll.jobs.store import RunFolder

import fed_jobs

JOB = textwrap.dedent("""\
    name: concurrent
    seed: 21
    mode: threads
    parties:
      guest:   {role: guest, data: {dataset: breast, split: hetero, party: guest, limit: 160}}
      host_0:  {role: host,  data: {dataset: breast, split: hetero, party: host, limit: 160}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read, component: reader}
      - {id: align, component: psi, inputs: {data: read.data}}
      - {id: split, component: split, inputs: {data: align.data}, params: {test_size: 0.25}}
      - {id: scale, component: scale, inputs: {train: split.train, test: split.test}}
      - id: train
        component: hetero_lr
        inputs: {train: scale.train}
        params: {key_bits: 1024, max_iter: 2, batch_size: 64, optimizer: sgd, learning_rate: 0.2,
                 early_stopping: none}
      - {id: predict, component: predict, inputs: {model: train.model, data: scale.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)
PARTIES = ("guest", "host_0", "arbiter")


def test_a_task_dying_in_one_job_leaves_the_concurrent_job_with_the_same_model_as_alone(tmp_path):
    kw = {"job_text": JOB, "run_root": str(tmp_path), "victim": "host_0", "kill_after": 5}
    roles = parse_job(JOB).parties
    out = launch({p: Party(roles[p].role, fed_jobs.two_jobs, kw) for p in PARTIES}, mode="processes",
                 timeout=120)
    for p in PARTIES:
        assert out[p]["job-K"]["ok"], (p, out[p]["job-K"])
        assert not out[p]["job-J"]["ok"]
        assert out[p]["open_after"] == [] and out[p]["stats_after"] == {}  # both jobs freed
    assert "KilledTask" in out["host_0"]["job-J"]["error"]
    for p in ("guest", "arbiter"):  # told promptly, by the job's state at host_0 or a peer's abort
        err = out[p]["job-J"]["error"]
        assert "PeerFailed" in err and out[p]["job-J"]["seconds"] < 30, err
        assert "/srv/secret" not in err and "killed" not in err
    alone = run_job(parse_job(JOB), run_dir=tmp_path / "alone")
    k, a = RunFolder(tmp_path / "job-K"), RunFolder(alone.run_dir)
    for p in PARTIES:
        got, want = k.party(p).outputs("train")["model"], a.party(p).outputs("train")["model"]
        assert sorted(got) == sorted(want)
        for key in want:
            if isinstance(want[key], np.ndarray):
                np.testing.assert_array_equal(got[key], want[key])
    assert k.party("guest").outputs("evaluate")["metrics"]["metrics"] == alone.report["evaluations"][0]["metrics"]
