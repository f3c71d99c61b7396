"""Identity: one naming rule for certificates in both directions, keys that match, and nobody
speaking to a party in that party's own name (issue 19)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atoll import wire
from atoll.errors import AuthError
from atoll.federation.certs import TlsConfig, init_certs, make_ca, make_party_cert
from atoll.federation.grpc_transport import GrpcEndpoint
from atoll.federation.launch import free_port

from test_wire_probes import FakeContext, push


def test_certs_init_refuses_a_host_name_that_is_a_party_name(tmp_path):
    with pytest.raises(AuthError, match="--hosts guest is a party name"):
        init_certs(["guest", "host_0"], tmp_path, hosts=["guest"])
    init_certs(["guest", "host_0"], tmp_path, hosts=["10.0.0.5", "bank.example"])  # machines' names are fine


def test_a_certificate_that_also_names_another_party_is_refused_at_start(tmp_path):
    ca, ca_key = make_ca(1)
    cert, key = make_party_cert("host_0", ca, ca_key, 1, hosts=["guest"])
    tls = TlsConfig("host_0", ca, cert, key)
    tls.check()  # a valid certificate on its own ...
    with pytest.raises(AuthError, match="also names party 'guest'"):  # ... but it could pass for the guest
        GrpcEndpoint("host_0", {"host_0": f"127.0.0.1:{free_port()}", "guest": "127.0.0.1:1"}, tls)


def _cert(cn: str, san: str, ca: bytes, ca_key: bytes) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
            .sign(signer, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def test_a_certificate_whose_subject_and_dns_names_disagree_is_refused_at_load():
    ca, ca_key = make_ca(1)
    cert, key = _cert("guest", "host_0", ca, ca_key)
    with pytest.raises(AuthError, match="not among its DNS names"):
        TlsConfig("guest", ca, cert, key).check()


def test_a_key_that_does_not_match_its_certificate_is_refused_at_load(tmp_path):
    d = init_certs(["guest", "host_0"], tmp_path)
    (d / "guest.key").write_bytes((d / "host_0.key").read_bytes())
    with pytest.raises(AuthError, match="does not match its certificate"):
        TlsConfig.load(d, "guest")


def test_nobody_may_send_to_a_party_in_that_partys_own_name():
    ep = GrpcEndpoint("b", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{free_port()}"}, None)
    try:
        ep.open_job("j", ["a", "b"])
        header = {"id": "m", "job": "j", "sender": "b", "receiver": "b", "address": "j/main/k", "size": 1}
        ctx = push(ep, wire.dumps(header), b"x")
        assert ctx.code == grpc.StatusCode.PERMISSION_DENIED and "may not send as 'b'" in ctx.details
        assert ep.stats()["j"]["messages"] == 0
    finally:
        ep.close(grace=0)


class AuthContext(FakeContext):
    def __init__(self, cn: str, dns: list[str]):
        super().__init__()
        self._auth = {"x509_common_name": [cn.encode()], "peer_dns": [d.encode() for d in dns]}

    def auth_context(self):
        return self._auth


def test_servers_check_clients_by_the_rule_clients_check_servers_by(tmp_path):
    d = init_certs(["guest", "host_0"], tmp_path)
    ep = GrpcEndpoint("host_0", {"host_0": f"127.0.0.1:{free_port()}", "guest": "127.0.0.1:1"},
                      TlsConfig.load(d, "host_0"))
    try:
        assert ep._peer_identity(AuthContext("guest", ["guest", "localhost"])) == "guest"
        assert ep._peer_identity(AuthContext("guest", ["host_0", "localhost"])) == ""  # CN and SAN disagree
        assert ep._peer_identity(AuthContext("guest", ["guest", "host_0"])) == ""  # names two parties
    finally:
        ep.close(grace=0)
