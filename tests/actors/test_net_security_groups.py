"""The net actor's security groups over a real bus, on both stores: the default group, Neutron's
checks of a rule, the groups of ports (instances' ones too), deletes that cascade or refuse, and
project isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.net.actor import NetActor
from api.net import (
    SECURITY_CHANGED,
    Net,
    NetForNodes,
    PortSecurityPortHasSecurityGroup,
    SecurityGroupInUse,
    SecurityGroupNotFound,
    SecurityGroupRuleExists,
)
from bus import Bus, InvalidRequest, decode
from tests.actors.test_net import ADMIN, ALICE, BOB, acting_as, allocate, network_with_subnet


@pytest.fixture
async def client(bus: Bus, start_actor, config) -> Net:
    await start_actor(NetActor, config)
    return Net.client(bus)


async def test_the_default_group_is_made_once_even_when_asked_at_once(client: Net) -> None:
    with acting_as(ALICE):
        listings = await asyncio.gather(*(client.list_security_groups() for _ in range(8)))
    ids = {group["id"] for listing in listings for group in listing}
    assert len(ids) == 1
    with acting_as(ADMIN):
        every = await client.list_security_groups()
    assert [group["project_id"] for group in every if group["id"] in ids] == ["project-a"]
    assert len(every[0]["security_group_rules"]) == 4


async def test_instance_ports_go_in_the_default_group_and_network_ports_in_none(client: Net) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    ports = await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}])
    with acting_as(ALICE):
        default = (await client.list_security_groups(name="default"))[0]
        dhcp = await client.create_port(network_id=network["id"], device_owner="network:dhcp")
    assert ports[0]["security_groups"] == [default["id"]] and ports[0]["port_security_enabled"]
    assert dhcp["security_groups"] == []
    with acting_as(ADMIN), pytest.raises(SecurityGroupInUse):
        await client.delete_security_group(security_group_id=default["id"])


async def test_the_group_names_of_devices_are_those_of_their_ports_the_caller_sees(client: Net) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}])
    await allocate(client, "instance-2", "project-a", [{"uuid": network["id"]}])
    with acting_as(ALICE):
        web = await client.create_security_group(name="web")
        (port,) = await client.list_ports(device_id="instance-2")
        await client.update_port(port_id=port["id"], security_groups=[*port["security_groups"], web["id"]])
        names = await client.group_names_by_device(device_ids=["instance-1", "instance-2", "instance-3"])
    by_id = [name for _, name in sorted([(port["security_groups"][0], "default"), (web["id"], "web")])]
    assert names == {"instance-1": ["default"], "instance-2": by_id}
    with acting_as(BOB):
        assert await client.group_names_by_device(device_ids=["instance-1", "instance-2"]) == {}
    with acting_as(ADMIN):
        assert await client.group_names_by_device(device_ids=["instance-1"]) == {"instance-1": ["default"]}
        assert await client.group_names_by_device(device_ids=[]) == {}


async def test_a_group_deleted_takes_the_rules_naming_it_as_remote_with_it(client: Net) -> None:
    with acting_as(ALICE):
        web = await client.create_security_group(name="web")
        db = await client.create_security_group(name="db")
        from_web = await client.create_security_group_rule(
            security_group_id=db["id"], direction="ingress", protocol="tcp",
            port_range_min=5432, port_range_max=5432, remote_group_id=web["id"],
        )  # fmt: skip
        await client.delete_security_group(security_group_id=web["id"])
        rules = await client.list_security_group_rules(security_group_id=db["id"])
    assert from_web["id"] not in {rule["id"] for rule in rules} and len(rules) == 2


async def test_a_bulk_of_rules_is_all_or_none(client: Net) -> None:
    with acting_as(ALICE):
        group = await client.create_security_group(name="bulk")
        ssh = {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"}
        ssh |= {"port_range_min": 22, "port_range_max": 22}
        with pytest.raises(SecurityGroupRuleExists):
            await client.create_security_group_rules(rules=[ssh, {**ssh, "protocol": "6"}])
        with pytest.raises(InvalidRequest):
            await client.create_security_group_rules(rules=[ssh, {**ssh, "port_range_min": 23}])
        assert len(await client.list_security_group_rules(security_group_id=group["id"])) == 2
        made = await client.create_security_group_rules(rules=[ssh, {**ssh, "ethertype": "IPv6"}])
    assert [rule["ethertype"] for rule in made] == ["IPv4", "IPv6"]


async def test_ports_take_only_their_projects_groups(client: Net) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(BOB):
        theirs = await client.create_security_group(name="theirs")
    with acting_as(ALICE):
        with pytest.raises(SecurityGroupNotFound):
            await client.create_port(network_id=network["id"], security_groups=[theirs["id"]])
        port = await client.create_port(network_id=network["id"])
        with pytest.raises(PortSecurityPortHasSecurityGroup):
            await client.update_port(port_id=port["id"], port_security_enabled=False)
        with pytest.raises(SecurityGroupNotFound):
            await client.update_port(port_id=port["id"], security_groups=[theirs["id"]])
        assert (await client.get_port(port_id=port["id"]))["security_groups"] == port["security_groups"]
    with acting_as(BOB), pytest.raises(SecurityGroupNotFound):
        await client.get_security_group(security_group_id=port["security_groups"][0])


async def test_a_node_is_told_its_own_ports_rules_and_the_remote_groups_members(
    bus: Bus, client: Net
) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    mine = await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="node-1")
    elsewhere = await allocate(client, "instance-2", "project-a", [{"uuid": network["id"]}], host="node-2")
    with acting_as(ALICE):
        default = (await client.list_security_groups(name="default"))[0]
        await client.create_security_group_rule(
            security_group_id=default["id"], direction="ingress", protocol="tcp",
            port_range_min=22, port_range_max=22, remote_ip_prefix="10.9.9.9/24",
        )  # fmt: skip
    told = await NetForNodes.client(bus, host="node-1").security_for_host()
    assert [port["port_id"] for port in told["ports"]] == [mine[0]["id"]]
    port = told["ports"][0]
    assert port["fixed_ips"] == [mine[0]["fixed_ips"][0]["ip_address"]] and port["port_security_enabled"]
    assert port["mac_address"] == mine[0]["mac_address"] and port["network_id"] == network["id"]
    ssh = {"direction": "ingress", "ethertype": "IPv4", "protocol": 6, "port_range_min": 22}
    ssh |= {"port_range_max": 22, "remote_cidr": "10.9.9.0/24", "remote_group_id": None}
    assert ssh in port["rules"]
    assert len(port["rules"]) == 5
    addresses = sorted(p["fixed_ips"][0]["ip_address"] for p in (*mine, *elsewhere))
    assert told["members"] == {default["id"]: addresses}
    assert (await NetForNodes.client(bus, host="node-3").security_for_host()) == {"ports": [], "members": {}}


@pytest.fixture
async def notices(bus: Bus) -> AsyncIterator[asyncio.Queue[tuple[str, list[str]]]]:
    """The (host, groups) of each ``SECURITY_CHANGED`` notice, as they arrive."""
    queue: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        _, body = SECURITY_CHANGED.parse(msg.data, bus.max_bytes)
        queue.put_nowait((SECURITY_CHANGED.fields_of(bus, msg.subject)["host"], body["groups"]))

    subscription = await bus.subscribe(bus.subject(SECURITY_CHANGED.pattern), on_message)
    await bus.flush()
    yield queue
    await subscription.unsubscribe()


async def enforcing(bus: Bus, *hosts: str) -> None:
    """These hosts enforce security groups: each asked for what it enforces once."""
    for host in hosts:
        await NetForNodes.client(bus, host=host).security_for_host()


async def test_the_hosts_a_change_concerns_are_told_of_it(client: Net, bus: Bus, notices: Any) -> None:
    await enforcing(bus, "node-1", "node-2", "node-3")
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        default = (await client.list_security_groups(name="default"))[0]["id"]
        web = await client.create_security_group(name="web")
    await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="node-1")
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [default])
    with acting_as(ALICE):
        port = await client.create_port(network_id=network["id"], security_groups=[web["id"]])
        await client.update_port(port_id=port["id"], binding_host="node-2")
        await client.create_security_group_rule(
            security_group_id=web["id"], direction="ingress", remote_group_id=default
        )
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-2", [web["id"]])  # the port's update: its own host
        assert await notices.get() == ("node-2", [web["id"]])  # the rule: the host of its group's port
    await allocate(client, "instance-2", "project-a", [{"uuid": network["id"]}], host="node-3")
    async with asyncio.timeout(10):
        told = [await notices.get() for _ in range(3)]
    assert sorted(told) == [("node-1", [default]), ("node-2", [default]), ("node-3", [default])]
    assert notices.empty()


async def test_a_host_that_never_asked_what_it_enforces_is_never_told(
    client: Net, bus: Bus, notices: Any
) -> None:
    """A test-driver host filters nothing and never asks: a boot on it, or next to it in its
    groups, sends it no notice, while a host that enforces is told as before."""
    await enforcing(bus, "node-1")
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        default = (await client.list_security_groups(name="default"))[0]["id"]
    await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="simulated-1")
    await allocate(client, "instance-2", "project-a", [{"uuid": network["id"]}], host="node-1")
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [default])
    await allocate(client, "instance-3", "project-a", [{"uuid": network["id"]}], host="simulated-2")
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [default])  # a member of its group came
    await asyncio.sleep(0.2)
    assert notices.empty()


async def test_an_instance_s_ports_bound_again_on_another_host_tell_both_hosts(
    client: Net, bus: Bus, notices: Any
) -> None:
    """An evacuate's destination asks for the instance's ports: they are bound there (the same
    ports and addresses), and the host they leave and the one they join are told."""
    await enforcing(bus, "node-1", "node-2")
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        default = (await client.list_security_groups(name="default"))[0]["id"]
    first = await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="node-1")
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [default])
    again = await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="node-2")
    assert [(p["id"], p["fixed_ips"], p["binding:host_id"]) for p in again] == [
        (first[0]["id"], first[0]["fixed_ips"], "node-2")
    ]
    async with asyncio.timeout(10):
        told = sorted([await notices.get() for _ in range(2)])
    assert told == [("node-1", [default]), ("node-2", [default])]
    await allocate(client, "instance-1", "project-a", [{"uuid": network["id"]}], host="node-2")
    await asyncio.sleep(0.2)
    assert notices.empty()  # asked again on the same host: nothing moved, no one told


async def test_each_group_change_is_an_event_with_its_rules(client: Net, bus: Bus) -> None:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        events.put_nowait(decode(msg.data).body)

    await bus.subscribe(bus.subject("evt.security_group.>"), on_event)
    await bus.flush()
    with acting_as(ALICE):
        group = await client.create_security_group(name="web", description="the web servers")
        rule = await client.create_security_group_rule(
            security_group_id=group["id"], direction="ingress", protocol="tcp", remote_ip_prefix="0.0.0.0/0"
        )
        await client.update_security_group(security_group_id=group["id"], description="web")
        await client.delete_security_group_rule(security_group_rule_id=rule["id"])
        await client.delete_security_group(security_group_id=group["id"])
    seen = []
    async with asyncio.timeout(10):
        while len(seen) < 5:
            event = await events.get()
            if event["id"] == group["id"]:  # not the default group's
                seen.append(event)
    assert [(e["type"], e["project"]) for e in seen] == [
        (f"security_group.{change}", "project-a")
        for change in ("created", "rule_added", "updated", "rule_deleted", "deleted")
    ]
    rules = [[r["id"] for r in e["state"]["security_group_rules"]] for e in seen]
    assert rule["id"] in rules[1] and rule["id"] in rules[2]
    assert rule["id"] not in rules[0] + rules[3] + rules[4]
    assert [e["state"]["description"] for e in seen] == ["the web servers"] * 2 + ["web"] * 3
