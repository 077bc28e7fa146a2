"""The cluster's certificate authority: a CA that aiostack makes, and the certificates it signs
for nats-servers (their clients and their routes to each other are TLS, trusting this CA alone).

Keys are EC P-256, written owner-only; the CA's key never leaves the directory it was made in.
Made with ``cryptography`` (already a dependency: Fernet tokens, key pairs).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bus.server import TLS_NAME
from deploy.privacy import write_private

CA_DAYS = 3650
SERVER_DAYS = 825
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key, as files (PEM)."""

    certificate: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """The CA in ``directory`` (``ca.pem``, ``ca.key``), made on first use."""

    def __init__(self, directory: Path, name: str = "aiostack cluster CA") -> None:
        self.directory = directory
        self.issued = Issued(directory / "ca.pem", directory / "ca.key")
        if not self.issued.certificate.exists():
            self._make(name)
        self.certificate = x509.load_pem_x509_certificate(self.issued.certificate.read_bytes())
        key = serialization.load_pem_private_key(self.issued.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key

    @property
    def pem(self) -> str:
        """The CA certificate, what clients trust."""
        return self.issued.certificate.read_text()

    def _make(self, name: str) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.issued.key, _key_pem(key))
        write_private(self.issued.certificate, certificate.public_bytes(serialization.Encoding.PEM))

    def issue_server(self, name: str, addresses: list[str], directory: Path) -> Issued:
        """A certificate for a server called ``name`` reached at ``addresses`` (IPs or DNS names),
        and as ``bus.server.TLS_NAME`` (what clients check), for TLS both as a server and as a
        client (nats-server's routes dial each other)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName(TLS_NAME)]
        for address in addresses:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                names.append(x509.DNSName(address))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
        write_private(issued.key, _key_pem(key))
        write_private(issued.certificate, certificate.public_bytes(serialization.Encoding.PEM))
        return issued
