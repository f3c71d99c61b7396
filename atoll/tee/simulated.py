"""The ``simulated`` enclave backend: an enclave that is its own OS process, and says so everywhere.

Like SGX's SIM mode or ``gramine-direct``, it runs the same workload code through the
same interface (measured image, quotes binding ``report_data``, sealing, attested
channel), so everything above it is exercised end to end on any machine. What it cannot
give is protection: the *simulated platform* is a folder on the host (an Ed25519
attestation key that signs the "quotes", a seal secret) and the host OS can read the
enclave's memory, its keys and that folder. Every quote, log line, output file and job
report of this backend carries :data:`~atoll.tee.base.SIMULATED_MARK`, and a verifier
accepts its quotes only if its policy lists ``simulated`` and pins the platform's key.

What each party sees: the host sees everything the enclave process holds (data keys,
decrypted rows, the model) — this backend is for development, tests and benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from atoll import wire
from atoll.errors import ConfigError
from atoll.tee.base import (SIMULATED_MARK, AttestationError, EnclaveBackend, EnclavePolicy,
                            EnclaveRuntime, Evidence, QuoteFacts, TeeError)

log = logging.getLogger(__name__)
QUOTE_FORMAT = "atoll-sim-quote/1"


def default_platform_dir() -> Path:
    return Path(os.environ.get("ATOLL_TEE_SIM_DIR") or Path.home() / ".atoll" / "tee-sim")


class SimulatedPlatform:
    """The simulated "CPU": an attestation key and a seal secret in a folder (created on first use)."""

    def __init__(self, folder: str | Path | None = None):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.folder = Path(folder) if folder is not None else default_platform_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file, seal_file = self.folder / "attestation.key", self.folder / "seal.secret"
        if not key_file.exists():
            _write_private(key_file, os.urandom(32))
            _write_private(seal_file, os.urandom(32))
            (self.folder / "README").write_text(
                f"{SIMULATED_MARK}\nA simulated enclave platform: anyone who can read this folder can forge "
                "its quotes and open what it seals. For development and tests only.\n")
        self._key = Ed25519PrivateKey.from_private_bytes(key_file.read_bytes())
        self.seal_secret = seal_file.read_bytes()
        if len(self.seal_secret) != 32:
            raise ConfigError(f"{seal_file} is damaged: delete {self.folder} to make a new simulated platform")

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, body: bytes) -> bytes:
        return self._key.sign(body)

    def policy(self, measurements: list[str], **kw: Any) -> EnclavePolicy:
        """A policy accepting these measurements on this simulated platform."""
        return EnclavePolicy(measurements=measurements, backends=["simulated"],
                             simulated_platform_keys=[self.public_key.hex()], **kw)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class SimulatedRuntime(EnclaveRuntime):
    """Inside a simulated enclave: quotes signed by the platform key; seal root from its secret."""

    backend = "simulated"
    simulated = True

    def __init__(self, measurement: str, platform: SimulatedPlatform):
        super().__init__(measurement)
        self.platform = platform

    def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise TeeError("report_data is 64 bytes")
        body = wire.dumps({"format": QUOTE_FORMAT, "mark": SIMULATED_MARK, "measurement": self.measurement,
                           "report_data": report_data, "platform_key": self.platform.public_key,
                           "issued_at": time.time()})
        return Evidence("simulated", wire.dumps({"body": body, "signature": self.platform.sign(body)}))

    def _seal_root(self) -> bytes:
        return self.platform.seal_secret


class SimulatedBackend(EnclaveBackend):
    """Launch a workload as an OS process; verify quotes signed by a pinned simulated platform key."""

    name = "simulated"
    simulated = True
    can_launch = True

    @classmethod
    def verify_quote(cls, evidence: Evidence, policy: EnclavePolicy, now: float) -> QuoteFacts:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            outer = wire.loads(evidence.quote, max_bytes=1 << 16)
            body, sig = bytes(outer["body"]), bytes(outer["signature"])
            q = wire.loads(body, max_bytes=1 << 16)
            key = bytes(q["platform_key"])
            fields = (q["format"], q["mark"], str(q["measurement"]), bytes(q["report_data"]),
                      float(q["issued_at"]))
        except Exception:
            raise AttestationError("malformed simulated quote") from None
        if fields[0] != QUOTE_FORMAT or fields[1] != SIMULATED_MARK:
            raise AttestationError("not a simulated quote of this version")
        if key.hex() not in policy.simulated_platform_keys:
            raise AttestationError("simulated quote from a platform whose key the policy does not pin; "
                                   "add the platform's public key to simulated_platform_keys")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, body)
        except (InvalidSignature, ValueError):
            raise AttestationError("simulated quote signature does not verify: forged or altered") from None
        return QuoteFacts(measurement=fields[2], report_data=fields[3], simulated=True,
                          tcb_status="Simulated", issued_at=fields[4],
                          details={"platform_key": key.hex(), "mark": SIMULATED_MARK})

    def launch(self, workload: Any = "tee-ml", workdir: str | Path | None = None,
               platform_dir: str | Path | None = None, root: str | Path | None = None,
               host: str = "127.0.0.1", env: dict[str, str] | None = None,
               timeout: float = 60.0) -> "EnclaveProcess":
        """Build the workload's image (from ``root``, default the installed Atoll) in ``workdir``
        and start it as a process; returns when its attested channel listens."""
        import tempfile

        from atoll.tee.measure import build_image

        work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="atoll-enclave-"))
        work.mkdir(parents=True, exist_ok=True)
        image = build_image(workload, work / "image", root)
        platform = SimulatedPlatform(platform_dir)
        cmd = [sys.executable, "-I", str(image.path / "atoll" / "tee" / "enclave_boot.py"),
               "--backend", "simulated", "--platform", str(platform.folder), "--host", host]
        return EnclaveProcess.start(cmd, image, work, "simulated", env, timeout)


class EnclaveProcess:
    """The host's handle on a running enclave: its address, measurement, log; stop it when done."""

    def __init__(self, proc: subprocess.Popen, image: Any, work: Path, backend: str, address: tuple[str, int],
                 log_path: Path):
        self.proc, self.image, self.work, self.backend = proc, image, work, backend
        self.address, self.log_path = address, log_path
        self.measurement: str = image.measurement

    @classmethod
    def start(cls, cmd: list[str], image: Any, work: Path, backend: str, env: dict[str, str] | None,
              timeout: float) -> "EnclaveProcess":
        log_path = work / "enclave.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        full_env.update(env or {})
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                cwd=str(work))
        simulated = backend == "simulated"
        logf = open(log_path, "a", buffering=1)

        def pump() -> None:  # enclave stderr -> its log file, each line marked when simulated
            for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                if simulated and SIMULATED_MARK not in line:
                    line = f"[{SIMULATED_MARK}] {line}"
                logf.write(line + "\n")
            logf.close()

        threading.Thread(target=pump, daemon=True, name="atoll-enclave-log").start()
        ready: dict[str, Any] = {}

        def first_line() -> None:
            line = proc.stdout.readline()
            try:
                ready.update(json.loads(line))
            except ValueError:
                pass

        t = threading.Thread(target=first_line, daemon=True)
        t.start()
        t.join(timeout)
        if "port" not in ready:
            proc.kill()
            proc.wait()
            time.sleep(0.1)
            tail = log_path.read_text()[-2000:] if log_path.exists() else ""
            raise TeeError(f"the enclave did not start within {timeout:.0f} s; its log ({log_path}) ends:\n{tail}")
        if ready.get("measurement") != image.measurement:
            proc.kill()
            raise TeeError("the enclave measured its image differently from the launcher: the image changed "
                           "while starting; launch again")
        log.info("%senclave %s listening on %s:%d (measurement %s)",
                 f"{SIMULATED_MARK}: " if simulated else "", image.manifest["workload"], ready["host"],
                 ready["port"], image.measurement)
        return cls(proc, image, work, backend, (ready["host"], int(ready["port"])), log_path)

    @property
    def simulated(self) -> bool:
        return self.backend == "simulated"

    def connect(self, policy: EnclavePolicy, timeout: float = 600.0) -> Any:
        """An attested channel to this enclave, checked against ``policy``."""
        from atoll.tee.channel import attested_connect

        return attested_connect(self.address, policy, timeout=timeout)

    def stop(self) -> None:
        if self.proc.stdin:  # closing its stdin is the enclave's signal to stop
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdout,):
            if s:
                s.close()

    def __enter__(self) -> "EnclaveProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
