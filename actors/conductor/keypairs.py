"""Nova's key pairs (``os-keypairs``), kept by the conductor: one user's named SSH public keys.

A key pair is imported (``public_key`` given) or generated here (an Ed25519 key, whose private
half is returned once and never stored). The fingerprint is Nova's: the MD5 of the key blob,
as colon-separated hex. Servers name one with ``key_name``. A key pair of type ``x509`` (Nova
2.2, for WinRM) is a PEM certificate instead: imported, or generated here (an RSA key and a
self-signed certificate for the key pair's name, valid ten years); its fingerprint is the SHA-1
of the certificate, as colon-separated hex. A key pair's name is checked at
dispatch (``api.conductor.KeypairName``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from actors.conductor.quotas import check_count
from api.conductor import Keypair, Keypairs, KeypairType, NewKeypair
from bus import Conflict, InvalidRequest, NotFound
from runtime.context import require_caller
from runtime.stamps import utcnow
from runtime.store import Store

MIGRATION = """
    CREATE TABLE keypairs (
        user_id TEXT NOT NULL, name TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        type TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (user_id, name));
"""
_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key line; InvalidRequest when it is not one."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise InvalidRequest("Keypair data is invalid: not an OpenSSH public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("Keypair data is invalid: the key is not base64") from None
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def _colon_hex(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def x509_fingerprint(certificate: str) -> str:
    """Nova's fingerprint of a PEM certificate (SHA-1 of its DER); InvalidRequest when it is not one."""
    try:
        parsed = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        raise InvalidRequest("Keypair data is invalid: not a PEM x509 certificate") from None
    return _colon_hex(parsed.fingerprint(hashes.SHA1()).hex())  # Nova's fingerprint


def generate_x509(common_name: str) -> tuple[str, str]:
    """A new certificate key pair: (PEM self-signed certificate, PEM private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), private.decode()


def generate() -> tuple[str, str]:
    """A new key pair: (OpenSSH public key line, OpenSSH private key PEM)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public.decode() + " Generated-by-aiostack", private.decode()


async def has_keypair(store: Store, user_id: str | None, name: str) -> bool:
    """Whether the user has a key pair of that name."""
    return (
        await store.fetchone("SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name))
        is not None
    )


async def public_key(store: Store, user_id: str, name: str) -> str | None:
    """The public key of the user's key pair of that name (None: it was deleted meanwhile)."""
    row = await store.fetchone(
        "SELECT public_key FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)
    )
    return None if row is None else str(row["public_key"])


class KeypairBook(Keypairs):
    """Serves ``api.conductor.Keypairs``: the calling user's key pairs."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_keypair(
        self, *, name: str, public_key: str | None = None, key_type: KeypairType = "ssh"
    ) -> NewKeypair:
        """Import ``public_key``, or generate a pair and return its ``private_key`` (once).

        :raises InvalidRequest: not an OpenSSH public key (``ssh``) or PEM certificate (``x509``).
        :raises Conflict: the user has a key pair of that name.
        """
        ctx = require_caller()
        user_id = ctx.user_id
        private_key = None
        if public_key is None:
            public_key, private_key = generate_x509(name) if key_type == "x509" else generate()
        row: NewKeypair = {
            "user_id": str(user_id),
            "name": name,
            "public_key": public_key.strip(),
            "fingerprint": x509_fingerprint(public_key) if key_type == "x509" else fingerprint(public_key),
            "type": key_type,
            "created_at": utcnow(),
        }
        async with self.store.transaction() as db:
            if await db.fetchone("SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)):
                raise Conflict(f"Key pair '{name}' already exists.")
            owned = await db.fetchone("SELECT COUNT(*) AS n FROM keypairs WHERE user_id = ?", (user_id,))
            await check_count(db, str(ctx.project_id), "key_pairs", int(owned["n"] if owned else 0) + 1)
            await db.execute(
                "INSERT INTO keypairs (user_id, name, public_key, fingerprint, type, created_at)"
                " VALUES (:user_id, :name, :public_key, :fingerprint, :type, :created_at)",
                row,
            )
        if private_key is not None:
            row["private_key"] = private_key
        return row

    async def list_keypairs(self) -> list[Keypair]:
        return await self.store.fetchall(
            "SELECT * FROM keypairs WHERE user_id = ? ORDER BY name", (require_caller().user_id,), row=Keypair
        )

    async def get_keypair(self, *, name: str) -> Keypair:
        user_id = require_caller().user_id
        row = await self.store.fetchone(
            "SELECT * FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name), row=Keypair
        )
        if row is None:
            raise NotFound(f"Keypair {name} not found for user {user_id}")
        return row

    async def delete_keypair(self, *, name: str) -> None:
        user_id = require_caller().user_id
        removed = await self.store.execute(
            "DELETE FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)
        )
        if not removed:
            raise NotFound(f"Keypair {name} not found for user {user_id}")
