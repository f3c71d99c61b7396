"""The node's SQL store: everything one organisation's node keeps, in one database.

SQLAlchemy 2 over a SQLite file by default (``sqlite:///NODE/node.db``) or PostgreSQL by
URL (``postgresql+psycopg://user@host/db``); the schema is created and upgraded by
Alembic migrations (``atoll/node/migrations``) when the node starts. Tables:

=================  ====================================================================
``meta``           key -> value (the bootstrap token's state, the schema's owner)
``users``          the node's own users and their role (``ROLES``); ``tokens``: their API tokens (SHA-256 only)
``nonces``         signed control messages already seen (replay protection), until expiry
``datasets``       data registry: name, version, path, id/label columns, schema, rows,
                   SHA-256 of the content — never the content
``grants``         signed data-use grants (the signed body + Ed25519 signature);
                   ``grant_uses``: every task that used one (job, step, data version)
``jobs``           proposals and their state at this node; ``job_parties``: each party's
                   node, role and decision; ``tasks``: per party and step, the task state
                   and (for other parties) the error category + step they reported
``runs``           the run store (:class:`SqlRunStore`): ``runs`` (job text, meta, report),
                   ``run_plots``, ``steps`` (step records), ``step_outputs`` (encoded
                   outputs), ``events``, ``logs``
``audit``          the hash-chained audit log (:mod:`atoll.node.audit`); ``audit_heads``:
                   chain heads partners sent at job end
``models``         the model store: each finished job's model parts of this party,
                   versioned per name and pinned by SHA-256
=================  ====================================================================

:class:`SqlRunStore` / :class:`SqlPartyRun` implement :mod:`atoll.jobs.store`'s interface, so
the runner, the report and resume work on a node exactly as on a run folder.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from sqlalchemy import (JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, delete, event, select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from atoll.errors import ConfigError
from atoll.jobs.artifacts import decode_output, encode_output
from atoll.jobs.store import PartyRun, RunStore, StepRecord

SCHEMA_VERSION = "0002"
#: what a user may do: ``admin`` everything, ``viewer`` read only (no submit, approve, grant, register)
ROLES = ("admin", "viewer")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float)
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[float] = mapped_column(Float)
    last_used: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[float | None] = mapped_column(Float, nullable=True)


class Nonce(Base):
    __tablename__ = "nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64))
    expires: Mapped[float] = mapped_column(Float, index=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    id_column: Mapped[str] = mapped_column(String(256))
    label_column: Mapped[str | None] = mapped_column(String(256), nullable=True)
    columns: Mapped[list] = mapped_column(JSON)
    rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    grantee: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    revoked: Mapped[float | None] = mapped_column(Float, nullable=True)


class GrantUse(Base):
    __tablename__ = "grant_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(160))
    step: Mapped[str] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(128))
    dataset_version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    t: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    initiator: Mapped[str] = mapped_column(String(64))
    own_party: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), index=True)
    proposal: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class JobParty(Base):
    __tablename__ = "job_parties"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    decided: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="")


class Task(Base):
    __tablename__ = "tasks"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True)
    component: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    job_text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict] = mapped_column(JSON)
    report: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    report_html: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunPlot(Base):
    __tablename__ = "run_plots"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Step(Base):
    __tablename__ = "steps"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True)
    record: Mapped[dict] = mapped_column(JSON)


class StepOutput(Base):
    __tablename__ = "step_outputs"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    fmt: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_party", "run_id", "party", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(160))
    party: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict] = mapped_column(JSON)


class LogLine(Base):
    __tablename__ = "logs"
    __table_args__ = (Index("ix_logs_run_party", "run_id", "party", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(160))
    party: Mapped[str] = mapped_column(String(64))
    t: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class AuditRecord(Base):
    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    t: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[dict] = mapped_column(JSON)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    __tablename__ = "audit_heads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(160), index=True)
    node: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    t: Mapped[float] = mapped_column(Float)
    signature: Mapped[str] = mapped_column(Text)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "party", "version"),)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(160))
    party: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)


# ====================================================================== the database
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")       # readers never block the writer
    cur.execute("PRAGMA busy_timeout=30000")     # the node and its workers share the file
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """One node's database: an engine, sessions, and the migrations that shape it.

    ``Database(url).upgrade()`` brings the schema to the newest migration (what
    ``atoll node start`` does); worker processes open the same URL without upgrading.
    """

    def __init__(self, url: str, echo: bool = False):
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as e:  # noqa: BLE001 - a bad URL or missing driver, said plainly
            raise ConfigError(f"cannot open the node's database {_safe_url(url)}: {e}; "
                              "for PostgreSQL install the driver (pip install 'psycopg[binary]') "
                              "and use postgresql+psycopg://USER@HOST/DB") from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Create or upgrade the schema (Alembic ``upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as e:  # noqa: BLE001
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"cannot prepare the node's database {_safe_url(self.url)}: "
                              f"{type(e).__name__}: {e}") from None

    def revision(self) -> str | None:
        """The schema's current Alembic revision (None before the first upgrade)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(Meta, key)
            return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        with self.session.begin() as s:
            row = s.get(Meta, key)
            if row is None:
                s.add(Meta(key=key, value=value))
            else:
                row.value = value

    def close(self) -> None:
        self.engine.dispose()


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.partition(':')[0]}@{tail}"


# ====================================================================== the run store
class SqlOutputs(Mapping):
    """A completed step's outputs in the database, each decoded on first access."""

    def __init__(self, db: Database, run_id: str, party: str, step: str):
        self._db, self._key = db, (run_id, party, step)
        with db.session() as s:
            rec = s.get(Step, self._key)
            self._names: list[str] = [] if rec is None else list(rec.record.get("outputs") or [])
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._cache:
            with self._db.session() as s:
                row = s.get(StepOutput, (*self._key, name))
                if row is None:
                    raise KeyError(name)
                self._cache[name] = decode_output(row.fmt, row.data)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _DbLogHandler(logging.Handler):
    def __init__(self, db: Database, run_id: str, party: str):
        super().__init__()
        self.db, self.run_id, self.party = db, run_id, party
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            with self.db.session.begin() as s:
                s.add(LogLine(run_id=self.run_id, party=self.party, t=record.created,
                              level=record.levelname, message=msg[:20_000]))
        except Exception:  # noqa: BLE001 - logging must never break a task
            self.handleError(record)


class SqlPartyRun(PartyRun):
    """One party's part of a run in the node's database (working folders under ``work_dir``)."""

    def __init__(self, db: Database, run_id: str, party: str, work_dir: Path):
        self.db, self.run_id, self.party = db, run_id, party
        self.work_dir = Path(work_dir)
        self._lock = threading.Lock()

    def record(self, step: str) -> StepRecord | None:
        with self.db.session() as s:
            row = s.get(Step, (self.run_id, self.party, step))
            return None if row is None else StepRecord.from_json(row.record)

    def outputs(self, step: str) -> Mapping[str, Any]:
        return SqlOutputs(self.db, self.run_id, self.party, step)

    def begin_step(self, step: str) -> Path:
        with self.db.session.begin() as s:
            s.execute(delete(StepOutput).where(StepOutput.run_id == self.run_id,
                                               StepOutput.party == self.party, StepOutput.step == step))
            s.execute(delete(Step).where(Step.run_id == self.run_id, Step.party == self.party,
                                         Step.step == step))
        folder = self.work_dir / self.run_id / self.party / step
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def complete_step(self, record: StepRecord, outputs: Mapping[str, Any]) -> None:
        encoded = {name: encode_output(value) for name, value in outputs.items()}
        with self.db.session.begin() as s:  # outputs and record in one transaction
            for name, (fmt, data) in encoded.items():
                s.merge(StepOutput(run_id=self.run_id, party=self.party, step=record.step, name=name,
                                   fmt=fmt, data=data))
            d = record.to_json()
            d["outputs"] = sorted(encoded)
            s.merge(Step(run_id=self.run_id, party=self.party, step=record.step, record=d))

    def event(self, **fields: Any) -> None:
        fields.setdefault("t", time.time())
        with self.db.session.begin() as s:
            s.add(Event(run_id=self.run_id, party=self.party, body=fields))

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        with self.db.session() as s:
            rows = s.execute(select(Event.id, Event.body).where(
                Event.run_id == self.run_id, Event.party == self.party, Event.id > cursor)
                .order_by(Event.id)).all()
        return [dict(b) for _, b in rows], (rows[-1][0] if rows else cursor)

    def log_handler(self) -> logging.Handler:
        return _DbLogHandler(self.db, self.run_id, self.party)

    def log_lines(self, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The party's log lines after id ``after`` (oldest first)."""
        with self.db.session() as s:
            rows = s.execute(select(LogLine).where(LogLine.run_id == self.run_id, LogLine.party == self.party,
                                                   LogLine.id > after).order_by(LogLine.id).limit(limit)).scalars()
            return [{"id": r.id, "t": r.t, "level": r.level, "message": r.message} for r in rows]


class SqlRunStore(RunStore):
    """A run kept in the node's database (see :mod:`atoll.jobs.store` for the interface)."""

    def __init__(self, db: Database, run_id: str, work_dir: str | Path):
        self.db, self.run_id, self.work_dir = db, run_id, Path(work_dir)

    def exists(self) -> bool:
        with self.db.session() as s:
            return s.get(Run, self.run_id) is not None

    def create(self, job_text: str, meta: Mapping[str, Any]) -> None:
        with self.db.session.begin() as s:
            s.merge(Run(id=self.run_id, job_text=job_text, meta=dict(meta)))

    def _run(self, s: Session) -> Run:
        row = s.get(Run, self.run_id)
        if row is None:
            raise ConfigError(f"run {self.run_id!r} is not in this node's store")
        return row

    def job_text(self) -> str:
        with self.db.session() as s:
            return self._run(s).job_text

    def meta(self) -> dict[str, Any]:
        with self.db.session() as s:
            return dict(self._run(s).meta)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        with self.db.session.begin() as s:
            row = self._run(s)
            row.meta = {**row.meta, **fields}
            return dict(row.meta)

    def party(self, name: str) -> SqlPartyRun:
        return SqlPartyRun(self.db, self.run_id, name, self.work_dir)

    def save_report(self, report: Mapping[str, Any], html: str, plots: Mapping[str, bytes]) -> None:
        with self.db.session.begin() as s:
            row = self._run(s)
            row.report, row.report_html = dict(report), html
            for name, data in plots.items():
                s.merge(RunPlot(run_id=self.run_id, name=name, data=data))

    def report(self) -> dict[str, Any] | None:
        with self.db.session() as s:
            return self._run(s).report
