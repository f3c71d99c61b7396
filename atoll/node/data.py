"""Data registry and signed grants: what a node's data is, and who may use it for what.

**Registry.** ``register(name, path, id_column, label_column)`` records name -> path,
columns, row count and the SHA-256 of the content — never the content. Registering the
same name again makes a new version. A job names data by registered name
(``data: {registered: credit_2026}``) and only the owning node resolves it; before every
task the node checks the file still has the registered hash (a changed file must be
registered again, so a grant's use names the exact version it was).

**Grants** (Kuscia's ``DomainDataGrant`` + ``GrantLimit``, with the signature enforced):
the owner lets partner ``grantee`` use data set ``dataset`` in jobs where the grantee
takes part, for the listed ``components`` (``*``: any component installed with Atoll),
optionally only in job ``job_id``, until ``expires``, for ``max_uses`` jobs, when
``initiator`` initiated it, and with parameters within ``bounds``
(``{component: {param: {min, max, one_of}}}``). The grant's body is signed with the
owner's Ed25519 key; :func:`check_grant` verifies the signature and every limit, at
proposal time and again at every task start, and the node records each use.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import func, select

from atoll.errors import AtollError, ConfigError, DataError
from atoll.node.signing import GRANT, Signer, Verifier
from atoll.node.store import Database, Dataset, Grant, GrantUse

_CHUNK = 1 << 20


class PolicyRefused(AtollError):
    """A node's policy refused a proposal or a task; the message says why and what to do."""


# ====================================================================== registry
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def current_hash(path: Path) -> str:
    """SHA-256 of a file, cached per path, size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _format(path: Path) -> str:
    return "parquet" if path.suffix in (".parquet", ".pq") else "csv"


def inspect_file(path: Path) -> tuple[list[str], int]:
    """A data file's columns and row count (read in chunks; nothing is kept)."""
    import pandas as pd

    if _format(path) == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ConfigError(f"reading Parquet needs pyarrow ({e})") from None
        meta = pq.read_metadata(path)
        return list(meta.schema.names), int(meta.num_rows)
    cols = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    rows = 0
    for chunk in pd.read_csv(path, usecols=[0], chunksize=200_000):
        rows += len(chunk)
    return cols, rows


def _dataset_dict(d: Dataset) -> dict[str, Any]:
    return {"name": d.name, "version": d.version, "path": d.path, "id_column": d.id_column,
            "label_column": d.label_column, "columns": d.columns, "rows": d.rows, "sha256": d.sha256,
            "created": d.created}


class Registry:
    """The node's data registry and grants, in its database."""

    def __init__(self, db: Database, node: str, signer: Signer):
        self.db, self.node, self.signer = db, node, signer

    # ------------------------------------------------------------------ data sets
    def register(self, name: str, path: str | Path, id_column: str, label_column: str | None = None
                 ) -> dict[str, Any]:
        import re

        if not re.match(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$", name):
            raise ConfigError(f"data set name {name!r}: use letters, digits, '_', '.' or '-'")
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise DataError(f"{p} is not a file on this node; data sets are registered where they live")
        cols, rows = inspect_file(p)
        for what, col in (("id", id_column), ("label", label_column)):
            if col is not None and col not in cols:
                raise DataError(f"{what} column {col!r} is not in {p.name} (columns: {', '.join(cols[:12])})")
        digest = sha256_file(p)
        with self.db.session.begin() as s:
            last = s.execute(select(func.max(Dataset.version)).where(Dataset.name == name)).scalar() or 0
            d = Dataset(name=name, version=last + 1, path=str(p), id_column=id_column, label_column=label_column,
                        columns=cols, rows=rows, sha256=digest, created=time.time())
            s.add(d)
        return _dataset_dict(d)

    def dataset(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        """The newest version of a data set (or the given one)."""
        with self.db.session() as s:
            q = select(Dataset).where(Dataset.name == name)
            q = q.where(Dataset.version == version) if version else q.order_by(Dataset.version.desc())
            d = s.execute(q.limit(1)).scalar()
            return None if d is None else _dataset_dict(d)

    def datasets(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [_dataset_dict(d) for d in s.execute(select(Dataset).order_by(Dataset.name,
                                                                                  Dataset.version)).scalars()]

    # ------------------------------------------------------------------ grants
    def grant(self, dataset: str, grantee: str, components: Iterable[str] = ("*",), job_id: str | None = None,
              expires: float | None = None, max_uses: int | None = None, initiator: str | None = None,
              bounds: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, Any]:
        """Sign and keep a grant (see the module docstring); return it."""
        if self.dataset(dataset) is None:
            raise ConfigError(f"no data set {dataset!r} is registered here; `atoll data register` it first")
        comps = sorted(set(components))
        if not comps:
            raise ConfigError("name the components the grant allows (or '*' for any installed one)")
        check_bounds_shape(bounds or {}, comps)
        if max_uses is not None and max_uses < 1:
            raise ConfigError("max_uses must be at least 1")
        body = {"id": secrets.token_hex(8), "owner": self.node, "dataset": dataset, "grantee": grantee,
                "components": comps, "job_id": job_id, "expires": expires, "max_uses": max_uses,
                "initiator": initiator, "bounds": {c: {p: dict(b) for p, b in v.items()}
                                                   for c, v in (bounds or {}).items()},
                "created": time.time()}
        sig = self.signer.sign_doc(GRANT, body)
        with self.db.session.begin() as s:
            s.add(Grant(id=body["id"], dataset=dataset, grantee=grantee, body=body, signature=sig,
                        created=body["created"]))
        return {**body, "signature": sig, "revoked": None, "uses": 0}

    def revoke(self, grant_id: str) -> dict[str, Any]:
        with self.db.session.begin() as s:
            g = s.get(Grant, grant_id)
            if g is None:
                raise ConfigError(f"no grant {grant_id!r} here (atoll data grants lists them)")
            if g.revoked is None:
                g.revoked = time.time()
            return self._grant_dict(s, g)

    def _grant_dict(self, s: Any, g: Grant) -> dict[str, Any]:
        uses = s.execute(select(func.count(func.distinct(GrantUse.job_id))).where(GrantUse.grant_id == g.id)).scalar()
        return {**g.body, "signature": g.signature, "revoked": g.revoked, "uses": int(uses or 0)}

    def grants(self, dataset: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(Grant).order_by(Grant.created)
            if dataset:
                q = q.where(Grant.dataset == dataset)
            return [self._grant_dict(s, g) for g in s.execute(q).scalars()]

    def uses(self, grant_id: str, exclude_job: str | None = None) -> int:
        with self.db.session() as s:
            q = select(func.count(func.distinct(GrantUse.job_id))).where(GrantUse.grant_id == grant_id)
            if exclude_job is not None:
                q = q.where(GrantUse.job_id != exclude_job)
            return int(s.execute(q).scalar() or 0)

    def record_use(self, grant_id: str, job_id: str, step: str, component: str, version: int, sha: str) -> None:
        with self.db.session.begin() as s:
            s.add(GrantUse(grant_id=grant_id, job_id=job_id, step=step, component=component,
                           dataset_version=version, sha256=sha, t=time.time()))

    def find_grant(self, use: "Use") -> tuple[dict[str, Any], dict[str, Any]]:
        """The first grant that allows ``use`` and the data set version it covers; else
        :class:`PolicyRefused` saying why the closest grant did not."""
        ds = self.dataset(use.dataset)
        if ds is None:
            raise PolicyRefused(f"node {self.node!r} has no data set {use.dataset!r} registered; "
                                f"register it there (atoll data register {use.dataset} FILE --id COL)")
        with self.db.session() as s:
            rows = list(s.execute(select(Grant).where(Grant.dataset == use.dataset).order_by(Grant.created))
                        .scalars())
            candidates = [(g, self._grant_dict(s, g)) for g in rows]
        if not candidates:
            raise PolicyRefused(f"data set {use.dataset!r} of node {self.node!r} has no grant; the owner "
                                f"grants it with `atoll data grant {use.dataset} --to PARTNER`")
        reasons = []
        for g, d in candidates:
            try:
                check_grant(d, self.signer.public, use, self.uses(g.id, exclude_job=use.job_id))
                return d, ds
            except PolicyRefused as e:
                reasons.append(str(e))
        raise PolicyRefused(reasons[0] if len(reasons) == 1 else
                            f"no grant of {use.dataset!r} allows this use: " + "; ".join(reasons))


# ====================================================================== checking a grant
@dataclass(frozen=True)
class Use:
    """One intended use of a data set: a job (its id, initiator, other nodes) and the steps
    (component + full parameters) that touch it."""

    dataset: str
    job_id: str
    initiator: str
    nodes: frozenset[str]
    steps: tuple[tuple[str, str, Mapping[str, Any]], ...]  # (step, component, params)


def check_bounds_shape(bounds: Mapping[str, Mapping[str, Mapping[str, Any]]], components: list[str]) -> None:
    """Bounds name known components and parameters, with min/max/one_of only."""
    from atoll.jobs import registry

    for comp, params in bounds.items():
        cls = registry.find(comp)
        if cls is None:
            raise ConfigError(f"bound on unknown component {comp!r}; known: {', '.join(registry.names())}")
        if "*" not in components and comp not in components:
            raise ConfigError(f"bound on {comp!r}, which the grant does not allow")
        fields = cls.Params.model_fields
        for name, b in params.items():
            if name not in fields:
                raise ConfigError(f"{comp} has no parameter {name!r}; its parameters: {', '.join(fields)}")
            extra = set(b) - {"min", "max", "one_of"}
            if extra or not b:
                raise ConfigError(f"bound {comp}.{name}: use min, max or one_of (got {sorted(b)})")


def check_grant(g: Mapping[str, Any], owner_key: Verifier, use: Use, uses_elsewhere: int,
                now: float | None = None) -> None:
    """Refuse (:class:`PolicyRefused`) unless grant ``g`` allows ``use``: signature, revocation,
    expiry, uses, job, initiator, grantee in the job, components, parameter bounds."""
    now = time.time() if now is None else now
    gid = g.get("id", "?")
    body = {k: g.get(k) for k in ("id", "owner", "dataset", "grantee", "components", "job_id", "expires",
                                  "max_uses", "initiator", "bounds", "created")}
    if not owner_key.verify_doc(GRANT, body, str(g.get("signature", ""))):
        raise PolicyRefused(f"grant {gid} of {g.get('dataset')!r}: its signature does not verify (the grant "
                            "was altered, or signed by another key); revoke it and grant again")
    if body["dataset"] != use.dataset:
        raise PolicyRefused(f"grant {gid} is for data set {body['dataset']!r}, not {use.dataset!r}")
    if g.get("revoked"):
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} was revoked; the owner can grant again")
    if body["expires"] is not None and now >= float(body["expires"]):
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} expired at "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(body['expires']))}")
    if body["max_uses"] is not None and uses_elsewhere >= int(body["max_uses"]):
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} is used up ({uses_elsewhere} of "
                            f"{body['max_uses']} jobs)")
    if body["job_id"] is not None and body["job_id"] != use.job_id:
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} is for job {body['job_id']!r} only")
    if body["initiator"] is not None and body["initiator"] != use.initiator:
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} allows jobs initiated by {body['initiator']!r}, "
                            f"not by {use.initiator!r}")
    if body["grantee"] not in use.nodes:
        raise PolicyRefused(f"grant {gid} of {use.dataset!r} is for {body['grantee']!r}, who is not in this "
                            "job")
    comps = body["components"] or []
    for step, comp, params in use.steps:
        if "*" not in comps and comp not in comps:
            raise PolicyRefused(f"grant {gid} of {use.dataset!r} does not allow component {comp!r} "
                                f"(step {step!r}); it allows {', '.join(comps)}")
        for name, b in (body["bounds"] or {}).get(comp, {}).items():
            v = params.get(name)
            if not _within(v, b):
                raise PolicyRefused(f"step {step!r}: {comp}.{name} = {v!r} is outside the grant's bounds "
                                    f"({_describe(b)}) for {use.dataset!r}")


def _within(v: Any, b: Mapping[str, Any]) -> bool:
    if "one_of" in b and v not in b["one_of"]:
        return False
    for key, ok in (("min", lambda x, lim: x >= lim), ("max", lambda x, lim: x <= lim)):
        if key in b:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
                return False
            if not ok(v, b[key]):
                return False
    return True


def _describe(b: Mapping[str, Any]) -> str:
    parts = []
    if "min" in b:
        parts.append(f">= {b['min']}")
    if "max" in b:
        parts.append(f"<= {b['max']}")
    if "one_of" in b:
        parts.append(f"one of {b['one_of']}")
    return ", ".join(parts)


def parse_bound(text: str) -> tuple[str, str, dict[str, Any]]:
    """``COMPONENT.PARAM=MIN..MAX`` (either side may be empty) or ``COMPONENT.PARAM=A,B,C``."""
    import json

    key, eq, value = text.partition("=")
    comp, dot, param = key.strip().partition(".")
    if not eq or not dot or not comp or not param or not value:
        raise ConfigError(f"bound {text!r}: write COMPONENT.PARAM=MIN..MAX or COMPONENT.PARAM=A,B")

    def num(s: str) -> float | int:
        try:
            return json.loads(s)
        except ValueError:
            raise ConfigError(f"bound {text!r}: {s!r} is not a number") from None

    if ".." in value:
        lo, _, hi = value.partition("..")
        b: dict[str, Any] = {}
        if lo.strip():
            b["min"] = num(lo.strip())
        if hi.strip():
            b["max"] = num(hi.strip())
        if not b:
            raise ConfigError(f"bound {text!r}: give a minimum, a maximum or both")
        return comp, param, b

    def item(s: str) -> Any:
        try:
            return json.loads(s)
        except ValueError:
            return s
    return comp, param, {"one_of": [item(x.strip()) for x in value.split(",")]}
