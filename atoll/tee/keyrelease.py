"""Key release: a data owner's service hands a data file's release secret only to an attested enclave.

Protocol (one run of an enclave job, per data set; CapsuleManager's shape with the owner's
service at the owner):

1. The host running the enclave asks the owner's service for a challenge: a fresh
   32-byte nonce, valid once, for ``nonce_ttl`` seconds.
2. The enclave makes a fresh X25519 *run key* and, for each data set, evidence whose
   ``report_data`` binds the run key, that nonce, the SHA-256 of the whole job request
   (:func:`request_digest`: job, operation, parameters, data sets with their
   authorisations, recipients) and the key id.
3. The host relays ``{request, key_id, run_public, nonce, evidence}`` to the owner's service,
   which checks: the nonce is its own and unused; the authorisation for that key id in the
   request is signed by the owner, current, not revoked, for this job, operation and
   algorithm, and every recipient named by the request is one it allows; the evidence is
   genuine and its measurement and backend are the authorisation's; ``report_data`` binds
   exactly this request, key and nonce.
4. Only then it answers ``wrap_to(run_public, release_secret, context = digest || key_id)``:
   the secret never leaves the owner except wrapped to a key an attested enclave holds.
5. The enclave opens it with its run key and combines it with its measurement-bound wrap
   key to open the file's data key (:mod:`atoll.tee.envelope`). A secret from anyone but
   the owner's service opens nothing: the file's AES-GCM check fails.

What each party sees: the owner's service sees the job request (names, parameters,
public keys, the locations of the ciphertexts) and the enclave's measurement — no data
of others. The host relays nonces, evidence and the wrapped secret, which it cannot open.
The enclave gets the release secret of each data set it was authorised for, for this run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from atoll.errors import ConfigError
from atoll.tee.authorisation import Authorisation, PartyKeys, RevocationList, SignedAuthorisation
from atoll.tee.base import (AttestationError, EnclavePolicy, Evidence, KeyReleaseRefused, PolicyError,
                            bind_report_data, verify_evidence)
from atoll.tee.envelope import wrap_to

log = logging.getLogger(__name__)
MAX_OUTSTANDING = 4096


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def request_digest(request: dict[str, Any]) -> bytes:
    """SHA-256 of a job request's canonical JSON (what every evidence and release binds)."""
    return hashlib.sha256(_canon(request)).digest()


def release_context(digest: bytes, key_id: str) -> bytes:
    return b"atoll-tee/key-release/1" + digest + key_id.encode()


def key_request_report_data(run_public: bytes, nonce: bytes, digest: bytes, key_id: str) -> bytes:
    return bind_report_data("key-release", run_public, nonce, digest + key_id.encode())


def dataset_authorisation(request: dict[str, Any], key_id: str) -> SignedAuthorisation:
    """The signed authorisation the request carries for ``key_id``."""
    for ds in request.get("datasets", []):
        auth = ds.get("authorisation") or {}
        try:
            signed = SignedAuthorisation(body=bytes.fromhex(auth["body"]), signature=bytes.fromhex(auth["signature"]))
            if Authorisation.model_validate(json.loads(signed.body)).key_id == key_id:
                return signed
        except (KeyError, ValueError, TypeError):
            raise KeyReleaseRefused("malformed authorisation in the job request") from None
    raise KeyReleaseRefused("the job request carries no authorisation for this key")


def check_request(auth: Authorisation, request: dict[str, Any]) -> None:
    """The job request is within what ``auth`` allows (job, operation, algorithm, recipients)."""
    if request.get("job") != auth.job:
        raise KeyReleaseRefused("the authorisation is for another job")
    if request.get("operation") not in auth.operations:
        raise KeyReleaseRefused(f"the authorisation does not allow operation {request.get('operation')!r}")
    algorithm = (request.get("params") or {}).get("algorithm")
    if algorithm not in auth.algorithms:
        raise KeyReleaseRefused(f"the authorisation does not allow algorithm {algorithm!r}")
    extra = sorted(set(request.get("recipients") or []) - set(auth.recipients))
    if extra or not request.get("recipients"):
        raise KeyReleaseRefused(f"the result would go to parties the owner does not allow: {extra or 'none named'}")


class KeyReleaseService:
    """One data owner's key-release service: release secrets, authorisations, revocations.

    ``folder`` holds ``secrets/KEY_ID`` (mode 0600) and ``revoked.json`` (signed).
    ``simulated_platform_keys`` pins the simulated platforms whose quotes it accepts (only
    if an authorisation lists the ``simulated`` backend); ``accepted_tcb`` and
    ``allow_debug`` apply to real quotes.
    """

    def __init__(self, folder: str | Path, keys: PartyKeys, simulated_platform_keys: list[str] | None = None,
                 accepted_tcb: list[str] | None = None, allow_debug: bool = False, nonce_ttl: float = 120.0):
        self.folder, self.keys = Path(folder), keys
        (self.folder / "secrets").mkdir(parents=True, exist_ok=True)
        self.revocations = RevocationList(self.folder / "revoked.json", keys)
        self.simulated_platform_keys = list(simulated_platform_keys or [])
        self.accepted_tcb = list(accepted_tcb or ["UpToDate"])
        self.allow_debug, self.nonce_ttl = allow_debug, nonce_ttl
        self._nonces: dict[bytes, float] = {}
        self._lock = threading.Lock()

    @property
    def owner_key(self) -> str:
        return self.keys.public().sign_key

    # ---------------------------------------------------------------- owner's side
    def store(self, key_id: str, release_secret: bytes) -> None:
        if not key_id.isalnum():
            raise ConfigError("key ids are hex strings")
        fd = os.open(self.folder / "secrets" / key_id, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(release_secret)

    def authorise(self, key_id: str, dataset: str, job: str, measurements: list[str],
                  recipients: dict[str, str], backends: list[str] | None = None,
                  operations: list[str] | None = None, algorithms: list[str] | None = None,
                  expires_in: float = 24 * 3600.0) -> SignedAuthorisation:
        """Sign an authorisation for one of this owner's data sets."""
        if not (self.folder / "secrets" / key_id).exists():
            raise ConfigError(f"no data key {key_id} in this key-release service; encrypt the data first")
        kw: dict[str, Any] = {}
        for name, v in (("backends", backends), ("operations", operations), ("algorithms", algorithms)):
            if v is not None:
                kw[name] = v
        auth = Authorisation(owner=self.keys.name, owner_key=self.owner_key, key_id=key_id, dataset=dataset,
                             job=job, measurements=[m.lower() for m in measurements], recipients=dict(recipients),
                             expires=time.time() + expires_in, **kw)
        return auth.sign(self.keys)

    def revoke(self, authorisation_id: str) -> None:
        """Withdraw an authorisation: every later release for it is refused."""
        self.revocations.revoke(authorisation_id)
        log.info("authorisation %s revoked", authorisation_id)

    # ---------------------------------------------------------------- protocol steps 1 and 3-4
    def challenge(self) -> bytes:
        now = time.time()
        with self._lock:
            for n, t in list(self._nonces.items()):
                if t < now - self.nonce_ttl:
                    del self._nonces[n]
            if len(self._nonces) >= MAX_OUTSTANDING:
                raise KeyReleaseRefused("too many outstanding challenges; try again later")
            nonce = os.urandom(32)
            self._nonces[nonce] = now
        return nonce

    def release(self, message: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """Check a key request (step 3) and answer with the wrapped release secret (step 4)."""
        try:
            request = json.loads(message["request"])
            key_id, run_public = str(message["key_id"]), bytes(message["run_public"])
            nonce, evidence = bytes(message["nonce"]), Evidence.from_wire(message["evidence"])
        except (KeyError, TypeError, ValueError):
            raise KeyReleaseRefused("malformed key request") from None
        with self._lock:
            issued = self._nonces.pop(nonce, None)
        if issued is None or issued < time.time() - self.nonce_ttl:
            raise KeyReleaseRefused("unknown, used or expired challenge: a replayed or stale key request")
        auth = dataset_authorisation(request, key_id).verify(owner_key=self.owner_key, now=now)
        if auth.id in self.revocations:
            raise KeyReleaseRefused("the owner revoked this authorisation")
        check_request(auth, request)
        secret_file = self.folder / "secrets" / key_id
        if not secret_file.exists():
            raise KeyReleaseRefused("this service holds no key with that id")
        policy = EnclavePolicy(measurements=auth.measurements, backends=auth.backends,
                               simulated_platform_keys=self.simulated_platform_keys,
                               accepted_tcb=self.accepted_tcb, allow_debug=self.allow_debug)
        digest = request_digest(request)
        try:
            attested = verify_evidence(evidence, policy, key_request_report_data(run_public, nonce, digest, key_id),
                                       now=now)
        except (AttestationError, PolicyError) as e:
            raise KeyReleaseRefused(f"enclave attestation refused: {e}") from None
        log.info("released key %s to %s enclave %s for job %s%s", key_id, attested.backend, attested.measurement,
                 auth.job, f" [{attested.mark}]" if attested.simulated else "")
        return {"key_id": key_id,
                "wrapped": wrap_to(run_public, secret_file.read_bytes(), release_context(digest, key_id))}
