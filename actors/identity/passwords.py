"""Password and secret hashing for the identity actor: argon2id (argon2-cffi).

A stored hash is argon2id's standard string (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``),
with OWASP's parameters for argon2id: 19 MiB of memory, 2 passes, 1 lane. Hashes made by earlier
versions, scrypt's ``scrypt$n$r$p$salt$hash`` (salt and hash in base64), are still checked, and
``needs_rehash`` says a login should store its password hashed anew: the identity actor does
so at the next successful login (``Tokens``), so old hashes go as their users come back.
Hashing costs tens of milliseconds by design, so callers run these functions in a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
SCRYPT_MAXMEM = 64 << 20

# The one answer to every failed login, whatever failed (no hint to the caller).
AUTH_FAILED = "The request you have made requires authentication."


def hash_password(password: str) -> str:
    """argon2id, as its standard string (parameters and salt in it)."""
    return HASHER.hash(password)


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (argon2id, or an earlier version's scrypt); False
    (never an exception) for a malformed hash."""
    if stored.startswith("scrypt$"):
        return _check_scrypt(password, stored)
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made otherwise than ``hash_password`` makes hashes now (scrypt, or
    argon2 with other parameters)."""
    try:
        return stored.startswith("scrypt$") or HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _check_scrypt(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
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
