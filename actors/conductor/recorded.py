"""What the moves of an instance share: an action that starts with a migration record (a resize,
migration, live migration, evacuate), and the removal of the domain a migration left behind."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from actors.conductor.core import Core
from actors.conductor.migrations import Kind, start
from actors.conductor.schema import InstanceRow, recorded_claim
from actors.conductor.states import Action
from api.conductor import Flavor, MigrationStatus
from bus import AiostackError

log = logging.getLogger(__name__)


async def begin_recorded(
    core: Core,
    instance_uuid: str,
    action: Action,
    kind: Kind,
    columns: Mapping[str, Any],
    *,
    status: MigrationStatus,
    dest: str | None,
    new_flavor: Flavor | None = None,
) -> tuple[InstanceRow, bool]:
    """``Core.begin`` with a migration record: made first, its id written with the task; dropped
    if the action does not start (refused, or this request sent again)."""
    row = await core.row(instance_uuid)
    migration_id = await start(core.store, row, kind, status=status, dest=dest, new_flavor=new_flavor)
    try:
        row, started = await core.begin(instance_uuid, action, {**columns, "migration_id": migration_id})
    except BaseException:
        await core.store.execute("DELETE FROM migrations WHERE id = ?", (migration_id,))
        raise
    if not started:
        await core.store.execute("DELETE FROM migrations WHERE id = ?", (migration_id,))
    return row, started


async def drop_moved(core: Core, instance_uuid: str, host: str | None) -> None:
    """A migration left ``host``: its node removes the domain there (else its orphan sweep will)."""
    if host is None:
        return
    try:
        await core.node(host).drop_moved_instance(instance_uuid=instance_uuid)
    except AiostackError as exc:
        log.warning(
            "instance %s: %s did not take the removal of its old domain: %s", instance_uuid, host, exc
        )


async def claim_beside(core: Core, row: InstanceRow, *, elsewhere: bool, host: str | None = None) -> str:
    """The scheduler's claim of the instance's flavor beside its own (``claim_resize``): on its host
    (a resize), or on ``host`` or the best other one (``elsewhere``: a migration); the host.

    :raises NoValidHost: no room there. :raises NotFound: the instance has no claim; unknown ``host``.
    """
    claim = recorded_claim(row)
    destination = await core.scheduler.claim_resize(
        instance_uuid=row["uuid"],
        vcpus=claim["vcpus"],
        memory_mb=claim["ram"],
        disk_gb=claim["disk"],
        elsewhere=elsewhere,
        host=host,
    )
    return destination["host"]
