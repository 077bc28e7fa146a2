"""Subnets: an IPv4 range of a network (given, or taken from a subnet pool), its gateway, the
pools ports are given addresses from, and what its hosts are told over DHCP (name servers, host
routes); made, changed and deleted by the network's project."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network
from typing import Any

from actors.net import ipam
from actors.net.ipam import (
    insert_subnet,
    nameservers,
    pool_ranges,
    pools_json,
    replace_pools,
    subnet_addresses,
    subnet_row,
)
from actors.net.quotas import check_quota
from actors.net.schema import NETWORK, SUBNET, SUBNETPOOL
from actors.net.state import Db, NetState, scope, update, where
from actors.net.subnetpools import pool_cidr
from api.net import AllocationPool, HostRoute, Subnet, SubnetRequest, Subnets
from bus import Conflict, InvalidRequest


class SubnetServant(Subnets):
    """Serves ``api.net.Subnets`` (``SubnetReader``'s ``get_subnet`` too)."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_subnet(
        self,
        *,
        network_id: str,
        cidr: str | None = None,
        name: str = "",
        gateway_ip: str | None = None,
        allocation_pools: list[AllocationPool] | None = None,
        ip_version: int = 4,
        enable_dhcp: bool = True,
        dns_nameservers: list[str] | None = None,
        description: str = "",
        host_routes: list[HostRoute] | None = None,
        subnetpool_id: str | None = None,
        prefixlen: int | None = None,
    ) -> Subnet:
        asked: SubnetRequest = {
            "network_id": network_id,
            "cidr": cidr,
            "name": name,
            "gateway_ip": gateway_ip,
        }
        asked |= {"subnetpool_id": subnetpool_id, "prefixlen": prefixlen}
        asked |= {"allocation_pools": allocation_pools, "ip_version": ip_version, "enable_dhcp": enable_dhcp}
        asked |= {"dns_nameservers": dns_nameservers, "description": description, "host_routes": host_routes}
        return (await self.create_subnets(subnets=[asked]))[0]

    async def create_subnets(self, *, subnets: list[SubnetRequest]) -> list[Subnet]:
        project = scope()
        async with self.state.writing() as db:
            return [await self._insert(db, asked, project) for asked in subnets]

    async def _insert(self, db: Db, asked: SubnetRequest, project: str | None) -> Subnet:
        """Insert one subnet on a network ``project`` owns; answer its record.

        :raises InvalidRequest: as ``create_subnet``.
        :raises OverQuota: the network's project has as many subnets as its limit.
        """
        network_id = asked["network_id"]
        network = await self.state.get(NETWORK, network_id, project, db, owned=True)
        await check_quota(db, "subnet", network["project_id"])
        cidr, pool_id = asked.get("cidr"), asked.get("subnetpool_id")
        if pool_id is not None:
            pool = await self.state.get(SUBNETPOOL, pool_id, project, db)
            cidr = await pool_cidr(db, pool, cidr, asked.get("prefixlen"))
        if cidr is None:
            raise InvalidRequest("Bad subnet request: a cidr or a subnetpool_id must be specified.")
        subnet = subnet_row(
            network_id=network_id,
            project_id=network["project_id"],
            name=asked.get("name", ""),
            cidr=cidr,
            gateway_ip=asked.get("gateway_ip"),
            pools=asked.get("allocation_pools"),
            ip_version=asked.get("ip_version", 4),
        )
        for other in await db.fetchall("SELECT cidr FROM subnets WHERE network_id = ?", (network_id,)):
            if ipaddress.ip_network(other["cidr"]).overlaps(ipaddress.ip_network(subnet["cidr"])):
                raise InvalidRequest(
                    f"Invalid input for operation: Requested subnet with cidr: {subnet['cidr']} for"
                    f" network: {network_id} overlaps with another subnet."
                )
        extra: dict[str, Any] = {
            "enable_dhcp": asked.get("enable_dhcp", True),
            "dns_nameservers": nameservers(asked.get("dns_nameservers")),
            "host_routes": ipam.host_routes(asked.get("host_routes")),
            "description": asked.get("description", ""),
            "subnetpool_id": pool_id,
        }
        await insert_subnet(db, {**subnet, **extra})
        return await self.state.get(SUBNET, subnet["id"], None, db)

    async def update_subnet(
        self,
        *,
        subnet_id: str,
        name: str | None = None,
        description: str | None = None,
        gateway_ip: str | None = None,
        enable_dhcp: bool | None = None,
        dns_nameservers: list[str] | None = None,
        host_routes: list[HostRoute] | None = None,
        allocation_pools: list[AllocationPool] | None = None,
    ) -> Subnet:
        changes: dict[str, Any] = {"name": name, "description": description, "enable_dhcp": enable_dhcp}
        changes["dns_nameservers"] = None if dns_nameservers is None else nameservers(dns_nameservers)
        changes["host_routes"] = None if host_routes is None else ipam.host_routes(host_routes)
        project = scope()
        async with self.state.writing() as db:
            subnet = await self.state.get(SUBNET, subnet_id, project, db, owned=True)
            if gateway_ip is not None or allocation_pools is not None:
                changes |= await self._readdress(db, subnet, gateway_ip, allocation_pools)
            await update(db, "subnets", subnet_id, changes)
            return await self.state.get(SUBNET, subnet_id, None, db)

    async def _readdress(
        self, db: Db, subnet: Subnet, gateway_ip: str | None, pools: list[AllocationPool] | None
    ) -> dict[str, Any]:
        """The columns of a new gateway and/or new pools (None: the subnet's), checked as a new
        subnet's are; new pools replace the old in ``ip_pools`` and ``ip_free``.

        :raises InvalidRequest: as ``subnet_addresses``.
        :raises Conflict: the new gateway is a port's address; a port holds an address of the
            old pools outside the new ones.
        """
        old = pool_ranges(subnet["allocation_pools"])
        asked_pools = subnet["allocation_pools"] if pools is None else pools
        gateway, ranges = subnet_addresses(
            IPv4Network(subnet["cidr"]), gateway_ip or subnet["gateway_ip"], asked_pools
        )
        if str(gateway) != subnet["gateway_ip"]:
            holder = await db.fetchone(
                "SELECT port_id FROM ip_allocations WHERE subnet_id = ? AND ip_address = ?",
                (subnet["id"], str(gateway)),
            )
            if holder is not None:
                raise Conflict(
                    f"Current gateway ip {gateway} already in use by port {holder['port_id']}."
                    " Unable to update."
                )
        if pools is None:
            return {"gateway_ip": str(gateway)}
        await replace_pools(db, subnet["id"], old, ranges)
        return {"gateway_ip": str(gateway), "allocation_pools": pools_json(ranges)}

    async def list_subnets(self, *, network_id: str | None = None) -> list[Subnet]:
        conditions, params = where({"r.network_id": network_id})
        return await self.state.load(SUBNET, conditions, params, scope=scope())

    async def get_subnet(self, *, subnet_id: str) -> Subnet:
        return await self.state.get(SUBNET, subnet_id, scope())

    async def delete_subnet(self, *, subnet_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            await self.state.get(SUBNET, subnet_id, project, db, owned=True)
            if await db.fetchone("SELECT 1 FROM ip_allocations WHERE subnet_id = ? LIMIT 1", (subnet_id,)):
                raise Conflict(
                    f"Unable to complete operation on subnet {subnet_id}:"
                    " One or more ports have an IP allocation from this subnet."
                )
            await db.execute("DELETE FROM subnets WHERE id = ?", (subnet_id,))
