"""Nova's key pairs (``os-keypairs``), kept by the conductor: one user's named SSH public keys.

A key pair is imported (``public_key`` given) or generated here (an Ed25519 key, whose private
half is returned once and never stored). The fingerprint is Nova's: the MD5 of the key blob,
as colon-separated hex. Servers name one with ``key_name``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bus import Conflict, InvalidRequest, NotFound, handler
from runtime.context import require_caller
from runtime.stamps import utcnow

MIGRATION = """
    CREATE TABLE keypairs (
        user_id TEXT NOT NULL, name TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        type TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (user_id, name));
"""
_NAME = re.compile(r"^[A-Za-z0-9 _.@-]{1,255}$")
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
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def generate() -> tuple[str, str]:
    """A new key pair: (OpenSSH public key line, OpenSSH private key PEM)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public.decode() + " Generated-by-aiostack", private.decode()


class KeypairHandlers:
    """Mixed into ConductorActor: the caller's key pairs."""

    store: Any

    @handler(policy="compute:write")
    async def create_keypair(self, name: str, public_key: str | None = None) -> dict[str, Any]:
        """Import ``public_key``, or generate a pair and return its ``private_key`` (once).

        :raises InvalidRequest: a bad name or key.
        :raises Conflict: the user has a key pair of that name.
        """
        user_id = require_caller().user_id
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest("Keypair name must be 1-255 letters, digits, spaces, '_', '.', '@' or '-'")
        private_key = None
        if public_key is None:
            public_key, private_key = generate()
        elif not isinstance(public_key, str):
            raise InvalidRequest("Keypair data is invalid: public_key must be a string")
        row = {
            "user_id": user_id,
            "name": name,
            "public_key": public_key.strip(),
            "fingerprint": fingerprint(public_key),
            "type": "ssh",
            "created_at": utcnow(),
        }
        async with self.store.transaction() as db:
            existing = await db.execute(
                "SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (user_id, name)
            )
            if await existing.fetchone():
                raise Conflict(f"Key pair '{name}' already exists.")
            await db.execute(
                "INSERT INTO keypairs (user_id, name, public_key, fingerprint, type, created_at)"
                " VALUES (:user_id, :name, :public_key, :fingerprint, :type, :created_at)",
                row,
            )
        return {**row, **({"private_key": private_key} if private_key else {})}

    @handler(policy="compute:read")
    async def list_keypairs(self) -> list[dict[str, Any]]:
        return await self.store.fetchall(
            "SELECT * FROM keypairs WHERE user_id = ? ORDER BY name", (require_caller().user_id,)
        )

    @handler(policy="compute:read")
    async def get_keypair(self, name: str) -> dict[str, Any]:
        """:raises NotFound: the user has no key pair of that name."""
        row = await self.store.fetchone(
            "SELECT * FROM keypairs WHERE user_id = ? AND name = ?", (require_caller().user_id, name)
        )
        if row is None:
            raise NotFound(f"Keypair {name} not found for user {require_caller().user_id}")
        return row

    @handler(policy="compute:write")
    async def delete_keypair(self, name: str) -> None:
        """:raises NotFound: the user has no key pair of that name."""
        removed = await self.store.execute(
            "DELETE FROM keypairs WHERE user_id = ? AND name = ?", (require_caller().user_id, name)
        )
        if not removed:
            raise NotFound(f"Keypair {name} not found for user {require_caller().user_id}")
