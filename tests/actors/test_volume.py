"""The volume actor: volume files, the attach protocol and its events, delete rules, isolation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.volume import VolumeActor
from bus import AiostackError, Bus, Conflict, Context, InvalidRequest, NotFound, decode, request_scope
from runtime.config import Config

GIB = 1 << 30
DEMO = Context("demo-user", "demo-project", ("member",), "demo-token")
OTHER = Context("other-user", "other-project", ("member",), "other-token")
ADMIN = Context("admin-user", "admin-project", ("admin",), "admin-token")
SERVER = "6f1c9a2e-0000-4000-8000-000000000001"


@pytest.fixture
async def volume_actor(start_actor, config: Config) -> VolumeActor:
    return await start_actor(VolumeActor, config)


@pytest.fixture
async def events(bus: Bus) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Every volume event, decoded, in arrival order."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        queue.put_nowait({"subject": msg.subject, **decode(msg.data).body})

    subscription = await bus.subscribe(bus.subject("evt.volume.>"), collect)
    await bus.flush()
    yield queue
    await subscription.unsubscribe()


async def call(bus: Bus, method: str, ctx: Context | None = DEMO, **body: Any) -> Any:
    """``volume.<method>`` acting for ``ctx`` (None: a service-internal call)."""
    with request_scope(context=ctx):
        return await bus.call(f"volume.{method}", body)


async def next_events(queue: asyncio.Queue[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(queue.get(), 10) for _ in range(count)]


async def attached(bus: Bus, size: int = 1, server: str = SERVER) -> dict[str, Any]:
    """A new volume of DEMO's, in-use by ``server``."""
    volume = await call(bus, "create", size=size)
    await call(bus, "reserve", volume_id=volume["id"], instance_uuid=server)
    return await call(
        bus, "attach_complete", volume_id=volume["id"], instance_uuid=server, host="node1", device="/dev/vdb"
    )


async def test_create_raw_makes_a_sparse_file_and_publishes_creating_then_available(
    bus: Bus, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await call(bus, "create", size=2, name="data", description="scratch", metadata={"k": "v"})
    assert volume["status"] == "available"
    assert (volume["size"], volume["name"], volume["description"]) == (2, "data", "scratch")
    assert (volume["user_id"], volume["project_id"]) == ("demo-user", "demo-project")
    assert volume["bootable"] == "false" and volume["encrypted"] is False and volume["multiattach"] is False
    assert volume["volume_type"] == "__DEFAULT__" and volume["availability_zone"] == "nova"
    assert volume["attachments"] == [] and volume["metadata"] == {"k": "v"}
    assert volume["created_at"].endswith("Z") and volume["fault"] is None
    path = Path(volume["path"])
    assert volume["format"] == "raw" and path.name == f"{volume['id']}.raw"
    stat = path.stat()
    assert stat.st_size == 2 * GIB
    assert stat.st_blocks * 512 < 1 << 20  # sparse: nothing written
    creating, available = await next_events(events, 2)
    assert [creating["type"], available["type"]] == ["volume.creating", "volume.available"]
    assert available["subject"] == bus.subject(f"evt.volume.demo-project.{volume['id']}")
    assert available["kind"] == "volume" and available["project"] == "demo-project"
    assert available["state"]["status"] == "available"
    assert "path" not in available["state"] and "format" not in available["state"]
    assert await call(bus, "get", volume_id=volume["id"]) == volume


async def test_create_qcow2_uses_qemu_img(bus: Bus, volume_actor: VolumeActor) -> None:
    volume = await call(bus, "create", size=3, volume_format="qcow2")
    assert volume["status"] == "available" and volume["path"].endswith(".qcow2")
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", volume["path"], stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    info = json.loads(stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 3 * GIB


async def test_qcow2_without_qemu_img_is_refused_and_creates_nothing(
    bus: Bus, volume_actor: VolumeActor, config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(InvalidRequest, match="qemu-img"):
        await call(bus, "create", size=1, volume_format="qcow2")
    assert await call(bus, "list") == []
    assert list((config.data_dir / "volumes").iterdir()) == []


@pytest.mark.parametrize(
    "body",
    [
        {"size": 0},
        {"size": "big"},
        {"size": 1025},
        {"size": True},
        {"size": 1.5},
        {"size": 1, "volume_format": "vmdk"},
        {"size": 1, "name": 5},
        {"size": 1, "metadata": "not-a-map"},
        {"size": 1, "metadata": {"k": 1}},
        {"name": "no size"},
    ],
)
async def test_bad_input_is_refused_and_creates_nothing(
    bus: Bus, volume_actor: VolumeActor, config: Config, body: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest):
        await call(bus, "create", **body)
    assert await call(bus, "list") == []
    assert list((config.data_dir / "volumes").iterdir()) == []


async def test_a_file_that_cannot_be_made_leaves_an_error_volume_with_a_fault(
    bus: Bus, volume_actor: VolumeActor, config: Config, events: asyncio.Queue[dict[str, Any]]
) -> None:
    pool = config.data_dir / "volumes"
    pool.rmdir()
    pool.write_text("not a directory")
    volume = await call(bus, "create", size=1)
    assert volume["status"] == "error"
    assert "could not create the volume file" in volume["fault"]
    assert str(pool) not in volume["fault"]
    assert [event["type"] for event in await next_events(events, 2)] == ["volume.creating", "volume.error"]
    pool.unlink()
    pool.mkdir()
    await call(bus, "delete", volume_id=volume["id"])
    with pytest.raises(NotFound):
        await call(bus, "get", volume_id=volume["id"])


async def test_attach_protocol_moves_status_and_publishes_each_step(
    bus: Bus, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await call(bus, "create", size=1)
    reserved = await call(bus, "reserve", volume_id=volume["id"], instance_uuid=SERVER)
    assert reserved["volume"]["status"] == "attaching"
    assert reserved["volume"]["attachments"] == []
    assert reserved["connection"] == {"path": volume["path"], "format": "raw"}
    in_use = await call(
        bus, "attach_complete", volume_id=volume["id"], instance_uuid=SERVER, host="node1", device="/dev/vdb"
    )
    assert in_use["status"] == "in-use"
    [attachment] = in_use["attachments"]
    assert attachment["id"] == attachment["volume_id"] == volume["id"]
    assert (attachment["server_id"], attachment["host_name"], attachment["device"]) == (
        SERVER,
        "node1",
        "/dev/vdb",
    )
    assert attachment["attachment_id"] and attachment["attached_at"].endswith("Z")
    [audit] = await call(bus, "list_attachments", ctx=None)
    assert audit["attach_status"] == "attached" and audit["project_id"] == "demo-project"
    detaching = await call(bus, "begin_detach", volume_id=volume["id"], instance_uuid=SERVER)
    assert detaching["volume"]["status"] == "detaching"
    assert detaching["volume"]["attachments"] == in_use["attachments"]
    assert detaching["connection"] == reserved["connection"]
    available = await call(bus, "detach_complete", volume_id=volume["id"], instance_uuid=SERVER)
    assert available["status"] == "available" and available["attachments"] == []
    assert await call(bus, "list_attachments", ctx=None) == []
    seen = await next_events(events, 6)
    assert [event["type"] for event in seen] == [
        "volume.creating",
        "volume.available",
        "volume.attaching",
        "volume.in-use",
        "volume.detaching",
        "volume.available",
    ]
    assert seen[3]["state"]["attachments"][0]["server_id"] == SERVER


async def test_reserve_of_a_busy_volume_conflicts(bus: Bus, volume_actor: VolumeActor) -> None:
    volume = await call(bus, "create", size=1)
    await call(bus, "reserve", volume_id=volume["id"], instance_uuid=SERVER)
    with pytest.raises(Conflict, match="is attaching"):
        await call(bus, "reserve", volume_id=volume["id"], instance_uuid="another-server")
    with pytest.raises(NotFound):
        await call(
            bus,
            "attach_complete",
            volume_id=volume["id"],
            instance_uuid="another-server",
            host="h",
            device="d",
        )
    await call(
        bus, "attach_complete", volume_id=volume["id"], instance_uuid=SERVER, host="h", device="/dev/vdb"
    )
    with pytest.raises(Conflict, match="is in-use"):
        await call(bus, "reserve", volume_id=volume["id"], instance_uuid=SERVER)
    with pytest.raises(InvalidRequest):
        await call(bus, "reserve", volume_id=volume["id"], instance_uuid="")


async def test_unreserve_and_roll_detaching_roll_back_and_are_idempotent(
    bus: Bus, volume_actor: VolumeActor
) -> None:
    volume = await call(bus, "create", size=1)
    await call(bus, "reserve", volume_id=volume["id"], instance_uuid=SERVER)
    rolled = await call(bus, "unreserve", volume_id=volume["id"])
    assert rolled["status"] == "available"
    assert await call(bus, "list_attachments", ctx=None) == []
    assert (await call(bus, "unreserve", volume_id=volume["id"]))["status"] == "available"

    in_use = await attached(bus)
    with pytest.raises(Conflict, match="in-use"):
        await call(bus, "unreserve", volume_id=in_use["id"])
    with pytest.raises(NotFound, match="not attached"):
        await call(bus, "begin_detach", volume_id=in_use["id"], instance_uuid="another-server")
    await call(bus, "begin_detach", volume_id=in_use["id"], instance_uuid=SERVER)
    with pytest.raises(Conflict, match="is detaching"):
        await call(bus, "begin_detach", volume_id=in_use["id"], instance_uuid=SERVER)
    back = await call(bus, "roll_detaching", volume_id=in_use["id"])
    assert back["status"] == "in-use" and back["attachments"] == in_use["attachments"]
    assert await call(bus, "roll_detaching", volume_id=in_use["id"]) == back
    with pytest.raises(Conflict, match="must be detaching"):
        await call(bus, "detach_complete", volume_id=in_use["id"], instance_uuid=SERVER)


async def test_detach_all_frees_every_volume_of_an_instance(bus: Bus, volume_actor: VolumeActor) -> None:
    in_use = await attached(bus)
    detaching = await attached(bus)
    await call(bus, "begin_detach", volume_id=detaching["id"], instance_uuid=SERVER)
    attaching = await call(bus, "create", size=1)
    await call(bus, "reserve", volume_id=attaching["id"], instance_uuid=SERVER)
    elsewhere = await attached(bus, server="another-server")
    result = await call(bus, "detach_all", ctx=None, instance_uuid=SERVER)
    assert sorted(result["detached"]) == sorted([in_use["id"], detaching["id"], attaching["id"]])
    for volume_id in result["detached"]:
        volume = await call(bus, "get", volume_id=volume_id)
        assert volume["status"] == "available" and volume["attachments"] == []
    assert (await call(bus, "get", volume_id=elsewhere["id"]))["status"] == "in-use"
    assert await call(bus, "detach_all", ctx=None, instance_uuid=SERVER) == {"detached": []}
    [remaining] = await call(bus, "list_attachments", ctx=None)
    assert remaining["server_id"] == "another-server"


async def test_delete_of_an_in_use_volume_conflicts_and_changes_nothing(
    bus: Bus, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await attached(bus)
    await next_events(events, 4)
    with pytest.raises(Conflict, match="Volume status must be available or error"):
        await call(bus, "delete", volume_id=volume["id"])
    assert await call(bus, "get", volume_id=volume["id"]) == volume
    assert Path(volume["path"]).exists()
    await call(bus, "begin_detach", volume_id=volume["id"], instance_uuid=SERVER)
    await call(bus, "detach_complete", volume_id=volume["id"], instance_uuid=SERVER)
    assert await call(bus, "delete", volume_id=volume["id"]) is None
    assert not Path(volume["path"]).exists()
    with pytest.raises(NotFound):
        await call(bus, "get", volume_id=volume["id"])
    assert await call(bus, "list") == []
    types = [event["type"] for event in await next_events(events, 4)]
    assert types == ["volume.detaching", "volume.available", "volume.deleting", "volume.deleted"]


async def test_a_file_that_cannot_be_removed_leaves_error_deleting_and_delete_can_be_retried(
    bus: Bus, volume_actor: VolumeActor
) -> None:
    volume = await call(bus, "create", size=1)
    path = Path(volume["path"])
    path.unlink()
    path.mkdir()
    (path / "stuck").write_text("x")
    with pytest.raises(AiostackError, match="could not remove the volume file"):
        await call(bus, "delete", volume_id=volume["id"])
    stuck = await call(bus, "get", volume_id=volume["id"])
    assert stuck["status"] == "error_deleting" and "could not remove" in stuck["fault"]
    shutil.rmtree(path)
    await call(bus, "delete", volume_id=volume["id"])
    assert await call(bus, "list") == []


async def test_projects_see_only_their_own_volumes(bus: Bus, volume_actor: VolumeActor) -> None:
    mine = await attached(bus)
    spare = await call(bus, "create", size=1)
    for method, body in (
        ("get", {"volume_id": spare["id"]}),
        ("update", {"volume_id": spare["id"], "name": "stolen"}),
        ("delete", {"volume_id": spare["id"]}),
        ("reserve", {"volume_id": spare["id"], "instance_uuid": "their-server"}),
        ("begin_detach", {"volume_id": mine["id"], "instance_uuid": SERVER}),
    ):
        with pytest.raises(NotFound, match="could not be found"):
            await call(bus, method, OTHER, **body)
    assert await call(bus, "list", OTHER) == []
    assert await call(bus, "list", OTHER, all_tenants=True) == []
    assert await call(bus, "list_attachments", OTHER) == []
    assert await call(bus, "detach_all", OTHER, instance_uuid=SERVER) == {"detached": []}
    assert await call(bus, "list", ADMIN) == []
    assert {v["id"] for v in await call(bus, "list", ADMIN, all_tenants=True)} == {mine["id"], spare["id"]}
    assert len(await call(bus, "list", None)) == 2
    assert (await call(bus, "get", volume_id=spare["id"]))["name"] == ""
    assert (await call(bus, "get", volume_id=mine["id"]))["status"] == "in-use"


async def test_update_and_list_filters(bus: Bus, volume_actor: VolumeActor) -> None:
    first = await call(bus, "create", size=1, name="first")
    second = await call(bus, "create", size=1, name="second")
    await attached(bus)
    renamed = await call(bus, "update", volume_id=first["id"], name="renamed", description="now described")
    assert (renamed["name"], renamed["description"]) == ("renamed", "now described")
    assert (await call(bus, "update", volume_id=first["id"], description="again"))["name"] == "renamed"
    with pytest.raises(InvalidRequest):
        await call(bus, "update", volume_id=first["id"], name="x" * 256)
    assert [v["id"] for v in await call(bus, "list", name="renamed")] == [first["id"]]
    assert {v["id"] for v in await call(bus, "list", status="available")} == {first["id"], second["id"]}
    assert len(await call(bus, "list")) == 3
    with pytest.raises(NotFound):
        await call(bus, "update", volume_id="no-such-volume", name="x")


async def test_volumes_survive_an_actor_restart(bus: Bus, start_actor, config: Config) -> None:
    first = await start_actor(VolumeActor, config)
    volume = await attached(bus)
    await first.stop()
    await start_actor(VolumeActor, config)
    assert await call(bus, "get", volume_id=volume["id"]) == volume
    assert os.path.getsize(volume["path"]) == GIB
