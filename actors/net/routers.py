"""Routers (Neutron's ``router``, ``ext-gw-mode`` and ``extraroute``): a project's routers, their
external gateway and their interfaces, checked as Neutron checks them.

A router's ports are the ports whose device is the router: its gateway (``ROUTER_GATEWAY_OWNER``, of
no project, on an external network) and its interfaces (``ROUTER_INTERFACE_OWNER``, of the router's
project, one fixed IP each). Every change is told, after its transaction, to the host serving the
router (``actors.net.hosts``), and published as a ``router.<change>`` event whose state is the
router with its interfaces (``router_state``).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from actors.net.hosts import least_loaded_host, served, tell_routers
from actors.net.ipam import allocate
from actors.net.ports import new_port
from actors.net.quotas import check_quota
from actors.net.schema import NETWORK, PORT, ROUTER, SUBNET
from actors.net.state import Db, NetState, caller_project, insert, scope, update
from api.net import (
    ROUTER_GATEWAY_OWNER,
    ROUTER_INTERFACE_OWNER,
    BadRequest,
    ExternalGatewayRequest,
    HostRoute,
    InvalidRoutes,
    Port,
    PortInUse,
    Router,
    RouterExternalGatewayInUseByFloatingIp,
    RouterInterface,
    RouterInterfaceInUseByFloatingIP,
    RouterInterfaceInUseByRoute,
    RouterInterfaceNotFound,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RouterNotFound,
    Routers,
)
from runtime.stamps import new_uuid


def bad_router(reason: str) -> BadRequest:
    """Neutron's "Bad router request: <reason>." (400)."""
    return BadRequest(f"Bad router request: {reason}.")


async def get_router(db: Db, router_id: str, project: str | None) -> Router:
    """:raises RouterNotFound: none ``project`` sees (None: any)."""
    condition, params = "r.id = ?", [router_id]
    if project is not None:
        condition, params = f"{condition} AND r.project_id = ?", [*params, project]
    rows = await db.fetchall(f"{ROUTER.select} WHERE {condition}", params)
    if not rows:
        raise RouterNotFound(f"Router {router_id} could not be found")
    return ROUTER.view(rows[0])


async def router_ports(db: Db, router_id: str, owner: str) -> list[Port]:
    """The router's gateway port (one at most) or interfaces, oldest first."""
    return await _load_ports(db, "r.device_id = ? AND r.device_owner = ?", [router_id, owner])


async def _load_ports(db: Db, condition: str, params: list[Any]) -> list[Port]:
    rows = await db.fetchall(f"{PORT.select} WHERE {condition} ORDER BY r.created_at, r.id", params)
    return [PORT.view(row) for row in rows]


async def router_state(db: Db, router: Router) -> dict[str, Any]:
    """The router (its view as read in the same transaction) as its events show it, with
    ``interfaces``: a ``{port_id, subnet_id, ip_address}`` for each address of its interface ports."""
    interfaces = [
        {"port_id": port["id"], "subnet_id": fixed["subnet_id"], "ip_address": fixed["ip_address"]}
        for port in await router_ports(db, router["id"], ROUTER_INTERFACE_OWNER)
        for fixed in port["fixed_ips"]
    ]
    return {**router, "interfaces": interfaces}


async def _interface_subnets(db: Db, router_id: str) -> list[dict[str, Any]]:
    """The subnets (id, cidr) the router's interfaces are on."""
    return await db.fetchall(
        "SELECT s.id, s.cidr FROM ports p JOIN ip_allocations a ON a.port_id = p.id"
        " JOIN subnets s ON s.id = a.subnet_id WHERE p.device_id = ? AND p.device_owner = ?",
        (router_id, ROUTER_INTERFACE_OWNER),
    )


async def _floating_ips_through(db: Db, router_id: str) -> list[dict[str, Any]]:
    """The associated floating IPs reaching their port through the router (id, subnet of the fixed IP)."""
    return await db.fetchall(
        "SELECT f.id, a.subnet_id FROM floatingips f JOIN ip_allocations a"
        " ON a.port_id = f.port_id AND a.ip_address = f.fixed_ip_address WHERE f.router_id = ?",
        (router_id,),
    )


class RouterServant(Routers):
    """Serves ``api.net.Routers``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_router(
        self,
        *,
        name: str = "",
        description: str = "",
        admin_state_up: bool = True,
        external_gateway_info: ExternalGatewayRequest | None = None,
    ) -> Router:
        project, owner = scope(), caller_project()
        async with self.state.writing() as db:
            await check_quota(db, "router", owner)
            router_id = new_uuid()
            row = {"id": router_id, "name": name, "project_id": owner, "description": description}
            row |= {"admin_state_up": admin_state_up, "enable_snat": True, "routes": "[]"}
            await insert(db, "routers", {**row, "host": await least_loaded_host(db)})
            if external_gateway_info and external_gateway_info.get("network_id"):
                snat = await self._set_gateway(db, router_id, external_gateway_info, project)
                await db.execute("UPDATE routers SET enable_snat = ? WHERE id = ?", (snat, router_id))
            router = await get_router(db, router_id, None)
            shown = await router_state(db, router)
            change = await served(db, [router_id])
        await tell_routers(self.state.bus, change)
        await self.state.announce("router.created", shown)
        return router

    async def list_routers(self) -> list[Router]:
        project = scope()
        condition, params = ("r.project_id = ?", [project]) if project is not None else ("1 = 1", [])
        rows = await self.state.store.fetchall(
            f"{ROUTER.select} WHERE {condition} ORDER BY r.created_at, r.id", params
        )
        return [ROUTER.view(row) for row in rows]

    async def get_router(self, *, router_id: str) -> Router:
        return await get_router(self.state.store, router_id, scope())

    async def update_router(
        self,
        *,
        router_id: str,
        name: str | None = None,
        description: str | None = None,
        admin_state_up: bool | None = None,
        external_gateway_info: ExternalGatewayRequest | None = None,
        routes: list[HostRoute] | None = None,
    ) -> Router:
        project = scope()
        async with self.state.writing() as db:
            await get_router(db, router_id, project)
            changes: dict[str, Any] = {"name": name, "description": description}
            changes["admin_state_up"] = admin_state_up
            if external_gateway_info is not None:
                changes["enable_snat"] = await self._set_gateway(
                    db, router_id, external_gateway_info, project
                )
            if routes is not None:
                changes["routes"] = json.dumps(await _checked_routes(db, router_id, routes))
            await update(db, "routers", router_id, changes)
            router = await get_router(db, router_id, None)
            shown = await router_state(db, router)
            change = await served(db, [router_id])
        await tell_routers(self.state.bus, change)
        await self.state.announce("router.updated", shown)
        return router

    async def delete_router(self, *, router_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            router = await get_router(db, router_id, project)
            if await router_ports(db, router_id, ROUTER_INTERFACE_OWNER):
                raise RouterInUse(f"Router {router_id} still has ports")
            shown = await router_state(db, router)
            change = await served(db, [router_id])
            await db.execute(
                "UPDATE floatingips SET router_id = NULL, fixed_ip_address = NULL WHERE router_id = ?",
                (router_id,),
            )
            await db.execute(
                "DELETE FROM ports WHERE device_id = ? AND device_owner = ?",
                (router_id, ROUTER_GATEWAY_OWNER),
            )
            await db.execute("DELETE FROM routers WHERE id = ?", (router_id,))
        await tell_routers(self.state.bus, change)
        await self.state.announce("router.deleted", shown)

    async def add_router_interface(
        self, *, router_id: str, subnet_id: str | None = None, port_id: str | None = None
    ) -> RouterInterface:
        if (subnet_id is None) == (port_id is None):
            raise bad_router("Either subnet_id or port_id must be specified")
        project = scope()
        async with self.state.writing() as db:
            router = await get_router(db, router_id, project)
            if port_id is not None:
                port = await self._adopt_port(db, router, port_id, project)
            else:
                assert subnet_id is not None
                port = await self._new_interface(db, router, subnet_id, project)
            answer = _interface(router, port)
            shown = await router_state(db, router)
            change = await served(db, [router_id])
        await tell_routers(self.state.bus, change)
        await self.state.announce("router.interface_added", shown)
        return answer

    async def remove_router_interface(
        self, *, router_id: str, subnet_id: str | None = None, port_id: str | None = None
    ) -> RouterInterface:
        if subnet_id is None and port_id is None:
            raise bad_router("Either subnet_id or port_id must be specified")
        project = scope()
        async with self.state.writing() as db:
            router = await get_router(db, router_id, project)
            interfaces = await router_ports(db, router_id, ROUTER_INTERFACE_OWNER)
            if port_id is not None:
                found = [port for port in interfaces if port["id"] == port_id]
                if not found:
                    raise RouterInterfaceNotFound(
                        f"Router {router_id} does not have an interface with id {port_id}"
                    )
            else:
                found = [
                    port
                    for port in interfaces
                    if any(fixed["subnet_id"] == subnet_id for fixed in port["fixed_ips"])
                ]
                if not found:
                    raise RouterInterfaceNotFoundForSubnet(
                        f"Router {router_id} has no interface on subnet {subnet_id}"
                    )
            port = found[0]
            await _check_unused(db, router, port)
            await db.execute("DELETE FROM ports WHERE id = ?", (port["id"],))
            shown = await router_state(db, router)
            change = await served(db, [router_id])
        await tell_routers(self.state.bus, change)
        await self.state.announce("port.deleted", port)
        await self.state.announce("router.interface_removed", shown)
        return _interface(router, port)

    async def _set_gateway(
        self, db: Db, router_id: str, asked: ExternalGatewayRequest, project: str | None
    ) -> bool:
        """Make ``asked`` the router's gateway (no ``network_id``: none): keep its port when the
        network and addresses stay, else replace it. Answer the SNAT it asks (default: on).

        :raises NotFound: no such network ``project`` sees.
        :raises BadRequest: the network is not external.
        :raises RouterExternalGatewayInUseByFloatingIp: clearing or moving a gateway floating IPs use.
        """
        network_id = asked.get("network_id")
        snat = asked.get("enable_snat", True)
        current = await router_ports(db, router_id, ROUTER_GATEWAY_OWNER)
        if network_id is not None:
            network = await self.state.get(NETWORK, network_id, project, db)
            if not network["router:external"]:
                raise bad_router(f"Network {network_id} is not an external network")
            if current and current[0]["network_id"] == network_id and "external_fixed_ips" not in asked:
                return snat
        if current:
            if await _floating_ips_through(db, router_id):
                raise RouterExternalGatewayInUseByFloatingIp(
                    f"Gateway cannot be updated for router {router_id}, since a gateway to external"
                    f" network {current[0]['network_id']} is required by one or more floating IPs."
                )
            await db.execute("DELETE FROM ports WHERE id = ?", (current[0]["id"],))
        if network_id is not None:
            columns = {"project_id": "", "device_id": router_id, "device_owner": ROUTER_GATEWAY_OWNER}
            fixed_ips = asked.get("external_fixed_ips")
            await new_port(db, network_id, None, list(fixed_ips) if fixed_ips else None, columns)
        return snat

    async def _new_interface(self, db: Db, router: Router, subnet_id: str, project: str | None) -> Port:
        """A new interface port holding the subnet's gateway IP."""
        subnet = await self.state.get(SUBNET, subnet_id, project, db)
        await _check_overlap(db, router["id"], subnet_id, subnet["cidr"])
        await check_quota(db, "port", router["project_id"])
        columns = {"project_id": router["project_id"], "device_id": router["id"]}
        columns["device_owner"] = ROUTER_INTERFACE_OWNER
        port = await new_port(db, subnet["network_id"], project, [], columns)
        await allocate(db, subnet_id, IPv4Address(subnet["gateway_ip"]), port["id"])
        return await self.state.get(PORT, port["id"], None, db)

    async def _adopt_port(self, db: Db, router: Router, port_id: str, project: str | None) -> Port:
        """Make a port of the project with one fixed IP and no device an interface of the router."""
        port = await self.state.get(PORT, port_id, project, db)
        if port["device_id"] or port["device_owner"]:
            raise PortInUse(
                f"Unable to complete operation on port {port_id} for network {port['network_id']}."
                f" Port already has an attached device {port['device_id']}."
            )
        if len(port["fixed_ips"]) != 1:
            raise bad_router(f"Router port {port_id} must have exactly one fixed IP")
        fixed = port["fixed_ips"][0]
        subnet = await self.state.get(SUBNET, fixed["subnet_id"], None, db)
        await _check_overlap(db, router["id"], subnet["id"], subnet["cidr"])
        await update(
            db, "ports", port_id, {"device_id": router["id"], "device_owner": ROUTER_INTERFACE_OWNER}
        )
        return await self.state.get(PORT, port_id, None, db)


async def _check_overlap(db: Db, router_id: str, subnet_id: str, cidr: str) -> None:
    """:raises BadRequest: the router is on the subnet already, or on one overlapping it."""
    for other in await _interface_subnets(db, router_id):
        if other["id"] == subnet_id:
            raise bad_router(f"Router already has a port on subnet {subnet_id}")
        if ip_network(cidr).overlaps(ip_network(other["cidr"])):
            raise bad_router(
                f"Cidr {cidr} of subnet {subnet_id} overlaps with cidr {other['cidr']}"
                f" of subnet {other['id']}"
            )


async def _check_unused(db: Db, router: Router, port: Port) -> None:
    """:raises RouterInterfaceInUseByFloatingIP: a floating IP reaches a port of the interface's
        subnet through the router.
    :raises RouterInterfaceInUseByRoute: an extra route's nexthop is on that subnet."""
    subnet_ids = {fixed["subnet_id"] for fixed in port["fixed_ips"]}
    for floating in await _floating_ips_through(db, router["id"]):
        if floating["subnet_id"] in subnet_ids:
            raise RouterInterfaceInUseByFloatingIP(
                f"Router interface for subnet {floating['subnet_id']} on router {router['id']} cannot be"
                " deleted, as it is required by one or more floating IPs."
            )
    for subnet_id in subnet_ids:
        subnet = await db.fetchone("SELECT cidr FROM subnets WHERE id = ?", (subnet_id,))
        if subnet and any(
            ip_address(route["nexthop"]) in ip_network(subnet["cidr"]) for route in router["routes"]
        ):
            raise RouterInterfaceInUseByRoute(
                f"Router interface for subnet {subnet_id} on router {router['id']} cannot be deleted,"
                " as it is required by one or more routes."
            )


async def _checked_routes(db: Db, router_id: str, routes: list[HostRoute]) -> list[HostRoute]:
    """The extra routes as kept (destinations as networks), each nexthop on an interface's subnet.

    :raises InvalidRoutes: a destination no IPv4 CIDR, a nexthop no IPv4 address or on no
        interface's subnet, or a route given twice.
    """
    connected = [IPv4Network(subnet["cidr"]) for subnet in await _interface_subnets(db, router_id)]
    kept: list[HostRoute] = []
    for route in routes:
        try:
            destination = IPv4Network(route["destination"])
            nexthop = IPv4Address(route["nexthop"])
        except ValueError as exc:
            raise InvalidRoutes(f"Invalid format for routes: {routes}, {exc}") from None
        if not any(nexthop in network for network in connected):
            raise InvalidRoutes(
                f"Invalid format for routes: {routes}, the nexthop is not connected with router"
            )
        entry: HostRoute = {"destination": str(destination), "nexthop": str(nexthop)}
        if entry in kept:
            raise InvalidRoutes(f"Invalid format for routes: {routes}, duplicate route {entry}")
        kept.append(entry)
    return kept


def _interface(router: Router, port: Port) -> RouterInterface:
    subnet_ids = [fixed["subnet_id"] for fixed in port["fixed_ips"]]
    return {
        "id": router["id"],
        "project_id": router["project_id"],
        "tenant_id": router["project_id"],
        "port_id": port["id"],
        "network_id": port["network_id"],
        "subnet_id": subnet_ids[0] if subnet_ids else "",
        "subnet_ids": subnet_ids,
    }
