"""What compute nodes call (``api.net.NetForNodes``): the ports of the instances placed on the
calling host, acting for their projects, and the networks and subnets those ports are on.

The host is the subject's (only that node may publish there); the instance's host and project
are the conductor's (``actors.placement``). An instance recorded on another host, or on none,
is ``NotFound`` and nothing changes: a node cannot make, bind, plug or release another host's
ports, nor read a network of a project none of its instances belongs to.
"""

from __future__ import annotations

from typing import Any, Literal

from actors.net.hosts import serve_routers
from actors.net.instances import InstanceServant
from actors.net.ports import new_port
from actors.net.schema import NETWORK, PORT, SUBNET
from actors.net.secgroups import filters_from_now_on, host_security
from actors.net.state import NetState
from actors.placement import Placements
from api.net import (
    COMPUTE_OWNER,
    DHCP_OWNER,
    Deallocated,
    HostRouters,
    HostSecurity,
    NetForNodes,
    Network,
    Port,
    RequestedNetwork,
    Subnet,
    VifType,
)
from bus import NotFound
from runtime.store import Db


class NodePorts(NetForNodes):
    """Serves ``api.net.NetForNodes`` through ``InstanceServant``, after the placement checks."""

    def __init__(self, state: NetState, instances: InstanceServant, placements: Placements) -> None:
        self.state = state
        self.instances = instances
        self.placements = placements

    async def allocate_for_instance(
        self,
        *,
        instance_uuid: str,
        requested_networks: list[RequestedNetwork] | Literal["auto", "none"] | None,
        host: str,
        security_groups: list[str] | None = None,
    ) -> list[Port]:
        """The instance's ports, for its project, bound to ``host`` (``api.net.NetForNodes``).

        :raises NotFound: no such instance on ``host``.
        """
        placement = await self.placements.on_host(instance_uuid, host, fresh=True)
        return await self.instances.allocate_for_instance(
            instance_uuid=instance_uuid,
            project_id=placement["project_id"],
            requested_networks=requested_networks,
            host=host,
            security_groups=security_groups,
        )

    async def deallocate_for_instance(self, *, instance_uuid: str, host: str) -> Deallocated:
        """Give back the instance's ports (``api.net.NetForNodes``).

        :raises NotFound: no such instance on ``host``.
        """
        await self.placements.on_host(instance_uuid, host, fresh=True)
        return await self.instances.deallocate_for_instance(instance_uuid=instance_uuid)

    async def set_port_binding(
        self, *, port_id: str, vif_type: VifType, vif_details: dict[str, Any], host: str
    ) -> Port:
        """How the node plugged a port of one of its instances in (``api.net.NetForNodes``).

        The port must be bound to ``host`` (``allocate_for_instance`` binds it, having asked the
        conductor afresh), so the placement of its instance may be the one that call kept.

        :raises NotFound: no such port, or it or its instance is not on ``host``.
        """
        try:
            port = await self.state.get(PORT, port_id, None)
            if port["device_id"] and port["binding:host_id"] == host:
                placement = await self.placements.on_host(port["device_id"], host)
                if placement["project_id"] == port["project_id"]:
                    return await self.instances.set_port_binding(
                        port_id=port_id, vif_type=vif_type, vif_details=vif_details
                    )
        except NotFound:
            pass
        raise NotFound(f"Port {port_id} could not be found on host {host}.")

    async def get_network(self, *, network_id: str, instance_uuid: str, host: str) -> Network:
        """A shared network, or one the instance has a port on (``api.net.NetForNodes``).

        :raises NotFound: no such instance on ``host``, or no such network it may read.
        """
        await self.placements.on_host(instance_uuid, host, arriving=True)
        network = await self.state.get(NETWORK, network_id, None)
        if network["shared"] or await self._has_port_on(instance_uuid, network_id):
            return network
        raise NotFound(f"Network {network_id} could not be found.")

    async def get_subnet(self, *, subnet_id: str, instance_uuid: str, host: str) -> Subnet:
        """A subnet of a network ``get_network`` would answer (``api.net.NetForNodes``).

        :raises NotFound: no such instance on ``host``, or no such subnet it may read.
        """
        await self.placements.on_host(instance_uuid, host, arriving=True)
        subnet = await self.state.get(SUBNET, subnet_id, None)
        network = await self.state.get(NETWORK, subnet["network_id"], None)
        if network["shared"] or await self._has_port_on(instance_uuid, network["id"]):
            return subnet
        raise NotFound(f"Subnet {subnet_id} could not be found.")

    async def instance_ports_at(self, *, network_id: str, ip_address: str, host: str) -> list[Port]:
        """The ports of the instance on ``host`` whose port on the network holds ``ip_address``,
        that one first (``api.net.NetForNodes``).

        :raises NotFound: no port bound to ``host`` holds it there, or its instance is not on
            ``host`` (as the conductor records it), or not of the port's project.
        """
        condition = (
            "r.network_id = ? AND r.binding_host = ? AND r.device_owner = ? AND r.device_id != ''"
            " AND EXISTS (SELECT 1 FROM ip_allocations a WHERE a.port_id = r.id AND a.ip_address = ?)"
        )
        found = await self.state.load(PORT, condition, [network_id, host, COMPUTE_OWNER, ip_address])
        if found:
            port = found[0]
            placement = await self.placements.on_host(port["device_id"], host)
            if placement["project_id"] == port["project_id"]:
                ports = await self.state.load(
                    PORT, "r.device_id = ? AND r.device_owner = ?", [port["device_id"], COMPUTE_OWNER]
                )
                return [port, *(other for other in ports if other["id"] != port["id"])]
        raise NotFound(f"No port of an instance on host {host} holds {ip_address} on network {network_id}.")

    async def dhcp_port(self, *, network_id: str, instance_uuid: str, host: str) -> Port:
        """The host's DHCP port on the network, made on first use (``api.net.NetForNodes``).

        :raises NotFound: no such instance on ``host``, or no such network it may read.
        :raises Conflict: no free address on the network.
        """
        network = await self.get_network(network_id=network_id, instance_uuid=instance_uuid, host=host)
        async with self.state.writing() as db:
            found = await self._dhcp_ports(db, network_id, host)
            if found:
                return found[0]
            columns = {
                "project_id": network["project_id"],
                "device_id": dhcp_device(host),
                "device_owner": DHCP_OWNER,
            }
            columns |= {"binding_host": host, "binding_vif_type": "bridge", "name": f"dhcp on {host}"}
            port = await new_port(db, network_id, None, None, columns)
        await self.state.announce("port.bound", port)
        return port

    async def release_dhcp_port(self, *, network_id: str, host: str) -> bool:
        """Delete the host's DHCP port on the network (``api.net.NetForNodes``)."""
        async with self.state.writing() as db:
            found = await self._dhcp_ports(db, network_id, host)
            for port in found:
                await db.execute("DELETE FROM ports WHERE id = ?", (port["id"],))
        for port in found:
            await self.state.announce("port.deleted", port)
        return bool(found)

    async def security_for_host(self, *, host: str, arriving: list[str] | None = None) -> HostSecurity:
        """What ``host`` enforces: only its own instance ports, and those of the instances arriving
        there (``api.net.NetForNodes``); an ``arriving`` instance that is not (any more) is left out."""
        confirmed = []
        for instance_uuid in arriving or []:
            try:
                await self.placements.on_host(instance_uuid, host, fresh=True, arriving=True)
            except NotFound:
                continue
            confirmed.append(instance_uuid)
        await filters_from_now_on(self.state, host)
        return await host_security(self.state.store, host, confirmed)

    async def routers_for_host(self, *, host: str) -> HostRouters:
        """The routers ``host`` serves, which it serves from now on (``api.net.NetForNodes``)."""
        async with self.state.writing() as db:
            return await serve_routers(db, host)

    async def _dhcp_ports(self, db: Db, network_id: str, host: str) -> list[Port]:
        """The host's DHCP port on the network (one at most), inside ``db``'s transaction."""
        condition = "r.network_id = ? AND r.device_id = ? AND r.device_owner = ?"
        return await self.state.load(PORT, condition, [network_id, dhcp_device(host), DHCP_OWNER], db)

    async def _has_port_on(self, instance_uuid: str, network_id: str) -> bool:
        found = await self.state.store.fetchone(
            "SELECT 1 FROM ports WHERE device_id = ? AND network_id = ? LIMIT 1", (instance_uuid, network_id)
        )
        return found is not None


def dhcp_device(host: str) -> str:
    """The ``device_id`` of a host's DHCP ports."""
    return f"dhcp-{host}"
