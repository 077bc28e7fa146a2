"""A server's network interfaces (``/servers/{server_id}/os-interface``): list, show, attach, detach.

Attaching binds a port to the server (the project's unbound port, or a new one on a network) and
has its node hot-plug it; detaching unplugs it and gives the port back (deleted if Nova made it,
else unbound and kept). Both wait for the node. ``tag`` (2.49) is not served.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import InterfaceAttachment
from gateway.compute.common import BASE, ERRORS_OF_A_SERVER, SERVER_ID, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Id, Reply, Request, Routes, given

INTERFACES = f"{BASE}/servers/{{server_id}}/os-interface"

IpAddress = Annotated[str, Meta(min_length=1, max_length=64)]


class InterfaceIpRequest(Request):
    ip_address: IpAddress


class InterfaceRequest(Request):
    """A port of the project (``port_id``), or a network to make one on (``net_id``, with the address
    it should hold); neither: the network a server would boot on."""

    net_id: Id | UnsetType | None = UNSET
    port_id: Id | UnsetType | None = UNSET
    fixed_ips: Annotated[list[InterfaceIpRequest], Meta(min_length=1, max_length=1)] | UnsetType = UNSET


NAMED = {"type": "string"}
PORT_OR_NETWORK = {
    "allOf": [
        {"not": {"required": ["port_id", "net_id"], "properties": {"port_id": NAMED, "net_id": NAMED}}},
        {
            "anyOf": [
                {"not": {"required": ["fixed_ips"]}},
                {"required": ["net_id"], "properties": {"net_id": NAMED}},
            ]
        },
    ]
}
"""What Nova's code refuses with 400 and its schema does not say: a port and a network both named,
and addresses asked with no network."""


class InterfaceRequestBody(Request):
    interfaceAttachment: Annotated[InterfaceRequest, Meta(extra_json_schema=PORT_OR_NETWORK)] | UnsetType = (
        UNSET
    )


class InterfaceIp(Body):
    subnet_id: str
    ip_address: str


class Interface(Body):
    """A port of a server."""

    port_state: str
    fixed_ips: list[InterfaceIp]
    port_id: str
    net_id: str
    mac_addr: str


class InterfaceList(Body):
    interfaceAttachments: list[Interface]


class InterfaceShown(Body):
    interfaceAttachment: Interface


def interface_view(attachment: InterfaceAttachment) -> Interface:
    return Interface(
        port_state=attachment["port_state"],
        fixed_ips=[
            InterfaceIp(subnet_id=f["subnet_id"], ip_address=f["ip_address"]) for f in attachment["fixed_ips"]
        ],
        port_id=attachment["port_id"],
        net_id=attachment["net_id"],
        mac_addr=attachment["mac_addr"],
    )


routes = Routes()


@routes.get(
    INTERFACES,
    "List a server's interfaces",
    replies=[Reply(200, InterfaceList, "The server's ports.")],
    errors=ERRORS_OF_A_SERVER,
    path_types=SERVER_ID,
)
async def list_interfaces(request: web.Request) -> web.Response:
    attachments = await compute(request).list_interfaces(instance_uuid=request.match_info["server_id"])
    return json_response(InterfaceList(interfaceAttachments=[interface_view(a) for a in attachments]))


@routes.post(
    INTERFACES,
    "Attach an interface",
    body=InterfaceRequestBody,
    replies=[Reply(200, InterfaceShown, "Attached.")],
    errors=(400, 403, 404, 409),
    path_types=SERVER_ID,
)
async def attach_interface(request: web.Request, body: InterfaceRequestBody) -> web.Response:
    """400: both net_id and port_id, or fixed_ips without net_id, or an address not of the network;
    404: no such server, network or port; 409: the server is locked or not ACTIVE, PAUSED or SHUTOFF,
    the port is in use, or the address is taken."""
    asked = given(body.interfaceAttachment) or InterfaceRequest()
    fixed_ips = given(asked.fixed_ips)
    attachment = await compute(request).attach_interface(
        instance_uuid=request.match_info["server_id"],
        port_id=given(asked.port_id),
        network_id=given(asked.net_id),
        fixed_ip=fixed_ips[0].ip_address if fixed_ips else None,
    )
    return json_response(InterfaceShown(interfaceAttachment=interface_view(attachment)))


@routes.get(
    f"{INTERFACES}/{{port_id}}",
    "Show a server's interface",
    replies=[Reply(200, InterfaceShown, "The port.")],
    errors=(404,),
    path_types=SERVER_ID,
)
async def show_interface(request: web.Request) -> web.Response:
    """404: no such server or port, or the port is not the server's."""
    attachment = await compute(request).get_interface(
        instance_uuid=request.match_info["server_id"], port_id=request.match_info["port_id"]
    )
    return json_response(InterfaceShown(interfaceAttachment=interface_view(attachment)))


@routes.delete(
    f"{INTERFACES}/{{port_id}}",
    "Detach an interface",
    replies=[Reply(202, None, "Detached.")],
    errors=(404, 409),
    path_types=SERVER_ID,
)
async def detach_interface(request: web.Request) -> web.Response:
    """404: no such server, or the port is not attached to it; 409: the server is locked or not
    ACTIVE, PAUSED or SHUTOFF."""
    await compute(request).detach_interface(
        instance_uuid=request.match_info["server_id"], port_id=request.match_info["port_id"]
    )
    return no_content(202)
