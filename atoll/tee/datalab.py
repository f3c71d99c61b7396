"""The host side of the Data Lab flow: encrypt to an attested enclave, run a job, open the result.

1. ``attest_enclave``: over the attested channel (itself checked against the owner's
   policy), ask the enclave for evidence binding its measurement-bound wrap key and a fresh
   nonce; check it against the policy. Refused: another measurement, a replayed or stale
   answer, an unpinned platform, an unaccepted TCB status.
2. ``encrypt_table`` / ``encrypt_file`` (``atoll tee encrypt``): a fresh data key, chunked
   AES-GCM, wrapped to that key and to a release secret kept by the owner's key-release
   service (:mod:`atoll.tee.envelope`); optionally uploaded to a folder or bucket.
3. ``run_job``: send the job request, relay each key request to its owner's service and
   the wrapped answers back, and return the enclave's result (wrapped per recipient).
4. ``open_result``: a recipient opens its copy with its X25519 key.

What each party sees: see :mod:`atoll.tee.training` and :mod:`atoll.tee.keyrelease`.
The host running these calls relays ciphertext, evidence and wrapped keys only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from atoll import wire
from atoll.errors import DataError
from atoll.tee import storage
from atoll.tee.authorisation import PartyKeys
from atoll.tee.base import (SIMULATED_MARK, AttestationError, Attested, EnclavePolicy, Evidence, TeeError,
                            bind_report_data, verify_evidence)
from atoll.tee.channel import AttestedConnection, attested_connect
from atoll.tee.envelope import EnclaveTarget, encrypt_table as _encrypt_table, unwrap
from atoll.tee.keyrelease import KeyReleaseService
from atoll.tee.training import JobRequest, result_context

log = logging.getLogger(__name__)


def attest_enclave(address: tuple[str, int] | str, policy: EnclavePolicy,
                   now: float | None = None) -> tuple[EnclaveTarget, Attested]:
    """The enclave's attested wrap key (protocol step 1)."""
    with attested_connect(address, policy, now=now) as chan:
        nonce = os.urandom(32)
        answer = chan.call({"op": "attest", "nonce": nonce})
        return check_wrap_key(answer, nonce, policy, now)


def check_wrap_key(answer: Any, nonce: bytes, policy: EnclavePolicy,
                   now: float | None = None) -> tuple[EnclaveTarget, Attested]:
    """Verify an ``attest`` answer: evidence binding ``wrap_public`` and our ``nonce``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("wrap_public"), bytes):
        raise AttestationError("malformed attestation answer")
    wrap = answer["wrap_public"]
    attested = verify_evidence(Evidence.from_wire(answer.get("evidence")), policy,
                               bind_report_data("wrap-key", wrap, nonce), now=now)
    return EnclaveTarget(attested.backend, attested.measurement, wrap, attested.simulated), attested


def encrypt_table(ids: Any, x: np.ndarray, y: np.ndarray | None, columns: list[str], label: str | None,
                  out: str | Path, owner: str, dataset: str, target: EnclaveTarget, krs: KeyReleaseService,
                  chunk_rows: int = 4096) -> dict[str, Any]:
    """Encrypt one party's rows to ``target`` into ``out``; the release secret goes to ``krs``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        header, secret = _encrypt_table(f, ids, x, y, columns, label, owner, dataset, target, chunk_rows)
    krs.store(header["key_id"], secret)
    os.replace(tmp, out)
    log.info("%sencrypted %d rows of %s to enclave %s (key %s)", f"{SIMULATED_MARK}: " if target.simulated else "",
             header["n_rows"], dataset, target.measurement, header["key_id"])
    return header


def read_table(path: str | Path, id_column: str | None = None, label: str | None = None
               ) -> tuple[Any, np.ndarray, np.ndarray | None, list[str]]:
    """(ids, x, y, columns) of a CSV / Parquet file: every column but the id and label is a feature."""
    import pandas as pd

    p = Path(path)
    df = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
    id_column = id_column or str(df.columns[0])
    for c in (id_column, label):
        if c is not None and c not in df.columns:
            raise DataError(f"column {c!r} is not in {p.name} (columns: {', '.join(map(str, df.columns[:12]))})")
    if df[id_column].duplicated().any():
        raise DataError(f"{p.name}: ids must be unique")
    y = None if label is None else df.pop(label).to_numpy(np.float64)
    ids = df.pop(id_column)
    ids = ids.to_numpy(np.int64) if pd.api.types.is_integer_dtype(ids) else ids.astype(str).tolist()
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{p.name}: columns {bad} are not numeric; encode them first")
    return ids, df.to_numpy(np.float64), y, [str(c) for c in df.columns]


def encrypt_file(data: str | Path, policy: EnclavePolicy, out: str | Path, owner: str, krs: KeyReleaseService,
                 id_column: str | None = None, label: str | None = None, chunk_rows: int = 4096,
                 dataset: str | None = None, upload_to: str | None = None) -> dict[str, Any]:
    """``atoll tee encrypt``: attest the policy's enclave, encrypt ``data`` to it, upload if asked."""
    if not policy.address:
        raise DataError("the enclave policy names no address: add address: HOST:PORT of the enclave")
    target, attested = attest_enclave(policy.address, policy)
    ids, x, y, columns = read_table(data, id_column, label)
    header = encrypt_table(ids, x, y, columns, label, out, owner, dataset or Path(data).name.split(".")[0],
                           target, krs, chunk_rows)
    location = storage.upload(out, storage.join(upload_to, Path(out).name)) if upload_to else str(Path(out).resolve())
    return {"header": header, "location": location, "attested": attested.summary()}


class Releaser(Protocol):
    """An owner's key-release service, or a relay to it."""

    def challenge(self) -> bytes: ...

    def release(self, message: dict[str, Any]) -> dict[str, Any]: ...


def run_job(chan: AttestedConnection, request: JobRequest, releasers: Sequence[Releaser]) -> dict[str, Any]:
    """Run one enclave job (protocol steps 1-5 of :mod:`atoll.tee.training`); ``releasers[i]`` serves data set i."""
    import json

    if len(releasers) != len(request.datasets):
        raise TeeError("one key-release service per data set is needed")
    nonces = [r.challenge() for r in releasers]
    text = json.dumps(request.as_json(), sort_keys=True, separators=(",", ":"))
    answer = chan.call({"op": "job", "request": text, "nonces": nonces})
    released = [r.release(kr)["wrapped"] for r, kr in zip(releasers, answer["key_requests"])]
    return chan.call({"op": "keys", "released": released})["result"]


def open_result(result: dict[str, Any], keys: PartyKeys, job: str) -> dict[str, Any]:
    """A recipient's copy of an enclave result (the model or the scores)."""
    blob = result.get("to", {}).get(keys.name)
    if blob is None:
        raise TeeError(f"the enclave released no result to {keys.name!r}")
    return wire.loads(unwrap(keys.box_private, bytes(blob), result_context(job, keys.name)))
