"""The run store: where a run keeps its state — the interface, and the run folder that implements it.

A run is one execution of a job. Its store holds, at run level, the job text, the run's
metadata (status, mode, what a resume kept and why it ran steps again) and the report;
per party (:class:`PartyRun`, only what that party may see), each step's record (complete
steps only: outputs, seconds, fingerprint), the step's outputs (values: :class:`Table`,
dicts of wire-typed values), an append-only event stream (start / progress / done /
failed / skipped) and the party's log.

The runner, the report and the baseline read and write through this interface only;
:class:`RunFolder` is its filesystem implementation (the layout ``atoll run`` has always
written, see the README's "Run folder")::

    RUN/job.yaml, run.json, report.json, report.html, plots/*.png   (run level)
    RUN/PARTY/events.jsonl       the party's events, one JSON object a line
    RUN/PARTY/party.log          the party's log
    RUN/PARTY/STEP/done.json     the step's record; written last, so it marks the step complete
    RUN/PARTY/STEP/*.npz|bin     the step's outputs (and whatever the component wrote there)

The node keeps the same things in its SQL database by implementing the same two
classes. Paths appear in the interface only where a component needs a working folder
(:meth:`PartyRun.begin_step`).
"""

from __future__ import annotations

import abc
import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from atoll.errors import ConfigError
from atoll.jobs.artifacts import decode_output, encode_output, write_json


@dataclass(frozen=True)
class StepRecord:
    """What a party keeps about a step it completed.

    ``fingerprint`` digests everything the step's result depends on at this party (see
    :mod:`atoll.jobs.resume`); ``parts`` are its named pieces (parameters, data, each
    input's upstream fingerprint), so a resume can say what changed.
    """

    step: str
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0
    mode: str = "train"
    fingerprint: str | None = None
    parts: dict[str, str] = field(default_factory=dict)
    finished: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = list(self.outputs)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StepRecord":
        return cls(step=str(d["step"]), outputs=tuple(d.get("outputs") or ()),
                   seconds=float(d.get("seconds") or 0.0), mode=str(d.get("mode", "train")),
                   fingerprint=d.get("fingerprint"), parts=dict(d.get("parts") or {}),
                   finished=float(d.get("finished") or 0.0))


class PartyRun(abc.ABC):
    """One party's part of one run."""

    party: str

    # ------------------------------------------------------------------ steps
    @abc.abstractmethod
    def record(self, step: str) -> StepRecord | None:
        """The record of ``step`` if this party completed it, else None."""

    @abc.abstractmethod
    def outputs(self, step: str) -> Mapping[str, Any]:
        """The outputs of a completed step, loaded on first access (empty if not complete)."""

    @abc.abstractmethod
    def begin_step(self, step: str) -> Path:
        """Forget whatever an earlier attempt at ``step`` left (its record and outputs) and
        return an empty working folder for the component (``TaskContext.dir``)."""

    @abc.abstractmethod
    def complete_step(self, record: StepRecord, outputs: Mapping[str, Any]) -> None:
        """Persist the step's outputs, then its record: from then on the step is complete."""

    # ------------------------------------------------------------------ events and log
    @abc.abstractmethod
    def event(self, **fields: Any) -> None:
        """Append an event (``step``, ``event`` and what goes with it; ``t`` is added)."""

    @abc.abstractmethod
    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events after ``cursor`` (0: from the start) and the cursor to pass next time."""

    @abc.abstractmethod
    def log_handler(self) -> logging.Handler:
        """A logging handler writing this party's log (the caller closes it)."""


class RunStore(abc.ABC):
    """One run: its job, metadata, parties and report."""

    #: a short name of the run (the folder's name, a database id)
    run_id: str

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the run was created (``create``) in this store."""

    @abc.abstractmethod
    def create(self, job_text: str, meta: Mapping[str, Any]) -> None:
        """Start the run: keep the job text and the first metadata."""

    @abc.abstractmethod
    def job_text(self) -> str:
        """The job text the run runs (a resume reads it again: the user may have fixed it)."""

    @abc.abstractmethod
    def meta(self) -> dict[str, Any]:
        """The run's metadata (``status``, ``mode``, ``source``, ...)."""

    @abc.abstractmethod
    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the metadata; return the result."""

    @abc.abstractmethod
    def party(self, name: str) -> PartyRun:
        """The part of the run that belongs to party ``name``."""

    @abc.abstractmethod
    def save_report(self, report: Mapping[str, Any], html: str, plots: Mapping[str, bytes]) -> None:
        """Keep the report (JSON-able dict), its HTML page and its PNG plots (name -> bytes)."""

    @abc.abstractmethod
    def report(self) -> dict[str, Any] | None:
        """The saved report, if there is one."""

    def __str__(self) -> str:
        return self.run_id


# ====================================================================== the run folder
class EventLog:
    """Append-only JSON lines one party writes about its steps."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def write(self, **event: Any) -> None:
        event.setdefault("t", time.time())
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event of an ``events.jsonl`` file (a line cut by a killed process is skipped)."""
    events, _ = _read_events_from(path, 0)
    return events


def _read_events_from(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
    out = []
    for line in chunk[:end].decode().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out, offset + end


class SavedOutputs(Mapping):
    """A step's persisted outputs in a run folder, loaded on first access."""

    def __init__(self, folder: Path):
        self.folder = folder
        manifest = folder / "done.json"
        self.files: dict[str, str] = (json.loads(manifest.read_text())["outputs"]
                                      if manifest.exists() else {})
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self.files:
            raise KeyError(key)
        if key not in self._cache:
            fname = self.files[key]
            self._cache[key] = decode_output(fname.rpartition(".")[2], (self.folder / fname).read_bytes())
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


class FolderPartyRun(PartyRun):
    """A party's part of a run folder: ``RUN/PARTY/``."""

    def __init__(self, root: Path, party: str):
        self.party = party
        self.dir = root / party
        self._events = EventLog(self.dir / "events.jsonl")

    def _done(self, step: str) -> Path:
        return self.dir / step / "done.json"

    def record(self, step: str) -> StepRecord | None:
        f = self._done(step)
        if not f.exists():
            return None
        d = json.loads(f.read_text())
        return StepRecord.from_json({"step": step, **d, "outputs": list(d.get("outputs") or {})})

    def outputs(self, step: str) -> Mapping[str, Any]:
        return SavedOutputs(self.dir / step)

    def begin_step(self, step: str) -> Path:
        folder = self.dir / step
        if folder.exists():  # a step that did not finish (or runs again) starts clean
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def complete_step(self, record: StepRecord, outputs: Mapping[str, Any]) -> None:
        folder = self.dir / record.step
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, value in outputs.items():
            fmt, data = encode_output(value)
            files[name] = f"{name}.{fmt}"
            (folder / files[name]).write_bytes(data)
        d = record.to_json()
        d.pop("step")
        d["outputs"] = files
        write_json(self._done(record.step), d)

    def event(self, **fields: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._events.write(**fields)

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        return _read_events_from(self.dir / "events.jsonl", cursor)

    def log_handler(self) -> logging.Handler:
        self.dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.dir / "party.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler


class RunFolder(RunStore):
    """The filesystem run store: one folder per run (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.run_id = self.root.name

    def __str__(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return (self.root / "run.json").exists()

    def create(self, job_text: str, meta: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "job.yaml").write_text(job_text)
        write_json(self.root / "run.json", dict(meta))

    def job_text(self) -> str:
        return (self.root / "job.yaml").read_text()

    def meta(self) -> dict[str, Any]:
        f = self.root / "run.json"
        if not f.exists():
            raise ConfigError(f"{self.root} is not a run folder (no run.json); pass the folder "
                              "'atoll run' printed")
        return json.loads(f.read_text())

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = {**self.meta(), **fields}
        write_json(self.root / "run.json", meta)
        return meta

    def party(self, name: str) -> FolderPartyRun:
        return FolderPartyRun(self.root, name)

    def save_report(self, report: Mapping[str, Any], html: str, plots: Mapping[str, bytes]) -> None:
        if plots:
            (self.root / "plots").mkdir(exist_ok=True)
        for name, data in plots.items():
            (self.root / "plots" / name).write_bytes(data)
        write_json(self.root / "report.json", dict(report))
        (self.root / "report.html").write_text(html)

    def report(self) -> dict[str, Any] | None:
        f = self.root / "report.json"
        return json.loads(f.read_text()) if f.exists() else None


def as_store(run: RunStore | str | Path) -> RunStore:
    """A store for a run given as a store or as a run folder's path."""
    return run if isinstance(run, RunStore) else RunFolder(run)
