"""The node's SQL store on SQLite and PostgreSQL: migrations, the run store interface, the
audit chain (tamper detection) and signed grants (every limit)."""

import time

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, select, update

from atoll.jobs.artifacts import Table
from atoll.jobs.store import StepRecord
from atoll.node.audit import AuditLog
from atoll.node.data import PolicyRefused, Registry, Use, check_grant
from atoll.node.signing import Signer
from atoll.node.store import SCHEMA_VERSION, AuditHead, AuditRecord, Base, Database, Grant, SqlRunStore


@pytest.fixture(scope="module")
def migrated(db_url):
    d = Database(db_url)
    d.upgrade()
    yield d
    d.close()


@pytest.fixture
def db(migrated):
    """The migrated database, emptied after each test."""
    yield migrated
    with migrated.session.begin() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())


def test_migrations_make_the_models_schema(db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert db.revision() == SCHEMA_VERSION
    db.upgrade()  # idempotent
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_run_store_interface(db, tmp_path):
    store = SqlRunStore(db, "job-1", tmp_path / "work")
    assert not store.exists()
    store.create("name: x\n", {"status": "created", "mode": "node"})
    assert store.exists() and store.job_text() == "name: x\n"
    assert store.update_meta(status="running", attempt=2) == {"status": "running", "mode": "node", "attempt": 2}
    run = store.party("guest")
    assert run.record("read") is None and len(run.outputs("read")) == 0
    folder = run.begin_step("read")
    assert folder.is_dir() and not any(folder.iterdir())
    x = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}, index=pd.Index(["u1", "u2"], name="id"))
    table = Table(x, pd.Series([0.0, 1.0], index=x.index, name="y"))
    model = {"coef": np.array([0.5, -1.5]), "columns": ["a", "b"], "n": 3}
    rec = StepRecord("read", ("data", "model"), 1.5, "train", "fp", {"params": "p"}, time.time())
    run.complete_step(rec, {"data": table, "model": model})
    got = run.record("read")
    assert got.fingerprint == "fp" and got.parts == {"params": "p"} and set(got.outputs) == {"data", "model"}
    out = run.outputs("read")
    assert sorted(out) == ["data", "model"]
    pd.testing.assert_frame_equal(out["data"].x, table.x)
    assert list(out["data"].y) == [0.0, 1.0]
    np.testing.assert_array_equal(out["model"]["coef"], model["coef"])
    run.begin_step("read")  # a step that runs again starts clean
    assert run.record("read") is None
    run.event(step="read", event="start")
    run.event(step="read", event="done", seconds=1.0)
    evs, cur = run.events()
    assert [e["event"] for e in evs] == ["start", "done"] and all("t" in e for e in evs)
    run.event(step="align", event="start")
    more, cur2 = run.events(cur)
    assert [e["step"] for e in more] == ["align"] and cur2 > cur
    assert store.party("host_0").events() == ([], 0)
    import logging

    h = run.log_handler()
    lg = logging.getLogger("atoll.test.node_store")
    lg.addHandler(h)
    lg.warning("hello %s", "there")
    lg.removeHandler(h)
    assert [line["message"] for line in run.log_lines()] == ["atoll.test.node_store: hello there"]
    store.save_report({"job": "x", "evaluations": [{"auc": 0.8}]}, "<html></html>", {"roc.png": b"\x89PNG"})
    assert store.report()["evaluations"] == [{"auc": 0.8}]


def _chain(db, n=6):
    log = AuditLog(db, "bank", Signer.generate())
    for i in range(n):
        log.append("task.started", job_id="j", step=f"s{i}", value=i * 0.5)
    return log


def test_audit_chain_verifies(db):
    log = _chain(db)
    v = log.verify()
    assert v.ok and v.records == 6 and v.head["seq"] == 6
    assert [r["seq"] for r in log.records()] == [1, 2, 3, 4, 5, 6]


def test_audit_finds_a_changed_record(db):
    log = _chain(db)
    with db.session.begin() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(body={"step": "s2", "value": 99}))
    v = log.verify()
    assert not v.ok and any("record 3" in p and "changed" in p for p in v.problems)


def test_audit_finds_a_deleted_record(db):
    log = _chain(db)
    with db.session.begin() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 4))
    v = log.verify()
    assert not v.ok and any("missing" in p for p in v.problems)


def test_audit_finds_reordered_records(db):
    log = _chain(db)
    with db.session.begin() as s:  # swap records 2 and 5 (content moved, sequence numbers kept)
        rows = {r.seq: r for r in s.execute(select(AuditRecord).where(AuditRecord.seq.in_((2, 5)))).scalars()}
        a, b = rows[2], rows[5]
        fields = ("event_id", "ref", "t", "kind", "job_id", "actor", "peer", "body", "prev", "hash")
        va, vb = ({f: getattr(a, f) for f in fields}, {f: getattr(b, f) for f in fields})
        for f in fields:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])
    v = log.verify()
    assert not v.ok and any("does not follow" in p for p in v.problems)


def test_audit_finds_a_truncated_tail_by_its_signed_head(db):
    log = _chain(db)
    head = log.signed_head("j")
    assert head["seq"] == 6 and log.verify().ok
    with db.session.begin() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq >= 5))
    v = log.verify()
    assert not v.ok and any("ends before record 6" in p for p in v.problems)
    # a head whose signature was forged is reported too
    with db.session.begin() as s:
        s.execute(update(AuditHead).values(signature="AAAA"))
    v = log.verify(verifiers={"bank": log.signer.public})
    assert any("bad signature" in p for p in v.problems)


@pytest.fixture
def reg(db, tmp_path):
    f = tmp_path / "credit.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_csv(f, index=False)
    r = Registry(db, "bank", Signer.generate())
    d = r.register("credit", f, "id", "y")
    assert (d["version"], d["rows"], d["columns"]) == (1, 3, ["id", "x", "y"])
    assert len(d["sha256"]) == 64
    return r


def _use(job="job-1", initiator="shop", nodes=("shop", "arbiter"), params=None):
    return Use("credit", job, initiator, frozenset(nodes),
               (("read", "reader", {}), ("train", "hetero_lr", params or {"max_iter": 3, "key_bits": 2048})))


def test_grant_allows_what_it_says(reg):
    g = reg.grant("credit", "shop", ["reader", "hetero_lr"], bounds={"hetero_lr": {"max_iter": {"min": 1, "max": 5}}})
    check_grant(g, reg.signer.public, _use(), 0)
    found, ds = reg.find_grant(_use())
    assert found["id"] == g["id"] and ds["version"] == 1


@pytest.mark.parametrize("case, expect", [
    ("expired", "expired"), ("used up", "used up"), ("revoked", "revoked"), ("bad signature", "signature"),
    ("bounds", "outside the grant's bounds"), ("component", "does not allow component 'hetero_lr'"),
    ("job", "is for job"), ("initiator", "allows jobs initiated by"), ("grantee", "not in this job"),
])
def test_grant_refusals(reg, db, case, expect):
    kw = {"components": ["reader", "hetero_lr"]}
    if case == "expired":
        kw["expires"] = time.time() - 1
    if case == "used up":
        kw["max_uses"] = 1
    if case == "bounds":
        kw["bounds"] = {"hetero_lr": {"key_bits": {"min": 3072}}}
    if case == "component":
        kw["components"] = ["reader"]
    if case == "job":
        kw["job_id"] = "another-job"
    if case == "initiator":
        kw["initiator"] = "arbiter"
    g = reg.grant("credit", "auditor" if case == "grantee" else "shop", **kw)
    if case == "used up":
        reg.record_use(g["id"], "earlier-job", "read", "reader", 1, "x")
    if case == "revoked":
        reg.revoke(g["id"])
    if case == "bad signature":  # someone with database access widens the grant
        with db.session.begin() as s:
            row = s.get(Grant, g["id"])
            row.body = {**row.body, "max_uses": 1000}
    with pytest.raises(PolicyRefused, match=expect):
        reg.find_grant(_use())


def test_no_grant_and_unknown_data_are_refused(reg):
    with pytest.raises(PolicyRefused, match="has no grant"):
        reg.find_grant(_use())
    with pytest.raises(PolicyRefused, match="no data set 'other' registered"):
        reg.find_grant(Use("other", "j", "shop", frozenset({"shop"}), ()))


def test_reregistering_makes_a_new_version(reg, tmp_path):
    f = tmp_path / "credit2.csv"
    pd.DataFrame({"id": ["a"], "x": [1.0], "y": [1]}).to_csv(f, index=False)
    d = reg.register("credit", f, "id", "y")
    assert d["version"] == 2 and reg.dataset("credit")["version"] == 2 and reg.dataset("credit", 1)["rows"] == 3
