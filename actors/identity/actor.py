"""The identity actor (Keystone): identities in its store, tokens sealed with the key repository's keys.

Its API, version history and revocation topic: ``api/identity.py``. The actor owns the
store (``MIGRATIONS``), the key repository and the settings, shared by its servants through
one ``IdentityState``; each servant serves one facet:

* ``tokens.TokenService`` — ``Tokens`` (and ``TokenValidation``): logins, re-scoping,
  validation, revocation, key rotation;
* ``admin.AdminService`` — ``IdentityAdmin``: projects, users, groups, roles, assignments;
* ``appcreds.ApplicationCredentialService`` — ``ApplicationCredentials``.

On first start it makes the roles ``admin``, ``member`` and ``reader`` and the users ``admin``
and ``demo``, each with that role on a project of its name, the admin on the system too
(passwords from ``AIOSTACK_ADMIN_PASSWORD`` and ``AIOSTACK_DEMO_PASSWORD``, else generated and
logged once).
At every start it makes the service user, project and role if missing (``tokens.SERVICE_USER``:
whose tokens the conductor and the nodes hold, ``issue_service_token``).
Every minute it forgets revocations older than any token and login failures past the throttle's
window. With ``token_key_rotation`` it rotates the token keys on a schedule: whenever the primary
key is that old (checked every ``ROTATION_CHECK`` seconds at most; the replicas sharing the key
directory decide under its lock, so one rotates per period), keeping enough keys for every token
that may still be valid (``keys.active_keys_needed``). Login throttling (``throttle.py``) lives
in memory only: nothing an attacker sends is written to disk, and a restart forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass

from actors.identity.admin import AdminService
from actors.identity.appcreds import ApplicationCredentialService
from actors.identity.keys import DEFAULT_TOKEN_TTL, STALE_WINDOW, KeyRepository, max_active_keys_for
from actors.identity.passwords import dummy_hash
from actors.identity.state import IdentityState
from actors.identity.throttle import PasswordChecks, Throttling
from actors.identity.tokens import SERVICE_PROJECT, SERVICE_USER, TokenService
from api.identity import SERVICE_ROLE
from bus import Actor, Bus, Conflict, request_scope
from runtime.config import Config
from runtime.store import open_store

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
        domain_id TEXT NOT NULL DEFAULT 'default', enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL);
    CREATE TABLE users (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
        domain_id TEXT NOT NULL DEFAULT 'default', default_project_id TEXT,
        enabled INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL);
    CREATE TABLE roles (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE assignments (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, project_id, role_id));
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, project_id TEXT,
        issued_at REAL NOT NULL, expires_at REAL NOT NULL);
    CREATE INDEX tokens_expiry ON tokens(expires_at);
    """,
    """
    DROP TABLE tokens;
    ALTER TABLE users ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE roles ADD COLUMN description TEXT NOT NULL DEFAULT '';
    CREATE TABLE user_groups (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
        domain_id TEXT NOT NULL DEFAULT 'default', created_at TEXT NOT NULL);
    CREATE TABLE group_members (
        group_id TEXT NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id));
    CREATE INDEX group_members_user ON group_members(user_id);
    CREATE TABLE group_assignments (
        group_id TEXT NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, project_id, role_id));
    CREATE TABLE login_failures (key TEXT NOT NULL, failed_at REAL NOT NULL);
    CREATE INDEX login_failures_key ON login_failures(key, failed_at);
    CREATE TABLE lockouts (key TEXT PRIMARY KEY, locked_until REAL NOT NULL);
    CREATE TABLE revocations (
        kind TEXT NOT NULL, target TEXT NOT NULL, issued_before REAL NOT NULL,
        expires_at REAL NOT NULL, PRIMARY KEY (kind, target));
    CREATE INDEX revocations_expiry ON revocations(expires_at);
    CREATE TABLE app_creds (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', secret_hash TEXT NOT NULL,
        role_ids TEXT NOT NULL, expires_at REAL, created_at TEXT NOT NULL,
        UNIQUE (user_id, name));
    """,
    """
    DROP TABLE login_failures;
    DROP TABLE lockouts;
    """,
    # roles on the system; the admin user gets the admin role on it, as Keystone's bootstrap gives
    """
    CREATE TABLE system_assignments (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, role_id));
    CREATE TABLE system_group_assignments (
        group_id TEXT NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
        role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, role_id));
    INSERT INTO system_assignments (user_id, role_id)
        SELECT users.id, roles.id FROM users, roles WHERE users.name = 'admin' AND roles.name = 'admin';
    """,
]

# revocations.expires_at: issued_before + the longest token lifetime; past it no token the
# revocation names is alive any more, and the purge drops the row.
# users.password_hash: '' for a user made without a password (it cannot log in with one).

DEFAULT_ROLES = ("admin", "member", "reader")
PURGE_INTERVAL = 60.0
ROTATION_CHECK = 60.0
"""The longest between two looks at the primary key's age, when rotating on a schedule."""


@dataclass(frozen=True, slots=True)
class BootstrapUser:
    """A user created on first start, with a role on a project of the same name (and on the
    system too with ``on_system``)."""

    name: str
    role: str
    password: str
    on_system: bool = False


class IdentityActor(Actor):
    """Keystone: serves ``api/identity.py``'s facets through its three servants."""

    name = "identity"
    max_inflight = 128
    """Logins hold at most ``PasswordChecks``' bounds of these (80 by default: 64 waiting for or
    running a check, 16 in the tarpit): the rest stay free for validation and everything else."""

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        stale_window: float = STALE_WINDOW,
        token_key_rotation: float | None = None,
        max_active_keys: int | None = None,
        throttling: Throttling | None = None,
        checks: PasswordChecks | None = None,
    ) -> None:
        """``token_key_rotation``: seconds between scheduled key rotations (None: only on
        demand, ``rotate_keys``); ``max_active_keys``: the keys kept (default: 3, or what the
        schedule needs; too few for it raises ``ValueError``)."""
        super().__init__(bus)
        keys_kept = max_active_keys_for(token_ttl, stale_window, token_key_rotation, max_active_keys)
        self.token_key_rotation = token_key_rotation
        self.shared = IdentityState(
            store=open_store(config, "identity", MIGRATIONS),
            bus=bus,
            keys=KeyRepository(config.data_dir / "keys" / "token", keys_kept),
            token_ttl=token_ttl,
            stale_window=stale_window,
        )
        self.checks = checks or PasswordChecks()
        self.tokens = TokenService(self.shared, throttling=throttling or Throttling(), checks=self.checks)
        self.admin = AdminService(self.shared)
        self.appcreds = ApplicationCredentialService(self.shared, self.tokens)
        self.serve(self.tokens, self.admin, self.appcreds)

    async def on_start(self) -> None:
        self.shared.dummy_hash = await asyncio.to_thread(dummy_hash)
        await self.shared.keys.setup()
        await self.shared.store.open()
        await self._bootstrap()
        await self._ensure_service_user()
        self.spawn(self._purge_loop(), name="identity-purge")
        if self.token_key_rotation is not None:
            self.spawn(self._rotation_loop(self.token_key_rotation), name="identity-key-rotation")

    async def on_stop(self) -> None:
        await self.shared.store.close()
        self.checks.close()

    async def _bootstrap(self) -> None:
        """Roles, and the admin and demo users and projects, on first start (as the service
        itself: no user context, so the administration handlers allow it)."""
        store = self.shared.store
        if await store.fetchone("SELECT id FROM users LIMIT 1"):
            return
        for role in DEFAULT_ROLES:
            await store.execute(
                "INSERT INTO roles (id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (os.urandom(16).hex(), role),
            )
        for user in (
            BootstrapUser(
                "admin",
                "admin",
                os.environ.get("AIOSTACK_ADMIN_PASSWORD") or secrets.token_urlsafe(12),
                on_system=True,
            ),
            BootstrapUser(
                "demo", "member", os.environ.get("AIOSTACK_DEMO_PASSWORD") or secrets.token_urlsafe(12)
            ),
        ):
            with request_scope():
                project = await self.admin.create_project(name=user.name, description=f"{user.name} project")
                created = await self.admin.create_user(
                    name=user.name, password=user.password, default_project=project["id"]
                )
                await self.admin.grant_role(user=created["id"], project=project["id"], role=user.role)
                if user.on_system:
                    await self.admin.grant_system_role(user=created["id"], role=user.role)
            if not os.environ.get(f"AIOSTACK_{user.name.upper()}_PASSWORD"):
                log.warning("first start: user %r has password %r (shown once)", user.name, user.password)

    async def _ensure_service_user(self) -> None:
        """The service role, project and user, and the role on the project, where missing (as the
        service itself; a replica starting at the same time may make them first)."""
        store = self.shared.store
        for _ in range(2):
            try:
                with request_scope():
                    if not await store.fetchone("SELECT id FROM roles WHERE name = ?", (SERVICE_ROLE,)):
                        await self.admin.create_role(
                            name=SERVICE_ROLE, description="services acting for users"
                        )
                    project = await store.fetchone(
                        "SELECT id FROM projects WHERE name = ?", (SERVICE_PROJECT,)
                    )
                    if project is None:
                        project = await self.admin.create_project(
                            name=SERVICE_PROJECT, description="the services' own project"
                        )
                    user = await store.fetchone("SELECT id FROM users WHERE name = ?", (SERVICE_USER,))
                    if user is None:
                        user = await self.admin.create_user(
                            name=SERVICE_USER,
                            default_project=project["id"],
                            description="the conductor's and nodes' service tokens (no password)",
                        )
                    await self.admin.grant_role(user=user["id"], project=project["id"], role=SERVICE_ROLE)
                return
            except Conflict:
                log.info("another identity replica is making the service user; looking again")

    async def _rotation_loop(self, period: float) -> None:
        """Rotate the token keys whenever the primary key is ``period`` seconds old."""
        while True:
            layout = await self.shared.keys.rotate_if_older(period)
            if layout is not None:
                log.info(
                    "token keys rotated on schedule: primary %d, keys %s", layout["primary"], layout["keys"]
                )
            await asyncio.sleep(min(ROTATION_CHECK, period / 4))

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            await self.tokens.purge(time.time())
