"""Tokens (Keystone's ``/auth/tokens``): throttled logins, re-scoping, validation, revocation,
key rotation, a user's own password change — the ``Tokens`` facet of ``api/identity.py``.

A token is scoped to a project (its roles there), to the system (the user's roles on the system:
``validate`` names them ``system:<name>``, ``runtime.policy.system_role``, which only identity's
administration policy accepts), or to nothing (no roles).

Steps 1-2 of the overview (issue a token) and 4-5 (validate it) happen here. Tokens are
self-contained: a msgpack payload sealed with Fernet keys from ``<data>/keys/token``
(``keys.py``); none is stored, validation decrypts and then checks the user, project, roles
and the revocation list (``CHECK_SQL``, and one statement for the roles).

A password (or application credential) login that is checked runs exactly one password hash check whatever
fails (unknown user, wrong password, disabled...), and every failure gets the same answer
(``AUTH_FAILED``): no hint, not even in the timing. Failures are throttled by source and by
(account, source), never locked out, and the checks run on a bounded pool (``throttle.py``):
a throttled source is refused (``LoginThrottled``) before any lookup or hash check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.identity.keys import MAX_TOKEN_LENGTH, InvalidToken, TokenPayload, new_audit_id
from actors.identity.passwords import AUTH_FAILED, check_password, hash_password, needs_rehash
from actors.identity.state import IdentityState, administers
from actors.identity.throttle import LoginThrottle, PasswordChecks, Throttling, source_key
from api.identity import (
    SERVICE_ROLE,
    KeyLayout,
    Revocation,
    RoleRef,
    ServiceToken,
    ServiceTokens,
    Token,
    TokenInfo,
    Tokens,
)
from bus import Forbidden, InvalidRequest, Unauthorized
from runtime.context import caller
from runtime.policy import system_role
from runtime.store import from_json

log = logging.getLogger(__name__)

SERVICE_USER = "aiostack-service"
SERVICE_PROJECT = "service"
"""The service user (no password: it never logs in) and its project (Keystone's ``service``
project), with ``SERVICE_ROLE`` on it: the identity the conductor and the nodes hold tokens of
(``issue_service_token``), made at every start of the identity actor if missing."""

TOKEN_INVALID = "The token is invalid, expired or revoked."

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
class Checked:
    """A token that passed every check, with the rows it stands for."""

    payload: TokenPayload
    user: dict[str, Any]
    project: dict[str, Any] | None
    roles: list[RoleRef]
    app_cred: dict[str, Any] | None


class TokenService(Tokens, ServiceTokens):
    """Serves ``Tokens`` (and so ``TokenValidation``) and ``ServiceTokens`` for the identity actor."""

    def __init__(self, state: IdentityState, *, throttling: Throttling, checks: PasswordChecks) -> None:
        self.state = state
        self.store = state.store
        self.throttle = LoginThrottle(throttling)
        self.checks = checks

    async def purge(self, now: float) -> None:
        """Drop revocations older than any token, and failures older than the throttle's window."""
        await self.store.execute("DELETE FROM revocations WHERE expires_at < ?", (now,))
        self.throttle.purge()

    # -- password login -----------------------------------------------------------------------

    async def issue(
        self,
        *,
        username: str | None = None,
        password: str = "",
        project_name: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        unscoped: bool = False,
        system: bool = False,
        source: str | None = None,
    ) -> Token:
        _one_scope(system, project_name, project_id, unscoped)
        user = await self._authenticate(username, user_id, password, source_key(source))
        if system:
            return await self.seal(user, None, await self._system_roles(user), ("password",), system=True)
        project = None if unscoped else await self._scope_project(user, project_name, project_id)
        roles = await self.state.roles_of(user["id"], project["id"]) if project else []
        if project is not None and not roles:
            raise Unauthorized(AUTH_FAILED)
        return await self.seal(user, project, roles, ("password",))

    async def _system_roles(self, user: dict[str, Any]) -> list[RoleRef]:
        """The user's roles on the system. :raises Unauthorized: it has none."""
        roles = await self.state.system_roles_of(user["id"])
        if not roles:
            raise Unauthorized(AUTH_FAILED)
        return roles

    async def _authenticate(
        self, username: str | None, user_id: str | None, password: str, source: str
    ) -> dict[str, Any]:
        """The user whose password this is. Every path that checks runs one hash check.

        The account counted is what the login names (``id:...`` or ``name:...``), found or not.

        :raises InvalidRequest: neither a user name nor a user id.
        :raises LoginThrottled: the source is refused (no lookup, no hash check), or has
            ``per_source`` logins in flight.
        :raises Overloaded: too many logins wait for a check.
        :raises Unauthorized: anything else that fails.
        """
        if user_id:
            account, found = f"id:{user_id}", ("SELECT * FROM users WHERE id = ?", (user_id,))
        elif username:
            account, found = f"name:{username}", ("SELECT * FROM users WHERE name = ?", (username,))
        else:
            raise InvalidRequest("a user name or id is required")
        self.throttle.check(account, source)
        async with self.checks.admitted(source):
            user = await self.store.fetchone(*found)
            stored = user["password_hash"] if user and user["password_hash"] else self.state.dummy_hash
            valid = await self.checks.run(check_password, password, stored)
            if user is None or not valid or not user["enabled"] or not user["password_hash"]:
                await self.checks.tarpit.hold(self.throttle.failed(account, source))
                raise Unauthorized(AUTH_FAILED)
            self.throttle.succeeded(account, source)
        if needs_rehash(stored):
            await self._store_anew("users", "password_hash", user["id"], stored, password)
        return user

    async def _store_anew(self, table: str, column: str, row_id: str, stored: str, secret: str) -> None:
        """Replace a hash an earlier version made (``needs_rehash``) with today's, unless it changed
        meanwhile (a password change wins)."""
        rehashed = await asyncio.to_thread(hash_password, secret)
        await self.store.execute(
            f"UPDATE {table} SET {column} = ? WHERE id = ? AND {column} = ?", (rehashed, row_id, stored)
        )
        log.info("%s %s: its hash upgraded to argon2id", table.removesuffix("s"), row_id)

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

    # -- other logins -----------------------------------------------------------------------

    async def issue_with_token(
        self,
        *,
        token: str,
        project_id: str | None = None,
        project_name: str | None = None,
        system: bool = False,
    ) -> Token:
        _one_scope(system, project_name, project_id)
        checked = await self.check(token)
        if checked.app_cred is not None:
            raise Forbidden("a token from an application credential cannot be re-scoped")
        on_system = system or (checked.payload.system and not (project_id or project_name))
        if on_system:
            project, roles = None, await self._system_roles(checked.user)
        else:
            asked = project_id or project_name
            project = (
                await self._scope_project(checked.user, project_name, project_id)
                if asked
                else checked.project
            )
            roles = await self.state.roles_of(checked.user["id"], project["id"]) if project else []
            if project is not None and not roles:
                raise Unauthorized(AUTH_FAILED)
        methods = ("token", *(m for m in checked.payload.methods if m != "token"))
        return await self.seal(
            checked.user,
            project,
            roles,
            methods,
            parent_audit_ids=checked.payload.audit_ids,
            expires_at=checked.payload.expires_at,
            system=on_system,
        )

    async def issue_with_application_credential(
        self, *, app_cred_id: str, secret: str, source: str | None = None
    ) -> Token:
        account, source = f"cred:{app_cred_id}", source_key(source)
        self.throttle.check(account, source)
        async with self.checks.admitted(source):
            cred = await self.store.fetchone("SELECT * FROM app_creds WHERE id = ?", (app_cred_id,))
            stored = cred["secret_hash"] if cred else self.state.dummy_hash
            valid = await self.checks.run(check_password, secret, stored)
            now = time.time()
            if cred is None or not valid or (cred["expires_at"] is not None and cred["expires_at"] <= now):
                await self.checks.tarpit.hold(self.throttle.failed(account, source))
                raise Unauthorized(AUTH_FAILED)
            self.throttle.succeeded(account, source)
        if needs_rehash(stored):
            await self._store_anew("app_creds", "secret_hash", cred["id"], stored, secret)
        user = await self.store.fetchone("SELECT * FROM users WHERE id = ?", (cred["user_id"],))
        project = await self.store.fetchone("SELECT * FROM projects WHERE id = ?", (cred["project_id"],))
        if user is None or project is None or not user["enabled"] or not project["enabled"]:
            raise Unauthorized(AUTH_FAILED)
        allowed = set(from_json(cred["role_ids"], []))
        held = await self.state.roles_of(user["id"], project["id"])
        roles = [role for role in held if role["id"] in allowed]
        if not roles:
            raise Unauthorized(AUTH_FAILED)
        return await self.seal(
            user, project, roles, ("application_credential",), expires_at=cred["expires_at"], app_cred=cred
        )

    # -- tokens -----------------------------------------------------------------------------

    async def seal(
        self,
        user: dict[str, Any],
        project: dict[str, Any] | None,
        roles: list[RoleRef],
        methods: Sequence[str],
        *,
        parent_audit_ids: Sequence[str] = (),
        expires_at: float | None = None,
        app_cred: dict[str, Any] | None = None,
        system: bool = False,
    ) -> Token:
        """A new token, sealed with the primary key (re-read if another replica rotated); on the
        system with ``system`` (then ``project`` is None and ``roles`` are those on the system)."""
        keys = self.state.keys
        await keys.refresh()
        now = time.time()
        ttl = self.state.token_ttl
        expires = now + ttl if expires_at is None else min(expires_at, now + ttl)
        audit_ids = (new_audit_id(), *parent_audit_ids[-1:])
        payload = TokenPayload(
            user["id"],
            tuple(methods),
            project["id"] if project else None,
            audit_ids,
            now,
            expires,
            app_cred["id"] if app_cred else None,
            system,
        )
        return {
            "token": keys.encrypt(payload.pack()),
            "issued_at": now,
            "expires_at": expires,
            "user": {"id": user["id"], "name": user["name"], "domain_id": user["domain_id"]},
            "project": {"id": project["id"], "name": project["name"], "domain_id": project["domain_id"]}
            if project
            else None,
            "system": system,
            "roles": [{"id": role["id"], "name": role["name"]} for role in roles],
            "audit_id": audit_ids[0],
            "audit_ids": list(audit_ids),
            "methods": list(methods),
            "application_credential": {"id": app_cred["id"], "name": app_cred["name"], "restricted": True}
            if app_cred
            else None,
        }

    async def validate(self, *, token: str, service_token: str | None = None) -> TokenInfo:
        if service_token is not None:
            service = await self.check(service_token)
            if SERVICE_ROLE not in {role["name"] for role in service.roles}:
                raise _refused("the service token is no service's")
        checked = await self.check(token, allow_expired=service_token is not None)
        payload, user, project = checked.payload, checked.user, checked.project
        roles = [role["name"] for role in checked.roles]
        return {
            "user_id": user["id"],
            "user_name": user["name"],
            "domain_id": user["domain_id"],
            "project_id": project["id"] if project else None,
            "project_name": project["name"] if project else None,
            "roles": [system_role(name) for name in roles] if payload.system else roles,
            "audit_id": payload.audit_id,
            "methods": list(payload.methods),
            "issued_at": payload.issued_at,
            "expires_at": payload.expires_at,
            "app_cred_id": payload.app_cred_id,
        }

    async def _decode(self, token: str) -> TokenPayload:
        keys = self.state.keys
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise _refused("empty or too long")
        try:
            data = keys.decrypt(token)
        except InvalidToken:
            if not await keys.refresh():
                raise _refused("no active key opens it") from None
            try:
                data = keys.decrypt(token)
            except InvalidToken:
                raise _refused("no active key opens it") from None
        try:
            return TokenPayload.unpack(data)
        except ValueError as exc:
            raise _refused(str(exc)) from None

    async def check(self, token: str, *, allow_expired: bool = False) -> Checked:
        """Decrypt and check a token against expiry (with ``allow_expired``: expired no longer
        than the stale window ago), revocations, users, projects and roles (two statements:
        everything but the roles in one).

        :raises Unauthorized: any check fails (``TOKEN_INVALID``; the log says which).
        """
        payload = await self._decode(token)
        now = time.time()
        if payload.expires_at <= now and not (
            allow_expired and payload.expires_at + self.state.stale_window > now
        ):
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
        roles: list[RoleRef] = []
        if payload.project_id is not None:
            if row["project_id"] is None or not row["project_enabled"]:
                raise _refused("project gone or disabled")
            project = {
                "id": row["project_id"],
                "name": row["project_name"],
                "domain_id": row["project_domain_id"],
                "enabled": True,
            }
            roles = await self.state.roles_of(user["id"], project["id"])
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
        if payload.system:
            roles = await self.state.system_roles_of(user["id"])
            if not roles:
                raise _refused("no role left on the system")
        return Checked(payload, user, project, roles, app_cred)

    # -- revocation -------------------------------------------------------------------------

    async def revoke_token(self, *, token: str) -> Revocation:
        checked = await self.check(token)
        ctx = caller()
        if not administers(ctx) and (ctx is None or ctx.user_id != checked.user["id"]):
            raise Forbidden("only the token's owner or an admin may revoke it")
        return await self.state.revoke("token", checked.payload.audit_id)

    async def change_password(
        self, *, user_id: str, original_password: str, password: str, source: str | None = None
    ) -> None:
        user = await self._authenticate(None, user_id, original_password, source_key(source))
        await self.store.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?",
            (await asyncio.to_thread(hash_password, password), user["id"]),
        )
        await self.state.revoke("user", user["id"])
        log.info("user %s changed its password", user["id"])

    async def revoke_user(self, *, user_id: str) -> Revocation:
        self.state.require_admin()
        return await self.state.revoke("user", (await self.state.find("users", user_id, "id"))["id"])

    async def revoke_project(self, *, project_id: str) -> Revocation:
        self.state.require_admin()
        return await self.state.revoke("project", (await self.state.find("projects", project_id, "id"))["id"])

    async def revocations(self) -> list[Revocation]:
        return await self.store.fetchall(
            "SELECT kind, target AS id, issued_before FROM revocations WHERE expires_at >= ?"
            " ORDER BY issued_before",
            (time.time(),),
            row=Revocation,
        )

    async def issue_service_token(self) -> ServiceToken:
        if caller() is not None:
            raise Forbidden("only a service may ask for a service token")
        user = await self.state.find("users", SERVICE_USER)
        project = await self.state.find("projects", SERVICE_PROJECT)
        roles = await self.state.roles_of(user["id"], project["id"])
        if not user["enabled"] or not project["enabled"] or SERVICE_ROLE not in {r["name"] for r in roles}:
            raise Unauthorized("the service user is disabled or no longer has the service role")
        token = await self.seal(user, project, roles, ("service",))
        log.info("service token issued (audit id %s)", token["audit_id"])
        return {"token": token["token"], "expires_at": token["expires_at"]}

    # -- keys ---------------------------------------------------------------------------------

    async def rotate_keys(self) -> KeyLayout:
        self.state.require_admin()
        return await self.state.keys.rotate()


def _one_scope(
    system: bool, project_name: str | None, project_id: str | None, unscoped: bool = False
) -> None:
    """:raises InvalidRequest: the system and a project (or no scope) both asked for."""
    if system and (project_name or project_id or unscoped):
        raise InvalidRequest("a token is scoped to a project, to the system or to nothing: one of them")


def _refused(reason: str) -> Unauthorized:
    log.info("token refused: %s", reason)
    return Unauthorized(TOKEN_INVALID)
