"""Pooled training and scoring inside an enclave (the seed's Data Lab flow, steps 4-6).

Protocol of one enclave job (:class:`EnclaveJob`; the host side is :mod:`atoll.tee.datalab`):

1. The host sends the job request: job id, operation (``train`` / ``predict``),
   parameters (:class:`TeeTrainParams`), the data sets (storage location + the owner's
   signed authorisation each; the first holds the label) and the recipients. For
   ``predict`` it adds the model this measurement sealed at training.
2. The enclave reads each file's public header (not its data), checks that the file was
   encrypted to *this* measurement and wrap key, and answers one key request per data
   set (:mod:`atoll.tee.keyrelease`, step 2) for the nonces the owners' services issued.
3. With the wrapped release secrets relayed back, it opens each data key, then streams
   the chunks of every file — decrypting one chunk at a time, within ``memory_cap_mb`` —
   into one pooled matrix, joining the data sets by id (inner join, in the label
   holder's row order; columns in data-set order).
4. ``train``: it fits XGBoost (``xgboost`` with ``tree_method=hist``) or scikit-learn's
   ``LogisticRegression`` on the pooled rows — the real libraries, the same calls a
   plaintext run makes, so the model equals the one trained on the plaintext join.
   ``predict``: it unseals the model and scores the pooled rows.
5. It releases only the result: encrypted to each recipient's X25519 key taken from the
   authorisations (a recipient must be allowed by *every* data set's owner, with the same
   key), the model also sealed to its own measurement (for ``predict``), and a report of
   counts, timings, peak memory, backend and measurement. Never a row.

What each party sees: the host sees the request, the files' public headers, the wrapped
keys and results, the report (row counts, the size of the join, timings) — not data,
not the model (unless the backend is ``simulated``: then the host OS sees everything).
Each recipient sees the model (its trees' thresholds are feature values at quantile cut
points) or the scores. Owners see the join size in the report.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from atoll import wire
from atoll.errors import ConfigError, DataError
from atoll.tee import keyrelease, storage
from atoll.tee.authorisation import Authorisation, SignedAuthorisation
from atoll.tee.base import SIMULATED_MARK, EnclaveMemoryError, EnclaveRuntime, KeyReleaseRefused, TeeError
from atoll.tee.envelope import (open_data_key, read_chunks, read_header, unwrap, wrap_to, x25519_keypair,
                                x25519_public)

log = logging.getLogger(__name__)
MB = 1 << 20


class TeeTrainParams(BaseModel):
    """Parameters of the TEE route (the ``tee_train`` / ``tee_predict`` components and the enclave)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["xgboost", "logistic_regression"] = "xgboost"
    objective: Literal["binary:logistic", "reg:squarederror"] = "binary:logistic"
    # XGBoost
    n_estimators: int = Field(10, ge=1, le=10000)
    max_depth: int = Field(5, ge=1, le=32)
    learning_rate: float = Field(0.3, gt=0.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    gamma: float = Field(0.0, ge=0.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    max_bin: int = Field(256, ge=2, le=65536)
    subsample: float = Field(1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0)
    # logistic regression (scikit-learn, L2, lbfgs)
    C: float = Field(1.0, gt=0.0)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-4, gt=0.0)
    random_state: int | None = None  # default: derived from the job's seed
    n_jobs: int = Field(1, ge=1, le=256)
    #: the enclave's working-set cap for the data path (SGX1's EPC is 128 MB); None: no cap,
    #: whole files are read and decrypted at once
    memory_cap_mb: float | None = Field(256.0, gt=0)
    # the route around the enclave (used by the components, not inside the enclave)
    backend: str = "simulated"
    measurement: str | None = None  # the workload measurement owners accept; default: their own Atoll's
    model_to: list[str] | None = None  # default: the label holder
    chunk_rows: int = Field(4096, ge=1)
    storage: str | None = None  # folder or s3://bucket/prefix; default: RUN/tee-storage
    expires_in_s: float = Field(3600.0, gt=0)

    def estimator(self, seed: int) -> Any:
        """The unfitted library estimator these parameters describe (also the plaintext twin)."""
        rs = seed if self.random_state is None else self.random_state
        if self.algorithm == "logistic_regression":
            if self.objective != "binary:logistic":
                raise ConfigError("logistic_regression needs objective binary:logistic")
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol, random_state=rs)
        import xgboost as xgb

        kw = dict(n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
                  reg_lambda=self.reg_lambda, gamma=self.gamma, min_child_weight=self.min_child_weight,
                  max_bin=self.max_bin, subsample=self.subsample, colsample_bytree=self.colsample_bytree,
                  tree_method="hist", random_state=rs, n_jobs=self.n_jobs)
        if self.objective == "binary:logistic":
            return xgb.XGBClassifier(**kw)
        return xgb.XGBRegressor(**kw)


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location: str
    authorisation: dict[str, str]  # {"body": hex, "signature": hex}


class JobRequest(BaseModel):
    """What the host asks an enclave to do (all public; its digest is bound into every key request)."""

    model_config = ConfigDict(extra="forbid")

    job: str
    operation: Literal["train", "predict"] = "train"
    seed: int = 0
    params: TeeTrainParams
    datasets: list[DatasetRef] = Field(min_length=1)
    recipients: list[str] = Field(min_length=1)
    sealed_model: str | None = None  # hex, for predict

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------ memory
def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------ pooling (pure)
class _Index:
    """Position of each base id (int64 via sorting; strings via a dict)."""

    def __init__(self, ids: np.ndarray | list[str]):
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
            self.order = np.argsort(ids, kind="stable")
            self.sorted = ids[self.order]
            if len(ids) > 1 and (np.diff(self.sorted) == 0).any():
                raise DataError("the label holder's data has duplicate ids")
            self.map = None
        else:
            self.map = {str(v): i for i, v in enumerate(ids)}
            if len(self.map) != len(ids):
                raise DataError("the label holder's data has duplicate ids")

    def positions(self, ids: Any) -> np.ndarray:
        """Base row of each id, -1 where absent."""
        if self.map is not None:
            return np.fromiter((self.map.get(str(v), -1) for v in ids), np.int64, count=len(ids))
        ids = np.asarray(ids, dtype=np.int64)
        k = np.searchsorted(self.sorted, ids)
        k = np.clip(k, 0, max(len(self.sorted) - 1, 0))
        hit = self.sorted[k] == ids if len(self.sorted) else np.zeros(len(ids), bool)
        return np.where(hit, self.order[k], -1)


def pool(parts_per_dataset: list[Any], headers: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, Any, dict]:
    """Join the data sets by id inside the enclave (protocol step 3).

    ``parts_per_dataset[j]`` is an iterator of decrypted chunks of data set ``j`` (the first
    holds the label). Returns (X, y, ids, stats): the label holder's rows present in every
    data set, in its order; columns in data-set order.
    """
    n = int(headers[0]["n_rows"])
    widths = [len(h["columns"]) for h in headers]
    offsets = np.cumsum([0] + widths)
    x = np.empty((n, int(offsets[-1])), dtype=np.float64)
    y = np.empty(n, dtype=np.float64)
    id_parts: list[Any] = []
    row = 0
    for part in parts_per_dataset[0]:
        k = part["x"].shape[0]
        if row + k > n:
            raise DataError("the label holder's file holds more rows than its header states")
        x[row:row + k, :widths[0]] = part["x"]
        if part.get("y") is None:
            raise DataError("the first data set must hold the label")
        y[row:row + k] = part["y"]
        id_parts.append(part["ids"])
        row += k
    if row != n:
        raise DataError("the label holder's file holds fewer rows than its header states")
    ids: Any = (np.concatenate(id_parts) if id_parts and isinstance(id_parts[0], np.ndarray)
                else [i for p in id_parts for i in p])
    index = _Index(ids if isinstance(ids, np.ndarray) else list(ids))
    keep = np.ones(n, dtype=bool)
    for j in range(1, len(headers)):
        seen = np.zeros(n, dtype=bool)
        for part in parts_per_dataset[j]:
            pos = index.positions(part["ids"])
            ok = pos >= 0
            p = pos[ok]
            if seen[p].any() or len(np.unique(p)) != len(p):
                raise DataError(f"data set {j} has duplicate ids")
            seen[p] = True
            x[p, offsets[j]:offsets[j + 1]] = part["x"][ok]
        keep &= seen
    rows = np.flatnonzero(keep)
    m = len(rows)
    for s in range(0, m, 65536):  # compact in place (rows[i] >= i): no second full-size matrix
        e = min(s + 65536, m)
        x[s:e] = x[rows[s:e]]
    y = y[rows]
    ids = ids[rows] if isinstance(ids, np.ndarray) else [ids[i] for i in rows]
    return x[:m], y, ids, {"rows_per_dataset": [int(h["n_rows"]) for h in headers], "rows_joined": int(m),
                           "features": int(offsets[-1])}


# ------------------------------------------------------------------------------ the job
class EnclaveJob:
    """One job inside the enclave: key requests, then pooling, training or scoring, release."""

    def __init__(self, runtime: EnclaveRuntime, request_json: str):
        self.runtime = runtime
        try:
            self.request = JobRequest.model_validate_json(request_json)
        except Exception as e:
            raise ConfigError(f"invalid job request: {type(e).__name__}") from None
        self.request_dict = json.loads(request_json)
        if self.request.as_json() != self.request_dict:
            raise ConfigError("the job request is not in canonical form")
        self.digest = keyrelease.request_digest(self.request_dict)
        self.wrap_private = runtime.wrap_private_key()
        self.wrap_public = x25519_public(self.wrap_private)
        self.run_private, self.run_public = x25519_keypair()
        self.auths: list[Authorisation] = []
        self.headers: list[dict[str, Any]] = []
        for ds in self.request.datasets:
            signed = SignedAuthorisation(body=bytes.fromhex(ds.authorisation["body"]),
                                         signature=bytes.fromhex(ds.authorisation["signature"]))
            auth = signed.verify()  # the owner's service checks the key is the owner's (it holds the secret)
            if self.runtime.measurement not in auth.measurements:
                raise KeyReleaseRefused("an authorisation does not name this enclave's measurement")
            keyrelease.check_request(auth, self.request_dict)
            with storage.open_read(ds.location) as f:
                header, _ = read_header(f)
            enc = header.get("enclave", {})
            if enc.get("measurement") != self.runtime.measurement or enc.get("wrap_public") != self.wrap_public.hex():
                raise TeeError("a data file was encrypted to another enclave (measurement or platform)")
            if header["key_id"] != auth.key_id:
                raise TeeError("a data file and its authorisation name different keys")
            self.auths.append(auth)
            self.headers.append(header)
        self.recipient_keys = self._recipients()

    def _recipients(self) -> dict[str, str]:
        out = {}
        for name in self.request.recipients:
            keys = {a.recipients.get(name) for a in self.auths}
            if None in keys or len(keys) != 1:
                raise KeyReleaseRefused(f"recipient {name!r} is not allowed, with one key, by every data owner")
            out[name] = keys.pop()
        return out

    def key_requests(self, nonces: list[bytes]) -> list[dict[str, Any]]:
        """Protocol step 2: one attested key request per data set."""
        if len(nonces) != len(self.auths):
            raise ConfigError("one challenge per data set is needed")
        out = []
        for auth, nonce in zip(self.auths, nonces):
            ev = self.runtime.evidence(keyrelease.key_request_report_data(self.run_public, bytes(nonce),
                                                                           self.digest, auth.key_id))
            out.append({"request": json.dumps(self.request_dict, sort_keys=True, separators=(",", ":")),
                        "key_id": auth.key_id, "run_public": self.run_public, "nonce": bytes(nonce),
                        "evidence": ev.to_wire()})
        return out

    def run(self, released: list[bytes]) -> dict[str, Any]:
        """Protocol steps 3-5, given the wrapped release secrets (in data-set order)."""
        t0 = time.perf_counter()
        if len(released) != len(self.auths):
            raise ConfigError("one released key per data set is needed")
        dks = []
        for auth, header, blob in zip(self.auths, self.headers, released):
            secret = unwrap(self.run_private, bytes(blob), keyrelease.release_context(self.digest, auth.key_id))
            dks.append(open_data_key(header, self.wrap_private, secret))
        t_keys = time.perf_counter() - t0
        p = self.request.params
        reset_peak()
        base_rss = rss_bytes()
        t1 = time.perf_counter()
        x, y, ids, stats = self._load(dks, p.memory_cap_mb)
        t_load = time.perf_counter() - t1
        seed = self.request.seed
        t2 = time.perf_counter()
        if self.request.operation == "train":
            payload, fit_stats = self._train(x, y, p, seed)
        else:
            payload, fit_stats = self._predict(x, y, ids)
        t_fit = time.perf_counter() - t2
        del x
        report = {"job": self.request.job, "operation": self.request.operation, "backend": self.runtime.backend,
                  "simulated": self.runtime.simulated, "measurement": self.runtime.measurement,
                  "algorithm": p.algorithm, **stats, **fit_stats,
                  "memory_cap_mb": p.memory_cap_mb, "streamed": p.memory_cap_mb is not None,
                  "peak_rss_mb": peak_rss_bytes() / MB, "rss_before_data_mb": base_rss / MB,
                  "seconds": {"key_open": t_keys, "decrypt_and_join": t_load, "fit" if
                              self.request.operation == "train" else "score": t_fit},
                  "recipients": sorted(self.recipient_keys)}
        if self.runtime.simulated:
            report["mark"] = SIMULATED_MARK
        payload["report"] = report
        blob = wire.dumps(payload)
        out: dict[str, Any] = {"report": report, "to": {
            name: wrap_to(bytes.fromhex(key), blob, result_context(self.request.job, name))
            for name, key in self.recipient_keys.items()}}
        if self.request.operation == "train":
            out["sealed_model"] = self.runtime.seal(blob, b"atoll-tee/model/1")
        log.info("%s job %s done: %d rows joined, peak RSS %.0f MB%s", self.request.operation,
                 self.request.job, stats["rows_joined"], report["peak_rss_mb"],
                 f" [{SIMULATED_MARK}]" if self.runtime.simulated else "")
        return out

    # -------------------------------------------------------------- helpers
    def columns(self) -> list[str]:
        """The pooled columns, ``OWNER:COLUMN`` in data-set order."""
        return [f"{h['owner']}:{c}" for h in self.headers for c in h["columns"]]

    def _load(self, dks: list[bytes], cap_mb: float | None) -> tuple[np.ndarray, np.ndarray, Any, dict]:
        n = int(self.headers[0]["n_rows"])
        d = sum(len(h["columns"]) for h in self.headers)
        max_chunk = max(int(h["max_chunk_bytes"]) for h in self.headers)
        need = n * (d + 2) * 8 + 2 * max_chunk  # pooled matrix, label, ids; one chunk in and out
        if cap_mb is not None:
            cap = int(cap_mb * MB)
            if need > cap:
                raise EnclaveMemoryError(f"the pooled data needs {need / MB:.1f} MB, over the enclave's "
                                         f"memory cap of {cap_mb:g} MB; raise memory_cap_mb or use fewer rows")
            streams = [storage.open_read(ds.location) for ds in self.request.datasets]
        else:  # no cap: read and decrypt every file whole before joining (the memory-hungry way)
            import io

            streams = []
            for ds in self.request.datasets:
                with storage.open_read(ds.location) as f:
                    streams.append(io.BytesIO(f.read()))
        try:
            parts = []
            for s, dk in zip(streams, dks):
                header, digest = read_header(s)
                if header != self.headers[len(parts)]:
                    raise TeeError("a data file changed between the key request and the run")
                it = read_chunks(s, header, digest, dk, max_chunk)
                parts.append(it if cap_mb is not None else list(it))
            x, y, ids, stats = pool(parts, self.headers)
            del parts
        finally:
            for s in streams:
                s.close()
        stats["columns"] = self.columns()
        stats["pooled_mb"] = need / MB
        return x, y, ids, stats

    def _train(self, x: np.ndarray, y: np.ndarray, p: TeeTrainParams, seed: int) -> tuple[dict, dict]:
        est = p.estimator(seed)
        est.fit(x, y)
        return model_payload(est, p, seed, self.columns()), {"rows_trained": int(x.shape[0])}

    def _predict(self, x: np.ndarray, y: np.ndarray, ids: Any) -> tuple[dict, dict]:
        if not self.request.sealed_model:
            raise ConfigError("predict needs the sealed model of a training run")
        model = wire.loads(self.runtime.unseal(bytes.fromhex(self.request.sealed_model), b"atoll-tee/model/1"))
        columns = self.columns()
        if list(model["columns"]) != columns:
            raise DataError("the data sets' columns differ from the columns the model was trained on")
        score = predict_payload(model, x)
        return ({"ids": ids if isinstance(ids, np.ndarray) else list(ids), "score": score,
                 "label": y, "algorithm": model["algorithm"]}, {"rows_scored": int(x.shape[0])})


def result_context(job: str, recipient: str) -> bytes:
    return b"atoll-tee/result/1" + job.encode() + b"\x00" + recipient.encode()


def load_model(payload: dict[str, Any]) -> Any:
    """The fitted model of a released or unsealed model payload: an ``xgboost.Booster``, or a
    scikit-learn ``LogisticRegression`` with its fitted coefficients."""
    if payload["algorithm"] == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(payload["model"]))
        return booster
    p = TeeTrainParams.model_validate(payload["params"])
    est = p.estimator(int(payload["seed"]))
    m = payload["model"]
    est.coef_, est.intercept_, est.classes_ = m["coef"], m["intercept"], m["classes"]
    return est


def model_payload(est: Any, p: TeeTrainParams, seed: int, columns: list[str]) -> dict[str, Any]:
    """What the enclave releases (and seals) of a fitted estimator: no pickle, wire types only."""
    if p.algorithm == "xgboost":
        model: Any = bytes(est.get_booster().save_raw("json"))
    else:
        model = {"coef": np.asarray(est.coef_, np.float64), "intercept": np.asarray(est.intercept_, np.float64),
                 "classes": np.asarray(est.classes_, np.float64)}
    return {"algorithm": p.algorithm, "objective": p.objective, "columns": list(columns), "model": model,
            "params": p.model_dump(mode="json"), "seed": seed}


def predict_payload(payload: dict[str, Any], x: np.ndarray, model: Any = None) -> np.ndarray:
    """Scores of a model payload: P(class 1) for binary, the prediction for regression.
    ``model``: the payload already loaded (:func:`load_model`), for callers that score often."""
    model = load_model(payload) if model is None else model
    if payload["algorithm"] == "xgboost":  # what XGBClassifier.predict_proba / XGBRegressor.predict compute
        return np.asarray(model.inplace_predict(x), np.float64)
    return np.asarray(model.predict_proba(x)[:, 1], np.float64)
