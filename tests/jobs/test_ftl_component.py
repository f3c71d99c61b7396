"""The ``hetero_ftl`` component in a job (threads mode): the example job through predict / evaluate
at the host on its held-out users, and the guest-side scores; against the algorithm run directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from atoll.jobs import parse_job, run_job
from atoll.jobs.runner import SavedOutputs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transfer_learning_ftl.yaml"


def _job(tmp_path, **params):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["pipeline"][1]["params"].update(params)
    spec["mode"] = "threads"
    for party in ("guest", "host"):   # data paths are relative to the job file: make them absolute
        data = spec["parties"][party]["data"]
        data["path"] = str(EXAMPLE.parent / data["path"])
    f = tmp_path / "ftl.yaml"
    f.write_text(yaml.safe_dump(spec))
    return parse_job(f.read_text(), str(f))


@pytest.mark.parametrize("mode", ["plain", "ss"])
def test_ftl_job_scores_held_out_host_users(tmp_path, mode):
    job = _job(tmp_path, mode=mode, max_iter=3, random_state=1)
    r = run_job(job, run_dir=tmp_path / "run")
    scores = SavedOutputs(r.run_dir / "host" / "predict")["scores"]
    assert len(scores["score"]) == 1900                       # the 100 overlap users are left out
    model = SavedOutputs(r.run_dir / "host" / "train")["model"]
    assert len(model["overlap_ids"]) == 100
    assert not set(model["overlap_ids"]) & set(map(str, scores["ids"]))
    ev = SavedOutputs(r.run_dir / "host" / "evaluate")["metrics"]
    assert ev["n"] == 1900 and 0.0 <= ev["metrics"]["auc"] <= 1.0
    # the job's model parts score as the algorithm's own parts do
    from atoll.ml.transfer import FTLPartyModel

    g = FTLPartyModel.from_fields(SavedOutputs(r.run_dir / "guest" / "train")["model"]["part"])
    h = FTLPartyModel.from_fields(model["part"])
    host = SavedOutputs(r.run_dir / "host" / "read")["data"]
    test = host.take([i for i in host.ids if str(i) not in set(model["overlap_ids"])])
    ref = 1 / (1 + np.exp(-(h.represent(test.values()) @ g.phi)))
    np.testing.assert_allclose(scores["score"], ref, atol=1e-4 if mode == "ss" else 1e-12)


def test_ftl_job_scores_to_the_guest(tmp_path):
    job = _job(tmp_path, mode="plain", max_iter=2, predict_to="guest")
    r = run_job(job, run_dir=tmp_path / "run")
    scores = SavedOutputs(r.run_dir / "guest" / "predict")["scores"]
    assert len(scores["score"]) == 1900 and scores["label"] is None
    assert "scores" not in SavedOutputs(r.run_dir / "host" / "predict")
