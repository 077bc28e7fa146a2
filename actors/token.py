"""The token actor (Keystone): identities, password login, Fernet tokens, revocation.

Steps 1-2 of the overview (issue a token) and 4-5 (validate it) happen here. Tokens are
self-contained: a msgpack payload sealed with Fernet keys from ``<data>/keys/token``
(``actors/token_keys.py``); none is stored, validation decrypts and then checks the user,
project, roles and the revocation list. Administration lives in ``actors/token_admin.py``,
application credentials in ``actors/token_appcreds.py``, hashing in
``actors/token_passwords.py``.

Version history:
* 1 - initial: projects, users, roles, assignments; opaque random tokens stored as sha256.
* 2 - identity in depth: Fernet tokens and key rotation (no token table), re-scoping,
  revocation by token/user/project published on ``<prefix>.auth.revoked``, groups, login
  lockout, application credentials, enable/disable, the full administration API.

Handlers (admin only: Forbidden otherwise; a call with no user context counts as admin):
* issue(username=None, password, project_name=None, project_id=None, user_id=None,
  unscoped=False) -> TOKEN
* issue_with_token(token, project_id=None, project_name=None) -> TOKEN (re-scope)
* issue_with_application_credential(app_cred_id, secret) -> TOKEN
* validate(token) -> {user_id, user_name, domain_id, project_id, project_name, roles: [names],
  audit_id, methods, issued_at, expires_at, app_cred_id}
* revoke_token(token) (its owner or an admin), revoke_user(user_id), revoke_project(project_id)
  (admin) -> {kind, id, issued_before}; revocations() -> [{kind, id, issued_before}]
* rotate_keys() (admin) -> {primary, keys}
* create/list/get/update/delete _project, _user, _group; add_user_to_group,
  remove_user_from_group, check_user_in_group, list_group_users, list_user_groups;
  list_roles, create_role, get_role; grant_role/revoke_role (user), grant_group_role/
  revoke_group_role, list_role_assignments (admin, token_admin.py)
* create/list/get/delete _application_credential(s) (the user itself or an admin)

TOKEN = {token, issued_at, expires_at, user: {id, name, domain_id},
project: {id, name, domain_id} | None, roles: [{id, name}], audit_id, audit_ids, methods,
application_credential: {id, name, restricted} | None}
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.token_admin import IdentityAdmin
from actors.token_appcreds import ApplicationCredentials
from actors.token_keys import MAX_TOKEN_LENGTH, InvalidToken, KeyRepository, TokenPayload, new_audit_id
from actors.token_passwords import AUTH_FAILED, check_password, dummy_hash, hash_password
from bus import Actor, Bus, Forbidden, InvalidRequest, Unauthorized, handler
from runtime.config import Config
from runtime.context import caller, sees_all
from runtime.store import Store, fetchone, from_json

__all__ = ["AUTH_FAILED", "TOKEN_INVALID", "Checked", "TokenActor", "check_password", "hash_password"]

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
]

DEFAULT_ROLES = ("admin", "member", "reader")
REVOCATION_KINDS = ("token", "user", "project")
TOKEN_INVALID = "The token is invalid, expired or revoked."
PURGE_INTERVAL = 60.0

# A token's user, project, application credential and whether a revocation names it.
CHECK_SQL = """
SELECT u.id, u.name, u.domain_id, u.default_project_id, u.enabled,
    p.id AS project_id, p.name AS project_name, p.domain_id AS project_domain_id,
    p.enabled AS project_enabled,
    c.id AS cred_id, c.name AS cred_name, c.role_ids AS cred_role_ids, c.expires_at AS cred_expires_at,
    EXISTS (SELECT 1 FROM revocations WHERE (kind = 'token' AND target = :audit)
        OR (kind = 'user' AND target = :user AND issued_before >= :issued)
        OR (kind = 'project' AND target = :project AND issued_before >= :issued)) AS revoked
FROM users u
LEFT JOIN projects p ON p.id = :project
LEFT JOIN app_creds c ON c.id = :cred AND c.user_id = u.id AND c.project_id = :project
WHERE u.id = :user
"""


@dataclass(frozen=True, slots=True)
class BootstrapUser:
    """A user created on first start, with a role on a project of the same name."""

    name: str
    role: str
    password: str


@dataclass(frozen=True, slots=True)
class Checked:
    """A token that passed every check, with the rows it stands for."""

    payload: TokenPayload
    user: dict[str, Any]
    project: dict[str, Any] | None
    roles: list[dict[str, str]]
    app_cred: dict[str, Any] | None


class TokenActor(IdentityAdmin, ApplicationCredentials, Actor):
    """Keystone: identities in its store, tokens sealed with the key repository's keys."""

    name = "token"

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        token_ttl: float = 3600.0,
        max_active_keys: int = 3,
        lockout_failures: int = 5,
        lockout_window: float = 300.0,
        lockout_duration: float = 300.0,
    ) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("token"), MIGRATIONS)
        self.keys = KeyRepository(config.data_dir / "keys" / "token", max_active_keys)
        self.token_ttl = token_ttl
        self.lockout_failures = lockout_failures
        self.lockout_window = lockout_window
        self.lockout_duration = lockout_duration
        self._dummy_hash = ""

    async def on_start(self) -> None:
        self._dummy_hash = await asyncio.to_thread(dummy_hash)
        await self.keys.setup()
        await self.store.open()
        await self._bootstrap()
        self.spawn(self._purge_loop(), name="token-purge")

    async def on_stop(self) -> None:
        await self.store.close()

    async def _bootstrap(self) -> None:
        """Roles, and the admin and demo users and projects, on first start."""
        if await self.store.fetchone("SELECT id FROM users LIMIT 1"):
            return
        for role in DEFAULT_ROLES:
            await self.store.execute(
                "INSERT OR IGNORE INTO roles (id, name) VALUES (?, ?)", (os.urandom(16).hex(), role)
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

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            await self._purge(time.time())

    async def _purge(self, now: float) -> None:
        """Drop revocations older than any token, old login failures and ended lockouts."""
        await self.store.execute("DELETE FROM revocations WHERE expires_at < ?", (now,))
        await self.store.execute(
            "DELETE FROM login_failures WHERE failed_at < ?", (now - self.lockout_window,)
        )
        await self.store.execute("DELETE FROM lockouts WHERE locked_until < ?", (now,))

    # -- password login and lockout -------------------------------------------------------

    @handler
    async def issue(
        self,
        username: str | None = None,
        password: str = "",
        project_name: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        unscoped: bool = False,
    ) -> dict[str, Any]:
        """Password login (user by name or id), scoped to a project by name or id, else to the
        user's default project (unscoped without one, or with ``unscoped``).

        :raises Unauthorized: unknown user, wrong password, locked or disabled user, unknown or
            disabled project, or no role on it: one answer, one scrypt, for all of them.
        :raises InvalidRequest: no user named, or the password is not a string.
        """
        user = await self._authenticate(username, user_id, password)
        project = None if unscoped else await self._scope_project(user, project_name, project_id)
        roles = await self._roles_of(user["id"], project["id"]) if project else []
        if project is not None and not roles:
            raise Unauthorized(AUTH_FAILED)
        return await self._issue_token(user, project, roles, ("password",))

    async def _authenticate(self, username: Any, user_id: Any, password: Any) -> dict[str, Any]:
        """The user whose password this is. Every path runs one scrypt and the same writes."""
        if not isinstance(password, str):
            raise InvalidRequest("password must be a string")
        if isinstance(user_id, str) and user_id:
            user = await self.store.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
            key = user["id"] if user else f"id:{user_id}"
        elif isinstance(username, str) and username:
            user = await self.store.fetchone("SELECT * FROM users WHERE name = ?", (username,))
            key = user["id"] if user else f"name:{username}"
        else:
            raise InvalidRequest("a user name or id is required")
        now = time.time()
        state = await self.store.fetchone(
            "SELECT EXISTS (SELECT 1 FROM lockouts WHERE key = :key AND locked_until > :now) AS locked,"
            " EXISTS (SELECT 1 FROM login_failures WHERE key = :key) AS failed",
            {"key": key, "now": now},
        )
        assert state is not None
        stored = user["password_hash"] if user and user["password_hash"] else self._dummy_hash
        valid = await asyncio.to_thread(check_password, password, stored)
        if user is None or not valid or state["locked"] or not user["enabled"] or not user["password_hash"]:
            await self._record_failure(key, now)
            raise Unauthorized(AUTH_FAILED)
        if state["failed"]:
            await self.store.execute("DELETE FROM login_failures WHERE key = ?", (key,))
        return user

    async def _record_failure(self, key: str, now: float) -> None:
        """Count a failed login; ``lockout_failures`` within ``lockout_window`` lock the key."""
        async with self.store.transaction() as db:
            await db.execute("INSERT INTO login_failures (key, failed_at) VALUES (?, ?)", (key, now))
            counted = await fetchone(
                db,
                "SELECT COUNT(*) AS failures, (SELECT MAX(locked_until) FROM lockouts WHERE key = :key)"
                " AS locked_until FROM login_failures WHERE key = :key AND failed_at > :since",
                {"key": key, "since": now - self.lockout_window},
            )
            assert counted is not None
            if counted["failures"] >= self.lockout_failures and (counted["locked_until"] or 0) <= now:
                await db.execute(
                    "INSERT INTO lockouts (key, locked_until) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET locked_until = excluded.locked_until",
                    (key, now + self.lockout_duration),
                )
                await db.execute("DELETE FROM login_failures WHERE key = ?", (key,))
                log.warning(
                    "login: %r locked for %.1f s after %d failures",
                    key,
                    self.lockout_duration,
                    counted["failures"],
                )

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
            raise Unauthorized(AUTH_FAILED)
        return project

    async def _roles_of(self, user_id: str, project_id: str) -> list[dict[str, str]]:
        """The user's roles on the project: its own and its groups', each ``{id, name}``."""
        return await self.store.fetchall(
            "SELECT id, name FROM roles WHERE id IN ("
            " SELECT role_id FROM assignments WHERE user_id = :user AND project_id = :project"
            " UNION SELECT a.role_id FROM group_assignments a"
            " JOIN group_members m ON m.group_id = a.group_id"
            " WHERE m.user_id = :user AND a.project_id = :project) ORDER BY name",
            {"user": user_id, "project": project_id},
        )

    # -- tokens -----------------------------------------------------------------------------

    async def _issue_token(
        self,
        user: dict[str, Any],
        project: dict[str, Any] | None,
        roles: list[dict[str, str]],
        methods: Sequence[str],
        *,
        parent_audit_ids: Sequence[str] = (),
        expires_at: float | None = None,
        app_cred: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Seal a new token with the primary key (re-read if another replica rotated)."""
        await self.keys.refresh()
        now = time.time()
        expires = now + self.token_ttl if expires_at is None else min(expires_at, now + self.token_ttl)
        audit_ids = (new_audit_id(), *parent_audit_ids[-1:])
        payload = TokenPayload(
            user["id"],
            tuple(methods),
            project["id"] if project else None,
            audit_ids,
            now,
            expires,
            app_cred["id"] if app_cred else None,
        )
        return {
            "token": self.keys.encrypt(payload.pack()),
            "issued_at": now,
            "expires_at": expires,
            "user": {"id": user["id"], "name": user["name"], "domain_id": user["domain_id"]},
            "project": {"id": project["id"], "name": project["name"], "domain_id": project["domain_id"]}
            if project
            else None,
            "roles": [{"id": role["id"], "name": role["name"]} for role in roles],
            "audit_id": audit_ids[0],
            "audit_ids": list(audit_ids),
            "methods": list(methods),
            "application_credential": {"id": app_cred["id"], "name": app_cred["name"], "restricted": True}
            if app_cred
            else None,
        }

    @handler
    async def issue_with_token(
        self, token: str, project_id: str | None = None, project_name: str | None = None
    ) -> dict[str, Any]:
        """Re-scope: a new token for the same user on the project given (else the token's own
        scope), expiring no later than the old one, its audit chain naming the old one's.

        :raises Unauthorized: the token is not valid, or the project is unknown, disabled or
            the user has no role on it.
        :raises Forbidden: the token comes from an application credential.
        """
        checked = await self._check(token)
        if checked.app_cred is not None:
            raise Forbidden("a token from an application credential cannot be re-scoped")
        if project_id or project_name:
            project = await self._scope_project(checked.user, project_name, project_id)
        else:
            project = checked.project
        roles = await self._roles_of(checked.user["id"], project["id"]) if project else []
        if project is not None and not roles:
            raise Unauthorized(AUTH_FAILED)
        methods = ("token", *(m for m in checked.payload.methods if m != "token"))
        return await self._issue_token(
            checked.user,
            project,
            roles,
            methods,
            parent_audit_ids=checked.payload.audit_ids,
            expires_at=checked.payload.expires_at,
        )

    @handler
    async def validate(self, token: str) -> dict[str, Any]:
        """What a valid token says, with the user's current roles.

        :raises Unauthorized: malformed or undecryptable token, expired, revoked, its user or
            project disabled or gone, its application credential gone, or no role left.
        """
        checked = await self._check(token)
        payload, user, project = checked.payload, checked.user, checked.project
        return {
            "user_id": user["id"],
            "user_name": user["name"],
            "domain_id": user["domain_id"],
            "project_id": project["id"] if project else None,
            "project_name": project["name"] if project else None,
            "roles": [role["name"] for role in checked.roles],
            "audit_id": payload.audit_id,
            "methods": list(payload.methods),
            "issued_at": payload.issued_at,
            "expires_at": payload.expires_at,
            "app_cred_id": payload.app_cred_id,
        }

    async def _decode(self, token: Any) -> TokenPayload:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise _refused("not a token string")
        try:
            data = self.keys.decrypt(token)
        except InvalidToken:
            if not await self.keys.refresh():
                raise _refused("no active key opens it") from None
            try:
                data = self.keys.decrypt(token)
            except InvalidToken:
                raise _refused("no active key opens it") from None
        try:
            return TokenPayload.unpack(data)
        except ValueError as exc:
            raise _refused(str(exc)) from None

    async def _check(self, token: Any) -> Checked:
        """Decrypt and check a token against expiry, revocations, users, projects and roles
        (two statements: everything but the roles in one)."""
        payload = await self._decode(token)
        if payload.expires_at <= time.time():
            raise _refused("expired")
        row = await self.store.fetchone(
            CHECK_SQL,
            {
                "user": payload.user_id,
                "project": payload.project_id,
                "cred": payload.app_cred_id,
                "audit": payload.audit_id,
                "issued": payload.issued_at,
            },
        )
        if row is not None and row["revoked"]:
            raise _refused("revoked")
        if row is None or not row["enabled"]:
            raise _refused("user gone or disabled")
        user = {key: row[key] for key in ("id", "name", "domain_id", "default_project_id", "enabled")}
        project = None
        roles: list[dict[str, str]] = []
        if payload.project_id is not None:
            if row["project_id"] is None or not row["project_enabled"]:
                raise _refused("project gone or disabled")
            project = {
                "id": row["project_id"],
                "name": row["project_name"],
                "domain_id": row["project_domain_id"],
                "enabled": True,
            }
            roles = await self._roles_of(user["id"], project["id"])
        app_cred = None
        if payload.app_cred_id is not None:
            expires = row["cred_expires_at"]
            if row["cred_id"] is None or (expires is not None and expires <= time.time()):
                raise _refused("application credential gone or expired")
            app_cred = {"id": row["cred_id"], "name": row["cred_name"], "expires_at": expires}
            allowed = set(from_json(row["cred_role_ids"], []))
            roles = [role for role in roles if role["id"] in allowed]
        if project is not None and not roles:
            raise _refused("no role left on the project")
        return Checked(payload, user, project, roles, app_cred)

    # -- revocation -------------------------------------------------------------------------

    async def _revoke(self, kind: str, target: str) -> dict[str, Any]:
        """Refuse the tokens ``kind`` ``target`` names issued until now; store it and publish it."""
        now = time.time()
        await self.store.execute(
            "INSERT INTO revocations (kind, target, issued_before, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, target) DO UPDATE SET issued_before = excluded.issued_before,"
            " expires_at = excluded.expires_at",
            (kind, target, now, now + self.token_ttl),
        )
        event = {"kind": kind, "id": target, "issued_before": now}
        await self.bus.publish("auth.revoked", event)
        log.info("revoked %s %s (tokens issued before %.6f)", kind, target, now)
        return event

    @handler
    async def revoke_token(self, token: str) -> dict[str, Any]:
        """Revoke one token (its audit id); its owner or an admin may.

        :raises Unauthorized: the token is not valid (nothing left to revoke).
        :raises Forbidden: the caller is neither its owner nor an admin.
        """
        checked = await self._check(token)
        ctx = caller()
        if not sees_all(ctx) and (ctx is None or ctx.user_id != checked.user["id"]):
            raise Forbidden("only the token's owner or an admin may revoke it")
        return await self._revoke("token", checked.payload.audit_id)

    @handler
    async def revoke_user(self, user_id: str) -> dict[str, Any]:
        """Revoke every token the user has so far.

        :raises Forbidden: not an admin. :raises NotFound: no such user.
        """
        self._require_admin()
        return await self._revoke("user", (await self._find("users", user_id, "id"))["id"])

    @handler
    async def revoke_project(self, project_id: str) -> dict[str, Any]:
        """Revoke every token scoped to the project so far.

        :raises Forbidden: not an admin. :raises NotFound: no such project.
        """
        self._require_admin()
        return await self._revoke("project", (await self._find("projects", project_id, "id"))["id"])

    @handler
    async def revocations(self) -> list[dict[str, Any]]:
        """The revocations still in force (younger than the longest token lifetime), oldest
        first; any caller may ask (validation caches warm up with it). Raises nothing of its own.
        """
        rows = await self.store.fetchall(
            "SELECT kind, target AS id, issued_before FROM revocations WHERE expires_at >= ?"
            " ORDER BY issued_before",
            (time.time(),),
        )
        return rows

    # -- keys ---------------------------------------------------------------------------------

    @handler
    async def rotate_keys(self) -> dict[str, Any]:
        """Promote the staged key to primary, stage a new one, keep at most ``max_active_keys``.

        Tokens sealed with a key still in the repository stay valid until they expire.

        :raises Forbidden: not an admin.
        """
        self._require_admin()
        return await self.keys.rotate()


def _refused(reason: str) -> Unauthorized:
    log.info("token refused: %s", reason)
    return Unauthorized(TOKEN_INVALID)
