"""The net actor's quotas over a real bus and store, for the ports the system makes: an instance's
ports count against its project and are refused past the limit, a host's DHCP ports count in the
network's project's usage but are never refused."""

from __future__ import annotations

import pytest

from actors.net.actor import NetActor
from actors.net.quotas import used
from actors.net.schema import MIGRATIONS as NET_MIGRATIONS
from api.net import Net, NetForNodes, OverQuota, RequestedNetwork
from bus import Bus, Context, Forbidden, request_scope
from runtime.store import open_store
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


async def _rows_of(net: Net, project_id: str) -> dict[str, int]:
    """How many of each resource of the project its listings show."""
    listed = {
        "network": await net.list_networks(),
        "subnet": await net.list_subnets(),
        "port": await net.list_ports(),
        "security_group": await net.list_security_groups(),
        "security_group_rule": await net.list_security_group_rules(),
    }
    return {kind: sum(row["project_id"] == project_id for row in rows) for kind, rows in listed.items()}


async def test_usage_follows_what_is_made_and_removed_and_a_groups_rules_go_with_it(
    bus: Bus, start_actor, config
) -> None:
    """Usage is what the database counts as rows come and go (``project_counts``), the rows the
    listings show: a group's rules stop counting when the group's delete removes them (a cascade,
    no statement of the net actor's), on both stores."""
    await start_actor(StandInConductor)
    await start_actor(NetActor, config)
    net = Net.client(bus)

    async def used() -> dict[str, int]:
        details = await net.get_quota_details(project_id="p-demo")
        return {
            kind: details[kind]["used"]
            for kind in ("network", "subnet", "port", "security_group", "security_group_rule")
        }

    with request_scope(context=DEMO):
        listed = await _rows_of(net, "p-demo")  # which makes the project's default group
        before = await used()
        assert before == listed
        network = await net.create_network(name="counted")
        await net.create_subnet(network_id=network["id"], cidr="192.168.6.0/24")
        port = await net.create_port(network_id=network["id"])
        group = await net.create_security_group(name="web")
        await net.create_security_group_rule(
            security_group_id=group["id"], direction="ingress", protocol="tcp"
        )
        made = await used()
        assert made == await _rows_of(net, "p-demo")
        assert [made[kind] - before[kind] for kind in ("network", "subnet", "port")] == [1, 1, 1]
        assert made["security_group_rule"] >= before["security_group_rule"] + 3  # egress pair and its own
        await net.delete_security_group(security_group_id=group["id"])
        assert (await used())["security_group_rule"] == made["security_group_rule"] - 3
        await net.delete_port(port_id=port["id"])
        await net.delete_network(network_id=network["id"])
        after = await used()
        assert after == await _rows_of(net, "p-demo")
    assert {kind: after[kind] for kind in ("network", "subnet", "port")} == {
        kind: before[kind] for kind in ("network", "subnet", "port")
    }


async def test_a_store_of_an_earlier_version_gets_its_counts_from_its_rows(config) -> None:
    earlier = open_store(config, "net", NET_MIGRATIONS[:-1])
    await earlier.open()
    try:
        for number, project in enumerate(("p1", "p1", "p2")):
            await earlier.execute(
                "INSERT INTO networks (id, name, project_id, shared, admin_state_up, mtu, created_at,"
                " updated_at) VALUES (?, ?, ?, 0, 1, 1500, 'then', 'then')",
                (f"n{number}", f"n{number}", project),
            )
    finally:
        await earlier.close()
    store = open_store(config, "net", NET_MIGRATIONS)
    await store.open()
    try:
        assert [await used(store, "network", project) for project in ("p1", "p2", "p3")] == [2, 1, 0]
    finally:
        await store.close()
