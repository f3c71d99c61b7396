"""A node's identity and configuration: ``atoll node init`` writes them, ``atoll node start`` reads them.

``init_node("bank", "bank/", ca="ca/")`` makes, in ``bank/``:

* ``signing.key`` — the node's Ed25519 key (signs grants, proposals, control messages,
  audit heads); ``tls/node.key`` + ``tls/node.pem`` — its TLS key pair and a certificate
  naming ``bank``, signed by the federation's CA (``ca/ca.pem`` + ``ca/ca.key``, from
  ``atoll certs init``; a real deployment brings its own certificate: ``cert=``, ``key=``).
  Adding a partner later never re-issues anyone's certificate: partners trust the CA
  and pin each other's certificate from the card.
* ``card.yaml`` — what partners put in their config: name, federation address, the
  certificate and the signing public key (no secret).
* ``bootstrap.token`` — a one-time token (also printed): the first ``atoll login``
  exchanges it for an API token, after which it is void. There are no default credentials.
* ``node.yaml`` — the configuration :class:`NodeConfig` reads (partners are added with
  ``atoll node add-partner``).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atoll.errors import AuthError, ConfigError
from atoll.federation.certs import TlsConfig, make_party_cert
from atoll.node.signing import Signer, Verifier

_NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"


class PartnerConfig(BaseModel):
    """A partner node: where it listens, the certificate it must present, its signing key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    address: str
    certificate: str = Field(description="the partner's certificate file (PEM), from its card")
    signing_key: str = Field(description="the partner's Ed25519 public key (base64), from its card")


class AutoApprove(BaseModel):
    """Accept proposals from ``partner`` whose steps use only ``components`` (still checked
    against the registry, the grants and their bounds)."""

    model_config = ConfigDict(extra="forbid")

    partner: str
    components: list[str] = Field(min_length=1)


class EngineConfig(BaseModel):
    """Where this node's jobs run their heavy HE work (see :mod:`atoll.crypto.engine`): local worker
    processes, or this organisation's own Ray cluster. Never a partner's."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="ray: 'auto', 'HOST:PORT' or 'ray://HOST:10001' "
                                "(default: RAY_ADDRESS, else a local Ray instance)")
    cpus_per_worker: float = Field(1.0, ge=0, description="ray: CPUs reserved for each worker")

    def options(self) -> dict[str, Any]:
        """What :func:`atoll.crypto.engine.set_factory` takes: ``(kind, **options)``."""
        if self.kind == "local":
            return {}
        return {k: v for k, v in (("address", self.address), ("cpus_per_worker", self.cpus_per_worker))
                if v is not None}


class NodeConfig(BaseModel):
    """``node.yaml``. Relative paths are relative to the file's folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    federation: str = Field(description="HOST:PORT partners dial for this node (gRPC + mTLS)")
    federation_listen: str | None = Field(None, description="where to listen (default: federation)")
    api: str = Field("127.0.0.1:8000", description="HOST:PORT of the REST API for this node's users")
    store: str = Field("sqlite:///node.db", description="SQLAlchemy URL; sqlite:///FILE or "
                       "postgresql+psycopg://USER@HOST/DB")
    ca: str = "tls/ca.pem"
    cert: str = "tls/node.pem"
    key: str = "tls/node.key"
    signing_key: str = "signing.key"
    bootstrap_sha256: str | None = Field(None, description="SHA-256 of the one-time bootstrap token")
    bootstrap_file: str | None = "bootstrap.token"
    work_dir: str = "work"
    partners: list[PartnerConfig] = Field(default_factory=list)
    auto_approve: list[AutoApprove] = Field(default_factory=list)
    job_timeout: float = Field(1800.0, gt=0, description="seconds a job may wait for partners' nodes "
                               "and approvals before it fails")
    workers: int = Field(4, ge=1, description="jobs this node runs at once")
    max_attempts: int = Field(3, ge=1, description="times an interrupted job is resumed")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="the worker engine of this "
                                 "node's jobs (jobs=/n_jobs=): local processes or this node's Ray cluster")

    # filled by load(), not part of the file
    path: Path = Field(Path("node.yaml"), exclude=True)

    @field_validator("partners")
    @classmethod
    def _unique(cls, v: list[PartnerConfig]) -> list[PartnerConfig]:
        names = [p.name for p in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"partners {sorted(dup)} appear more than once")
        return v

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "NodeConfig":
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read node config {p}: {e.strerror}; make one with "
                              "`atoll node init --name NAME --out DIR`") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        try:
            cfg = cls.model_validate(raw or {})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"{p}: {loc}: {err['msg']}") from None
        cfg.path = p.resolve()
        if cfg.name in {q.name for q in cfg.partners}:
            raise ConfigError(f"{p}: the node {cfg.name!r} is listed among its own partners")
        return cfg

    def save(self) -> None:
        data = self.model_dump(exclude={"path"}, exclude_none=True)
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.path.parent / p

    @property
    def store_url(self) -> str:
        """The store URL with a relative SQLite path made relative to the config's folder."""
        url = self.store
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return "sqlite:///" + str(self.resolve(url[len("sqlite:///"):]))
        return url

    # ------------------------------------------------------------------ identity
    def tls(self) -> TlsConfig:
        files = {"ca": self.resolve(self.ca), "cert": self.resolve(self.cert), "key": self.resolve(self.key)}
        for what, f in files.items():
            if not f.is_file():
                raise AuthError(f"node {self.name!r}: missing TLS {what} file {f}; "
                                "run `atoll node init` or fix the path in node.yaml")
        tls = TlsConfig(self.name, files["ca"].read_bytes(), files["cert"].read_bytes(), files["key"].read_bytes())
        tls.check()
        return tls

    def signer(self) -> Signer:
        return Signer.load(self.resolve(self.signing_key))

    def partner(self, name: str) -> PartnerConfig | None:
        return next((p for p in self.partners if p.name == name), None)

    def partner_certificate(self, name: str) -> bytes:
        p = self.partner(name)
        if p is None:
            raise AuthError(f"{name!r} is not a partner of node {self.name!r}")
        f = self.resolve(p.certificate)
        try:
            return f.read_bytes()
        except OSError as e:
            raise ConfigError(f"{self.path}: partner {name!r}: cannot read its certificate {f}: "
                              f"{e.strerror}") from None

    def partner_verifier(self, name: str) -> Verifier:
        p = self.partner(name)
        if p is None:
            raise AuthError(f"{name!r} is not a partner of node {self.name!r}")
        return Verifier.from_text(p.signing_key, f"signing key of partner {name!r}")

    def addresses(self) -> dict[str, str]:
        return {self.name: self.federation, **{p.name: p.address for p in self.partners}}


# ====================================================================== init
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write_secret(path: Path, data: str | bytes) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


def _hosts(*addresses: str) -> list[str]:
    out = []
    for a in addresses:
        host = a.rpartition(":")[0].strip("[]")
        if host and host not in ("0.0.0.0", "::") and host not in out:
            out.append(host)
    return out


def init_node(name: str, out: str | Path, federation: str, api: str = "127.0.0.1:8000",
              ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None,
              ca_cert: str | Path | None = None, store: str | None = None, days: int = 365,
              hosts: list[str] | None = None) -> tuple[NodeConfig, str]:
    """Make a node's identity and configuration in ``out`` (see the module docstring);
    return the config and the one-time bootstrap token."""
    import re

    if not re.match(_NAME, name):
        raise ConfigError(f"node name {name!r}: use letters, digits, '_' or '-', starting with a letter")
    d = Path(out)
    if (d / "node.yaml").exists():
        raise ConfigError(f"{d / 'node.yaml'} exists: this folder already holds a node; pick another --out")
    (d / "tls").mkdir(parents=True, exist_ok=True)
    if cert is not None or key is not None:
        if cert is None or key is None or ca_cert is None:
            raise ConfigError("bringing your own certificate needs --cert, --key and --ca-cert")
        ca_pem, cert_pem, key_pem = (Path(ca_cert).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes())
    else:
        if ca is None:
            raise ConfigError("give the federation's CA folder (--ca DIR with ca.pem and ca.key, from "
                              "`atoll certs init`), or your own --cert/--key/--ca-cert")
        ca_dir = Path(ca)
        try:
            ca_pem, ca_key = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the CA in {ca_dir}: {e.strerror}; it needs ca.pem and ca.key "
                              "(`atoll certs init --parties NAME --out DIR` makes them)") from None
        cert_pem, key_pem = make_party_cert(name, ca_pem, ca_key, days, _hosts(federation) + list(hosts or []))
    TlsConfig(name, ca_pem, cert_pem, key_pem).check()
    (d / "tls" / "ca.pem").write_bytes(ca_pem)
    (d / "tls" / "node.pem").write_bytes(cert_pem)
    _write_secret(d / "tls" / "node.key", key_pem)
    signer = Signer.generate()
    signer.save(d / "signing.key")
    token = "atoll-bootstrap-" + secrets.token_urlsafe(24)
    _write_secret(d / "bootstrap.token", token + "\n")
    cfg = NodeConfig(name=name, federation=federation, api=api, bootstrap_sha256=token_hash(token),
                     **({"store": store} if store else {}))
    cfg.path = (d / "node.yaml").resolve()
    cfg.save()
    card = {"name": name, "address": federation, "certificate": cert_pem.decode(),
            "signing_key": signer.public.text()}
    (d / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return cfg, token


def add_partner(config: str | Path, card: str | Path, address: str | None = None) -> PartnerConfig:
    """Add a partner from its card to ``node.yaml`` (its certificate is copied next to the config)."""
    cfg = NodeConfig.load(config)
    try:
        raw: dict[str, Any] = yaml.safe_load(Path(card).read_text())
        name, cert = raw["name"], raw["certificate"]
        Verifier.from_text(raw["signing_key"], "the card's signing key")
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError(f"{card}: not a node card (atoll node init writes card.yaml): {e}") from None
    if name == cfg.name:
        raise ConfigError(f"{card} is node {name!r}'s own card")
    ca = cfg.tls().ca_cert
    _check_partner_cert(name, ca, cert.encode())
    (cfg.resolve("partners")).mkdir(exist_ok=True)
    cert_file = cfg.resolve("partners") / f"{name}.pem"
    cert_file.write_text(cert)
    partner = PartnerConfig(name=name, address=address or raw["address"], certificate=f"partners/{name}.pem",
                            signing_key=raw["signing_key"])
    cfg.partners = [p for p in cfg.partners if p.name != name] + [partner]
    cfg.save()
    return partner


def _check_partner_cert(name: str, ca_pem: bytes, cert_pem: bytes) -> None:
    """A partner's certificate must name it and come from this federation's CA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise AuthError(f"partner {name!r}: unreadable certificate: {e}") from None
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != name:
        raise AuthError(f"partner {name!r}: its certificate names {cn[0].value if cn else None!r}")
    if cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        raise AuthError(f"partner {name!r}: its certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError
        raise AuthError(f"partner {name!r}: its certificate was not issued by this node's CA; "
                        "use one federation CA") from None


def cert_fingerprint(pem: bytes) -> str:
    """SHA-256 of a certificate's DER bytes (what pinning compares)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def cert_expiry(pem: bytes) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
