"""The runner with test-only components (plaintext toy model): end to end, determinism,
failure naming step + party + cause, kill a party process then --resume, batch prediction."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from atoll.cli import app
from atoll.jobs import JobFailed, parse_job, predict_job, run_job
from atoll.jobs.runner import read_events

TOY = textwrap.dedent("""\
    name: toy
    seed: {seed}
    mode: {mode}
    plugins: [jobs_toy_components]
    parties:
      guest:  {{role: guest, data: {{dataset: breast, split: hetero, party: guest}}}}
      host_0: {{role: host,  data: {{dataset: breast, split: hetero, party: host}}}}
    pipeline:
      - {{id: read, component: reader}}
      - {{id: split, component: split, inputs: {{data: read.data}}, params: {{test_size: 0.25}}}}
      - {{id: scale, component: scale, inputs: {{train: split.train, test: split.test}}}}
      - {{id: wait, component: slow, inputs: {{data: scale.train}}, params: {{seconds: {slow}}}}}
      - {{id: train, component: toy_vlr, inputs: {{train: wait.data}}}}
      - {{id: predict, component: predict, inputs: {{model: train.model, data: scale.test}}}}
      - {{id: evaluate, component: evaluate, inputs: {{scores: predict.scores}}}}
    """)


def toy(mode="threads", seed=3, slow=0.0):
    return parse_job(TOY.format(mode=mode, seed=seed, slow=slow), "toy.yaml")


def events(run_dir: Path, party: str) -> list[dict]:
    return read_events(run_dir / party / "events.jsonl")


def test_toy_job_end_to_end_with_report_and_baseline(tmp_path):
    r = run_job(toy(), run_dir=tmp_path / "run", centralized_baseline=True)
    ev = r.report["evaluations"][0]
    assert ev["party"] == "guest" and ev["n"] == 142  # 25 % of 569 held out
    # the toy model is plain logistic regression: close to sklearn's on the same held-out rows
    cmp = r.report["centralized_baseline"][0]["metrics"]["auc"]
    assert cmp["V_FED"] > 0.98 and abs(cmp["diff"]) < 0.01
    assert r.report["centralized_baseline"][0]["n_test"] == 142
    for f in ("report.json", "report.html", "plots/roc_evaluate_guest.png", "plots/ks_evaluate_guest.png",
              "plots/loss_train.png", "guest/train/model.bin", "host_0/train/model.bin", "guest/party.log"):
        assert (r.run_dir / f).exists(), f
    assert (r.run_dir / "plots/roc_evaluate_guest.png").read_bytes()[:4] == b"\x89PNG"
    html = (r.run_dir / "report.html").read_text()
    assert "V_FED" in html and "data:image/png;base64" in html
    # each party keeps only its own part: the host's folder has no labels and no guest model
    assert not (r.run_dir / "host_0" / "predict" / "scores.bin").exists()
    host_train = np.load(r.run_dir / "host_0" / "split" / "train.npz")
    assert "y" not in host_train.files


def test_same_seed_same_metrics_other_seed_other_split(tmp_path):
    a = run_job(toy(seed=11), run_dir=tmp_path / "a").report["evaluations"][0]["metrics"]
    b = run_job(toy(seed=11), run_dir=tmp_path / "b").report["evaluations"][0]["metrics"]
    c = run_job(toy(seed=12), run_dir=tmp_path / "c").report["evaluations"][0]["metrics"]
    assert a == b
    assert a != c


def test_failing_step_names_step_party_and_cause(tmp_path):
    job = toy()
    # the host's data loses a column between validation and run: scale still works, the
    # failure we provoke is in predict: a model trained on other columns
    run = run_job(job, run_dir=tmp_path / "run")
    bad = tmp_path / "host.csv"
    from atoll import datasets
    datasets.load("breast", "hetero", "host").iloc[:, :5].to_csv(bad)
    with pytest.raises(JobFailed) as e:
        predict_job(run.run_dir, out_dir=tmp_path / "pred", data={"host_0": {"path": str(bad)}})
    msg = str(e.value)
    assert e.value.party == "host_0" and e.value.step == "read"
    assert "\n" not in msg and "step 'read' (reader) on party 'host_0'" in msg and "columns" in msg


def test_killed_party_process_then_resume_skips_finished_steps(tmp_path):
    run_dir = tmp_path / "run"
    job = toy(mode="processes", slow=60.0)
    failure: list[BaseException] = []

    def go():
        try:
            run_job(job, run_dir=run_dir)
        except BaseException as e:  # noqa: BLE001
            failure.append(e)

    t = threading.Thread(target=go)
    t.start()
    deadline = time.monotonic() + 90
    pid = None
    while time.monotonic() < deadline and pid is None:
        started = [e for e in events(run_dir, "host_0") if e["step"] == "wait" and e["event"] == "start"]
        pid = started[0]["pid"] if started else None
        time.sleep(0.1)
    assert pid is not None, "the host never reached the 'wait' step"
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    err = failure[0]
    assert isinstance(err, JobFailed)
    assert err.party == "host_0" and err.step == "wait"
    assert "process died" in str(err) and "--resume" in str(err)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    done_before = {e["step"] for e in events(run_dir, "guest") if e["event"] == "done"}
    assert done_before == {"read", "split", "scale"}

    # resume: the job file in the run folder still says 60 s; shorten it as a user fixing a cause would
    (run_dir / "job.yaml").write_text((run_dir / "job.yaml").read_text().replace("seconds: 60.0", "seconds: 0.2"))
    r = run_job(resume=run_dir)
    for party in ("guest", "host_0"):
        evs = events(run_dir, party)
        starts = [e["step"] for e in evs if e["event"] == "start"]
        # finished steps were started once (first run) and skipped on resume
        assert starts.count("read") == 1 and starts.count("split") == 1 and starts.count("scale") == 1
        assert {e["step"] for e in evs if e["event"] == "skipped"} == {"read", "split", "scale"}
        assert starts.count("wait") == 2 and starts.count("train") == 1
    assert r.report["resumed_skipped"] == ["read", "split", "scale"]
    assert r.report["evaluations"][0]["metrics"]["auc"] > 0.98
    # and it equals a run that was never interrupted
    fresh = run_job(toy(slow=0.2), run_dir=tmp_path / "fresh")
    assert fresh.report["evaluations"][0]["metrics"] == r.report["evaluations"][0]["metrics"]


def test_batch_prediction_each_party_loads_its_own_part(tmp_path):
    run = run_job(toy(), run_dir=tmp_path / "run")
    from atoll import datasets
    g = datasets.load("breast", "hetero", "guest").iloc[:50]
    h = datasets.load("breast", "hetero", "host").iloc[:50]
    g.to_csv(tmp_path / "g.csv")
    h.to_csv(tmp_path / "h.csv")
    out = predict_job(run.run_dir, out_dir=tmp_path / "pred",
                      data={"guest": {"path": str(tmp_path / "g.csv")}, "host_0": {"path": str(tmp_path / "h.csv")}})
    import pandas as pd
    pred = pd.read_csv(out["guest"])
    assert len(pred) == 50 and list(pred["id"]) == list(g.index)
    # the same rows scored inside the training run (its held-out part) get the same scores
    from atoll import wire
    scores = wire.loads((run.run_dir / "guest/predict/scores.bin").read_bytes())
    inside = dict(zip(np.asarray(scores["ids"]).tolist(), np.asarray(scores["score"]).tolist()))
    common = [i for i in pred["id"] if i in inside]
    assert common
    np.testing.assert_allclose(pred.set_index("id").loc[common, "score"], [inside[i] for i in common], rtol=1e-12)
    assert set(out) == {"guest"}


def test_cli_run_and_predict(tmp_path):
    job = tmp_path / "toy.yaml"
    job.write_text(TOY.format(mode="threads", seed=1, slow=0.0))
    res = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "run"), "-q", "--centralized-baseline"])
    assert res.exit_code == 0, res.output
    assert "V_FED" in res.output and "auc" in res.output
    res = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 0, res.output  # nothing left to do: every step is kept
    skipped = [e["step"] for e in events(tmp_path / "run", "guest") if e["event"] == "skipped"]
    assert skipped == ["read", "split", "scale", "wait", "train", "predict", "evaluate"]
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "--out", str(tmp_path / "p"), "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "guest" / "predict.csv").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOY.format(mode="threads", seed=1, slow=0.0).replace("component: toy_vlr", "component: nope"))
    res = CliRunner().invoke(app, ["run", str(bad), "-q"])
    assert res.exit_code == 1 and "unknown component 'nope'" in res.output
    assert not (tmp_path / "runs").exists()


def test_independent_branches_run_at_the_same_time(tmp_path):
    text = textwrap.dedent("""\
        name: branches
        mode: threads
        plugins: [jobs_toy_components]
        parties:
          guest:  {role: guest, data: {dataset: breast, split: hetero, party: guest}}
          host_0: {role: host,  data: {dataset: breast, split: hetero, party: host}}
        pipeline:
          - {id: read, component: reader}
          - {id: a, component: slow, inputs: {data: read.data}, params: {seconds: 0.6}}
          - {id: b, component: slow, inputs: {data: read.data}, params: {seconds: 0.6}}
          - {id: c, component: scale, inputs: {train: a.data, test: b.data}}
        """)
    r = run_job(parse_job(text, "branches.yaml"), run_dir=tmp_path / "run")
    evs = events(r.run_dir, "guest")
    t = {(e["step"], e["event"]): e["t"] for e in evs}
    # b started before a finished (and the other way round): the two branches overlapped
    assert t[("b", "start")] < t[("a", "done")] and t[("a", "start")] < t[("b", "done")]
    assert t[("c", "start")] >= max(t[("a", "done")], t[("b", "done")])


def test_csv_and_parquet_paths_relative_to_the_job_file_with_own_id_and_label_columns(tmp_path):
    from atoll import datasets

    g = datasets.load("breast", "hetero", "guest").rename(columns={"y": "malignant"})
    g.index.name = "patient"
    h = datasets.load("breast", "hetero", "host")
    h.index.name = "patient"
    (tmp_path / "data").mkdir()
    g.to_csv(tmp_path / "data" / "guest.csv")
    h.reset_index()[["x0", "x1", "patient", "x2"]].to_parquet(tmp_path / "data" / "host.parquet", index=False)
    job = tmp_path / "job.yaml"
    job.write_text(TOY.format(mode="threads", seed=1, slow=0.0).replace(
        "{dataset: breast, split: hetero, party: guest}", "{path: data/guest.csv, label: malignant}").replace(
        "{dataset: breast, split: hetero, party: host}", "{path: data/host.parquet, id: patient}"))
    r = run_job(job, run_dir=tmp_path / "run")
    assert r.report["evaluations"][0]["metrics"]["auc"] > 0.98
    host = np.load(r.run_dir / "host_0" / "read" / "data.npz")
    assert list(host["columns"]) == ["x0", "x1", "x2"] and str(host["id_name"]) == "patient"
    bad = job.read_text().replace("label: malignant", "label: benign")
    job.write_text(bad)
    from atoll.jobs import JobSpecError
    with pytest.raises(JobSpecError, match="label column 'benign' is not in guest.csv"):
        run_job(job, run_dir=tmp_path / "run2")
    assert not (tmp_path / "run2").exists()


def test_live_progress_table_renders(tmp_path):
    from rich.console import Console
    from atoll.jobs.progress import Monitor

    r = run_job(toy(), run_dir=tmp_path / "run")
    buf = Console(force_terminal=True, width=120, record=True, file=open(os.devnull, "w"))
    m = Monitor(toy(), r.run_dir, ["read", "train"], console=buf)
    m.start()  # a terminal: the live table
    time.sleep(0.5)
    m.stop()
    text = buf.export_text()
    assert "done" in text and "guest (guest)" in text and "host_0 (host)" in text


def test_heartbeat_lines_name_each_party_and_its_epoch(tmp_path):
    """Without a terminal the display prints a line per event and, while a step runs, a heartbeat
    naming each party with the epoch / round its protocol reached (TaskContext.counted); progress
    events do not postpone the heartbeat."""
    from rich.console import Console
    from atoll.jobs.progress import Monitor
    from atoll.jobs.runner import EventLog

    now = time.time()
    for party in ("guest", "host_0"):
        (tmp_path / party).mkdir()
        log = EventLog(tmp_path / party / "events.jsonl")
        log.write(party=party, step="train", component="toy_vlr", event="start", t=now - 5)
    console = Console(record=True, width=200, force_terminal=False, file=open(os.devnull, "w"))
    m = Monitor(toy(), tmp_path, ["train"], console=console, interval=0.05, heartbeat=0.3)
    m.start()
    for i in range(8):  # progress events keep coming, faster than the heartbeat
        EventLog(tmp_path / "guest" / "events.jsonl").write(party="guest", step="train", component="toy_vlr",
                                                            event="progress", fraction=i / 8, note=f"epoch {i + 1}/8")
        time.sleep(0.1)
    m.stop()
    text = console.export_text()
    assert "start train (toy_vlr) @ guest" in text
    assert "running train (toy_vlr) @ guest (epoch" in text and ", host_0 for" in text, text
    assert "epoch 8/8" in m._cell("train", "guest")


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_failure_in_one_branch_stops_the_job_promptly(tmp_path, mode):
    text = textwrap.dedent(f"""\
        name: boom
        mode: {mode}
        plugins: [jobs_toy_components]
        parties:
          guest:  {{role: guest, data: {{dataset: breast, split: hetero, party: guest}}}}
          host_0: {{role: host,  data: {{dataset: breast, split: hetero, party: host}}}}
        pipeline:
          - {{id: read, component: reader}}
          - {{id: long, component: slow, inputs: {{data: read.data}}, params: {{seconds: 120}}}}
          - {{id: bad, component: boom, inputs: {{data: read.data}}, params: {{party: host_0}}}}
        """)
    t0 = time.monotonic()
    with pytest.raises(JobFailed) as e:
        run_job(parse_job(text, "boom.yaml"), run_dir=tmp_path / "run")
    assert time.monotonic() - t0 < 60  # not the 120 s of the sibling branch, nor a 600 s timeout
    assert e.value.step == "bad" and e.value.party == "host_0"
    assert str(e.value).startswith("job failed at step 'bad' (boom) on party 'host_0': ValueError: boom")
    assert "\n" not in str(e.value) and "two lines" in str(e.value)  # one line, the whole cause
