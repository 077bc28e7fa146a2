"""HTTPS for the gateway of `aiostack up`: the operator's certificate, or one aiostack makes.

``--tls-cert FILE --tls-key FILE`` serves the gateway with that certificate. ``--tls-cert generate``
makes (once) a CA of the data directory's own, ``<data-dir>/tls/gateway-ca/ca.pem`` (its key never
leaves that owner-only directory), and a certificate it signs for the gateway's listen address,
``localhost`` and 127.0.0.1 (made anew at each start); the clients' files
(clouds.yaml's ``cacert``, openrc's ``OS_CACERT``) name the CA, so `openstack` and `aiostack`
trust it and nothing else changes for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.tls import CertificateAuthority

GENERATE = "generate"
CA_DIR = Path("tls") / "gateway-ca"
SERVER_DIR = Path("tls") / "gateway"


@dataclass(frozen=True, slots=True)
class GatewayTls:
    """The files the gateway serves HTTPS with, and the CA clients trust (None: the system's)."""

    certificate: Path
    key: Path
    ca: Path | None


def gateway_tls(data_dir: Path, tls_cert: str | None, tls_key: Path | None, listen: str) -> GatewayTls | None:
    """What ``--tls-cert``/``--tls-key`` ask for (None: plain HTTP)."""
    if tls_cert is None:
        return None
    if tls_cert != GENERATE:
        assert tls_key is not None
        return GatewayTls(Path(tls_cert), tls_key, None)
    authority = CertificateAuthority(data_dir / CA_DIR, name="aiostack gateway CA")
    host = listen.rpartition(":")[0] or "127.0.0.1"
    issued = authority.issue_server(
        "aiostack-gateway", sorted({host, "127.0.0.1", "localhost"}), data_dir / SERVER_DIR
    )
    return GatewayTls(issued.certificate, issued.key, authority.issued.certificate)
