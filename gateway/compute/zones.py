"""Availability zones (``/os-availability-zone``): every compute host is in Nova's default zone.

aiostack has no host aggregates, so there is one zone, ``nova`` (Nova's
``default_availability_zone``), available while any compute host is up. The detailed list
(admins) names each host and its ``nova-compute`` service as the scheduler last saw it.
"""

from __future__ import annotations

from aiohttp import web

from bus import Forbidden
from gateway.compute.common import BASE, compute
from gateway.http import context_of, json_response
from gateway.routing import Body, Reply, Routes, Time

ZONE = "nova"


class ZoneState(Body):
    available: bool


class ServiceState(Body):
    available: bool
    active: bool
    updated_at: Time | None


class Zone(Body):
    zoneName: str
    zoneState: ZoneState
    hosts: None


class ZoneDetail(Body):
    zoneName: str
    zoneState: ZoneState
    hosts: dict[str, dict[str, ServiceState]] | None


class ZoneList(Body):
    availabilityZoneInfo: list[Zone]


class ZoneDetailList(Body):
    availabilityZoneInfo: list[ZoneDetail]


routes = Routes()


@routes.get(
    f"{BASE}/os-availability-zone",
    "List availability zones",
    replies=[Reply(200, ZoneList, "The zones (one: nova).")],
)
async def list_zones(request: web.Request) -> web.Response:
    hosts = await compute(request).list_compute_hosts()
    available = any(host["alive"] for host in hosts)
    return json_response(ZoneList(availabilityZoneInfo=[Zone(ZONE, ZoneState(available), None)]))


@routes.get(
    f"{BASE}/os-availability-zone/detail",
    "List availability zones with their hosts",
    replies=[Reply(200, ZoneDetailList, "The zones, each with its hosts' nova-compute services.")],
    errors=(403,),
)
async def list_zones_detail(request: web.Request) -> web.Response:
    """403 but for admins."""
    if not context_of(request).is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed.")
    hosts = await compute(request).list_compute_hosts()
    services = {
        host["host"]: {"nova-compute": ServiceState(host["alive"], host["alive"], host["last_seen"])}
        for host in hosts
    }
    available = any(host["alive"] for host in hosts)
    return json_response(
        ZoneDetailList(availabilityZoneInfo=[ZoneDetail(ZONE, ZoneState(available), services or None)])
    )
