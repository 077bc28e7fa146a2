"""The net actor's quotas over a real bus and store, for the ports the system makes: an instance's
ports count against its project and are refused past the limit, a host's DHCP ports count in the
network's project's usage but are never refused."""

from __future__ import annotations

import pytest

from actors.net.actor import NetActor
from api.net import Net, NetForNodes, OverQuota, RequestedNetwork
from bus import Bus, Context, Forbidden, request_scope
from tests.actors.test_node_facets import StandInConductor

DEMO = Context("u-demo", "p-demo", ("member",), "token-demo")
ADMIN = Context("u-admin", "p-admin", ("admin",), "token-admin")


async def test_instance_ports_count_against_the_project_and_dhcp_ports_are_counted_never_refused(
    bus: Bus, start_actor, config
) -> None:
    conductor: StandInConductor = await start_actor(StandInConductor)
    await start_actor(NetActor, config)
    net = Net.client(bus)
    with request_scope(context=DEMO), pytest.raises(Forbidden):
        await net.set_quotas(project_id="p-demo", limits={"port": 100})
    with request_scope(context=ADMIN):
        await net.set_quotas(project_id="p-demo", limits={"port": 2})
    with request_scope(context=DEMO):
        own = await net.create_network(name="demo-net")
        await net.create_subnet(network_id=own["id"], cidr="192.168.5.0/24")
    vm_1, vm_2 = conductor.place("vm-1", "node-1", DEMO), conductor.place("vm-2", "node-1", DEMO)
    node = NetForNodes.client(bus, host="node-1")
    one: list[RequestedNetwork] = [{"uuid": own["id"]}]

    assert len(await node.allocate_for_instance(instance_uuid=vm_1, requested_networks=one * 2)) == 2
    dhcp = await node.dhcp_port(network_id=own["id"], instance_uuid=vm_1)  # past the limit, still made
    assert dhcp["project_id"] == "p-demo"
    with pytest.raises(OverQuota, match=r"^Quota exceeded for resources: \['port'\]\.$"):
        await node.allocate_for_instance(instance_uuid=vm_2, requested_networks=one)
    with request_scope(context=DEMO), pytest.raises(OverQuota):
        await net.create_port(network_id=own["id"])
    assert await net.list_ports(device_id=vm_2) == []
    with request_scope(context=DEMO):
        details = await net.get_quota_details(project_id="p-demo")
    assert details["port"] == {"limit": 2, "used": 3, "reserved": 0}

    await node.deallocate_for_instance(instance_uuid=vm_1)
    assert len(await node.allocate_for_instance(instance_uuid=vm_2, requested_networks=one)) == 1
    with request_scope(context=DEMO):
        assert (await net.get_quota_details(project_id="p-demo"))["port"]["used"] == 2
