"""What the identity actor's servants share: its store, bus, token keys and settings, and the few
operations more than one of them needs (find a row by id or name, a user's roles on a project or
on the system, revoke tokens, require an admin)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.identity.keys import STALE_WINDOW, KeyRepository
from api.identity import REVOKED, Revocation, RevocationKind, RoleRef
from bus import Bus, Context, Forbidden, NotFound
from runtime.context import caller, sees_all
from runtime.policy import allowed
from runtime.store import Store

log = logging.getLogger(__name__)

# what ``find`` calls a table's rows in its NotFound message
_WHAT = {"projects": "project", "users": "user", "user_groups": "group", "roles": "role"}


def administers(ctx: Context | None) -> bool:
    """Whether ``ctx`` may administer identities: a service-internal call, or a user with the
    admin role on its token's project or on the system."""
    return sees_all(ctx) or (ctx is not None and allowed("identity:admin", ctx))


def reads_all(ctx: Context | None) -> bool:
    """Whether ``ctx`` may read every identity: one that administers them, or a user with any
    role on the system (Keystone's system reader)."""
    return sees_all(ctx) or (ctx is not None and allowed("identity:admin_read", ctx))


@dataclass(slots=True)
class IdentityState:
    """One per actor: every servant holds the same one."""

    store: Store
    bus: Bus
    keys: KeyRepository
    token_ttl: float
    """The longest a token lives; a revocation is kept that long (and the stale window longer)."""
    stale_window: float = STALE_WINDOW
    """How long after its expiry a token a service token vouches for is still valid
    (``validate(service_token=...)``; Keystone's ``allow_expired_window``, 2 days)."""
    dummy_hash: str = ""
    """A password hash nobody knows (set at start): what unknown users are checked against."""

    def require_admin(self) -> None:
        """:raises Forbidden: the caller is a user without the admin role (on its token's project
        or on the system)."""
        if not administers(caller()):
            raise Forbidden("only an admin may manage identities")

    def require_reader(self) -> None:
        """:raises Forbidden: the caller is a user neither admin nor with a role on the system."""
        if not reads_all(caller()):
            raise Forbidden("only an admin or a reader on the system may see identities")

    async def find(self, table: str, name_or_id: str, columns: str = "*") -> dict[str, Any]:
        """The row of ``table`` with that id (first) or name.

        :raises NotFound: none.
        """
        row = await self.store.fetchone(
            f"SELECT {columns} FROM {table} WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        )
        if row is None:
            raise NotFound(f"Could not find {_WHAT[table]}: {name_or_id}.")
        return row

    async def roles_of(self, user_id: str, project_id: str) -> list[RoleRef]:
        """The user's roles on the project: its own and its groups', by name."""
        return await self.store.fetchall(
            "SELECT id, name FROM roles WHERE id IN ("
            " SELECT role_id FROM assignments WHERE user_id = :user AND project_id = :project"
            " UNION SELECT a.role_id FROM group_assignments a"
            " JOIN group_members m ON m.group_id = a.group_id"
            " WHERE m.user_id = :user AND a.project_id = :project) ORDER BY name",
            {"user": user_id, "project": project_id},
            row=RoleRef,
        )

    async def system_roles_of(self, user_id: str) -> list[RoleRef]:
        """The user's roles on the system: its own and its groups', by name."""
        return await self.store.fetchall(
            "SELECT id, name FROM roles WHERE id IN ("
            " SELECT role_id FROM system_assignments WHERE user_id = :user"
            " UNION SELECT a.role_id FROM system_group_assignments a"
            " JOIN group_members m ON m.group_id = a.group_id WHERE m.user_id = :user) ORDER BY name",
            {"user": user_id},
            row=RoleRef,
        )

    async def revoke(self, kind: RevocationKind, target: str) -> Revocation:
        """Refuse the tokens ``kind`` ``target`` names issued until now; store it and publish it."""
        now = time.time()
        await self.store.execute(
            "INSERT INTO revocations (kind, target, issued_before, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, target) DO UPDATE SET issued_before = excluded.issued_before,"
            " expires_at = excluded.expires_at",
            (kind, target, now, now + self.token_ttl + self.stale_window),
        )
        revocation: Revocation = {"kind": kind, "id": target, "issued_before": now}
        await REVOKED.publish(self.bus, revocation)
        log.info("revoked %s %s (tokens issued before %.6f)", kind, target, now)
        return revocation
