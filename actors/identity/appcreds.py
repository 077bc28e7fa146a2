"""Application credentials (Keystone's ``application_credential`` method) — the
``ApplicationCredentials`` facet of ``api/identity.py``.

A user makes one for itself, on the project of the token it calls with, limited to some
or all of its roles there. The secret is returned once and kept only as an argon2id hash. A
credential logs in (``Tokens.issue_with_application_credential``, in ``tokens.py``) to a
project-scoped token carrying only the credential's roles (those the user still holds),
which expires no later than the credential; deleting the credential or its expiry ends its
tokens too (``validate`` checks the credential still exists).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from actors.identity.passwords import hash_password, new_secret
from actors.identity.state import IdentityState, administers
from actors.identity.tokens import TokenService
from api.identity import (
    ApplicationCredential,
    ApplicationCredentials,
    NewApplicationCredential,
    RoleChoice,
    RoleRef,
)
from bus import Conflict, Forbidden, InvalidRequest, NotFound
from runtime.context import caller, require_caller
from runtime.stamps import new_uuid, utcnow
from runtime.store import from_json, to_json


def to_epoch(value: float | str | None) -> float | None:
    """``None``, epoch seconds or an ISO 8601 time (UTC when no offset) as epoch seconds.

    :raises InvalidRequest: a string that is not an ISO 8601 time.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        return float(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"expires_at {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def pick_roles(wanted: list[str | RoleChoice] | None, held: list[RoleRef]) -> list[str]:
    """The ids of the roles asked for (all those held when none is), each once.

    :raises InvalidRequest: a map with neither an id nor a name.
    :raises Forbidden: a role that is not held.
    """
    if wanted is None:
        return [role["id"] for role in held]
    chosen: list[str] = []
    for item in wanted:
        key = item if isinstance(item, str) else item.get("id") or item.get("name")
        if key is None:
            raise InvalidRequest("each role must be an id, a name, or a map with one of them")
        match = next((role for role in held if key in (role["id"], role["name"])), None)
        if match is None:
            raise Forbidden(f"the caller does not hold role {key} on the project")
        if match["id"] not in chosen:
            chosen.append(match["id"])
    return chosen


class ApplicationCredentialService(ApplicationCredentials):
    """Serves ``ApplicationCredentials`` for the identity actor (checking tokens with ``tokens``)."""

    def __init__(self, state: IdentityState, tokens: TokenService) -> None:
        self.state = state
        self.store = state.store
        self.tokens = tokens

    async def create_application_credential(
        self,
        *,
        name: str,
        secret: str | None = None,
        expires_at: float | str | None = None,
        roles: list[str | RoleChoice] | None = None,
        description: str = "",
    ) -> NewApplicationCredential:
        ctx = require_caller()
        if ctx.token:
            checked = await self.tokens.check(ctx.token)
            if checked.user["id"] != ctx.user_id:
                raise Forbidden("the context's token belongs to another user")
            if checked.app_cred is not None:
                raise Forbidden("a token from an application credential cannot create credentials")
            user_id, project_id, held = checked.user["id"], checked.payload.project_id, checked.roles
        else:
            user_id, project_id = str(ctx.user_id), ctx.project_id
            held = await self.state.roles_of(user_id, project_id) if project_id else []
        if project_id is None or not held:
            raise Forbidden("application credentials are made with a project-scoped token")
        secret = new_secret() if secret is None else secret
        expires = to_epoch(expires_at)
        if expires is not None and expires <= time.time():
            raise InvalidRequest("expires_at must be in the future")
        role_ids = pick_roles(roles, held)
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
        (shown,) = await self._show([row])
        return {**shown, "secret": secret}

    async def _show(self, rows: list[dict[str, Any]]) -> list[ApplicationCredential]:
        names = {role["id"]: role["name"] for role in await self.store.fetchall("SELECT id, name FROM roles")}
        shown: list[ApplicationCredential] = []
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

    def _check_owner(self, user_id: str) -> None:
        ctx = caller()
        if not administers(ctx) and (ctx is None or ctx.user_id != user_id):
            raise Forbidden("only the user itself or an admin may see its application credentials")

    async def list_application_credentials(self, *, user_id: str) -> list[ApplicationCredential]:
        self._check_owner(user_id)
        rows = await self.store.fetchall(
            "SELECT * FROM app_creds WHERE user_id = ? ORDER BY name", (user_id,)
        )
        return await self._show(rows)

    async def get_application_credential(self, *, user_id: str, app_cred_id: str) -> ApplicationCredential:
        self._check_owner(user_id)
        row = await self.store.fetchone(
            "SELECT * FROM app_creds WHERE id = ? AND user_id = ?", (app_cred_id, user_id)
        )
        if row is None:
            raise NotFound(f"Could not find application credential: {app_cred_id}.")
        (shown,) = await self._show([row])
        return shown

    async def delete_application_credential(self, *, user_id: str, app_cred_id: str) -> None:
        self._check_owner(user_id)
        removed = await self.store.execute(
            "DELETE FROM app_creds WHERE id = ? AND user_id = ?", (app_cred_id, user_id)
        )
        if not removed:
            raise NotFound(f"Could not find application credential: {app_cred_id}.")
