"""The net actor over a real bus and a real sqlite store: networks, subnets, ports, IP allocation."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.net import NetActor
from bus import Bus, Conflict, Context, Forbidden, InvalidRequest, NotFound, decode, request_scope

ALICE = Context("alice-user", "project-a", ("member",), "token-a")
BOB = Context("bob-user", "project-b", ("member",), "token-b")
ADMIN = Context("admin-user", "project-admin", ("admin",), "token-admin")


@contextmanager
def acting_as(ctx: Context) -> Iterator[None]:
    with request_scope(context=ctx):
        yield


@pytest.fixture
async def net(start_actor, config) -> NetActor:
    return await start_actor(NetActor, config)


@pytest.fixture
async def port_events(bus: Bus) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Port events as they arrive on ``evt.port.>``."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        queue.put_nowait(decode(msg.data).body)

    subscription = await bus.subscribe(bus.subject("evt.port.>"), on_message)
    await bus.flush()
    yield queue
    await subscription.unsubscribe()


async def next_events(queue: asyncio.Queue[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        return [await queue.get() for _ in range(count)]


async def network_with_subnet(
    bus: Bus, ctx: Context, cidr: str = "192.168.7.0/24", **subnet: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    with acting_as(ctx):
        network = await bus.call("net.create_network", {"name": f"net-{cidr}"})
        created = await bus.call("net.create_subnet", {"network_id": network["id"], "cidr": cidr, **subnet})
    return network, created


async def allocate(
    bus: Bus, instance_uuid: str, project_id: str, requested_networks: Any, host: str = "node-1"
) -> list[dict[str, Any]]:
    body = {
        "instance_uuid": instance_uuid,
        "project_id": project_id,
        "requested_networks": requested_networks,
    }
    return await bus.call("net.allocate_for_instance", {**body, "host": host})


async def counts(bus: Bus) -> dict[str, int]:
    """How many networks, subnets, ports and allocations there are (asked as a service)."""
    return {
        "networks": len(await bus.call("net.list_networks")),
        "subnets": len(await bus.call("net.list_subnets")),
        "ports": len(await bus.call("net.list_ports")),
        "allocations": len(await bus.call("net.list_allocations")),
    }


async def test_default_network_exists_once_and_every_project_sees_it(
    bus: Bus, net, start_actor, config
) -> None:
    with acting_as(ALICE):
        networks = await bus.call("net.list_networks")
        subnets = await bus.call("net.list_subnets")
    assert [n["name"] for n in networks] == ["default"]
    default = networks[0]
    assert default["shared"] is True and default["project_id"] == "" and default["status"] == "ACTIVE"
    assert default["router:external"] is False and default["mtu"] == 1500
    assert default["created_at"].endswith("Z")
    assert [s["name"] for s in subnets] == ["default-subnet"]
    assert default["subnets"] == [subnets[0]["id"]]
    assert subnets[0]["cidr"] == "10.20.0.0/16" and subnets[0]["gateway_ip"] == "10.20.0.1"
    assert subnets[0]["allocation_pools"] == [{"start": "10.20.0.2", "end": "10.20.255.254"}]
    with acting_as(BOB):
        assert (await bus.call("net.get_network", {"network_id": default["id"]}))["id"] == default["id"]
    await start_actor(NetActor, config)  # a second replica on the same store adds no second default
    assert [n["name"] for n in await bus.call("net.list_networks")] == ["default"]


async def test_create_network_subnet_and_port(bus: Bus, net) -> None:
    network, subnet = await network_with_subnet(bus, ALICE, dns_nameservers=["8.8.8.8"])
    assert network["project_id"] == network["tenant_id"] == "project-a"
    assert network["shared"] is False and network["admin_state_up"] is True and network["subnets"] == []
    assert subnet["gateway_ip"] == "192.168.7.1" and subnet["ip_version"] == 4
    assert subnet["allocation_pools"] == [{"start": "192.168.7.2", "end": "192.168.7.254"}]
    assert subnet["enable_dhcp"] is True and subnet["dns_nameservers"] == ["8.8.8.8"]
    assert subnet["host_routes"] == [] and subnet["project_id"] == "project-a"
    with acting_as(ALICE):
        port = await bus.call("net.create_port", {"network_id": network["id"], "name": "p1"})
        assert (await bus.call("net.get_network", {"network_id": network["id"]}))["subnets"] == [subnet["id"]]
        renamed = await bus.call("net.update_network", {"network_id": network["id"], "name": "renamed"})
        bound = await bus.call(
            "net.update_port", {"port_id": port["id"], "device_id": "vm-1", "binding_host": "node-1"}
        )
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "192.168.7.2"}]
    assert port["mac_address"].startswith("fa:16:3e:") and len(port["mac_address"]) == 17
    assert port["status"] == "DOWN" and port["binding:host_id"] == "" and port["tenant_id"] == "project-a"
    assert renamed["name"] == "renamed"
    assert bound["status"] == "ACTIVE" and bound["binding:host_id"] == "node-1" and bound["name"] == "p1"


async def test_concurrent_ports_on_a_24_get_253_distinct_addresses(bus: Bus, net) -> None:
    network, subnet = await network_with_subnet(bus, ALICE, "10.9.8.0/24")
    with acting_as(ALICE):
        results = await asyncio.gather(
            *(bus.call("net.create_port", {"network_id": network["id"]}, timeout=120) for _ in range(500)),
            return_exceptions=True,
        )
    ports = [result for result in results if isinstance(result, dict)]
    failures = [result for result in results if not isinstance(result, dict)]
    addresses = [port["fixed_ips"][0]["ip_address"] for port in ports]
    assert len(ports) == 253 and len(set(addresses)) == 253
    assert {ipaddress.ip_address(a) for a in addresses} == set(
        ipaddress.ip_network("10.9.8.0/24").hosts()
    ) - {ipaddress.ip_address("10.9.8.1")}
    assert len({port["mac_address"] for port in ports}) == 253
    assert len(failures) == 247
    assert all(isinstance(failure, Conflict) for failure in failures), failures[:3]
    assert all("No more IP addresses available" in str(failure) for failure in failures)
    allocations = [a for a in await bus.call("net.list_allocations") if a["subnet_id"] == subnet["id"]]
    assert len(allocations) == 253


async def test_deleted_port_releases_its_address_for_reuse(bus: Bus, net, port_events) -> None:
    network, subnet = await network_with_subnet(bus, ALICE)
    with acting_as(ALICE):
        ports = [await bus.call("net.create_port", {"network_id": network["id"]}) for _ in range(3)]
        assert [p["fixed_ips"][0]["ip_address"] for p in ports] == [
            "192.168.7.2",
            "192.168.7.3",
            "192.168.7.4",
        ]
        await bus.call("net.delete_port", {"port_id": ports[1]["id"]})
        with pytest.raises(NotFound):
            await bus.call("net.get_port", {"port_id": ports[1]["id"]})
        reused = await bus.call("net.create_port", {"network_id": network["id"]})
        assert reused["fixed_ips"][0]["ip_address"] == "192.168.7.3"
        asked = {"subnet_id": subnet["id"], "ip_address": "192.168.7.200"}
        fixed = await bus.call("net.create_port", {"network_id": network["id"], "fixed_ips": [asked]})
        assert fixed["fixed_ips"] == [asked]
        with pytest.raises(Conflict, match="already allocated"):
            await bus.call("net.create_port", {"network_id": network["id"], "fixed_ips": [asked]})
        with pytest.raises(Conflict, match="mac address"):
            await bus.call(
                "net.create_port", {"network_id": network["id"], "mac_address": fixed["mac_address"]}
            )
    (event,) = await next_events(port_events, 1)
    assert (
        event["type"] == "port.deleted" and event["id"] == ports[1]["id"] and event["project"] == "project-a"
    )


async def test_allocate_for_instance_is_idempotent_and_deallocate_releases_everything(
    bus: Bus, net, port_events
) -> None:
    network, _ = await network_with_subnet(bus, ALICE)
    request = {
        "instance_uuid": "vm-1",
        "project_id": "project-a",
        "requested_networks": [{"uuid": network["id"]}, {"uuid": network["id"], "fixed_ip": "192.168.7.50"}],
        "host": "node-1",
    }
    first = await bus.call("net.allocate_for_instance", request)
    again = await bus.call("net.allocate_for_instance", request)
    assert [p["id"] for p in again] == [p["id"] for p in first]
    assert [p["fixed_ips"][0]["ip_address"] for p in first] == ["192.168.7.2", "192.168.7.50"]
    assert all(p["device_id"] == "vm-1" and p["device_owner"] == "compute:nova" for p in first)
    assert all(p["binding:host_id"] == "node-1" and p["status"] == "ACTIVE" for p in first)
    assert all(p["project_id"] == "project-a" for p in first)
    events = await next_events(port_events, 2)
    assert [e["type"] for e in events] == ["port.bound", "port.bound"]
    assert {e["id"] for e in events} == {p["id"] for p in first}
    with acting_as(ALICE):
        assert len(await bus.call("net.list_ports", {"device_id": "vm-1"})) == 2

    assert await bus.call("net.deallocate_for_instance", {"instance_uuid": "vm-1"}) == {
        "deleted": 2,
        "unbound": 0,
    }
    assert await bus.call("net.deallocate_for_instance", {"instance_uuid": "vm-1"}) == {
        "deleted": 0,
        "unbound": 0,
    }
    assert [e["type"] for e in await next_events(port_events, 2)] == ["port.deleted", "port.deleted"]
    assert await bus.call("net.list_ports", {"device_id": "vm-1"}) == []
    assert not [a for a in await bus.call("net.list_allocations") if a["port_id"] in {p["id"] for p in first}]


async def test_user_port_is_bound_then_unbound_not_deleted(bus: Bus, net, port_events) -> None:
    network, _ = await network_with_subnet(bus, ALICE)
    with acting_as(ALICE):
        port = await bus.call("net.create_port", {"network_id": network["id"], "name": "mine"})
        (bound,) = await allocate(bus, "vm-1", "project-a", [{"port": port["id"]}])
        assert bound["id"] == port["id"] and bound["device_id"] == "vm-1" and bound["status"] == "ACTIVE"
        with pytest.raises(Conflict, match="attached device vm-1"):
            await allocate(bus, "vm-2", "project-a", [{"port": port["id"]}])
        assert await bus.call("net.list_ports", {"device_id": "vm-2"}) == []
        result = await bus.call("net.deallocate_for_instance", {"instance_uuid": "vm-1"})
        assert result == {"deleted": 0, "unbound": 1}
        after = await bus.call("net.get_port", {"port_id": port["id"]})
    assert after["device_id"] == "" and after["status"] == "DOWN" and after["binding:host_id"] == ""
    assert after["fixed_ips"] == port["fixed_ips"] and after["name"] == "mine"
    events = await next_events(port_events, 2)
    assert [e["type"] for e in events] == ["port.bound", "port.unbound"]
    assert events[1]["state"]["status"] == "DOWN"


async def test_auto_and_none_choose_the_networks(bus: Bus, net) -> None:
    default = (await bus.call("net.list_networks", {"name": "default"}))[0]

    assert [p["network_id"] for p in await allocate(bus, "vm-1", "project-a", "auto")] == [default["id"]]
    own, _ = await network_with_subnet(bus, ALICE)
    assert [p["network_id"] for p in await allocate(bus, "vm-2", "project-a", None)] == [own["id"]]
    await network_with_subnet(bus, ALICE, "192.168.8.0/24")
    assert [p["network_id"] for p in await allocate(bus, "vm-3", "project-a", [])] == [default["id"]]
    assert await allocate(bus, "vm-4", "project-a", "none") == []
    for bad in ("sometimes", [{"uuid": own["id"], "port": "x"}], [{"port": "x", "fixed_ip": "1.2.3.4"}], [5]):
        with pytest.raises(InvalidRequest):
            await allocate(bus, "vm-5", "project-a", bad)
    with pytest.raises(InvalidRequest, match="instance_uuid"):
        await allocate(bus, "", "project-a", "auto")


async def test_projects_see_only_their_own_and_shared_resources(bus: Bus, net) -> None:
    network, subnet = await network_with_subnet(bus, ALICE)
    with acting_as(ALICE):
        port = await bus.call("net.create_port", {"network_id": network["id"]})
    with acting_as(BOB):
        for method, body in (
            ("get_network", {"network_id": network["id"]}),
            ("update_network", {"network_id": network["id"], "name": "x"}),
            ("delete_network", {"network_id": network["id"]}),
            ("get_subnet", {"subnet_id": subnet["id"]}),
            ("delete_subnet", {"subnet_id": subnet["id"]}),
            ("create_subnet", {"network_id": network["id"], "cidr": "10.1.0.0/24"}),
            ("create_port", {"network_id": network["id"]}),
            ("get_port", {"port_id": port["id"]}),
            ("update_port", {"port_id": port["id"], "name": "x"}),
            ("delete_port", {"port_id": port["id"]}),
        ):
            with pytest.raises(NotFound, match="could not be found"):
                await bus.call(f"net.{method}", body)
        assert [n["name"] for n in await bus.call("net.list_networks")] == ["default"]
        assert network["id"] not in {s["network_id"] for s in await bus.call("net.list_subnets")}
        assert await bus.call("net.list_ports") == []
        with pytest.raises(Forbidden):
            await bus.call(
                "net.allocate_for_instance",
                {
                    "instance_uuid": "vm-1",
                    "project_id": "project-a",
                    "requested_networks": "auto",
                    "host": "h",
                },
            )
        with pytest.raises(Forbidden):
            await bus.call("net.list_allocations")
    with pytest.raises(NotFound):
        await allocate(bus, "vm-1", "project-b", [{"uuid": network["id"]}])
    with acting_as(ADMIN):
        assert (await bus.call("net.get_port", {"port_id": port["id"]}))["id"] == port["id"]


async def test_only_admins_create_shared_networks_which_others_use_but_not_change(bus: Bus, net) -> None:
    with acting_as(ALICE), pytest.raises(Forbidden):
        await bus.call("net.create_network", {"name": "everyone", "shared": True})
    with acting_as(ADMIN):
        shared = await bus.call("net.create_network", {"name": "everyone", "shared": True})
        subnet = await bus.call("net.create_subnet", {"network_id": shared["id"], "cidr": "172.16.0.0/24"})
    with acting_as(BOB):
        assert shared["id"] in {n["id"] for n in await bus.call("net.list_networks", {"shared": True})}
        assert (await bus.call("net.get_subnet", {"subnet_id": subnet["id"]}))["cidr"] == "172.16.0.0/24"
        port = await bus.call("net.create_port", {"network_id": shared["id"]})
        assert port["project_id"] == "project-b"
        for method, body in (
            ("update_network", {"network_id": shared["id"], "name": "mine"}),
            ("delete_network", {"network_id": shared["id"]}),
            ("create_subnet", {"network_id": shared["id"], "cidr": "172.16.1.0/24"}),
            ("delete_subnet", {"subnet_id": subnet["id"]}),
        ):
            with pytest.raises(Forbidden):
                await bus.call(f"net.{method}", body)
    with acting_as(ALICE):
        with pytest.raises(NotFound):
            await bus.call("net.get_port", {"port_id": port["id"]})
        assert port["id"] not in {p["id"] for p in await bus.call("net.list_ports")}


@pytest.mark.parametrize(
    ("method", "body", "error", "message"),
    [
        ("create_subnet", {"cidr": "10.0.0.0/33"}, InvalidRequest, "not a valid IP subnet"),
        ("create_subnet", {"cidr": "10.0.0.5/24"}, InvalidRequest, "not a valid IP subnet"),
        ("create_subnet", {"cidr": "nonsense"}, InvalidRequest, "cidr"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"}, InvalidRequest, "gateway_ip"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"}, InvalidRequest, "gateway_ip"),
        (
            "create_subnet",
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.1.5"}]},
            InvalidRequest,
            "spans beyond",
        ),
        (
            "create_subnet",
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}]},
            InvalidRequest,
            "conflicts with allocation pool",
        ),
        (
            "create_subnet",
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    {"start": "10.0.0.10", "end": "10.0.0.20"},
                    {"start": "10.0.0.20", "end": "10.0.0.30"},
                ],
            },
            InvalidRequest,
            "overlapping allocation pools",
        ),
        ("create_subnet", {"cidr": "192.168.7.128/25"}, InvalidRequest, "overlaps with another subnet"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "ip_version": 6}, InvalidRequest, "IPv4"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "name": 5}, InvalidRequest, "Invalid input for name"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "dns_nameservers": ["dns"]}, InvalidRequest, "dns"),
        ("create_port", {"fixed_ips": [{"ip_address": "10.99.0.5"}]}, InvalidRequest, "not a valid IP"),
        ("create_port", {"fixed_ips": [{"ip_address": "192.168.7.1"}]}, InvalidRequest, "not a valid IP"),
        ("create_port", {"fixed_ips": [{"subnet_id": "nope"}]}, InvalidRequest, "no such subnet"),
        ("create_port", {"fixed_ips": "192.168.7.9"}, InvalidRequest, "fixed_ips"),
        ("create_port", {"mac_address": "fa:16:3e:zz:00:00"}, InvalidRequest, "MAC"),
        ("create_port", {"admin_state_up": "yes"}, InvalidRequest, "boolean"),
        ("create_port", {"network_id": "no-such-network"}, NotFound, "Network no-such-network could not"),
        ("create_subnet", {"network_id": "no-such-network", "cidr": "10.0.0.0/24"}, NotFound, "could not"),
        ("create_network", {"mtu": "big"}, InvalidRequest, "integer"),
        ("create_network", {"mtu": 20}, InvalidRequest, "mtu"),
        ("create_network", {"shared": "yes"}, InvalidRequest, "boolean"),
        ("create_network", {"colour": "blue"}, InvalidRequest, "colour"),
        ("get_network", {"network_id": ["x"]}, InvalidRequest, "network_id"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    bus: Bus, net, method: str, body: dict[str, Any], error: type[Exception], message: str
) -> None:
    network, _ = await network_with_subnet(bus, ALICE)
    before = await counts(bus)
    with acting_as(ALICE), pytest.raises(error, match=message):
        await bus.call(
            f"net.{method}", {"network_id": network["id"], **body} if method != "create_network" else body
        )
    assert await counts(bus) == before


async def test_networks_and_subnets_in_use_are_not_deleted(bus: Bus, net, port_events) -> None:
    network, subnet = await network_with_subnet(bus, ALICE)
    with acting_as(ALICE):
        spare = await bus.call("net.create_port", {"network_id": network["id"]})
    await allocate(bus, "vm-1", "project-a", [{"uuid": network["id"]}])
    with acting_as(ALICE):
        with pytest.raises(Conflict, match="ports still in use"):
            await bus.call("net.delete_network", {"network_id": network["id"]})
        with pytest.raises(Conflict, match="IP allocation from this subnet"):
            await bus.call("net.delete_subnet", {"subnet_id": subnet["id"]})
        await bus.call("net.deallocate_for_instance", {"instance_uuid": "vm-1"})
        await bus.call("net.delete_network", {"network_id": network["id"]})
        for method, body in (
            ("get_network", {"network_id": network["id"]}),
            ("get_port", {"port_id": spare["id"]}),
        ):
            with pytest.raises(NotFound):
                await bus.call(f"net.{method}", body)
        assert await bus.call("net.list_subnets", {"network_id": network["id"]}) == []
    assert [e["type"] for e in await next_events(port_events, 3)] == [
        "port.bound",
        "port.deleted",
        "port.deleted",
    ]
    assert await bus.call("net.list_allocations") == []


async def test_empty_subnet_is_deleted_and_its_range_reusable(bus: Bus, net) -> None:
    network, subnet = await network_with_subnet(bus, ALICE)
    with acting_as(ALICE):
        await bus.call("net.delete_subnet", {"subnet_id": subnet["id"]})
        assert (await bus.call("net.get_network", {"network_id": network["id"]}))["subnets"] == []
        port = await bus.call("net.create_port", {"network_id": network["id"]})
        assert port["fixed_ips"] == []
        again = await bus.call("net.create_subnet", {"network_id": network["id"], "cidr": "192.168.7.0/24"})
        assert again["id"] != subnet["id"]
