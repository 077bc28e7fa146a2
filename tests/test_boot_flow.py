"""The 29-step boot flow end to end: REST in, libvirt's events out over the websocket.

Every actor runs for real on a real nats-server, nodes on libvirt's test driver, the
gateway on a real loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from api.node import Node
from bus import Bus, decode
from runtime.events import event_filter


class EventStream:
    """Events from the gateway's websocket, kept in arrival order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame["type"] != "event":
                continue
            async with self._arrived:
                self.events.append({**frame["event"], "seq": frame["seq"]})
                self._arrived.notify_all()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self._arrived:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await self._arrived.wait()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def events(api, gateway_url, cloud) -> AsyncIterator[EventStream]:
    await api.login()
    ws = await api.session.ws_connect(f"{gateway_url}/ws?kinds=instance,domain", headers=api.headers)
    stream = EventStream(ws)
    yield stream
    await stream.close()


async def default_image_id(api) -> str:
    status, body = await api.get("/image/v2/images?name=aiostack-tiny")
    assert status == 200, body
    return body["images"][0]["id"]


async def boot(api, name: str = "vm", **extra: Any) -> str:
    image = extra.pop("imageRef", None) or await default_image_id(api)
    status, body = await api.post(
        "/compute/v2.1/servers",
        {"server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": "auto", **extra}},
    )
    assert status == 202, body
    return body["server"]["id"]


def is_event(server_id: str, event_type: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["id"] == server_id and e["type"] == event_type


async def test_boot_stop_start_reboot_delete_follow_libvirt_events(api, events: EventStream) -> None:
    server_id = await boot(api)
    active = await events.wait_for(is_event(server_id, "instance.active"))
    started = await events.wait_for(
        lambda e: (
            e["id"] == server_id and e["type"] == "domain.lifecycle" and e["state"]["event"] == "STARTED"
        )
    )
    assert events.events.index(started) < events.events.index(active)
    assert active["state"]["cause"]["domain_event"] == "STARTED"
    assert active["request_id"] == started["request_id"]
    status, body = await api.get(f"/compute/v2.1/servers/{server_id}")
    assert status == 200 and body["server"]["status"] == "ACTIVE"
    assert body["server"]["addresses"]["default"][0]["addr"].startswith("10.20.")

    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-stop": None}))[0] == 202
    stopped = await events.wait_for(is_event(server_id, "instance.shutoff"))
    assert stopped["state"]["cause"]["domain_event"] == "STOPPED"
    status, body = await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-stop": None})
    assert status == 409 and "stopped" in body["conflictingRequest"]["message"]

    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-start": None}))[0] == 202
    restarted = await events.wait_for(lambda e: is_event(server_id, "instance.active")(e) and e is not active)
    assert restarted["state"]["cause"]["domain_event"] == "STARTED"

    actives_before = sum(1 for e in events.events if is_event(server_id, "instance.active")(e))
    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"reboot": {"type": "HARD"}}))[
        0
    ] == 202
    await events.wait_for(is_event(server_id, "instance.rebooting_hard"))
    await events.wait_for(
        lambda e: (
            is_event(server_id, "instance.active")(e)
            and sum(1 for x in events.events if is_event(server_id, "instance.active")(x)) > actives_before
        )
    )
    assert (await api.post(f"/compute/v2.1/servers/{server_id}/action", {"reboot": {"type": "SOFT"}}))[
        0
    ] == 202
    await events.wait_for(is_event(server_id, "instance.rebooting"))

    async with asyncio.timeout(10):
        while (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] != "ACTIVE":
            await asyncio.sleep(0.02)
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    deleted = await events.wait_for(is_event(server_id, "instance.deleted"))
    assert deleted["state"]["cause"]["domain_event"] == "UNDEFINED"
    status, body = await api.get(f"/compute/v2.1/servers/{server_id}")
    assert status == 404 and "itemNotFound" in body


async def test_every_message_on_the_bus_is_a_valid_envelope(api, events: EventStream, bus: Bus) -> None:
    seen: list[tuple[str, bytes]] = []

    async def spy(msg) -> None:
        seen.append((msg.subject, msg.data))

    await bus.subscribe(f"{bus.prefix}.>", spy)
    await bus.subscribe("_INBOX.>", spy)
    await bus.flush()
    server_id = await boot(api, "traced")
    await events.wait_for(is_event(server_id, "instance.active"))
    await api.delete(f"/compute/v2.1/servers/{server_id}")
    await events.wait_for(is_event(server_id, "instance.deleted"))
    await asyncio.sleep(0.2)
    subjects = {subject.split(".")[1] if subject.startswith(bus.prefix) else "reply" for subject, _ in seen}
    assert {"rpc", "evt", "reply"} <= subjects
    for subject, data in seen:
        if subject.startswith("_INBOX") and data.startswith(b"{"):
            assert "stream" in json.loads(data) or "type" in json.loads(data)  # JetStream's own acks
        elif data:  # the server's no-responders status message carries no payload
            decode(data)
    methods = {s.split(".", 2)[2] for s, _ in seen if s.startswith(f"{bus.prefix}.rpc.")}
    host = "node-1"  # what a node calls, it calls as its own host (the subject says which)
    assert {
        "conductor.create_instance",
        "scheduler.select_destinations",
        f"conductor.host.{host}.get_build_request",
        f"image.host.{host}.get",
        f"net.host.{host}.allocate_for_instance",
        f"conductor.host.{host}.domain_event",
        "conductor.placement",
    } <= methods


@pytest.mark.nodes(4)
async def test_200_concurrent_boots_across_4_nodes(api, events: EventStream, bus: Bus) -> None:
    image = await default_image_id(api)
    server_ids = await asyncio.gather(*(boot(api, f"many-{i}", imageRef=image) for i in range(200)))
    for server_id in server_ids:
        await events.wait_for(is_event(server_id, "instance.active"), timeout=120)
    _status, body = await api.get("/compute/v2.1/servers/detail")
    assert [s["status"] for s in body["servers"]] == ["ACTIVE"] * 200
    addresses = [s["addresses"]["default"][0]["addr"] for s in body["servers"]]
    assert len(set(addresses)) == 200
    allocations = await bus.call("net.list_allocations")
    assert len({a["ip_address"] for a in allocations}) == len(allocations)
    hosts = await bus.call("scheduler.list_hosts")
    assert sum(h["instances"] for h in hosts) == 200
    assert len([h for h in hosts if h["instances"]]) == 4
    for host in hosts:
        assert host["memory_mb_used"] <= host["memory_mb"]
        assert host["vcpus_used"] <= host["vcpus"] * 16
        domains = await Node.client(bus, host=host["host"]).list_domains()
        assert len(domains) == host["instances"]


async def _volume(api) -> str:
    status, created = await api.post(f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1}})
    assert status == 202, created
    return created["volume"]["id"]


async def test_volumes_attach_at_boot(api, events: EventStream, bus: Bus) -> None:
    first, second = await _volume(api), await _volume(api)
    server_id = await boot(
        api,
        "booted-with-disks",
        block_device_mapping_v2=[
            {"uuid": first, "source_type": "volume", "destination_type": "volume", "boot_index": -1},
            {
                "uuid": second,
                "source_type": "volume",
                "destination_type": "volume",
                "device_name": "/dev/vdd",
            },
        ],
    )
    await events.wait_for(is_event(server_id, "instance.active"))
    _, listed = await api.get(f"/compute/v2.1/servers/{server_id}/os-volume_attachments")
    assert {(a["volumeId"], a["device"]) for a in listed["volumeAttachments"]} == {
        (first, "/dev/vdb"),
        (second, "/dev/vdd"),
    }
    for volume_id in (first, second):
        _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
        assert volume["volume"]["status"] == "in-use"
    status, body = await api.post(
        "/compute/v2.1/servers",
        {
            "server": {
                "name": "greedy",
                "imageRef": await default_image_id(api),
                "flavorRef": "1",
                "block_device_mapping_v2": [
                    {"uuid": first, "source_type": "volume", "destination_type": "volume"}
                ],
            }
        },
    )
    assert status == 400 and "in-use, not available" in body["badRequest"]["message"]
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await events.wait_for(is_event(server_id, "instance.deleted"))
    for volume_id in (first, second):
        _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
        assert volume["volume"]["status"] == "available"


async def _volume_from(api, image_id: str, size: int = 1) -> str:
    volumes = f"/volume/v3/{api.project_id}/volumes"
    status, created = await api.post(volumes, {"volume": {"size": size, "imageRef": image_id}})
    assert status == 202, created
    for _ in range(400):
        _, shown = await api.get(f"{volumes}/{created['volume']['id']}")
        if shown["volume"]["status"] != "creating":
            break
        await asyncio.sleep(0.05)
    assert shown["volume"]["status"] == "available" and shown["volume"]["bootable"] == "true", shown
    return created["volume"]["id"]


def _boot_volume_mapping(volume_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "uuid": volume_id,
        "source_type": "volume",
        "destination_type": "volume",
        "boot_index": 0,
        **extra,
    }


async def _boot_from(api, name: str, mappings: list[dict[str, Any]], **extra: Any) -> tuple[int, Any]:
    server = {"name": name, "flavorRef": "1", "block_device_mapping_v2": mappings, **extra}
    return await api.post("/compute/v2.1/servers", {"server": server})


async def test_a_server_boots_from_a_volume_made_from_an_image_with_its_kernel_and_ramdisk(
    api, events: EventStream, bus: Bus, cloud
) -> None:
    kernel, ramdisk = await _image_with(api, disk_format="aki"), await _image_with(api, disk_format="ari")
    base = await _image_with(api, kernel_id=kernel, ramdisk_id=ramdisk, os_command_line="console=ttyS0")
    volume_id = await _volume_from(api, base, size=2)
    volume_path = f"/volume/v3/{api.project_id}/volumes/{volume_id}"
    _, volume = await api.get(volume_path)
    assert volume["volume"]["volume_image_metadata"]["kernel_id"] == kernel  # the image's properties too
    status, created = await _boot_from(
        api, "from-volume", [_boot_volume_mapping(volume_id, delete_on_termination=True)], imageRef=""
    )
    assert status == 202, created
    server_id = created["server"]["id"]
    await events.wait_for(is_event(server_id, "instance.active"))

    _, shown = await api.get(f"/compute/v2.1/servers/{server_id}")
    assert shown["server"]["image"] == ""  # as Nova shows a server booted from a volume
    assert shown["server"]["os-extended-volumes:volumes_attached"] == [{"id": volume_id}]
    _, volume = await api.get(volume_path)
    attachment = volume["volume"]["attachments"][0]
    assert volume["volume"]["status"] == "in-use"
    assert (attachment["server_id"], attachment["device"]) == (server_id, "/dev/vda")
    node = next(actor for actor in cloud if type(actor).__name__ == "NodeActor")
    xml = node.hypervisor.conn.lookupByUUIDString(server_id).XMLDesc()
    root = xml[xml.index("<disk") : xml.index("</disk>")]
    assert "<target dev='vda'" in root and f"{volume_id}.raw'/>" in root  # the volume's file
    assert f"images/{kernel}</kernel>" in xml and f"images/{ramdisk}</initrd>" in xml
    hosts = await bus.call("scheduler.list_allocations")
    assert next(a for a in hosts if a["instance_uuid"] == server_id)["disk_gb"] == 0  # no local disk

    attachments = f"/compute/v2.1/servers/{server_id}/os-volume_attachments"
    status, refused = await api.delete(f"{attachments}/{volume_id}")
    assert status == 400 and "root disk" in refused["badRequest"]["message"]
    status, refused = await api.post(
        f"/compute/v2.1/servers/{server_id}/action", {"createImage": {"name": "snap"}}
    )
    assert status == 409 and "boots from a volume" in refused["conflictingRequest"]["message"]
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await events.wait_for(is_event(server_id, "instance.deleted"))
    for _ in range(200):  # delete_on_termination: the volume goes with the server
        if (await api.get(volume_path))[0] == 404:
            break
        await asyncio.sleep(0.05)
    assert (await api.get(volume_path))[0] == 404


async def test_a_boot_volume_kept_on_termination_is_available_again_after_the_delete(
    api, events: EventStream
) -> None:
    volume_id = await _volume_from(api, await default_image_id(api))
    status, created = await _boot_from(api, "kept", [_boot_volume_mapping(volume_id)])
    assert status == 202, created
    server_id = created["server"]["id"]
    await events.wait_for(is_event(server_id, "instance.active"))
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await events.wait_for(is_event(server_id, "instance.deleted"))
    _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "available" and volume["volume"]["attachments"] == []


async def test_bad_boots_from_volumes_are_refused_and_change_nothing(api, bus: Bus, cloud) -> None:
    await api.login()
    image = await default_image_id(api)
    bootable = await _volume_from(api, image)
    blank = await _volume(api)
    for _ in range(200):
        if (await api.get(f"/volume/v3/{api.project_id}/volumes/{blank}"))[1]["volume"][
            "status"
        ] == "available":
            break
        await asyncio.sleep(0.05)
    cases = [
        ([_boot_volume_mapping(blank)], {}, "is not bootable"),
        ([_boot_volume_mapping(bootable)], {"imageRef": image}, "has no imageRef"),
        ([_boot_volume_mapping(bootable), _boot_volume_mapping(blank)], {}, "only one volume"),
        (
            [
                _boot_volume_mapping(bootable),
                {"uuid": image, "source_type": "image", "destination_type": "local", "boot_index": 0},
            ],
            {},
            "no image mapping",
        ),
        (
            [{"uuid": bootable, "source_type": "volume", "destination_type": "volume", "boot_index": -1}],
            {},
            "'imageRef' is a required property",
        ),
        (
            [{"uuid": image, "source_type": "image", "destination_type": "volume", "boot_index": 0}],
            {},
            "create the volume from the image",
        ),
        ([_boot_volume_mapping("no-such-volume")], {}, "Volume no-such-volume could not be found"),
    ]
    for mappings, extra, says in cases:
        status, body = await _boot_from(api, "bad", mappings, **extra)
        assert status == 400 and says in body["badRequest"]["message"], (says, body)
    _, servers = await api.get("/compute/v2.1/servers")
    assert servers["servers"] == []
    for volume_id in (bootable, blank):
        _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
        assert volume["volume"]["status"] == "available"
    assert await bus.call("scheduler.list_allocations") == []


async def _image_with(api, **properties: str) -> str:
    status, image = await api.post(
        "/image/v2/images",
        {"name": "special", "disk_format": "raw", "container_format": "bare", **properties},
    )
    assert status == 201, image
    status, _ = await api.put(
        f"/image/v2/images/{image['id']}/file",
        None,
        data=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 204
    return image["id"]


@pytest.mark.parametrize(
    ("properties", "fault_says"),
    [
        ({"kernel_id": "0d0bf2a4-0000-4000-8000-000000000000"}, "kernel_id image"),
        ({"hw_disk_bus": "bogus"}, "Invalid value for attribute 'bus'"),
    ],
    ids=["missing-kernel-image", "libvirt-refuses-the-domain"],
)
async def test_failed_build_ends_in_error_and_releases_everything(
    api, events: EventStream, bus: Bus, properties: dict[str, str], fault_says: str
) -> None:
    image = await _image_with(api, **properties)
    volume_id = await _volume(api)
    server_id = await boot(
        api,
        "doomed",
        imageRef=image,
        block_device_mapping_v2=[
            {"uuid": volume_id, "source_type": "volume", "destination_type": "volume", "boot_index": -1}
        ],
    )
    failed = await events.wait_for(is_event(server_id, "instance.error"))
    assert fault_says in failed["state"]["fault"]["message"]
    _status, body = await api.get(f"/compute/v2.1/servers/{server_id}")
    assert body["server"]["status"] == "ERROR"
    assert fault_says in body["server"]["fault"]["message"]
    assert server_id not in {a["instance_uuid"] for a in await bus.call("scheduler.list_allocations")}
    assert await bus.call("net.list_ports", {"device_id": server_id}) == []
    assert await Node.client(bus, host="node-1").list_domains() == []
    _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "available" and volume["volume"]["attachments"] == []
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await events.wait_for(is_event(server_id, "instance.deleted"))


async def test_a_build_whose_image_went_away_after_the_api_took_it_ends_in_error_and_frees_its_ports(
    api, events: EventStream, bus: Bus
) -> None:
    """The node reads the image while its ports are made: the build that finds the image deleted
    (the conductor's check of it, a moment old, still said active) gives its ports back."""
    port_events: list[tuple[str, str]] = []

    async def port_event(msg) -> None:
        event = decode(msg.data).body
        port_events.append((event["type"], event["state"]["device_id"]))

    await bus.subscribe(f"{bus.prefix}.{event_filter('port')}", port_event)
    image = await _image_with(api)
    first = await boot(api, "first", imageRef=image)  # the conductor has checked the image now
    await events.wait_for(is_event(first, "instance.active"))
    assert (await api.delete(f"/image/v2/images/{image}"))[0] == 204
    server_id = await boot(api, "too-late", imageRef=image)
    failed = await events.wait_for(is_event(server_id, "instance.error"))
    assert f"image {image} could not be found" in failed["state"]["fault"]["message"]
    assert await bus.call("net.list_ports", {"device_id": server_id}) == []
    assert ("port.deleted", server_id) in port_events  # it had one, given back
    assert server_id not in {a["instance_uuid"] for a in await bus.call("scheduler.list_allocations")}
    assert [domain["uuid"] for domain in await Node.client(bus, host="node-1").list_domains()] == [first]


@pytest.mark.parametrize(
    ("server", "status", "says"),
    [
        ({"imageRef": "x", "flavorRef": "1"}, 400, "missing required field `name`"),
        ({"name": "a", "imageRef": "IMAGE", "flavorRef": "nope"}, 400, "Flavor nope could not be found"),
        ({"name": "a", "imageRef": "no-such-image", "flavorRef": "1"}, 400, "Image no-such-image could not"),
        ({"name": 12, "imageRef": "IMAGE", "flavorRef": "1"}, 400, "got `int` - at `$.server.name`"),
        ({"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "networks": "lots"}, 400, "networks"),
        (
            {"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "networks": [{"uuid": "nope"}]},
            400,
            "Network nope could not be found",
        ),
        ({"name": "a", "imageRef": "IMAGE", "flavorRef": "1", "colour": "red"}, 400, "colour"),
    ],
)
async def test_bad_server_requests_are_refused_and_change_nothing(
    api, events: EventStream, bus: Bus, server: dict[str, Any], status: int, says: str
) -> None:
    image = await default_image_id(api)
    body = {"server": {k: image if v == "IMAGE" else v for k, v in server.items()}}
    got_status, got = await api.post("/compute/v2.1/servers", body)
    assert got_status == status, got
    assert says in json.dumps(got)
    assert (await api.get("/compute/v2.1/servers"))[1] == {"servers": []}
    assert await bus.call("net.list_ports", {"device_owner": "compute:nova"}) == []
    assert await bus.call("scheduler.list_allocations") == []


async def test_console_output_refuses_bad_lengths_and_says_when_the_driver_keeps_no_log(
    api, events: EventStream
) -> None:
    server_id = await boot(api)
    await events.wait_for(is_event(server_id, "instance.active"))
    action = f"/compute/v2.1/servers/{server_id}/action"
    for argument in ({"length": -2}, {"length": "ten"}, {"length": True}, "all"):
        status, body = await api.post(action, {"os-getConsoleOutput": argument})
        assert status == 400, (argument, body)
    status, body = await api.post(action, {"os-getConsoleOutput": {"length": 10}})
    assert status == 409 and "keeps no console log" in body["conflictingRequest"]["message"]
    status, body = await api.post("/compute/v2.1/servers/nope/action", {"os-getConsoleOutput": {}})
    assert status == 404


async def test_bad_token_and_bad_json_are_refused(api, events: EventStream) -> None:
    status, body = await api.request(
        "POST", "/compute/v2.1/servers", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "JSON" in body["badRequest"]["message"]
    status, body = await api.get("/compute/v2.1/servers", headers={"X-Auth-Token": "forged"})
    assert status == 401
    api.headers = {}
    status, body = await api.get("/compute/v2.1/servers")
    assert status == 401 and "X-Auth-Token" in json.dumps(body)


async def test_volume_attaches_to_a_server_through_its_node_and_detaches(
    api, events: EventStream, bus: Bus
) -> None:
    server_id = await boot(api, "with-disk")
    await events.wait_for(is_event(server_id, "instance.active"))
    status, created = await api.post(
        f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1, "name": "d1"}}
    )
    assert status == 202
    volume_id = created["volume"]["id"]
    status, body = await api.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume_id}},
    )
    assert status == 200, body
    assert body["volumeAttachment"] == {
        "id": volume_id,
        "volumeId": volume_id,
        "serverId": server_id,
        "device": "/dev/vdb",
    }
    status, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "in-use"
    assert volume["volume"]["attachments"][0]["server_id"] == server_id
    domains = await Node.client(bus, host="node-1").list_domains()
    assert [d["uuid"] for d in domains] == [server_id]
    _, listed = await api.get(f"/compute/v2.1/servers/{server_id}/os-volume_attachments")
    assert [a["volumeId"] for a in listed["volumeAttachments"]] == [volume_id]
    status, body = await api.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume_id}},
    )
    assert status == 409, body
    status, _ = await api.delete(f"/compute/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}")
    assert status == 202
    _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "available" and volume["volume"]["attachments"] == []
    await api.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume_id}},
    )
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await events.wait_for(is_event(server_id, "instance.deleted"))
    _, volume = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}")
    assert volume["volume"]["status"] == "available"


async def test_pause_unpause_suspend_resume_follow_libvirt_events(api, events: EventStream, bus: Bus) -> None:
    server_id = await boot(api)
    seen = (await events.wait_for(is_event(server_id, "instance.active")))["seq"]
    action = f"/compute/v2.1/servers/{server_id}/action"
    for name, status in (
        ("pause", "PAUSED"),
        ("unpause", "ACTIVE"),
        ("suspend", "SUSPENDED"),
        ("resume", "ACTIVE"),
    ):
        assert (await api.post(action, {name: None}))[0] == 202
        wanted = is_event(server_id, f"instance.{status.lower()}")
        event = await events.wait_for(lambda e, after=seen, wanted=wanted: e["seq"] > after and wanted(e))
        seen = event["seq"]
        assert event["state"]["task_state"] is None
        assert (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] == status
    status, body = await api.post(action, {"resume": None})
    assert status == 409 and "resume" in body["conflictingRequest"]["message"]
    domains = await Node.client(bus, host="node-1").list_domains()
    assert [d["state"] for d in domains if d["uuid"] == server_id] == [1]
