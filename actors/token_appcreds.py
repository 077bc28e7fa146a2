"""The token actor's application credentials (Keystone's ``application_credential`` method).

A user makes one for itself, on the project of the token it calls with, limited to some
or all of its roles there. The secret is returned once and kept only as a scrypt hash. A
credential logs in to a project-scoped token carrying only the credential's roles (those
the user still holds), which expires no later than the credential; deleting the credential
or its expiry ends its tokens too (``validate`` checks the credential still exists).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actors.token_admin import check_name, check_text
from actors.token_passwords import AUTH_FAILED, check_password, hash_password, new_secret
from bus import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized, handler
from runtime.context import caller, require_caller, sees_all
from runtime.stamps import new_uuid, utcnow
from runtime.store import Store, from_json, to_json

if TYPE_CHECKING:
    from actors.token import Checked


def to_epoch(value: Any) -> float | None:
    """``None``, epoch seconds or an ISO 8601 time (UTC when no offset) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"expires_at {value!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise InvalidRequest("expires_at must be an ISO 8601 time, epoch seconds or null")


class ApplicationCredentials:
    """Mixin of ``TokenActor``: create, list, delete and log in with application credentials."""

    store: Store
    _dummy_hash: str

    async def _check(self, token: str) -> Checked:
        raise NotImplementedError  # TokenActor's

    async def _roles_of(self, user_id: str, project_id: str) -> list[dict[str, str]]:
        raise NotImplementedError  # TokenActor's

    async def _issue_token(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError  # TokenActor's

    @handler
    async def create_application_credential(
        self,
        name: str,
        secret: str | None = None,
        expires_at: float | str | None = None,
        roles: list[Any] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """A credential for the calling user on the project of its token; its secret shown once.

        ``roles`` (ids, names or ``{"id"}``/``{"name"}`` maps) defaults to all the caller's
        roles on the project. Returns the credential as ``list_application_credentials``
        shows it, plus ``secret``.

        :raises Unauthorized: no user context, or its token is not valid.
        :raises Forbidden: the token is unscoped or itself from an application credential,
            or a role asked for is not the caller's.
        :raises InvalidRequest: bad name, secret, expiry or roles.
        :raises Conflict: the user has a credential of that name.
        """
        ctx = require_caller()
        if ctx.token:
            checked = await self._check(ctx.token)
            if checked.user["id"] != ctx.user_id:
                raise Forbidden("the context's token belongs to another user")
            if checked.app_cred is not None:
                raise Forbidden("a token from an application credential cannot create credentials")
            user_id, project_id, held = checked.user["id"], checked.payload.project_id, checked.roles
        else:
            user_id, project_id = str(ctx.user_id), ctx.project_id
            held = await self._roles_of(user_id, project_id) if project_id else []
        if project_id is None or not held:
            raise Forbidden("application credentials are made with a project-scoped token")
        check_name(name, "application credential name")
        check_text(description, "description")
        secret = new_secret() if secret is None else check_name(secret, "secret")
        expires = to_epoch(expires_at)
        if expires is not None and expires <= time.time():
            raise InvalidRequest("expires_at must be in the future")
        role_ids = self._pick_roles(roles, held)
        if await self.store.fetchone(
            "SELECT id FROM app_creds WHERE user_id = ? AND name = ?", (user_id, name)
        ):
            raise Conflict(f"application credential {name!r} already exists")
        row = {
            "id": new_uuid().replace("-", ""),
            "user_id": user_id,
            "project_id": project_id,
            "name": name,
            "description": description,
            "secret_hash": await asyncio.to_thread(hash_password, secret),
            "role_ids": to_json(role_ids),
            "expires_at": expires,
            "created_at": utcnow(),
        }
        await self.store.execute(
            "INSERT INTO app_creds (id, user_id, project_id, name, description, secret_hash, role_ids,"
            " expires_at, created_at) VALUES (:id, :user_id, :project_id, :name, :description,"
            " :secret_hash, :role_ids, :expires_at, :created_at)",
            row,
        )
        return {**(await self._show([row]))[0], "secret": secret}

    @staticmethod
    def _pick_roles(wanted: list[Any] | None, held: list[dict[str, str]]) -> list[str]:
        if wanted is None:
            return [role["id"] for role in held]
        if not isinstance(wanted, list) or not wanted:
            raise InvalidRequest("roles must be a non-empty list")
        chosen: list[str] = []
        for item in wanted:
            key = item.get("id") or item.get("name") if isinstance(item, dict) else item
            if not isinstance(key, str):
                raise InvalidRequest("each role must be an id, a name, or a map with one of them")
            match = next((role for role in held if key in (role["id"], role["name"])), None)
            if match is None:
                raise Forbidden(f"the caller does not hold role {key} on the project")
            if match["id"] not in chosen:
                chosen.append(match["id"])
        return chosen

    async def _show(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = {role["id"]: role["name"] for role in await self.store.fetchall("SELECT id, name FROM roles")}
        shown = []
        for row in rows:
            role_ids = [role_id for role_id in from_json(row["role_ids"], []) if role_id in names]
            shown.append(
                {
                    "id": row["id"],
                    "name": row["name"],
                    "description": row["description"],
                    "user_id": row["user_id"],
                    "project_id": row["project_id"],
                    "roles": [{"id": role_id, "name": names[role_id]} for role_id in role_ids],
                    "expires_at": row["expires_at"],
                    "unrestricted": False,
                    "created_at": row["created_at"],
                }
            )
        return shown

    def _check_owner(self, user_id: Any) -> None:
        ctx = caller()
        if not isinstance(user_id, str) or not user_id:
            raise InvalidRequest("user_id must be a non-empty string")
        if not sees_all(ctx) and (ctx is None or ctx.user_id != user_id):
            raise Forbidden("only the user itself or an admin may see its application credentials")

    @handler
    async def list_application_credentials(self, user_id: str) -> list[dict[str, Any]]:
        """The user's credentials (never their secrets), by name.

        :raises Forbidden: the caller is neither that user nor an admin.
        """
        self._check_owner(user_id)
        rows = await self.store.fetchall(
            "SELECT * FROM app_creds WHERE user_id = ? ORDER BY name", (user_id,)
        )
        return await self._show(rows)

    @handler
    async def get_application_credential(self, user_id: str, app_cred_id: str) -> dict[str, Any]:
        """:raises Forbidden: neither that user nor an admin. :raises NotFound: no such credential."""
        self._check_owner(user_id)
        row = await self.store.fetchone(
            "SELECT * FROM app_creds WHERE id = ? AND user_id = ?", (app_cred_id, user_id)
        )
        if row is None:
            raise NotFound(f"Could not find application credential: {app_cred_id}.")
        return (await self._show([row]))[0]

    @handler
    async def delete_application_credential(self, user_id: str, app_cred_id: str) -> None:
        """Delete a credential; its tokens are refused from now on.

        :raises Forbidden: neither that user nor an admin. :raises NotFound: no such credential.
        """
        self._check_owner(user_id)
        removed = await self.store.execute(
            "DELETE FROM app_creds WHERE id = ? AND user_id = ?", (app_cred_id, user_id)
        )
        if not removed:
            raise NotFound(f"Could not find application credential: {app_cred_id}.")

    @handler
    async def issue_with_application_credential(self, app_cred_id: str, secret: str) -> dict[str, Any]:
        """Log in with a credential: a token like ``issue``'s, methods ``["application_credential"]``.

        :raises Unauthorized: unknown, expired or deleted credential, wrong secret, disabled
            user or project, or none of the credential's roles left (one answer for all).
        :raises InvalidRequest: the id or secret is not a string.
        """
        if not isinstance(app_cred_id, str) or not isinstance(secret, str):
            raise InvalidRequest("application credential id and secret must be strings")
        cred = await self.store.fetchone("SELECT * FROM app_creds WHERE id = ?", (app_cred_id,))
        stored = cred["secret_hash"] if cred else self._dummy_hash
        valid = await asyncio.to_thread(check_password, secret, stored)
        now = time.time()
        if cred is None or not valid or (cred["expires_at"] is not None and cred["expires_at"] <= now):
            raise Unauthorized(AUTH_FAILED)
        user = await self.store.fetchone("SELECT * FROM users WHERE id = ?", (cred["user_id"],))
        project = await self.store.fetchone("SELECT * FROM projects WHERE id = ?", (cred["project_id"],))
        if user is None or project is None or not user["enabled"] or not project["enabled"]:
            raise Unauthorized(AUTH_FAILED)
        allowed = set(from_json(cred["role_ids"], []))
        roles = [role for role in await self._roles_of(user["id"], project["id"]) if role["id"] in allowed]
        if not roles:
            raise Unauthorized(AUTH_FAILED)
        return await self._issue_token(
            user, project, roles, ("application_credential",), expires_at=cred["expires_at"], app_cred=cred
        )
