"""Serving configuration files (YAML), one per party process, and what they build.

A host::

    party: host_0
    role: host
    session: credit-serving             # the serving session: the same name at every party
    listen: 127.0.0.1:7201              # this replica's gRPC address (mutual TLS)
    certs: certs/                       # ca.pem, host_0.pem, host_0.key (atoll certs init)
    guests: [guest]                     # who may ask for partial scores
    features: {path: host_0.csv, id: id}    # or {url: "sqlite:///f.db", table: features, id: id}
    models:
      v1: {run: runs/credit, step: train}   # this party's part of a finished run (with its scaling)
    levels: [plain-partial]             # or [masked] (needs mask_key and mask_peers)
    metrics_listen: 127.0.0.1:9201      # Prometheus scrape endpoint (optional)

A guest::

    party: guest
    role: guest
    session: credit-serving
    listen: 127.0.0.1:8080              # the predict API (HTTP/JSON)
    grpc_listen: 127.0.0.1:8443         # and over gRPC (mutual TLS; grpc_clients: [names] may call)
    certs: certs/
    features: {path: guest.csv}
    hosts: {host_0: [127.0.0.1:7201, 127.0.0.1:7202]}   # replicas of each host
    models: {v1: {run: runs/credit, step: train}, v2: {run: runs/credit2, step: train}}
    routes: {stable: v1, canary: v2, fraction: 0.1, salt: credit}
    level: plain-partial
    timeout_s: 2.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atoll.errors import ConfigError
from atoll.serving.parts import ServedPart, part_from_bytes, part_from_run


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = None
    step: str = "train"
    part: str | None = None          # a saved part file (model.bin, or a node model store export)
    scalers: list[str] = Field(default_factory=list)  # its scale states' files, in pipeline order

    def load(self, party: str, base: Path) -> ServedPart:
        def at(p: str) -> Path:
            q = Path(p)
            return q if q.is_absolute() else base / q

        if (self.run is None) == (self.part is None):
            raise ConfigError("a model is run: + step:, or part: (+ scalers:)")
        if self.run is not None:
            return part_from_run(at(self.run), party, self.step)
        try:
            return part_from_bytes(at(self.part).read_bytes(), [at(s).read_bytes() for s in self.scalers])
        except OSError as e:
            raise ConfigError(f"cannot read a model part: {e.strerror} ({e.filename})") from None


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stable: str
    canary: str | None = None
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    salt: str = "atoll"


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    party: str
    session: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")
    listen: str
    certs: str | None = None         # None: no TLS (loopback development only)
    features: dict | None = None
    models: dict[str, ModelSpec] = Field(min_length=1)


class HostConfig(_Common):
    role: Literal["host"] = "host"
    guests: list[str] = Field(default_factory=lambda: ["guest"])
    levels: list[Literal["plain-partial", "masked"]] = Field(default_factory=lambda: ["plain-partial"])
    mask_key: str | None = None              # file with this host's 32-byte X25519 private key
    mask_peers: dict[str, str] = Field(default_factory=dict)  # other hosts' public keys (hex)
    metrics_listen: str | None = None        # a Prometheus endpoint (GET /metrics) here


class GuestConfig(_Common):
    role: Literal["guest"] = "guest"
    hosts: dict[str, list[str]] = Field(min_length=1)
    routes: Routes | None = None
    level: Literal["plain-partial", "masked"] = "plain-partial"
    timeout_s: float = Field(2.0, gt=0, le=120)
    health_interval_s: float = Field(1.0, ge=0)
    manifest: dict[str, dict[str, str]] = Field(default_factory=dict)
    he_key_bits: int = Field(2048, ge=1024)  # the guest's Paillier key of masked tree queries
    grpc_listen: str | None = None           # also serve the predict API over gRPC (mutual TLS) here
    grpc_clients: list[str] | None = None    # certificate names allowed to call it (None: any of the CA)


def load_config(path: str | Path) -> HostConfig | GuestConfig:
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    if not isinstance(raw, dict) or raw.get("role") not in ("guest", "host"):
        raise ConfigError(f"{p}: a serving config names its role: guest or host")
    try:
        cfg = (GuestConfig if raw["role"] == "guest" else HostConfig).model_validate(raw)
    except Exception as e:
        raise ConfigError(f"{p}: not a valid serving config: {e}") from None
    cfg._base = p.resolve().parent  # type: ignore[attr-defined]
    return cfg


def _base(cfg: _Common) -> Path:
    return getattr(cfg, "_base", Path.cwd())


def tls_of(cfg: _Common):
    from atoll.federation.certs import TlsConfig

    return None if cfg.certs is None else TlsConfig.load(_base(cfg) / cfg.certs, cfg.party)


def build_host(cfg: HostConfig):
    """(HostServing, TlsConfig | None) from a host config."""
    from atoll.serving.features import open_source
    from atoll.serving.protocol import HostServing, MaskKeys

    base = _base(cfg)
    if cfg.features is None:
        raise ConfigError("a host needs a feature source (features: {path: ...} or {url: ..., table: ...})")
    keys = None
    if cfg.mask_key is not None:
        try:
            private = (base / cfg.mask_key).read_bytes()
            peers = {h: bytes.fromhex(k) for h, k in cfg.mask_peers.items()}
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the mask keys: {e}") from None
        if len(private) != 32 or any(len(k) != 32 for k in peers.values()):
            raise ConfigError("mask keys are 32-byte X25519 keys (atoll serve mask-key makes one)")
        keys = MaskKeys(cfg.party, private, peers)
    versions = {v: m.load(cfg.party, base) for v, m in cfg.models.items()}
    host = HostServing(cfg.party, cfg.session, versions, open_source(cfg.features, base), cfg.guests,
                       cfg.levels, keys)
    return host, tls_of(cfg)


def build_guest(cfg: GuestConfig):
    """A GuestServing from a guest config (its replica sets connect lazily)."""
    from atoll.serving.canary import VersionRouter
    from atoll.serving.features import open_source
    from atoll.serving.protocol import GuestServing
    from atoll.serving.replicas import ReplicaSet

    base = _base(cfg)
    tls = tls_of(cfg)
    versions = {v: m.load(cfg.party, base) for v, m in cfg.models.items()}
    routes = cfg.routes or Routes(stable=next(iter(cfg.models)))
    for v in (routes.stable, routes.canary):
        if v is not None and v not in versions:
            raise ConfigError(f"routes name version {v!r}, which models: does not list")
    router = VersionRouter(routes.stable, salt=routes.salt)
    hosts = {h: ReplicaSet(h, addrs, tls, cfg.health_interval_s) for h, addrs in cfg.hosts.items()}
    guest = GuestServing(cfg.party, cfg.session, versions, hosts,
                         None if cfg.features is None else open_source(cfg.features, base), router,
                         cfg.level, cfg.timeout_s, cfg.manifest, published=[routes.stable],
                         he_key_bits=cfg.he_key_bits)
    if routes.canary is not None:
        guest.publish(routes.canary)
        guest.start_canary(routes.canary, routes.fraction)
    return guest
