"""Routers (Neutron's ``router``, ``ext-gw-mode`` and ``extraroute`` extensions) under
``/network/v2.0/routers``: GET, POST, and GET, PUT, DELETE one, and PUT ``add_router_interface`` and
``remove_router_interface``, through the net actor's ``Routers`` API.

A router's external gateway is a port of no project on an external network (``router:external``);
its interfaces are ports of its project (``network:router_interface``, ``device_id`` the router), by
subnet (holding the subnet's gateway IP) or by a free port of the project. Neutron's refusals come
with Neutron's messages: a gateway on a network that is not external, overlapping subnets on one
router, a port with no or several fixed IPs: 400 ``BadRequest``; a port in use: 409 ``PortInUse``;
a router with interfaces deleted: 409 ``RouterInUse``; an interface or gateway a floating IP or an
extra route needs: 409. Lists filter, trim, sort and page as the network service's others do
(``gateway.network``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id
from api.net import Net, Text
from api.net import Router as RouterRecord
from api.net import RouterInterface as RouterInterfaceRecord
from gateway.http import client, json_response, no_content
from gateway.network import (
    BASE,
    SORT_KEY,
    Booleans,
    FixedIp,
    FixedIpRequest,
    HostRoute,
    HostRouteRequest,
    ListQuery,
    Numbers,
    ShowQuery,
    Texts,
    changes_of,
    listed,
    partial,
    sort_keys,
    trimmed,
)
from gateway.routing import Body, Link, OpenRequest, Reply, Request, Routes, Time

ROUTERS = f"{BASE}/routers"
ROUTER = f"{ROUTERS}/{{router_id}}"


class ExternalGatewayRequest(Request):
    """The router's gateway: on an external network (absent, or ``{}``: none), SNAT on unless
    ``enable_snat`` is false, addresses of its subnets (default: one of the first with a free one)."""

    network_id: Annotated[Id, Meta(description="An external network (another: 400; none seen: 404).")] | (
        UnsetType
    ) = UNSET
    enable_snat: bool | UnsetType = UNSET
    external_fixed_ips: list[FixedIpRequest] | UnsetType = UNSET


class RouterCreate(Request):
    name: Text = ""
    description: Text = ""
    admin_state_up: bool = True
    external_gateway_info: ExternalGatewayRequest | None = None


class RouterCreateRequest(OpenRequest):
    router: RouterCreate


class RouterUpdate(Request):
    """What may change (absent: unchanged). ``external_gateway_info`` replaces the gateway (null or
    ``{}``: none); ``routes`` replaces the extra routes (null or []: none), each nexthop on a subnet
    of the router's interfaces (else 400)."""

    name: Text | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    admin_state_up: bool | UnsetType = UNSET
    external_gateway_info: ExternalGatewayRequest | UnsetType | None = UNSET
    routes: list[HostRouteRequest] | UnsetType | None = UNSET


class RouterUpdateRequest(OpenRequest):
    router: RouterUpdate


class ExternalGatewayInfo(Body):
    network_id: str
    enable_snat: bool
    external_fixed_ips: list[FixedIp]


class Router(Body):
    id: str
    name: str
    project_id: str
    tenant_id: str
    description: str
    admin_state_up: bool
    status: str
    external_gateway_info: ExternalGatewayInfo | None
    routes: list[HostRoute]
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


class RouterQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    admin_state_up: Booleans = []
    status: Texts = []
    sort_key: Annotated[list[sort_keys(Router)], SORT_KEY] = []


class RouterShown(Body):
    router: Router


RouterFields = partial(Router, "RouterFields")


class RouterTrimmed(Body):
    router: RouterFields


class RouterList(Body):
    routers: list[RouterFields]
    routers_links: list[Link] | UnsetType = UNSET


class RouterInterfaceRequest(OpenRequest):
    """A subnet (``subnet_id``) or a port (``port_id``): one of the two."""

    subnet_id: Id | UnsetType = UNSET
    port_id: Id | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["subnet_id"]}, {"required": ["port_id"]}]
    }

    def __post_init__(self) -> None:
        if (self.subnet_id is UNSET) == (self.port_id is UNSET):
            raise ValueError("the body takes either `subnet_id` or `port_id`")


class RouterInterface(Body):
    """The router (``id``) and the interface's port, network and subnet."""

    id: str
    project_id: str
    tenant_id: str
    port_id: str
    network_id: str
    subnet_id: str
    subnet_ids: list[str]


def router_view(router: RouterRecord) -> Router:
    return msgspec.convert(router, Router)


def interface_view(interface: RouterInterfaceRecord) -> RouterInterface:
    return msgspec.convert(interface, RouterInterface)


def _gateway(asked: ExternalGatewayRequest | None) -> dict[str, Any]:
    """The gateway as the actor takes it (``{}``: none)."""
    return msgspec.to_builtins(asked) if asked is not None else {}


routes = Routes()


@routes.get(
    ROUTERS,
    "List routers",
    query=RouterQuery,
    replies=[Reply(200, RouterList, "The project's routers, oldest first.")],
    errors=(404,),
)
async def list_routers(request: web.Request, query: RouterQuery) -> web.Response:
    found = await client(request, Net).list_routers()
    return json_response(listed(request, [router_view(r) for r in found], query, "routers"))


@routes.post(
    ROUTERS,
    "Create a router",
    body=RouterCreateRequest,
    replies=[Reply(201, RouterShown, "The router.")],
    errors=(400, 404, 409),
)
async def create_router(request: web.Request, body: RouterCreateRequest) -> web.Response:
    """400: a gateway on a network that is not external; 404: no such gateway network; 409: past the
    project's router quota (OverQuota), or no free address on the external network."""
    asked = body.router
    made = await client(request, Net).create_router(
        name=asked.name,
        description=asked.description,
        admin_state_up=asked.admin_state_up,
        external_gateway_info=_gateway(asked.external_gateway_info) or None,
    )
    return json_response(RouterShown(router=router_view(made)), status=201)


@routes.get(
    ROUTER,
    "Show a router",
    query=ShowQuery,
    replies=[Reply(200, RouterTrimmed, "The router (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_router(request: web.Request, query: ShowQuery) -> web.Response:
    found = await client(request, Net).get_router(router_id=request.match_info["router_id"])
    return json_response({"router": trimmed(router_view(found), query)})


@routes.put(
    ROUTER,
    "Update a router",
    body=RouterUpdateRequest,
    replies=[Reply(200, RouterShown, "The router.")],
    errors=(400, 404, 409),
)
async def update_router(request: web.Request, body: RouterUpdateRequest) -> web.Response:
    """400: a gateway on a network that is not external, a route whose nexthop is on none of the
    router's subnets; 404: no such router or gateway network; 409: a gateway floating IPs need
    cleared or moved."""
    changes = changes_of(body.router)
    if "external_gateway_info" in changes:
        changes["external_gateway_info"] = _gateway(changes["external_gateway_info"])
    if "routes" in changes:
        changes["routes"] = msgspec.to_builtins(changes["routes"] or [])
    updated = await client(request, Net).update_router(router_id=request.match_info["router_id"], **changes)
    return json_response(RouterShown(router=router_view(updated)))


@routes.delete(
    ROUTER,
    "Delete a router",
    replies=[Reply(204, None, "Deleted, with its gateway port.")],
    errors=(404, 409),
)
async def delete_router(request: web.Request) -> web.Response:
    """409: it has interfaces (RouterInUse)."""
    await client(request, Net).delete_router(router_id=request.match_info["router_id"])
    return no_content()


@routes.put(
    f"{ROUTER}/add_router_interface",
    "Add an interface to a router",
    body=RouterInterfaceRequest,
    replies=[Reply(200, RouterInterface, "The interface: the router, its new port, network and subnet.")],
    errors=(400, 404, 409),
)
async def add_router_interface(request: web.Request, body: RouterInterfaceRequest) -> web.Response:
    """400: a subnet overlapping one the router is on, or a port with no or several fixed IPs;
    404: no such router, subnet or port; 409: the port is in use (PortInUse)."""
    asked = msgspec.to_builtins(body)
    made = await client(request, Net).add_router_interface(router_id=request.match_info["router_id"], **asked)
    return json_response(interface_view(made))


@routes.put(
    f"{ROUTER}/remove_router_interface",
    "Remove an interface from a router",
    body=RouterInterfaceRequest,
    replies=[Reply(200, RouterInterface, "The interface removed (its port is deleted).")],
    errors=(400, 404, 409),
)
async def remove_router_interface(request: web.Request, body: RouterInterfaceRequest) -> web.Response:
    """404: no such router, or it has no interface on that subnet or port; 409: a floating IP or an
    extra route needs the interface."""
    asked = msgspec.to_builtins(body)
    removed = await client(request, Net).remove_router_interface(
        router_id=request.match_info["router_id"], **asked
    )
    return json_response(interface_view(removed))


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
