"""Certificates for mutual TLS between parties.

``init_certs`` makes a local certificate authority and one key pair per party
(the certificate's common name and DNS name are the party name). Real
deployments bring certificates from their own CA; ``TlsConfig.load`` checks
any of them before a node starts, so an expired or foreign certificate is
reported at start-up with what to do, not as a failed handshake later.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atoll.errors import AuthError

_LOCAL_NAMES = ("localhost",)
_LOCAL_IPS = ("127.0.0.1", "::1")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "atoll"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(days: int = 365, name: str = "atoll local CA",
            not_before: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = _key()
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_party_cert(party: str, ca_cert_pem: bytes, ca_key_pem: bytes, days: int = 365,
                    hosts: Iterable[str] = (), not_before: dt.datetime | None = None
                    ) -> tuple[bytes, bytes]:
    """A certificate naming ``party``, signed by the CA: (certificate PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = _key()
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    alt: list[x509.GeneralName] = [x509.DNSName(party)]
    for h in (*_LOCAL_NAMES, *hosts):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _LOCAL_IPS]
    cert = (x509.CertificateBuilder()
            .subject_name(_name(party)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def init_certs(parties: Iterable[str], out: str | Path, days: int = 365,
               hosts: Iterable[str] = ()) -> Path:
    """Write ``ca.pem``, ``ca.key`` and ``PARTY.pem`` / ``PARTY.key`` for each party."""
    parties, hosts = list(parties), list(hosts)
    clash = sorted(set(hosts) & set(parties))
    if clash:  # every certificate would name that party too, and could pass for it
        raise AuthError(f"--hosts {', '.join(clash)} is a party name: a party's certificate names that party "
                        "and its own host names only; give machines' host names or IPs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(days)
    (out / "ca.pem").write_bytes(ca_cert)
    _write_secret(out / "ca.key", ca_key)
    for party in parties:
        cert, key = make_party_cert(party, ca_cert, ca_key, days, hosts)
        (out / f"{party}.pem").write_bytes(cert)
        _write_secret(out / f"{party}.key", key)
    return out


def _write_secret(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of a certificate's subject alternative name (empty without one)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))


@dataclass(frozen=True)
class TlsConfig:
    """What one party needs for mutual TLS: the CA it trusts, its certificate and key."""

    party: str
    ca_cert: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, directory: str | Path, party: str) -> "TlsConfig":
        d = Path(directory)
        files = {"ca": d / "ca.pem", "cert": d / f"{party}.pem", "key": d / f"{party}.key"}
        for what, f in files.items():
            if not f.is_file():
                raise AuthError(f"missing {what} file {f} for party {party!r}; "
                                f"create them with `atoll certs init --parties ... --out {d}`")
        tls = cls(party, files["ca"].read_bytes(), files["cert"].read_bytes(), files["key"].read_bytes())
        tls.check()
        return tls

    def check(self, now: dt.datetime | None = None) -> None:
        """Refuse a certificate that is expired, not yet valid, not from the CA, or names another party."""
        now = now or dt.datetime.now(dt.timezone.utc)
        try:
            ca = x509.load_pem_x509_certificate(self.ca_cert)
            cert = x509.load_pem_x509_certificate(self.cert)
        except ValueError as e:
            raise AuthError(f"party {self.party!r}: unreadable certificate: {e}") from None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = names[0].value if names else None
        if cn != self.party:
            raise AuthError(f"certificate names {cn!r}, not party {self.party!r}: "
                            "use the certificate issued for this party")
        sans = dns_names(cert)
        if sans and self.party not in sans:  # peers check a server by its SAN, a client by its CN
            raise AuthError(f"certificate of party {self.party!r} names {self.party!r} in its subject but not "
                            f"among its DNS names ({', '.join(sans)}); peers would refuse it as another "
                            "party's: issue it with the party name as a DNS name")
        try:
            key = serialization.load_pem_private_key(self.key, password=None)
        except (ValueError, TypeError) as e:
            raise AuthError(f"party {self.party!r}: unreadable private key ({type(e).__name__})") from None
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.DER, pub)
                != cert.public_key().public_bytes(serialization.Encoding.DER, pub)):
            raise AuthError(f"the private key of party {self.party!r} does not match its certificate; "
                            "use the key file issued with that certificate")
        if cert.not_valid_after_utc < now:
            raise AuthError(f"certificate of party {self.party!r} expired on "
                            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; issue a new one "
                            "(`atoll certs init`, or your organisation's CA)")
        if cert.not_valid_before_utc > now:
            raise AuthError(f"certificate of party {self.party!r} is not valid before "
                            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clock")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as e:  # InvalidSignature has no common base
            raise AuthError(f"certificate of party {self.party!r} was not issued by the "
                            f"configured CA ({type(e).__name__}); use certificates from one CA") from None

    def check_names(self, parties: Iterable[str]) -> None:
        """Refuse a certificate that names another party of the federation among its DNS names:
        a client checks a server by its DNS names, so it could pass for that party."""
        others = sorted(set(dns_names(x509.load_pem_x509_certificate(self.cert))) & (set(parties) - {self.party}))
        if others:
            raise AuthError(f"certificate of party {self.party!r} also names part{'ies' if len(others) > 1 else 'y'} "
                            f"{', '.join(map(repr, others))}; peers could take it for "
                            f"{'theirs' if len(others) > 1 else 'that party'}: issue it with its own names only")
