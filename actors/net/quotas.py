"""Net quotas (Neutron's): how many networks, subnets, ports, subnet pools, security groups and
rules, routers and floating IPs a project may have.

A project's limit of a resource is its row in ``quotas`` or else ``api.net.DEFAULT_QUOTAS``.
Usage is ``project_counts``, which the database keeps in step with the resources' own tables
(``schema.TRIGGERS``, in the statement that inserts, deletes or moves a row, cascades too).
``check_quota`` reads it inside the store transaction that inserts the new one, and the store has
one writer at a time
(``NetState.writing``: sqlite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction lock), so two creates
can never both see room for one, and a bulk create (one transaction, checked before each insert)
past the limit rolls back whole. A deleted row stops counting the moment it goes.
"""

from __future__ import annotations

from typing import Any, cast

from actors.net.schema import COUNTED
from actors.net.state import Db, NetState
from api.net import (
    DEFAULT_QUOTAS,
    NetworkQuotas,
    OverQuota,
    ProjectQuotas,
    QuotaDetails,
    QuotaResource,
    Quotas,
)
from bus import Conflict, Forbidden, NotFound
from runtime.context import caller, sees_all


async def limits_of(db: Db, project_id: str) -> Quotas:
    """The project's limits: its own where it has them, the defaults elsewhere."""
    rows = await db.fetchall("SELECT resource, hard_limit FROM quotas WHERE project_id = ?", (project_id,))
    return cast(Quotas, {**DEFAULT_QUOTAS, **{row["resource"]: row["hard_limit"] for row in rows}})


async def used(db: Db, resource: QuotaResource, project_id: str) -> int:
    """How many of ``resource`` the project has now."""
    row = await db.fetchone(
        "SELECT n FROM project_counts WHERE project_id = ? AND resource = ?", (project_id, resource)
    )
    return int(row["n"]) if row else 0


async def check_quota(db: Db, resource: QuotaResource, project_id: str) -> None:
    """Inside the transaction that is about to insert one more ``resource`` of ``project_id``
    (nothing for a resource of no project: the cloud's own).

    :raises OverQuota: the project has as many as its limit, or more (a limit set below its usage).
    """
    if not project_id:
        return
    limit = (await limits_of(db, project_id))[resource]
    if limit >= 0 and await used(db, resource, project_id) >= limit:
        raise OverQuota(f"Quota exceeded for resources: ['{resource}'].")


def _check_reader(project_id: str) -> None:
    """:raises Forbidden: another project's quotas, and the caller is no admin."""
    ctx = caller()
    if not sees_all(ctx) and (ctx is None or ctx.project_id != project_id):
        raise Forbidden("Only admin is authorized to access quotas for another project.")


def _check_admin() -> None:
    """:raises Forbidden: the caller is no admin."""
    if not sees_all(caller()):
        raise Forbidden("Only admin can view or configure quota.")


class QuotaServant(NetworkQuotas):
    """Serves ``api.net.NetworkQuotas``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def list_quotas(self) -> list[ProjectQuotas]:
        _check_admin()
        rows = await self.state.store.fetchall(
            "SELECT project_id, resource, hard_limit FROM quotas ORDER BY project_id"
        )
        projects: dict[str, dict[str, Any]] = {}
        for row in rows:
            shown = projects.setdefault(
                row["project_id"], {**DEFAULT_QUOTAS, "project_id": row["project_id"]}
            )
            shown[row["resource"]] = row["hard_limit"]
        return [cast(ProjectQuotas, shown) for shown in projects.values()]

    async def get_quotas(self, *, project_id: str) -> Quotas:
        _check_reader(project_id)
        return await limits_of(self.state.store, project_id)

    async def get_default_quotas(self, *, project_id: str) -> Quotas:
        _check_reader(project_id)
        return cast(Quotas, dict(DEFAULT_QUOTAS))

    async def get_quota_details(self, *, project_id: str) -> QuotaDetails:
        _check_reader(project_id)
        limits = await limits_of(self.state.store, project_id)
        store = self.state.store
        details = {
            resource: {
                "limit": limits[resource],
                "used": await used(store, resource, project_id),
                "reserved": 0,
            }
            for resource in COUNTED
        }
        return cast(QuotaDetails, details)

    async def set_quotas(
        self, *, project_id: str, limits: dict[QuotaResource, int], check_limit: bool = False
    ) -> Quotas:
        _check_admin()
        async with self.state.writing() as db:
            for resource, limit in limits.items():
                if check_limit and 0 <= limit < (usage := await used(db, resource, project_id)):
                    raise Conflict(
                        f"Quota limit {limit} for {resource} must be greater than or equal to already"
                        f" used {usage}"
                    )
                await db.execute(
                    "INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?)"
                    " ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
                    (project_id, resource, limit),
                )
            return await limits_of(db, project_id)

    async def delete_quotas(self, *, project_id: str) -> None:
        _check_admin()
        async with self.state.writing() as db:
            if not await db.execute("DELETE FROM quotas WHERE project_id = ?", (project_id,)):
                raise NotFound(f"Quota for project {project_id} could not be found.")
