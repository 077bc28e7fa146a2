"""The token actor (Keystone): projects, users, roles, assignments, password login and tokens.

Steps 1-2 of the overview (issue a token) and 4-5 (validate it) happen here.

Handlers (version history: 1 - initial):
* issue(username, password, project_name=None, project_id=None) -> token and its scope
* validate(token) -> {user_id, user_name, project_id, project_name, roles, expires_at, issued_at}
* create_project(name, description=""), list_projects()            admin
* create_user(name, password, default_project=None), list_users()  admin
* grant_role(user, project, role)                                   admin
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from actors.common import caller, new_uuid, sees_all, utcnow
from actors.store import Store, fetchone
from aiostack.config import Config
from bus import Actor, Bus, Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized, handler

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
]

DEFAULT_ROLES = ("admin", "member", "reader")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """scrypt (memory-hard), as ``scrypt$n$r$p$salt$hash`` in base64."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 << 20)
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
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=64 << 20
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class BootstrapUser:
    """A user created on first start, with a role on a project of the same name."""

    name: str
    role: str
    password: str


class TokenActor(Actor):
    name = "token"

    def __init__(self, bus: Bus, config: Config, *, token_ttl: float = 3600.0) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("token"), MIGRATIONS)
        self.token_ttl = token_ttl
        self._dummy_hash = hash_password(secrets.token_hex(8))

    async def on_start(self) -> None:
        await self.store.open()
        await self._bootstrap()
        self.spawn(self._purge_expired_tokens(), name="token-purge")

    async def on_stop(self) -> None:
        await self.store.close()

    async def _bootstrap(self) -> None:
        """Roles, and the admin and demo users and projects, on first start."""
        if await self.store.fetchone("SELECT id FROM users LIMIT 1"):
            return
        for role in DEFAULT_ROLES:
            await self.store.execute(
                "INSERT OR IGNORE INTO roles (id, name) VALUES (?, ?)", (new_uuid(), role)
            )
        for user in (
            BootstrapUser(
                "admin", "admin", os.environ.get("AIOSTACK_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            ),
            BootstrapUser(
                "demo", "member", os.environ.get("AIOSTACK_DEMO_PASSWORD") or secrets.token_urlsafe(12)
            ),
        ):
            project = await self._create_project(user.name, f"{user.name} project")
            created = await self._create_user(user.name, user.password, project["id"])
            await self._grant(created["id"], project["id"], user.role)
            if not os.environ.get(f"AIOSTACK_{user.name.upper()}_PASSWORD"):
                log.warning("first start: user %r has password %r (shown once)", user.name, user.password)

    async def _purge_expired_tokens(self) -> None:
        while True:
            await asyncio.sleep(60)
            await self.store.execute("DELETE FROM tokens WHERE expires_at < ?", (time.time(),))

    # -- login and validation ------------------------------------------------------------

    @handler
    async def issue(
        self,
        username: str,
        password: str,
        project_name: str | None = None,
        project_id: str | None = None,
    ) -> dict[str, Any]:
        """Password login, scoped to a project (by name or id) or to the user's default project.

        :raises Unauthorized: unknown user, wrong password, disabled user, or no role on the project.
        """
        user = await self.store.fetchone("SELECT * FROM users WHERE name = ?", (username,))
        stored = user["password_hash"] if user else self._dummy_hash
        valid = await asyncio.to_thread(check_password, str(password), stored)
        if user is None or not valid or not user["enabled"]:
            raise Unauthorized("The request you have made requires authentication.")
        project = await self._scope_project(user, project_name, project_id)
        roles = await self._roles_of(user["id"], project["id"]) if project else []
        if project is not None and not roles:
            raise Unauthorized(f"User {username} has no role on project {project['name']}.")
        token = secrets.token_urlsafe(32)
        issued = time.time()
        expires = issued + self.token_ttl
        await self.store.execute(
            "INSERT INTO tokens (token_hash, user_id, project_id, issued_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (_token_hash(token), user["id"], project["id"] if project else None, issued, expires),
        )
        return {
            "token": token,
            "issued_at": issued,
            "expires_at": expires,
            "user": {"id": user["id"], "name": user["name"], "domain_id": user["domain_id"]},
            "project": {"id": project["id"], "name": project["name"], "domain_id": project["domain_id"]}
            if project
            else None,
            "roles": roles,
        }

    async def _scope_project(
        self, user: dict[str, Any], project_name: str | None, project_id: str | None
    ) -> dict[str, Any] | None:
        if project_id:
            project = await self.store.fetchone("SELECT * FROM projects WHERE id = ?", (project_id,))
        elif project_name:
            project = await self.store.fetchone("SELECT * FROM projects WHERE name = ?", (project_name,))
        elif user["default_project_id"]:
            project = await self.store.fetchone(
                "SELECT * FROM projects WHERE id = ?", (user["default_project_id"],)
            )
        else:
            return None
        if project is None or not project["enabled"]:
            raise Unauthorized("The requested project does not exist or is disabled.")
        return project

    async def _roles_of(self, user_id: str, project_id: str) -> list[dict[str, str]]:
        return await self.store.fetchall(
            "SELECT roles.id, roles.name FROM assignments JOIN roles ON roles.id = assignments.role_id"
            " WHERE assignments.user_id = ? AND assignments.project_id = ? ORDER BY roles.name",
            (user_id, project_id),
        )

    @handler
    async def validate(self, token: str) -> dict[str, Any]:
        """What a token says: user, project and role names, expiry.

        :raises Unauthorized: unknown or expired token, or its user or project is disabled.
        """
        row = await self.store.fetchone(
            "SELECT tokens.*, users.name AS user_name, users.enabled AS user_enabled,"
            " projects.name AS project_name, projects.enabled AS project_enabled"
            " FROM tokens JOIN users ON users.id = tokens.user_id"
            " LEFT JOIN projects ON projects.id = tokens.project_id WHERE token_hash = ?",
            (_token_hash(str(token)),),
        )
        if row is None or row["expires_at"] <= time.time():
            raise Unauthorized("The token is unknown or has expired.")
        if not row["user_enabled"] or (row["project_id"] and not row["project_enabled"]):
            raise Unauthorized("The token's user or project is disabled.")
        roles = await self._roles_of(row["user_id"], row["project_id"]) if row["project_id"] else []
        return {
            "user_id": row["user_id"],
            "user_name": row["user_name"],
            "project_id": row["project_id"],
            "project_name": row["project_name"],
            "roles": [role["name"] for role in roles],
            "issued_at": row["issued_at"],
            "expires_at": row["expires_at"],
        }

    # -- administration -------------------------------------------------------------------

    def _require_admin(self) -> None:
        if not sees_all(caller()):
            raise Forbidden("only an admin may manage identities")

    @handler
    async def create_project(self, name: str, description: str = "") -> dict[str, Any]:
        self._require_admin()
        return await self._create_project(name, description)

    async def _create_project(self, name: str, description: str) -> dict[str, Any]:
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("project name must be a non-empty string")
        project = {
            "id": new_uuid().replace("-", ""),
            "name": name,
            "description": description,
            "domain_id": "default",
            "enabled": 1,
            "created_at": utcnow(),
        }
        if await self.store.fetchone("SELECT id FROM projects WHERE name = ?", (name,)):
            raise Conflict(f"project {name!r} already exists")
        await self.store.execute(
            "INSERT INTO projects (id, name, description, domain_id, enabled, created_at)"
            " VALUES (:id, :name, :description, :domain_id, :enabled, :created_at)",
            project,
        )
        return project

    @handler
    async def list_projects(self) -> list[dict[str, Any]]:
        self._require_admin()
        return await self.store.fetchall("SELECT * FROM projects ORDER BY name")

    @handler
    async def create_user(
        self, name: str, password: str, default_project: str | None = None
    ) -> dict[str, Any]:
        self._require_admin()
        project_id = None
        if default_project:
            project = await self._find("projects", default_project)
            project_id = project["id"]
        return await self._create_user(name, password, project_id)

    async def _create_user(self, name: str, password: str, default_project_id: str | None) -> dict[str, Any]:
        if not isinstance(name, str) or not name.strip() or not isinstance(password, str) or not password:
            raise InvalidRequest("user name and password must be non-empty strings")
        if await self.store.fetchone("SELECT id FROM users WHERE name = ?", (name,)):
            raise Conflict(f"user {name!r} already exists")
        password_hash = await asyncio.to_thread(hash_password, password)
        user = {
            "id": new_uuid().replace("-", ""),
            "name": name,
            "domain_id": "default",
            "default_project_id": default_project_id,
            "enabled": 1,
            "created_at": utcnow(),
        }
        await self.store.execute(
            "INSERT INTO users (id, name, password_hash, domain_id, default_project_id, enabled, created_at)"
            " VALUES (:id, :name, :password_hash, :domain_id, :default_project_id, :enabled, :created_at)",
            {**user, "password_hash": password_hash},
        )
        return user

    @handler
    async def list_users(self) -> list[dict[str, Any]]:
        self._require_admin()
        return await self.store.fetchall(
            "SELECT id, name, domain_id, default_project_id, enabled, created_at FROM users ORDER BY name"
        )

    @handler
    async def grant_role(self, user: str, project: str, role: str) -> None:
        """Give ``user`` the ``role`` on ``project`` (each by name or id)."""
        self._require_admin()
        user_row = await self._find("users", user)
        project_row = await self._find("projects", project)
        await self._grant(user_row["id"], project_row["id"], role)

    async def _grant(self, user_id: str, project_id: str, role: str) -> None:
        async with self.store.transaction() as db:
            role_row = await fetchone(db, "SELECT id FROM roles WHERE name = ? OR id = ?", (role, role))
            if role_row is None:
                raise NotFound(f"role {role} could not be found")
            await db.execute(
                "INSERT OR IGNORE INTO assignments (user_id, project_id, role_id) VALUES (?, ?, ?)",
                (user_id, project_id, role_row["id"]),
            )

    async def _find(self, table: str, name_or_id: str) -> dict[str, Any]:
        row = await self.store.fetchone(
            f"SELECT * FROM {table} WHERE id = ? OR name = ?", (name_or_id, name_or_id)
        )
        if row is None:
            raise NotFound(f"{table[:-1]} {name_or_id} could not be found")
        return row
