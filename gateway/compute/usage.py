"""Usage reports (``/os-simple-tenant-usage``): what each project's instances used over a period.

``start`` and ``end`` take Nova's formats (``2026-01-01T00:00:00``, with ``.%f``, or
``2026-01-01 00:00:00.000000``; none: now), an end past now is now, and the times answered are
Nova's (UTC, no offset, microseconds). Listing every project's is for admins; showing one's, for
its members and admins (Nova's default policy). An instance counts from when it first ran until
it was deleted, so deleted ones count for the time they lived (the conductor's ``ComputeUsage``).
Paging (microversion 2.40) is not built: aiostack's compute API stops at 2.21.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import ServerUsage, TenantUsage
from bus import InvalidRequest
from gateway.compute.common import BASE, compute
from gateway.http import json_response
from gateway.routing import DATE_PATTERN, Body, Query, Reply, Routes

USAGE = f"{BASE}/os-simple-tenant-usage"
NOVA_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")
"""The times Nova's ``start`` and ``end`` take."""
_CLOCK = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
NOVA_TIME_PATTERN = f"^({DATE_PATTERN}(T{_CLOCK}([.][0-9]{{1,6}})?| {_CLOCK}[.][0-9]{{1,6}}))?$"
"""``NOVA_FORMATS`` (real dates only), or empty: now. Checked by the handlers (a time that does
not match is Nova's 400), and shown in the API's document."""
NovaTime = Annotated[
    str,
    Meta(
        max_length=64, extra_json_schema={"pattern": NOVA_TIME_PATTERN, "examples": ["2026-01-01T00:00:00"]}
    ),
]
DETAILED = ("1", "true")
"""``detailed`` values that ask for each server: Nova takes ``1`` only; openstacksdk (and so
``openstack usage list``) sends ``True``."""
INVALID_TIME = "Invalid datetime string: Datetime is in invalid format"
SHOWN = "%Y-%m-%dT%H:%M:%S.%f"
"""How Nova shows a time here: UTC, no offset."""


class UsageQuery(Query):
    start: Annotated[NovaTime, Meta(description="The period's start (UTC; default: now).")] | UnsetType = (
        UNSET
    )
    end: (
        Annotated[NovaTime, Meta(description="The period's end (UTC; default and at most: now).")] | UnsetType
    ) = UNSET
    detailed: (
        Annotated[str, Meta(max_length=8, description="1 (or true): each project's servers too (list only).")]
        | UnsetType
    ) = UNSET


class ServerUsageView(Body):
    instance_id: str
    name: str
    tenant_id: str
    flavor: str
    vcpus: int
    memory_mb: int
    local_gb: int
    hours: float
    started_at: str
    ended_at: str | None
    state: str
    uptime: int


class TenantUsageView(Body):
    tenant_id: str
    start: str
    stop: str
    total_hours: float
    total_vcpus_usage: float
    total_memory_mb_usage: float
    total_local_gb_usage: float
    server_usages: list[ServerUsageView] | UnsetType = UNSET
    """Listing: with ``detailed=1`` only."""


class TenantUsageList(Body):
    tenant_usages: list[TenantUsageView]


class ProjectUsageView(Body):
    """``TenantUsageView``, every member absent when none of the project's instances ran in the
    period (Nova answers an empty object then)."""

    tenant_id: str | UnsetType = UNSET
    start: str | UnsetType = UNSET
    stop: str | UnsetType = UNSET
    total_hours: float | UnsetType = UNSET
    total_vcpus_usage: float | UnsetType = UNSET
    total_memory_mb_usage: float | UnsetType = UNSET
    total_local_gb_usage: float | UnsetType = UNSET
    server_usages: list[ServerUsageView] | UnsetType = UNSET


class TenantUsageShown(Body):
    tenant_usage: ProjectUsageView


def nova_time(when: str | None) -> datetime:
    """``start`` or ``end`` as Nova reads them (none: now), UTC.

    :raises InvalidRequest: in none of Nova's formats.
    """
    if not when:
        return datetime.now(UTC)
    if re.fullmatch(NOVA_TIME_PATTERN, when) is None:  # fullmatch: ``$`` would let a newline through
        raise InvalidRequest(INVALID_TIME)
    for form in NOVA_FORMATS:
        try:
            return datetime.strptime(when, form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise InvalidRequest(INVALID_TIME)


def period(query: UsageQuery) -> tuple[datetime, datetime]:
    """The query's [start, end), its end no later than now (nor before its start).

    :raises InvalidRequest: a time in none of Nova's formats, or the end not after the start.
    """
    start = nova_time(query.start or None)
    end = nova_time(query.end or None)
    if not start < end:
        raise InvalidRequest("Invalid start time. The start time cannot occur after the end time.")
    return start, max(start, min(end, datetime.now(UTC)))


def shown_time(stamp: str) -> str:
    """A stored ISO 8601 stamp as Nova shows times here."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).strftime(SHOWN)


def _server_view(usage: ServerUsage) -> ServerUsageView:
    return ServerUsageView(
        instance_id=usage["instance_id"],
        name=usage["name"],
        tenant_id=usage["tenant_id"],
        flavor=usage["flavor"],
        vcpus=usage["vcpus"],
        memory_mb=usage["memory_mb"],
        local_gb=usage["local_gb"],
        hours=usage["hours"],
        started_at=shown_time(usage["started_at"]),
        ended_at=shown_time(usage["ended_at"]) if usage["ended_at"] else None,
        state=usage["state"],
        uptime=usage["uptime"],
    )


def _tenant_view(usage: TenantUsage, start: datetime, end: datetime, detailed: bool) -> TenantUsageView:
    return TenantUsageView(
        tenant_id=usage["tenant_id"],
        start=start.strftime(SHOWN),
        stop=end.strftime(SHOWN),
        total_hours=usage["total_hours"],
        total_vcpus_usage=usage["total_vcpus_usage"],
        total_memory_mb_usage=usage["total_memory_mb_usage"],
        total_local_gb_usage=usage["total_local_gb_usage"],
        server_usages=[_server_view(s) for s in usage["server_usages"]] if detailed else UNSET,
    )


routes = Routes()


@routes.get(
    USAGE,
    "List every project's usage over a period",
    query=UsageQuery,
    replies=[Reply(200, TenantUsageList, "Each project whose instances ran in the period, with its totals.")],
    errors=(400, 403),
)
async def list_tenant_usages(request: web.Request, query: UsageQuery) -> web.Response:
    """403 but for admins; 400: a time in none of Nova's formats, or the end not after the start."""
    start, end = period(query)
    usages = await compute(request).usage(start=start.isoformat(), end=end.isoformat())
    detailed = str(query.detailed).lower() in DETAILED
    views = [_tenant_view(usage, start, end, detailed) for usage in usages]
    return json_response(TenantUsageList(tenant_usages=views))


@routes.get(
    f"{USAGE}/{{tenant_id}}",
    "Show a project's usage over a period",
    query=UsageQuery,
    replies=[
        Reply(200, TenantUsageShown, "The project's totals and each of its instances (empty: none ran).")
    ],
    errors=(400, 403),
)
async def show_tenant_usage(request: web.Request, query: UsageQuery) -> web.Response:
    """403 but for the project's members and admins."""
    start, end = period(query)
    usages = await compute(request).usage(
        start=start.isoformat(), end=end.isoformat(), project_id=request.match_info["tenant_id"]
    )
    shown = ProjectUsageView()
    if usages:
        view = _tenant_view(usages[0], start, end, detailed=True)
        shown = ProjectUsageView(**{name: getattr(view, name) for name in TenantUsageView.__struct_fields__})
    return json_response(TenantUsageShown(tenant_usage=shown))
