"""What a user changes of an instance besides its power: its name, access addresses, metadata, lock.

None of these is a task for the node: each is one conditional write of the row (the instance as
it was read must still be there), then published as ``instance.updated``. The lock is Nova's:
an instance locked by its owner or by an admin refuses every action (``Core.check_lock``) but an
admin's; only an admin lifts an admin's lock. Locking and unlocking are recorded as actions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from actors.conductor.core import Core
from actors.conductor.quotas import check_count
from actors.conductor.schema import InstanceRow
from actors.conductor.states import Action
from api.conductor import Server, ServerDetails
from bus import Conflict, Forbidden, InvalidRequest, NotFound
from runtime.context import require_caller
from runtime.stamps import utcnow
from runtime.store import from_json, to_json

WRITE_ATTEMPTS = 5
"""How often a change is tried again when the row changed between its read and its write."""


def access_address(address: str, version: int) -> str:
    """``address`` as Nova keeps it (IPv6 compressed), or empty.

    :raises InvalidRequest: ``address`` is neither empty nor an IP address of ``version``.
    """
    if not address:
        return ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != version:
        raise InvalidRequest(f"accessIPv{version} {address!r} is not an IPv{version} address")
    return str(parsed)


def given_details(
    name: str | None,
    access_ip_v4: str | None,
    access_ip_v6: str | None,
    description: str | None,
    forget_description: bool,
) -> dict[str, Any]:
    """The columns an update or a rebuild writes: those given (None: unchanged), the access
    addresses as Nova keeps them, the description None when it is forgotten.

    :raises InvalidRequest: an access address that is not one of its version.
    """
    columns: dict[str, Any] = {}
    if name is not None:
        columns["name"] = name
    if access_ip_v4 is not None:
        columns["access_ip_v4"] = access_address(access_ip_v4, 4)
    if access_ip_v6 is not None:
        columns["access_ip_v6"] = access_address(access_ip_v6, 6)
    if description is not None or forget_description:
        columns["description"] = None if forget_description else description
    return columns


class InstanceDetails(ServerDetails):
    """Serves ``api.conductor.ServerDetails``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def _update(self, instance_uuid: str, columns: dict[str, Any]) -> InstanceRow:
        """Write ``columns`` to the live instance the caller may see, and publish it."""
        row = await self.core.row(instance_uuid)
        updated = await self.core.store.fetchone(
            f"UPDATE instances SET {', '.join(f'{c} = ?' for c in columns)}, updated_at = ?,"
            " version = version + 1 WHERE uuid = ? AND deleted = 0 RETURNING *",
            [*columns.values(), utcnow(), row["uuid"]],
            row=InstanceRow,
        )
        if updated is None:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        await self.core.publish(updated, "instance.updated")
        return updated

    async def update_instance(
        self,
        *,
        instance_uuid: str,
        name: str | None = None,
        access_ip_v4: str | None = None,
        access_ip_v6: str | None = None,
        description: str | None = None,
        forget_description: bool = False,
    ) -> Server:
        """Rename the instance, set its access addresses or its description (None: unchanged)."""
        columns = given_details(name, access_ip_v4, access_ip_v6, description, forget_description)
        row = await self._update(instance_uuid, columns) if columns else await self.core.row(instance_uuid)
        return await self.core.shown(row)

    async def _change_metadata(
        self, instance_uuid: str, change: Callable[[dict[str, str]], dict[str, str]]
    ) -> dict[str, str]:
        """Apply ``change`` (old metadata -> new) to the locked-checked instance's metadata, if the
        row still holds what was read (else read again)."""
        for _ in range(WRITE_ATTEMPTS):
            row = await self.core.row(instance_uuid)
            self.core.check_lock(row)
            metadata: dict[str, str] = change(from_json(row["metadata"], {}))
            await check_count(self.core.store, row["project_id"], "metadata_items", len(metadata))
            updated = await self.core.store.fetchone(
                "UPDATE instances SET metadata = ?, updated_at = ?, version = version + 1"
                " WHERE uuid = ? AND deleted = 0 AND version = ? RETURNING *",
                (to_json(metadata), utcnow(), instance_uuid, row["version"]),
                row=InstanceRow,
            )
            if updated is not None:
                await self.core.publish(updated, "instance.updated")
                return metadata
        raise Conflict(f"Instance {instance_uuid} kept changing; try again")

    async def set_metadata(
        self, *, instance_uuid: str, metadata: dict[str, str], replace: bool = False
    ) -> dict[str, str]:
        """Merge ``metadata`` into the instance's (``replace``: make it exactly that)."""
        return await self._change_metadata(
            instance_uuid, lambda old: dict(metadata) if replace else {**old, **metadata}
        )

    async def delete_metadata_item(self, *, instance_uuid: str, key: str) -> None:
        """:raises NotFound: the instance has no such key."""

        def without(old: dict[str, str]) -> dict[str, str]:
            if key not in old:
                raise NotFound(f"Metadata item was not found: {key}")
            return {k: v for k, v in old.items() if k != key}

        await self._change_metadata(instance_uuid, without)

    async def lock_instance(self, *, instance_uuid: str, reason: str | None = None) -> Server:
        """Lock it (again: the lock stays whose it was)."""
        ctx = require_caller()
        row = await self.core.row(instance_uuid)
        if row["locked_by"] is None:
            row = await self._update(
                instance_uuid, {"locked_by": "admin" if ctx.is_admin else "owner", "locked_reason": reason}
            )
            await self.core.start_action(instance_uuid, Action.LOCK, finished=True)
        return await self.core.shown(row)

    async def unlock_instance(self, *, instance_uuid: str) -> Server:
        """:raises Forbidden: an admin locked it and the caller is not one."""
        ctx = require_caller()
        row = await self.core.row(instance_uuid)
        if row["locked_by"] is None:
            return await self.core.shown(row)
        if row["locked_by"] == "admin" and not ctx.is_admin:
            raise Forbidden(f"Instance {instance_uuid} was locked by an admin: only an admin unlocks it")
        row = await self._update(instance_uuid, {"locked_by": None, "locked_reason": None})
        await self.core.start_action(instance_uuid, Action.UNLOCK, finished=True)
        return await self.core.shown(row)
