"""Networks: made by a project (shared and external ones by an admin), seen by their project and,
when shared or external, by every project; only their project changes them."""

from __future__ import annotations

from actors.net.hosts import disassociate_ports, tell_routers
from actors.net.quotas import check_quota
from actors.net.schema import NETWORK, NEXT_SEGMENT, PORT
from actors.net.state import Db, NetState, caller_project, insert, scope, update, where
from api.net import (
    DHCP_OWNER,
    FLOATINGIP_OWNER,
    ROUTER_GATEWAY_OWNER,
    ExternalNetworkInUse,
    Network,
    NetworkRequest,
    Networks,
)
from bus import Conflict, Forbidden
from runtime.context import caller, sees_all
from runtime.stamps import new_uuid


class NetworkServant(Networks):
    """Serves ``api.net.Networks`` (``NetworkReader``'s ``get_network`` too)."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_network(
        self,
        *,
        name: str = "",
        shared: bool = False,
        admin_state_up: bool = True,
        mtu: int = 1500,
        description: str = "",
        router_external: bool = False,
    ) -> Network:
        asked: NetworkRequest = {"name": name, "shared": shared, "admin_state_up": admin_state_up}
        asked |= {"mtu": mtu, "description": description, "router_external": router_external}
        return (await self.create_networks(networks=[asked]))[0]

    async def create_networks(self, *, networks: list[NetworkRequest]) -> list[Network]:
        if any(asked.get("shared") for asked in networks) and not sees_all(caller()):
            raise Forbidden("Only an admin may create a shared network.")
        if any(asked.get("router_external") for asked in networks) and not sees_all(caller()):
            raise Forbidden("Only an admin may create an external network.")
        project = caller_project()
        async with self.state.writing() as db:
            return [await self._insert(db, asked, project) for asked in networks]

    async def _insert(self, db: Db, asked: NetworkRequest, project: str) -> Network:
        """Insert one network of ``project`` with the next VNI; answer its record.

        :raises OverQuota: the project has as many networks as its limit.
        """
        await check_quota(db, "network", project)
        network_id = new_uuid()
        row = {"id": network_id, "name": asked.get("name", ""), "project_id": project}
        row |= {"shared": asked.get("shared", False), "admin_state_up": asked.get("admin_state_up", True)}
        row |= {"mtu": asked.get("mtu", 1500), "description": asked.get("description", "")}
        row["router_external"] = asked.get("router_external", False)
        row["segmentation_id"] = (await db.fetchone(NEXT_SEGMENT))["vni"]
        await insert(db, "networks", row)
        return await self.state.get(NETWORK, network_id, None, db)

    async def list_networks(
        self,
        *,
        name: str | None = None,
        shared: bool | None = None,
        project_id: str | None = None,
        router_external: bool | None = None,
    ) -> list[Network]:
        filters = {"r.name": name, "r.shared": shared, "r.project_id": project_id}
        conditions, params = where({**filters, "r.router_external": router_external})
        return await self.state.load(NETWORK, conditions, params, scope=scope())

    async def get_network(self, *, network_id: str) -> Network:
        return await self.state.get(NETWORK, network_id, scope())

    async def update_network(
        self,
        *,
        network_id: str,
        name: str | None = None,
        admin_state_up: bool | None = None,
        description: str | None = None,
        router_external: bool | None = None,
    ) -> Network:
        project = scope()
        if router_external is not None and not sees_all(caller()):
            raise Forbidden("Only an admin may change whether a network is external.")
        async with self.state.writing() as db:
            await self.state.get(NETWORK, network_id, project, db, owned=True)
            if router_external is False and await db.fetchone(
                "SELECT 1 FROM ports WHERE network_id = ? AND device_owner IN (?, ?) LIMIT 1",
                (network_id, ROUTER_GATEWAY_OWNER, FLOATINGIP_OWNER),
            ):
                raise ExternalNetworkInUse(
                    f"External network {network_id} cannot be updated to be non-external, since it has"
                    " existing gateway ports."
                )
            changes = {"name": name, "admin_state_up": admin_state_up, "description": description}
            changes["router_external"] = router_external
            await update(db, "networks", network_id, changes)
            return await self.state.get(NETWORK, network_id, None, db)

    async def delete_network(self, *, network_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            await self.state.get(NETWORK, network_id, project, db, owned=True)
            ports = await self.state.load(PORT, "r.network_id = ?", [network_id], db)
            if any(port["device_id"] and port["device_owner"] != DHCP_OWNER for port in ports):
                raise Conflict(
                    f"Unable to complete operation on network {network_id}."
                    " There are one or more ports still in use on the network."
                )
            routers = await disassociate_ports(db, [port["id"] for port in ports])
            for table, column in (("ports", "network_id"), ("subnets", "network_id"), ("networks", "id")):
                await db.execute(f"DELETE FROM {table} WHERE {column} = ?", (network_id,))
        await tell_routers(self.state.bus, routers)
        for port in ports:
            await self.state.announce("port.deleted", port)
