"""An instance's ports: made (or a user's port bound) for a build on a node, plugged in by
that node, deleted (or unbound) when the instance goes; and the IP allocations, for an audit."""

from __future__ import annotations

from typing import Any, Literal

from actors.net.hosts import Served, disassociate_ports, merged, tell_routers
from actors.net.ports import new_port
from actors.net.quotas import check_quota
from actors.net.schema import DEFAULT_NETWORK, PORT, UNBOUND
from actors.net.secgroups import ports_changed, tell
from actors.net.state import Db, NetState, invalid, scope, update, where
from api.net import (
    COMPUTE_OWNER,
    Allocations,
    Deallocated,
    FixedIpRequest,
    InstancePorts,
    IpAllocation,
    Port,
    PortInUse,
    RequestedNetwork,
    VifType,
)
from bus import Forbidden, NotFound
from runtime.context import caller, sees_all
from runtime.store import to_json

INSTANCE_PORTS = "r.device_id = ? AND r.project_id = ?"
"""An instance's ports in its project: read through ``ports_device`` (device, project)."""


class InstanceServant(InstancePorts, Allocations):
    """Serves ``api.net.InstancePorts`` and ``api.net.Allocations``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def allocate_for_instance(
        self,
        *,
        instance_uuid: str,
        project_id: str,
        requested_networks: list[RequestedNetwork] | Literal["auto", "none"] | None,
        host: str,
        security_groups: list[str] | None = None,
    ) -> list[Port]:
        requests = _network_requests(requested_networks)
        project = scope()
        if project is not None and project != project_id:
            raise Forbidden(f"A member of project {project} cannot act for project {project_id}.")
        async with self.state.writing() as db:
            existing = await self.state.load(PORT, INSTANCE_PORTS, [instance_uuid, project_id], db)
            if existing:  # asked again (a build delivered twice, or evacuated to another host)
                moved = [dict(port) for port in existing if port["binding:host_id"] != host]
                for port in existing:
                    if port["binding:host_id"] != host:
                        await update(db, "ports", port["id"], {"binding_host": host})
                        port["binding:host_id"] = host
                if not moved:
                    return existing
                # told: the hosts filtering the ports' groups, the old binding host and the new one
                change = await ports_changed(db, [*moved, *existing])
                ports = existing
            else:
                ports = await self._new_ports(db, requests, project_id, instance_uuid, host, security_groups)
                change = await ports_changed(db, ports)
        await tell(self.state.bus, change)
        for bound in ports:
            await self.state.announce("port.bound", bound)
        return ports

    async def _new_ports(
        self,
        db: Db,
        requests: list[RequestedNetwork] | None,
        project_id: str,
        instance_uuid: str,
        host: str,
        security_groups: list[str] | None,
    ) -> list[Port]:
        """The ports of an instance that has none yet (``allocate_for_instance``)."""
        if requests is None:
            requests = [{"uuid": await _auto_network(db, project_id)}]
        ports = []
        for request in requests:
            if "port" in request:
                ports.append(await self._bind(db, request["port"], project_id, instance_uuid, host))
                continue
            await check_quota(db, "port", project_id)
            fixed_ips: list[FixedIpRequest] | None = None
            if "fixed_ip" in request:
                fixed_ips = [{"ip_address": request["fixed_ip"]}]
            columns: dict[str, Any] = {"project_id": project_id, "device_id": instance_uuid}
            columns |= {"binding_host": host, "device_owner": COMPUTE_OWNER, "created_for_instance": True}
            port = await new_port(
                db, request["uuid"], project_id, fixed_ips, columns, security_groups=security_groups
            )
            ports.append(port)
        return ports

    async def _bind(self, db: Db, port_id: str, project_id: str, instance_uuid: str, host: str) -> Port:
        """Bind a port of ``project_id`` that no instance holds to ``instance_uuid`` on ``host``;
        answer its record.

        :raises NotFound: no such port of ``project_id``.
        :raises Conflict: a device holds it.
        """
        port = await self.state.get(PORT, port_id, project_id, db)
        if port["device_id"]:
            raise PortInUse(
                f"Unable to complete operation on port {port_id} for network {port['network_id']}."
                f" Port already has an attached device {port['device_id']}."
            )
        changes = {"device_id": instance_uuid, "device_owner": COMPUTE_OWNER, "binding_host": host}
        await update(db, "ports", port_id, changes)
        return await self.state.get(PORT, port_id, None, db)

    async def deallocate_for_instance(self, *, instance_uuid: str) -> Deallocated:
        conditions, params = where({"device_id": instance_uuid, "project_id": scope()})
        events = await self._give_back(conditions, params)
        deleted = sum(event == "port.deleted" for event, _ in events)
        return {"deleted": deleted, "unbound": len(events) - deleted}

    async def attach_port(
        self,
        *,
        instance_uuid: str,
        project_id: str,
        host: str,
        network_id: str | None = None,
        port_id: str | None = None,
        fixed_ip: str | None = None,
    ) -> Port:
        request: RequestedNetwork = {"port": port_id} if port_id is not None else {}
        if network_id is not None:
            request["uuid"] = network_id
        if fixed_ip is not None:
            request["fixed_ip"] = fixed_ip
        if request:
            _network_requests([request])  # both of port and network, or a port with an address
        project = scope()
        if project is not None and project != project_id:
            raise Forbidden(f"A member of project {project} cannot act for project {project_id}.")
        async with self.state.writing() as db:
            if not request:
                request["uuid"] = await _auto_network(db, project_id)
            [port] = await self._new_ports(db, [request], project_id, instance_uuid, host, None)
            change = await ports_changed(db, [port])
        await tell(self.state.bus, change)
        await self.state.announce("port.bound", port)
        return port

    async def detach_port(self, *, instance_uuid: str, port_id: str) -> Port | None:
        conditions, params = where({"id": port_id, "device_id": instance_uuid, "project_id": scope()})
        events = await self._give_back(conditions, params)
        return events[0][1] if events else None

    async def _give_back(self, conditions: str, params: list[Any]) -> list[tuple[str, Port]]:
        """Delete the ports matching ``conditions`` that were made for their instance, unbind the
        others; tell the hosts and routers, publish ``port.deleted``/``port.unbound``."""
        events: list[tuple[str, Port]] = []
        routers: Served = {}
        async with self.state.writing() as db:
            for row in await db.fetchall(
                f"SELECT id, created_for_instance FROM ports WHERE {conditions}", params
            ):
                port = await self.state.get(PORT, row["id"], None, db)
                if row["created_for_instance"]:
                    routers = merged(routers, await disassociate_ports(db, [row["id"]]))
                    await db.execute("DELETE FROM ports WHERE id = ?", (row["id"],))
                    events.append(("port.deleted", port))
                    continue
                await update(db, "ports", row["id"], UNBOUND)
                events.append(("port.unbound", await self.state.get(PORT, row["id"], None, db)))
            change = await ports_changed(db, [port for _, port in events])
        await tell(self.state.bus, change)
        await tell_routers(self.state.bus, routers)
        for event, port in events:
            await self.state.announce(event, port)
        return events

    async def unbind_instance_ports(self, *, instance_uuid: str) -> list[Port]:
        conditions, params = where({"device_id": instance_uuid, "project_id": scope()})
        unbound: list[Port] = []
        async with self.state.writing() as db:
            bound = await db.fetchall(
                f"SELECT id FROM ports WHERE {conditions} AND binding_host != ''", params
            )
            before = [await self.state.get(PORT, row["id"], None, db) for row in bound]
            for port in before:
                changes = {"binding_host": "", "binding_vif_type": "unbound", "binding_vif_details": "{}"}
                await update(db, "ports", port["id"], changes)
                unbound.append(await self.state.get(PORT, port["id"], None, db))
            # told: the hosts filtering the ports' groups and the binding host they leave
            change = await ports_changed(db, [*before, *unbound])
        await tell(self.state.bus, change)
        for port in unbound:
            await self.state.announce("port.unbound", port)
        return unbound

    async def set_port_binding(self, *, port_id: str, vif_type: VifType, vif_details: dict[str, Any]) -> Port:
        async with self.state.writing() as db:
            await self.state.get(PORT, port_id, None, db)
            changes = {"binding_vif_type": vif_type, "binding_vif_details": to_json(vif_details)}
            await update(db, "ports", port_id, changes)
            port = await self.state.get(PORT, port_id, None, db)
        await self.state.announce("port.plugged", port)
        return port

    async def list_allocations(self) -> list[IpAllocation]:
        if not sees_all(caller()):
            raise Forbidden("Only an admin may list IP allocations.")
        return await self.state.store.fetchall(
            "SELECT subnet_id, ip_address, port_id FROM ip_allocations ORDER BY subnet_id, rowid",
            row=IpAllocation,
        )


def _network_requests(
    requested: list[RequestedNetwork] | Literal["auto", "none"] | None,
) -> list[RequestedNetwork] | None:
    """The checked ``requested_networks``: its list, [] for "none", None for "auto".

    :raises InvalidRequest: an entry with both or neither of uuid and port, a port with a
        fixed_ip, a port named twice.
    """
    if requested in (None, "auto", []):
        return None
    if requested == "none":
        return []
    assert isinstance(requested, list)
    ports: set[str] = set()
    for request in requested:
        if ("uuid" in request) == ("port" in request) or ("port" in request and "fixed_ip" in request):
            raise invalid("requested_networks", "each entry is {uuid[, fixed_ip]} or {port}")
        if "port" in request:
            if request["port"] in ports:
                raise invalid("requested_networks", f"port {request['port']} is repeated")
            ports.add(request["port"])
    return requested


async def _auto_network(db: Db, project_id: str) -> str:
    """The project's network if it has exactly one, else the shared default network.

    :raises NotFound: there is no default network.
    """
    rows = await db.fetchall(
        "SELECT id, project_id = :project AS own,"
        " shared = 1 AND project_id = '' AND name = :default AS is_default"
        " FROM networks WHERE project_id = :project OR (shared = 1 AND project_id = '' AND name = :default)"
        " ORDER BY rowid",
        {"project": project_id, "default": DEFAULT_NETWORK},
    )
    own: list[str] = [row["id"] for row in rows if row["own"]]
    if len(own) == 1:
        return own[0]
    default: str | None = next((row["id"] for row in rows if row["is_default"]), None)
    if default is None:
        raise NotFound(f"Network {DEFAULT_NETWORK} could not be found.")
    return default
