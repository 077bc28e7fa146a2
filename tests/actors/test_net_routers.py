"""The net actor's external networks, routers and floating IPs over a real bus, on both stores:
Neutron's checks (each refusal changes nothing), the hosts serving routers and what they are told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.net.actor import NetActor
from api.net import (
    ROUTERS_CHANGED,
    BadRequest,
    ExternalGatewayForFloatingIPNotFound,
    ExternalNetworkInUse,
    FloatingIPNotFound,
    FloatingIPPortAlreadyAssociated,
    InvalidRoutes,
    IpAddressAlreadyAllocated,
    Net,
    NetForNodes,
    Network,
    OverQuota,
    PortInUse,
    RouterExternalGatewayInUseByFloatingIp,
    RouterInterfaceInUseByFloatingIP,
    RouterInterfaceInUseByRoute,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RouterNotFound,
    ServicePortInUse,
    Subnet,
)
from bus import Bus, Conflict, Forbidden, NotFound, decode
from tests.actors.test_net import ADMIN, ALICE, BOB, acting_as, allocate, network_with_subnet, snapshot


@pytest.fixture
async def client(bus: Bus, start_actor, config) -> Net:
    await start_actor(NetActor, config)
    return Net.client(bus)


async def external_network(client: Net, cidr: str = "203.0.113.0/24") -> tuple[Network, Subnet]:
    with acting_as(ADMIN):
        network = await client.create_network(name="public", router_external=True)
        subnet = await client.create_subnet(network_id=network["id"], cidr=cidr, enable_dhcp=False)
    return network, subnet


async def unchanged(client: Net, before: dict[str, list[Any]]) -> None:
    """Every network, subnet, port and address, routers and floating IPs are as ``before``."""
    with acting_as(ADMIN):
        assert await state(client) == before


async def state(client: Net) -> dict[str, list[Any]]:
    with acting_as(ADMIN):
        return {
            **await snapshot(client),
            "routers": await client.list_routers(),
            "floatingips": await client.list_floatingips(),
        }


@pytest.fixture
async def notices(bus: Bus) -> AsyncIterator[asyncio.Queue[tuple[str, list[str]]]]:
    """The (host, routers) of each ``ROUTERS_CHANGED`` notice, as they arrive."""
    queue: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        _, body = ROUTERS_CHANGED.parse(msg.data, bus.max_bytes)
        queue.put_nowait((ROUTERS_CHANGED.fields_of(bus, msg.subject)["host"], body["routers"]))

    subscription = await bus.subscribe(bus.subject(ROUTERS_CHANGED.pattern), on_message)
    await bus.flush()
    yield queue
    await subscription.unsubscribe()


async def test_only_admins_make_networks_external_and_every_project_sees_them(client: Net) -> None:
    with acting_as(ALICE), pytest.raises(Forbidden):
        await client.create_network(name="mine", router_external=True)
    public, subnet = await external_network(client)
    with acting_as(ALICE):
        own = await client.create_network(name="own")
        with pytest.raises(Forbidden):
            await client.update_network(network_id=own["id"], router_external=True)
        assert [n["id"] for n in await client.list_networks(router_external=True)] == [public["id"]]
        assert (await client.get_network(network_id=public["id"]))["router:external"] is True
        assert subnet["id"] not in {s["id"] for s in await client.list_subnets()}
        with pytest.raises(Forbidden):
            await client.update_network(network_id=public["id"], name="taken")
    with acting_as(ADMIN):
        made = await client.update_network(network_id=own["id"], router_external=True)
    assert made["router:external"] is True


async def test_a_router_gets_a_gateway_port_of_no_project_on_the_external_network(client: Net) -> None:
    public, subnet = await external_network(client)
    with acting_as(ALICE):
        router = await client.create_router(name="r1", external_gateway_info={"network_id": public["id"]})
        assert await client.list_ports() == []  # the gateway port is of no project
    gateway = router["external_gateway_info"]
    assert gateway is not None and gateway["network_id"] == public["id"] and gateway["enable_snat"]
    assert gateway["external_fixed_ips"][0]["subnet_id"] == subnet["id"]
    with acting_as(ADMIN):
        ports = await client.list_ports(device_id=router["id"])
        assert [(p["device_owner"], p["project_id"]) for p in ports] == [("network:router_gateway", "")]
        with pytest.raises(ExternalNetworkInUse):
            await client.update_network(network_id=public["id"], router_external=False)
    with acting_as(ALICE):
        cleared = await client.update_router(router_id=router["id"], external_gateway_info={})
        assert cleared["external_gateway_info"] is None
        await client.update_router(
            router_id=router["id"], external_gateway_info={"network_id": public["id"], "enable_snat": False}
        )
        assert (await client.get_router(router_id=router["id"]))["external_gateway_info"][
            "enable_snat"
        ] is False  # type: ignore[index]
        await client.delete_router(router_id=router["id"])
    with acting_as(ADMIN):
        assert await client.list_ports(network_id=public["id"]) == []


async def test_bad_gateways_are_refused_and_change_nothing(client: Net) -> None:
    public, _ = await external_network(client)
    private, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        router = await client.create_router(name="r1")
    before = await state(client)
    with acting_as(ALICE):
        with pytest.raises(
            BadRequest, match=f"Bad router request: Network {private['id']} is not an external"
        ):
            await client.update_router(
                router_id=router["id"], external_gateway_info={"network_id": private["id"]}
            )
        with pytest.raises(NotFound):
            await client.update_router(
                router_id=router["id"], external_gateway_info={"network_id": router["id"]}
            )
        with pytest.raises(BadRequest):
            await client.create_router(name="r2", external_gateway_info={"network_id": private["id"]})
        with pytest.raises(RouterNotFound):
            await client.update_router(router_id="no-such-router", name="x")
    with acting_as(BOB), pytest.raises(RouterNotFound):
        await client.update_router(router_id=router["id"], external_gateway_info={"network_id": public["id"]})
    await unchanged(client, before)


async def test_interfaces_take_the_subnets_gateway_or_a_free_port(client: Net) -> None:
    network, subnet = await network_with_subnet(client, ALICE, "10.1.0.0/24")
    other, other_subnet = await network_with_subnet(client, ALICE, "10.2.0.0/24")
    with acting_as(ALICE):
        router = await client.create_router(name="r1")
        by_subnet = await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        port = await client.get_port(port_id=by_subnet["port_id"])
        assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.1.0.1"}]
        assert (port["device_id"], port["device_owner"], port["status"]) == (
            router["id"],
            "network:router_interface",
            "ACTIVE",
        )
        free = await client.create_port(network_id=other["id"])
        by_port = await client.add_router_interface(router_id=router["id"], port_id=free["id"])
        assert by_port["port_id"] == free["id"] and by_port["subnet_ids"] == [other_subnet["id"]]
        listed = await client.list_ports(device_id=router["id"])
        assert {p["id"] for p in listed} == {by_subnet["port_id"], free["id"]}
        with pytest.raises(RouterInUse):
            await client.delete_router(router_id=router["id"])
        with pytest.raises(Conflict):
            await client.delete_subnet(subnet_id=subnet["id"])
        with pytest.raises(Conflict):
            await client.delete_network(network_id=network["id"])
        with pytest.raises(ServicePortInUse):
            await client.delete_port(port_id=free["id"])
        await client.remove_router_interface(router_id=router["id"], port_id=free["id"])
        await client.remove_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        assert await client.list_ports(device_id=router["id"]) == []
        await client.delete_router(router_id=router["id"])
        await client.delete_network(network_id=network["id"])


async def test_bad_interfaces_are_refused_and_change_nothing(client: Net) -> None:
    _, subnet = await network_with_subnet(client, ALICE, "10.1.0.0/24")
    overlapping_net, overlapping = await network_with_subnet(client, ALICE, "10.1.0.0/16")
    _, theirs = await network_with_subnet(client, BOB, "10.3.0.0/24")
    with acting_as(ALICE):
        router = await client.create_router(name="r1")
        await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        used = await client.create_port(network_id=overlapping_net["id"], device_id="instance-9")
        two = await client.create_port(
            network_id=overlapping_net["id"], fixed_ips=[{"subnet_id": overlapping["id"]}] * 2
        )
    before = await state(client)
    with acting_as(ALICE):
        message = (
            f"Bad router request: Cidr 10.1.0.0/16 of subnet {overlapping['id']} overlaps with cidr"
            f" 10.1.0.0/24 of subnet {subnet['id']}."
        )
        with pytest.raises(BadRequest) as refused:
            await client.add_router_interface(router_id=router["id"], subnet_id=overlapping["id"])
        assert str(refused.value) == message
        with pytest.raises(BadRequest, match="already has a port on subnet"):
            await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        with pytest.raises(NotFound):
            await client.add_router_interface(router_id=router["id"], subnet_id=theirs["id"])
        with pytest.raises(PortInUse):
            await client.add_router_interface(router_id=router["id"], port_id=used["id"])
        with pytest.raises(BadRequest, match="exactly one fixed IP"):
            await client.add_router_interface(router_id=router["id"], port_id=two["id"])
        with pytest.raises(BadRequest, match="Either subnet_id or port_id"):
            await client.add_router_interface(router_id=router["id"])
        with pytest.raises(RouterInterfaceNotFoundForSubnet):
            await client.remove_router_interface(router_id=router["id"], subnet_id=overlapping["id"])
        with pytest.raises(InvalidRoutes, match="not connected"):
            await client.update_router(
                router_id=router["id"], routes=[{"destination": "10.9.0.0/16", "nexthop": "10.7.0.5"}]
            )
    with acting_as(BOB), pytest.raises(RouterNotFound):
        await client.add_router_interface(router_id=router["id"], subnet_id=theirs["id"])
    await unchanged(client, before)


async def test_extra_routes_need_a_connected_nexthop_and_hold_their_interface(client: Net) -> None:
    _, subnet = await network_with_subnet(client, ALICE, "10.1.0.0/24")
    with acting_as(ALICE):
        router = await client.create_router(name="r1")
        await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        routes = [{"destination": "10.50.0.0/16", "nexthop": "10.1.0.9"}]
        updated = await client.update_router(router_id=router["id"], routes=routes)  # type: ignore[arg-type]
        assert updated["routes"] == routes
        with pytest.raises(RouterInterfaceInUseByRoute):
            await client.remove_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        assert (await client.update_router(router_id=router["id"], routes=[]))["routes"] == []
        await client.remove_router_interface(router_id=router["id"], subnet_id=subnet["id"])


async def floating_setup(client: Net) -> dict[str, Any]:
    """An external network, a project network behind a router with its gateway there, an instance port."""
    public, _ = await external_network(client)
    network, subnet = await network_with_subnet(client, ALICE, "10.1.0.0/24")
    with acting_as(ALICE):
        router = await client.create_router(name="r1", external_gateway_info={"network_id": public["id"]})
        await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        port = await client.create_port(network_id=network["id"])
    return {"public": public, "network": network, "subnet": subnet, "router": router, "port": port}


async def test_a_floating_ip_is_associated_through_the_router_and_given_back_with_its_port(
    client: Net,
) -> None:
    made = await floating_setup(client)
    public, router, port = made["public"], made["router"], made["port"]
    with acting_as(ALICE):
        floating = await client.create_floatingip(floating_network_id=public["id"])
        assert (floating["status"], floating["port_id"], floating["router_id"]) == ("DOWN", None, None)
        associated = await client.update_floatingip(floatingip_id=floating["id"], port_id=port["id"])
        assert (associated["status"], associated["router_id"]) == ("ACTIVE", router["id"])
        assert associated["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
        with pytest.raises(RouterInterfaceInUseByFloatingIP):
            await client.remove_router_interface(router_id=router["id"], subnet_id=made["subnet"]["id"])
        with pytest.raises(RouterExternalGatewayInUseByFloatingIp):
            await client.update_router(router_id=router["id"], external_gateway_info={})
        with pytest.raises(FloatingIPPortAlreadyAssociated):
            await client.create_floatingip(floating_network_id=public["id"], port_id=port["id"])
        await client.delete_port(port_id=port["id"])
        given_back = await client.get_floatingip(floatingip_id=floating["id"])
        assert (given_back["status"], given_back["port_id"], given_back["fixed_ip_address"]) == (
            "DOWN",
            None,
            None,
        )
        await client.delete_floatingip(floatingip_id=floating["id"])
        with pytest.raises(FloatingIPNotFound):
            await client.get_floatingip(floatingip_id=floating["id"])
    with acting_as(ADMIN):
        assert await client.list_ports(network_id=public["id"], device_owner="network:floatingip") == []


async def test_bad_floating_ips_are_refused_and_change_nothing(client: Net) -> None:
    made = await floating_setup(client)
    public, port = made["public"], made["port"]
    lone, _ = await network_with_subnet(client, ALICE, "10.8.0.0/24")
    with acting_as(ALICE):
        taken = await client.create_floatingip(floating_network_id=public["id"])
        unreachable = await client.create_port(network_id=lone["id"])
    before = await state(client)
    with acting_as(ALICE):
        with pytest.raises(BadRequest) as refused:
            await client.create_floatingip(floating_network_id=made["network"]["id"])
        assert str(refused.value) == (
            f"Bad floatingip request: Network {made['network']['id']} is not a valid external network."
        )
        with pytest.raises(ExternalGatewayForFloatingIPNotFound, match="is not reachable from subnet"):
            await client.create_floatingip(floating_network_id=public["id"], port_id=unreachable["id"])
        with pytest.raises(IpAddressAlreadyAllocated):
            await client.create_floatingip(
                floating_network_id=public["id"], floating_ip_address=taken["floating_ip_address"]
            )
        with pytest.raises(BadRequest, match="does not have fixed ip"):
            await client.create_floatingip(
                floating_network_id=public["id"], port_id=port["id"], fixed_ip_address="10.1.0.200"
            )
        with pytest.raises(ServicePortInUse):
            await _delete_gateway_port(client, made["router"]["id"])
    with acting_as(BOB):
        with pytest.raises(NotFound):
            await client.create_floatingip(floating_network_id=public["id"], port_id=port["id"])
        with pytest.raises(FloatingIPNotFound):
            await client.update_floatingip(floatingip_id=taken["id"], port_id="")
    await unchanged(client, before)


async def _delete_gateway_port(client: Net, router_id: str) -> None:
    with acting_as(ADMIN):
        gateway = await client.list_ports(device_id=router_id, device_owner="network:router_gateway")
        await client.delete_port(port_id=gateway[0]["id"])


async def test_router_and_floating_ip_quotas(client: Net) -> None:
    public, _ = await external_network(client)
    with acting_as(ADMIN):
        await client.set_quotas(project_id="project-a", limits={"router": 1, "floatingip": 1})
    with acting_as(ALICE):
        await client.create_router(name="one")
        await client.create_floatingip(floating_network_id=public["id"])
    before = await state(client)
    with acting_as(ALICE):
        with pytest.raises(OverQuota):
            await client.create_router(name="two")
        with pytest.raises(OverQuota):
            await client.create_floatingip(floating_network_id=public["id"])
        details = await client.get_quota_details(project_id="project-a")
    await unchanged(client, before)
    assert details["router"] == {"limit": 1, "used": 1, "reserved": 0}
    assert details["floatingip"] == {"limit": 1, "used": 1, "reserved": 0}


async def test_a_host_serving_routers_is_given_the_unserved_ones_and_their_plan(
    client: Net, bus: Bus
) -> None:
    made = await floating_setup(client)
    with acting_as(ALICE):
        floating = await client.create_floatingip(
            floating_network_id=made["public"]["id"], port_id=made["port"]["id"]
        )
    plan = await NetForNodes.client(bus, host="node-1").routers_for_host()
    assert [router["router_id"] for router in plan["routers"]] == [made["router"]["id"]]
    router = plan["routers"][0]
    assert router["admin_state_up"] and router["enable_snat"]
    gateway = router["gateway"]
    assert gateway is not None and gateway["network_id"] == made["public"]["id"]
    assert gateway["cidr"] == "203.0.113.0/24" and gateway["gateway_ip"] == "203.0.113.1"
    [interface] = router["interfaces"]
    assert (interface["ip_address"], interface["cidr"], interface["mtu"]) == ("10.1.0.1", "10.1.0.0/24", 1500)
    assert interface["subnet_id"] == made["subnet"]["id"]
    assert router["floating_ips"] == [
        {
            "floatingip_id": floating["id"],
            "floating_ip_address": floating["floating_ip_address"],
            "fixed_ip_address": made["port"]["fixed_ips"][0]["ip_address"],
            "port_id": made["port"]["id"],
        }
    ]
    assert (await NetForNodes.client(bus, host="node-2").routers_for_host()) == {"routers": []}
    with acting_as(ALICE):
        second = await client.create_router(name="r2")
    assert [
        r["router_id"] for r in (await NetForNodes.client(bus, host="node-2").routers_for_host())["routers"]
    ] == [second["id"]]


async def test_the_serving_host_is_told_of_each_change(client: Net, bus: Bus, notices: Any) -> None:
    await NetForNodes.client(bus, host="node-1").routers_for_host()
    made = await floating_setup(client)
    router_id = made["router"]["id"]
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [router_id])  # made
        assert await notices.get() == ("node-1", [router_id])  # its interface
    with acting_as(ALICE):
        floating = await client.create_floatingip(
            floating_network_id=made["public"]["id"], port_id=made["port"]["id"]
        )
        await client.delete_port(port_id=made["port"]["id"])
        await client.delete_floatingip(floatingip_id=floating["id"])
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [router_id])  # associated
        assert await notices.get() == ("node-1", [router_id])  # its port deleted
    ports = await allocate(client, "instance-1", "project-a", [{"uuid": made["network"]["id"]}])
    with acting_as(ALICE):
        await client.create_floatingip(floating_network_id=made["public"]["id"], port_id=ports[0]["id"])
    await client.deallocate_for_instance(instance_uuid="instance-1")
    async with asyncio.timeout(10):
        assert await notices.get() == ("node-1", [router_id])  # associated
        assert await notices.get() == ("node-1", [router_id])  # the instance's port given back
    plan = await NetForNodes.client(bus, host="node-1").routers_for_host()
    assert plan["routers"][0]["floating_ips"] == []


async def test_each_router_change_is_an_event_with_its_interfaces(client: Net, bus: Bus) -> None:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        events.put_nowait(decode(msg.data).body)

    await bus.subscribe(bus.subject("evt.router.>"), on_event)
    await bus.flush()
    public, _ = await external_network(client)
    _, subnet = await network_with_subnet(client, ALICE, "10.1.0.0/24")
    with acting_as(ALICE):
        router = await client.create_router(name="r1")
        await client.update_router(router_id=router["id"], external_gateway_info={"network_id": public["id"]})
        await client.add_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        with pytest.raises(RouterInUse):
            await client.delete_router(router_id=router["id"])  # refused: no event
        await client.remove_router_interface(router_id=router["id"], subnet_id=subnet["id"])
        await client.delete_router(router_id=router["id"])
    seen = []
    async with asyncio.timeout(10):
        for _ in range(5):
            seen.append(await events.get())
    assert [(e["type"], e["id"], e["project"]) for e in seen] == [
        (f"router.{change}", router["id"], "project-a")
        for change in ("created", "updated", "interface_added", "interface_removed", "deleted")
    ]
    assert seen[0]["state"]["external_gateway_info"] is None
    assert seen[1]["state"]["external_gateway_info"]["network_id"] == public["id"]
    (interface,) = seen[2]["state"]["interfaces"]
    assert (interface["subnet_id"], interface["ip_address"]) == (subnet["id"], "10.1.0.1")
    assert seen[3]["state"]["interfaces"] == seen[4]["state"]["interfaces"] == []
    assert events.empty()
