"""Password and secret hashing for the identity actor: scrypt from the standard library.

A stored hash reads ``scrypt$n$r$p$salt$hash`` (salt and hash in base64). Hashing costs
tens of milliseconds and 16 MiB by design, so callers run these functions in a worker
thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 << 20

# The one answer to every failed login, whatever failed (no hint to the caller).
AUTH_FAILED = "The request you have made requires authentication."


def hash_password(password: str) -> str:
    """scrypt (memory-hard), as ``scrypt$n$r$p$salt$hash`` in base64."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM
    )
    return "$".join(
        (
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False (never an exception) for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
        )
        return hmac.compare_digest(candidate, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


def new_secret() -> str:
    """A random secret for an application credential (64 urlsafe characters)."""
    return secrets.token_urlsafe(48)


def dummy_hash() -> str:
    """A hash of a random password nobody knows: what unknown users are checked against."""
    return hash_password(secrets.token_hex(16))
