"""Resume like make: a step runs again when its inputs changed (data file content, parameters,
upstream outputs) and so does everything downstream; unchanged steps are kept; the report
says which ran again and why. Threads mode, the plaintext test components, small data."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from atoll import datasets
from atoll.jobs import JobFailed, parse_job, run_job
from atoll.jobs.resume import fingerprints, plan_resume
from atoll.jobs.runner import read_events
from atoll.jobs.store import RunFolder

JOB = textwrap.dedent("""\
    name: resume
    seed: 5
    mode: threads
    plugins: [jobs_toy_components]
    parties:
      guest:  {role: guest, data: {path: guest.csv, label: y}}
      host_0: {role: host,  data: {path: host.csv}}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.25}}
      - {id: scale, component: scale, inputs: {train: split.train, test: split.test}}
      - {id: train, component: toy_vlr, inputs: {train: scale.train}}
      - {id: predict, component: predict, inputs: {model: train.model, data: scale.test}}
      - {id: evaluate, component: evaluate, inputs: {scores: predict.scores}}
    """)
STEPS = ["read", "split", "scale", "train", "predict", "evaluate"]


def write_data(folder, nan_at=None):
    g = datasets.load("breast", "hetero", "guest")
    h = datasets.load("breast", "hetero", "host")
    if nan_at is not None:
        h.iloc[nan_at, 2] = np.nan
    g.to_csv(folder / "guest.csv")
    h.to_csv(folder / "host.csv")


def started(run_dir, party="guest"):
    return [e["step"] for e in read_events(run_dir / party / "events.jsonl") if e["event"] == "start"]


@pytest.fixture
def job_file(tmp_path):
    (tmp_path / "job.yaml").write_text(JOB)
    return tmp_path / "job.yaml"


def test_a_fixed_csv_reruns_read_and_everything_downstream(tmp_path, job_file):
    # the user's report: a job failed on NaN, the user fixed the CSV, --resume kept
    # read/split/scale and failed the same way
    write_data(tmp_path, nan_at=5)
    run_dir = tmp_path / "run"
    with pytest.raises(JobFailed, match="NaN"):
        run_job(job_file, run_dir=run_dir)
    assert started(run_dir) == STEPS  # it failed at the last step, everything before completed
    write_data(tmp_path)  # fixed: same file name, new content
    r = run_job(resume=run_dir)
    assert started(run_dir) == STEPS + STEPS  # every step ran again, read first
    assert r.report["evaluations"][0]["metrics"]["auc"] > 0.98
    ran = r.report["resume"]["ran_again"]
    assert list(ran) == STEPS and r.report["resume"]["kept"] == []
    assert ran["read"] == ["the data of party 'host_0' changed"]
    assert all("upstream step 'read' runs again" in ran[s] for s in STEPS[1:])
    assert "it is not complete at 'guest'" in ran["evaluate"]
    # reasons name steps and parties, never values or files
    assert "host.csv" not in json.dumps(r.report["resume"])
    html = (run_dir / "report.html").read_text()
    assert "read (resumed: ran again)" in html and "the data of party &#x27;host_0&#x27; changed" in html
    # and it equals a run that never saw the broken file
    fresh = run_job(job_file, run_dir=tmp_path / "fresh")
    assert fresh.report["evaluations"][0]["metrics"] == r.report["evaluations"][0]["metrics"]


def test_an_unchanged_resume_reruns_nothing(tmp_path, job_file):
    write_data(tmp_path)
    run_dir = tmp_path / "run"
    first = run_job(job_file, run_dir=run_dir)
    r = run_job(resume=run_dir)
    assert started(run_dir) == STEPS and started(run_dir, "host_0") == STEPS  # nothing started twice
    assert r.report["resume"] == {"kept": STEPS, "ran_again": {}}
    assert r.report["evaluations"] == first.report["evaluations"]
    # touching a file without changing its content is no change either
    (tmp_path / "host.csv").write_bytes((tmp_path / "host.csv").read_bytes())
    assert plan_resume(parse_job(job_file.read_text(), str(job_file)), RunFolder(run_dir)).rerun == {}


def test_changed_parameters_rerun_that_step_and_its_downstream_only(tmp_path, job_file):
    write_data(tmp_path)
    run_dir = tmp_path / "run"
    run_job(job_file, run_dir=run_dir)
    (run_dir / "job.yaml").write_text((run_dir / "job.yaml").read_text().replace(
        "component: scale, inputs: {train: split.train, test: split.test}",
        "component: scale, inputs: {train: split.train, test: split.test}, params: {method: minmax}"))
    r = run_job(resume=run_dir)
    assert r.report["resume"]["kept"] == ["read", "split"]
    assert r.report["resume"]["ran_again"] == {
        "scale": ["its parameters changed"], "train": ["upstream step 'scale' runs again"],
        "predict": ["upstream step 'scale' runs again"], "evaluate": ["upstream step 'scale' runs again"]}
    assert started(run_dir) == STEPS + ["scale", "train", "predict", "evaluate"]
    assert r.report["resumed_skipped"] == ["read", "split"]


def test_fingerprints_follow_content_params_and_wiring(tmp_path, job_file):
    write_data(tmp_path)
    job = parse_job(job_file.read_text(), str(job_file))
    a = fingerprints(job, "host_0")
    assert fingerprints(job, "host_0") == a
    h = pd.read_csv(tmp_path / "host.csv", index_col=0)
    h.iloc[0, 0] += 1e-9  # one value, a tiny change
    h.to_csv(tmp_path / "host.csv")
    b = fingerprints(job, "host_0")
    assert all(a[s].digest != b[s].digest for s in STEPS)  # everything depends on the data
    assert fingerprints(job, "guest")["read"].parts["data"] != b["read"].parts["data"]
    other = parse_job(job_file.read_text().replace("seed: 5", "seed: 6"), str(job_file))
    c = fingerprints(other, "host_0")
    assert c["read"].parts["seed"] != b["read"].parts["seed"] and c["read"].parts["data"] == b["read"].parts["data"]
