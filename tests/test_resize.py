"""Resize: VERIFY_RESIZE, confirm and revert, the auto-confirm, bad requests, and a resize whose node dies.

Every actor runs in this process on its own bus connection against a real nats-server, nodes on
libvirt's test driver, the gateway on a real loopback HTTP server; the conductor's task timeout
is short (3 s) so a stalled resize is settled within the test.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from api.conductor import ConductorOperator
from api.scheduler import Scheduler, SchedulerReader
from bus import Actor, Bus
from deploy.audit import audit
from node.actor import NodeActor
from node.testnode import write_test_node_file
from tests.helpers import Api

TASK_TIMEOUT = 3.0
HEADERS = {"OpenStack-API-Version": "compute 2.16"}


class ResizeCloud:
    """A cloud of one test-driver node, its conductor's resize window and task timeout given."""

    def __init__(self, start_actor: Any, config: Any, api: Api, bus: Bus) -> None:
        self.start_actor = start_actor
        self.config = config
        self.api = api
        self.bus = bus
        self.node: NodeActor | None = None
        self.conductor: ConductorActor | None = None

    async def start(self, confirm_window: float) -> None:
        for actor_class in (IdentityActor, ImageActor, NetActor, VolumeActor):
            await self.start_actor(actor_class, self.config, secure=True)
        await self.start_actor(
            SchedulerActor, self.config, secure=True, service_down_time=2.0, liveness_interval=0.2
        )
        await self.start_conductor(confirm_window)
        await self.start_node()
        await self.api.login("admin", "admin-secret", "admin")

    async def start_node(self) -> None:
        uri = write_test_node_file(
            self.config.data_dir / "nodes" / "node-1" / "testnode.xml", vcpus=64, memory_mb=65536
        )
        node: Actor = await self.start_actor(
            NodeActor, self.config, host="node-1", libvirt_uri=uri, secure=True, report_interval=0.5
        )
        assert isinstance(node, NodeActor)
        await node.report_capacity()
        self.node = node

    async def start_conductor(self, confirm_window: float) -> None:
        conductor = await self.start_actor(
            ConductorActor,
            self.config,
            secure=True,
            task_timeout=TASK_TIMEOUT,
            ack_timeout=0.5,
            resize_confirm_window=confirm_window,
        )
        assert isinstance(conductor, ConductorActor)
        self.conductor = conductor

    async def boot(self, name: str = "vm", flavor: str = "1") -> str:
        image = (await self.api.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
        status, body = await self.api.post(
            "/compute/v2.1/servers", {"server": {"name": name, "imageRef": image, "flavorRef": flavor}}
        )
        assert status == 202, body
        await self.until(body["server"]["id"], "ACTIVE")
        return str(body["server"]["id"])

    async def server(self, server_id: str) -> dict[str, Any]:
        status, body = await self.api.get(f"/compute/v2.1/servers/{server_id}", headers=HEADERS)
        assert status == 200, body
        return dict(body["server"])

    async def until(self, server_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (server := await self.server(server_id))["status"] not in statuses:
                await asyncio.sleep(0.05)
        return server

    async def delete(self, server_id: str) -> None:
        """Delete the server and wait until it is gone."""
        assert (await self.api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
        async with asyncio.timeout(10):
            while (await self.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
                await asyncio.sleep(0.05)

    async def act(self, server_id: str, action: dict[str, Any]) -> tuple[int, Any]:
        return await self.api.post(f"/compute/v2.1/servers/{server_id}/action", action)

    async def claims(self, server_id: str) -> list[tuple[int, int, int, bool]]:
        """The instance's claims: (vCPUs, MB, GB, held by a resize), new first."""
        claims = await SchedulerReader.client(self.bus).list_allocations()
        return sorted(
            (claim["vcpus"], claim["memory_mb"], claim["disk_gb"], bool(claim.get("resize_held")))
            for claim in claims
            if claim["instance_uuid"] == server_id
        )

    async def host_used(self) -> tuple[int, int, int]:
        (host,) = await SchedulerReader.client(self.bus).list_hosts()
        return host["vcpus_used"], host["memory_mb_used"], host["disk_gb_used"]

    async def domain_size(self, server_id: str) -> tuple[int, int, bool]:
        """The domain's vCPUs, RAM (MiB) and whether it runs, as libvirt has it."""
        assert self.node is not None
        domain = await self.node.hypervisor.existing(server_id)
        root = ET.fromstring(await self.node.hypervisor.persistent_xml(domain))
        memory = root.find("memory")
        vcpu = root.find("vcpu")
        assert memory is not None and vcpu is not None and memory.text and vcpu.text
        unit = memory.get("unit", "KiB")
        memory_mib = int(memory.text) // 1024 if unit == "KiB" else int(memory.text)
        return int(vcpu.text), memory_mib, await self.node.hypervisor.is_running(domain)

    async def actions(self, server_id: str) -> list[tuple[str, str | None]]:
        listed = await ConductorOperator.client(self.bus).list_actions(instance_uuid=server_id)
        return [(action["action"], action["result"]) for action in listed]


async def events_until_active(ws: Any, server_id: str, field: str) -> list[tuple[str, Any]]:
    """The server's events on the websocket ``ws`` up to ``instance.active``: each type, and its
    state's ``field``."""
    seen: list[tuple[str, Any]] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1][0] != "instance.active":
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "event" and frame["event"]["id"] == server_id:
                event = frame["event"]
                seen.append((event["type"], event["state"][field]))
    return seen


async def steps_taken(bus: Bus, server_id: str) -> list[tuple[str, str]]:
    """The steps of the server's actions but its create (a step whose node was slow to take it may
    be sent again, after ``ack_timeout``: those sends are left out)."""
    steps = await ConductorOperator.client(bus).list_action_events(instance_uuid=server_id)
    return [
        (step["action"], step["event"])
        for step in steps
        if step["action"] != "create" and not step["event"].endswith(":sent_again")
    ]


@pytest.fixture
async def resize_cloud(start_actor, config, api, bus, request: pytest.FixtureRequest) -> ResizeCloud:
    marker = request.node.get_closest_marker("confirm_window")
    cloud = ResizeCloud(start_actor, config, api, bus)
    await cloud.start(marker.args[0] if marker else 0.0)
    return cloud


TINY = (1, 512, 1)
SMALL = (1, 2048, 20)


async def test_a_resize_waits_in_verify_resize_with_both_claims_and_confirm_keeps_the_new_flavor(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert await cloud.domain_size(server_id) == (1, 512, True)
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "2"}})
    assert status == 202, body
    server = await cloud.until(server_id, "VERIFY_RESIZE")
    assert server["OS-EXT-STS:vm_state"] == "resized" and server["OS-EXT-STS:task_state"] is None
    assert server["flavor"]["id"] == "2"  # Nova shows the new flavor while it waits
    assert await cloud.claims(server_id) == [(*TINY, True), (*SMALL, False)]
    assert await cloud.host_used() == (2, 2560, 21)  # the host holds both until it is decided
    assert await cloud.domain_size(server_id) == (1, 2048, True)

    status, body = await cloud.act(server_id, {"confirmResize": None})
    assert status == 204, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["flavor"]["id"] == "2"
    assert await cloud.claims(server_id) == [(*SMALL, False)]
    assert await cloud.host_used() == SMALL
    assert await cloud.domain_size(server_id) == (1, 2048, True)
    assert await cloud.actions(server_id) == [
        ("create", "Success"),
        ("resize", "Success"),
        ("confirmResize", "Success"),
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_revert_gives_the_domain_its_old_flavor_and_the_old_claim_back(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "3"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert await cloud.domain_size(server_id) == (2, 4096, True)
    status, body = await cloud.act(server_id, {"revertResize": None})
    assert status == 202, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["flavor"]["id"] == "1" and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [(*TINY, False)]
    assert await cloud.host_used() == TINY
    assert await cloud.domain_size(server_id) == (1, 512, True)
    assert await cloud.actions(server_id) == [
        ("create", "Success"),
        ("resize", "Success"),
        ("revertResize", "Success"),
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_stopped_server_resizes_stopped_and_stays_stopped(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"os-stop": None}))[0] == 202
    await cloud.until(server_id, "SHUTOFF")
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert await cloud.domain_size(server_id) == (1, 2048, False)
    assert (await cloud.act(server_id, {"confirmResize": None}))[0] == 204
    server = await cloud.until(server_id, "SHUTOFF")
    assert server["flavor"]["id"] == "2"
    assert await cloud.claims(server_id) == [(*SMALL, False)]
    assert await cloud.domain_size(server_id) == (1, 2048, False)


@pytest.mark.confirm_window(1.0)
async def test_a_resize_confirms_itself_after_the_window(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"resize": {"flavorRef": 2}}))[0] == 202  # a number, as Nova takes
    await cloud.until(server_id, "VERIFY_RESIZE")
    server = await cloud.until(server_id, "ACTIVE", timeout=15)
    assert server["flavor"]["id"] == "2"
    assert await cloud.claims(server_id) == [(*SMALL, False)]
    assert ("confirmResize", "Success") in await cloud.actions(server_id)


@pytest.mark.parametrize(
    ("action", "status", "says"),
    [
        ({"resize": {"flavorRef": "1"}}, 400, "Resize requires a flavor change."),
        ({"resize": {"flavorRef": 1}}, 400, "Resize requires a flavor change."),
        ({"resize": {"flavorRef": "nope"}}, 400, "Unable to locate requested flavor."),
        ({"resize": {}}, 400, "flavorRef"),
        ({"resize": {"flavorRef": "2", "OS-DCF:diskConfig": "SOMETIMES"}}, 400, "diskConfig"),
        ({"confirmResize": None}, 409, "Cannot 'confirmResize' instance"),
        ({"revertResize": None}, 409, "Cannot 'revertResize' instance"),
    ],
)
async def test_bad_resize_requests_are_refused_and_change_nothing(
    resize_cloud: ResizeCloud, action: dict[str, Any], status: int, says: str
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    got_status, got = await cloud.act(server_id, action)
    assert got_status == status, got
    assert says in json.dumps(got)
    server = await cloud.server(server_id)
    assert server["status"] == "ACTIVE" and server["flavor"]["id"] == "1"
    assert await cloud.claims(server_id) == [(*TINY, False)]
    assert await cloud.domain_size(server_id) == (1, 512, True)


async def test_a_smaller_disk_a_busy_server_and_the_quota_refuse_a_resize(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot(flavor="2")
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "1"}})
    assert status == 400 and "Resize error: Unable to resize disk down" in json.dumps(body), body

    project = (await cloud.server(server_id))["tenant_id"]
    status, body = await cloud.api.put(f"/compute/v2.1/os-quota-sets/{project}", {"quota_set": {"cores": 1}})
    assert status == 200, body
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "3"}})
    assert status == 403 and "Quota exceeded for cores" in json.dumps(body), body
    assert (await cloud.api.put(f"/compute/v2.1/os-quota-sets/{project}", {"quota_set": {"cores": 20}}))[
        0
    ] == 200

    assert (await cloud.act(server_id, {"resize": {"flavorRef": "3"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "4"}})
    assert status == 409 and "Cannot 'resize' instance" in json.dumps(body), body
    assert (await cloud.server(server_id))["flavor"]["id"] == "3"
    assert await cloud.claims(server_id) == [(1, 2048, 20, True), (2, 4096, 40, False)]


async def test_a_resize_whose_node_dies_ends_in_error_with_one_claim(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert cloud.node is not None
    await cloud.node.stop()  # the node process is gone: the resize's cast is never taken
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "2"}})
    assert status == 202, body
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT + 15)
    assert "made no progress" in server["fault"]["message"]
    assert server["flavor"]["id"] == "1"  # the node never gave the domain the new flavor
    assert await cloud.claims(server_id) == [(*TINY, False)]
    assert ("resize", "Error") in await cloud.actions(server_id)
    report = await audit(cloud.bus)
    assert report.problems == {}, report.problems


async def test_every_step_is_an_event_and_an_action_step(resize_cloud: ResizeCloud, gateway_url: str) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    async with cloud.api.session.ws_connect(
        f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers
    ) as ws:
        assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
        assert (await cloud.until(server_id, "VERIFY_RESIZE"))["flavor"]["id"] == "2"
        assert (await cloud.act(server_id, {"revertResize": None}))[0] == 202
        await cloud.until(server_id, "ACTIVE")
        seen = await events_until_active(ws, server_id, "status")
    assert seen == [
        ("instance.resize_prep", "RESIZE"),
        ("instance.resize_migrating", "RESIZE"),
        ("instance.resize_migrated", "RESIZE"),
        ("instance.resize_finish", "RESIZE"),
        ("instance.verify_resize", "VERIFY_RESIZE"),
        ("instance.resize_reverting", "REVERT_RESIZE"),
        ("instance.active", "ACTIVE"),
    ]
    assert await steps_taken(cloud.bus, server_id) == [
        ("resize", "claim_resize"),
        ("resize", "resize_instance:sent"),
        ("resize", "resize_instance"),
        ("resize", "finish_resize:sent"),
        ("resize", "finish_resize"),
        ("revertResize", "revert_resize:sent"),
    ]


async def test_deleting_a_resized_server_gives_back_both_claims(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    await cloud.delete(server_id)
    assert await cloud.claims(server_id) == []
    assert await cloud.host_used() == (0, 0, 0)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_revert_whose_node_dies_ends_in_error_with_the_old_claim(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert cloud.node is not None
    await cloud.node.stop()
    assert (await cloud.act(server_id, {"revertResize": None}))[0] == 202
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT + 15)
    assert "made no progress" in server["fault"]["message"]
    assert server["flavor"]["id"] == "1"
    assert await cloud.claims(server_id) == [(*TINY, False)]
    assert ("revertResize", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_resize_goes_on_after_its_conductor_restarts(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    conductor = cloud.conductor
    assert conductor is not None
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await conductor.stop()  # the node's report of its step waits for a conductor
    await asyncio.sleep(1.0)
    await cloud.start_conductor(0.0)
    server = await cloud.until(server_id, "VERIFY_RESIZE", timeout=TASK_TIMEOUT + 20)
    assert server["flavor"]["id"] == "2"
    assert await cloud.claims(server_id) == [(*TINY, True), (*SMALL, False)]
    assert await cloud.domain_size(server_id) == (1, 2048, True)
    assert (await cloud.act(server_id, {"confirmResize": None}))[0] == 204
    assert await cloud.claims(server_id) == [(*SMALL, False)]
    assert (await audit(cloud.bus)).problems == {}


async def test_the_audit_finds_a_resize_claim_of_a_server_that_is_not_resizing(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    await Scheduler.client(cloud.bus).claim_resize(
        instance_uuid=server_id, vcpus=1, memory_mb=2048, disk_gb=20
    )
    problems = (await audit(cloud.bus, recheck_after=0.1)).problems
    # its claim is the planted resize's size too, not the size the server has
    assert sorted(problems) == [f"claim-size:{server_id}", f"resize-claim:{server_id}"]
    assert (
        "holds a resize's second claim on node-1 but is not resizing" in problems[f"resize-claim:{server_id}"]
    )


async def test_a_resized_guest_paused_behind_the_clouds_back_keeps_one_claim(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert cloud.node is not None
    domain = await cloud.node.hypervisor.existing(server_id)
    await cloud.node.hypervisor.virt(domain.suspend)  # libvirt's SUSPENDED event: the resize is over
    server = await cloud.until(server_id, "PAUSED")
    assert server["flavor"]["id"] == "2"  # the flavor the domain has
    assert await cloud.claims(server_id) == [(*SMALL, False)]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_resize_its_host_has_no_room_for_is_refused_and_changes_nothing(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    server_id = await cloud.boot()
    scheduler = Scheduler.client(cloud.bus)
    await scheduler.select_destinations(instance_uuid="filler", vcpus=1, memory_mb=64000, disk_gb=0)
    status, body = await cloud.act(server_id, {"resize": {"flavorRef": "2"}})
    assert status == 409 and "No valid host was found for the resize" in json.dumps(body), body
    assert "its host node-1 short of RAM" in json.dumps(body)
    server = await cloud.server(server_id)
    assert server["status"] == "ACTIVE" and server["flavor"]["id"] == "1"
    assert await cloud.claims(server_id) == [(*TINY, False)]
    assert ("resize", "Error") in await cloud.actions(server_id)
    await scheduler.release(instance_uuid="filler")
    assert (await cloud.act(server_id, {"resize": {"flavorRef": "2"}}))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
