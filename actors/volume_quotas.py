"""Volume quotas (Cinder's quota sets): limits per project, checked where volumes, snapshots and
extends are recorded.

A project's limit of a resource is its row in ``volume_quotas`` or else the default
(``api.volume.DEFAULT_VOLUME_QUOTAS``). Usage is never kept apart from what it counts: it is
counted from the project's rows of ``volumes`` and ``snapshots`` inside the store transaction that
records the new one (``check_volume``, ``check_snapshot``, ``check_extend``), and the store has one
writer at a time (``runtime.store``: sqlite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction lock),
so two creates can never both see room for one. A volume counts from the moment it is recorded
(creating) until its row is gone (deleted), whatever its status, as Cinder's quota does;
``gigabytes`` counts volumes and snapshots, as Cinder's does by default. An extend records the
size it grows to (``volumes.extending_to``) in the transaction that checks it: until the file has
grown, the growth is the project's ``reserved`` gigabytes, and counts.
"""

from __future__ import annotations

from typing import cast

from api.volume import (
    DEFAULT_VOLUME_QUOTAS,
    VolumeQuotas,
    VolumeQuotaSet,
    VolumeQuotaUsages,
)
from bus import Conflict, Forbidden, QuotaExceeded
from runtime.context import require_caller
from runtime.store import Db, Store

MIGRATION = """
    CREATE TABLE volume_quotas (
        project_id TEXT NOT NULL, resource TEXT NOT NULL, hard_limit INTEGER NOT NULL,
        PRIMARY KEY (project_id, resource));
    ALTER TABLE volumes ADD COLUMN extending_to INTEGER
"""
"""The volume store's migration 6: a project's own limits, and the size an extend grows a volume
to (NULL but while it is extending)."""

USAGE = """
    SELECT
        (SELECT COUNT(*) FROM volumes WHERE project_id = :project) AS volumes,
        (SELECT COALESCE(SUM(size), 0) FROM volumes WHERE project_id = :project)
            + (SELECT COALESCE(SUM(size), 0) FROM snapshots WHERE project_id = :project) AS gigabytes,
        (SELECT COUNT(*) FROM snapshots WHERE project_id = :project) AS snapshots,
        (SELECT COALESCE(SUM(extending_to - size), 0) FROM volumes
            WHERE project_id = :project AND extending_to IS NOT NULL) AS reserved
"""
"""What a project holds: its volumes, their GiB and its snapshots' (in use), its snapshots, and the
GiB its extends under way will add (reserved)."""


async def limits_of(db: Db, project_id: str) -> VolumeQuotaSet:
    """The project's limits: its own where it has them, the defaults elsewhere."""
    rows = await db.fetchall(
        "SELECT resource, hard_limit FROM volume_quotas WHERE project_id = ?", (project_id,)
    )
    own = {row["resource"]: row["hard_limit"] for row in rows}
    return cast(VolumeQuotaSet, {**DEFAULT_VOLUME_QUOTAS, **own})


async def usage_of(db: Db, project_id: str) -> dict[str, int]:
    """``USAGE`` of the project: ``volumes``, ``gigabytes``, ``snapshots`` in use, ``reserved`` GiB."""
    row = await db.fetchone(USAGE, {"project": project_id})
    assert row is not None  # one row, always
    return {name: int(value) for name, value in row.items()}


def _over(limit: int, wanted: int) -> bool:
    return 0 <= limit < wanted


def _check_size(limits: VolumeQuotaSet, size: int) -> None:
    """:raises QuotaExceeded: one volume of ``size`` GiB is past ``per_volume_gigabytes``."""
    limit = limits["per_volume_gigabytes"]
    if _over(limit, size):
        raise QuotaExceeded(
            f"VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum allowed"
            f" limit {limit}G."
        )


def _check_gigabytes(limits: VolumeQuotaSet, used: dict[str, int], size: int) -> None:
    """:raises QuotaExceeded: ``size`` more GiB would pass ``gigabytes`` (reserved ones count)."""
    limit, consumed = limits["gigabytes"], used["gigabytes"] + used["reserved"]
    if _over(limit, consumed + size):
        raise QuotaExceeded(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes"
            f" quota. Requested {size}G, quota is {limit}G and {consumed}G has been consumed."
        )


async def check_volume(db: Db, project_id: str | None, size: int) -> None:
    """Inside the transaction that records a new volume of ``size`` GiB for the project (a
    service's, of no project, is not counted).

    :raises QuotaExceeded: the volume is past ``per_volume_gigabytes``, or the project would pass
        its ``volumes`` or ``gigabytes``.
    """
    if project_id is None:
        return
    limits = await limits_of(db, project_id)
    _check_size(limits, size)
    used = await usage_of(db, project_id)
    if _over(limits["volumes"], used["volumes"] + 1):
        raise QuotaExceeded(
            f"VolumeLimitExceeded: Maximum number of volumes allowed ({limits['volumes']}) exceeded for"
            " quota 'volumes'."
        )
    _check_gigabytes(limits, used, size)


async def check_snapshot(db: Db, project_id: str | None, size: int) -> None:
    """Inside the transaction that records a new snapshot of ``size`` GiB for the project.

    :raises QuotaExceeded: the project would pass its ``snapshots`` or ``gigabytes``.
    """
    if project_id is None:
        return
    limits = await limits_of(db, project_id)
    used = await usage_of(db, project_id)
    if _over(limits["snapshots"], used["snapshots"] + 1):
        raise QuotaExceeded(
            f"SnapshotLimitExceeded: Maximum number of snapshots allowed ({limits['snapshots']}) exceeded"
        )
    _check_gigabytes(limits, used, size)


async def check_extend(db: Db, project_id: str | None, size: int, new_size: int) -> None:
    """Inside the transaction that marks a volume of ``size`` GiB extending to ``new_size``.

    :raises QuotaExceeded: ``new_size`` is past ``per_volume_gigabytes``, or the growth would pass
        the project's ``gigabytes``.
    """
    if project_id is None:
        return
    limits = await limits_of(db, project_id)
    _check_size(limits, new_size)
    _check_gigabytes(limits, await usage_of(db, project_id), new_size - size)


def _check_reader(project_id: str) -> None:
    """:raises Forbidden: another project's, and the caller is no admin."""
    ctx = require_caller()
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow volume_extension:quotas:show to be performed on {project_id}.")


def _check_admin(action: str) -> None:
    """:raises Forbidden: the caller is no admin."""
    if not require_caller().is_admin:
        raise Forbidden(f"Policy doesn't allow volume_extension:quotas:{action} to be performed.")


class VolumeQuotaBook(VolumeQuotas):
    """Serves ``api.volume.VolumeQuotas`` over the volume actor's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_quotas(self, *, project_id: str) -> VolumeQuotaSet:
        _check_reader(project_id)
        return await limits_of(self.store, project_id)

    async def get_default_quotas(self) -> VolumeQuotaSet:
        return cast(VolumeQuotaSet, dict(DEFAULT_VOLUME_QUOTAS))

    async def get_quota_usage(self, *, project_id: str) -> VolumeQuotaUsages:
        _check_reader(project_id)
        async with self.store.transaction() as db:  # limits and usage of one moment
            limits = await limits_of(db, project_id)
            used = await usage_of(db, project_id)
        in_use = {**used, "per_volume_gigabytes": 0}
        return cast(
            VolumeQuotaUsages,
            {
                resource: {
                    "limit": limit,
                    "in_use": in_use[resource],
                    "reserved": used["reserved"] if resource == "gigabytes" else 0,
                }
                for resource, limit in limits.items()
            },
        )

    async def set_quotas(self, *, project_id: str, limits: dict[str, int]) -> VolumeQuotaSet:
        _check_admin("update")
        async with self.store.transaction() as db:
            used = await usage_of(db, project_id)
            held = {**used, "gigabytes": used["gigabytes"] + used["reserved"]}
            for resource, limit in limits.items():
                if resource != "per_volume_gigabytes" and _over(limit, held[resource]):
                    raise Conflict(
                        f"Quota {resource} limit must be equal or greater than existing resources."
                        f" Current usage is {held[resource]} and the requested limit is {limit}."
                    )
            for resource, limit in limits.items():
                await db.execute(
                    "DELETE FROM volume_quotas WHERE project_id = ? AND resource = ?", (project_id, resource)
                )
                await db.execute(
                    "INSERT INTO volume_quotas (project_id, resource, hard_limit) VALUES (?, ?, ?)",
                    (project_id, resource, limit),
                )
            return await limits_of(db, project_id)

    async def delete_quotas(self, *, project_id: str) -> None:
        _check_admin("delete")
        await self.store.execute("DELETE FROM volume_quotas WHERE project_id = ?", (project_id,))
