"""The net actor (Neutron): networks, subnets, ports and the IP addresses they hold.

Its API, events and version history: ``api/net.py``. The actor composes one servant per job,
sharing one ``NetState`` (bus and store): ``networks``, ``subnets``, ``subnetpools``, ``ports``
(the CRUD users reach through the gateway), ``instances`` (the ports of instances; the IP
allocations, for an audit), ``nodes`` (what compute nodes call, each for the instances on its
host only) and ``quotas`` (each project's limits, checked by the others where they insert a row).
``secgroups`` serves security groups and their rules, and puts ports in them; ``routers`` and
``floatingips`` serve routers and floating IPs, ``hosts`` which host serves each router and what it
plumbs of it.
``ipam`` gives the addresses; ``schema`` holds the store's migrations and how its rows read as
Neutron records. At the first start the actor makes the
shared network ``default`` (of no project) and its subnet; its orphan sweep gives back the
ports of instances the conductor no longer knows. Each network is a VXLAN segment with a VNI
of its own (``provider:segmentation_id``, the lowest above every other), and each compute host
that serves DHCP on a network holds a port there (``NetForNodes.dhcp_port``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from actors.net.floatingips import FloatingIpServant
from actors.net.instances import InstanceServant
from actors.net.ipam import insert_subnet, subnet_row
from actors.net.networks import NetworkServant
from actors.net.nodes import NodePorts
from actors.net.ports import PortServant
from actors.net.quotas import QuotaServant
from actors.net.routers import RouterServant
from actors.net.schema import (
    DEFAULT_CIDR,
    DEFAULT_GATEWAY,
    DEFAULT_NETWORK,
    DEFAULT_SUBNET,
    MIGRATIONS,
    NEXT_SEGMENT,
    TRIGGERS,
)
from actors.net.secgroups import SecurityGroupServant
from actors.net.state import NetState, insert
from actors.net.subnetpools import SubnetPoolServant
from actors.net.subnets import SubnetServant
from actors.orphans import ORPHAN_SWEEP_INTERVAL, sweep_orphans_forever
from actors.placement import Placements
from api.net import COMPUTE_OWNER, Deallocated
from bus import Actor, Bus
from runtime.config import Config
from runtime.stamps import new_uuid
from runtime.store import open_store

log = logging.getLogger(__name__)


class NetActor(Actor):
    name = "net"
    orphan_sweep_interval = ORPHAN_SWEEP_INTERVAL

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.store = open_store(config, "net", MIGRATIONS)
        state = self.net_state = NetState(bus, self.store)
        self.instances = InstanceServant(state)
        self.serve(
            NetworkServant(state),
            SubnetServant(state),
            SubnetPoolServant(state),
            PortServant(state),
            self.instances,
            NodePorts(state, self.instances, Placements(bus)),
            QuotaServant(state),
            SecurityGroupServant(state),
            RouterServant(state),
            FloatingIpServant(state),
        )

    async def on_start(self) -> None:
        await self.store.open()
        await self._bootstrap()
        self.spawn(
            sweep_orphans_forever(
                self.bus, self._instances_with_ports, self._release_ports, "ports", self.orphan_sweep_interval
            ),
            name="net-orphans",
        )

    async def on_stop(self) -> None:
        await self.store.close()

    async def _bootstrap(self) -> None:
        """The ``TRIGGERS``; a VNI for each network of an earlier version; the shared network
        "default" (of no project) and its subnet, on first start."""
        async with self.net_state.writing() as db:
            for trigger in TRIGGERS[db.dialect]:
                await db.execute(trigger)
            for row in await db.fetchall(
                "SELECT id FROM networks WHERE segmentation_id IS NULL ORDER BY created_at"
            ):
                vni = (await db.fetchone(NEXT_SEGMENT))["vni"]
                await db.execute("UPDATE networks SET segmentation_id = ? WHERE id = ?", (vni, row["id"]))
            if await db.fetchone("SELECT id FROM networks LIMIT 1"):
                return
            network_id = new_uuid()
            network = {"id": network_id, "name": DEFAULT_NETWORK, "project_id": "", "shared": True}
            network |= {"admin_state_up": True, "mtu": 1500, "segmentation_id": 1}
            await insert(db, "networks", network)
            subnet = subnet_row(
                network_id=network_id,
                project_id="",
                name=DEFAULT_SUBNET,
                cidr=DEFAULT_CIDR,
                gateway_ip=DEFAULT_GATEWAY,
                pools=None,
                ip_version=4,
            )
            await insert_subnet(db, {**subnet, "enable_dhcp": True, "dns_nameservers": "[]"})
        log.info("first start: shared network %r with subnet %s", DEFAULT_NETWORK, DEFAULT_CIDR)

    async def _instances_with_ports(self, among: Sequence[str] | None) -> list[str]:
        """The instances with ports: all, or those ``among`` these."""
        among_clause = "" if among is None else f" AND device_id IN ({', '.join('?' * len(among))})"
        rows = await self.store.fetchall(
            f"SELECT DISTINCT device_id FROM ports WHERE device_owner = ? AND device_id != ''{among_clause}",
            (COMPUTE_OWNER, *(among or ())),
        )
        return [row["device_id"] for row in rows]

    async def _release_ports(self, instance_uuid: str) -> Deallocated:
        return await self.instances.deallocate_for_instance(instance_uuid=instance_uuid)
