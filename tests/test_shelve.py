"""Shelve, shelve offload, unshelve: a server's disk saved as an image, its host's resources freed,
and the server brought back on any host with its port, address and volume; what is refused; and
what a conductor restart or a node dying mid-step leaves (nothing stuck, nothing leaked).

Every actor runs in this process on its own bus connection against a real nats-server, nodes on
libvirt's test driver, the gateway on a real loopback HTTP server; the scheduler calls a node
down after 2 s of silence, the conductor's task timeout is 3 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import pytest

from aiostack.client import Client
from api.image import ImageReader
from api.scheduler import Scheduler
from bus import Bus, NotFound
from deploy.audit import audit
from deploy.chaos import VICTIMS, delete_everything, victim_pid
from deploy.launch import aiostack_up
from tests.helpers import DEMO_PASSWORD, Api, aiostack_audit
from tests.test_aiostack_up import aiostack_with
from tests.test_evacuate import TASK_TIMEOUT, EvacuateCloud, _attach_volume, _other

ACTION = "/compute/v2.1/servers/{}/action"
V220 = {"OpenStack-API-Version": "compute 2.20"}
V219 = {"OpenStack-API-Version": "compute 2.19"}


class ShelveCloud(EvacuateCloud):
    """Two test-driver nodes; the conductor offloads shelved servers after ``offload_time``."""

    offload_time = 0.0

    async def start_conductor(self, **options: Any) -> None:
        await super().start_conductor(shelved_offload_time=self.offload_time, **options)

    async def act(
        self, server_id: str, action: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return await self.api.post(ACTION.format(server_id), {action: None}, headers=headers or {})

    async def image_status(self, image_id: str) -> str:
        try:
            return (await ImageReader.client(self.bus).get(image_id=image_id))["status"]
        except NotFound:
            return "gone"

    async def shelved_images(self, name: str) -> list[dict[str, Any]]:
        status, body = await self.api.get(f"/image/v2/images?name={name}-shelved")
        assert status == 200, body
        return list(body["images"])

    async def system_metadata(self, server_id: str) -> dict[str, Any]:
        conductor = self.conductor
        assert conductor is not None
        row = await conductor.store.fetchone(
            "SELECT system_metadata FROM instances WHERE uuid = ?", (server_id,)
        )
        assert row is not None
        return dict(json.loads(row["system_metadata"]))

    async def steps(self, server_id: str) -> list[tuple[str, str]]:
        conductor = self.conductor
        assert conductor is not None
        events = await conductor.watch.list_action_events(instance_uuid=server_id)
        return [(event["action"], event["event"]) for event in events]


class KeptShelveCloud(ShelveCloud):
    """Shelved servers are never offloaded by themselves (``shelved_offload_time`` -1)."""

    offload_time = -1.0


@pytest.fixture
async def shelve_cloud(start_actor, config, api, bus) -> ShelveCloud:
    cloud = ShelveCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


@pytest.fixture
async def kept_cloud(start_actor, config, api, bus) -> KeptShelveCloud:
    cloud = KeptShelveCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


async def _events(
    gateway_url: str, cloud: ShelveCloud, server_id: str, until: str, work: Any
) -> list[tuple[str, str]]:
    """The instance events of ``server_id`` while ``work`` runs, up to the event ``until``."""
    ws = await cloud.api.session.ws_connect(f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers)
    seen: list[tuple[str, str]] = []
    try:
        await work()
        async with asyncio.timeout(20):
            while not seen or seen[-1][0] != until:
                frame = json.loads((await ws.receive()).data)
                if frame["type"] == "event" and frame["event"]["id"] == server_id:
                    seen.append((frame["event"]["type"], frame["event"]["state"]["status"]))
    finally:
        await ws.close()
    return seen


async def test_a_shelve_saves_the_disk_as_an_image_and_offloads_the_server_keeping_port_and_volume(
    shelve_cloud: ShelveCloud, gateway_url: str
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("keeper")
    volume_id = await _attach_volume(cloud, server_id)
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    [(port_id, address, _)] = await cloud.ports(server_id)

    async def shelve() -> None:
        status, body = await cloud.act(server_id, "shelve")
        assert (status, body) == (202, b"")

    seen = await _events(gateway_url, cloud, server_id, "instance.shelved_offloaded", shelve)
    assert seen == [
        ("instance.shelving", "ACTIVE"),
        ("instance.shelving_image_pending_upload", "ACTIVE"),
        ("instance.shelving_image_uploading", "ACTIVE"),
        ("instance.shelved", "SHELVED"),
        ("instance.shelving_offloading", "SHELVED"),
        ("instance.shelved_offloaded", "SHELVED_OFFLOADED"),
    ]
    server = await cloud.server(server_id)
    assert server["OS-EXT-SRV-ATTR:host"] is None and server["OS-EXT-STS:vm_state"] == "shelved_offloaded"
    [image] = await cloud.shelved_images("keeper")
    assert image["status"] == "active" and image["instance_uuid"] == server_id
    system = await cloud.system_metadata(server_id)
    assert system["shelved_image_id"] == image["id"] and system["shelved_host"] == host
    assert system["shelved_at"]
    assert await cloud.claims(server_id) == []  # the host's resources given back
    assert await cloud.domains(host) == []
    assert await cloud.ports(server_id) == [(port_id, address, "")]  # kept, with its address, unbound
    assert await cloud.attachments(server_id) == [(volume_id, "attached", None)]
    assert await cloud.actions(server_id) == [
        ("create", "Success"),
        ("attach_volume", "Success"),
        ("shelve", "Success"),
        ("shelveOffload", "Success"),
    ]
    steps = await cloud.steps(server_id)
    assert [step for step in steps if step[0] in ("shelve", "shelveOffload")] == [
        ("shelve", "shelve_instance:sent"),
        ("shelve", "shelve_instance"),
        ("shelve", "snapshot_instance:sent"),
        ("shelve", "snapshot_instance"),
        ("shelveOffload", "shelve_offload_instance:sent"),
        ("shelveOffload", "shelve_offload_instance"),
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_an_unshelve_builds_the_offloaded_server_on_another_host_with_its_address_and_volume(
    shelve_cloud: ShelveCloud, gateway_url: str
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("traveller")
    volume_id = await _attach_volume(cloud, server_id)
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    target = _other(source)
    [(port_id, address, _)] = await cloud.ports(server_id)
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    [image] = await cloud.shelved_images("traveller")
    await Scheduler.client(cloud.bus).set_host_enabled(host=source, enabled=False)

    async def unshelve() -> None:
        status, body = await cloud.act(server_id, "unshelve")
        assert (status, body) == (202, b"")

    seen = await _events(gateway_url, cloud, server_id, "instance.active", unshelve)
    assert seen == [
        ("instance.unshelving", "SHELVED_OFFLOADED"),
        ("instance.spawning", "SHELVED_OFFLOADED"),
        ("instance.active", "ACTIVE"),
    ]
    server = await cloud.server(server_id)
    assert server["OS-EXT-SRV-ATTR:host"] == target and server["OS-EXT-STS:task_state"] is None
    assert server["image"]["id"] != image["id"]  # the image it was booted from, as before
    assert await cloud.claims(server_id) == [target]
    assert await cloud.ports(server_id) == [(port_id, address, target)]
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    assert [uuid for uuid, _ in await cloud.domains(target)] == [server_id]
    assert await cloud.image_status(image["id"]) in ("deleted", "gone")
    assert await cloud.system_metadata(server_id) == {}
    assert ("unshelve", "Success") in await cloud.actions(server_id)
    assert ("unshelve", "unshelve_instance:sent") in await cloud.steps(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelved_server_keeps_its_domain_until_an_admin_offloads_it(
    kept_cloud: KeptShelveCloud,
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("stay")
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    server = await cloud.until(server_id, "SHELVED")
    assert server["OS-EXT-SRV-ATTR:host"] == host and server["OS-EXT-STS:task_state"] is None
    assert await cloud.domains(host) == [(server_id, 5)]  # shut off, still defined
    assert await cloud.claims(server_id) == [host]
    assert (await audit(cloud.bus)).problems == {}
    assert (await cloud.act(server_id, "shelveOffload"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    assert await cloud.domains(host) == [] and await cloud.claims(server_id) == []
    assert ("shelveOffload", "Success") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_an_unshelve_of_a_shelved_server_starts_its_domain_and_deletes_the_image(
    kept_cloud: KeptShelveCloud,
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("back")
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED")
    [image] = await cloud.shelved_images("back")
    assert (await cloud.act(server_id, "unshelve"))[0] == 202
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == host
    assert await cloud.domains(host) == [(server_id, 1)]
    assert await cloud.image_status(image["id"]) in ("deleted", "gone")
    assert await cloud.system_metadata(server_id) == {}
    assert ("unshelve", "start_instance:sent") in await cloud.steps(server_id)
    assert ("unshelve", "Success") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_stopped_paused_or_suspended_server_is_shelved(kept_cloud: KeptShelveCloud) -> None:
    cloud = kept_cloud
    for action, status in (("os-stop", "SHUTOFF"), ("pause", "PAUSED"), ("suspend", "SUSPENDED")):
        server_id = await cloud.boot(action)
        host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
        assert (await cloud.act(server_id, action))[0] == 202
        await cloud.until(server_id, status)
        assert (await cloud.act(server_id, "shelve"))[0] == 202
        await cloud.until(server_id, "SHELVED")
        assert (server_id, 5) in await cloud.domains(host)
    assert (await audit(cloud.bus)).problems == {}


async def test_shelve_requests_the_state_does_not_allow_are_refused_and_change_nothing(
    kept_cloud: KeptShelveCloud, gateway_url: str
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("refused")
    status, body = await cloud.act(server_id, "unshelve")
    assert status == 409, body
    assert "Cannot 'unshelve' instance" in body["conflictingRequest"]["message"]
    status, body = await cloud.act(server_id, "shelveOffload")
    assert status == 409, body
    assert (await cloud.act(server_id, "lock"))[0] == 202
    async with aiohttp.ClientSession() as session:
        member = Api(session, gateway_url)
        await member.login("demo", DEMO_PASSWORD)
        mine = await member.boot_tiny("mine")
        await cloud.until(mine, "ACTIVE")
        assert (await member.post(ACTION.format(mine), {"lock": None}))[0] == 202
        status, body = await member.post(ACTION.format(mine), {"shelve": None})
        assert status == 409, body
        assert "is locked" in body["conflictingRequest"]["message"]
        assert (await member.post(ACTION.format(mine), {"unlock": None}))[0] == 202
        assert (await member.post(ACTION.format(mine), {"shelve": None}))[0] == 202
        await cloud.until(mine, "SHELVED")
        status, body = await member.post(ACTION.format(mine), {"shelveOffload": None})
        assert status == 403, body  # admins only, as Nova's policy
        status, body = await member.post(ACTION.format(mine), {"shelve": None})
        assert status == 409, body
    assert (await cloud.server(mine))["status"] == "SHELVED"
    assert (await cloud.server(server_id))["status"] == "ACTIVE"
    assert [action for action, _ in await cloud.actions(server_id)] == ["create", "lock"]


async def test_a_shelved_offloaded_server_is_deleted_with_its_port_volume_attachment_and_image(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("gone")
    volume_id = await _attach_volume(cloud, server_id)
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    [image] = await cloud.shelved_images("gone")
    status, body = await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    assert status == 204, body
    async with asyncio.timeout(10):
        while (await cloud.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.05)
    assert await cloud.ports(server_id) == []
    assert await cloud.attachments(server_id) == []
    volume = (await cloud.api.get(f"/volume/v3/{cloud.api.project_id}/volumes/{volume_id}"))[1]["volume"]
    assert volume["status"] == "available"
    assert await cloud.image_status(image["id"]) in ("deleted", "gone")
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelve_goes_on_after_its_conductor_restarts(shelve_cloud: ShelveCloud) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("restart")
    conductor = cloud.conductor
    assert conductor is not None
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await conductor.stop()  # the node's report of its step waits for a conductor
    await asyncio.sleep(1.0)
    await cloud.start_conductor()
    server = await cloud.until(server_id, "SHELVED_OFFLOADED", timeout=TASK_TIMEOUT * 8)
    assert server["OS-EXT-SRV-ATTR:host"] is None
    assert await cloud.claims(server_id) == []
    assert len(await cloud.shelved_images("restart")) == 1
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelve_whose_node_is_down_ends_where_it_was_with_nothing_leaked(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("unheard")
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_node(host)
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    async with asyncio.timeout(TASK_TIMEOUT * 6):
        while (await cloud.server(server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.1)
    server = await cloud.server(server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", host)
    assert ("shelve", "Error") in await cloud.actions(server_id)
    assert await cloud.shelved_images("unheard") == []
    assert await cloud.system_metadata(server_id) == {}
    assert await cloud.claims(server_id) == [host]
    assert (await audit(cloud.bus)).problems == {}


async def test_an_unshelve_whose_node_dies_is_offloaded_again_with_no_claim(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("orphan")
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    await Scheduler.client(cloud.bus).set_host_enabled(host="node-1", enabled=False)
    await cloud.nodes["node-2"].stop()  # gone, but the scheduler still calls it up for 2 s
    assert (await cloud.act(server_id, "unshelve"))[0] == 202
    del cloud.nodes["node-2"]
    async with asyncio.timeout(TASK_TIMEOUT * 8):
        while (server := await cloud.server(server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.1)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("SHELVED_OFFLOADED", None)
    assert await cloud.claims(server_id) == []
    assert ("unshelve", "Error") in await cloud.actions(server_id)
    assert [port[2] for port in await cloud.ports(server_id)] == [""]
    assert len(await cloud.shelved_images("orphan")) == 1  # kept: the server unshelves from it later
    assert (await audit(cloud.bus)).problems == {}


async def test_a_server_booted_from_a_volume_is_shelved_without_an_image_and_unshelved_elsewhere(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id, volume_id = await cloud.boot_from_volume("rooted")
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    assert await cloud.shelved_images("rooted") == []  # as Nova: no image of a volume-backed server
    assert (await cloud.system_metadata(server_id))["shelved_image_id"] is None
    assert await cloud.attachments(server_id) == [(volume_id, "attached", None)]
    await Scheduler.client(cloud.bus).set_host_enabled(host=source, enabled=False)
    assert (await cloud.act(server_id, "unshelve"))[0] == 202
    server = await cloud.until(server_id, "ACTIVE")
    target = _other(source)
    assert server["OS-EXT-SRV-ATTR:host"] == target
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    root = cloud.first_disk(target, server_id)
    assert "<target dev='vda'" in root and f"{volume_id}.raw'/>" in root  # its root volume, as it was
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelved_server_is_offloaded_by_the_watch_after_the_offload_time(
    start_actor, config, api, bus
) -> None:
    class SoonOffloaded(ShelveCloud):
        offload_time = 1.0

    cloud = SoonOffloaded(start_actor, config, api, bus)
    await cloud.start()
    server_id = await cloud.boot("later")
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    shelved = await cloud.until(server_id, "SHELVED", "SHELVED_OFFLOADED")
    assert shelved["status"] == "SHELVED"  # not at once
    await cloud.until(server_id, "SHELVED_OFFLOADED", timeout=15)
    assert await cloud.claims(server_id) == []
    offload = [action for action in await cloud.actions(server_id) if action[0] == "shelveOffload"]
    assert offload == [("shelveOffload", "Success")]


async def test_an_offloaded_server_still_counts_in_its_projects_cores_and_ram(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("counted")
    limits = "/compute/v2.1/limits"
    before = (await cloud.api.get(limits))[1]["limits"]["absolute"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    after = (await cloud.api.get(limits))[1]["limits"]["absolute"]
    counted = ("totalCoresUsed", "totalRAMUsed", "totalInstancesUsed")
    assert {key: after[key] for key in counted} == {key: before[key] for key in counted}
    assert after["totalInstancesUsed"] >= 1 and after["totalCoresUsed"] >= 1


async def test_the_sdk_shelves_offloads_and_unshelves_with_waits(
    kept_cloud: KeptShelveCloud, gateway_url: str
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("sdk")
    seen: list[str] = []
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        shelved = await client.servers.shelve(server_id, on_event=lambda event: seen.append(event.type))
        assert (shelved.status, shelved.task_state) == ("SHELVED", None)
        assert seen[-1] == "instance.shelved" and "instance.shelving_image_uploading" in seen
        offloaded = await client.servers.shelve_offload(server_id)
        assert (offloaded.status, offloaded.host) == ("SHELVED_OFFLOADED", None)
        unshelved = await client.servers.unshelve(server_id)
        assert unshelved.status == "ACTIVE" and unshelved.host in ("node-1", "node-2")


async def test_the_sdk_waits_for_the_offload_that_follows_a_shelve(
    shelve_cloud: ShelveCloud, gateway_url: str
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("sdk-offloaded")
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        shelved = await client.servers.shelve(server_id)
    assert (shelved.status, shelved.task_state, shelved.host) == ("SHELVED_OFFLOADED", None, None)


async def test_the_cli_shelves_and_unshelves_a_server(kept_cloud: KeptShelveCloud, gateway_url: str) -> None:
    cloud = kept_cloud
    await cloud.boot("shell")
    env = {
        "OS_AUTH_URL": f"{gateway_url}/identity/v3",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": "admin-secret",
        "OS_PROJECT_NAME": "admin",
    }
    code, output = await aiostack_with(env, "server", "shelve", "shell", "--wait")
    assert code == 0 and "shell: SHELVED (host node-" in output, output
    code, output = await aiostack_with(env, "server", "shelve-offload", "shell", "--wait")
    assert code == 0 and "shell: SHELVED_OFFLOADED (host -)" in output, output
    code, output = await aiostack_with(env, "server", "unshelve", "shell", "--wait")
    assert code == 0 and "shell: ACTIVE (host node-" in output, output
    code, output = await aiostack_with(env, "server", "unshelve", "shell")
    assert code == 1 and "Cannot 'unshelve' instance" in output, output


async def test_from_2_20_a_volume_is_attached_to_and_detached_from_an_offloaded_server(
    shelve_cloud: ShelveCloud,
) -> None:
    cloud = shelve_cloud
    server_id = await cloud.boot("later-disk")
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    api = cloud.api
    volumes = f"/volume/v3/{api.project_id}/volumes"
    made = []
    for name in ("kept", "dropped"):
        status, created = await api.post(volumes, {"volume": {"size": 1, "name": name}})
        assert status == 202, created
        made.append(created["volume"]["id"])
    async with asyncio.timeout(10):
        for volume_id in made:
            while (await api.get(f"{volumes}/{volume_id}"))[1]["volume"]["status"] != "available":
                await asyncio.sleep(0.05)
    kept, dropped = made
    attachments = f"/compute/v2.1/servers/{server_id}/os-volume_attachments"
    status, body = await api.post(attachments, {"volumeAttachment": {"volumeId": kept}}, headers=V219)
    assert status == 409, body
    assert body["conflictingRequest"]["message"] == (
        f"Cannot 'attach_volume' instance {server_id} while it is in vm_state shelved_offloaded"
    )
    assert (await api.get(f"{volumes}/{kept}"))[1]["volume"]["status"] == "available"  # nothing changed
    for volume_id in made:
        status, body = await api.post(
            attachments, {"volumeAttachment": {"volumeId": volume_id}}, headers=V220
        )
        assert status == 200, body
        assert body["volumeAttachment"]["device"] is None  # no host has it yet, as Nova shows it
        assert (volume_id, "attached", None) in await cloud.attachments(server_id)
    status, body = await api.delete(f"{attachments}/{dropped}", headers=V219)
    assert status == 409, body
    status, body = await api.delete(f"{attachments}/{dropped}", headers=V220)
    assert status == 202, body
    assert (await api.get(f"{volumes}/{dropped}"))[1]["volume"]["status"] == "available"
    assert await cloud.attachments(server_id) == [(kept, "attached", None)]
    await Scheduler.client(cloud.bus).set_host_enabled(host=source, enabled=False)
    assert (await cloud.act(server_id, "unshelve"))[0] == 202
    target = (await cloud.until(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    assert target == _other(source)
    assert await cloud.attachments(server_id) == [(kept, "attached", target)]
    xml = cloud.nodes[target].hypervisor.connection.lookupByUUIDString(server_id).XMLDesc()
    assert f"{kept}.raw'/>" in xml  # the node attached it when it built the server
    assert (await audit(cloud.bus)).problems == {}


async def test_from_2_20_a_volume_attached_to_a_shelved_server_goes_with_it_through_offload_and_unshelve(
    kept_cloud: KeptShelveCloud,
) -> None:
    """Its domain is shut off on its host: the volume goes into the domain's definition there; the
    offload releases its export, the unshelve attaches it where the server is built."""
    cloud = kept_cloud
    server_id = await cloud.boot("shelved-disk")
    source = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED")
    api = cloud.api
    volumes = f"/volume/v3/{api.project_id}/volumes"
    status, created = await api.post(volumes, {"volume": {"size": 1, "name": "while-shelved"}})
    assert status == 202, created
    volume_id = created["volume"]["id"]
    async with asyncio.timeout(10):
        while (await api.get(f"{volumes}/{volume_id}"))[1]["volume"]["status"] != "available":
            await asyncio.sleep(0.05)
    attachments = f"/compute/v2.1/servers/{server_id}/os-volume_attachments"
    status, body = await api.post(attachments, {"volumeAttachment": {"volumeId": volume_id}}, headers=V219)
    assert status == 409, body
    assert body["conflictingRequest"]["message"] == (
        f"Cannot 'attach_volume' instance {server_id} while it is in vm_state shelved"
    )
    assert (await api.get(f"{volumes}/{volume_id}"))[1]["volume"]["status"] == "available"
    status, body = await api.post(attachments, {"volumeAttachment": {"volumeId": volume_id}}, headers=V220)
    assert status == 200, body
    assert await cloud.attachments(server_id) == [(volume_id, "attached", source)]
    xml = cloud.nodes[source].hypervisor.connection.lookupByUUIDString(server_id).XMLDesc()
    assert f"{volume_id}.raw'/>" in xml  # in the shut-off domain's definition
    assert (await cloud.act(server_id, "shelveOffload"))[0] == 202
    await cloud.until(server_id, "SHELVED_OFFLOADED")
    assert await cloud.attachments(server_id) == [(volume_id, "attached", None)]
    await Scheduler.client(cloud.bus).set_host_enabled(host=source, enabled=False)
    assert (await cloud.act(server_id, "unshelve"))[0] == 202
    target = (await cloud.until(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    assert target == _other(source)
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    xml = cloud.nodes[target].hypervisor.connection.lookupByUUIDString(server_id).XMLDesc()
    assert f"{volume_id}.raw'/>" in xml
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelve_step_a_conductor_died_in_is_done_again_by_the_watch(
    shelve_cloud: ShelveCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conductor dies between the node's power-off and the upload's cast (its own step,
    shelving_image_pending_upload): its watch does the step again and the shelve goes on, with
    one image."""
    cloud = shelve_cloud
    server_id = await cloud.boot("resumed")
    conductor = cloud.conductor
    assert conductor is not None
    core = conductor.watch.shelves.core
    real_transit = core.transit

    async def lost_transit(row: Any, trigger: Any, columns: Any = None) -> Any:
        if str(trigger) == "shelve_uploading":
            raise ConnectionError("the conductor died here")
        return await real_transit(row, trigger, columns)

    monkeypatch.setattr(core, "transit", lost_transit)
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    async with asyncio.timeout(10):
        while (await cloud.server(server_id))["OS-EXT-STS:task_state"] != "shelving_image_pending_upload":
            await asyncio.sleep(0.05)
    monkeypatch.setattr(core, "transit", real_transit)
    await cloud.until(server_id, "SHELVED_OFFLOADED", timeout=TASK_TIMEOUT * 6)
    assert [image["status"] for image in await cloud.shelved_images("resumed")] == ["active"]
    steps = await cloud.steps(server_id)
    assert ("shelve", "stalled") in steps and ("shelve", "snapshot_instance") in steps
    assert await cloud.claims(server_id) == []
    assert (await audit(cloud.bus)).problems == {}


async def test_an_offload_whose_node_is_down_is_finished_by_the_conductor_and_the_node_cleans_up(
    kept_cloud: KeptShelveCloud,
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("stranded")
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    await cloud.until(server_id, "SHELVED")
    await cloud.stop_node(host)
    assert (await cloud.act(server_id, "shelveOffload"))[0] == 202
    server = await cloud.until(server_id, "SHELVED_OFFLOADED", timeout=TASK_TIMEOUT * 6)
    assert server["OS-EXT-SRV-ATTR:host"] is None and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [] and [p[2] for p in await cloud.ports(server_id)] == [""]
    assert ("shelveOffload", "Success") in await cloud.actions(server_id)
    returned = await cloud.start_node(host)  # it still has its record of the domain: an orphan now
    async with asyncio.timeout(10):
        while server_id in await returned.records.uuids():
            await asyncio.sleep(0.1)
    assert await cloud.domains(host) == []
    assert (await audit(cloud.bus)).problems == {}


async def test_a_shelve_whose_node_dies_during_the_upload_ends_in_error_with_its_image_deleted(
    kept_cloud: KeptShelveCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = kept_cloud
    server_id = await cloud.boot("cut")
    host = (await cloud.server(server_id))["OS-EXT-SRV-ATTR:host"]
    node = cloud.nodes[host]
    uploading, dying = asyncio.Event(), asyncio.Event()

    async def never_uploads(instance_uuid: str, image_id: str) -> None:
        uploading.set()
        await dying.wait()  # the node dies in the middle of it: nothing more is reported

    monkeypatch.setattr(node.snapshots, "snapshot_instance", never_uploads)
    assert (await cloud.act(server_id, "shelve"))[0] == 202
    async with asyncio.timeout(10):
        await uploading.wait()
    [image] = await cloud.shelved_images("cut")
    dying.set()
    await cloud.stop_node(host)
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT * 6)
    assert "made no progress" in server["fault"]["message"] and server["OS-EXT-STS:task_state"] is None
    assert await cloud.image_status(image["id"]) in ("deleted", "gone")
    assert await cloud.system_metadata(server_id) == {}
    assert await cloud.claims(server_id) == [host]  # one claim, where it is recorded
    assert ("shelve", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def _settle(client: Client, bus: Bus, done: set[str], deadline: float = 90.0) -> list[dict[str, Any]]:
    """Every server once none is in a task and each is in one of ``done`` (or ERROR with a fault)
    and the audit is clean; the servers then."""
    stop = asyncio.get_running_loop().time() + deadline
    while True:
        try:
            servers = (await client.request("GET", "/compute/v2.1/servers/detail?all_tenants=1"))["servers"]
            settled = all(
                not s["OS-EXT-STS:task_state"]
                and (s["status"] in done or (s["status"] == "ERROR" and s.get("fault")))
                for s in servers
            )
            if settled and not (await audit(bus, recheck_after=0.5)).problems:
                return servers
        except Exception:  # the cloud, or this client's own NATS connection, is still coming back
            pass
        assert asyncio.get_running_loop().time() < stop, "the cloud did not settle"
        await asyncio.sleep(0.5)


@pytest.mark.full_size
@pytest.mark.timeout(900)
async def test_killing_any_process_mid_shelve_and_mid_unshelve_leaves_nothing_stuck_or_leaked(
    tmp_path: Any,
) -> None:
    """`aiostack up` (two test-driver nodes, task timeout 10 s): for each victim, 12 servers shelved
    at once and the victim SIGKILLed while they shelve, then unshelved and killed again."""
    password = "shelve-chaos"
    async with (
        aiostack_up(
            tmp_path, "--nodes", "2", "--task-timeout", "10", env={"AIOSTACK_ADMIN_PASSWORD": password}
        ) as cloud,
        Client(cloud.gateway_url) as client,
        await Bus.connect(cloud.nats_url, name="shelve-chaos", credentials=cloud.admin_credentials) as bus,
    ):
        await client.login("admin", password, "admin")
        for round_number, victim in enumerate(VICTIMS):
            servers = [
                (
                    await client.servers.create(
                        f"chaos-{round_number}-{n}", image="aiostack-tiny", flavor="m1.tiny"
                    )
                ).id
                for n in range(12)
            ]
            await asyncio.gather(*(client.servers.shelve(s, wait=False) for s in servers))
            os.kill(victim_pid(tmp_path, victim), signal.SIGKILL)
            shelved = await _settle(client, bus, {"SHELVED_OFFLOADED", "ACTIVE"})
            offloaded = [s["id"] for s in shelved if s["status"] == "SHELVED_OFFLOADED"]
            assert offloaded, shelved
            await asyncio.gather(*(client.servers.unshelve(s, wait=False) for s in offloaded))
            os.kill(victim_pid(tmp_path, victim), signal.SIGKILL)
            await _settle(client, bus, {"SHELVED_OFFLOADED", "ACTIVE"})
            leaked = await delete_everything(client, bus)
            assert leaked == {"ports": 0, "claims": 0, "volume_attachments": 0, "domains": 0}, (
                victim,
                leaked,
            )
            images = (await client.request("GET", "/image/v2/images"))["images"]
            assert not [image["name"] for image in images if image["name"].endswith("-shelved")], victim
        assert (await aiostack_audit(tmp_path))[0] == 0
