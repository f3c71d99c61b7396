"""Standalone launcher: run every party of a job on this machine.

    results = launch({
        "guest":   Party("guest", guest_fn, {"x": xg, "y": y}),
        "host_0":  Party("host", host_fn, {"x": xh}),
        "arbiter": Party("arbiter", arbiter_fn),
    }, mode="processes")

Each callable is called as ``fn(ctx, **kwargs)`` with that party's
:class:`Context`; ``launch`` returns ``{party: result}``.

* ``mode="threads"``: threads over the in-process transport (fast; tests, simulation).
* ``mode="processes"``: one OS process per party, gRPC with mutual TLS over loopback,
  certificates made on the fly (the realistic path). Callables and kwargs must be
  picklable (module-level functions) because processes are spawned fresh.

If a party raises, the others are stopped promptly and :class:`PartyFailed`
names that party and its error; it never hangs until a timeout. The other parties
learn only the error's category (:func:`~atoll.federation.transport.failure_summary`),
never its text. (Results and
errors travel from the party processes back to the launcher over a local
multiprocessing pipe: that is this machine talking to itself, not a party
boundary; parties talk to each other only through the wire codec.)
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from atoll._process import die_with_parent
from atoll.errors import AtollError, FederationError, PeerFailed
from atoll.federation.context import DEFAULT_TIMEOUT, Context
from atoll.federation.inprocess import InProcessHub, Recorder
from atoll.federation.transport import failure_summary


@dataclass
class Party:
    """One party of a launch: its role, the callable it runs, and its inputs."""

    role: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


class PartyFailed(AtollError):
    """A party raised; ``party`` names it and ``error`` is what it raised (or its text)."""

    def __init__(self, party: str, error: BaseException | str, tb: str = ""):
        self.party = party
        self.error = error
        self.remote_traceback = tb
        what = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"party {party!r} failed: {what}")


def _as_party(spec: Party | tuple) -> Party:
    return spec if isinstance(spec, Party) else Party(*spec)


def launch(parties: Mapping[str, Party | tuple], mode: str = "threads", job_id: str | None = None,
           timeout: float = DEFAULT_TIMEOUT, recorder: Recorder | None = None,
           task: str = "main") -> dict[str, Any]:
    """Run every party; return ``{party: result}`` or raise :class:`PartyFailed`."""
    specs = {name: _as_party(s) for name, s in parties.items()}
    roles = {name: s.role for name, s in specs.items()}
    job_id = job_id or uuid.uuid4().hex[:12]
    if mode == "threads":
        return _launch_threads(specs, roles, job_id, timeout, recorder, task)
    if mode == "processes":
        if recorder is not None:
            raise FederationError("a recorder needs mode='threads' (it lives in this process)")
        return _launch_processes(specs, roles, job_id, timeout, task)
    raise FederationError(f"unknown launch mode {mode!r}; use 'threads' or 'processes'")


def _root_cause(errors: dict[str, tuple[Any, str]]) -> tuple[str, Any, str]:
    """Prefer the party whose own code failed over parties that failed because of it."""
    for name, (err, tb) in errors.items():
        if not (isinstance(err, PeerFailed) or (isinstance(err, str) and err.startswith("PeerFailed"))):
            return name, err, tb
    name = next(iter(errors))
    return name, *errors[name]


def _launch_threads(specs: dict[str, Party], roles: dict[str, str], job_id: str,
                    timeout: float, recorder: Recorder | None, task: str) -> dict[str, Any]:
    hub = InProcessHub(specs, recorder)
    transports = {name: hub.endpoint(name).open_job(job_id, roles) for name in specs}
    results: dict[str, Any] = {}
    errors: dict[str, tuple[Any, str]] = {}
    lock = threading.Lock()

    def run(name: str, spec: Party) -> None:
        transport = transports[name]
        ctx = Context(name, roles, transport, task=task, timeout=timeout)
        try:
            out = spec.fn(ctx, **spec.kwargs)
            with lock:
                results[name] = out
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            with lock:
                errors[name] = (e, traceback.format_exc())
            transport.abort(failure_summary(e))

    threads = [threading.Thread(target=run, args=(n, s), name=f"atoll-party-{n}", daemon=True)
               for n, s in specs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for transport in transports.values():
        transport.close()
    if errors:
        name, err, tb = _root_cause(errors)
        raise PartyFailed(name, err, tb) from err
    return results


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now (held open together while chosen, so two
    calls of :func:`free_port` cannot hand out the same port twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _child(name: str, roles: dict[str, str], addresses: dict[str, str], cert_dir: str,
           spec: Party, job_id: str, timeout: float, task: str, out: Any) -> None:
    from atoll.federation.certs import TlsConfig
    from atoll.federation.grpc_transport import GrpcEndpoint

    die_with_parent()
    endpoint = transport = None
    try:
        endpoint = GrpcEndpoint(name, addresses, TlsConfig.load(cert_dir, name))
        transport = endpoint.open_job(job_id, roles)
        ctx = Context(name, roles, transport, task=task, timeout=timeout)
        result = spec.fn(ctx, **spec.kwargs)
        out.put(("ok", name, result, ""))
    except BaseException as e:  # noqa: BLE001
        if transport is not None:
            transport.abort(failure_summary(e))  # the peers learn the category, not the text
        out.put(("err", name, f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        if endpoint is not None:
            endpoint.close()


def _launch_processes(specs: dict[str, Party], roles: dict[str, str], job_id: str,
                      timeout: float, task: str) -> dict[str, Any]:
    from atoll.federation.certs import init_certs

    addresses = {name: f"127.0.0.1:{port}" for name, port in zip(specs, free_ports(len(specs)))}
    ctx_mp = mp.get_context("spawn")
    out = ctx_mp.Queue()
    with tempfile.TemporaryDirectory(prefix="atoll-certs-") as cert_dir:
        init_certs(specs, cert_dir, days=2)
        # Not daemonic, so that a party may start worker processes of its own (HE
        # pools); each child exits if the launcher disappears, and the finally
        # block below reaps every child on any exit path.
        procs = {name: ctx_mp.Process(target=_child, name=f"atoll-{name}", daemon=False,
                                      args=(name, roles, addresses, cert_dir, spec, job_id,
                                            timeout, task, out))
                 for name, spec in specs.items()}
        for p in procs.values():
            p.start()
        results: dict[str, Any] = {}
        errors: dict[str, tuple[Any, str]] = {}
        try:
            while len(results) + len(errors) < len(procs):
                try:
                    status, name, value, tb = out.get(timeout=0.2)
                except queue.Empty:
                    for name, p in procs.items():
                        if name not in results and name not in errors and p.exitcode is not None:
                            # died without reporting: killed, crashed, out of memory
                            errors[name] = (f"its process died (exit code {p.exitcode}) "
                                            "before reporting a result", "")
                    if errors:
                        break
                    continue
                if status == "ok":
                    results[name] = value
                else:
                    errors[name] = (value, tb)
                    break
            if errors:
                # collect the other parties' reports for a moment, so the root cause
                # (not a peer that failed because of it) is the one named
                _drain(out, results, errors, procs, wait=1.0)
        finally:
            for name, p in procs.items():
                if p.is_alive() and (errors or name not in results):
                    p.terminate()
            for p in procs.values():
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
        if errors:
            name, err, tb = _root_cause(errors)
            raise PartyFailed(name, err, tb)
    return results


def _drain(out: Any, results: dict, errors: dict, procs: dict, wait: float) -> None:
    end = time.monotonic() + wait
    while len(results) + len(errors) < len(procs) and time.monotonic() < end:
        try:
            status, name, value, tb = out.get(timeout=max(end - time.monotonic(), 0.01))
        except queue.Empty:
            return
        if status == "ok":
            results[name] = value
        else:
            errors[name] = (value, tb)


