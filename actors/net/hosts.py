"""The hosts serving routers (Neutron's L3 agents): which one a new router goes to, which routers a
change concerns, telling their hosts (``ROUTERS_CHANGED``), and what a host plumbs (``RouterPlan``).

A host serves routers from its first ``NetForNodes.routers_for_host`` call on (a row of
``router_hosts``); that call gives it every router no host serves yet. A router made while no host
serves any waits, unserved, for the first to call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from actors.net.state import Db
from api.net import (
    FLOATINGIP_OWNER,
    ROUTER_GATEWAY_OWNER,
    ROUTER_INTERFACE_OWNER,
    ROUTERS_CHANGED,
    HostRouters,
    RouterPlan,
    RouterPort,
)
from bus import Bus
from runtime.stamps import utcnow

Served = dict[str, set[str]]
"""The routers a change concerns, by the host serving them."""


async def least_loaded_host(db: Db) -> str | None:
    """The serving host with the fewest routers (by name among equals); None: no host serves any."""
    row = await db.fetchone(
        "SELECT h.host FROM router_hosts h LEFT JOIN routers r ON r.host = h.host"
        " GROUP BY h.host ORDER BY COUNT(r.id), h.host LIMIT 1"
    )
    return row["host"] if row else None


async def served(db: Db, router_ids: Iterable[str]) -> Served:
    """The served routers among ``router_ids``, by host."""
    hosts: Served = {}
    for router_id in set(router_ids):
        row = await db.fetchone("SELECT host FROM routers WHERE id = ?", (router_id,))
        if row and row["host"]:
            hosts.setdefault(row["host"], set()).add(router_id)
    return hosts


async def routers_of_floating_ports(db: Db, port_ids: Iterable[str]) -> Served:
    """The routers through which a floating IP reaches one of ``port_ids`` (associated with it)."""
    router_ids = []
    for port_id in set(port_ids):
        rows = await db.fetchall(
            "SELECT router_id FROM floatingips WHERE port_id = ? AND router_id IS NOT NULL", (port_id,)
        )
        router_ids += [row["router_id"] for row in rows]
    return await served(db, router_ids)


def merged(*changes: Served) -> Served:
    hosts: Served = {}
    for change in changes:
        for host, routers in change.items():
            hosts.setdefault(host, set()).update(routers)
    return hosts


async def tell_routers(bus: Bus, change: Served) -> None:
    """Publish ``ROUTERS_CHANGED`` to each host of ``change`` (after its transaction)."""
    for host, routers in sorted(change.items()):
        await ROUTERS_CHANGED.publish(bus, {"routers": sorted(routers)}, host=host)


async def disassociate_ports(db: Db, port_ids: Iterable[str]) -> Served:
    """Disassociate the floating IPs of ``port_ids`` (about to be deleted); answer their routers."""
    ports = list(port_ids)
    change = await routers_of_floating_ports(db, ports)
    for port_id in ports:
        await db.execute(
            "UPDATE floatingips SET port_id = NULL, fixed_ip_address = NULL, router_id = NULL,"
            " revision_number = revision_number + 1, updated_at = ? WHERE port_id = ?",
            (utcnow(), port_id),
        )
    return change


async def serve_routers(db: Db, host: str) -> HostRouters:
    """Make ``host`` one serving routers, give it the routers no host serves, and answer what it
    serves."""
    await db.execute(
        "INSERT INTO router_hosts (host, created_at) SELECT ?, ?"
        " WHERE NOT EXISTS (SELECT 1 FROM router_hosts WHERE host = ?)",
        (host, utcnow(), host),
    )
    await db.execute("UPDATE routers SET host = ? WHERE host IS NULL", (host,))
    rows = await db.fetchall(
        "SELECT id, admin_state_up, enable_snat FROM routers WHERE host = ? ORDER BY created_at, id", (host,)
    )
    return {"routers": [await router_plan(db, row) for row in rows]}


async def router_plan(db: Db, router: Mapping[str, Any]) -> RouterPlan:
    """What the host serving ``router`` (a ``routers`` row) plumbs of it."""
    ports = await db.fetchall(
        "SELECT p.id, p.network_id, p.mac_address, p.device_owner, a.subnet_id, a.ip_address, s.cidr,"
        " s.gateway_ip, n.mtu FROM ports p JOIN ip_allocations a ON a.port_id = p.id"
        " JOIN subnets s ON s.id = a.subnet_id JOIN networks n ON n.id = p.network_id"
        " WHERE p.device_id = ? AND p.device_owner IN (?, ?) ORDER BY p.created_at, p.id, a.ip_int",
        (router["id"], ROUTER_INTERFACE_OWNER, ROUTER_GATEWAY_OWNER),
    )
    plumbed = [(row["device_owner"], _router_port(row)) for row in ports]
    gateways = [port for owner, port in plumbed if owner == ROUTER_GATEWAY_OWNER]
    floating = await db.fetchall(
        "SELECT id, floating_ip_address, fixed_ip_address, port_id FROM floatingips"
        " WHERE router_id = ? AND port_id IS NOT NULL ORDER BY created_at, id",
        (router["id"],),
    )
    return {
        "router_id": router["id"],
        "admin_state_up": bool(router["admin_state_up"]),
        "gateway": gateways[0] if gateways else None,
        "enable_snat": bool(router["enable_snat"]),
        "interfaces": [port for owner, port in plumbed if owner == ROUTER_INTERFACE_OWNER],
        "floating_ips": [
            {
                "floatingip_id": row["id"],
                "floating_ip_address": row["floating_ip_address"],
                "fixed_ip_address": row["fixed_ip_address"],
                "port_id": row["port_id"],
            }
            for row in floating
        ],
    }


def _router_port(row: Mapping[str, Any]) -> RouterPort:
    return {
        "port_id": row["id"],
        "network_id": row["network_id"],
        "subnet_id": row["subnet_id"],
        "mac_address": row["mac_address"],
        "ip_address": row["ip_address"],
        "cidr": row["cidr"],
        "gateway_ip": row["gateway_ip"] or None,
        "mtu": row["mtu"],
    }


SERVICE_OWNERS = (ROUTER_INTERFACE_OWNER, ROUTER_GATEWAY_OWNER, FLOATINGIP_OWNER)
"""The owners of the ports the port API may not delete (their router or floating IP does)."""
