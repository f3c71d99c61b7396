"""Every server listens exactly where it is told, nowhere else (checked with psutil): the gRPC
endpoint and transport, the party processes of launch / atoll run, and ``atoll psi``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from atoll.errors import FederationError
from atoll.federation import Party, launch
from atoll.federation.certs import TlsConfig, init_certs
from atoll.federation.grpc_transport import GrpcEndpoint, GrpcTransport
from atoll.federation.launch import free_port

from fed_protocols import listening, report_listening


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    return init_certs(["guest", "host_0"], tmp_path_factory.mktemp("certs"), days=1)


def on_port(port, pid=None):
    return [ip for ip, p in listening(pid) if p == port]


def test_grpc_transport_and_endpoint_listen_on_their_own_address_only(certdir):
    pg, ph, other = free_port(), free_port(), free_port()
    addrs = {"guest": f"127.0.0.1:{pg}", "host_0": f"127.0.0.1:{ph}"}
    t = GrpcTransport("guest", addrs, TlsConfig.load(certdir, "guest"))
    # an explicit listen address wins over the party's address, and is all there is
    ep = GrpcEndpoint("host_0", addrs, TlsConfig.load(certdir, "host_0"), listen=f"127.0.0.1:{other}")
    try:
        assert on_port(pg) == ["127.0.0.1"]
        assert on_port(other) == ["127.0.0.1"] and on_port(ph) == []
    finally:
        t.close(0)
        ep.close(0)
    assert on_port(pg) == [] and on_port(other) == []


def test_an_address_that_is_not_this_machines_is_refused_not_widened(certdir):
    port = free_port()
    addrs = {"guest": f"192.0.2.1:{port}", "host_0": f"127.0.0.1:{free_port()}"}  # TEST-NET-1
    with pytest.raises(FederationError, match=f"could not listen on 192.0.2.1:{port}"):
        GrpcEndpoint("guest", addrs, TlsConfig.load(certdir, "guest"))
    assert on_port(port) == []


def test_party_processes_of_a_local_launch_listen_on_loopback_only():
    out = launch({"a": Party("peer", report_listening), "b": Party("peer", report_listening)},
                 mode="processes", timeout=60)
    for party, sockets in out.items():
        assert sockets and all(ip == "127.0.0.1" for ip, _ in sockets), (party, sockets)


def test_atoll_psi_listens_exactly_on_its_address(tmp_path, certdir):
    (tmp_path / "ids.csv").write_text("id\na\nb\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "psi", "--role", "guest", "--ids",
                             str(tmp_path / "ids.csv"), "--address", f"127.0.0.1:{port}",
                             "--peer", f"host_0=127.0.0.1:{free_port()}", "--certs", str(certdir),
                             "--out", str(tmp_path / "out.csv")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, found = time.monotonic() + 60, []
        while time.monotonic() < deadline and not found and proc.poll() is None:
            found = on_port(port, proc.pid)  # it waits for a peer that never comes
            time.sleep(0.1)
        assert found == ["127.0.0.1"], found
        assert all(ip == "127.0.0.1" for ip, _ in listening(proc.pid))
    finally:
        proc.kill()
        proc.wait()
