"""The cluster actor: which hosts belong to a cloud that spans machines, their invitations, and
the bus users every controller's nats-server lists (kept as bcrypt hashes, nats-server's own
format, so the database never holds a bus password).

It runs on every controller, its state in the shared database. Which bus users a host of a
role gets, with which permissions, is the deployment's knowledge (``deploy.credentials``),
handed in as ``users_for``. A joining controller is given what its replicas need from this
controller's data directory: the CA (``<data>/ca``) and identity's token keys
(``<data>/keys/token``).

Its API and version history: ``api/cluster.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt

from api.cluster import (
    ALIVE_WITHIN,
    INVITATION_TTL,
    BusUser,
    Cluster,
    ClusterHost,
    ClusterHosts,
    ClusterJoin,
    ControllerSecrets,
    Invitation,
    JoinGrant,
    Reported,
    Role,
    nats_url,
    route_url,
)
from bus import Actor, Bus, Conflict, Forbidden, NotFound, current_request_id
from runtime.config import Config
from runtime.stamps import utcnow
from runtime.store import Db, open_store

MIGRATIONS = [
    """
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, state TEXT NOT NULL, address TEXT,
        created_at TEXT NOT NULL, joined_at TEXT, last_seen REAL,
        processes TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE invitations (
        name TEXT PRIMARY KEY REFERENCES hosts(name), join_user TEXT NOT NULL,
        secret_hash TEXT NOT NULL, expires_at REAL NOT NULL, used_at REAL);
    CREATE TABLE bus_users (
        user_name TEXT PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(name),
        password_hash TEXT NOT NULL, permissions TEXT NOT NULL);
    CREATE INDEX bus_users_host ON bus_users(host);
    """,
]

BCRYPT_ROUNDS = 4
"""bcrypt's least cost: every bus password is 24 or more random bytes, which no stretching makes
harder to guess, while nats-server checks a hash at each connection (every client of a server
that restarted reconnects at once)."""

UsersFor = Callable[[str, Role], list[tuple[str, dict[str, Any]]]]
"""A host's name and role -> its bus users and their nats-server permissions."""


def hash_password(password: str) -> str:
    """bcrypt, as nats-server reads it (``$2b$`` becomes ``$2a$``, the prefix it knows)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    return "$2a$" + hashed[4:]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _derived(secret: str, label: str) -> str:
    """A password derived from ``secret`` for ``label`` (a joining host's user: the same join asked
    again, its reply lost, is answered the same grant, and nothing keeps the password)."""
    digest = hmac.new(secret.encode(), label.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class ClusterActor(Actor, Cluster, ClusterJoin, ClusterHosts):
    name = "cluster"

    def __init__(self, bus: Bus, config: Config, *, users_for: UsersFor, join_user: UsersFor) -> None:
        super().__init__(bus)
        self.config = config
        self.store = open_store(config, "cluster", MIGRATIONS)
        self.users_for = users_for
        self.join_user = join_user

    async def on_start(self) -> None:
        await self.store.open()

    async def on_stop(self) -> None:
        await self.store.close()

    # -- the operator's -------------------------------------------------------------------

    async def invite(self, *, name: str, role: Role, ttl: float = INVITATION_TTL) -> Invitation:
        ((user, permissions),) = self.join_user(name, role)
        password = self._invitation_secret(name)
        hashed = await asyncio.to_thread(hash_password, password)
        expires_at = time.time() + ttl
        async with self.store.transaction() as db:
            asked = await db.fetchone(
                "SELECT expires_at FROM invitations WHERE name = ? AND secret_hash = ? AND used_at IS NULL",
                (name, _digest(password)),
            )
            if asked is not None:  # this invite asked again (its reply was lost): the same answer
                urls = await self._nats_urls(db)
                return self._invited(name, role, user, password, asked["expires_at"], urls)
            row = await db.fetchone("SELECT state FROM hosts WHERE name = ?", (name,))
            if row is not None and row["state"] == "joined":
                raise Conflict(f"host {name} has joined the cluster; `aiostack cluster remove {name}` first")
            names = [user, *(member for member, _ in self.users_for(name, role))]
            marks = ", ".join("?" * len(names))
            taken = await db.fetchone(
                f"SELECT user_name, host FROM bus_users WHERE user_name IN ({marks}) AND host != ?",
                (*names, name),
            )
            if taken is not None:
                raise Conflict(
                    f"host {name} would have bus user {taken['user_name']}, which is {taken['host']}'s"
                )
            if row is None:
                await db.execute(
                    "INSERT INTO hosts (name, role, state, created_at) VALUES (?, ?, 'invited', ?)",
                    (name, role, utcnow()),
                )
            else:
                await db.execute(
                    "UPDATE hosts SET role = ?, state = 'invited', address = NULL, joined_at = NULL,"
                    " last_seen = NULL, processes = '{}' WHERE name = ?",
                    (role, name),
                )
            await self._drop_users(db, name)
            await db.execute(
                "INSERT INTO invitations (name, join_user, secret_hash, expires_at) VALUES (?, ?, ?, ?)",
                (name, user, _digest(password), expires_at),
            )
            await db.execute(
                "INSERT INTO bus_users (user_name, host, password_hash, permissions) VALUES (?, ?, ?, ?)",
                (user, name, hashed, json.dumps(permissions)),
            )
            urls = await self._nats_urls(db)
            if not urls:
                raise Conflict("no controller has registered yet: wait for `aiostack up --cluster` to start")
        return self._invited(name, role, user, password, expires_at, urls)

    def _invitation_secret(self, name: str) -> str:
        """The one-time password of an invitation: derived from the request (so the same invite
        asked again gets the same one) and the CA key every controller holds (so nobody else can)."""
        key = (self.config.data_dir / "ca" / "ca.key").read_text()
        return _derived(key, f"invite {name} {current_request_id() or secrets.token_hex(16)}")

    @staticmethod
    def _invited(
        name: str, role: Role, user: str, password: str, expires_at: float, urls: list[str]
    ) -> Invitation:
        return {
            "name": name,
            "role": role,
            "user": user,
            "password": password,
            "expires_at": expires_at,
            "nats_urls": urls,
        }

    async def list_hosts(self) -> list[ClusterHost]:
        rows = await self.store.fetchall("SELECT * FROM hosts ORDER BY name")
        now = time.time()
        return [self._view(row, now) for row in rows]

    async def remove(self, *, name: str) -> ClusterHost:
        async with self.store.transaction() as db:
            if await db.fetchone("SELECT name FROM hosts WHERE name = ?", (name,)) is None:
                raise NotFound(f"no host {name} in the cluster")
            await self._drop_users(db, name)
            await db.execute("UPDATE hosts SET state = 'removed', processes = '{}' WHERE name = ?", (name,))
            row = await db.fetchone("SELECT * FROM hosts WHERE name = ?", (name,))
        return self._view(row, time.time())

    async def register(self, *, name: str, address: str, users: list[BusUser]) -> ClusterHost:
        async with self.store.transaction() as db:
            await self._drop_users(db, name)
            await db.execute(
                "INSERT INTO hosts (name, role, state, address, created_at, joined_at)"
                " VALUES (?, 'controller', 'joined', ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET role = 'controller', state = 'joined', address = excluded.address",
                (name, address, utcnow(), utcnow()),
            )
            await db.executemany(
                "INSERT INTO bus_users (user_name, host, password_hash, permissions) VALUES (?, ?, ?, ?)",
                [(user["user"], name, user["password"], json.dumps(user["permissions"])) for user in users],
            )
            row = await db.fetchone("SELECT * FROM hosts WHERE name = ?", (name,))
        return self._view(row, time.time())

    async def authorization(self) -> list[BusUser]:
        rows = await self.store.fetchall(
            "SELECT bus_users.* FROM bus_users LEFT JOIN invitations"
            " ON invitations.join_user = bus_users.user_name"
            " WHERE invitations.expires_at IS NULL OR invitations.expires_at > ? ORDER BY user_name",
            (time.time(),),
        )
        return [
            {
                "user": row["user_name"],
                "password": row["password_hash"],
                "permissions": json.loads(row["permissions"]),
            }
            for row in rows
        ]

    # -- joining ---------------------------------------------------------------------------

    async def join(self, *, secret: str, address: str, host: str) -> JoinGrant:
        invitation = await self._invitation(self.store, host, secret)
        role: Role = invitation["role"]
        users = self.users_for(host, role)
        passwords = {user: _derived(secret, user) for user, _ in users}
        shared = self._controller_secrets() if role == "controller" else None
        if invitation["used_at"] is None:
            hashes = await asyncio.to_thread(
                lambda: {user: hash_password(p) for user, p in passwords.items()}
            )
            async with self.store.transaction() as db:
                if (await self._invitation(db, host, secret))["used_at"] is None:
                    await db.execute("DELETE FROM bus_users WHERE host = ?", (host,))
                    await db.executemany(
                        "INSERT INTO bus_users (user_name, host, password_hash, permissions)"
                        " VALUES (?, ?, ?, ?)",
                        [(user, host, hashes[user], json.dumps(permissions)) for user, permissions in users],
                    )
                    await db.execute("UPDATE invitations SET used_at = ? WHERE name = ?", (time.time(), host))
                    await db.execute(
                        "UPDATE hosts SET state = 'joined', address = ?, joined_at = ?, last_seen = ?"
                        " WHERE name = ?",
                        (address, utcnow(), time.time(), host),
                    )
        controllers = await self._controllers(self.store)
        urls = [nats_url(row["address"]) for row in controllers]
        routes = [route_url(row["address"]) for row in controllers if row["name"] != host]
        controller: ControllerSecrets | None = {**shared, "routes": routes} if shared else None
        return {
            "name": host,
            "role": role,
            "prefix": self.bus.prefix,
            "nats_urls": urls,
            "users": passwords,
            "controller": controller,
            "authorization": await self.authorization() if controller else [],
        }

    def _controller_secrets(self) -> ControllerSecrets:
        """What this controller's data directory holds that every controller shares."""
        data_dir: Path = self.config.data_dir
        keys = data_dir / "keys" / "token"
        admin = json.loads((data_dir / "credentials" / "admin.json").read_text())
        return {
            "ca_certificate": (data_dir / "ca" / "ca.pem").read_text(),
            "ca_key": (data_dir / "ca" / "ca.key").read_text(),
            "token_keys": {path.name: path.read_text() for path in sorted(keys.iterdir()) if path.is_file()},
            "database": self.config.database or "",
            "admin_password": admin["password"],
            "routes": [],
        }

    @staticmethod
    async def _invitation(db: Db, host: str, secret: str) -> dict[str, Any]:
        """The host's invitation, if ``secret`` is its secret and it has not expired.

        :raises Forbidden: it has not.
        """
        invitation = await db.fetchone(
            "SELECT invitations.*, hosts.role FROM invitations JOIN hosts USING (name) WHERE name = ?",
            (host,),
        )
        if invitation is None or not hmac.compare_digest(invitation["secret_hash"], _digest(secret)):
            raise Forbidden(f"no invitation of host {host} with this secret (replaced, or revoked)")
        if invitation["expires_at"] <= time.time():
            raise Forbidden(f"the invitation of host {host} expired; invite it again")
        return invitation

    # -- liveness --------------------------------------------------------------------------

    async def report(self, *, processes: dict[str, str], host: str) -> Reported:
        now = time.time()
        changed = await self.store.execute(
            "UPDATE hosts SET last_seen = ?, processes = ? WHERE name = ? AND state = 'joined'",
            (now, json.dumps(processes, sort_keys=True), host),
        )
        if changed != 1:
            raise Forbidden(f"host {host} is not a member of the cluster")
        return {"name": host, "last_seen": now}

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    async def _drop_users(db: Db, name: str) -> None:
        await db.execute("DELETE FROM invitations WHERE name = ?", (name,))
        await db.execute("DELETE FROM bus_users WHERE host = ?", (name,))

    @staticmethod
    async def _controllers(db: Db) -> list[dict[str, Any]]:
        return await db.fetchall(
            "SELECT name, address FROM hosts WHERE role = 'controller' AND state = 'joined'"
            " AND address IS NOT NULL ORDER BY name"
        )

    async def _nats_urls(self, db: Db) -> list[str]:
        return [nats_url(row["address"]) for row in await self._controllers(db)]

    @staticmethod
    def _view(row: dict[str, Any], now: float) -> ClusterHost:
        last_seen = row["last_seen"]
        return {
            "name": row["name"],
            "role": row["role"],
            "state": row["state"],
            "address": row["address"],
            "created_at": row["created_at"],
            "joined_at": row["joined_at"],
            "last_seen": last_seen,
            "alive": row["state"] == "joined" and last_seen is not None and now - last_seen < ALIVE_WITHIN,
            "processes": json.loads(row["processes"]),
        }
