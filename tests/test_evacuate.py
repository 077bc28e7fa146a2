"""Evacuate: an instance of a host that is down built again on another, and what is refused.

Every actor runs in this process on its own bus connection against a real nats-server, nodes on
libvirt's test driver, the gateway on a real loopback HTTP server; the scheduler calls a node
down after 2 s of silence, the conductor's task timeout is 3 s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from actors.conductor.actor import ConductorActor
from actors.conductor.states import Report
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from api.conductor import Cause, ConductorOperator
from api.net import Net
from api.node import Node
from api.scheduler import Scheduler, SchedulerReader
from api.volume import VolumeAttachments
from bus import Actor, Bus
from deploy.audit import audit
from node.actor import NodeActor
from node.testnode import write_test_node_file
from runtime.states import TaskState
from tests.helpers import DEMO_PASSWORD, Api

TASK_TIMEOUT = 3.0
V214 = {"OpenStack-API-Version": "compute 2.14"}
V216 = {"OpenStack-API-Version": "compute 2.16"}


class EvacuateCloud:
    """Two test-driver nodes; a node is stopped (its process gone) and started again."""

    def __init__(self, start_actor: Any, config: Any, api: Api, bus: Bus) -> None:
        self.start_actor = start_actor
        self.config = config
        self.api = api
        self.bus = bus
        self.nodes: dict[str, NodeActor] = {}
        self.conductor: ConductorActor | None = None

    async def start(self) -> None:
        for actor_class in (IdentityActor, ImageActor, NetActor, VolumeActor):
            await self.start_actor(actor_class, self.config, secure=True)
        await self.start_actor(
            SchedulerActor, self.config, secure=True, service_down_time=2.0, liveness_interval=0.2
        )
        await self.start_conductor()
        for host in ("node-1", "node-2"):
            await self.start_node(host)
        await self.api.login("admin", "admin-secret", "admin")

    async def start_conductor(self, **options: Any) -> None:
        conductor = await self.start_actor(
            ConductorActor, self.config, secure=True, task_timeout=TASK_TIMEOUT, ack_timeout=0.5, **options
        )
        assert isinstance(conductor, ConductorActor)
        self.conductor = conductor

    async def start_node(self, host: str, **options: Any) -> NodeActor:
        uri = write_test_node_file(
            self.config.data_dir / "nodes" / host / "testnode.xml", vcpus=64, memory_mb=65536
        )
        node: Actor = await self.start_actor(
            NodeActor, self.config, host=host, libvirt_uri=uri, secure=True, report_interval=0.5, **options
        )
        assert isinstance(node, NodeActor)
        await node.report_capacity()
        self.nodes[host] = node
        return node

    async def stop_node(self, host: str) -> None:
        """The node process is gone; wait until the scheduler calls its host down."""
        await self.nodes.pop(host).stop()
        async with asyncio.timeout(10):
            while any(
                h["host"] == host and h["alive"] for h in await SchedulerReader.client(self.bus).list_hosts()
            ):
                await asyncio.sleep(0.1)

    async def boot(self, name: str = "vm") -> str:
        image = (await self.api.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
        status, body = await self.api.post(
            "/compute/v2.1/servers", {"server": {"name": name, "imageRef": image, "flavorRef": "1"}}
        )
        assert status == 202, body
        await self.until(body["server"]["id"], "ACTIVE")
        return str(body["server"]["id"])

    async def boot_from_volume(self, name: str = "from-volume") -> tuple[str, str]:
        """An ACTIVE server booted from a volume made of the tiny image: (server, volume)."""
        api = self.api
        image = (await api.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
        volumes = f"/volume/v3/{api.project_id}/volumes"
        status, created = await api.post(volumes, {"volume": {"size": 1, "imageRef": image}})
        assert status == 202, created
        volume_id = str(created["volume"]["id"])
        async with asyncio.timeout(20):
            while (await api.get(f"{volumes}/{volume_id}"))[1]["volume"]["status"] != "available":
                await asyncio.sleep(0.05)
        mapping = {"uuid": volume_id, "source_type": "volume", "destination_type": "volume", "boot_index": 0}
        server = {"name": name, "flavorRef": "1", "imageRef": "", "block_device_mapping_v2": [mapping]}
        status, body = await api.post("/compute/v2.1/servers", {"server": server})
        assert status == 202, body
        server_id = str(body["server"]["id"])
        await self.until(server_id, "ACTIVE")
        return server_id, volume_id

    def first_disk(self, host: str, server_id: str) -> str:
        """The first ``<disk>`` of the server's domain on ``host``, as libvirt defines it."""
        xml = str(self.nodes[host].hypervisor.connection.lookupByUUIDString(server_id).XMLDesc())
        return xml[xml.index("<disk") : xml.index("</disk>")]

    async def server(self, server_id: str) -> dict[str, Any]:
        status, body = await self.api.get(f"/compute/v2.1/servers/{server_id}", headers=V216)
        assert status == 200, body
        return dict(body["server"])

    async def until(self, server_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (server := await self.server(server_id))["status"] not in statuses:
                await asyncio.sleep(0.05)
        return server

    async def evacuate(
        self, server_id: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return await self.api.post(
            f"/compute/v2.1/servers/{server_id}/action", {"evacuate": body or {}}, headers=headers or V214
        )

    async def claims(self, server_id: str) -> list[str]:
        """The hosts of the instance's claims."""
        claims = await SchedulerReader.client(self.bus).list_allocations()
        return [claim["host"] for claim in claims if claim["instance_uuid"] == server_id]

    async def ports(self, server_id: str) -> list[tuple[str, str, str]]:
        """(id, address, binding host) of each of the instance's ports."""
        ports = await Net.client(self.bus).list_ports(device_id=server_id)
        return sorted((p["id"], p["fixed_ips"][0]["ip_address"], p["binding:host_id"]) for p in ports)

    async def attachments(self, server_id: str) -> list[tuple[str, str, str | None]]:
        """(volume, status, host) of each of the instance's volume attachments."""
        listed = await VolumeAttachments.client(self.bus).list_attachments()
        return [
            (a["volume_id"], a["attach_status"], a["host_name"])
            for a in listed
            if a["server_id"] == server_id
        ]

    async def actions(self, server_id: str) -> list[tuple[str, str | None]]:
        listed = await ConductorOperator.client(self.bus).list_actions(instance_uuid=server_id)
        return [(action["action"], action["result"]) for action in listed]

    async def domains(self, host: str) -> list[tuple[str, int]]:
        return [(d["uuid"], d["state"]) for d in await Node.client(self.bus, host=host).list_domains()]


@pytest.fixture
async def evacuate_cloud(start_actor, config, api, bus) -> EvacuateCloud:
    cloud = EvacuateCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


async def _attach_volume(cloud: EvacuateCloud, server_id: str) -> str:
    api = cloud.api
    status, created = await api.post(f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1}})
    assert status == 202, created
    volume_id = str(created["volume"]["id"])
    async with asyncio.timeout(10):
        while (await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}"))[1]["volume"][
            "status"
        ] != "available":
            await asyncio.sleep(0.05)
    status, body = await api.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume_id}},
    )
    assert status == 200, body
    return volume_id


async def events_until_active(ws: aiohttp.ClientWebSocketResponse, server_id: str) -> list[tuple[str, str]]:
    """The (event type, status) of the server's events on the event socket, until it is active."""
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1][0] != "instance.active":
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "event" and frame["event"]["id"] == server_id:
                seen.append((frame["event"]["type"], frame["event"]["state"]["status"]))
    return seen


async def boot_as(user: Api, cloud: EvacuateCloud) -> str:
    """A server of ``user``'s, ACTIVE."""
    image = (await user.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
    status, created = await user.post(
        "/compute/v2.1/servers", {"server": {"name": "mine", "imageRef": image, "flavorRef": "1"}}
    )
    assert status == 202, created
    server_id = str(created["server"]["id"])
    await cloud.until(server_id, "ACTIVE")
    return server_id


def _other(host: str) -> str:
    return "node-2" if host == "node-1" else "node-1"


async def test_an_evacuate_is_refused_while_the_host_is_up_and_changes_nothing(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    status, body = await cloud.evacuate(server_id)
    assert status == 400, body
    assert body["badRequest"]["message"] == f"Compute service of {host} is still in use."
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", host)
    assert await cloud.claims(server_id) == [host]
    assert ("evacuate", "Error") not in await cloud.actions(server_id)
    assert [action for action, _ in await cloud.actions(server_id)] == ["create"]


async def test_an_evacuate_builds_the_server_on_another_host_with_its_port_and_volume(
    evacuate_cloud: EvacuateCloud, gateway_url: str
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    volume_id = await _attach_volume(cloud, server_id)
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    target = _other(source)
    [(port_id, address, bound)] = await cloud.ports(server_id)
    assert bound == source
    assert await cloud.attachments(server_id) == [(volume_id, "attached", source)]
    await cloud.stop_node(source)

    ws = await cloud.api.session.ws_connect(f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers)
    try:
        status, body = await cloud.evacuate(server_id)
        assert (status, body) == (200, b"")  # from 2.14 an empty body
        server = await cloud.until(server_id, "ACTIVE")
        seen = await events_until_active(ws, server_id)
    finally:
        await ws.close()
    assert seen == [
        ("instance.rebuilding", "REBUILD"),
        ("instance.rebuild_spawning", "REBUILD"),
        ("instance.active", "ACTIVE"),
    ]
    assert server["OS-EXT-SRV-ATTR:host"] == target and server["OS-EXT-STS:task_state"] is None
    assert server["host_status"] == "UP"
    assert await cloud.ports(server_id) == [(port_id, address, target)]  # the same port and IP, bound there
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    _, volume = await cloud.api.get(f"/volume/v3/{cloud.api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "in-use"
    assert await cloud.claims(server_id) == [target]  # one claim, on the new host; none on the old
    assert (server_id, 1) in await cloud.domains(target)
    assert await cloud.actions(server_id) == [
        ("create", "Success"),
        ("attach_volume", "Success"),
        ("evacuate", "Success"),
    ]
    steps = await ConductorOperator.client(cloud.bus).list_action_events(instance_uuid=server_id)
    evacuated = [(s["event"], s["host"]) for s in steps if s["action"] == "evacuate"]
    assert evacuated[0] == ("claim_evacuate", target) and evacuated[-1] == ("rebuild_instance", target)
    # node_accepted unless the node's progress report (with its heartbeat) took the task first
    assert ("evacuate_instance:sent", target) in evacuated[1:-1]
    assert set(evacuated[1:-1]) <= {("evacuate_instance:sent", target), ("node_accepted", target)}
    hosts = {h["host"]: h for h in await SchedulerReader.client(cloud.bus).list_hosts()}
    assert (hosts[source]["vcpus_used"], hosts[target]["vcpus_used"]) == (0, 1)
    report = await audit(cloud.bus)
    assert report.problems == {}, report.problems

    # the old host comes back: its stale domain goes, the instance, its port and volume stay
    returned = await cloud.start_node(source)
    async with asyncio.timeout(10):
        while server_id in await returned.records.uuids():
            await asyncio.sleep(0.1)
    assert server_id not in [uuid for uuid, _ in await cloud.domains(source)]
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", target)
    assert await cloud.ports(server_id) == [(port_id, address, target)]
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    assert await cloud.claims(server_id) == [target]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_report_decided_on_the_rebuilding_row_after_the_rebuild_ended_records_no_second_step(
    evacuate_cloud: EvacuateCloud,
) -> None:
    """libvirt's event and the node's power report of the new domain are handled at once: the one
    that loses the race finds the rebuild ended, writes only the power state, and records nothing
    (before, the evacuate had two rebuild_instance steps)."""
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    await cloud.until(server_id, "ACTIVE")
    assert cloud.conductor is not None
    ended = await cloud.conductor.core.fresh(server_id)
    assert ended is not None
    rebuilding = {**ended, "task_state": TaskState.REBUILD_SPAWNING.value}  # as the loser read it
    cause: Cause = {"domain_event": None, "detail": "power state sync", "host": ended["host"]}
    change = await cloud.conductor.watch.reports.report(rebuilding, Report.RUNNING, cause)
    assert change is not None and (change["vm_state"], change["task_state"]) == ("active", None)
    steps = await ConductorOperator.client(cloud.bus).list_action_events(instance_uuid=server_id)
    assert [s["event"] for s in steps if s["action"] == "evacuate"].count("rebuild_instance") == 1
    assert await cloud.actions(server_id) == [("create", "Success"), ("evacuate", "Success")]


async def test_the_returning_host_removes_a_stale_domain_its_libvirt_kept(
    evacuate_cloud: EvacuateCloud,
) -> None:
    """As Nova's _destroy_evacuated_instances: the domain libvirt kept on the old host goes, and
    nothing of the instance's (its port, its claim) is touched."""
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    target = _other(source)
    old = cloud.nodes[source]
    xml = await old.records.stored_xml(server_id)
    assert xml is not None
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    await cloud.until(server_id, "ACTIVE")
    [(port_id, address, _)] = await cloud.ports(server_id)
    returned = await cloud.start_node(source)
    async with asyncio.timeout(10):
        while server_id in await returned.records.uuids():
            await asyncio.sleep(0.1)
    # what a libvirt that kept the domain would have: the domain, running, and its record
    domain = await returned.hypervisor.define(xml)
    await returned.hypervisor.virt(domain.create)
    await returned.records.save(server_id, (await cloud.server(server_id))["tenant_id"], xml)
    assert (server_id, 1) in await cloud.domains(source)
    await returned.reconciler.remove_orphans()
    assert server_id not in [uuid for uuid, _ in await cloud.domains(source)]
    assert server_id not in await returned.records.uuids()
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", target)
    assert await cloud.ports(server_id) == [(port_id, address, target)]
    assert await cloud.claims(server_id) == [target]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_stopped_server_is_evacuated_stopped(evacuate_cloud: EvacuateCloud) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-stop": None}))[0] == 202
    source = (await cloud.until(server_id, "SHUTOFF"))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id, {"host": _other(source)}))[0] == 200
    async with asyncio.timeout(20):
        while (server := await cloud.server(server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.05)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("SHUTOFF", _other(source))
    assert (server_id, 5) in await cloud.domains(_other(source))  # defined, shut off
    assert await cloud.claims(server_id) == [_other(source)]
    assert ("evacuate", "Success") in await cloud.actions(server_id)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"host": "node-9"}, 404, "Compute host node-9 not found."),
        ({"host": "SOURCE"}, 400, "The target host can't be the same one."),
        ({"host": "bad host!"}, 400, "host"),
        ({"force": True}, 400, "force"),
        ({"onSharedStorage": False}, 400, "onSharedStorage"),
    ],
)
async def test_bad_evacuate_requests_are_refused_and_change_nothing(
    evacuate_cloud: EvacuateCloud, body: dict[str, Any], status: int, says: str
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    body = {key: source if value == "SOURCE" else value for key, value in body.items()}
    got_status, got = await cloud.evacuate(server_id, body)
    assert got_status == status, got
    assert says in json.dumps(got)
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
    assert await cloud.claims(server_id) == [source]


async def test_a_target_host_that_is_down_or_no_room_anywhere_is_refused(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    await cloud.stop_node(_other(source))
    status, body = await cloud.evacuate(server_id, {"host": _other(source)})
    assert status == 400 and body["badRequest"]["message"] == (
        f"Compute service of {_other(source)} is unavailable at this time."
    ), body
    status, body = await cloud.evacuate(server_id)  # no host up at all: nothing moves
    assert status == 400 and "No valid host was found." in body["badRequest"]["message"], body
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
    assert server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [source]
    assert ("evacuate", "Error") in await cloud.actions(server_id)


async def test_a_paused_server_is_not_evacuated(evacuate_cloud: EvacuateCloud) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"pause": None}))[0] == 202
    source = (await cloud.until(server_id, "PAUSED"))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    status, body = await cloud.evacuate(server_id)
    assert status == 409, body
    assert body["conflictingRequest"]["message"] == (
        f"Cannot 'evacuate' instance {server_id} while it is in vm_state paused"
    )
    assert await cloud.claims(server_id) == [source]


async def test_before_214_on_shared_storage_is_required_and_the_password_answered(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    v213 = {"OpenStack-API-Version": "compute 2.13"}
    status, body = await cloud.evacuate(server_id, {}, headers=v213)
    assert status == 400 and "'onSharedStorage' is a required property" in json.dumps(body), body
    status, body = await cloud.evacuate(
        server_id, {"onSharedStorage": "True", "adminPass": "x"}, headers=v213
    )
    assert status == 400 and "admin password can't be changed on existing disk" in json.dumps(body), body
    status, body = await cloud.evacuate(
        server_id, {"onSharedStorage": False, "adminPass": "Pass-1"}, headers=v213
    )
    assert (status, body) == (200, {"adminPass": "Pass-1"})
    await cloud.until(server_id, "ACTIVE")
    assert (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"] == _other(source)


async def test_a_member_may_not_evacuate(evacuate_cloud: EvacuateCloud, gateway_url: str) -> None:
    cloud = evacuate_cloud
    async with aiohttp.ClientSession() as session:
        member = Api(session, gateway_url)
        await member.login("demo", DEMO_PASSWORD)
        server_id = await boot_as(member, cloud)
        status, body = await member.post(
            f"/compute/v2.1/servers/{server_id}/action", {"evacuate": {}}, headers=V214
        )
        assert status == 403, body
        assert "Policy doesn't allow" in json.dumps(body)
    assert (await cloud.server(server_id))["status"] == "ACTIVE"


async def test_an_evacuate_whose_destination_dies_ends_in_error_with_one_claim(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    target = _other(source)
    await cloud.stop_node(source)
    await cloud.nodes[target].stop()  # gone, but the scheduler still calls it up for 2 s
    status, body = await cloud.evacuate(server_id, {"host": target})
    assert status == 200, body
    del cloud.nodes[target]
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT * 6)
    assert "made no progress" in server["fault"]["message"]
    assert server["OS-EXT-SRV-ATTR:host"] == target and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [target]  # exactly one claim, where it is recorded
    assert ("evacuate", "Error") in await cloud.actions(server_id)
    report = await audit(cloud.bus)
    assert report.problems == {}, report.problems


async def test_an_evacuate_goes_on_after_its_conductor_restarts(evacuate_cloud: EvacuateCloud) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    conductor = cloud.conductor
    assert conductor is not None
    assert (await cloud.evacuate(server_id))[0] == 200
    await conductor.stop()  # the destination's report of its step waits for a conductor
    await asyncio.sleep(1.0)
    await cloud.start_conductor()
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT + 20)
    assert server["OS-EXT-SRV-ATTR:host"] == _other(source)
    assert await cloud.claims(server_id) == [_other(source)]
    assert ("evacuate", "Success") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_claim_moved_by_a_conductor_that_died_before_recording_it_is_finished(
    evacuate_cloud: EvacuateCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conductor dies between the scheduler's move of the claim and the instance's new host:
    its watch does the (idempotent) claim again and the evacuate goes on."""
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    conductor = cloud.conductor
    assert conductor is not None
    evacuations = conductor.watch.evacuations
    real_transit = evacuations.core.transit

    async def lost_transit(row: Any, trigger: Any, columns: Any = None) -> Any:
        if str(trigger) == "evacuate_claimed":
            raise ConnectionError("the conductor died here")
        return await real_transit(row, trigger, columns)

    monkeypatch.setattr(evacuations.core, "transit", lost_transit)
    status, _ = await cloud.evacuate(server_id)
    assert status >= 500
    assert await cloud.claims(server_id) == [_other(source)]  # moved, the instance not yet
    monkeypatch.setattr(evacuations.core, "transit", real_transit)
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT * 4)
    assert server["OS-EXT-SRV-ATTR:host"] == _other(source)
    assert await cloud.claims(server_id) == [_other(source)]
    assert (await audit(cloud.bus)).problems == {}


async def test_the_sdk_evacuates_and_waits_until_active(
    evacuate_cloud: EvacuateCloud, gateway_url: str
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    seen: list[str] = []
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        moved = await client.servers.evacuate(server_id, on_event=lambda event: seen.append(event.type))
    assert (moved.status, moved.host) == ("ACTIVE", _other(source))
    assert seen[-1] == "instance.active" and "instance.rebuild_spawning" in seen


async def test_a_server_booted_from_a_volume_is_evacuated_with_its_root_volume(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id, volume_id = await cloud.boot_from_volume()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    server = await cloud.until(server_id, "ACTIVE")
    target = _other(source)
    assert server["OS-EXT-SRV-ATTR:host"] == target
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    root = cloud.first_disk(target, server_id)
    assert "<target dev='vda'" in root and f"{volume_id}.raw'/>" in root  # the volume, as it was
    assert await cloud.claims(server_id) == [target]
    assert (await audit(cloud.bus)).problems == {}


async def test_the_audit_finds_a_claim_left_on_another_host_than_its_instance(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await Scheduler.client(cloud.bus).claim_evacuate(
        instance_uuid=server_id, source_host=source, vcpus=1, memory_mb=512, disk_gb=1
    )
    problems = (await audit(cloud.bus, recheck_after=0.1)).problems
    assert problems == {
        f"claim-host:{server_id}": f"instance {server_id} is on {source} but its claim is on {_other(source)}"
    }


async def test_an_evacuated_server_is_deleted_on_its_new_host_with_all_it_holds(
    evacuate_cloud: EvacuateCloud,
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    volume_id = await _attach_volume(cloud, server_id)
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    await cloud.until(server_id, "ACTIVE")
    assert (await cloud.api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    async with asyncio.timeout(10):
        while (await cloud.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.05)
    assert await cloud.claims(server_id) == [] and await cloud.ports(server_id) == []
    assert await cloud.attachments(server_id) == []
    _, volume = await cloud.api.get(f"/volume/v3/{cloud.api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "available"
    assert server_id not in [uuid for uuid, _ in await cloud.domains(_other(source))]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_step_the_destination_did_not_take_is_sent_again(
    evacuate_cloud: EvacuateCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = evacuate_cloud
    server_id = await cloud.boot()
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    target = cloud.nodes[_other(source)]
    real = target.builder.evacuate_instance
    dropped: list[str] = []

    async def lost_once(instance_uuid: str) -> None:
        if not dropped:
            dropped.append(instance_uuid)  # the cast is lost
            return
        await real(instance_uuid)

    monkeypatch.setattr(target.builder, "evacuate_instance", lost_once)
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    server = await cloud.until(server_id, "ACTIVE")
    assert dropped == [server_id] and server["OS-EXT-SRV-ATTR:host"] == target.host
    steps = await ConductorOperator.client(cloud.bus).list_action_events(instance_uuid=server_id)
    assert "evacuate_instance:sent_again" in [s["event"] for s in steps if s["action"] == "evacuate"]
    assert await cloud.claims(server_id) == [target.host]
