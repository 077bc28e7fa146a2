"""Network quotas (Neutron's ``quotas`` and ``quota_details`` extensions) under
``/network/v2.0/quotas``: a project's limits, shown, set and reset, and its usage.

Eight are enforced by the net actor, each in the transaction that makes its resource
(``actors/net/quotas.py``): ``network``, ``subnet``, ``port``, ``subnetpool``, ``security_group``,
``security_group_rule``, ``router`` and ``floatingip``. Neutron's other (``rbac_policy``) is shown
-1, unlimited, because nothing here limits it: aiostack has no RBAC policies yet. Setting it to
anything but -1 is refused (400). Members read their own
project's; admins read and set any (and list the projects that have limits of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.net import Net, QuotaLimit
from gateway.http import client, json_response, no_content
from gateway.routing import Body, Reply, Request, Routes, id_other_than

BASE = "/network/v2.0"
QUOTAS = f"{BASE}/quotas"
QUOTA = f"{QUOTAS}/{{project_id}}"
QUOTA_PROJECT = {"project_id": id_other_than("default", "details")}
"""A project id is none of the sibling routes' words (``/quotas/details`` is no project's)."""
UNLIMITED = -1
ENFORCED = (
    "network",
    "subnet",
    "port",
    "subnetpool",
    "security_group",
    "security_group_rule",
    "router",
    "floatingip",
)
NOT_BUILT = ("rbac_policy",)
"""Neutron's quota resources aiostack has none of: always -1, never set."""


class NetworkQuota(Body):
    """A project's limits (-1: unlimited)."""

    network: int
    subnet: int
    port: int
    subnetpool: int
    router: int
    floatingip: int
    security_group: int
    security_group_rule: int
    rbac_policy: int


class NetworkProjectQuota(NetworkQuota):
    project_id: str
    tenant_id: str


class NetworkQuotaShown(Body):
    quota: NetworkQuota


class NetworkQuotaList(Body):
    quotas: list[NetworkProjectQuota]


class NetworkQuotaUsage(Body):
    limit: int
    used: int
    reserved: int


class NetworkQuotaDetails(Body):
    network: NetworkQuotaUsage
    subnet: NetworkQuotaUsage
    port: NetworkQuotaUsage
    subnetpool: NetworkQuotaUsage
    router: NetworkQuotaUsage
    floatingip: NetworkQuotaUsage
    security_group: NetworkQuotaUsage
    security_group_rule: NetworkQuotaUsage
    rbac_policy: NetworkQuotaUsage


class NetworkQuotaDetailsShown(Body):
    quota: NetworkQuotaDetails


NotBuiltLimit = Annotated[
    Literal[-1],
    Meta(description="Only -1 (unlimited, a no-op): aiostack has none of these yet, so nothing limits them."),
]


class NetworkQuotaChanges(Request):
    """The limits to set (-1: unlimited; absent: unchanged). One below what the project uses is
    allowed (it only refuses new creates) unless ``check_limit`` refuses it (409, none is set).
    ``force`` is taken as Neutron takes it (openstackclient's ``--force`` sends it) and changes
    nothing: without ``check_limit``, a limit is set whatever the project uses."""

    network: QuotaLimit | UnsetType = UNSET
    subnet: QuotaLimit | UnsetType = UNSET
    port: QuotaLimit | UnsetType = UNSET
    subnetpool: QuotaLimit | UnsetType = UNSET
    router: QuotaLimit | UnsetType = UNSET
    floatingip: QuotaLimit | UnsetType = UNSET
    security_group: QuotaLimit | UnsetType = UNSET
    security_group_rule: QuotaLimit | UnsetType = UNSET
    rbac_policy: NotBuiltLimit | UnsetType = UNSET
    check_limit: bool = False
    force: bool = False


class NetworkQuotaUpdate(Request):
    quota: NetworkQuotaChanges


def _shown(limits: Mapping[str, Any]) -> dict[str, Any]:
    """A project's limits of the enforced resources, with Neutron's others (unlimited)."""
    return {**dict.fromkeys(NOT_BUILT, UNLIMITED), **{resource: limits[resource] for resource in ENFORCED}}


routes = Routes()


@routes.get(
    QUOTAS,
    "List the projects' quotas",
    replies=[Reply(200, NetworkQuotaList, "The limits of every project that has some of its own (admins).")],
)
async def list_quotas(request: web.Request) -> web.Response:
    """403: the caller is no admin."""
    listed = await client(request, Net).list_quotas()
    shown = [
        NetworkProjectQuota(**_shown(limits), project_id=limits["project_id"], tenant_id=limits["project_id"])
        for limits in listed
    ]
    return json_response(NetworkQuotaList(quotas=shown))


@routes.get(
    QUOTA,
    "Show a project's quotas",
    path_types=QUOTA_PROJECT,
    replies=[Reply(200, NetworkQuotaShown, "Its limits (-1: unlimited).")],
    errors=(404,),
)
async def show_quota(request: web.Request) -> web.Response:
    """403: another project's, and the caller is no admin."""
    limits = await client(request, Net).get_quotas(project_id=request.match_info["project_id"])
    return json_response(NetworkQuotaShown(quota=NetworkQuota(**_shown(limits))))


@routes.get(
    f"{QUOTA}/default",
    "Show the default quotas",
    replies=[Reply(200, NetworkQuotaShown, "The limits of a project with none of its own.")],
    errors=(404,),
)
async def show_default_quota(request: web.Request) -> web.Response:
    """403: another project's, and the caller is no admin; 404: an empty project id (the path is
    then ``/quotas/default``, no route)."""
    limits = await client(request, Net).get_default_quotas(project_id=request.match_info["project_id"])
    return json_response(NetworkQuotaShown(quota=NetworkQuota(**_shown(limits))))


@routes.get(
    f"{QUOTA}/details",
    "Show a project's quotas and usage",
    replies=[
        Reply(200, NetworkQuotaDetailsShown, "Each limit with what the project uses (reserved: always 0).")
    ],
    errors=(404,),
)
async def show_quota_details(request: web.Request) -> web.Response:
    """403: another project's, and the caller is no admin; 404: an empty project id (the path is
    then ``/quotas/details``, no route)."""
    details = await client(request, Net).get_quota_details(project_id=request.match_info["project_id"])
    unbuilt = NetworkQuotaUsage(limit=UNLIMITED, used=0, reserved=0)
    shown = {
        **dict.fromkeys(NOT_BUILT, unbuilt),
        **{name: NetworkQuotaUsage(**details[name]) for name in ENFORCED},
    }
    return json_response(NetworkQuotaDetailsShown(quota=NetworkQuotaDetails(**shown)))


@routes.put(
    QUOTA,
    "Set a project's quotas",
    path_types=QUOTA_PROJECT,
    body=NetworkQuotaUpdate,
    replies=[Reply(200, NetworkQuotaShown, "Its limits now.")],
    errors=(404, 409),
)
async def update_quota(request: web.Request, body: NetworkQuotaUpdate) -> web.Response:
    """Admins (else 403); 409: ``check_limit``, and a limit below what the project uses."""
    limits = {
        resource: value for resource in ENFORCED if (value := getattr(body.quota, resource)) is not UNSET
    }
    updated = await client(request, Net).set_quotas(
        project_id=request.match_info["project_id"], limits=limits, check_limit=body.quota.check_limit
    )
    return json_response(NetworkQuotaShown(quota=NetworkQuota(**_shown(updated))))


@routes.delete(
    QUOTA,
    "Reset a project's quotas to the defaults",
    path_types=QUOTA_PROJECT,
    replies=[Reply(204, None, "Its limits are the defaults again.")],
    errors=(404,),
)
async def delete_quota(request: web.Request) -> web.Response:
    """Admins (else 403); 404: the project has no limits of its own."""
    await client(request, Net).delete_quotas(project_id=request.match_info["project_id"])
    return no_content()
