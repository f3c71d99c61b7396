"""The TEE route as a job: examples/credit_scoring_tee.yaml on a slice, in threads mode.

The scores the enclave sends the bank equal XGBoost's, trained on the joined training rows the
parties fed the step (same parameters and seed) and applied to the joined test rows; the report
says which backend ran; every output of the simulated backend carries the SIMULATED mark; the
shared storage holds no raw value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from atoll.jobs import parse_job, run_job
from atoll.jobs.artifacts import Table
from atoll.jobs.runner import SavedOutputs
from atoll.tee.base import SIMULATED_MARK
from atoll.tee.training import TeeTrainParams

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_scoring_tee.yaml"
MARK = SIMULATED_MARK.encode()


@pytest.fixture(scope="module")
def run(platform, tmp_path_factory):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["mode"] = "threads"
    for party in raw["parties"].values():
        if party.get("data"):
            party["data"]["limit"] = 3000
    job = parse_job(yaml.safe_dump(raw, sort_keys=False), str(EXAMPLE))
    return run_job(job, run_dir=tmp_path_factory.mktemp("run"))


def joined(run_dir: Path, ref: str) -> Table:
    import pandas as pd

    g = SavedOutputs(run_dir / "guest" / ref.split(".")[0])[ref.split(".")[1]]
    h = SavedOutputs(run_dir / "host_0" / ref.split(".")[0])[ref.split(".")[1]]
    return Table(pd.concat([g.x, h.x.loc[g.ids].add_prefix("h_")], axis=1), g.y)


def test_scores_equal_xgboost_on_the_joined_rows(run):
    d = run.run_dir
    raw = yaml.safe_load(EXAMPLE.read_text())
    train_params = next(s for s in raw["pipeline"] if s["id"] == "train")["params"]
    p = TeeTrainParams.model_validate(train_params)
    job = parse_job((d / "job.yaml").read_text(), str(EXAMPLE))
    from atoll.jobs.component import step_seed

    train, test = joined(d, "split.train"), joined(d, "split.test")
    twin = p.estimator(step_seed(job.seed, "train")).fit(train.values(), train.y.to_numpy())
    scores = SavedOutputs(d / "guest" / "predict")["scores"]
    assert np.array_equal(np.asarray(scores["ids"]), np.asarray(test.ids))
    assert np.array_equal(scores["score"], twin.predict_proba(test.values())[:, 1])
    model = SavedOutputs(d / "guest" / "train")["model"]
    assert bytes(model["model"]) == bytes(twin.get_booster().save_raw("json"))
    assert "model" not in SavedOutputs(d / "host_0" / "train")["model"]       # the shop gets no model
    assert not (d / "host_0" / "predict" / "done.json").exists() or "scores" not in SavedOutputs(d / "host_0" / "predict")
    assert run.report["evaluations"][0]["metrics"]["auc"] > 0.7


def test_report_states_the_backend(run):
    tee = run.report["tee"]
    assert [t["step"] for t in tee] == ["train", "predict"]
    for t in tee:
        assert t["backend"] == "simulated" and t["simulated"] and t["mark"] == SIMULATED_MARK
        assert t["measurement"] and t["peak_rss_mb"] > 0 and t["memory_cap_mb"] == 128
    assert MARK in (run.run_dir / "report.json").read_bytes()
    assert MARK in (run.run_dir / "report.html").read_bytes()


def test_every_output_of_the_simulated_backend_is_marked(run):
    d = run.run_dir
    checked = 0
    for party in ("guest", "host_0", "arbiter"):
        for step in ("train", "predict"):
            for f in (d / party / step).rglob("*"):
                rel = f.relative_to(d / party / step)
                if not f.is_file() or {"krs", "image"} & set(rel.parts) or rel.parts[-1] in ("done.json", "keys.json"):
                    continue  # the owner's key store, the enclave's code, the runner's bookkeeping, private keys
                assert MARK in f.read_bytes(), f"{party}/{step}/{rel} lacks the SIMULATED mark"
                checked += 1
    for f in (d / "tee-storage").iterdir():                                  # every encrypted data file
        assert MARK in f.read_bytes()[:4096]
        checked += 1
    logs = [d / "arbiter" / s / "enclave" / "enclave.log" for s in ("train", "predict")]
    for log in logs:
        lines = log.read_text().splitlines()
        assert lines and all(SIMULATED_MARK in line for line in lines)
    tee_lines = [line for p in ("guest", "host_0", "arbiter") for line in (d / p / "party.log").read_text().splitlines()
                 if ".train:" in line or ".predict:" in line or "atoll.tee" in line]
    assert tee_lines and all(SIMULATED_MARK in line for line in tee_lines)
    assert checked >= 10


def test_storage_holds_no_raw_value(run):
    d = run.run_dir
    blob = b"".join(f.read_bytes() for f in (d / "tee-storage").iterdir())
    w8 = {blob[i:i + 8] for i in range(len(blob) - 7)}
    train = joined(d, "split.train")
    values = np.unique(train.values())
    values = values[np.abs(values) > 1e-6]
    assert len(values) > 1000 and not any(v.tobytes() in w8 for v in values)
    assert not any(int(i).to_bytes(8, "little") in w8 for i in train.ids[:1000])
