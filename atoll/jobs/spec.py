"""Job files: YAML in, a validated :class:`JobSpec` out, or an error naming the line.

A job names its parties (role + data) and a pipeline of components::

    name: credit_scoring
    seed: 42
    parties:
      guest:   {role: guest, data: {dataset: default_credit, split: hetero, party: guest, label: y}}
      host_0:  {role: host,  data: {dataset: default_credit, split: hetero, party: host}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read,  component: reader}
      - {id: align, component: psi,   inputs: {data: read.data}}
      - {id: split, component: split, inputs: {data: align.data}, params: {test_size: 0.2}}

Every check that can be made without running anything is made here, before a
single party starts: the YAML itself, the shape of each section (pydantic), the
component names, each component's parameters, the inputs each component names
(they must exist, match in kind, and form no cycle), that every party that needs
data has some, that the files and columns exist (only the header is read) and
that the label holder's label column is there. Each error is one
:class:`JobSpecError` whose message starts ``FILE:LINE:``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atoll.errors import ConfigError

ROLES = ("guest", "host", "arbiter", "server", "client")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: modules a job's ``plugins:`` may import: only those the user lists here (comma-separated)
PLUGINS_ENV = "ATOLL_PLUGINS"
MAX_TIMEOUT = 7 * 86400.0
#: YAML limits: aliases per document, entries once aliases are expanded, nesting depth
MAX_ALIASES = 64
MAX_ENTRIES = 100_000
MAX_YAML_DEPTH = 64
_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
#: realistic ranges of parameters whatever component they belong to (``name: (low, high)``,
#: both inclusive; names ending in ``timeout`` share the timeout bound)
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "key_bits": (512, 16384),
    "timeout": (1e-3, MAX_TIMEOUT),
    "learning_rate": (0.0, 1e4),
}


class JobSpecError(ConfigError):
    """A job file is invalid. ``line`` is the 1-based line of the offending entry (or None)."""

    def __init__(self, message: str, line: int | None = None, source: str = "<job>"):
        self.line = line
        self.source = source
        self.reason = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


class DataSpec(BaseModel):
    """Where one party's data lives: a CSV/Parquet file or a bundled data set."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="CSV (.csv, .csv.gz) or Parquet (.parquet) file")
    dataset: str | None = Field(None, description="bundled data set name (atoll.datasets)")
    registered: str | None = Field(None, description="a data set registered at this party's node "
                                   "(atoll data register); only that node resolves it")
    split: str = Field("hetero", description="bundled data set split: hetero or homo")
    party: str | None = Field(None, description="which bundled file (default: this party's role)")
    id: str | None = Field(None, description="id column (default: the first column)")
    label: str | None = Field(None, description="label column (label holders only)")
    exposure: str | None = Field(None, description="exposure column of Poisson counts (guest only): "
                                 "kept apart from the features like the label")
    limit: int | None = Field(None, gt=0, description="keep only the first N rows (quick runs)")
    format: Literal["auto", "csv", "parquet"] = "auto"

    @field_validator("path")
    @classmethod
    def _path_not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("path is empty")
        return v


class PartySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["guest", "host", "arbiter", "server", "client"]
    node: str | None = Field(None, description="the node (organisation) that plays this party when "
                             "the job is submitted to a node; ignored by atoll run")
    data: DataSpec | None = None


class ComponentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    component: str
    inputs: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"component id {v!r} must be letters, digits, '_' or '-' "
                             "and start with a letter")
        return v

    def input_refs(self) -> dict[str, tuple[str, str]]:
        """``{slot: (producer id, output name)}``."""
        out = {}
        for slot, ref in self.inputs.items():
            comp, _, output = ref.partition(".")
            out[slot] = (comp, output)
        return out


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("job", description="the job's name: letters, digits, '_', '.', '-' (it names the "
                      "run folder, so it cannot be a path)")
    seed: int = 0
    mode: Literal["processes", "threads"] = "processes"
    timeout: float = Field(600.0, gt=0, le=MAX_TIMEOUT, description="seconds a party waits for a message")
    plugins: list[str] = Field(default_factory=list,
                               description="modules to import (they register extra components); each must "
                               f"be allowed by the user in ${PLUGINS_ENV}")
    parties: dict[str, PartySpec]
    pipeline: list[ComponentSpec]

    # filled by load_job, not part of the file
    source: str = Field("<job>", exclude=True)
    text: str = Field("", exclude=True)
    lines: dict[tuple, int] = Field(default_factory=dict, exclude=True)
    inference: bool = Field(False, exclude=True)  # atoll predict: new data may lack labels
    data_roots: list[str] = Field(default_factory=list, exclude=True)  # folders/files the user allowed

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name {v!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                             "letter or digit (it names the run folder)")
        return v

    def component(self, cid: str) -> ComponentSpec:
        for c in self.pipeline:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def parties_of(self, role: str) -> list[str]:
        return sorted(p for p, s in self.parties.items() if s.role == role)

    def line(self, *path: Any) -> int | None:
        """The line of the deepest entry of ``path`` that the file has."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, message: str, *path: Any) -> JobSpecError:
        return JobSpecError(message, self.line(*path), self.source)

    def component_index(self, cid: str) -> int:
        return next(i for i, c in enumerate(self.pipeline) if c.id == cid)


# ---------------------------------------------------------------------- YAML + lines
class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with at most ``MAX_ALIASES`` aliases and none that refers to a
    node containing it (a recursive alias)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = 0
        self._composing: set[str] = set()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases (*name)",
                                                  event.start_mark)
            if event.anchor in self._composing:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node "
                                                  "that contains it (recursive)", event.start_mark)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._composing.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._composing.discard(anchor)


def _yaml_error(e: yaml.YAMLError, source: str) -> JobSpecError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return JobSpecError(f"not valid YAML: {getattr(e, 'problem', None) or type(e).__name__}",
                        mark.line + 1 if mark else None, source)


def _line_map(text: str, source: str) -> dict[tuple, int]:
    """Map every key path (``("pipeline", 2, "component")``) to its 1-based line; refuse tags
    other than YAML's plain ones (no ``!!python/...``), and documents that aliases expand past
    ``MAX_ENTRIES`` entries or ``MAX_YAML_DEPTH`` levels."""
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    lines: dict[tuple, int] = {}
    budget = [MAX_ENTRIES]

    def walk(node: yaml.Node, path: tuple) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise JobSpecError(f"the document has more than {MAX_ENTRIES} entries once its aliases are "
                               "expanded", node.start_mark.line + 1, source)
        if len(path) > MAX_YAML_DEPTH:
            raise JobSpecError(f"the document is nested deeper than {MAX_YAML_DEPTH} levels",
                               node.start_mark.line + 1, source)
        if node.tag not in _TAGS:
            raise JobSpecError(f"tag {node.tag[:60]!r} is not allowed in a job file (plain YAML values only)",
                               node.start_mark.line + 1, source)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                if k.tag not in _TAGS or not isinstance(k.value, str):
                    raise JobSpecError("a key must be a plain value", k.start_mark.line + 1, source)
                key = k.value
                if key in seen:
                    raise JobSpecError(f"key {key!r} appears twice (first on line {seen[key]})",
                                       k.start_mark.line + 1, source)
                seen[key] = k.start_mark.line + 1
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    if root is not None:
        lines[()] = root.start_mark.line + 1
        walk(root, ())
    return lines


def _loc(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def parse_job(text: str, source: str = "<job>", check_data: bool = True, inference: bool = False,
              data_roots: Sequence[str | Path] = ()) -> JobSpec:
    """Validate job text completely (see module docstring); raise :class:`JobSpecError`.
    ``data_roots``: folders (or files) beside the job file's folder that data paths may name."""
    lines = _line_map(text, source)
    try:
        raw = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - the safe loader, bounded
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    if not isinstance(raw, dict):
        raise JobSpecError("a job file is a mapping with 'parties' and 'pipeline'", 1, source)
    for key in ("source", "text", "lines", "inference", "data_roots"):
        if key in raw:  # filled in by the loader, never by the file
            raise JobSpecError(f"{key}: unknown key", lines.get((key,)), source)
    try:
        job = JobSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        # pydantic puts the union member / literal in the loc: keep the real keys
        path = tuple(p for p in loc if isinstance(p, int) or p in _keys_at(raw, loc))
        line = None
        probe = path
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        what = "missing" if err["type"] == "missing" else err["msg"]
        raise JobSpecError(f"{_loc(path) or 'job'}: {what}{more}", line, source) from None
    job.source, job.text, job.lines, job.inference = source, text, lines, inference
    job.data_roots = [str(r) for r in data_roots]
    for i, c in enumerate(job.pipeline):
        _check_numbers(job, c.params, ("pipeline", i, "params"))
    _check(job, check_data)
    return job


def _check_numbers(job: JobSpec, value: Any, path: tuple) -> None:
    """Every number in a component's parameters is finite and fits 64 bits, and the ones
    :data:`PARAM_BOUNDS` names are within their realistic range."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(job, v, path + (k,))
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(job, v, path + (i,))
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    where = ".".join(str(p) for p in path[3:])
    step = job.pipeline[path[1]].id
    if isinstance(value, float) and not math.isfinite(value):
        raise job.error(f"{step} params.{where}: {value} is not a finite number", *path)
    if abs(value) >= 2 ** 63:
        raise job.error(f"{step} params.{where}: {value:g} is out of range", *path)
    name = str(path[-1]) if path else ""
    bound = PARAM_BOUNDS.get("timeout" if name.endswith("timeout") else name)
    if bound is not None and not bound[0] <= value <= bound[1]:
        raise job.error(f"{step} params.{where}: {value:g} is outside {bound[0]:g} .. {bound[1]:g}", *path)


def _keys_at(raw: Any, loc: tuple) -> set:
    keys: set = set()
    node = raw
    for p in loc:
        if isinstance(node, dict):
            keys |= set(node)
            keys.add(p)  # a missing key is still worth naming
            node = node.get(p) if isinstance(p, str) else None
        elif isinstance(node, list) and isinstance(p, int) and p < len(node):
            node = node[p]
    return keys


def load_job(path: str | Path, check_data: bool = True, data_roots: Sequence[str | Path] = ()) -> JobSpec:
    """Read and validate a job file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise JobSpecError(f"cannot read the job file: {e.strerror}", None, str(p)) from None
    job = parse_job(text, str(p), check_data, data_roots=data_roots)
    return job


#: extra folders data files may be read from (os.pathsep-separated), beside the job file's own
DATA_DIRS_ENV = "ATOLL_DATA_DIRS"


def job_folder(job: JobSpec) -> Path | None:
    """The folder of the job file (None for job text that came from no file)."""
    if job.source in ("", "<job>") or job.source.startswith("<"):
        return None
    return Path(job.source).resolve().parent


def data_roots(job: JobSpec) -> list[Path]:
    """Where this job's data files may be: the job file's folder, the folders (or files) the
    user allowed (``data_roots`` of :func:`parse_job`, ``atoll run --data-dir``, the node's
    data registry) and those in ``$ATOLL_DATA_DIRS``; symlinks resolved."""
    roots = [Path(r) for r in job.data_roots]
    roots += [Path(r) for r in os.environ.get(DATA_DIRS_ENV, "").split(os.pathsep) if r]
    folder = job_folder(job)
    if folder is not None:
        roots.append(folder)
    return [r.expanduser().resolve() for r in roots]


def resolve_path(job: JobSpec, path: str) -> Path:
    """A data path of the job: relative to the job file's folder, symlinks resolved, and
    confined to :func:`data_roots` — a job file cannot make a party read ``/etc/passwd``,
    ``../../secrets`` or ``/dev/zero``. Raise :class:`JobSpecError` otherwise."""
    p = Path(path)
    folder = job_folder(job)
    if not p.is_absolute() and folder is not None:
        p = folder / p
    real = p.resolve()
    roots = data_roots(job)
    if not any(real == r or r in real.parents for r in roots):
        raise JobSpecError(f"data path {path!r} is outside the folders this job may read (the job file's "
                           f"folder and the data directories allowed with --data-dir or ${DATA_DIRS_ENV}); "
                           "move the file there or allow its folder", None, job.source)
    if real.exists() and not real.is_file():
        raise JobSpecError(f"data path {path!r} is not a regular file", None, job.source)
    return real


# ---------------------------------------------------------------------- semantic checks
def _check(job: JobSpec, check_data: bool) -> None:
    from atoll.jobs import registry
    from atoll.jobs.dag import find_cycle

    allowed = {m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()}
    for mod in job.plugins:
        if mod not in allowed:
            raise job.error(f"plugin {mod!r} is not allowed: a job file imports only the plugin modules "
                            f"the user lists in ${PLUGINS_ENV} (comma-separated)", "plugins")
        try:
            registry.load_plugin(mod)
        except ImportError as e:
            raise job.error(f"plugin {mod!r} cannot be imported: {e}", "plugins") from None
    if not job.parties:
        raise job.error("name at least one party", "parties")
    if not job.pipeline:
        raise job.error("the pipeline is empty: add at least one component", "pipeline")
    for party in job.parties:
        if not _ID.match(party):
            raise job.error(f"party name {party!r} must be letters, digits, '_' or '-'", "parties", party)

    ids: dict[str, int] = {}
    for i, c in enumerate(job.pipeline):
        if c.id in ids:
            raise job.error(f"component id {c.id!r} is used twice (first at pipeline[{ids[c.id]}], "
                            f"line {job.line('pipeline', ids[c.id])}); give each step its own id",
                            "pipeline", i, "id")
        ids[c.id] = i

    classes = {}
    for i, c in enumerate(job.pipeline):
        cls = registry.find(c.component)
        if cls is None:
            raise job.error(f"unknown component {c.component!r} in step {c.id!r}; known components: "
                            f"{', '.join(registry.names())}", "pipeline", i, "component")
        classes[c.id] = cls
        try:
            cls.Params.model_validate(c.params)
        except ValidationError as e:
            err = e.errors()[0]
            loc = tuple(err["loc"])
            what = "missing" if err["type"] == "missing" else err["msg"]
            raise job.error(f"{c.id} ({c.component}) params.{_loc(loc)}: {what}",
                            "pipeline", i, "params", *loc) from None
        except ConfigError as e:  # a parameter model that validates in its own __init__ (the algorithm registry's)
            raise job.error(f"{c.id} ({c.component}) params: {e}", "pipeline", i, "params") from None

    for i, c in enumerate(job.pipeline):
        cls = classes[c.id]
        for slot, ref in c.inputs.items():
            if slot not in cls.inputs:
                raise job.error(f"{c.id} ({c.component}) has no input {slot!r}; its inputs: "
                                f"{', '.join(cls.inputs) or 'none'}", "pipeline", i, "inputs", slot)
            comp, dot, output = ref.partition(".")
            if not dot or comp not in ids:
                raise job.error(f"input {slot!r} of {c.id} refers to {ref!r}; write STEP.OUTPUT with "
                                f"STEP one of {', '.join(ids)}", "pipeline", i, "inputs", slot)
            pcls = classes[comp]
            if output not in pcls.outputs:
                raise job.error(f"input {slot!r} of {c.id}: step {comp!r} ({pcls.name}) has no output "
                                f"{output!r}; its outputs: {', '.join(pcls.outputs)}",
                                "pipeline", i, "inputs", slot)
            want, have = cls.inputs[slot].kind, pcls.outputs[output]
            if want != have:
                raise job.error(f"input {slot!r} of {c.id} wants {want}, but {ref} is {have}",
                                "pipeline", i, "inputs", slot)
        for slot, s in cls.inputs.items():
            if not s.optional and slot not in c.inputs:
                raise job.error(f"{c.id} ({c.component}) needs input {slot!r} ({s.kind}); add "
                                f"inputs: {{{slot}: STEP.OUTPUT}}", "pipeline", i, "component")

    cycle = find_cycle({c.id: [r.partition(".")[0] for r in c.inputs.values()] for c in job.pipeline})
    if cycle:
        where = ", ".join(f"{cid} (line {job.line('pipeline', ids[cid])})" for cid in cycle)
        raise job.error(f"the pipeline has a cycle: {' -> '.join(cycle + [cycle[0]])}; "
                        f"steps involved: {where}", "pipeline", ids[cycle[0]], "inputs")

    for i, c in enumerate(job.pipeline):
        classes[c.id].check(job, c, i, check_data)
