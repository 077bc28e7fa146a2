"""The net actor over a real bus and a real sqlite store: networks, subnets, ports, IP allocation."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.net.actor import NetActor
from actors.net.schema import MIGRATIONS
from api.net import Net, NetForNodes, Network, Port, Subnet
from bus import Bus, Conflict, Context, Forbidden, InvalidRequest, NotFound, decode, request_scope
from bus.api import subjects
from runtime.store import SqliteStore

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
def client(bus: Bus, net: NetActor) -> Net:
    """The whole net API, as the gateway and the conductor call it."""
    return Net.client(bus)


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
    client: Net, ctx: Context, cidr: str = "192.168.7.0/24", **subnet: Any
) -> tuple[Network, Subnet]:
    with acting_as(ctx):
        network = await client.create_network(name=f"net-{cidr}")
        created = await client.create_subnet(network_id=network["id"], cidr=cidr, **subnet)
    return network, created


async def allocate(
    client: Net, instance_uuid: str, project_id: str, requested_networks: Any, host: str = "node-1"
) -> list[Port]:
    return await client.allocate_for_instance(
        instance_uuid=instance_uuid, project_id=project_id, requested_networks=requested_networks, host=host
    )


async def snapshot(client: Net) -> dict[str, list[Any]]:
    """Every network, subnet, port and allocation (asked as a service)."""
    return {
        "networks": await client.list_networks(),
        "subnets": await client.list_subnets(),
        "ports": await client.list_ports(),
        "allocations": await client.list_allocations(),
    }


async def test_default_network_exists_once_and_every_project_sees_it(
    client: Net, start_actor, config
) -> None:
    with acting_as(ALICE):
        networks = await client.list_networks()
        subnets = await client.list_subnets()
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
        assert (await client.get_network(network_id=default["id"]))["id"] == default["id"]
    await start_actor(NetActor, config)  # a second replica on the same store adds no second default
    assert [n["name"] for n in await client.list_networks()] == ["default"]


async def test_create_network_subnet_and_port(client: Net) -> None:
    network, subnet = await network_with_subnet(client, ALICE, dns_nameservers=["8.8.8.8"])
    assert network["project_id"] == network["tenant_id"] == "project-a"
    assert network["shared"] is False and network["admin_state_up"] is True and network["subnets"] == []
    assert subnet["gateway_ip"] == "192.168.7.1" and subnet["ip_version"] == 4
    assert subnet["allocation_pools"] == [{"start": "192.168.7.2", "end": "192.168.7.254"}]
    assert subnet["enable_dhcp"] is True and subnet["dns_nameservers"] == ["8.8.8.8"]
    assert subnet["host_routes"] == [] and subnet["project_id"] == "project-a"
    with acting_as(ALICE):
        port = await client.create_port(network_id=network["id"], name="p1")
        assert (await client.get_network(network_id=network["id"]))["subnets"] == [subnet["id"]]
        renamed = await client.update_network(network_id=network["id"], name="renamed")
        bound = await client.update_port(port_id=port["id"], device_id="vm-1", binding_host="node-1")
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "192.168.7.2"}]
    assert port["mac_address"].startswith("fa:16:3e:") and len(port["mac_address"]) == 17
    assert port["status"] == "DOWN" and port["binding:host_id"] == "" and port["tenant_id"] == "project-a"
    assert renamed["name"] == "renamed"
    assert bound["status"] == "ACTIVE" and bound["binding:host_id"] == "node-1" and bound["name"] == "p1"


async def test_concurrent_ports_on_a_24_get_253_distinct_addresses(bus: Bus, client: Net) -> None:
    network, subnet = await network_with_subnet(client, ALICE, "10.9.8.0/24")
    patient = Net.client(bus, timeout=120)
    with acting_as(ALICE):
        results = await asyncio.gather(
            *(patient.create_port(network_id=network["id"]) for _ in range(500)),
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
    allocations = [a for a in await client.list_allocations() if a["subnet_id"] == subnet["id"]]
    assert len(allocations) == 253


async def test_deleted_port_releases_its_address_for_reuse(client: Net, port_events) -> None:
    network, subnet = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        ports = [await client.create_port(network_id=network["id"]) for _ in range(3)]
        assert [p["fixed_ips"][0]["ip_address"] for p in ports] == [
            "192.168.7.2",
            "192.168.7.3",
            "192.168.7.4",
        ]
        await client.delete_port(port_id=ports[1]["id"])
        with pytest.raises(NotFound):
            await client.get_port(port_id=ports[1]["id"])
        reused = await client.create_port(network_id=network["id"])
        assert reused["fixed_ips"][0]["ip_address"] == "192.168.7.3"
        asked = {"subnet_id": subnet["id"], "ip_address": "192.168.7.200"}
        fixed = await client.create_port(network_id=network["id"], fixed_ips=[asked])
        assert fixed["fixed_ips"] == [asked]
        with pytest.raises(Conflict, match="already allocated"):
            await client.create_port(network_id=network["id"], fixed_ips=[asked])
        with pytest.raises(Conflict, match="mac address"):
            await client.create_port(network_id=network["id"], mac_address=fixed["mac_address"])
    (event,) = await next_events(port_events, 1)
    assert (
        event["type"] == "port.deleted" and event["id"] == ports[1]["id"] and event["project"] == "project-a"
    )


async def test_an_offloaded_instances_ports_are_unbound_keeping_their_addresses_and_bound_again(
    client: Net, port_events
) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    [port] = await allocate(client, "vm-shelved", "project-a", [{"uuid": network["id"]}], host="node-1")
    await next_events(port_events, 1)  # port.bound
    [unbound] = await client.unbind_instance_ports(instance_uuid="vm-shelved")
    assert (unbound["id"], unbound["device_id"], unbound["fixed_ips"]) == (
        port["id"],
        "vm-shelved",
        port["fixed_ips"],
    )
    assert (unbound["binding:host_id"], unbound["binding:vif_type"]) == ("", "unbound")
    (event,) = await next_events(port_events, 1)
    assert (event["type"], event["id"]) == ("port.unbound", port["id"])
    assert await client.unbind_instance_ports(instance_uuid="vm-shelved") == []  # idempotent
    [bound] = await allocate(client, "vm-shelved", "project-a", [{"uuid": network["id"]}], host="node-2")
    assert (bound["id"], bound["binding:host_id"], bound["fixed_ips"]) == (
        port["id"],
        "node-2",
        port["fixed_ips"],
    )


async def test_allocate_for_instance_is_idempotent_and_deallocate_releases_everything(
    client: Net, port_events
) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    request = {
        "instance_uuid": "vm-1",
        "project_id": "project-a",
        "requested_networks": [{"uuid": network["id"]}, {"uuid": network["id"], "fixed_ip": "192.168.7.50"}],
        "host": "node-1",
    }
    first = await client.allocate_for_instance(**request)
    again = await client.allocate_for_instance(**request)
    assert [p["id"] for p in again] == [p["id"] for p in first]
    assert [p["fixed_ips"][0]["ip_address"] for p in first] == ["192.168.7.2", "192.168.7.50"]
    assert all(p["device_id"] == "vm-1" and p["device_owner"] == "compute:nova" for p in first)
    assert all(p["binding:host_id"] == "node-1" and p["status"] == "ACTIVE" for p in first)
    assert all(p["project_id"] == "project-a" for p in first)
    events = await next_events(port_events, 2)
    assert [e["type"] for e in events] == ["port.bound", "port.bound"]
    assert {e["id"] for e in events} == {p["id"] for p in first}
    with acting_as(ALICE):
        assert len(await client.list_ports(device_id="vm-1")) == 2

    assert await client.deallocate_for_instance(instance_uuid="vm-1") == {
        "deleted": 2,
        "unbound": 0,
    }
    assert await client.deallocate_for_instance(instance_uuid="vm-1") == {
        "deleted": 0,
        "unbound": 0,
    }
    assert [e["type"] for e in await next_events(port_events, 2)] == ["port.deleted", "port.deleted"]
    assert await client.list_ports(device_id="vm-1") == []
    assert not [a for a in await client.list_allocations() if a["port_id"] in {p["id"] for p in first}]


async def test_user_port_is_bound_then_unbound_not_deleted(client: Net, port_events) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        port = await client.create_port(network_id=network["id"], name="mine")
        (bound,) = await allocate(client, "vm-1", "project-a", [{"port": port["id"]}])
        assert bound["id"] == port["id"] and bound["device_id"] == "vm-1" and bound["status"] == "ACTIVE"
        with pytest.raises(Conflict, match="attached device vm-1"):
            await allocate(client, "vm-2", "project-a", [{"port": port["id"]}])
        assert await client.list_ports(device_id="vm-2") == []
        result = await client.deallocate_for_instance(instance_uuid="vm-1")
        assert result == {"deleted": 0, "unbound": 1}
        after = await client.get_port(port_id=port["id"])
    assert after["device_id"] == "" and after["status"] == "DOWN" and after["binding:host_id"] == ""
    assert after["fixed_ips"] == port["fixed_ips"] and after["name"] == "mine"
    events = await next_events(port_events, 2)
    assert [e["type"] for e in events] == ["port.bound", "port.unbound"]
    assert events[1]["state"]["status"] == "DOWN"


async def test_auto_and_none_choose_the_networks(client: Net) -> None:
    default = (await client.list_networks(name="default"))[0]

    assert [p["network_id"] for p in await allocate(client, "vm-1", "project-a", "auto")] == [default["id"]]
    own, _ = await network_with_subnet(client, ALICE)
    assert [p["network_id"] for p in await allocate(client, "vm-2", "project-a", None)] == [own["id"]]
    await network_with_subnet(client, ALICE, "192.168.8.0/24")
    assert [p["network_id"] for p in await allocate(client, "vm-3", "project-a", [])] == [default["id"]]
    assert await allocate(client, "vm-4", "project-a", "none") == []
    for bad, message in (
        ([{"uuid": own["id"], "port": "x"}], "each entry is"),
        ([{}], "each entry is"),
        ([{"port": "x", "fixed_ip": "1.2.3.4"}], "each entry is"),
        ([{"port": "x"}, {"port": "x"}], "port x is repeated"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            await allocate(client, "vm-5", "project-a", bad)
    with pytest.raises(InvalidRequest, match="not a valid IP"):
        await allocate(client, "vm-5", "project-a", [{"uuid": own["id"], "fixed_ip": "10.99.0.1"}])
    assert await client.list_ports(device_id="vm-5") == []


async def test_projects_see_only_their_own_and_shared_resources(client: Net) -> None:
    network, subnet = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        port = await client.create_port(network_id=network["id"])
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
                await getattr(client, method)(**body)
        assert [n["name"] for n in await client.list_networks()] == ["default"]
        assert network["id"] not in {s["network_id"] for s in await client.list_subnets()}
        assert await client.list_ports() == []
        with pytest.raises(Forbidden):
            await allocate(client, "vm-1", "project-a", "auto", host="h")
        with pytest.raises(Forbidden):
            await client.list_allocations()
    with pytest.raises(NotFound):
        await allocate(client, "vm-1", "project-b", [{"uuid": network["id"]}])
    with acting_as(ADMIN):
        assert (await client.get_port(port_id=port["id"]))["id"] == port["id"]


async def test_only_admins_create_shared_networks_which_others_use_but_not_change(client: Net) -> None:
    with acting_as(ALICE), pytest.raises(Forbidden):
        await client.create_network(name="everyone", shared=True)
    with acting_as(ADMIN):
        shared = await client.create_network(name="everyone", shared=True)
        subnet = await client.create_subnet(network_id=shared["id"], cidr="172.16.0.0/24")
    with acting_as(BOB):
        assert shared["id"] in {n["id"] for n in await client.list_networks(shared=True)}
        assert (await client.get_subnet(subnet_id=subnet["id"]))["cidr"] == "172.16.0.0/24"
        port = await client.create_port(network_id=shared["id"])
        assert port["project_id"] == "project-b"
        for method, body in (
            ("update_network", {"network_id": shared["id"], "name": "mine"}),
            ("delete_network", {"network_id": shared["id"]}),
            ("create_subnet", {"network_id": shared["id"], "cidr": "172.16.1.0/24"}),
            ("delete_subnet", {"subnet_id": subnet["id"]}),
        ):
            with pytest.raises(Forbidden):
                await getattr(client, method)(**body)
    with acting_as(ALICE):
        with pytest.raises(NotFound):
            await client.get_port(port_id=port["id"])
        assert port["id"] not in {p["id"] for p in await client.list_ports()}


@pytest.mark.parametrize(
    ("method", "body", "error", "message"),
    [
        ("create_subnet", {"cidr": "10.0.0.0/33"}, InvalidRequest, "not a valid IP subnet"),
        ("create_subnet", {"cidr": "10.0.0.5/24"}, InvalidRequest, "not a valid IP subnet"),
        ("create_subnet", {"cidr": "nonsense"}, InvalidRequest, "cidr"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.1.1"}, InvalidRequest, "gateway_ip"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"}, InvalidRequest, "gateway_ip"),
        ("create_subnet", {"cidr": "10.0.0.0/24", "gateway_ip": "gw"}, InvalidRequest, "gateway_ip"),
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
        ("create_subnet", {"cidr": "10.0.0.0/24", "dns_nameservers": ["dns"]}, InvalidRequest, "dns"),
        ("create_port", {"fixed_ips": [{"ip_address": "10.99.0.5"}]}, InvalidRequest, "not a valid IP"),
        ("create_port", {"fixed_ips": [{"ip_address": "192.168.7.1"}]}, InvalidRequest, "not a valid IP"),
        ("create_port", {"fixed_ips": [{"subnet_id": "nope"}]}, InvalidRequest, "no such subnet"),
        ("create_port", {"fixed_ips": [{}]}, InvalidRequest, "subnet_id and/or an ip_address"),
        ("create_port", {"network_id": "no-such-network"}, NotFound, "Network no-such-network could not"),
        ("create_subnet", {"network_id": "no-such-network", "cidr": "10.0.0.0/24"}, NotFound, "could not"),
    ],
)
async def test_bad_values_are_refused_and_change_nothing(
    client: Net, method: str, body: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Well-formed arguments the handler refuses for what they mean."""
    network, _ = await network_with_subnet(client, ALICE)
    before = await snapshot(client)
    with acting_as(ALICE), pytest.raises(error, match=message):
        await getattr(client, method)(**{"network_id": network["id"], **body})
    assert await snapshot(client) == before


NODE_CALL = {
    "instance_uuid": "vm-1",
    "project_id": "project-a",
    "requested_networks": "auto",
    "host": "node-1",
}


@pytest.mark.parametrize(
    ("method", "body", "message"),
    [
        ("create_network", {"mtu": "big"}, r"Expected `int`, got `str` - at `\$\.mtu`"),
        ("create_network", {"mtu": 20}, r"Expected `int` >= 68 - at `\$\.mtu`"),
        ("create_network", {"mtu": 9001}, r"<= 9000 - at `\$\.mtu`"),
        ("create_network", {"shared": "yes"}, r"Expected `bool`, got `str` - at `\$\.shared`"),
        ("create_network", {"name": None}, r"Expected `str`, got `null` - at `\$\.name`"),
        ("create_network", {"name": "n" * 256}, r"length <= 255 - at `\$\.name`"),
        ("create_network", {"colour": "blue"}, "unknown field `colour`"),
        ("update_network", {"name": "x"}, "missing required field `network_id`"),
        ("get_network", {"network_id": ["x"]}, r"Expected `str`, got `array` - at `\$\.network_id`"),
        ("get_network", {"network_id": ""}, r"length >= 1 - at `\$\.network_id`"),
        ("list_networks", {"shared": "yes"}, r"\$\.shared"),
        ("create_subnet", {"network_id": "n", "cidr": "10.0.0.0/24", "name": 5}, r"\$\.name"),
        ("create_subnet", {"network_id": "n", "prefixlen": 33}, r"<= 32 - at `\$\.prefixlen`"),
        ("create_subnet", {"network_id": "n", "cidr": "10.0.0.0/24", "ip_version": 5}, r"\$\.ip_version"),
        (
            "create_subnet",
            {"network_id": "n", "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.9"}]},
            r"missing required field `end` - at `\$\.allocation_pools\[0\]`",
        ),
        (
            "create_subnet",
            {"network_id": "n", "cidr": "10.0.0.0/24", "dns_nameservers": "x"},
            "dns_nameservers",
        ),
        ("create_port", {"network_id": "n", "fixed_ips": "192.168.7.9"}, r"\$\.fixed_ips"),
        (
            "create_port",
            {"network_id": "n", "fixed_ips": [{"ip_address": 7}]},
            r"\$\.fixed_ips\[0\]\.ip_address",
        ),
        ("create_port", {"network_id": "n", "mac_address": "fa:16:3e:zz:00:00"}, r"\$\.mac_address"),
        ("create_port", {"network_id": "n", "admin_state_up": "yes"}, r"\$\.admin_state_up"),
        ("update_port", {"port_id": "p", "binding_host": 5}, r"\$\.binding_host"),
        ("list_ports", {"device_owner": 5}, r"\$\.device_owner"),
        ("delete_port", {"port_id": "p", "force": True}, "unknown field `force`"),
        ("allocate_for_instance", {**NODE_CALL, "requested_networks": "sometimes"}, "requested_networks"),
        ("allocate_for_instance", {**NODE_CALL, "requested_networks": [5]}, r"\$\.requested_networks\[0\]"),
        (
            "allocate_for_instance",
            {**NODE_CALL, "requested_networks": [{"uuid": 5}]},
            r"\$\.requested_networks\[0\]\.uuid",
        ),
        (
            "allocate_for_instance",
            {**NODE_CALL, "instance_uuid": ""},
            r"length >= 1 - at `\$\.instance_uuid`",
        ),
        ("allocate_for_instance", {**NODE_CALL, "host": "node.1"}, r"\$\.host"),
        (
            "allocate_for_instance",
            {"instance_uuid": "vm-1", "host": "h"},
            "missing required field `project_id`",
        ),
        ("deallocate_for_instance", {"instance_uuid": 5}, r"\$\.instance_uuid"),
        ("set_port_binding", {"port_id": "p", "vif_type": "tap", "vif_details": {}}, r"\$\.vif_type"),
        ("set_port_binding", {"port_id": "p", "vif_type": "bridge", "vif_details": []}, r"\$\.vif_details"),
        ("list_allocations", {"subnet_id": "s"}, "unknown field `subnet_id`"),
    ],
)
async def test_malformed_arguments_are_refused_naming_the_field_and_change_nothing(
    bus: Bus, client: Net, method: str, body: dict[str, Any], message: str
) -> None:
    """Arguments of the wrong type, out of bounds, missing or unknown: refused at dispatch,
    before the handler runs (sent raw: a typed client would not let them be written)."""
    network, _ = await network_with_subnet(client, ALICE)
    await client.create_port(network_id=network["id"])
    before = await snapshot(client)
    with pytest.raises(InvalidRequest, match=message) as refused:
        await bus.call(f"net.{method}", body)
    assert str(refused.value).startswith(f"net.{method}: ")
    with pytest.raises(InvalidRequest, match="the body must be a map of arguments"):
        await bus.call(f"net.{method}", [body])
    assert await snapshot(client) == before


def test_the_node_facet_holds_what_nodes_call() -> None:
    """What a node may call of net (its NATS permissions come from this facet) and no more."""
    methods = ("allocate_for_instance", "deallocate_for_instance", "dhcp_port", "get_network", "get_subnet")
    methods += ("instance_ports_at", "ping", "release_dhcp_port", "routers_for_host", "security_for_host")
    methods += ("set_port_binding",)
    assert subjects(NetForNodes, host="node-1") == [f"net.host.node-1.{method}" for method in methods]
    assert subjects(NetForNodes) == [f"net.host.*.{method}" for method in methods]
    node_only = {"dhcp_port", "instance_ports_at", "release_dhcp_port", "routers_for_host"}
    node_only |= {"security_for_host"}
    assert set(NetForNodes.api_methods) - node_only < set(Net.api_methods)
    assert len(Net.api_methods) == 60


async def test_networks_and_subnets_in_use_are_not_deleted(client: Net, port_events) -> None:
    network, subnet = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        spare = await client.create_port(network_id=network["id"])
    await allocate(client, "vm-1", "project-a", [{"uuid": network["id"]}])
    with acting_as(ALICE):
        with pytest.raises(Conflict, match="ports still in use"):
            await client.delete_network(network_id=network["id"])
        with pytest.raises(Conflict, match="IP allocation from this subnet"):
            await client.delete_subnet(subnet_id=subnet["id"])
        await client.deallocate_for_instance(instance_uuid="vm-1")
        await client.delete_network(network_id=network["id"])
        for method, body in (
            ("get_network", {"network_id": network["id"]}),
            ("get_port", {"port_id": spare["id"]}),
        ):
            with pytest.raises(NotFound):
                await getattr(client, method)(**body)
        assert await client.list_subnets(network_id=network["id"]) == []
    assert [e["type"] for e in await next_events(port_events, 3)] == [
        "port.bound",
        "port.deleted",
        "port.deleted",
    ]
    assert await client.list_allocations() == []


async def test_empty_subnet_is_deleted_and_its_range_reusable(client: Net) -> None:
    network, subnet = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        await client.delete_subnet(subnet_id=subnet["id"])
        assert (await client.get_network(network_id=network["id"]))["subnets"] == []
        port = await client.create_port(network_id=network["id"])
        assert port["fixed_ips"] == []
        again = await client.create_subnet(network_id=network["id"], cidr="192.168.7.0/24")
        assert again["id"] != subnet["id"]


async def free_ranges_match_allocations(net: NetActor) -> None:
    """``ip_free`` holds exactly the pool addresses no port holds, in disjoint ranges."""
    for subnet in await net.store.fetchall("SELECT id, allocation_pools FROM subnets"):
        pools = set()
        for pool in json.loads(subnet["allocation_pools"]):
            start, end = int(ipaddress.ip_address(pool["start"])), int(ipaddress.ip_address(pool["end"]))
            pools |= set(range(start, end + 1))
        held = {
            int(ipaddress.ip_address(row["ip_address"]))
            for row in await net.store.fetchall(
                "SELECT ip_address FROM ip_allocations WHERE subnet_id = ?", (subnet["id"],)
            )
        }
        free: list[int] = []
        for row in await net.store.fetchall(
            "SELECT lo, hi FROM ip_free WHERE subnet_id = ? ORDER BY lo", (subnet["id"],)
        ):
            assert row["lo"] <= row["hi"] and (not free or free[-1] < row["lo"]), row
            free += range(row["lo"], row["hi"] + 1)
        assert free == sorted(pools - held)


def address(port: dict[str, Any]) -> str:
    return port["fixed_ips"][0]["ip_address"]


async def test_allocation_fills_the_lowest_holes_first(client: Net, net: NetActor) -> None:
    network, _ = await network_with_subnet(client, ALICE)
    with acting_as(ALICE):
        ports = [await client.create_port(network_id=network["id"]) for _ in range(10)]
        assert [address(p) for p in ports] == [f"192.168.7.{n}" for n in range(2, 12)]
        for port in ports[2:5] + ports[7:8]:  # .4, .5, .6 and .9
            await client.delete_port(port_id=port["id"])
        refilled = [await client.create_port(network_id=network["id"]) for _ in range(5)]
        assert [address(p) for p in refilled] == [f"192.168.7.{n}" for n in (4, 5, 6, 9, 12)]
        for port in refilled[:4]:
            assert await client.get_port(port_id=port["id"]) == port
        for port in ports[0:1] + ports[5:7] + refilled[4:]:  # .2, .7, .8 and .12
            await client.delete_port(port_id=port["id"])
        concurrent = await asyncio.gather(*(client.create_port(network_id=network["id"]) for _ in range(6)))
    assert sorted((address(p) for p in concurrent), key=ipaddress.ip_address) == [
        f"192.168.7.{n}" for n in (2, 7, 8, 12, 13, 14)
    ]
    (bound,) = await allocate(client, "vm-1", "project-a", [{"uuid": network["id"]}])
    assert address(bound) == "192.168.7.15"
    with acting_as(ALICE):
        assert await client.get_port(port_id=bound["id"]) == bound
    await free_ranges_match_allocations(net)


async def test_allocation_matches_a_model_across_pools_fixed_ips_and_releases(
    client: Net, net: NetActor
) -> None:
    """Random creates (lowest free or a fixed address, in the pools or not) and deletes on a
    subnet of three pools (two of them adjacent) answer what a model says."""
    pools = [("10.1.0.2", "10.1.0.20"), ("10.1.0.21", "10.1.0.30"), ("10.1.0.40", "10.1.0.50")]
    network, subnet = await network_with_subnet(
        client, ALICE, "10.1.0.0/26", allocation_pools=[{"start": s, "end": e} for s, e in pools]
    )
    pool_addresses = [
        str(ipaddress.ip_address(n))
        for start, end in pools
        for n in range(int(ipaddress.ip_address(start)), int(ipaddress.ip_address(end)) + 1)
    ]
    hosts = [str(host) for host in ipaddress.ip_network("10.1.0.0/26").hosts() if str(host) != "10.1.0.1"]
    held: dict[str, str] = {}  # port id -> address
    rng = random.Random(20240611)
    with acting_as(ALICE):
        for step in range(400):
            choice = rng.random()
            if choice < 0.4 and held:
                port_id = rng.choice(list(held))
                await client.delete_port(port_id=port_id)
                del held[port_id]
                continue
            taken = set(held.values())
            if choice < 0.8:
                expected = next((a for a in pool_addresses if a not in taken), None)
                body: dict[str, Any] = {"network_id": network["id"]}
            else:
                expected = rng.choice(hosts)
                body = {"network_id": network["id"], "fixed_ips": [{"ip_address": expected}]}
                if expected in taken:
                    with pytest.raises(Conflict, match=f"IP address {expected} already allocated"):
                        await client.create_port(**body)
                    continue
            if expected is None:
                with pytest.raises(Conflict, match="No more IP addresses available on network"):
                    await client.create_port(**body)
                continue
            port = await client.create_port(**body)
            assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": expected}], step
            held[port["id"]] = expected
            if step % 50 == 0:
                await free_ranges_match_allocations(net)
    await free_ranges_match_allocations(net)


@pytest.mark.sqlite_only
async def test_a_store_of_schema_1_keeps_its_allocations_and_holes(bus: Bus, start_actor, config) -> None:
    """Addresses allocated before the free ranges existed stay taken; the holes between them,
    not an address outside the pools, are the next ones given."""
    store = SqliteStore(config.store_path("net"), MIGRATIONS[:1])
    await store.open()
    now = "2024-01-01T00:00:00Z"
    pools = [{"start": "10.5.0.2", "end": "10.5.0.10"}, {"start": "10.5.0.20", "end": "10.5.0.30"}]
    await store.execute(
        "INSERT INTO networks VALUES ('net-1', 'old', 'project-a', 0, 1, 1500, ?, ?)", (now, now)
    )
    await store.execute(
        "INSERT INTO subnets (id, name, network_id, project_id, cidr, ip_version, gateway_ip,"
        " allocation_pools, enable_dhcp, dns_nameservers, created_at, updated_at)"
        " VALUES ('subnet-1', '', 'net-1', 'project-a', '10.5.0.0/24', 4, '10.5.0.1', ?, 1, '[]', ?, ?)",
        (json.dumps(pools), now, now),
    )
    old = ["10.5.0.2", "10.5.0.3", "10.5.0.5", "10.5.0.10", "10.5.0.15", "10.5.0.20", "10.5.0.25"]
    for number, ip in enumerate(old):
        await store.execute(
            "INSERT INTO ports (id, network_id, project_id, mac_address, created_at, updated_at)"
            " VALUES (?, 'net-1', 'project-a', ?, ?, ?)",
            (f"port-{ip}", f"fa:16:3e:00:00:{number:02x}", now, now),
        )
        await store.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id) VALUES ('subnet-1', ?, ?)",
            (ip, f"port-{ip}"),
        )
    await store.close()
    net = await start_actor(NetActor, config)
    client = Net.client(bus)
    await free_ranges_match_allocations(net)
    with acting_as(ALICE):
        for port_id in ("port-10.5.0.15", "port-10.5.0.3"):
            await client.delete_port(port_id=port_id)
        given = [address(await client.create_port(network_id="net-1")) for _ in range(15)]
        with pytest.raises(Conflict, match="No more IP addresses available on network net-1"):
            await client.create_port(network_id="net-1")
    expected = [3, 4, 6, 7, 8, 9, 21, 22, 23, 24, 26, 27, 28, 29, 30]
    assert given == [f"10.5.0.{n}" for n in expected]
    await free_ranges_match_allocations(net)


async def test_subnet_update_changes_gateway_routes_dns_and_pools(client: Net, net: NetActor) -> None:
    routes = [{"destination": "10.50.0.0/16", "nexthop": "192.168.7.254"}]
    network, subnet = await network_with_subnet(
        client, ALICE, allocation_pools=[{"start": "192.168.7.10", "end": "192.168.7.20"}], host_routes=routes
    )
    assert subnet["host_routes"] == routes
    with acting_as(ALICE):
        port = await client.create_port(network_id=network["id"])
        updated = await client.update_subnet(
            subnet_id=subnet["id"],
            name="renamed",
            gateway_ip="192.168.7.2",
            enable_dhcp=False,
            dns_nameservers=["8.8.4.4", "8.8.8.8"],
            host_routes=[{"destination": "10.60.0.0/24", "nexthop": "10.0.0.1"}],
            allocation_pools=[{"start": "192.168.7.5", "end": "192.168.7.12"}],
        )
        assert await client.get_subnet(subnet_id=subnet["id"]) == updated
        reused = [await client.create_port(network_id=network["id"]) for _ in range(2)]
    assert address(port) == "192.168.7.10"
    assert updated["name"] == "renamed" and updated["gateway_ip"] == "192.168.7.2"
    assert updated["enable_dhcp"] is False and updated["dns_nameservers"] == ["8.8.4.4", "8.8.8.8"]
    assert updated["host_routes"] == [{"destination": "10.60.0.0/24", "nexthop": "10.0.0.1"}]
    assert updated["allocation_pools"] == [{"start": "192.168.7.5", "end": "192.168.7.12"}]
    assert updated["revision_number"] == subnet["revision_number"] + 1
    assert [address(p) for p in reused] == ["192.168.7.5", "192.168.7.6"]
    await free_ranges_match_allocations(net)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"gateway_ip": "192.168.7.30"}, Conflict, "already in use by port"),
        ({"gateway_ip": "192.168.7.12"}, InvalidRequest, "conflicts with allocation pool"),
        ({"gateway_ip": "10.0.0.1"}, InvalidRequest, "gateway_ip"),
        ({"allocation_pools": [{"start": "192.168.7.11", "end": "192.168.7.20"}]}, Conflict, "is allocated"),
        (
            {"allocation_pools": [{"start": "192.168.7.1", "end": "192.168.7.20"}]},
            InvalidRequest,
            "conflicts",
        ),
        ({"allocation_pools": [{"start": "192.168.7.10", "end": "192.168.8.2"}]}, InvalidRequest, "beyond"),
        (
            {
                "allocation_pools": [
                    {"start": "192.168.7.10", "end": "192.168.7.20"},
                    {"start": "192.168.7.15", "end": "192.168.7.30"},
                ]
            },
            InvalidRequest,
            "overlapping",
        ),
        (
            {"host_routes": [{"destination": "10.0.0.1/8", "nexthop": "10.0.0.1"}]},
            InvalidRequest,
            "host_routes",
        ),
        ({"host_routes": [{"destination": "10.0.0.0/8", "nexthop": "x"}]}, InvalidRequest, "host_routes"),
        (
            {"host_routes": [{"destination": "10.0.0.0/8", "nexthop": "10.0.0.1"}] * 2},
            InvalidRequest,
            "Duplicate hostroute",
        ),
        ({"dns_nameservers": ["8.8.8.8", "8.8.8.8"]}, InvalidRequest, "Duplicate nameserver"),
        ({"dns_nameservers": [f"8.8.8.{n}" for n in range(6)]}, InvalidRequest, "exceeds the limit"),
    ],
)
async def test_bad_subnet_updates_are_refused_and_change_nothing(
    client: Net, net: NetActor, change: dict[str, Any], error: type[Exception], message: str
) -> None:
    network, subnet = await network_with_subnet(
        client, ALICE, allocation_pools=[{"start": "192.168.7.10", "end": "192.168.7.20"}]
    )
    with acting_as(ALICE):
        await client.create_port(network_id=network["id"])  # holds .10
        await client.create_port(network_id=network["id"], fixed_ips=[{"ip_address": "192.168.7.30"}])
    before = await snapshot(client)
    with acting_as(ALICE), pytest.raises(error, match=message):
        await client.update_subnet(subnet_id=subnet["id"], **change)
    assert await snapshot(client) == before
    await free_ranges_match_allocations(net)
    with acting_as(BOB), pytest.raises(NotFound):
        await client.update_subnet(subnet_id=subnet["id"], name="mine")


async def test_bulk_creates_are_all_or_nothing(client: Net) -> None:
    with acting_as(ALICE):
        networks = await client.create_networks(networks=[{"name": "a"}, {"name": "b", "mtu": 1400}])
        assert [(n["name"], n["mtu"]) for n in networks] == [("a", 1500), ("b", 1400)]
        subnets = await client.create_subnets(
            subnets=[
                {"network_id": networks[0]["id"], "cidr": "10.1.0.0/24"},
                {"network_id": networks[1]["id"], "cidr": "10.2.0.0/24", "name": "s2"},
            ]
        )
        assert [s["cidr"] for s in subnets] == ["10.1.0.0/24", "10.2.0.0/24"]
        ports = await client.create_ports(
            ports=[{"network_id": networks[0]["id"], "name": "p1"}, {"network_id": networks[1]["id"]}]
        )
        assert [address(p) for p in ports] == ["10.1.0.2", "10.2.0.2"]
    before = await snapshot(client)
    failing: list[tuple[str, dict[str, Any], type[Exception]]] = [
        ("create_networks", {"networks": [{"name": "c"}, {"name": "d", "shared": True}]}, Forbidden),
        (
            "create_subnets",
            {
                "subnets": [
                    {"network_id": networks[0]["id"], "cidr": "10.3.0.0/24"},
                    {"network_id": networks[0]["id"], "cidr": "10.3.0.0/25"},
                ]
            },
            InvalidRequest,
        ),
        (
            "create_ports",
            {
                "ports": [
                    {"network_id": networks[0]["id"], "fixed_ips": [{"ip_address": "10.1.0.9"}]},
                    {"network_id": networks[0]["id"], "fixed_ips": [{"ip_address": "10.1.0.9"}]},
                ]
            },
            Conflict,
        ),
        (
            "create_ports",
            {"ports": [{"network_id": networks[0]["id"]}, {"network_id": "nope"}]},
            NotFound,
        ),
    ]
    for method, arguments, error in failing:
        with acting_as(ALICE), pytest.raises(error):
            await getattr(client, method)(**arguments)
        assert await snapshot(client) == before, method


async def test_port_fixed_ips_update_keeps_adds_and_releases_atomically(client: Net, net: NetActor) -> None:
    network, first = await network_with_subnet(client, ALICE, "10.7.0.0/24")
    with acting_as(ALICE):
        second = await client.create_subnet(network_id=network["id"], cidr="10.8.0.0/24")
        port = await client.create_port(
            network_id=network["id"], fixed_ips=[{"subnet_id": first["id"]}, {"subnet_id": second["id"]}]
        )
        assert [ip["ip_address"] for ip in port["fixed_ips"]] == ["10.7.0.2", "10.8.0.2"]
        one = await client.update_port(port_id=port["id"], fixed_ips=[{"ip_address": "10.7.0.2"}])
        assert one["fixed_ips"] == [{"subnet_id": first["id"], "ip_address": "10.7.0.2"}]
        two = await client.update_port(
            port_id=port["id"],
            fixed_ips=[
                {"subnet_id": first["id"], "ip_address": "10.7.0.2"},
                {"subnet_id": first["id"], "ip_address": "10.7.0.50"},
                {"subnet_id": second["id"]},
            ],
        )
        assert sorted(ip["ip_address"] for ip in two["fixed_ips"]) == ["10.7.0.2", "10.7.0.50", "10.8.0.2"]
        other = await client.create_port(network_id=network["id"], fixed_ips=[{"ip_address": "10.7.0.60"}])
    before = await snapshot(client)
    for bad, error in (
        ([{"ip_address": "10.8.0.2"}, {"ip_address": "10.7.0.60"}], Conflict),
        ([{"ip_address": "10.9.0.5"}], InvalidRequest),
        ([{"subnet_id": second["id"], "ip_address": "10.7.0.2"}], InvalidRequest),
    ):
        with acting_as(ALICE), pytest.raises(error):
            await client.update_port(port_id=port["id"], fixed_ips=bad)
        assert await snapshot(client) == before
    with acting_as(ALICE):
        none = await client.update_port(port_id=port["id"], fixed_ips=[])
        assert none["fixed_ips"] == [] and address(other) == "10.7.0.60"
        again = await client.create_port(network_id=network["id"], fixed_ips=[{"ip_address": "10.7.0.50"}])
    assert address(again) == "10.7.0.50"
    await free_ranges_match_allocations(net)


async def test_subnet_pools_give_free_prefixes_and_keep_them(client: Net) -> None:
    with acting_as(ALICE):
        pool = await client.create_subnetpool(
            name="p", prefixes=["10.80.0.0/24", "10.80.1.0/24", "10.90.0.0/16"], default_prefixlen=26
        )
        assert pool["prefixes"] == ["10.80.0.0/23", "10.90.0.0/16"] and pool["ip_version"] == 4
        assert (pool["min_prefixlen"], pool["default_prefixlen"], pool["max_prefixlen"]) == (8, 26, 32)
        network = await client.create_network(name="pooled")
        first = await client.create_subnet(network_id=network["id"], subnetpool_id=pool["id"])
        asked = await client.create_subnet(
            network_id=network["id"], subnetpool_id=pool["id"], cidr="10.80.0.128/25"
        )
        other = await client.create_network(name="pooled-2")
        sized = await client.create_subnets(
            subnets=[
                {"network_id": other["id"], "subnetpool_id": pool["id"], "prefixlen": 25},
                {"network_id": other["id"], "subnetpool_id": pool["id"], "prefixlen": 24},
            ]
        )
        assert (first["cidr"], first["subnetpool_id"]) == ("10.80.0.0/26", pool["id"])
        assert asked["cidr"] == "10.80.0.128/25"
        assert [s["cidr"] for s in sized] == ["10.80.1.0/25", "10.90.0.0/24"]
        renamed = await client.update_subnetpool(
            subnetpool_id=pool["id"], name="q", prefixes=["10.80.0.0/22", "10.90.0.0/16"]
        )
        assert renamed["name"] == "q" and renamed["prefixes"] == ["10.80.0.0/22", "10.90.0.0/16"]
        assert [p["id"] for p in await client.list_subnetpools()] == [pool["id"]]
    before = await snapshot(client)
    with acting_as(ALICE):
        pool_before = await client.get_subnetpool(subnetpool_id=pool["id"])
    for method, arguments, error in (
        (
            "create_subnet",
            {"network_id": network["id"], "subnetpool_id": pool["id"], "cidr": "10.80.0.0/25"},
            Conflict,
        ),
        (
            "create_subnet",
            {"network_id": network["id"], "subnetpool_id": pool["id"], "cidr": "10.70.0.0/24"},
            InvalidRequest,
        ),
        (
            "create_subnet",
            {"network_id": network["id"], "subnetpool_id": pool["id"], "prefixlen": 4},
            InvalidRequest,
        ),
        (
            "create_subnet",
            {"network_id": network["id"], "subnetpool_id": pool["id"], "prefixlen": 9},
            Conflict,
        ),
        ("create_subnet", {"network_id": network["id"]}, InvalidRequest),
        ("create_subnet", {"network_id": network["id"], "subnetpool_id": "nope"}, NotFound),
        ("update_subnetpool", {"subnetpool_id": pool["id"], "prefixes": ["10.80.0.0/22"]}, InvalidRequest),
        ("update_subnetpool", {"subnetpool_id": pool["id"], "min_prefixlen": 28}, InvalidRequest),
        ("delete_subnetpool", {"subnetpool_id": pool["id"]}, Conflict),
        ("create_subnetpool", {"prefixes": ["10.0.0.1/8"]}, InvalidRequest),
        ("create_subnetpool", {"prefixes": ["10.0.0.0/8"], "shared": True}, Forbidden),
    ):
        with acting_as(ALICE), pytest.raises(error):
            await getattr(client, method)(**arguments)
        assert await snapshot(client) == before, (method, arguments)
    with acting_as(ALICE):
        assert await client.get_subnetpool(subnetpool_id=pool["id"]) == pool_before
    with acting_as(BOB):
        with pytest.raises(NotFound):
            await client.get_subnetpool(subnetpool_id=pool["id"])
        assert await client.list_subnetpools() == []
    with acting_as(ALICE):
        for subnet in (first, asked, *sized):
            await client.delete_subnet(subnet_id=subnet["id"])
        await client.delete_subnetpool(subnetpool_id=pool["id"])
        with pytest.raises(NotFound):
            await client.get_subnetpool(subnetpool_id=pool["id"])
