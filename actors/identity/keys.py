"""What a token is: a msgpack payload sealed with Fernet keys from a Keystone-style key repository.

Key repository (``<data_dir>/keys/token``, directory 0700, every file 0600), Keystone's
layout: one file per Fernet key, named by a number.

* ``0`` is the *staged* key: the next primary. It already decrypts, so a replica that
  has not yet re-read the directory accepts tokens of a replica that rotated.
* the highest number is the *primary* key: it encrypts every new token.
* the numbers in between are *secondary* keys: they only decrypt tokens issued before a
  rotation, until those expire.

``rotate()`` renames ``0`` to highest + 1 (the new primary, its modification time set to
the rotation's), writes a new ``0`` and removes the lowest secondary keys until at most
``max_active_keys`` remain. ``rotate_if_older(period)`` rotates only when the primary key is at
least ``period`` old, deciding under the lock: of replicas sharing the directory on a schedule,
one rotates per period. A token must be opened until it expires, and a service token may vouch
for it a stale window longer: ``active_keys_needed`` says how many keys that takes.

Setup and rotation hold an exclusive ``flock`` on ``.lock`` and reading holds a shared one, so
replicas of the identity actor on one data directory never see half a rotation; each re-reads
the keys when the set of key numbers on disk changed (before sealing a token, and when no key
opens one). Files are written to a temporary name and renamed into place.

Token payload (msgpack array, version 2)::

    [2, user_id, methods, project_id | None, audit_ids, issued_at, expires_at, app_cred_id | None,
     system]

``system`` is true for a token scoped to the system (then ``project_id`` is None). Version 1 is
the same array without ``system`` (a token sealed before system scope: read as not on it).

``audit_ids`` is ``[audit_id]`` or ``[audit_id, chain_root]`` for a re-scoped token
(Keystone's audit chain). The Fernet token's base64 padding is stripped, as Keystone does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from api.identity import KeyLayout

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 2
PAYLOAD_LENGTHS = {1: 8, 2: 9}
"""The fields of each payload version that is read (version 1's tokens were sealed before
system scope, and live until they expire)."""
MAX_TOKEN_LENGTH = 4096
LOCK_NAME = ".lock"

__all__ = [
    "MAX_TOKEN_LENGTH",
    "InvalidToken",
    "KeyRepository",
    "TokenPayload",
    "active_keys_needed",
    "max_active_keys_for",
    "new_audit_id",
]


DEFAULT_TOKEN_TTL = 3600.0
"""How long a token lives, by default (Keystone's 1 h)."""
STALE_WINDOW = 2 * 24 * 3600.0
"""How long after its expiry a user's token is valid with a service token (Keystone's 2 days)."""
DEFAULT_MAX_ACTIVE_KEYS = 3


def active_keys_needed(token_ttl: float, stale_window: float, rotation_period: float) -> int:
    """The keys to keep when rotating every ``rotation_period`` seconds, so a token stays
    readable until it can no longer be valid (Keystone: lifetime / period + 2, the lifetime
    with the stale window): the staged key, the primary, and the secondaries in between."""
    return math.ceil((token_ttl + stale_window) / rotation_period) + 2


def max_active_keys_for(
    token_ttl: float, stale_window: float, rotation_period: float | None, asked: int | None
) -> int:
    """The keys to keep: ``asked``, else enough for a rotation every ``rotation_period`` seconds.

    :raises ValueError: ``asked`` is too few for the schedule (a valid token would be refused).
    """
    if rotation_period is None:
        return asked or DEFAULT_MAX_ACTIVE_KEYS
    if rotation_period <= 0:
        raise ValueError("the token key rotation period must be positive")
    needed = active_keys_needed(token_ttl, stale_window, rotation_period)
    if asked is None:
        return max(DEFAULT_MAX_ACTIVE_KEYS, needed)
    if asked < needed:
        raise ValueError(
            f"max_active_keys {asked} is too few to rotate the token keys every {rotation_period / 3600:g} h:"
            f" tokens live {token_ttl / 3600:g} h and may be vouched for {stale_window / 3600:g} h after,"
            f" which takes {needed} keys ((lifetime + stale window) / period + 2); keep more keys or"
            " rotate less often"
        )
    return asked


def new_audit_id() -> str:
    """A random urlsafe audit id (22 characters, like Keystone's)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class TokenPayload:
    """Everything a token says; nothing of it is stored anywhere else."""

    user_id: str
    methods: tuple[str, ...]
    project_id: str | None
    audit_ids: tuple[str, ...]
    issued_at: float
    expires_at: float
    app_cred_id: str | None = None
    system: bool = False

    @property
    def audit_id(self) -> str:
        return self.audit_ids[0]

    def pack(self) -> bytes:
        return msgpack.packb(
            [
                PAYLOAD_VERSION,
                self.user_id,
                list(self.methods),
                self.project_id,
                list(self.audit_ids),
                self.issued_at,
                self.expires_at,
                self.app_cred_id,
                self.system,
            ],
            use_bin_type=True,
        )

    @classmethod
    def unpack(cls, data: bytes) -> TokenPayload:
        """Read a payload; ``ValueError`` for anything but a well-formed version 1 or 2 payload."""
        try:
            fields = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"payload is not msgpack: {exc}") from None
        version = fields[0] if isinstance(fields, list) and fields and type(fields[0]) is int else None
        if version not in PAYLOAD_LENGTHS or PAYLOAD_LENGTHS[version] != len(fields):
            raise ValueError("unknown payload version or shape")
        _, user_id, methods, project_id, audit_ids, issued_at, expires_at, app_cred_id = fields[:8]
        system = fields[8] if len(fields) > 8 else False
        if not isinstance(user_id, str) or not _strings(methods) or not _strings(audit_ids):
            raise ValueError("payload user, methods or audit ids malformed")
        if not 1 <= len(audit_ids) <= 2 or not methods:
            raise ValueError("payload audit chain or methods malformed")
        if not all(isinstance(v, str | None) for v in (project_id, app_cred_id)):
            raise ValueError("payload project or application credential malformed")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (issued_at, expires_at)):
            raise ValueError("payload times malformed")
        if not isinstance(system, bool) or (system and project_id is not None):
            raise ValueError("payload system scope malformed")
        return cls(
            user_id,
            tuple(methods),
            project_id,
            tuple(audit_ids),
            float(issued_at),
            float(expires_at),
            app_cred_id,
            system,
        )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class KeyRepository:
    """The Fernet keys of ``path``; ``setup()`` once, then ``encrypt``/``decrypt``."""

    def __init__(self, path: Path, max_active_keys: int = DEFAULT_MAX_ACTIVE_KEYS) -> None:
        if max_active_keys < 2:
            raise ValueError("max_active_keys must be at least 2 (a staged and a primary key)")
        self.path = path
        self.max_active_keys = max_active_keys
        self.numbers: tuple[int, ...] = ()
        self._fernet: MultiFernet | None = None
        self._signature: tuple[int, ...] | None = None
        self._reload_lock = asyncio.Lock()

    @property
    def primary(self) -> int:
        return max(self.numbers)

    # -- asynchronous API (file work in a worker thread) ---------------------------------

    async def setup(self) -> None:
        """Create the directory and the first staged and primary keys if missing; load them."""
        await asyncio.to_thread(self._setup_sync)
        await self._load()

    async def rotate(self) -> KeyLayout:
        """Promote the staged key, stage a new one, drop the oldest; return the new layout."""
        await asyncio.to_thread(self._rotate_sync)
        await self._load()
        return {"primary": self.primary, "keys": sorted(self.numbers)}

    async def rotate_if_older(self, period: float) -> KeyLayout | None:
        """Rotate if the primary key is ``period`` seconds old or more (the new layout), else
        nothing (another replica rotated this period already, or it is not time)."""
        rotated = await asyncio.to_thread(self._rotate_if_older_sync, period)
        if not rotated:
            return None
        await self._load()
        return {"primary": self.primary, "keys": sorted(self.numbers)}

    async def refresh(self) -> bool:
        """Re-read the keys if the directory changed since they were read; True if it did."""
        if self._current_signature() == self._signature:
            return False
        async with self._reload_lock:
            if self._current_signature() == self._signature:
                return False
            await self._load()
            return True

    def encrypt(self, data: bytes) -> str:
        """Seal ``data`` with the primary key; the token without its base64 padding."""
        if self._fernet is None:
            raise RuntimeError("key repository not set up")
        return self._fernet.encrypt(data).decode().rstrip("=")

    def decrypt(self, token: str) -> bytes:
        """Open a token with any active key; ``InvalidToken`` when none of them can."""
        if self._fernet is None:
            raise RuntimeError("key repository not set up")
        padded = token + "=" * (-len(token) % 4)
        try:
            return self._fernet.decrypt(padded.encode("ascii"))
        except (UnicodeEncodeError, ValueError):
            raise InvalidToken from None

    # -- file work --------------------------------------------------------------------------

    async def _load(self) -> None:
        numbers, fernet, signature = await asyncio.to_thread(self._load_sync)
        self.numbers, self._fernet, self._signature = numbers, fernet, signature

    def _current_signature(self) -> tuple[int, ...] | None:
        """The key numbers on disk: every rotation adds a higher one (timestamps are too coarse)."""
        try:
            return tuple(sorted(int(name) for name in os.listdir(self.path) if name.isdigit()))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _read_keys(self) -> dict[int, bytes]:
        keys: dict[int, bytes] = {}
        for entry in os.scandir(self.path):
            if not entry.name.isdigit() or not entry.is_file():
                continue
            if entry.stat().st_mode & 0o077:
                log.warning("token key %s is readable by others; it should be 0600", entry.path)
            key = Path(entry.path).read_bytes().strip()
            try:
                Fernet(key)
            except ValueError:
                log.error("token key %s is not a Fernet key; ignored", entry.path)
                continue
            keys[int(entry.name)] = key
        return keys

    def _write_key(self, number: int, key: bytes) -> None:
        temporary = self.path / f".{number}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path / str(number))

    def _setup_sync(self) -> None:
        for directory in (self.path.parent, self.path):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        with self._locked(exclusive=True):
            keys = self._read_keys()
            if 0 not in keys:
                self._write_key(0, Fernet.generate_key())
            if not any(number > 0 for number in keys):
                self._promote_staged(1)
                log.info("token key repository %s created", self.path)

    def _rotate_sync(self) -> None:
        with self._locked(exclusive=True):
            self._rotate_locked()

    def _rotate_if_older_sync(self, period: float) -> bool:
        with self._locked(exclusive=True):
            primary = max((int(name) for name in os.listdir(self.path) if name.isdigit()), default=0)
            if primary > 0 and time.time() - (self.path / str(primary)).stat().st_mtime < period:
                return False
            self._rotate_locked()
            return True

    def _rotate_locked(self) -> None:
        keys = self._read_keys()
        if 0 not in keys:
            self._write_key(0, Fernet.generate_key())
        primary = max(keys, default=0) + 1
        self._promote_staged(primary)
        others = sorted(number for number in keys if 0 < number < primary)
        while others and len(others) + 2 > self.max_active_keys:
            os.unlink(self.path / str(others.pop(0)))
        log.info("token keys rotated: primary is now key %d", primary)

    def _promote_staged(self, number: int) -> None:
        """Make the staged key primary key ``number`` (dated now: its age is the time since this
        rotation) and stage a new one."""
        os.replace(self.path / "0", self.path / str(number))
        os.utime(self.path / str(number))
        self._write_key(0, Fernet.generate_key())

    def _load_sync(self) -> tuple[tuple[int, ...], MultiFernet, tuple[int, ...] | None]:
        with self._locked(exclusive=False):
            signature = self._current_signature()
            keys = self._read_keys()
        if not any(number > 0 for number in keys):
            raise RuntimeError(f"token key repository {self.path} has no primary key")
        order = sorted(keys, key=lambda number: (number == 0, -number))
        return tuple(sorted(keys)), MultiFernet([Fernet(keys[number]) for number in order]), signature
