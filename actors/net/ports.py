"""Ports: a MAC address and the IP addresses it holds on a network, made by a project (or by
``allocate_for_instance``), bound to a device on a host."""

from __future__ import annotations

import secrets
from typing import Any

from actors.net.ipam import allocate, requested_ip
from actors.net.schema import NETWORK, PORT, PORT_DEFAULTS, port_view
from actors.net.state import Db, NetState, caller_project, insert, scope, update, where
from api.net import FixedIp, FixedIpRequest, Port, Ports
from bus import Conflict, NotFound
from runtime.stamps import new_uuid

MAC_PREFIX = "fa:16:3e:"
MAC_ATTEMPTS = 16


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
    ) -> Port:
        project = scope()
        port: dict[str, Any] = {
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "description": description,
        }
        port |= {"project_id": caller_project(), "admin_state_up": admin_state_up}
        async with self.state.writing() as db:
            return await new_port(db, network_id, project, fixed_ips, port, mac_address)

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
    ) -> Port:
        changes = {
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "binding_host": binding_host,
            "admin_state_up": admin_state_up,
            "description": description,
        }
        project = scope()
        async with self.state.writing() as db:
            await self.state.get(PORT, port_id, project, db)
            await update(db, "ports", port_id, changes)
            return await self.state.get(PORT, port_id, None, db)

    async def delete_port(self, *, port_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            port = await self.state.get(PORT, port_id, project, db)
            await db.execute("DELETE FROM ports WHERE id = ?", (port_id,))
        await self.state.publish("port.deleted", port)


async def new_port(
    db: Db,
    network_id: str,
    scope: str | None,
    fixed_ips: list[FixedIpRequest] | None,
    port: dict[str, Any],
    mac_address: str | None = None,
) -> Port:
    """Insert ``port`` (some columns of ``PORT_DEFAULTS``, and ``project_id``) on a network
    ``scope`` sees, with its addresses: the lowest free one of the first subnet that has one,
    or those ``fixed_ips`` asks for; answer its record.

    :raises NotFound: no such network ``scope`` sees.
    :raises InvalidRequest: a ``fixed_ips`` entry that is not on the network.
    :raises Conflict: no free address, or the MAC or an asked address is taken.
    """
    visible = "" if scope is None else " AND (n.project_id = :scope OR n.shared = 1)"
    subnets = await db.fetchall(  # the network's subnets, or one row of NULLs when it has none
        "SELECT s.id, s.cidr, s.gateway_ip FROM networks n LEFT JOIN subnets s ON s.network_id = n.id"
        f" WHERE n.id = :network_id{visible} ORDER BY s.rowid",
        {"network_id": network_id, "scope": scope},
    )
    if not subnets:
        raise NotFound(f"{NETWORK.title} {network_id} could not be found.")
    subnets = [subnet for subnet in subnets if subnet["id"] is not None]
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
    for entry in fixed_ips or []:
        subnet, requested = requested_ip(entry, subnets, network_id)
        if (address := await allocate(db, subnet["id"], requested, row["id"])) is None:
            raise Conflict(f"No more IP addresses available on subnet {subnet['id']}.")
        given.append({"subnet_id": subnet["id"], "ip_address": address})
    return port_view(row, given)


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
