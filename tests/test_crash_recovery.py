"""No instance stuck, nothing leaked: lost casts, dead nodes, failing hosts, orphans, and the audit.

Every actor runs in this process on its own bus connection against a real nats-server, with
short timeouts (conductor: task 3 s, ack 0.5 s; scheduler: a node is down after 2 s of
silence; nodes report every 0.5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from api.conductor import ConductorOperator
from api.node import Node
from bus import Actor, Bus
from deploy.audit import audit
from node.actor import NodeActor
from node.testnode import write_test_node_file
from tests.helpers import Api

TASK_TIMEOUT = 3.0


class Cloud:
    def __init__(self, start_actor: Callable[..., Awaitable[Actor]], config: Any, api: Api, bus: Bus) -> None:
        self.start_actor = start_actor
        self.config = config
        self.api = api
        self.bus = bus
        self.nodes: dict[str, NodeActor] = {}
        self.actors: dict[str, Actor] = {}

    async def start(self, node_count: int) -> None:
        for actor_class in (IdentityActor, ImageActor, NetActor, VolumeActor):
            self.actors[actor_class.name] = await self.start_actor(actor_class, self.config, secure=True)
        await self.start_scheduler()
        await self.start_actor(
            ConductorActor, self.config, secure=True, task_timeout=TASK_TIMEOUT, ack_timeout=0.5
        )
        for number in range(1, node_count + 1):
            await self.start_node(f"node-{number}")
        await self.api.login("admin", "admin-secret", "admin")  # as tests/conftest.py bootstraps it

    async def start_scheduler(self) -> None:
        self.actors["scheduler"] = await self.start_actor(
            SchedulerActor, self.config, secure=True, service_down_time=2.0, liveness_interval=0.2
        )

    async def start_node(self, host: str) -> NodeActor:
        uri = write_test_node_file(
            self.config.data_dir / "nodes" / host / "testnode.xml", vcpus=64, memory_mb=65536
        )
        node = await self.start_actor(
            NodeActor, self.config, host=host, libvirt_uri=uri, secure=True, report_interval=0.5
        )
        assert isinstance(node, NodeActor)
        await node.report_capacity()
        self.nodes[host] = node
        return node

    async def boot(self, name: str) -> str:
        image = (await self.api.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
        status, body = await self.api.post(
            "/compute/v2.1/servers", {"server": {"name": name, "imageRef": image, "flavorRef": "1"}}
        )
        assert status == 202, body
        return body["server"]["id"]

    async def server(self, server_id: str) -> dict[str, Any]:
        status, body = await self.api.get(
            f"/compute/v2.1/servers/{server_id}", headers={"OpenStack-API-Version": "compute 2.16"}
        )
        assert status == 200, body
        return body["server"]

    async def until(self, server_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (server := await self.server(server_id))["status"] not in statuses:
                await asyncio.sleep(0.1)
        return server

    async def actions(self, server_id: str) -> list[dict[str, Any]]:
        return await ConductorOperator.client(self.bus).list_actions(instance_uuid=server_id)


@pytest.fixture
async def crash_cloud(start_actor, config, api, bus) -> Cloud:
    cloud = Cloud(start_actor, config, api, bus)
    await cloud.start(2)
    return cloud


async def stop_node(cloud: Cloud, host: str) -> None:
    """The node process is gone: no handler, no heartbeat. Its store is kept; its libvirt state is
    not (a test-driver connection to a custom node file starts from the file: no domain)."""
    await cloud.nodes.pop(host).stop()


async def test_a_redelivered_build_does_not_create_a_second_domain(crash_cloud: Cloud) -> None:
    server_id = await crash_cloud.boot("vm")
    server = await crash_cloud.until(server_id, "ACTIVE")
    host = server["OS-EXT-SRV-ATTR:host"]
    node = Node.client(crash_cloud.bus, host=host)
    await node.build_and_run_instance(instance_uuid=server_id)
    await node.build_and_run_instance(instance_uuid=server_id)
    await asyncio.sleep(0.5)
    domains = [d for d in await node.list_domains() if d["uuid"] == server_id]
    assert len(domains) == 1 and domains[0]["state"] == 1
    assert (await crash_cloud.server(server_id))["status"] == "ACTIVE"
    assert len(await crash_cloud.bus.call("net.list_ports", {"device_id": server_id})) == 1
    assert (await audit(crash_cloud.bus)).problems == {}


async def test_a_build_cast_lost_while_the_node_was_away_is_sent_again(crash_cloud: Cloud) -> None:
    await stop_node(crash_cloud, "node-2")
    await stop_node(crash_cloud, "node-1")
    server_id = await crash_cloud.boot("vm")
    async with asyncio.timeout(10):
        while (await crash_cloud.server(server_id))["OS-EXT-SRV-ATTR:host"] is None:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the cast went to no one, and so did the first redelivery
    host = (await crash_cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await crash_cloud.start_node(host)
    server = await crash_cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == host
    events = await ConductorOperator.client(crash_cloud.bus).list_action_events(instance_uuid=server_id)
    steps = [e["event"] for e in events]
    assert steps[:2] == ["schedule", "build_and_run_instance:sent"], steps
    assert "build_and_run_instance:sent_again" in steps and "node_accepted" in steps, steps


async def test_a_node_that_never_comes_back_gets_its_builds_rescheduled(crash_cloud: Cloud) -> None:
    await stop_node(crash_cloud, "node-1")
    # node-1 still looks alive for 2 s: some of these are claimed there and sent into the void
    servers = [await crash_cloud.boot(f"vm-{n}") for n in range(6)]
    first_hosts = set()
    async with asyncio.timeout(5):
        for server_id in servers:
            while (host := (await crash_cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]) is None:
                await asyncio.sleep(0.05)
            first_hosts.add(host)
    assert "node-1" in first_hosts
    for server_id in servers:
        server = await crash_cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT * 4)
        assert server["OS-EXT-SRV-ATTR:host"] == "node-2"
    rescheduled = 0
    for server_id in servers:
        events = await ConductorOperator.client(crash_cloud.bus).list_action_events(instance_uuid=server_id)
        rescheduled += any(e["event"] == "reschedule" and e["host"] == "node-1" for e in events)
    assert rescheduled >= 1
    assert (await crash_cloud.bus.call("scheduler.list_hosts"))[0]["alive"] is False
    assert {a["host"] for a in await crash_cloud.bus.call("scheduler.list_allocations")} == {"node-2"}
    assert (await audit(crash_cloud.bus)).problems == {}


async def test_a_build_that_fails_on_one_host_is_rescheduled_to_another(
    crash_cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_prepare(*_args: Any) -> Any:
        raise RuntimeError("this host's hypervisor is broken")

    monkeypatch.setattr(crash_cloud.nodes["node-1"].builder, "_prepare", broken_prepare)
    servers = [await crash_cloud.boot(f"vm-{n}") for n in range(4)]
    for server_id in servers:
        server = await crash_cloud.until(server_id, "ACTIVE", "ERROR")
        assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] == "node-2"
    failed_there = 0
    for server_id in servers:
        events = await ConductorOperator.client(crash_cloud.bus).list_action_events(instance_uuid=server_id)
        failed_there += any("hypervisor is broken" in (e["details"] or "") for e in events)
    assert failed_there >= 1
    assert await crash_cloud.bus.call("net.list_ports", {"device_id": servers[0]}) != []
    assert (await audit(crash_cloud.bus)).problems == {}


async def test_a_build_failing_everywhere_ends_in_error_after_every_host_was_tried(
    crash_cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_prepare(*_args: Any) -> Any:
        raise RuntimeError("no hypervisor works today")

    for node in crash_cloud.nodes.values():
        monkeypatch.setattr(node.builder, "_prepare", broken_prepare)
    server = await crash_cloud.until(await crash_cloud.boot("vm"), "ERROR")
    assert "no hypervisor works today" in server["fault"]["message"]
    assert "NoValidHost" in server["fault"]["message"] and "2 excluded" in server["fault"]["message"]
    assert await crash_cloud.bus.call("scheduler.list_allocations") == []
    assert await crash_cloud.bus.call("net.list_ports", {"device_id": server["id"]}) == []


async def test_instances_of_a_silent_node_show_its_host_down_until_it_returns(crash_cloud: Cloud) -> None:
    server_id = await crash_cloud.boot("vm")
    host = (await crash_cloud.until(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    assert (await crash_cloud.server(server_id))["host_status"] == "UP"
    await stop_node(crash_cloud, host)
    async with asyncio.timeout(10):
        while (await crash_cloud.server(server_id))["host_status"] != "DOWN":
            await asyncio.sleep(0.2)
    assert (await crash_cloud.server(server_id))["status"] == "ACTIVE"
    await crash_cloud.start_node(host)
    async with asyncio.timeout(10):
        while (await crash_cloud.server(server_id))["host_status"] != "UP":
            await asyncio.sleep(0.2)
    assert (await crash_cloud.server(server_id))["status"] == "ACTIVE"


async def test_a_delete_on_a_node_that_is_gone_finishes_and_the_domain_goes_when_it_returns(
    crash_cloud: Cloud,
) -> None:
    server_id = await crash_cloud.boot("vm")
    host = (await crash_cloud.until(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    await stop_node(crash_cloud, host)
    assert (await crash_cloud.api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    async with asyncio.timeout(TASK_TIMEOUT * 4):
        while (await crash_cloud.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.2)
    assert await crash_cloud.bus.call("net.list_ports", {"device_id": server_id}) == []
    assert await crash_cloud.bus.call("scheduler.list_allocations") == []
    node = await crash_cloud.start_node(host)
    node_client = Node.client(crash_cloud.bus, host=host)
    # The node's libvirt lists no domain from the start (see stop_node): what its reconcile removes
    # (in the background, once the conductor answers) is its stored record of the domain.
    async with asyncio.timeout(10):
        while server_id in await node.records.uuids() or any(
            d["uuid"] == server_id for d in await node_client.list_domains()
        ):
            await asyncio.sleep(0.1)
    assert (await audit(crash_cloud.bus)).problems == {}


async def test_restarted_owners_release_what_they_hold_for_instances_that_are_gone(
    crash_cloud: Cloud,
) -> None:
    """The audit sees a claim and a port of an instance that does not exist; a restarted
    scheduler and net actor release them (their orphan sweep runs at start)."""
    ghost = "00000000-0000-4000-8000-00000000dead"
    bus = crash_cloud.bus
    await bus.call(
        "scheduler.select_destinations", {"instance_uuid": ghost, "vcpus": 1, "memory_mb": 64, "disk_gb": 0}
    )
    await bus.call(
        "net.allocate_for_instance",
        {
            "instance_uuid": ghost,
            "project_id": crash_cloud.api.project_id,
            "requested_networks": "auto",
            "host": "node-2",
        },
    )
    report = await audit(bus, recheck_after=0.2)
    assert {key.split(":")[0] for key in report.problems} == {"claim", "port"}, report.problems
    await crash_cloud.actors["scheduler"].stop()
    await crash_cloud.actors["net"].stop()
    await crash_cloud.start_scheduler()
    crash_cloud.actors["net"] = await crash_cloud.start_actor(NetActor, crash_cloud.config, secure=True)
    async with asyncio.timeout(10):
        while (await audit(bus, recheck_after=0)).problems:
            await asyncio.sleep(0.2)
    assert await bus.call("net.list_ports", {"device_id": ghost}) == []
    assert await bus.call("scheduler.list_allocations") == []


async def test_owners_release_what_an_instance_deleted_since_their_last_sweep_still_holds(
    crash_cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After their sweep at start, the scheduler and net actor ask the conductor for the instances
    deleted since their last sweep alone: a claim and a port such an instance still holds (taken
    after its delete gave back what it had) are released at their next round."""
    bus = crash_cloud.bus
    monkeypatch.setattr(SchedulerActor, "orphan_sweep_interval", 0.3)
    monkeypatch.setattr(NetActor, "orphan_sweep_interval", 0.3)
    await crash_cloud.actors["scheduler"].stop()
    await crash_cloud.actors["net"].stop()
    await crash_cloud.start_scheduler()
    crash_cloud.actors["net"] = await crash_cloud.start_actor(NetActor, crash_cloud.config, secure=True)
    server_id = await crash_cloud.boot("vm")
    host = (await crash_cloud.until(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    status, _ = await crash_cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    assert status == 204
    async with asyncio.timeout(10):
        while (await crash_cloud.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.1)
    await bus.call(
        "scheduler.select_destinations",
        {"instance_uuid": server_id, "vcpus": 1, "memory_mb": 64, "disk_gb": 0},
    )
    await bus.call(
        "net.allocate_for_instance",
        {
            "instance_uuid": server_id,
            "project_id": crash_cloud.api.project_id,
            "requested_networks": "auto",
            "host": host,
        },
    )
    async with asyncio.timeout(10):
        while await bus.call("net.list_ports", {"device_id": server_id}) or any(
            allocation["instance_uuid"] == server_id
            for allocation in await bus.call("scheduler.list_allocations")
        ):
            await asyncio.sleep(0.1)
    assert (await audit(bus, recheck_after=0)).problems == {}
