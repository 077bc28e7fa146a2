"""Security groups on a real guest: the node's nftables tables let in only what the rules allow,
and a rule made or deleted through the API takes effect on the running guest.

The guest is the test guest with dropbear on port 22 (``tests/node/test_guest_ssh.py``), on a
network of the test's own (a subnet no other test's guests use on the shared libvirtd). The host
reaches it from its own address on the network's bridge (read from the route, not assumed to be
the subnet's gateway); that address is in no security group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import libvirt
import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from bus import Actor
from deploy.testguest import TestGuest, register_test_guest
from node import firewall
from node.actor import NodeActor
from node.libvirtd import SYSTEM_URI
from tests.helpers import DEMO_PASSWORD
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud, qemu_running, remove_guests
from tests.node.test_guest_ssh import run

GUARDED_CIDR = "10.231.0.0/24"
NO_ANSWER_WITHIN = 3.0
"""How long a refused connection or ping is waited for (the tables drop, they do not reject)."""


async def ssh_banner(address: str) -> str | None:
    """What the guest's port 22 says first (dropbear's ``SSH-2.0-...``), or None: no answer."""
    try:
        async with asyncio.timeout(NO_ANSWER_WITHIN):
            reader, writer = await asyncio.open_connection(address, 22)
            try:
                return (await reader.readline()).decode(errors="replace")
            finally:
                writer.close()
    except (TimeoutError, OSError):
        return None


async def pings(address: str) -> bool:
    status, _, _ = await run("busybox", "ping", "-c", "1", "-W", str(int(NO_ANSWER_WITHIN)), address)
    return status == 0


async def until_banner(address: str, present: bool) -> None:
    """Wait (bounded) until the guest's port 22 answers, or until it no longer does."""
    async with asyncio.timeout(GUEST_DEADLINE):
        while (await ssh_banner(address) is not None) != present:
            await asyncio.sleep(0.2)


async def nft_tables() -> str:
    status, out, err = await run("nft", "list", "tables")
    assert status == 0, err
    return out


async def boot_guarded(cloud: QemuCloud) -> dict[str, Any]:
    """The test guest, ACTIVE, on a network of its own (``GUARDED_CIDR``), its SSH server up."""
    client = cloud.client
    network = (await client.request("POST", "/network/v2.0/networks", {"network": {"name": "guarded"}}))[
        "network"
    ]
    subnet = {"network_id": network["id"], "ip_version": 4, "cidr": GUARDED_CIDR}
    await client.request("POST", "/network/v2.0/subnets", {"subnet": subnet})
    body = {
        "name": "guarded",
        "imageRef": cloud.images["disk"],
        "flavorRef": "1",
        "networks": [{"uuid": network["id"]}],
    }
    server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    await cloud.console_until(server_id, r"AIOSTACK-SSH keys=\d+ host_key=\S+")
    return server


@pytest.fixture
async def guarded_cloud(qemu_cloud: QemuCloud) -> AsyncIterator[QemuCloud]:
    """The QEMU cloud; its node's tables removed afterwards, whatever the test left."""
    try:
        yield qemu_cloud
    finally:
        await firewall.remove(qemu_cloud.node.host)


@pytest.mark.full_size
async def test_a_real_guest_answers_on_port_22_only_while_a_rule_allows_the_host(
    guarded_cloud: QemuCloud,
) -> None:
    client, node = guarded_cloud.client, guarded_cloud.node
    server = await boot_guarded(guarded_cloud)
    server_id = server["id"]
    [fixed] = server["addresses"]["guarded"]
    address = fixed["addr"]
    [port] = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"]
    assert port["binding:vif_details"]["port_filter"] is True
    assert firewall.table_name(node.host) in await nft_tables()

    status, route, _ = await run("ip", "-o", "route", "get", address)
    assert status == 0 and " src " in route, route
    host_address = route.split(" src ")[1].split()[0]

    # the default group: ingress only from its members; the host is none
    [default] = (await client.request("GET", "/network/v2.0/security-groups?name=default"))["security_groups"]
    assert port["security_groups"] == [default["id"]]
    assert await ssh_banner(address) is None
    assert not await pings(address)

    async def allow(**rule: object) -> str:
        """A rule letting the host's address in (``rule``: its protocol and ports); its id."""
        body = {
            "security_group_id": default["id"],
            "direction": "ingress",
            "ethertype": "IPv4",
            "remote_ip_prefix": f"{host_address}/32",
            **rule,
        }
        made = await client.request(
            "POST", "/network/v2.0/security-group-rules", {"security_group_rule": body}
        )
        return str(made["security_group_rule"]["id"])

    ssh_rule = await allow(protocol="tcp", port_range_min=22, port_range_max=22)
    await until_banner(address, present=True)
    assert (await ssh_banner(address) or "").startswith("SSH-2.0-")
    assert not await pings(address)  # the rule lets in TCP 22, nothing else

    icmp_rule = await allow(protocol="icmp")
    async with asyncio.timeout(GUEST_DEADLINE):
        while not await pings(address):
            await asyncio.sleep(0.2)

    await client.request("DELETE", f"/network/v2.0/security-group-rules/{ssh_rule}")
    await until_banner(address, present=False)
    assert await pings(address)  # the ICMP rule stays
    await client.request("DELETE", f"/network/v2.0/security-group-rules/{icmp_rule}")
    async with asyncio.timeout(GUEST_DEADLINE):
        while await pings(address):
            await asyncio.sleep(0.2)
    assert await ssh_banner(address) is None

    # all of it applied live: the guest booted once
    assert (await client.console_output(server_id)).count("AIOSTACK-READY") == 1

    await client.server_action(server_id, "delete", wait=True)
    assert not qemu_running(server_id)
    assert await node.hypervisor.domain(server_id) is None
    async with asyncio.timeout(GUEST_DEADLINE):  # no filtered port left: no tables
        while firewall.table_name(node.host) in await nft_tables():
            await asyncio.sleep(0.2)


@dataclass
class RebootableCloud:
    """The QEMU cloud's actors by name, the node's restarts among them (``restart``)."""

    cloud: QemuCloud
    actors: dict[str, Actor]
    start_actor: Any
    config: Any

    async def restart(self, actor_class: type[Actor], **options: Any) -> Actor:
        actor = await self.start_actor(actor_class, self.config, secure=True, **options)
        self.actors[actor_class.__name__] = actor
        return actor


@pytest.fixture
async def rebootable_cloud(
    start_actor: Any,
    config: Any,
    gateway_url: str,
    test_guest: TestGuest,
) -> AsyncIterator[RebootableCloud]:
    """The QEMU cloud of ``test_real_guests``, keeping its actors: a test stops and starts them."""
    actors: dict[str, Actor] = {}
    for actor_class in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        actors[actor_class.__name__] = await start_actor(actor_class, config, secure=True)
    options = {"host": "qemu-1", "libvirt_uri": SYSTEM_URI, "shutdown_timeout": 30.0}
    node = await start_actor(NodeActor, config, secure=True, **options)
    assert isinstance(node, NodeActor)
    actors["NodeActor"] = node
    await node.report_capacity()
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        images = await register_test_guest(client, test_guest, name="test-guest")
        rebootable = RebootableCloud(QemuCloud(client, node, images), actors, start_actor, config)
        try:
            yield rebootable
        finally:
            last = actors["NodeActor"]
            assert isinstance(last, NodeActor)
            await remove_guests(last)
            await firewall.remove(last.host)


@pytest.mark.full_size
async def test_a_node_restarted_after_a_host_reboot_starts_its_guest_again_only_once_it_is_filtered(
    rebootable_cloud: RebootableCloud,
) -> None:
    cloud = rebootable_cloud.cloud
    client, node = cloud.client, cloud.node
    server = await boot_guarded(cloud)
    [fixed] = server["addresses"]["guarded"]
    await node.stop()
    assert firewall.table_name(node.host) in await nft_tables()  # a stopped node keeps its guests filtered

    # as a host reboot leaves it: no guest running, no tables; and the net actor away meanwhile
    connection = libvirt.open(SYSTEM_URI)
    try:
        domain = connection.lookupByUUIDString(server["id"])
        domain.destroy()
        await firewall.remove(node.host)
        await rebootable_cloud.actors["NetActor"].stop()

        restarted = await rebootable_cloud.restart(
            NodeActor, host=node.host, libvirt_uri=SYSTEM_URI, shutdown_timeout=30.0
        )
        assert isinstance(restarted, NodeActor) and restarted.security.enforcing
        await asyncio.sleep(NO_ANSWER_WITHIN)  # what the node does meanwhile: it must not start the guest
        assert not domain.isActive()
        assert firewall.table_name(node.host) not in await nft_tables()
    finally:
        connection.close()

    await rebootable_cloud.restart(NetActor)
    await cloud.console_until(server["id"], r"AIOSTACK-SSH keys=\d+", count=2)  # booted again
    assert firewall.table_name(node.host) in await nft_tables()
    assert await ssh_banner(fixed["addr"]) is None
    assert not await pings(fixed["addr"])
    await client.server_action(server["id"], "delete", wait=True)
    assert not qemu_running(server["id"])
