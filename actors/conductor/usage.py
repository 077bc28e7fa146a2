"""What instances used over a period (Nova's simple tenant usage), from their records.

An instance counts from when it first ran (``launched_at``) to when it was deleted
(``terminated_at``, or the period's end while it lives), clipped to the period, as Nova counts:
one that never ran counts nothing. Deleted rows are kept (``deleted`` 1, with ``terminated_at``),
so a deleted instance counts for the time it lived.
"""

from __future__ import annotations

from datetime import UTC, datetime

from actors.conductor.schema import InstanceRow
from api.conductor import ComputeUsage, ServerUsage, TenantUsage
from bus import Forbidden, InvalidRequest
from runtime.context import caller, sees_all
from runtime.stamps import stamp
from runtime.store import Store, from_json

POLICY = "os_compute_api:os-simple-tenant-usage"
"""Nova's rules, named in a refusal."""
TERMINATED = "terminated"
"""The state Nova shows for a deleted instance."""


def parse_time(when: str) -> datetime:
    """An ISO 8601 time as an aware one (none given: UTC).

    :raises InvalidRequest: not ISO 8601.
    """
    try:
        parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Invalid datetime string: {when!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def server_usage(row: InstanceRow, start: datetime, end: datetime, now: datetime) -> ServerUsage | None:
    """What the instance used of [start, end); None when it did not run in it."""
    if row["launched_at"] is None:
        return None
    launched = parse_time(row["launched_at"])
    terminated = parse_time(row["terminated_at"]) if row["terminated_at"] else None
    if launched >= end or (terminated is not None and terminated <= start):
        return None
    stop = end if terminated is None else min(end, terminated)
    hours = max((stop - max(launched, start)).total_seconds(), 0.0) / 3600
    flavor = from_json(row["flavor"], {})
    return {
        "instance_id": row["uuid"],
        "name": row["name"],
        "tenant_id": row["project_id"],
        "flavor": str(flavor.get("name", "")),
        "vcpus": int(flavor.get("vcpus", 0)),
        "memory_mb": int(flavor.get("ram", 0)),
        "local_gb": int(flavor.get("disk", 0)) + int(flavor.get("ephemeral", 0)),
        "hours": hours,
        "started_at": row["launched_at"],
        "ended_at": row["terminated_at"],
        "state": TERMINATED if terminated is not None else row["vm_state"],
        "uptime": int(((terminated or now) - launched).total_seconds()),
    }


def tenant_usages(usages: list[ServerUsage]) -> list[TenantUsage]:
    """The usages summed by project, in the order the projects first appear."""
    tenants: dict[str, TenantUsage] = {}
    for usage in usages:
        tenant = tenants.setdefault(
            usage["tenant_id"],
            {
                "tenant_id": usage["tenant_id"],
                "total_hours": 0.0,
                "total_vcpus_usage": 0.0,
                "total_memory_mb_usage": 0.0,
                "total_local_gb_usage": 0.0,
                "server_usages": [],
            },
        )
        hours = usage["hours"]
        tenant["total_hours"] += hours
        tenant["total_vcpus_usage"] += usage["vcpus"] * hours
        tenant["total_memory_mb_usage"] += usage["memory_mb"] * hours
        tenant["total_local_gb_usage"] += usage["local_gb"] * hours
        tenant["server_usages"].append(usage)
    return list(tenants.values())


class UsageReports(ComputeUsage):
    """Serves ``ComputeUsage``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def usage(self, *, start: str, end: str, project_id: str | None = None) -> list[TenantUsage]:
        ctx = caller()
        own = project_id is not None and ctx is not None and ctx.project_id == project_id
        if not (sees_all(ctx) or own):
            rule = "list" if project_id is None else "show"
            raise Forbidden(f"Policy doesn't allow {POLICY}:{rule} to be performed.")
        period_start, period_end = parse_time(start), parse_time(end)
        if period_start > period_end:
            raise InvalidRequest("Invalid start time. The start time cannot occur after the end time.")
        # stamps are whole seconds: the store's test is wide by one, ``server_usage``'s exact
        clauses = [
            "launched_at IS NOT NULL",
            "launched_at <= ?",
            "(terminated_at IS NULL OR terminated_at >= ?)",
        ]
        params = [stamp(period_end), stamp(period_start)]
        if project_id is not None:
            clauses.append("project_id = ?")
            params.append(project_id)
        rows = await self.store.fetchall(
            f"SELECT * FROM instances WHERE {' AND '.join(clauses)} ORDER BY created_at, uuid",
            params,
            row=InstanceRow,
        )
        now = datetime.now(UTC)
        found = [server_usage(row, period_start, period_end, now) for row in rows]
        return tenant_usages([usage for usage in found if usage is not None])
