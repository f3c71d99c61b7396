"""The program inside the ``tee-ml`` enclave: an attested channel serving attestation and jobs.

Requests on the channel (after its own attestation, :mod:`atoll.tee.channel`):

* ``{"op": "attest", "nonce": N}`` -> evidence binding the enclave's measurement-bound
  X25519 wrap key and ``N`` (what ``atoll tee encrypt`` checks before encrypting to it).
* ``{"op": "job", "request": JSON, "nonces": [...]}`` -> ``{"key_requests": [...]}``; then
  ``{"op": "keys", "released": [...]}`` -> ``{"result": ...}`` (:mod:`atoll.tee.training`).
* ``{"op": "shutdown"}``.

Errors go back as ``{"error": "STEP: CATEGORY"}`` (plus the message of Atoll's own
errors, which name no data value); details stay in the enclave's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from typing import Any

from atoll.errors import AtollError
from atoll.tee.base import SIMULATED_MARK, EnclaveRuntime, bind_report_data

log = logging.getLogger("atoll.tee.enclave")


def _warm_up() -> None:
    """Load the libraries and run each once on a few synthetic rows before serving, so a job's
    timings hold neither imports nor first-call start-up (thread pools)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = (np.arange(20) % 2).astype(np.float64)
    LogisticRegression().fit(x, y)
    try:
        import xgboost
    except ImportError:
        return
    xgboost.XGBClassifier(n_estimators=1, max_depth=1, n_jobs=2).fit(x, y)


def _runtime(args: argparse.Namespace, measurement: str) -> EnclaveRuntime:
    if args.backend == "simulated":
        from atoll.tee.simulated import SimulatedPlatform, SimulatedRuntime

        return SimulatedRuntime(measurement, SimulatedPlatform(args.platform))
    from atoll.tee.gramine import GramineRuntime

    return GramineRuntime(measurement)


def _error(step: str, e: BaseException) -> dict[str, str]:
    """What leaves the enclave about a failure: the step and the category; the message only of
    Atoll's own errors (which name no data value). The enclave's log reaches the host too."""
    text = f"{step}: {type(e).__name__}"
    if isinstance(e, AtollError):
        text += f": {e}"
    log.warning("%s", text)
    return {"error": text}


class Service:
    def __init__(self, runtime: EnclaveRuntime, stop: threading.Event):
        from atoll.tee.envelope import x25519_public

        self.runtime, self.stop = runtime, stop
        self.wrap_public = x25519_public(runtime.wrap_private_key())

    def handle(self, chan: Any, client: Any) -> None:
        from atoll.tee.training import EnclaveJob

        while True:
            req = chan.recv()
            op = req.get("op") if isinstance(req, dict) else None
            if op == "attest":
                nonce = req.get("nonce")
                if not isinstance(nonce, bytes) or len(nonce) != 32:
                    chan.send({"error": "attest: the nonce must be 32 bytes"})
                    continue
                ev = self.runtime.evidence(bind_report_data("wrap-key", self.wrap_public, nonce))
                answer = {"evidence": ev.to_wire(), "wrap_public": self.wrap_public,
                          "measurement": self.runtime.measurement, "backend": self.runtime.backend}
                if self.runtime.simulated:
                    answer["mark"] = SIMULATED_MARK
                chan.send(answer)
            elif op == "job":
                try:
                    job = EnclaveJob(self.runtime, str(req["request"]))
                    chan.send({"key_requests": job.key_requests(list(req["nonces"]))})
                except Exception as e:  # noqa: BLE001 - answered (and logged) as a category
                    chan.send(_error("job", e))
                    continue
                keys = chan.recv()
                if not isinstance(keys, dict) or keys.get("op") != "keys":
                    chan.send({"error": "job: expected the released keys"})
                    continue
                try:
                    chan.send({"result": job.run(list(keys["released"]))})
                except Exception as e:  # noqa: BLE001
                    chan.send(_error("run", e))
            elif op == "shutdown":
                chan.send({"ok": True})
                self.stop.set()
                return
            else:
                chan.send({"error": "request: unknown operation"})


def main(measurement: str, manifest: dict, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="atoll-enclave")
    parser.add_argument("--backend", choices=["simulated", "gramine-sgx"], required=True)
    parser.add_argument("--platform", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    runtime = _runtime(args, measurement)
    _warm_up()
    prefix = f"{SIMULATED_MARK} " if runtime.simulated else ""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {prefix}enclave[{measurement[:12]}] %(levelname)s %(name)s: %(message)s")
    from atoll.tee.channel import AttestedServer

    stop = threading.Event()
    service = Service(runtime, stop)
    server = AttestedServer(runtime, service.handle, host=args.host, port=args.port).start()
    log.info("workload %s (backend %s) listening on %s:%d", manifest["workload"], runtime.backend,
             *server.address)
    ready = {"host": server.address[0], "port": server.address[1], "measurement": measurement,
             "backend": runtime.backend}
    if runtime.simulated:
        ready["mark"] = SIMULATED_MARK
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    # the host closing our stdin or stopping us ends the enclave
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.close()
    log.info("enclave stopped")
    os._exit(0)
