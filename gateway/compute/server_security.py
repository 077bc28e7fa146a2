"""A server's security groups as Nova keeps them with Neutron: the groups of its ports, shown by
name, changed on every port at once (``addSecurityGroup``, ``removeSecurityGroup``)."""

from __future__ import annotations

from aiohttp import web

from api.net import Net, Port, SecurityGroup
from bus import Conflict, InvalidRequest, NotFound
from gateway.compute.common import compute
from gateway.http import client

CANNOT_APPLY = (
    "Network requires port_security_enabled and subnet associated in order to apply security groups."
)
"""Nova's ``SecurityGroupCannotBeApplied``."""


async def group_names_by_server(request: web.Request, server_ids: list[str]) -> dict[str, list[str]]:
    """The names of the security groups of these servers' ports the caller sees, by server id, in
    one call (a server without ports, or whose ports are in no group, has none)."""
    return await client(request, Net).group_names_by_device(device_ids=server_ids)


async def add_security_group(request: web.Request, server_id: str, name: str) -> None:
    """Put every port of the server in the project's group ``name`` (a name, or an id).

    :raises NotFound: no such server, or no such group.
    :raises InvalidRequest: the server has no port, or a port without port security.
    """
    group, ports = await _group_and_ports(request, server_id, name)
    if not ports or not all(port["port_security_enabled"] for port in ports):
        raise InvalidRequest(CANNOT_APPLY)
    net = client(request, Net)
    for port in ports:
        if group["id"] not in port["security_groups"]:
            await net.update_port(port_id=port["id"], security_groups=[*port["security_groups"], group["id"]])


async def remove_security_group(request: web.Request, server_id: str, name: str) -> None:
    """Take every port of the server out of the project's group ``name`` (a name, or an id).

    :raises NotFound: no such server, no such group, or no port of the server is in it.
    """
    group, ports = await _group_and_ports(request, server_id, name)
    members = [port for port in ports if group["id"] in port["security_groups"]]
    if not members:
        raise NotFound(f"Security group {name} not associated with the instance {server_id}")
    net = client(request, Net)
    for port in members:
        kept = [group_id for group_id in port["security_groups"] if group_id != group["id"]]
        await net.update_port(port_id=port["id"], security_groups=kept)


async def _group_and_ports(
    request: web.Request, server_id: str, name: str
) -> tuple[SecurityGroup, list[Port]]:
    """The server's project's group ``name`` (by name, else by id) and the server's ports.

    :raises NotFound: no such server (or another project's), no such group.
    :raises Conflict: several of the project's groups have that name.
    """
    instance = await compute(request).get_instance(instance_uuid=server_id)
    net = client(request, Net)
    project = instance["project_id"]
    groups = [group for group in await net.list_security_groups() if group["project_id"] == project]
    named = [group for group in groups if group["name"] == name]
    if len(named) > 1:
        raise Conflict(
            f"Multiple security_group matches found for name '{name}', use an ID to be more specific."
        )
    found = named or [group for group in groups if group["id"] == name]
    if not found:
        raise NotFound(f"Security group {name} is not found for project {project}")
    return found[0], await net.list_ports(device_id=server_id)
