"""Compute quotas (Nova's quota sets): limits per project, checked where each resource is made.

A project's limit of a resource is its row in ``quotas`` or else the default (``DEFAULT_QUOTAS``).
Usage is never kept apart from what it counts: it is counted from the live instances (and the
key pairs, and an instance's metadata) inside the store transaction that makes the new one, and
the store has one writer at a time (``runtime.store``: sqlite's ``BEGIN IMMEDIATE``, PostgreSQL's
transaction lock), so two creates can never both see room for one. Usage stays exact: a deleted
instance stops counting the moment its row says so.
"""

from __future__ import annotations

from typing import Any, cast

from api.conductor import DEFAULT_QUOTAS, ComputeQuotas, Quotas, QuotaUsage
from bus import Conflict, Forbidden, QuotaExceeded
from runtime.context import require_caller
from runtime.store import Db, Store

MIGRATION = """
    CREATE TABLE quotas (
        project_id TEXT NOT NULL, resource TEXT NOT NULL, hard_limit INTEGER NOT NULL,
        PRIMARY KEY (project_id, resource));
"""
UNITS = {"instances": "instances", "cores": "cores", "ram": "MB of RAM"}


async def limits_of(db: Db | Store, project_id: str) -> dict[str, int]:
    """The project's limits: its own where it has them, the defaults elsewhere."""
    rows = await db.fetchall("SELECT resource, hard_limit FROM quotas WHERE project_id = ?", (project_id,))
    return {**DEFAULT_QUOTAS, **{row["resource"]: row["hard_limit"] for row in rows}}


_FLAVOR_FIELD = {
    "sqlite": "json_extract(flavor, '$.{field}')",
    "postgresql": "(flavor::json->>'{field}')::bigint",
}


async def instance_usage(db: Db | Store, project_id: str) -> dict[str, int]:
    """What the project's live instances hold: how many, their vCPUs, their RAM (MB); summed by
    the database over the project's index (a boot in a project of 10,000 instances parses no
    flavor of theirs)."""
    field = _FLAVOR_FIELD[db.dialect]
    row = await db.fetchone(
        f"SELECT COUNT(*) AS instances, COALESCE(SUM({field.format(field='vcpus')}), 0) AS cores,"
        f" COALESCE(SUM({field.format(field='ram')}), 0) AS ram"
        " FROM instances WHERE project_id = ? AND deleted = 0",
        (project_id,),
    )
    assert row is not None  # an aggregate always answers one row
    return {resource: int(row[resource]) for resource in ("instances", "cores", "ram")}


async def check_instance_quota(db: Db, project_id: str, flavor: dict[str, Any]) -> None:
    """Inside the transaction that records a new instance of ``flavor``.

    :raises QuotaExceeded: the project would go past its limit of instances, vCPUs or RAM.
    """
    limits = await limits_of(db, project_id)
    wanted = {"instances": 1, "cores": int(flavor.get("vcpus", 0)), "ram": int(flavor.get("ram", 0))}
    if all(limits[resource] < 0 for resource in wanted):
        return  # unlimited: the project's instances are not counted
    used = await instance_usage(db, project_id)
    for resource, amount in wanted.items():
        limit = limits[resource]
        if limit >= 0 and used[resource] + amount > limit:
            raise QuotaExceeded(
                f"Quota exceeded for {resource}: Requested {amount}, but already used {used[resource]}"
                f" of {limit} {UNITS[resource]}"
            )


async def check_count(db: Db | Store, project_id: str, resource: str, count: int) -> None:
    """:raises QuotaExceeded: ``count`` of ``resource`` (metadata items, key pairs) is past the limit."""
    limit = (await limits_of(db, project_id))[resource]
    if 0 <= limit < count:
        raise QuotaExceeded(f"Quota exceeded for {resource}: at most {limit}")


def _check_reader(project_id: str) -> None:
    ctx = require_caller()
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow reading the quotas of project {project_id}.")


def _check_admin() -> None:
    if not require_caller().is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.")


class QuotaBook(ComputeQuotas):
    """Serves ``api.conductor.ComputeQuotas``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_quotas(self, *, project_id: str) -> Quotas:
        _check_reader(project_id)
        return cast(Quotas, await limits_of(self.store, project_id))

    async def get_default_quotas(self) -> Quotas:
        return cast(Quotas, dict(DEFAULT_QUOTAS))

    async def get_quota_usage(self, *, project_id: str, user_id: str | None = None) -> dict[str, QuotaUsage]:
        _check_reader(project_id)
        limits = await limits_of(self.store, project_id)
        used = await instance_usage(self.store, project_id)
        keypairs = await self.store.fetchone(
            "SELECT COUNT(*) AS n FROM keypairs WHERE user_id = ?", (user_id or require_caller().user_id,)
        )
        used["key_pairs"] = int(keypairs["n"]) if keypairs else 0
        used["metadata_items"] = 0  # a per-instance limit: nothing is used project-wide
        return {
            resource: {"limit": limit, "in_use": used[resource], "reserved": 0}
            for resource, limit in limits.items()
        }

    async def set_quotas(self, *, project_id: str, limits: dict[str, int], force: bool = False) -> Quotas:
        _check_admin()
        async with self.store.transaction() as db:
            if not force:
                used = await instance_usage(db, project_id)
                for resource, limit in limits.items():
                    if resource in used and 0 <= limit < used[resource]:
                        raise Conflict(
                            f"Quota limit {limit} for {resource} must be at least {used[resource]}, what"
                            " the project uses (or force it)"
                        )
            for resource, limit in limits.items():
                await db.execute(
                    "DELETE FROM quotas WHERE project_id = ? AND resource = ?", (project_id, resource)
                )
                await db.execute(
                    "INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?)",
                    (project_id, resource, limit),
                )
            return cast(Quotas, await limits_of(db, project_id))

    async def delete_quotas(self, *, project_id: str) -> None:
        _check_admin()
        await self.store.execute("DELETE FROM quotas WHERE project_id = ?", (project_id,))
