"""Floating IPs (Neutron's): an address of an external network held by a port of no project
(``FLOATINGIP_OWNER``, its device the floating IP), associated with a fixed IP of a project's port
behind a router whose gateway is on that network (``router_id``). Deleting the associated port
disassociates it (``actors.net.hosts.disassociate_ports``); every change is told to the router's host.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from actors.net.hosts import merged, served, tell_routers
from actors.net.ports import new_port
from actors.net.quotas import check_quota
from actors.net.schema import FLOATINGIP, NETWORK, PORT
from actors.net.state import Db, NetState, caller_project, insert, scope, update
from api.net import (
    FLOATINGIP_OWNER,
    ROUTER_GATEWAY_OWNER,
    ROUTER_INTERFACE_OWNER,
    BadRequest,
    ExternalGatewayForFloatingIPNotFound,
    FixedIpRequest,
    FloatingIp,
    FloatingIPNotFound,
    FloatingIPPortAlreadyAssociated,
    FloatingIps,
    IpAddressAlreadyAllocated,
)
from bus import Conflict
from runtime.stamps import new_uuid


def bad_floatingip(reason: str) -> BadRequest:
    """Neutron's "Bad floatingip request: <reason>." (400)."""
    return BadRequest(f"Bad floatingip request: {reason}.")


async def get_floatingip(db: Db, floatingip_id: str, project: str | None) -> FloatingIp:
    """:raises FloatingIPNotFound: none ``project`` sees (None: any)."""
    condition, params = "r.id = ?", [floatingip_id]
    if project is not None:
        condition, params = f"{condition} AND r.project_id = ?", [*params, project]
    rows = await db.fetchall(f"{FLOATINGIP.select} WHERE {condition}", params)
    if not rows:
        raise FloatingIPNotFound(f"Floating IP {floatingip_id} could not be found")
    return FLOATINGIP.view(rows[0])


class FloatingIpServant(FloatingIps):
    """Serves ``api.net.FloatingIps``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_floatingip(
        self,
        *,
        floating_network_id: str,
        floating_ip_address: str | None = None,
        port_id: str | None = None,
        fixed_ip_address: str | None = None,
        description: str = "",
    ) -> FloatingIp:
        project, owner = scope(), caller_project()
        async with self.state.writing() as db:
            network = await self.state.get(NETWORK, floating_network_id, project, db)
            if not network["router:external"]:
                raise bad_floatingip(f"Network {floating_network_id} is not a valid external network")
            await check_quota(db, "floatingip", owner)
            floatingip_id = new_uuid()
            asked: list[FixedIpRequest] | None = None
            if floating_ip_address is not None:
                _address(floating_ip_address, "floating_ip_address")
                asked = [{"ip_address": floating_ip_address}]
            columns = {"project_id": "", "device_id": floatingip_id, "device_owner": FLOATINGIP_OWNER}
            try:
                port = await new_port(db, floating_network_id, None, asked, columns)
            except Conflict as exc:
                if floating_ip_address is None or "already allocated" not in str(exc):
                    raise
                raise IpAddressAlreadyAllocated(str(exc)) from None
            row: dict[str, Any] = {"id": floatingip_id, "project_id": owner, "description": description}
            row |= {"floating_network_id": floating_network_id, "floating_port_id": port["id"]}
            row["floating_ip_address"] = port["fixed_ips"][0]["ip_address"] if port["fixed_ips"] else ""
            if not row["floating_ip_address"]:
                raise bad_floatingip(f"Network {floating_network_id} has no subnet to take an address from")
            row |= {"port_id": None, "fixed_ip_address": None, "router_id": None}
            if port_id is not None:
                row |= await _association(self.state, db, row, port_id, fixed_ip_address, project)
            await insert(db, "floatingips", row)
            change = await served(db, [row["router_id"]] if row["router_id"] else [])
            made = await get_floatingip(db, floatingip_id, None)
        await tell_routers(self.state.bus, change)
        return made

    async def list_floatingips(self) -> list[FloatingIp]:
        project = scope()
        condition, params = ("r.project_id = ?", [project]) if project is not None else ("1 = 1", [])
        rows = await self.state.store.fetchall(
            f"{FLOATINGIP.select} WHERE {condition} ORDER BY r.created_at, r.id", params
        )
        return [FLOATINGIP.view(row) for row in rows]

    async def get_floatingip(self, *, floatingip_id: str) -> FloatingIp:
        return await get_floatingip(self.state.store, floatingip_id, scope())

    async def update_floatingip(
        self,
        *,
        floatingip_id: str,
        port_id: str | None = None,
        fixed_ip_address: str | None = None,
        description: str | None = None,
    ) -> FloatingIp:
        project = scope()
        async with self.state.writing() as db:
            floating = await get_floatingip(db, floatingip_id, project)
            before = await served(db, [floating["router_id"]] if floating["router_id"] else [])
            changes: dict[str, Any] = {"description": description}
            after = {}
            if port_id == "":
                await db.execute(
                    "UPDATE floatingips SET port_id = NULL, fixed_ip_address = NULL, router_id = NULL"
                    " WHERE id = ?",
                    (floatingip_id,),
                )
            elif port_id is not None:
                row = {"id": floatingip_id, **floating}
                changes |= await _association(self.state, db, row, port_id, fixed_ip_address, project)
                after = await served(db, [changes["router_id"]])
            await update(db, "floatingips", floatingip_id, changes)
            updated = await get_floatingip(db, floatingip_id, None)
        if port_id is not None:
            await tell_routers(self.state.bus, merged(before, after))
        return updated

    async def delete_floatingip(self, *, floatingip_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            floating = await get_floatingip(db, floatingip_id, project)
            change = await served(db, [floating["router_id"]] if floating["router_id"] else [])
            row = await db.fetchone("SELECT floating_port_id FROM floatingips WHERE id = ?", (floatingip_id,))
            await db.execute("DELETE FROM floatingips WHERE id = ?", (floatingip_id,))
            await db.execute("DELETE FROM ports WHERE id = ?", (row["floating_port_id"],))
        await tell_routers(self.state.bus, change)


def _address(text: str, field: str) -> IPv4Address:
    """:raises BadRequest: ``text`` is no IPv4 address."""
    try:
        return IPv4Address(text)
    except ValueError:
        raise bad_floatingip(f"{field} {text} is not a valid IPv4 address") from None


async def _association(
    state: NetState,
    db: Db,
    floating: dict[str, Any],
    port_id: str,
    fixed_ip_address: str | None,
    project: str | None,
) -> dict[str, Any]:
    """The columns associating ``floating`` (its id and network) with a fixed IP of ``port_id``,
    through the router joining that IP's subnet to the floating IP's network.

    :raises NotFound: no such port ``project`` sees.
    :raises BadRequest: a fixed IP the port does not hold; none given for a port with several, or
        the port has none.
    :raises ExternalGatewayForFloatingIPNotFound: no router joins the subnet to the network.
    :raises FloatingIPPortAlreadyAssociated: another floating IP of the network has that fixed IP.
    """
    port = await state.get(PORT, port_id, project, db)
    fixed_ips = port["fixed_ips"]
    if fixed_ip_address is not None:
        fixed = [entry for entry in fixed_ips if entry["ip_address"] == fixed_ip_address]
        if not fixed:
            raise bad_floatingip(f"Port {port_id} does not have fixed ip {fixed_ip_address}")
    elif not fixed_ips:
        raise bad_floatingip(f"Port {port_id} does not have any IP addresses")
    elif len(fixed_ips) > 1:
        raise bad_floatingip(
            f"Port {port_id} has multiple fixed IPv4 addresses. Must provide a specific IPv4 address"
            " when assigning a floating IP"
        )
    else:
        fixed = fixed_ips
    subnet_id, address = fixed[0]["subnet_id"], fixed[0]["ip_address"]
    network_id = floating["floating_network_id"]
    router = await db.fetchone(
        "SELECT i.device_id AS router_id FROM ports i JOIN ip_allocations a ON a.port_id = i.id"
        " JOIN ports g ON g.device_id = i.device_id AND g.device_owner = ? AND g.network_id = ?"
        " WHERE i.device_owner = ? AND a.subnet_id = ? ORDER BY i.created_at LIMIT 1",
        (ROUTER_GATEWAY_OWNER, network_id, ROUTER_INTERFACE_OWNER, subnet_id),
    )
    if router is None:
        raise ExternalGatewayForFloatingIPNotFound(
            f"External network {network_id} is not reachable from subnet {subnet_id}.  Therefore,"
            f" cannot associate Port {port_id} with a Floating IP."
        )
    other = await db.fetchone(
        "SELECT id FROM floatingips WHERE port_id = ? AND fixed_ip_address = ? AND floating_network_id = ?"
        " AND id != ?",
        (port_id, address, network_id, floating["id"]),
    )
    if other is not None:
        raise FloatingIPPortAlreadyAssociated(
            f"Cannot associate floating IP {floating['floating_ip_address']} ({floating['id']}) with port"
            f" {port_id} using fixed IP {address}, as that fixed IP already has a floating IP on external"
            f" network {network_id}."
        )
    return {"port_id": port_id, "fixed_ip_address": address, "router_id": router["router_id"]}
