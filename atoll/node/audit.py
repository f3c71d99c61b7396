"""The node's audit trail: append-only, hash-chained, verifiable.

Every record is ``{seq, event_id, ref, t, kind, job_id, actor, peer, body}`` and carries
``prev`` (the previous record's hash; 64 zeros for the first) and
``hash = SHA-256(prev || canonical JSON of the record)``. Changing a record breaks its
hash; deleting or reordering records breaks the sequence or the ``prev`` links;
deleting records at the end is caught by the chain heads: at every job's end each node
signs its head ``(seq, hash)`` and sends it to its partners, who keep it
(``audit_heads``) — ``verify`` checks every head this node holds of itself against the
chain, and partners can be asked for the heads they hold.

``event_id`` is shared across nodes: a proposal, a decision, a start is recorded under
the same id at the node that sent it and at each node that received it (as NVFLARE's
correlated event ids); ``ref`` points at the event a record answers.

What is recorded: proposals (sent, received, refused and why), decisions, grants
made / revoked / used (data set version, component, step), tasks started / finished /
failed (category and step), bytes sent to each peer, job ends with the heads exchanged,
logins and token use failures.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from atoll.node.signing import AUDIT_HEAD, Signer, Verifier, canonical
from atoll.node.store import AuditHead, AuditRecord, Database

GENESIS = "0" * 64


def record_hash(prev: str, rec: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + canonical(rec)).hexdigest()


def _content(r: AuditRecord) -> dict[str, Any]:
    return {"seq": r.seq, "event_id": r.event_id, "ref": r.ref, "t": r.t, "kind": r.kind,
            "job_id": r.job_id, "actor": r.actor, "peer": r.peer, "body": r.body}


@dataclass
class Verification:
    """What ``verify`` found: ``ok``, how many records it checked, and each problem in words."""

    ok: bool
    records: int
    head: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    heads_checked: int = 0


class AuditLog:
    """One node's audit chain in its database. Only the node process appends."""

    def __init__(self, db: Database, node: str, signer: Signer | None = None):
        self.db, self.node, self.signer = db, node, signer
        self._lock = threading.Lock()

    def append(self, kind: str, job_id: str | None = None, peer: str | None = None,
               event_id: str | None = None, ref: str | None = None, actor: str | None = None,
               **body: Any) -> dict[str, Any]:
        """Add a record; return it (with its hash)."""
        with self._lock, self.db.session.begin() as s:
            last = s.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).scalar()
            seq, prev = (1, GENESIS) if last is None else (last.seq + 1, last.hash)
            rec = {"seq": seq, "event_id": event_id or uuid.uuid4().hex, "ref": ref, "t": time.time(),
                   "kind": kind, "job_id": job_id, "actor": actor or self.node, "peer": peer,
                   "body": _plain(body)}
            h = record_hash(prev, rec)
            s.add(AuditRecord(**rec, prev=prev, hash=h))
        return {**rec, "prev": prev, "hash": h}

    def head(self) -> dict[str, Any]:
        with self.db.session() as s:
            last = s.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).scalar()
        return {"node": self.node, "seq": 0, "hash": GENESIS} if last is None else \
            {"node": self.node, "seq": last.seq, "hash": last.hash}

    def signed_head(self, job_id: str) -> dict[str, Any]:
        """This node's head, signed, for a job's end (kept here too, as a checkpoint)."""
        head = {**self.head(), "job_id": job_id}
        head["signature"] = self.signer.sign_doc(AUDIT_HEAD, head) if self.signer else ""
        self.keep_head(head)
        return head

    def keep_head(self, head: dict[str, Any]) -> None:
        with self.db.session.begin() as s:
            s.add(AuditHead(job_id=str(head["job_id"]), node=str(head["node"]), seq=int(head["seq"]),
                            hash=str(head["hash"]), t=time.time(), signature=str(head.get("signature", ""))))

    def heads(self, node: str | None = None, job_id: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(AuditHead).order_by(AuditHead.id)
            if node is not None:
                q = q.where(AuditHead.node == node)
            if job_id is not None:
                q = q.where(AuditHead.job_id == job_id)
            return [{"job_id": h.job_id, "node": h.node, "seq": h.seq, "hash": h.hash, "t": h.t,
                     "signature": h.signature} for h in s.execute(q).scalars()]

    def records(self, after: int = 0, job_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(AuditRecord).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(limit)
            if job_id is not None:
                q = q.where(AuditRecord.job_id == job_id)
            return [{**_content(r), "prev": r.prev, "hash": r.hash} for r in s.execute(q).scalars()]

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.execute(select(func.count()).select_from(AuditRecord)).scalar() or 0)

    def verify(self, extra_heads: list[dict[str, Any]] | None = None,
               verifiers: dict[str, Verifier] | None = None) -> Verification:
        """Walk the whole chain; check the heads this node keeps of itself (and ``extra_heads``,
        e.g. what partners hold of this node; signatures checked where ``verifiers`` has the key)."""
        problems: list[str] = []
        by_seq: dict[int, str] = {}
        prev, expect, n = GENESIS, 1, 0
        with self.db.session() as s:
            for r in s.execute(select(AuditRecord).order_by(AuditRecord.seq).execution_options(
                    yield_per=1000)).scalars():
                n += 1
                if r.seq != expect:
                    problems.append(f"records {expect}..{r.seq - 1} are missing (deleted)" if r.seq > expect
                                    else f"record {r.seq} appears out of order")
                if r.prev != prev:
                    problems.append(f"record {r.seq} does not follow the record before it "
                                    "(a record was deleted, inserted or moved)")
                if record_hash(r.prev, _content(r)) != r.hash:
                    problems.append(f"record {r.seq} ({r.kind}) was changed after it was written")
                by_seq[r.seq] = r.hash
                prev, expect = r.hash, r.seq + 1
                if len(problems) > 50:
                    problems.append("(more problems not listed)")
                    break
        heads = [h for h in self.heads(node=self.node)] + list(extra_heads or [])
        for h in heads:
            if h["node"] != self.node:
                continue
            if verifiers and self.node in verifiers and h.get("signature") and \
                    not verifiers[self.node].verify_doc(AUDIT_HEAD, {k: h[k] for k in ("node", "seq", "hash", "job_id")},
                                                        h["signature"]):
                problems.append(f"the head kept for job {h['job_id']!r} has a bad signature")
                continue
            if h["seq"] == 0:
                continue
            have = by_seq.get(int(h["seq"]))
            if have is None:
                problems.append(f"the chain ends before record {h['seq']}, which the head of job "
                                f"{h['job_id']!r} signed (records at the end were deleted)")
            elif have != h["hash"]:
                problems.append(f"record {h['seq']} differs from the head signed at the end of job "
                                f"{h['job_id']!r} (the chain was rewritten)")
        return Verification(not problems, n, None if not n else {"seq": expect - 1, "hash": prev},
                            problems, len(heads))


def _plain(body: dict[str, Any]) -> dict[str, Any]:
    """Body values as JSON (numbers, strings, lists, dicts); anything else as its string."""
    def conv(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set)):
            return [conv(x) for x in v]
        return str(v)
    return conv(body)
