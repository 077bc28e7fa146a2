"""What an operator asks of the compute hosts (admins only): Nova's ``os-services`` and
``os-hypervisors``.

Each compute host is one ``nova-compute`` service and one hypervisor, as the scheduler sees it
(``ComputeServices``): ``state`` up or down from its heartbeats, ``status`` enabled or disabled
by an operator (a disabled host gets no new instances; what runs there stays), and what its
instances use of its totals. ``PUT /os-services/disable`` (``disable-log-reason`` with a reason)
and ``/enable`` take the host and binary, as Nova's 2.1-2.52 do (``openstack compute service set
--disable [--disable-reason R] HOST nova-compute``). A service's and a hypervisor's ``id`` is a
number derived from the host's name (stable across restarts and controllers, as Nova's integer
ids are per database). The conductor and the scheduler are not listed as services: aiostack's
liveness of those is ``aiostack ping``. ``host_ip`` is null: the scheduler does not know it.
There are no host aggregates: ``os-aggregates`` lists none (``openstack hypervisor show`` asks).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import ComputeService
from api.fields import HostName
from api.scheduler import Reason
from bus import NotFound
from gateway.compute.common import BASE, compute
from gateway.http import NOVA_ERRORS, error_body, json_response
from gateway.routing import Body, Reply, Request, Routes, Time, id_other_than
from gateway.versions import microversion

SERVICES = f"{BASE}/os-services"
HYPERVISORS = f"{BASE}/os-hypervisors"
BINARY = "nova-compute"
ZONE = "nova"


def host_number(host: str) -> int:
    """A host's service and hypervisor id: stable, from its name."""
    return int(hashlib.sha256(host.encode()).hexdigest()[:7], 16)


class Service(Body):
    id: int
    binary: str
    host: str
    zone: str
    status: Literal["enabled", "disabled"]
    state: Literal["up", "down"]
    updated_at: Time | None
    disabled_reason: str | None
    forced_down: Annotated[bool, Meta(description="2.11 and later.")] | UnsetType = UNSET


class ServiceList(Body):
    services: list[Service]


class ServiceQuery(Request):
    host: HostName | UnsetType = UNSET
    binary: str | UnsetType = UNSET


class ServiceChange(Request):
    """The service to enable or disable: a compute host's ``nova-compute``."""

    host: HostName
    binary: str
    disabled_reason: Reason | UnsetType = UNSET


class ChangedService(Body):
    host: str
    binary: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | UnsetType = UNSET


class ChangedServiceBody(Body):
    service: ChangedService


def service_view(request: web.Request, host: ComputeService) -> Service:
    return Service(
        id=host_number(host["host"]),
        binary=BINARY,
        host=host["host"],
        zone=ZONE,
        status="enabled" if host["enabled"] else "disabled",
        state="up" if host["alive"] else "down",
        updated_at=host["last_seen"],
        disabled_reason=host["disabled_reason"],
        forced_down=False if microversion(request) >= (2, 11) else UNSET,
    )


routes = Routes()


@routes.get(
    SERVICES,
    "List the compute services",
    query=ServiceQuery,
    replies=[
        Reply(200, ServiceList, "Each compute host's nova-compute service (filtered by host and binary).")
    ],
    errors=(403,),
)
async def list_services(request: web.Request, query: ServiceQuery) -> web.Response:
    """403 but for admins."""
    hosts = await compute(request).list_compute_services()
    services = [
        service_view(request, host)
        for host in hosts
        if query.host in (UNSET, host["host"]) and query.binary in (UNSET, BINARY)
    ]
    return json_response(ServiceList(services=services))


async def _change(request: web.Request, change: ServiceChange, enabled: bool) -> web.Response:
    if change.binary != BINARY:
        raise NotFound(f"Service {change.binary} on host {change.host} not found.")
    reason = None if change.disabled_reason is UNSET else change.disabled_reason
    host = await compute(request).set_compute_service(
        host=change.host, enabled=enabled, disabled_reason=reason
    )
    shown = ChangedService(
        host=host["host"],
        binary=BINARY,
        status="enabled" if host["enabled"] else "disabled",
        disabled_reason=host["disabled_reason"] or UNSET,
    )
    return json_response(ChangedServiceBody(service=shown))


@routes.put(
    f"{SERVICES}/disable",
    "Disable a compute service",
    body=ServiceChange,
    replies=[Reply(200, ChangedServiceBody, "Disabled: the host gets no new instances.")],
    errors=(403, 404),
)
async def disable_service(request: web.Request, body: ServiceChange) -> web.Response:
    """404: no such host, or a binary other than nova-compute."""
    return await _change(request, body, enabled=False)


@routes.put(
    f"{SERVICES}/disable-log-reason",
    "Disable a compute service, saying why",
    body=ServiceChange,
    replies=[Reply(200, ChangedServiceBody, "Disabled, with the reason shown.")],
    errors=(403, 404),
)
async def disable_service_with_reason(request: web.Request, body: ServiceChange) -> web.Response:
    return await _change(request, body, enabled=False)


@routes.put(
    f"{SERVICES}/enable",
    "Enable a compute service",
    body=ServiceChange,
    replies=[Reply(200, ChangedServiceBody, "Enabled: the host takes new instances again.")],
    errors=(403, 404),
)
async def enable_service(request: web.Request, body: ServiceChange) -> web.Response:
    return await _change(request, body, enabled=True)


# -- hypervisors ------------------------------------------------------------------------------


class HypervisorService(Body):
    host: str
    id: int
    disabled_reason: str | None


class HypervisorSummary(Body):
    id: int
    hypervisor_hostname: str
    state: Literal["up", "down"]
    status: Literal["enabled", "disabled"]


class Hypervisor(Body):
    id: int
    hypervisor_hostname: str
    state: Literal["up", "down"]
    status: Literal["enabled", "disabled"]
    hypervisor_type: str
    hypervisor_version: int
    host_ip: None
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    free_ram_mb: int
    local_gb: int
    local_gb_used: int
    free_disk_gb: int
    disk_available_least: int
    running_vms: int
    current_workload: int
    cpu_info: str
    service: HypervisorService


class HypervisorSummaryList(Body):
    hypervisors: list[HypervisorSummary]


class HypervisorList(Body):
    hypervisors: list[Hypervisor]


class HypervisorShown(Body):
    hypervisor: Hypervisor


class Statistics(Body):
    count: int
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    free_ram_mb: int
    local_gb: int
    local_gb_used: int
    free_disk_gb: int
    disk_available_least: int
    running_vms: int
    current_workload: int


class StatisticsBody(Body):
    hypervisor_statistics: Statistics


def hypervisor_view(host: ComputeService) -> Hypervisor:
    number = host_number(host["host"])
    return Hypervisor(
        id=number,
        hypervisor_hostname=host["host"],
        state="up" if host["alive"] else "down",
        status="enabled" if host["enabled"] else "disabled",
        hypervisor_type=host["hypervisor_type"],
        hypervisor_version=0,
        host_ip=None,
        vcpus=host["vcpus"],
        vcpus_used=host["vcpus_used"],
        memory_mb=host["memory_mb"],
        memory_mb_used=host["memory_mb_used"],
        free_ram_mb=host["memory_mb"] - host["memory_mb_used"],
        local_gb=host["disk_gb"],
        local_gb_used=host["disk_gb_used"],
        free_disk_gb=host["disk_gb"] - host["disk_gb_used"],
        disk_available_least=host["disk_gb"] - host["disk_gb_used"],
        running_vms=host["instances"],
        current_workload=0,
        cpu_info="{}",
        service=HypervisorService(host=host["host"], id=number, disabled_reason=host["disabled_reason"]),
    )


@routes.get(
    HYPERVISORS,
    "List the hypervisors",
    replies=[Reply(200, HypervisorSummaryList, "Each compute host's hypervisor: state and status.")],
    errors=(403,),
)
async def list_hypervisors(request: web.Request) -> web.Response:
    """403 but for admins."""
    views = [hypervisor_view(host) for host in await compute(request).list_compute_services()]
    summaries = [
        HypervisorSummary(
            id=view.id, hypervisor_hostname=view.hypervisor_hostname, state=view.state, status=view.status
        )
        for view in views
    ]
    return json_response(HypervisorSummaryList(hypervisors=summaries))


@routes.get(
    f"{HYPERVISORS}/detail",
    "List the hypervisors with their usage",
    replies=[Reply(200, HypervisorList, "Each hypervisor: totals, what its instances use, its service.")],
    errors=(403,),
)
async def list_hypervisors_detail(request: web.Request) -> web.Response:
    hosts = await compute(request).list_compute_services()
    return json_response(HypervisorList(hypervisors=[hypervisor_view(host) for host in hosts]))


@routes.get(
    f"{HYPERVISORS}/statistics",
    "Total the hypervisors",
    replies=[Reply(200, StatisticsBody, "The sums over every hypervisor.")],
    errors=(403,),
)
async def hypervisor_statistics(request: web.Request) -> web.Response:
    views = [hypervisor_view(host) for host in await compute(request).list_compute_services()]
    fields = [name for name in Statistics.__struct_fields__ if name != "count"]
    totals = {name: sum(getattr(view, name) for view in views) for name in fields}
    return json_response(StatisticsBody(hypervisor_statistics=Statistics(count=len(views), **totals)))


@routes.get(
    f"{HYPERVISORS}/{{hypervisor_id}}",
    "Show a hypervisor",
    path_types={"hypervisor_id": id_other_than("detail", "statistics")},
    replies=[Reply(200, HypervisorShown, "The hypervisor, with its usage.")],
    errors=(403, 404),
)
async def show_hypervisor(request: web.Request) -> web.Response:
    return json_response(HypervisorShown(hypervisor=hypervisor_view(await _hypervisor_host(request))))


async def _hypervisor_host(request: web.Request) -> ComputeService:
    """The compute host whose hypervisor the path's ``hypervisor_id`` names.

    :raises NotFound: none.
    """
    wanted = request.match_info["hypervisor_id"]
    for host in await compute(request).list_compute_services():
        if str(host_number(host["host"])) == wanted:
            return host
    raise NotFound(f"Hypervisor with ID {wanted} could not be found.")


@routes.get(
    f"{HYPERVISORS}/{{hypervisor_id}}/uptime",
    "Show a hypervisor's uptime (not reported: 501)",
    replies=[Reply(501, NOVA_ERRORS["notImplemented"], "Nodes do not report their host's uptime.")],
    errors=(403, 404),
)
async def hypervisor_uptime(request: web.Request) -> web.Response:
    """Nodes do not report their host's uptime: 501, as Nova answers for a driver without it
    (``openstack hypervisor show`` goes on without)."""
    await _hypervisor_host(request)
    message = "Virt driver does not implement host uptime: nodes do not report it."
    return json_response(error_body("compute", 501, message), status=501)


# -- aggregates -------------------------------------------------------------------------------


class AggregateList(Body):
    aggregates: list[None]


@routes.get(
    f"{BASE}/os-aggregates",
    "List the host aggregates (none: aiostack has none)",
    replies=[Reply(200, AggregateList, "No aggregates: every host is in the one zone, nova.")],
    errors=(403,),
)
async def list_aggregates(request: web.Request) -> web.Response:
    """aiostack has no host aggregates (nor a way to make one); ``openstack hypervisor show`` asks."""
    await compute(request).list_compute_services()  # admins only, as Nova's
    return json_response(AggregateList(aggregates=[]))
