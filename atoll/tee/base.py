"""The enclave interface every backend implements, the verifier's policy, and the backend registry.

Nouns:

* :class:`Evidence`: what an enclave hands a verifier: the backend's name and its quote
  (a simulated quote, an SGX DCAP quote, a TDX quote), plus the collateral a real quote
  needs to be checked offline. The quote binds a 64-byte ``report_data`` chosen by the
  enclave; Atoll always fills it with :func:`bind_report_data` (a fresh public key, a
  purpose and the verifier's nonce), so a report answers one challenge and proves who
  holds one key.
* :class:`EnclavePolicy`: what a verifier accepts: measurements (the allow-list), backends,
  TCB statuses, debug enclaves, the age of a simulated quote, the simulated platforms' keys.
* :class:`Attested`: a verified report (backend, measurement, TCB status and advisories,
  whether it is simulated).
* :class:`EnclaveBackend`: one per kind of enclave, registered by name in :data:`BACKENDS`
  (``simulated``, ``gramine-sgx``, ``sgx-dcap``, ``tdx``). A backend verifies its own quotes;
  backends that can start enclaves also ``launch`` a measured workload.

Every output of the ``simulated`` backend carries :data:`SIMULATED_MARK`: it protects
nothing from the host (the host OS reads the enclave's memory, keys and files).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atoll.errors import AtollError, ConfigError

#: written into every report, log line and output file of the simulated backend
SIMULATED_MARK = "SIMULATED: NO HARDWARE PROTECTION"
REPORT_DATA_BYTES = 64


class TeeError(AtollError):
    """A trusted-execution step failed (base class)."""


class AttestationError(TeeError):
    """Evidence was refused: bad signature, wrong nonce or key, unlisted measurement, TCB status..."""


class PolicyError(TeeError):
    """The attested enclave is genuine but not the one the owner's policy allows."""


class KeyReleaseRefused(TeeError):
    """A key-release service refused to release a data key (authorisation, revocation, attestation)."""


class SealError(TeeError):
    """Sealed data could not be opened: another measurement, another platform, or tampering."""


class EnclaveMemoryError(TeeError):
    """The enclave's working set would exceed its memory cap."""


# ---------------------------------------------------------------------------------- report data
def bind_report_data(purpose: str, public_key: bytes, nonce: bytes = b"", extra: bytes = b"") -> bytes:
    """The 64 bytes an enclave puts in ``report_data``: SHA-512 over a purpose label, the fresh
    public key it proves to hold, the verifier's nonce and any request digest (each
    length-prefixed), as SGX/TDX's 64-byte field and Gramine's RA-TLS do."""
    h = hashlib.sha512(b"atoll-tee/report-data/1")
    for part in (purpose.encode(), public_key, nonce, extra):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


# ---------------------------------------------------------------------------------- evidence
@dataclass(frozen=True)
class Evidence:
    """A backend's quote plus what is needed to verify it offline."""

    backend: str
    quote: bytes
    collateral: str = ""  # DCAP: the collateral JSON (signed by Intel; checked, not trusted)

    def to_wire(self) -> dict[str, Any]:
        return {"backend": self.backend, "quote": self.quote, "collateral": self.collateral}

    @classmethod
    def from_wire(cls, d: Any) -> "Evidence":
        if not isinstance(d, dict) or not isinstance(d.get("backend"), str) \
                or not isinstance(d.get("quote"), (bytes, bytearray)):
            raise AttestationError("malformed evidence: expected backend, quote (and collateral)")
        return cls(d["backend"], bytes(d["quote"]), str(d.get("collateral") or ""))


@dataclass(frozen=True)
class QuoteFacts:
    """What a backend read out of a quote whose signature chain it checked."""

    measurement: str            # hex: Atoll workload measurement, MRENCLAVE or MRTD
    report_data: bytes
    simulated: bool
    tcb_status: str = "UpToDate"
    advisories: tuple[str, ...] = ()
    debug: bool = False
    issued_at: float | None = None  # simulated quotes carry a time; hardware quotes do not
    details: dict[str, str] = field(default_factory=dict)  # mr_signer, rt_mr0.., platform key


@dataclass(frozen=True)
class Attested:
    """A report that passed :func:`verify_evidence` against a policy."""

    backend: str
    measurement: str
    tcb_status: str
    advisories: tuple[str, ...]
    simulated: bool
    details: dict[str, str]

    @property
    def mark(self) -> str:
        return SIMULATED_MARK if self.simulated else ""

    def summary(self) -> dict[str, Any]:
        out = {"backend": self.backend, "measurement": self.measurement, "tcb_status": self.tcb_status,
               "advisories": list(self.advisories), "simulated": self.simulated}
        if self.simulated:
            out["mark"] = SIMULATED_MARK
        return out


# ---------------------------------------------------------------------------------- policy
HARDWARE_TCB_DEFAULT = ("UpToDate",)


class EnclavePolicy(BaseModel):
    """What a verifier (a data owner, a key-release service, a peer enclave) accepts.

    ``measurements`` is the allow-list (hex, lower case). ``backends`` lists the kinds of
    evidence accepted; ``simulated`` is accepted only when listed *and* the simulated
    platforms' attestation keys are pinned in ``simulated_platform_keys``.
    ``accepted_tcb`` lists the TCB statuses of real quotes to accept (Intel's names:
    ``UpToDate``, ``SWHardeningNeeded``, ``ConfigurationNeeded``,
    ``ConfigurationAndSWHardeningNeeded``, ``OutOfDate``, ...); ``Revoked`` is never accepted.
    """

    model_config = ConfigDict(extra="forbid")

    measurements: list[str] = Field(min_length=1)
    backends: list[str] = Field(default_factory=lambda: ["sgx-dcap"])
    accepted_tcb: list[str] = Field(default_factory=lambda: list(HARDWARE_TCB_DEFAULT))
    allow_debug: bool = False
    simulated_platform_keys: list[str] = Field(default_factory=list)
    max_age_s: float = Field(300.0, gt=0, description="oldest simulated quote accepted (seconds)")
    address: str | None = Field(None, description="HOST:PORT of the enclave's attested channel")
    pccs_url: str | None = Field(None, description="PCCS / Intel PCS to fetch DCAP collateral from when the "
                                 "evidence carries none (needs a network)")

    @field_validator("measurements", "simulated_platform_keys")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        out = []
        for m in v:
            m = m.strip().lower()
            try:
                bytes.fromhex(m)
            except ValueError:
                raise ValueError(f"{m!r} is not hex") from None
            out.append(m)
        return out

    @field_validator("backends")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for b in v:
            if b not in BACKENDS:
                raise ValueError(f"unknown enclave backend {b!r}; known: {', '.join(sorted(BACKENDS))}")
        return v

    @field_validator("accepted_tcb")
    @classmethod
    def _never_revoked(cls, v: list[str]) -> list[str]:
        if "Revoked" in v:
            raise ValueError("a revoked TCB is never accepted")
        return v

    @classmethod
    def load(cls, path: str | Path) -> "EnclavePolicy":
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read the enclave policy {p}: {e.strerror}") from None
        try:
            return cls.model_validate(raw)
        except Exception as e:
            raise ConfigError(f"{p}: not a valid enclave policy: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(exclude_none=True), indent=2) + "\n")


def verify_evidence(evidence: Evidence, policy: EnclavePolicy, report_data: bytes,
                    now: float | None = None) -> Attested:
    """Check ``evidence`` against ``policy`` and the ``report_data`` the verifier expects
    (built with :func:`bind_report_data` from the key it was shown and its own nonce).

    Raises :class:`AttestationError` (not genuine, stale, replayed, wrong key) or
    :class:`PolicyError` (genuine, but not an allowed measurement or TCB).
    """
    if evidence.backend not in policy.backends:
        raise AttestationError(f"evidence from backend {evidence.backend!r}, the policy accepts only "
                               f"{', '.join(policy.backends)}")
    backend = get_backend(evidence.backend)
    now = time.time() if now is None else now
    facts = backend.verify_quote(evidence, policy, now)
    if not hmac.compare_digest(facts.report_data, report_data):
        raise AttestationError("report_data does not bind the expected key and nonce: a replayed or "
                               "stale attestation, or a key the enclave does not hold; ask for a fresh one")
    if facts.simulated and facts.issued_at is not None and not (now - policy.max_age_s <= facts.issued_at
                                                                 <= now + 60):
        raise AttestationError(f"simulated quote issued {now - facts.issued_at:.0f} s ago, older than "
                               f"max_age_s={policy.max_age_s:g}; ask the enclave for a fresh one")
    if facts.measurement.lower() not in policy.measurements:
        raise PolicyError(f"enclave measurement {facts.measurement} is not in the policy's allow-list; "
                          "the enclave runs other code than the owner approved")
    if facts.debug and not policy.allow_debug:
        raise PolicyError("the enclave runs in debug mode (its memory is readable); "
                          "set allow_debug only for testing")
    if not facts.simulated and facts.tcb_status not in policy.accepted_tcb:
        raise PolicyError(f"TCB status {facts.tcb_status} (advisories: "
                          f"{', '.join(facts.advisories) or 'none'}) is not accepted by the policy "
                          f"({', '.join(policy.accepted_tcb)}); update the platform or widen accepted_tcb")
    return Attested(evidence.backend, facts.measurement.lower(), facts.tcb_status, tuple(facts.advisories),
                    facts.simulated, dict(facts.details))


# ---------------------------------------------------------------------------------- backends
class EnclaveBackend:
    """One kind of enclave. Verifying its quotes is mandatory; launching is optional."""

    name: ClassVar[str] = ""
    simulated: ClassVar[bool] = False
    can_launch: ClassVar[bool] = False

    @classmethod
    def verify_quote(cls, evidence: Evidence, policy: EnclavePolicy, now: float) -> QuoteFacts:
        raise NotImplementedError

    def launch(self, workload: Any, **options: Any) -> Any:
        raise ConfigError(f"backend {self.name!r} verifies quotes only; it cannot start enclaves here")


#: the one registry of enclave backends: name -> "module:Class" (imported when first used,
#: from this fixed table only; nothing read from a peer chooses what is imported)
BACKENDS: dict[str, str] = {
    "simulated": "atoll.tee.simulated:SimulatedBackend",
    "gramine-sgx": "atoll.tee.gramine:GramineBackend",
    "sgx-dcap": "atoll.tee.dcap:SgxDcapBackend",
    "tdx": "atoll.tee.dcap:TdxBackend",
}


def get_backend(name: str) -> type[EnclaveBackend]:
    """The backend class registered under ``name``."""
    target = BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"unknown enclave backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


# ---------------------------------------------------------------------------------- in the enclave
class EnclaveRuntime:
    """What code inside an enclave uses: quotes, sealing and its measurement-bound key.

    A backend's runtime supplies :meth:`evidence` (a quote over 64 bytes of report data)
    and :meth:`_seal_root` (a secret only this measurement on this platform can derive:
    SGX's MRENCLAVE sealing key; the simulated platform's seal secret). Sealing and the
    long-lived key-wrap key are derived from it here, the same way for every backend.
    """

    backend: ClassVar[str] = ""
    simulated: ClassVar[bool] = False

    def __init__(self, measurement: str):
        self.measurement = measurement.lower()

    @property
    def mark(self) -> str:
        return SIMULATED_MARK if self.simulated else ""

    def evidence(self, report_data: bytes) -> Evidence:
        raise NotImplementedError

    def _seal_root(self) -> bytes:
        raise NotImplementedError

    def _derive(self, label: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(hashes.SHA256(), 32, salt=bytes.fromhex(self.measurement),
                    info=b"atoll-tee/" + label).derive(self._seal_root())

    def seal(self, data: bytes, aad: bytes = b"") -> bytes:
        """Encrypt ``data`` so that only this measurement on this platform can :meth:`unseal` it."""
        import os

        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        head = b"ATSEAL1" + bytes.fromhex(self.measurement)
        ct = AESGCM(self._derive(b"seal/1")).encrypt(nonce, data, head + aad)
        return head + nonce + ct

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(blob) < 7 + 32 + 12 + 16 or blob[:7] != b"ATSEAL1":
            raise SealError("not a sealed blob")
        if blob[7:39] != bytes.fromhex(self.measurement):
            raise SealError("sealed by another measurement: only the enclave that sealed it can open it")
        try:
            return AESGCM(self._derive(b"seal/1")).decrypt(blob[39:51], blob[51:], blob[:39] + aad)
        except InvalidTag:
            raise SealError("sealed blob does not open: another platform, or it was altered") from None

    def wrap_private_key(self) -> bytes:
        """Raw X25519 private key bound to this measurement (data files are wrapped to its public key)."""
        return self._derive(b"wrap-key/1")
