"""`aiostack audit` compares each node's domains with the conductor's records, power state included.

A domain changed behind the conductor's back (on the test driver, with the node's reports to
the conductor muted) is a problem the audit names until the two agree again.
"""

from __future__ import annotations

import asyncio

import pytest

from actors.image import TINY_ID
from api.conductor import Compute
from api.identity import Tokens
from api.net import Net, NetForNodes
from bus import Actor, Bus, Context, request_scope
from deploy.audit import audit
from node.actor import NodeActor
from node.events import LifecycleEvent


async def boot(bus: Bus) -> str:
    issued = await Tokens.client(bus).issue(username="demo", password="demo-secret", project_name="demo")
    demo = Context(
        issued["user"]["id"],
        issued["project"]["id"],
        tuple(r["name"] for r in issued["roles"]),
        issued["token"],
    )
    compute = Compute.client(bus)
    with request_scope(context=demo):
        created = await compute.create_instance(name="vm", flavor_ref="1", image_ref=TINY_ID)
        async with asyncio.timeout(30):
            while (await compute.get_instance(instance_uuid=created["id"]))["status"] != "ACTIVE":
                await asyncio.sleep(0.05)
    return created["id"]


async def test_a_domain_changed_behind_the_conductors_back_is_reported(
    bus: Bus, cloud: list[Actor], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = cloud[6]
    assert isinstance(node, NodeActor)
    uuid = await boot(bus)
    assert (await audit(bus, recheck_after=0.2)).problems == {}

    async def muted(item: LifecycleEvent) -> None:
        """The conductor never hears of it."""

    monkeypatch.setattr(node.events, "tell_conductor", muted)
    domain = node.hypervisor.connection.lookupByUUIDString(uuid)
    domain.suspend()
    report = await audit(bus, recheck_after=0.2)
    assert report.problems == {
        f"power:{uuid}": f"instance {uuid} is active but its domain on node-1 is paused"
    }
    domain.destroy()
    report = await audit(bus, recheck_after=0.2)
    assert report.problems == {
        f"power:{uuid}": f"instance {uuid} is active but its domain on node-1 is shut off"
    }
    domain.create()
    assert (await audit(bus, recheck_after=0.2)).problems == {}


async def test_a_dhcp_port_a_host_no_longer_needs_is_reported(bus: Bus, cloud: list[Actor]) -> None:
    """A host's DHCP port on a network is needed while an instance of that host is on it."""
    uuid = await boot(bus)
    (port,) = await Net.client(bus).list_ports(device_id=uuid)
    node_net = NetForNodes.client(bus, host="node-1")
    dhcp = await node_net.dhcp_port(network_id=port["network_id"], instance_uuid=uuid)
    assert (await audit(bus, recheck_after=0.2)).problems == {}
    await Compute.client(bus).delete_instance(instance_uuid=uuid)  # as a service: no user
    async with asyncio.timeout(30):
        while await Net.client(bus).list_ports(device_id=uuid):
            await asyncio.sleep(0.05)
    report = await audit(bus, recheck_after=0.2)
    assert report.problems == {
        f"dhcp:{dhcp['id']}": f"DHCP port {dhcp['id']} of node-1 on network {port['network_id']}:"
        " no instance of that host is on the network"
    }
    assert await node_net.release_dhcp_port(network_id=port["network_id"]) is True
    assert (await audit(bus, recheck_after=0.2)).problems == {}
