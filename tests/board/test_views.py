"""The board's views as pure functions: what a person sees of a job's DAG, the job list, partners."""

from __future__ import annotations

from atoll.board import views

JOB_TEXT = """
name: j
parties:
  guest: {role: guest, node: bank, data: {registered: credit}}
  host_0: {role: host, node: shop, data: {registered: purchases}}
pipeline:
  - {id: read, component: reader}
  - {id: align, component: psi, inputs: {data: read.data}}
  - {id: stats, component: reader}
  - {id: train, component: hetero_lr, inputs: {train: align.data, extra: stats.data}, params: {max_iter: 3}}
"""


def _job(state: str, tasks: list[dict]) -> dict:
    return {"id": "j-1", "name": "j", "state": state, "message": "", "attempt": 1, "initiator": "bank",
            "own_party": "guest", "created": 1.0, "updated": 2.0,
            "parties": [{"party": "guest", "node": "bank", "role": "guest", "decision": "accepted"},
                        {"party": "host_0", "node": "shop", "role": "host", "decision": "accepted"}],
            "tasks": tasks}


def test_dag_places_steps_in_waves_and_shows_every_partys_state():
    tasks = [{"party": "guest", "step": "read", "state": "done", "error": "", "attempt": 1, "started": 1, "finished": 2},
             {"party": "host_0", "step": "read", "state": "failed", "error": "PolicyRefused at step 'read'",
              "attempt": 1, "started": 1, "finished": 2},
             {"party": "guest", "step": "align", "state": "running", "error": "", "attempt": 1, "started": 2,
              "finished": None}]
    v = views.dag(_job("running", tasks), JOB_TEXT)
    steps = {s["id"]: s for s in v["steps"]}
    assert [s["id"] for s in v["steps"]] == ["read", "align", "stats", "train"]
    assert {k: s["wave"] for k, s in steps.items()} == {"read": 0, "stats": 0, "align": 1, "train": 2}
    assert steps["train"]["needs"] == ["align", "stats"] and steps["train"]["params"] == {"max_iter": 3}
    assert steps["read"]["tasks"]["host_0"]["state"] == "failed"
    assert steps["read"]["tasks"]["host_0"]["error"] == "PolicyRefused at step 'read'"
    assert steps["align"]["tasks"]["guest"]["state"] == "running"
    assert steps["align"]["tasks"]["host_0"]["state"] == "waiting"  # the job runs; this task has not started
    assert v["data"] == {"guest": {"registered": "credit"}, "host_0": {"registered": "purchases"}}
    assert not v["ended"]
    before = views.dag(_job("proposed", []), JOB_TEXT)
    assert {t["state"] for s in before["steps"] for t in s["tasks"].values()} == {"pending"}
    assert views.dag(_job("failed", tasks), JOB_TEXT)["ended"]


def test_a_state_a_peer_made_up_is_shown_as_other_and_bad_job_text_as_no_steps():
    tasks = [{"party": "host_0", "step": "read", "state": "<b>pwned</b>", "error": "", "attempt": 1,
              "started": None, "finished": None}]
    cell = views.dag(_job("running", tasks), JOB_TEXT)["steps"][0]["tasks"]["host_0"]
    assert cell["state"] == "other" and cell["reported"] == "<b>pwned</b>"  # the page shows it as text
    assert views.dag(_job("running", []), "pipeline: [: not yaml")["steps"] == []
    assert views.pipeline("just a string") == [] and views.party_data("- a list") == {}
    cyclic = "pipeline:\n  - {id: a, component: reader, inputs: {x: b.data}}\n  - {id: b, component: psi, inputs: {x: a.data}}"
    assert [s["wave"] for s in views.dag(_job("failed", []), cyclic)["steps"]] == [0, 1]


def test_job_rows_and_filters():
    proposal = {"parties": {"guest": {"node": "bank"}, "host_0": {"node": "shop"}}, "job_text": JOB_TEXT}
    rows = [views.job_row({**_job("done", []), "id": "a", "created": 100.0}, proposal),
            views.job_row({**_job("failed", []), "id": "b", "created": 200.0}, {"parties": {}, "job_text": ""})]
    assert rows[0]["nodes"] == ["bank", "shop"] and rows[0]["components"] == ["hetero_lr", "psi", "reader"]
    ids = lambda **kw: [r["id"] for r in views.filter_jobs(rows, **kw)]  # noqa: E731
    assert ids() == ["a", "b"] and ids(state="failed") == ["b"] and ids(partner="shop") == ["a"]
    assert ids(component="psi") == ["a"] and ids(since=150) == ["b"] and ids(until=150) == ["a"]


def test_partner_certificate_warnings():
    now = 1_000_000.0
    rows = views.partner_rows([{"name": "a", "certificate_expires": now + 90 * 86400},
                               {"name": "b", "certificate_expires": now + 5 * 86400},
                               {"name": "c", "certificate_expires": now - 1},
                               {"name": "d", "certificate_expires": None}], now)
    assert [r["warning"] for r in rows] == ["", "certificate expires in 5 days", "certificate expired",
                                            "certificate unreadable"]
    assert round(rows[0]["days_left"]) == 90


def test_model_summary_shows_own_columns_weights_and_a_convergence_warning():
    import numpy as np

    lr = views.model_summary({"component": "hetero_lr", "role": "guest", "coef": np.array([0.1, -2.0, 0.5]),
                              "intercept": np.float64(-0.3), "n_iter": np.int64(3), "converged": False,
                              "columns": ["age", "<b>debt</b>", "income"], "family": "logistic"})
    assert [(r["column"], r["value"]) for r in lr["weights"]] == [("<b>debt</b>", -2.0), ("income", 0.5), ("age", 0.1)]
    assert lr["weight_kind"] == "coefficient" and lr["facts"]["intercept"] == -0.3 and lr["facts"]["n_iter"] == 3
    assert lr["warnings"] == ["did not converge in 3 iterations (raise max_iter or the learning rate, or loosen "
                              "the tolerance)"]
    assert views.model_summary({**lr, "coef": [1.0, 2.0, 3.0], "converged": True, "columns": ["a", "b", "c"]})[
        "warnings"] == []
    sb = views.model_summary({"component": "secureboost", "role": "guest", "columns": ["a", "b"], "trees": [{}, {}],
                              "feature_gain": {"guest": np.array([1.0, 3.0]), "host_0": np.array([9.0, 9.0, 9.0])}})
    assert sb["weight_kind"] == "split gain" and [r["column"] for r in sb["weights"]] == ["b", "a"]
    assert sb["facts"]["trees"] == 2 and len(sb["weights"]) == 2  # the hosts' gains are not this party's columns
    host = views.model_summary({"component": "secureboost", "role": "host", "columns": ["u", "v", "w"],
                                "topologies": [{}], "lookup": [[[0, 2, 0.5, True], [1, 2, 0.1, False], [4, 0, 1.0, True]]]})
    assert [(r["column"], r["value"]) for r in host["weights"]] == [("w", 2.0), ("u", 1.0), ("v", 0.0)]
    assert views.model_summary("not a model") is None
