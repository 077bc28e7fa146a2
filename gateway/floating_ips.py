"""Floating IPs (Neutron's ``router`` extension) under ``/network/v2.0/floatingips``: GET, POST, and
GET, PUT, DELETE one, through the net actor's ``FloatingIps`` API.

A floating IP is an address of an external network, associated with a fixed IP of one of the
project's ports behind a router whose gateway is on that network (ACTIVE), or with none (DOWN).
Neutron's refusals come with Neutron's messages: a network that is not external, a fixed IP the port
does not hold: 400 ``BadRequest``; no router joining the port's subnet to the network: 404
``ExternalGatewayForFloatingIPNotFound``; an address taken: 409 ``IpAddressAlreadyAllocated``; a
fixed IP with a floating IP already: 409 ``FloatingIPPortAlreadyAssociated``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from api.fields import Id
from api.net import FloatingIp as FloatingIpRecord
from api.net import Net, Text
from gateway.http import client, json_response, no_content
from gateway.network import (
    BASE,
    SORT_KEY,
    Ipv4Address,
    ListQuery,
    Numbers,
    ShowQuery,
    Texts,
    listed,
    partial,
    sort_keys,
    trimmed,
)
from gateway.routing import Body, Link, OpenRequest, Reply, Request, Routes, Time

FLOATINGIPS = f"{BASE}/floatingips"
FLOATINGIP = f"{FLOATINGIPS}/{{floatingip_id}}"


class FloatingIpCreate(Request):
    """An address of an external network (the one asked, else a free one), associated with a port's
    fixed IP when ``port_id`` is given (``fixed_ip_address``, or the port's only one)."""

    floating_network_id: Id
    floating_ip_address: Ipv4Address | None = None
    port_id: Id | None = None
    fixed_ip_address: Ipv4Address | None = None
    description: Text = ""


class FloatingIpCreateRequest(OpenRequest):
    floatingip: FloatingIpCreate


class FloatingIpUpdate(Request):
    """What may change (absent: unchanged): the port (null: disassociate) and its fixed IP, the
    description."""

    port_id: Id | UnsetType | None = UNSET
    fixed_ip_address: Ipv4Address | UnsetType | None = UNSET
    description: Text | UnsetType = UNSET


class FloatingIpUpdateRequest(OpenRequest):
    floatingip: FloatingIpUpdate


class FloatingIp(Body):
    id: str
    project_id: str
    tenant_id: str
    floating_network_id: str
    floating_ip_address: str
    port_id: str | None
    fixed_ip_address: str | None
    router_id: str | None
    status: Literal["ACTIVE", "DOWN"]
    description: str
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


class FloatingIpQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    floating_network_id: Texts = []
    floating_ip_address: Texts = []
    port_id: Texts = []
    fixed_ip_address: Texts = []
    router_id: Texts = []
    status: Texts = []
    sort_key: Annotated[list[sort_keys(FloatingIp)], SORT_KEY] = []


class FloatingIpShown(Body):
    floatingip: FloatingIp


FloatingIpFields = partial(FloatingIp, "FloatingIpFields")


class FloatingIpTrimmed(Body):
    floatingip: FloatingIpFields


class FloatingIpList(Body):
    floatingips: list[FloatingIpFields]
    floatingips_links: list[Link] | UnsetType = UNSET


def floatingip_view(floating: FloatingIpRecord) -> FloatingIp:
    return msgspec.convert(floating, FloatingIp)


routes = Routes()


@routes.get(
    FLOATINGIPS,
    "List floating IPs",
    query=FloatingIpQuery,
    replies=[Reply(200, FloatingIpList, "The project's floating IPs, oldest first.")],
    errors=(404,),
)
async def list_floatingips(request: web.Request, query: FloatingIpQuery) -> web.Response:
    found = await client(request, Net).list_floatingips()
    return json_response(listed(request, [floatingip_view(f) for f in found], query, "floatingips"))


@routes.post(
    FLOATINGIPS,
    "Create a floating IP",
    body=FloatingIpCreateRequest,
    replies=[Reply(201, FloatingIpShown, "The floating IP.")],
    errors=(400, 404, 409),
)
async def create_floatingip(request: web.Request, body: FloatingIpCreateRequest) -> web.Response:
    """400: a network that is not external, a fixed IP the port does not hold; 404: no such network
    or port, or no router joins the port's subnet to the network; 409: the address is taken or the
    network has none free, the fixed IP has a floating IP already, past the project's quota."""
    made = await client(request, Net).create_floatingip(**msgspec.to_builtins(body.floatingip))
    return json_response(FloatingIpShown(floatingip=floatingip_view(made)), status=201)


@routes.get(
    FLOATINGIP,
    "Show a floating IP",
    query=ShowQuery,
    replies=[Reply(200, FloatingIpTrimmed, "The floating IP (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_floatingip(request: web.Request, query: ShowQuery) -> web.Response:
    found = await client(request, Net).get_floatingip(floatingip_id=request.match_info["floatingip_id"])
    return json_response({"floatingip": trimmed(floatingip_view(found), query)})


@routes.put(
    FLOATINGIP,
    "Update a floating IP",
    body=FloatingIpUpdateRequest,
    replies=[Reply(200, FloatingIpShown, "The floating IP.")],
    errors=(400, 404, 409),
)
async def update_floatingip(request: web.Request, body: FloatingIpUpdateRequest) -> web.Response:
    """Associate (``port_id``), disassociate (``port_id`` null); errors as on create."""
    asked = body.floatingip
    updated = await client(request, Net).update_floatingip(
        floatingip_id=request.match_info["floatingip_id"],
        port_id=None if asked.port_id is UNSET else asked.port_id or "",
        fixed_ip_address=asked.fixed_ip_address or None,
        description=None if asked.description is UNSET else asked.description,
    )
    return json_response(FloatingIpShown(floatingip=floatingip_view(updated)))


@routes.delete(
    FLOATINGIP,
    "Delete a floating IP",
    replies=[Reply(204, None, "Deleted, its address given back.")],
    errors=(404,),
)
async def delete_floatingip(request: web.Request) -> web.Response:
    await client(request, Net).delete_floatingip(floatingip_id=request.match_info["floatingip_id"])
    return no_content()


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
