"""Ports: a MAC address and the IP addresses it holds on a network, made by a project (or by
``allocate_for_instance``), bound to a device on a host."""

from __future__ import annotations

import secrets
from typing import Any

from actors.net.hosts import (
    SERVICE_OWNERS,
    Served,
    disassociate_ports,
    routers_of_floating_ports,
    tell_routers,
)
from actors.net.ipam import allocate, requested_ip
from actors.net.quotas import check_quota
from actors.net.schema import NETWORK, PORT, PORT_DEFAULTS, port_view
from actors.net.secgroups import change_port_security, join_groups, ports_changed, tell
from actors.net.state import Db, NetState, caller_project, insert, invalid, scope, update, where
from api.net import FixedIp, FixedIpRequest, Port, PortRequest, Ports, ServicePortInUse
from bus import Conflict, NotFound
from runtime.stamps import new_uuid

MAC_PREFIX = "fa:16:3e:"
MAC_ATTEMPTS = 16
_ASKED_COLUMNS = frozenset(
    {"name", "device_id", "device_owner", "admin_state_up", "description", "port_security_enabled"}
)
"""The members of a ``PortRequest`` that are columns of the port as they are."""


class PortServant(Ports):
    """Serves ``api.net.Ports``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_port(
        self,
        *,
        network_id: str,
        name: str = "",
        mac_address: str | None = None,
        fixed_ips: list[FixedIpRequest] | None = None,
        device_id: str = "",
        device_owner: str = "",
        admin_state_up: bool = True,
        description: str = "",
        security_groups: list[str] | None = None,
        port_security_enabled: bool = True,
    ) -> Port:
        asked: PortRequest = {"network_id": network_id, "name": name, "mac_address": mac_address}
        asked |= {"fixed_ips": fixed_ips, "device_id": device_id, "device_owner": device_owner}
        asked |= {"admin_state_up": admin_state_up, "description": description}
        asked |= {"security_groups": security_groups, "port_security_enabled": port_security_enabled}
        return (await self.create_ports(ports=[asked]))[0]

    async def create_ports(self, *, ports: list[PortRequest]) -> list[Port]:
        project, owner = scope(), caller_project()
        made = []
        async with self.state.writing() as db:
            for asked in ports:
                await check_quota(db, "port", owner)
                columns: dict[str, Any] = {
                    column: value for column, value in asked.items() if column in _ASKED_COLUMNS
                }
                columns["project_id"] = owner
                made.append(
                    await new_port(
                        db,
                        asked["network_id"],
                        project,
                        asked.get("fixed_ips"),
                        columns,
                        asked.get("mac_address"),
                        asked.get("security_groups"),
                    )
                )
            change = await ports_changed(db, made)
        await tell(self.state.bus, change)
        return made

    async def list_ports(
        self, *, network_id: str | None = None, device_id: str | None = None, device_owner: str | None = None
    ) -> list[Port]:
        filters = {"r.network_id": network_id, "r.device_id": device_id, "r.device_owner": device_owner}
        conditions, params = where(filters)
        return await self.state.load(PORT, conditions, params, scope=scope())

    async def get_port(self, *, port_id: str) -> Port:
        return await self.state.get(PORT, port_id, scope())

    async def update_port(
        self,
        *,
        port_id: str,
        name: str | None = None,
        device_id: str | None = None,
        device_owner: str | None = None,
        binding_host: str | None = None,
        admin_state_up: bool | None = None,
        description: str | None = None,
        fixed_ips: list[FixedIpRequest] | None = None,
        security_groups: list[str] | None = None,
        port_security_enabled: bool | None = None,
    ) -> Port:
        changes = {
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "binding_host": binding_host,
            "admin_state_up": admin_state_up,
            "description": description,
            "port_security_enabled": port_security_enabled,
        }
        project = scope()
        async with self.state.writing() as db:
            port = await self.state.get(PORT, port_id, project, db)
            routers: Served = {}
            if fixed_ips is not None:
                await _readdress(db, port, fixed_ips)
                routers = await _floating_ips_readdressed(db, port_id)
            await change_port_security(db, port, security_groups, port_security_enabled)
            await update(db, "ports", port_id, changes)
            updated = await self.state.get(PORT, port_id, None, db)
            change = await ports_changed(db, [port, updated])
        await tell(self.state.bus, change)
        await tell_routers(self.state.bus, routers)
        return updated

    async def delete_port(self, *, port_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            port = await self.state.get(PORT, port_id, project, db)
            if port["device_owner"] in SERVICE_OWNERS:
                raise ServicePortInUse(
                    f"Port {port_id} cannot be deleted directly via the port API: has device owner"
                    f" {port['device_owner']}."
                )
            change = await ports_changed(db, [port])
            routers = await disassociate_ports(db, [port_id])
            await db.execute("DELETE FROM ports WHERE id = ?", (port_id,))
        await tell(self.state.bus, change)
        await tell_routers(self.state.bus, routers)
        await self.state.announce("port.deleted", port)


async def new_port(
    db: Db,
    network_id: str,
    scope: str | None,
    fixed_ips: list[FixedIpRequest] | None,
    port: dict[str, Any],
    mac_address: str | None = None,
    security_groups: list[str] | None = None,
) -> Port:
    """Insert ``port`` (some columns of ``PORT_DEFAULTS``, and ``project_id``) on a network
    ``scope`` sees, with its addresses: the lowest free one of the first subnet that has one,
    or those ``fixed_ips`` asks for, in ``security_groups`` (None: as ``join_groups`` says); answer
    its record.

    :raises NotFound: no such network ``scope`` sees, or a security group of another project.
    :raises InvalidRequest: a ``fixed_ips`` entry that is not on the network.
    :raises Conflict: no free address, or the MAC or an asked address is taken.
    """
    subnets = await _subnets_of(db, network_id, scope)
    row = await _insert_port(
        db, {**PORT_DEFAULTS, **port, "id": new_uuid(), "network_id": network_id}, mac_address
    )
    given: list[FixedIp] = []
    if fixed_ips is None and subnets:
        for subnet in subnets:
            if (address := await allocate(db, subnet["id"], None, row["id"])) is not None:
                given.append({"subnet_id": subnet["id"], "ip_address": address})
                break
        else:
            raise Conflict(f"No more IP addresses available on network {network_id}.")
    given += await _take(db, fixed_ips or [], subnets, network_id, row["id"])
    return port_view(row, given, await join_groups(db, row, security_groups))


async def _subnets_of(db: Db, network_id: str, scope: str | None) -> list[dict[str, Any]]:
    """The subnets (id, cidr, gateway_ip) of a network ``scope`` sees, oldest first.

    :raises NotFound: no such network ``scope`` sees.
    """
    visible = "" if scope is None else " AND (n.project_id = :scope OR n.shared = 1)"
    subnets = await db.fetchall(  # the network's subnets, or one row of NULLs when it has none
        "SELECT s.id, s.cidr, s.gateway_ip FROM networks n LEFT JOIN subnets s ON s.network_id = n.id"
        f" WHERE n.id = :network_id{visible} ORDER BY s.rowid",
        {"network_id": network_id, "scope": scope},
    )
    if not subnets:
        raise NotFound(f"{NETWORK.title} {network_id} could not be found.")
    return [subnet for subnet in subnets if subnet["id"] is not None]


async def _take(
    db: Db, entries: list[FixedIpRequest], subnets: list[dict[str, Any]], network_id: str, port_id: str
) -> list[FixedIp]:
    """Give the port the addresses ``fixed_ips`` entries ask for, on the network's ``subnets``.

    :raises InvalidRequest: an entry that is not on the network.
    :raises Conflict: an asked address is taken, or a subnet has no free address.
    """
    given: list[FixedIp] = []
    for entry in entries:
        subnet, requested = requested_ip(entry, subnets, network_id)
        if (address := await allocate(db, subnet["id"], requested, port_id)) is None:
            raise Conflict(f"No more IP addresses available on subnet {subnet['id']}.")
        given.append({"subnet_id": subnet["id"], "ip_address": address})
    return given


async def _readdress(db: Db, port: Port, fixed_ips: list[FixedIpRequest]) -> None:
    """Make ``fixed_ips`` the port's addresses, as Neutron does: an entry naming an address the
    port holds keeps it, the addresses no entry names are released, the other entries are taken
    (after the release, inside the caller's transaction: all or nothing).

    :raises InvalidRequest: an entry that is not on the network.
    :raises Conflict: an asked address is taken, or a subnet has no free address.
    """
    held = {fixed["ip_address"]: fixed for fixed in port["fixed_ips"]}
    kept = {entry["ip_address"] for entry in fixed_ips if entry.get("ip_address") in held}
    for address, fixed in held.items():
        if address not in kept:
            await db.execute(
                "DELETE FROM ip_allocations WHERE port_id = ? AND subnet_id = ? AND ip_address = ?",
                (port["id"], fixed["subnet_id"], address),
            )
    for address in kept:  # a kept address must still be where the entry says
        entry = next(entry for entry in fixed_ips if entry.get("ip_address") == address)
        if entry.get("subnet_id") not in (None, held[address]["subnet_id"]):
            raise invalid("fixed_ips", f"IP address {address} is not on subnet {entry['subnet_id']}")
    subnets = await _subnets_of(db, port["network_id"], None)
    added = [entry for entry in fixed_ips if entry.get("ip_address") not in kept]
    await _take(db, added, subnets, port["network_id"], port["id"])


async def _floating_ips_readdressed(db: Db, port_id: str) -> Served:
    """The routers of the port's floating IPs (after its fixed IPs changed), those whose fixed IP
    the port no longer holds disassociated."""
    routers = await routers_of_floating_ports(db, [port_id])
    await db.execute(
        "UPDATE floatingips SET port_id = NULL, fixed_ip_address = NULL, router_id = NULL"
        " WHERE port_id = ?"
        " AND fixed_ip_address NOT IN (SELECT ip_address FROM ip_allocations WHERE port_id = ?)",
        (port_id, port_id),
    )
    return routers


async def _insert_port(db: Db, row: dict[str, Any], requested_mac: str | None) -> dict[str, Any]:
    """Insert a port ``row`` (every column but MAC and timestamps) with the requested MAC
    (lower-cased) or a new random ``fa:16:3e:xx:xx:xx``, unused; answer the row inserted.

    :raises Conflict: the requested MAC is in use, or no random one was free.
    """
    network_id = row["network_id"]
    for _ in range(MAC_ATTEMPTS):
        mac = requested_mac.lower() if requested_mac else MAC_PREFIX + secrets.token_bytes(3).hex(":", 1)
        inserted = await insert(
            db,
            "ports",
            {**row, "mac_address": mac},
            unless="SELECT 1 FROM ports WHERE mac_address = :mac_address",
        )
        if inserted is not None:
            return inserted
        if requested_mac:
            raise Conflict(
                f"Unable to complete operation for network {network_id}. The mac address {mac} is in use."
            )
    raise Conflict(f"Unable to generate a unique mac address on network {network_id}.")
