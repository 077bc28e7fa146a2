"""Subnets: an IPv4 range of a network, its gateway and the pools ports are given addresses
from; made and deleted by the network's project (they are not updated)."""

from __future__ import annotations

import ipaddress

from actors.net.ipam import insert_subnet, nameservers, subnet_row
from actors.net.schema import NETWORK, SUBNET
from actors.net.state import NetState, scope, where
from api.net import AllocationPool, Subnet, Subnets
from bus import Conflict, InvalidRequest


class SubnetServant(Subnets):
    """Serves ``api.net.Subnets`` (``SubnetReader``'s ``get_subnet`` too)."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_subnet(
        self,
        *,
        network_id: str,
        cidr: str,
        name: str = "",
        gateway_ip: str | None = None,
        allocation_pools: list[AllocationPool] | None = None,
        ip_version: int = 4,
        enable_dhcp: bool = True,
        dns_nameservers: list[str] | None = None,
        description: str = "",
    ) -> Subnet:
        dns = nameservers(dns_nameservers)
        project = scope()
        async with self.state.writing() as db:
            network = await self.state.get(NETWORK, network_id, project, db, owned=True)
            subnet = subnet_row(
                network_id=network_id,
                project_id=network["project_id"],
                name=name,
                cidr=cidr,
                gateway_ip=gateway_ip,
                pools=allocation_pools,
                ip_version=ip_version,
            )
            for other in await db.fetchall("SELECT cidr FROM subnets WHERE network_id = ?", (network_id,)):
                if ipaddress.ip_network(other["cidr"]).overlaps(ipaddress.ip_network(subnet["cidr"])):
                    raise InvalidRequest(
                        f"Invalid input for operation: Requested subnet with cidr: {subnet['cidr']} for"
                        f" network: {network_id} overlaps with another subnet."
                    )
            extra = {"enable_dhcp": enable_dhcp, "dns_nameservers": dns, "description": description}
            await insert_subnet(db, {**subnet, **extra})
            return await self.state.get(SUBNET, subnet["id"], None, db)

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
