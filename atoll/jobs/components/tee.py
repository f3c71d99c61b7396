"""``tee_train`` / ``tee_predict``: the TEE route — pooled training inside an attested enclave.

Roles: the data owners are the guest (labels) and the hosts; the **arbiter** hosts the
enclave (the seed's training engine) and relays, seeing ciphertext only. Per step:

1. Every party makes fresh keys (Ed25519 to sign, X25519 to receive results) and sends
   its public keys to the others.
2. The arbiter launches the ``tee-ml`` workload on ``params.backend`` and tells the owners
   where its attested channel listens.
3. Each owner attests the enclave against its own policy (the measurement its own Atoll
   install computes, or ``params.measurement``), encrypts its rows to it
   (:mod:`atoll.tee.datalab`), stores the file in ``params.storage`` (a folder or
   ``s3://bucket/prefix``; default ``RUN/tee-storage``), signs an authorisation for this job
   (the measurement, the backend, the recipients ``params.model_to`` with their keys), and
   sends the arbiter the file's location and the authorisation. Its key-release service
   stays in its own process.
4. The arbiter runs the enclave job (:mod:`atoll.tee.training`), relaying each key request
   to its owner's service over the federation and the wrapped answers back; the enclave
   trains on the pooled rows. The arbiter sends each recipient its encrypted copy of the
   result and every party the report; it keeps the model sealed to the enclave's measurement.
5. ``tee_predict`` repeats 1-4 on new rows with operation ``predict``: the enclave unseals
   the model and sends the scores to the label holder only.

What each party sees: see :mod:`atoll.tee.training` and :mod:`atoll.tee.keyrelease`; the
arbiter sees ciphertext, public headers, evidence, wrapped keys and the report. With the
``simulated`` backend the arbiter's OS sees everything the enclave holds, and every output
says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from atoll.errors import ConfigError, DataError
from atoll.jobs.artifacts import Table, ids_to_wire
from atoll.jobs.component import Component, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.tee.training import TeeTrainParams

SIMULATED = "SIMULATED: NO HARDWARE PROTECTION"


class _Marked(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"{SIMULATED}: {msg}", kwargs


def _log(tc: TaskContext, p: TeeTrainParams) -> Any:
    return _Marked(tc.log, {}) if p.backend == "simulated" else tc.log


def _owners(tc: TaskContext) -> list[str]:
    return tc.parties_of("guest") + tc.parties_of("host")


def _exchange_keys(tc: TaskContext) -> tuple[Any, dict[str, Any]]:
    from atoll.tee.authorisation import PartyKeys, PartyPublic

    keys = PartyKeys.generate(tc.party)
    keys.save(tc.dir / "keys.json")
    others = [p for p in tc.fed.parties if p != tc.party]
    mine = keys.public().model_dump()
    for p in others:
        tc.fed.send(p, "public_keys", mine)
    pubs = {tc.party: keys.public()}
    for p in others:
        pub = PartyPublic.model_validate(tc.fed.recv(p, "public_keys"))
        if pub.name != p:
            raise DataError(f"party {p!r} announced keys for {pub.name!r}")
        pubs[p] = pub
    return keys, pubs


def _platform_dir() -> Path:
    from atoll.tee.simulated import default_platform_dir

    return default_platform_dir()


class _FedReleaser:
    """The arbiter's relay to one owner's key-release service over the job's federation."""

    def __init__(self, tc: TaskContext, owner: str):
        self.tc, self.owner = tc, owner

    def challenge(self) -> bytes:
        self.tc.fed.send(self.owner, "krs", {"op": "challenge"})
        return bytes(self.tc.fed.recv(self.owner, "krs_answer")["nonce"])

    def release(self, message: dict[str, Any]) -> dict[str, Any]:
        self.tc.fed.send(self.owner, "krs", {"op": "release", "message": message})
        answer = self.tc.fed.recv(self.owner, "krs_answer")
        if "error" in answer:
            from atoll.tee.base import KeyReleaseRefused

            raise KeyReleaseRefused(f"{self.owner}'s key-release service refused: {answer['error']}")
        return answer


def _run_route(tc: TaskContext, p: TeeTrainParams, operation: str, data: Table | None,
               sealed_model: str | None, recipients: list[str]) -> dict[str, Any]:
    """Steps 1-4 at every party; returns what this party keeps."""
    from atoll.tee import datalab, storage
    from atoll.tee.base import get_backend
    from atoll.tee.keyrelease import KeyReleaseService
    from atoll.tee.measure import measure

    log = _log(tc, p)
    simulated = p.backend == "simulated"
    owners = _owners(tc)
    arbiter = tc.parties_of("arbiter")[0]
    job_id = f"{tc.fed.job_id}/{tc.step}"
    keys, pubs = _exchange_keys(tc)
    for r in recipients:
        if r not in pubs:
            raise ConfigError(f"model_to names {r!r}, not a party of this job")

    if tc.party == arbiter:
        backend = get_backend(p.backend)()
        opts: dict[str, Any] = {"workdir": tc.dir / "enclave"}
        if simulated:
            opts["platform_dir"] = _platform_dir()
        enclave = backend.launch("tee-ml", **opts)
        try:
            log.info("enclave %s (%s) up at %s:%d", enclave.measurement, p.backend, *enclave.address)
            for o in owners:
                tc.fed.send(o, "enclave", {"host": enclave.address[0], "port": enclave.address[1]})
            refs = [tc.fed.recv(o, "dataset") for o in owners]
            from atoll.tee.training import DatasetRef, JobRequest

            request = JobRequest(job=job_id, operation=operation, seed=tc.seed, params=p,
                                 datasets=[DatasetRef.model_validate(r) for r in refs], recipients=recipients,
                                 sealed_model=sealed_model)
            policy = _policy(p, enclave.measurement, simulated)
            with enclave.connect(policy) as chan:
                try:
                    result = datalab.run_job(chan, request, [_FedReleaser(tc, o) for o in owners])
                finally:
                    for o in owners:
                        tc.fed.send(o, "krs", {"op": "done"})
        finally:
            enclave.stop()
        report = dict(result["report"], step=tc.step)
        for party in tc.fed.parties:
            if party != arbiter:
                tc.fed.send(party, "result", {"report": report, "blob": result["to"].get(party)})
        log.info("%s done in the enclave: %d rows joined, peak RSS %.0f MB", operation, report["rows_joined"],
                 report["peak_rss_mb"])
        out = {"report": report}
        if "sealed_model" in result:
            out["sealed_model"] = bytes(result["sealed_model"])
        return out

    payload = None
    if tc.party in owners:
        if data is None:
            raise DataError(f"{tc.component}: party {tc.party!r} has no data input")
        addr = tc.fed.recv(arbiter, "enclave")
        measurement = p.measurement or measure("tee-ml")
        policy = _policy(p, measurement, simulated, f"{addr['host']}:{addr['port']}")
        target, attested = datalab.attest_enclave(policy.address, policy)
        log.info("attested enclave %s (%s, TCB %s)", attested.measurement, attested.backend, attested.tcb_status)
        krs = KeyReleaseService(tc.dir / "krs", keys, policy.simulated_platform_keys)
        staged = tc.dir / "upload.atd"
        y = None if data.y is None else data.y.to_numpy(np.float64)
        label = None if data.y is None else str(data.y.name)
        header = datalab.encrypt_table(ids_to_wire(data.ids), data.values(), y, list(data.x.columns), label,
                                       staged, tc.party, f"{tc.party}/{tc.step}", target, krs, p.chunk_rows)
        base = p.storage or str(tc.dir.parent.parent / "tee-storage")
        location = storage.upload(staged, storage.join(base, f"{tc.step}-{tc.party}-{header['key_id'][:8]}.atd"))
        staged.unlink()
        auth = krs.authorise(header["key_id"], f"{tc.party}/{tc.step}", job_id, [measurement],
                             {r: pubs[r].box_key for r in recipients}, backends=[p.backend],
                             operations=[operation], algorithms=[p.algorithm], expires_in=p.expires_in_s)
        (tc.dir / "authorisation.json").write_text(json.dumps(
            {"id": json.loads(auth.body)["id"], "body": auth.body.decode(),
             **({"mark": SIMULATED} if simulated else {})}, indent=2))
        tc.fed.send(arbiter, "dataset", {"location": location, "authorisation": {
            "body": auth.body.hex(), "signature": auth.signature.hex()}})
        while True:  # serve the key-release service for this run
            msg = tc.fed.recv(arbiter, "krs")
            if msg["op"] == "done":
                break
            if msg["op"] == "challenge":
                tc.fed.send(arbiter, "krs_answer", {"nonce": krs.challenge()})
                continue
            try:
                tc.fed.send(arbiter, "krs_answer", krs.release(msg["message"]))
            except Exception as e:  # noqa: BLE001 - a category crosses the wire, the detail stays here
                log.warning("key release refused: %s", e)
                tc.fed.send(arbiter, "krs_answer", {"error": type(e).__name__})
    got = tc.fed.recv(arbiter, "result")
    if got["blob"] is not None:
        payload = datalab.open_result({"to": {tc.party: got["blob"]}}, keys, job_id)
    return {"report": got["report"], "payload": payload}


def _policy(p: TeeTrainParams, measurement: str, simulated: bool, address: str | None = None) -> Any:
    from atoll.tee.base import EnclavePolicy

    keys = []
    if simulated:
        from atoll.tee.simulated import SimulatedPlatform

        keys = [SimulatedPlatform(_platform_dir()).public_key.hex()]
    return EnclavePolicy(measurements=[measurement], backends=[p.backend], simulated_platform_keys=keys,
                         address=address)


def _check(cls: type, job: Any, spec: Any, index: int) -> None:
    if not job.parties_of("arbiter"):
        raise job.error(f"{spec.id} ({cls.name}) needs an arbiter party: it hosts the enclave "
                        "(add parties: {arbiter: {role: arbiter}})", "pipeline", index, "component")
    if not job.parties_of("guest"):
        raise job.error(f"{spec.id} ({cls.name}) needs a guest (the label holder)", "pipeline", index, "component")
    p = TeeTrainParams.model_validate(spec.params)
    from atoll.tee.base import BACKENDS, get_backend

    if p.backend not in BACKENDS or not get_backend(p.backend).can_launch:
        launchers = [b for b in BACKENDS if get_backend(b).can_launch]
        raise job.error(f"{spec.id}: backend {p.backend!r} cannot start enclaves; use one of {', '.join(launchers)}",
                        "pipeline", index, "params", "backend")
    for r in p.model_to or []:
        if r not in job.parties:
            raise job.error(f"{spec.id}: model_to names {r!r}, not a party of this job", "pipeline", index,
                            "params", "model_to")


@register
class TeeTrain(Component):
    """Train XGBoost or logistic regression on the owners' pooled rows inside an enclave."""

    name = "tee_train"
    inputs = {"data": Slot("data")}
    outputs = {"model": "model"}
    Params = TeeTrainParams
    layout = "vertical"

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        _check(cls, job, spec, index)

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        p: TeeTrainParams = self.params
        recipients = p.model_to or tc.parties_of("guest")[:1]
        kept = _run_route(tc, p, "train", inputs.get("data"), None, recipients)
        tee = _tee_summary(kept["report"])
        if tc.role == "arbiter":
            return {"model": {"component": self.name, "role": "arbiter", "tee": tee,
                              "sealed_model": kept["sealed_model"]}}
        out: dict[str, Any] = {"component": self.name, "role": tc.role, "tee": tee}
        if kept["payload"] is not None:
            m = kept["payload"]
            out.update(algorithm=m["algorithm"], objective=m["objective"], columns=list(m["columns"]),
                       model=m["model"], params=m["params"], seed=int(m["seed"]))
        return {"model": out}


def _tee_summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("backend", "simulated", "mark", "measurement", "operation", "algorithm", "rows_per_dataset",
            "rows_joined", "features", "peak_rss_mb", "rss_before_data_mb", "memory_cap_mb", "streamed",
            "seconds", "step")
    return {k: report[k] for k in keep if k in report}


@register
class TeePredict(Component):
    """Score new rows inside the enclave with the model a ``tee_train`` step sealed there."""

    name = "tee_predict"
    inputs = {"model": Slot("model"), "data": Slot("data")}
    outputs = {"scores": "scores"}
    Params = TeeTrainParams

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        _check(cls, job, spec, index)
        producer = spec.inputs.get("model", "").partition(".")[0]
        if job.component(producer).component != TeeTrain.name:
            raise job.error(f"{spec.id}: the model must come from a tee_train step", "pipeline", index,
                            "inputs", "model")

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        p: TeeTrainParams = self.params
        producer = tc.job.component(tc.job.component(tc.step).inputs["model"].partition(".")[0])
        trained = TeeTrainParams.model_validate(producer.params)
        p = trained.model_copy(update={k: getattr(p, k) for k in p.model_fields_set})
        model = inputs.get("model") or {}
        sealed = model.get("sealed_model") if tc.role == "arbiter" else None
        if tc.role == "arbiter" and sealed is None:
            raise DataError("tee_predict: the arbiter holds no sealed model from the tee_train step")
        label_holder = tc.parties_of("guest")[:1]
        kept = _run_route(tc, p, "predict", inputs.get("data"), None if sealed is None else bytes(sealed).hex(),
                          label_holder)
        if kept.get("payload") is None:
            return {}
        pay = kept["payload"]
        task = "binary" if p.objective == "binary:logistic" else "regression"
        ids = pay["ids"]
        return {"scores": {"ids": ids if isinstance(ids, np.ndarray) else list(ids),
                           "score": np.asarray(pay["score"], np.float64),
                           "label": np.asarray(pay["label"], np.float64), "task": task,
                           "tee": _tee_summary(kept["report"])}}
