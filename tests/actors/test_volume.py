"""The volume actor: volume files, the attach protocol and its events, delete rules, isolation,
and the arguments dispatch refuses before a handler runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nats.aio.msg import Msg

from actors.image import TINY_ID, ImageActor, tiny_disk
from actors.volume import VolumeActor
from api.image import Images
from api.volume import Volume, Volumes
from bus import (
    AiostackError,
    Bus,
    Conflict,
    Context,
    EmbeddedNatsServer,
    Forbidden,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    decode,
    request_scope,
)
from deploy.postgres import LocalPostgres
from runtime.config import Config

GIB = 1 << 30
DEMO = Context("demo-user", "demo-project", ("member",), "demo-token")
OTHER = Context("other-user", "other-project", ("member",), "other-token")
ADMIN = Context("admin-user", "admin-project", ("admin",), "admin-token")
SERVER = "6f1c9a2e-0000-4000-8000-000000000001"

T = TypeVar("T")


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


@pytest.fixture
def volumes(bus: Bus) -> Volumes:
    return Volumes.client(bus)


async def acting(ctx: Context | None, call: Awaitable[T]) -> T:
    """Await a call of a typed client as ``ctx`` (None: a service-internal call)."""
    with request_scope(context=ctx):
        return await call


async def send_raw(bus: Bus, ctx: Context | None, method: str, **body: Any) -> Any:
    """A body the typed client would not send (wrong types, unknown or missing fields), as ``ctx``."""
    assert method in Volumes.api_methods
    with request_scope(context=ctx):
        return await bus.call(f"{Volumes.address}.{method}", body)


async def next_events(queue: asyncio.Queue[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(queue.get(), 10) for _ in range(count)]


async def attached(volumes: Volumes, size: int = 1, server: str = SERVER) -> Volume:
    """A new volume of DEMO's, in-use by ``server``."""
    volume = await acting(DEMO, volumes.create(size=size))
    await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=server))
    return await acting(
        DEMO,
        volumes.attach_complete(
            volume_id=volume["id"], instance_uuid=server, host="node1", device="/dev/vdb"
        ),
    )


async def test_create_raw_makes_a_sparse_file_and_publishes_creating_then_available(
    bus: Bus, volumes: Volumes, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await acting(
        DEMO, volumes.create(size=2, name="data", description="scratch", metadata={"k": "v"})
    )
    assert volume["status"] == "available"
    assert (volume["size"], volume["name"], volume["description"]) == (2, "data", "scratch")
    assert (volume["user_id"], volume["project_id"]) == ("demo-user", "demo-project")
    assert volume["bootable"] == "false" and volume["encrypted"] is False and volume["multiattach"] is False
    assert volume["volume_type"] == "__DEFAULT__" and volume["availability_zone"] == "nova"
    assert volume["attachments"] == [] and volume["metadata"] == {"k": "v"}
    assert volume["image_metadata"] is None
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
    assert await acting(DEMO, volumes.get(volume_id=volume["id"])) == volume


async def test_create_qcow2_uses_qemu_img(volumes: Volumes, volume_actor: VolumeActor) -> None:
    volume = await acting(DEMO, volumes.create(size=3, volume_format="qcow2"))
    assert volume["status"] == "available" and volume["path"].endswith(".qcow2")
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", volume["path"], stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    info = json.loads(stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 3 * GIB


async def test_qcow2_without_qemu_img_is_refused_and_creates_nothing(
    volumes: Volumes,
    volume_actor: VolumeActor,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(InvalidRequest, match="qemu-img"):
        await acting(DEMO, volumes.create(size=1, volume_format="qcow2"))
    assert await acting(DEMO, volumes.list()) == []
    assert list((config.data_dir / "volumes").iterdir()) == []


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ({"size": 0}, "Expected `int` >= 1 - at `$.size`"),
        ({"size": "big"}, "Expected `int | null`, got `str` - at `$.size`"),
        ({"size": 1025}, "Expected `int` <= 1024 - at `$.size`"),
        ({"size": True}, "Expected `int | null`, got `bool` - at `$.size`"),
        ({"size": 1.5}, "Expected `int | null`, got `float` - at `$.size`"),
        ({"size": None}, "a volume without a source needs a size"),
        ({"size": 1, "volume_format": "vmdk"}, "Invalid enum value 'vmdk' - at `$.volume_format`"),
        ({"size": 1, "name": 5}, "Expected `str`, got `int` - at `$.name`"),
        ({"size": 1, "description": "x" * 256}, "Expected `str` of length <= 255 - at `$.description`"),
        ({"size": 1, "metadata": "not-a-map"}, "Expected `object | null`, got `str` - at `$.metadata`"),
        ({"size": 1, "metadata": {"k": 1}}, "Expected `str`, got `int` - at `$.metadata[...]`"),
        ({"size": 1, "metadata": {"": "v"}}, "Expected `str` of length >= 1 - at `key` in `$.metadata`"),
        ({"size": 1, "bootable": True}, "Object contains unknown field `bootable`"),
        ({"name": "no size"}, "a volume without a source needs a size"),
        ({"size": 1, "volume_type": ""}, "Expected `str` of length >= 1 - at `$.volume_type`"),
    ],
)
async def test_bad_input_is_refused_and_creates_nothing(
    bus: Bus,
    volumes: Volumes,
    volume_actor: VolumeActor,
    config: Config,
    events: asyncio.Queue[dict[str, Any]],
    body: dict[str, Any],
    refusal: str,
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, DEMO, "create", **body)
    assert refusal in raised.value.message
    assert await acting(DEMO, volumes.list()) == []
    assert list((config.data_dir / "volumes").iterdir()) == []
    assert events.empty()


@pytest.mark.parametrize(
    ("method", "body", "refusal"),
    [
        ("reserve", {"instance_uuid": ""}, "Expected `str` of length >= 1 - at `$.instance_uuid`"),
        ("reserve", {}, "Object missing required field `instance_uuid`"),
        ("reserve", {"instance_uuid": SERVER, "host": "node1"}, "Object contains unknown field `host`"),
        ("attach_complete", {"instance_uuid": SERVER, "device": "/dev/vdb"}, "missing required field `host`"),
        (
            "attach_complete",
            {"instance_uuid": SERVER, "host": "no.dots", "device": "/dev/vdb"},
            "- at `$.host`",
        ),
        ("attach_complete", {"instance_uuid": SERVER, "host": "node1", "device": ""}, "- at `$.device`"),
        ("begin_detach", {"instance_uuid": 7}, "Expected `str`, got `int` - at `$.instance_uuid`"),
        ("unreserve", {"instance_uuid": SERVER}, "Object contains unknown field `instance_uuid`"),
        ("update", {"name": "x" * 256}, "Expected `str` of length <= 255 - at `$.name`"),
        ("update", {"size": 2}, "Object contains unknown field `size`"),
        ("delete", {"volume_id": ""}, "Expected `str` of length >= 1 - at `$.volume_id`"),
        ("get", {"volume_id": None}, "Expected `str`, got `null` - at `$.volume_id`"),
    ],
)
async def test_bad_arguments_are_refused_and_change_nothing(
    bus: Bus,
    volumes: Volumes,
    volume_actor: VolumeActor,
    events: asyncio.Queue[dict[str, Any]],
    method: str,
    body: dict[str, Any],
    refusal: str,
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    await next_events(events, 2)
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, DEMO, method, **{"volume_id": volume["id"], **body})
    assert (
        raised.value.message.startswith(f"{Volumes.address}.{method}: ") and refusal in raised.value.message
    )
    assert await acting(DEMO, volumes.get(volume_id=volume["id"])) == volume
    assert await acting(None, volumes.list_attachments()) == []
    assert events.empty()


@pytest.mark.parametrize(
    ("method", "body", "refusal"),
    [
        ("detach_all", {}, "Object missing required field `instance_uuid`"),
        ("detach_all", {"instance_uuid": ""}, "- at `$.instance_uuid`"),
        ("list", {"all_tenants": "yes"}, "Expected `bool`, got `str` - at `$.all_tenants`"),
        ("list", {"project_id": "other-project"}, "Object contains unknown field `project_id`"),
        ("list_attachments", {"server_id": SERVER}, "Object contains unknown field `server_id`"),
    ],
)
async def test_bad_arguments_without_a_volume_are_refused(
    bus: Bus, volumes: Volumes, volume_actor: VolumeActor, method: str, body: dict[str, Any], refusal: str
) -> None:
    in_use = await attached(volumes)
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, None, method, **body)
    assert (
        raised.value.message.startswith(f"{Volumes.address}.{method}: ") and refusal in raised.value.message
    )
    assert await acting(DEMO, volumes.get(volume_id=in_use["id"])) == in_use


async def test_a_file_that_cannot_be_made_leaves_an_error_volume_with_a_fault(
    volumes: Volumes, volume_actor: VolumeActor, config: Config, events: asyncio.Queue[dict[str, Any]]
) -> None:
    pool = config.data_dir / "volumes"
    pool.rmdir()
    pool.write_text("not a directory")
    volume = await acting(DEMO, volumes.create(size=1))
    assert volume["status"] == "error"
    assert "could not create the volume file" in volume["fault"]
    assert str(pool) not in volume["fault"]
    assert [event["type"] for event in await next_events(events, 2)] == ["volume.creating", "volume.error"]
    pool.unlink()
    pool.mkdir()
    await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.get(volume_id=volume["id"]))


async def test_attach_protocol_moves_status_and_publishes_each_step(
    volumes: Volumes, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    reserved = await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
    assert reserved["volume"]["status"] == "attaching"
    assert reserved["volume"]["attachments"] == []
    assert reserved["connection"] == {
        "transport": "file",
        "path": volume["path"],
        "format": "raw",
        "host": "",
        "port": 0,
        "export": "",
        "readonly": False,
    }
    in_use = await acting(
        DEMO,
        volumes.attach_complete(
            volume_id=volume["id"], instance_uuid=SERVER, host="node1", device="/dev/vdb"
        ),
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
    [audit] = await acting(None, volumes.list_attachments())
    assert audit["attach_status"] == "attached" and audit["project_id"] == "demo-project"
    assert await acting(None, volumes.list_attachments(server_ids=[SERVER])) == [audit]
    assert await acting(None, volumes.list_attachments(server_ids=["another-server"])) == []
    detaching = await acting(DEMO, volumes.begin_detach(volume_id=volume["id"], instance_uuid=SERVER))
    assert detaching["volume"]["status"] == "detaching"
    assert detaching["volume"]["attachments"] == in_use["attachments"]
    assert detaching["connection"] == reserved["connection"]
    available = await acting(DEMO, volumes.detach_complete(volume_id=volume["id"], instance_uuid=SERVER))
    assert available["status"] == "available" and available["attachments"] == []
    assert await acting(None, volumes.list_attachments()) == []
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


async def test_reserve_of_a_busy_volume_conflicts(volumes: Volumes, volume_actor: VolumeActor) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
    with pytest.raises(Conflict, match="is attaching"):
        await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid="another-server"))
    with pytest.raises(NotFound):
        await acting(
            DEMO,
            volumes.attach_complete(
                volume_id=volume["id"],
                instance_uuid="another-server",
                host="h",
                device="d",
            ),
        )
    await acting(
        DEMO,
        volumes.attach_complete(volume_id=volume["id"], instance_uuid=SERVER, host="h", device="/dev/vdb"),
    )
    with pytest.raises(Conflict, match="is in-use"):
        await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
    with pytest.raises(InvalidRequest):
        await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=""))


async def test_unreserve_and_roll_detaching_roll_back_and_are_idempotent(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
    rolled = await acting(DEMO, volumes.unreserve(volume_id=volume["id"]))
    assert rolled["status"] == "available"
    assert await acting(None, volumes.list_attachments()) == []
    assert (await acting(DEMO, volumes.unreserve(volume_id=volume["id"])))["status"] == "available"

    in_use = await attached(volumes)
    with pytest.raises(Conflict, match="in-use"):
        await acting(DEMO, volumes.unreserve(volume_id=in_use["id"]))
    with pytest.raises(NotFound, match="not attached"):
        await acting(DEMO, volumes.begin_detach(volume_id=in_use["id"], instance_uuid="another-server"))
    await acting(DEMO, volumes.begin_detach(volume_id=in_use["id"], instance_uuid=SERVER))
    with pytest.raises(Conflict, match="is detaching"):
        await acting(DEMO, volumes.begin_detach(volume_id=in_use["id"], instance_uuid=SERVER))
    back = await acting(DEMO, volumes.roll_detaching(volume_id=in_use["id"]))
    assert back["status"] == "in-use" and back["attachments"] == in_use["attachments"]
    assert await acting(DEMO, volumes.roll_detaching(volume_id=in_use["id"])) == back
    with pytest.raises(Conflict, match="must be detaching"):
        await acting(DEMO, volumes.detach_complete(volume_id=in_use["id"], instance_uuid=SERVER))


async def test_detach_all_frees_every_volume_of_an_instance(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    in_use = await attached(volumes)
    detaching = await attached(volumes)
    await acting(DEMO, volumes.begin_detach(volume_id=detaching["id"], instance_uuid=SERVER))
    attaching = await acting(DEMO, volumes.create(size=1))
    await acting(DEMO, volumes.reserve(volume_id=attaching["id"], instance_uuid=SERVER))
    elsewhere = await attached(volumes, server="another-server")
    result = await acting(None, volumes.detach_all(instance_uuid=SERVER))
    assert sorted(result["detached"]) == sorted([in_use["id"], detaching["id"], attaching["id"]])
    for volume_id in result["detached"]:
        volume = await acting(DEMO, volumes.get(volume_id=volume_id))
        assert volume["status"] == "available" and volume["attachments"] == []
    assert (await acting(DEMO, volumes.get(volume_id=elsewhere["id"])))["status"] == "in-use"
    assert await acting(None, volumes.detach_all(instance_uuid=SERVER)) == {"detached": []}
    [remaining] = await acting(None, volumes.list_attachments())
    assert remaining["server_id"] == "another-server"


async def test_delete_of_an_in_use_volume_conflicts_and_changes_nothing(
    volumes: Volumes, volume_actor: VolumeActor, events: asyncio.Queue[dict[str, Any]]
) -> None:
    volume = await attached(volumes)
    await next_events(events, 4)
    with pytest.raises(Conflict, match="Volume status must be available or error"):
        await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    assert await acting(DEMO, volumes.get(volume_id=volume["id"])) == volume
    assert Path(volume["path"]).exists()
    await acting(DEMO, volumes.begin_detach(volume_id=volume["id"], instance_uuid=SERVER))
    await acting(DEMO, volumes.detach_complete(volume_id=volume["id"], instance_uuid=SERVER))
    assert await acting(DEMO, volumes.delete(volume_id=volume["id"])) is None
    assert not Path(volume["path"]).exists()
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.get(volume_id=volume["id"]))
    assert await acting(DEMO, volumes.list()) == []
    types = [event["type"] for event in await next_events(events, 4)]
    assert types == ["volume.detaching", "volume.available", "volume.deleting", "volume.deleted"]


async def test_a_file_that_cannot_be_removed_leaves_error_deleting_and_delete_can_be_retried(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    path = Path(volume["path"])
    path.unlink()
    path.mkdir()
    (path / "stuck").write_text("x")
    with pytest.raises(AiostackError, match="could not remove the volume file"):
        await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    stuck = await acting(DEMO, volumes.get(volume_id=volume["id"]))
    assert stuck["status"] == "error_deleting" and "could not remove" in stuck["fault"]
    shutil.rmtree(path)
    await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    assert await acting(DEMO, volumes.list()) == []


async def test_projects_see_only_their_own_volumes(volumes: Volumes, volume_actor: VolumeActor) -> None:
    mine = await attached(volumes)
    spare = await acting(DEMO, volumes.create(size=1))
    for attempt in (
        volumes.get(volume_id=spare["id"]),
        volumes.update(volume_id=spare["id"], name="stolen"),
        volumes.delete(volume_id=spare["id"]),
        volumes.reserve(volume_id=spare["id"], instance_uuid="their-server"),
        volumes.begin_detach(volume_id=mine["id"], instance_uuid=SERVER),
    ):
        with pytest.raises(NotFound, match="could not be found"):
            await acting(OTHER, attempt)
    assert await acting(OTHER, volumes.list()) == []
    assert await acting(OTHER, volumes.list(all_tenants=True)) == []
    assert await acting(OTHER, volumes.list_attachments()) == []
    assert await acting(OTHER, volumes.detach_all(instance_uuid=SERVER)) == {"detached": []}
    assert await acting(ADMIN, volumes.list()) == []
    assert {v["id"] for v in await acting(ADMIN, volumes.list(all_tenants=True))} == {mine["id"], spare["id"]}
    assert len(await acting(None, volumes.list())) == 2
    assert (await acting(DEMO, volumes.get(volume_id=spare["id"])))["name"] == ""
    assert (await acting(DEMO, volumes.get(volume_id=mine["id"])))["status"] == "in-use"


async def test_update_and_list_filters(volumes: Volumes, volume_actor: VolumeActor) -> None:
    first = await acting(DEMO, volumes.create(size=1, name="first"))
    second = await acting(DEMO, volumes.create(size=1, name="second"))
    await attached(volumes)
    renamed = await acting(
        DEMO, volumes.update(volume_id=first["id"], name="renamed", description="now described")
    )
    assert (renamed["name"], renamed["description"]) == ("renamed", "now described")
    assert (await acting(DEMO, volumes.update(volume_id=first["id"], description="again")))[
        "name"
    ] == "renamed"
    with pytest.raises(InvalidRequest):
        await acting(DEMO, volumes.update(volume_id=first["id"], name="x" * 256))
    assert [v["id"] for v in await acting(DEMO, volumes.list(name="renamed"))] == [first["id"]]
    assert {v["id"] for v in await acting(DEMO, volumes.list(status="available"))} == {
        first["id"],
        second["id"],
    }
    assert len(await acting(DEMO, volumes.list())) == 3
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.update(volume_id="no-such-volume", name="x"))


async def test_volumes_survive_an_actor_restart(volumes: Volumes, start_actor, config: Config) -> None:
    first = await start_actor(VolumeActor, config)
    volume = await attached(volumes)
    await first.stop()
    await start_actor(VolumeActor, config)
    assert await acting(DEMO, volumes.get(volume_id=volume["id"])) == volume
    assert os.path.getsize(volume["path"]) == GIB


def free_port() -> int:
    """A TCP port on 127.0.0.1 no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _nbd_io(connection: dict[str, Any], *commands: str, readonly: bool = False) -> str:
    """``qemu-io`` on an attachment's NBD export, as a remote node's QEMU reaches it (``readonly``:
    opened read-only, as a read-only disk is)."""
    url = f"nbd://{connection['host']}:{connection['port']}/{connection['export']}"
    argv = ["qemu-io", *(["-r"] if readonly else []), "-f", "raw"]
    argv += [*(part for command in commands for part in ("-c", command)), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


async def test_with_an_nbd_address_each_attachment_gets_an_export_of_its_own_that_ends_with_it(
    volumes: Volumes, start_actor, config: Config
) -> None:
    """A volume host with an NBD address exports an attached volume for that attachment alone;
    the export survives the actor's restart (guests keep their disks) and goes with the attachment."""
    port = free_port()
    actor = await start_actor(VolumeActor, config, nbd_listen=f"127.0.0.1:{port}")
    try:
        volume = await acting(DEMO, volumes.create(size=1, volume_format="qcow2"))
        reserved = await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
        connection = dict(reserved["connection"])
        assert (connection["transport"], connection["host"], connection["port"]) == ("nbd", "127.0.0.1", port)
        assert connection["format"] == "raw" and connection["path"] == ""  # qcow2 decoded on the volume host
        assert "wrote 512/512" in _nbd_io(connection, "write -P 0x61 0 512")
        assert "read 512/512" in _nbd_io(connection, "read -P 0x61 0 512")
        guessed = {**connection, "export": "e" + "0" * 24}
        assert "read 512/512" not in _nbd_io(guessed, "read 0 512")  # another name: nothing

        await actor.stop()
        actor = await start_actor(VolumeActor, config, nbd_listen=f"127.0.0.1:{port}")
        assert "read 512/512" in _nbd_io(connection, "read -P 0x61 0 512")  # served on meanwhile

        await acting(
            DEMO,
            volumes.attach_complete(
                volume_id=volume["id"], instance_uuid=SERVER, host="n", device="/dev/vdb"
            ),
        )
        detaching = await acting(DEMO, volumes.begin_detach(volume_id=volume["id"], instance_uuid=SERVER))
        assert detaching["connection"] == reserved["connection"]
        await acting(DEMO, volumes.detach_complete(volume_id=volume["id"], instance_uuid=SERVER))
        assert "read 512/512" not in _nbd_io(connection, "read 0 512")  # the attachment's name ended
        again = await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
        assert again["connection"]["export"] != connection["export"]  # a new attachment, a new name
        assert "read 512/512" in _nbd_io(dict(again["connection"]), "read -P 0x61 0 512")  # the data kept
        await acting(DEMO, volumes.unreserve(volume_id=volume["id"]))
        assert "read 512/512" not in _nbd_io(dict(again["connection"]), "read 0 512")
    finally:
        assert actor.storage.nbd is not None
        await actor.storage.nbd.stop(daemon=True)


async def test_a_live_migrations_destination_gets_an_export_of_its_own_of_the_same_open_volume(
    volumes: Volumes, start_actor, config: Config
) -> None:
    """attach_arriving: a second attachment (for the destination) with its own export of the
    same block node, so both see one volume; the migration that ends on the destination keeps its
    attachment alone (the source's export ended), one that does not happen drops it (the
    source's untouched); every attachment gone, the volume's file is closed."""
    port = free_port()
    actor = await start_actor(VolumeActor, config, nbd_listen=f"127.0.0.1:{port}")
    assert actor.storage.nbd is not None
    try:
        volume = await attached(volumes, server=SERVER)  # on node1
        [source] = await actor.reattach_all(instance_uuid=SERVER, host="node1")
        assert "wrote 512/512" in _nbd_io(dict(source["connection"]), "write -P 0x61 0 512")

        [arriving] = await acting(DEMO, volumes.attach_arriving(instance_uuid=SERVER, host="node2"))
        assert await acting(DEMO, volumes.attach_arriving(instance_uuid=SERVER, host="node2")) == [arriving]
        assert (
            arriving["device"] == "/dev/vdb"
            and arriving["connection"]["export"] != source["connection"]["export"]
        )
        assert "read 512/512" in _nbd_io(dict(arriving["connection"]), "read -P 0x61 0 512")
        assert "wrote 512/512" in _nbd_io(dict(arriving["connection"]), "write -P 0x62 0 512")
        assert "read 512/512" in _nbd_io(dict(source["connection"]), "read -P 0x62 0 512")  # one volume
        shown = await acting(DEMO, volumes.get(volume_id=volume["id"]))
        assert [a["host_name"] for a in shown["attachments"]] == ["node1"]  # the arriving one not shown
        nodes = {export["node-name"] for export in await actor.storage.nbd._execute("query-block-exports")}
        assert len(nodes) == 1  # both exports on one block node: the file opened once

        assert await acting(DEMO, volumes.drop_arriving(instance_uuid=SERVER)) == [volume["id"]]
        assert "read 512/512" not in _nbd_io(dict(arriving["connection"]), "read 0 512")
        assert "read 512/512" in _nbd_io(dict(source["connection"]), "read -P 0x62 0 512")
        assert await actor.storage.nbd.exports() == {source["connection"]["export"]}

        [arriving] = await acting(DEMO, volumes.attach_arriving(instance_uuid=SERVER, host="node2"))
        [moved] = await actor.reattach_all(instance_uuid=SERVER, host="node2")  # it ended there
        assert moved["connection"] == arriving["connection"]
        assert "read 512/512" not in _nbd_io(dict(source["connection"]), "read 0 512")
        assert "read 512/512" in _nbd_io(dict(arriving["connection"]), "read -P 0x62 0 512")
        shown = await acting(DEMO, volumes.get(volume_id=volume["id"]))
        assert [a["host_name"] for a in shown["attachments"]] == ["node2"] and shown["status"] == "in-use"

        [back] = await acting(DEMO, volumes.attach_arriving(instance_uuid=SERVER, host="node1"))
        assert await actor.reattach_all(instance_uuid=SERVER, host="node2") == [moved]  # rolled back
        assert "read 512/512" not in _nbd_io(dict(back["connection"]), "read 0 512")
        await acting(DEMO, volumes.detach_all(instance_uuid=SERVER))
        assert await actor.storage.nbd.exports() == set()
        assert not await actor.storage.nbd._execute("query-named-block-nodes")  # the file closed
    finally:
        await actor.storage.nbd.stop(daemon=True)


@contextlib.asynccontextmanager
async def two_replicas(
    nats_server: EmbeddedNatsServer, database: str, tmp_path: Path
) -> AsyncIterator[list[Bus]]:
    """Two controllers' volume actors (storage hosts ``host-a`` and ``host-b``) over one database;
    the bus connection of each."""
    replicas, buses = [], []
    try:
        for host in ("host-a", "host-b"):
            bus = await Bus.connect(nats_server.url, name=f"volume-{host}")
            buses.append(bus)
            config = Config(data_dir=tmp_path / host, nats_url=nats_server.url, database=database)
            replica = VolumeActor(bus, config, host=host)
            await replica.start()
            replicas.append(replica)
        yield buses
    finally:
        for replica in replicas:
            await replica.stop()
        for bus in buses:
            await bus.close()


async def test_replicas_on_two_storage_hosts_share_the_records_and_each_keeps_its_own_files(
    nats_server: EmbeddedNatsServer, postgres: LocalPostgres, tmp_path: Path
) -> None:
    """Two controllers' volume actors over one PostgreSQL: either answers for any volume, a volume's
    file is made on the host whose replica created it, and removed there, whichever replica is asked."""
    database = await postgres.create_database("test_volume_replicas")
    async with two_replicas(nats_server, database, tmp_path) as buses:
        volumes = Volumes.client(buses[0])
        made = [await acting(DEMO, volumes.create(size=1)) for _ in range(12)]
        by_host = {host: [v for v in made if v["host"] == host] for host in ("host-a", "host-b")}
        assert by_host["host-a"] and by_host["host-b"], by_host  # the queue group spread them
        for volume in made:
            assert Path(volume["path"]).parent == tmp_path / volume["host"] / "volumes"
            assert os.path.getsize(volume["path"]) == GIB
        for volume in made:  # through the other replica's connection: routed to the file's host
            await acting(DEMO, Volumes.client(buses[1]).delete(volume_id=volume["id"]))
            assert not Path(volume["path"]).exists()
        assert await acting(DEMO, volumes.list()) == []


async def test_replicas_on_one_database_never_pass_a_quota_together(
    nats_server: EmbeddedNatsServer, postgres: LocalPostgres, tmp_path: Path
) -> None:
    """Two controllers' volume actors over one PostgreSQL, 30 creates at once (the queue group
    spreads them over both): the store's transaction lock spans replicas, so a limit of 5 makes
    exactly 5, and usage counts them."""
    database = await postgres.create_database("test_volume_quota_replicas")
    async with two_replicas(nats_server, database, tmp_path) as buses:
        clients = [Volumes.client(bus) for bus in buses]
        await acting(ADMIN, clients[0].set_quotas(project_id=DEMO.project_id, limits={"volumes": 5}))
        answers = await asyncio.gather(
            *(acting(DEMO, clients[n % 2].create(size=1)) for n in range(30)), return_exceptions=True
        )
        made = [answer for answer in answers if not isinstance(answer, BaseException)]
        refused = [answer for answer in answers if isinstance(answer, QuotaExceeded)]
        assert (len(made), len(refused)) == (5, 25), answers
        usage = await acting(DEMO, clients[1].get_quota_usage(project_id=DEMO.project_id))
        assert usage["volumes"] == {"limit": 5, "in_use": 5, "reserved": 0}
        assert usage["gigabytes"] == {"limit": -1, "in_use": 5, "reserved": 0}


async def test_quotas_are_read_by_their_project_set_by_admins_and_count_only_live_rows(
    volume_actor: VolumeActor, volumes: Volumes
) -> None:
    with pytest.raises(Forbidden):
        await acting(OTHER, volumes.get_quotas(project_id=DEMO.project_id))
    with pytest.raises(Forbidden):
        await acting(DEMO, volumes.set_quotas(project_id=DEMO.project_id, limits={"volumes": 100}))
    with pytest.raises(Forbidden):
        await acting(DEMO, volumes.delete_quotas(project_id=DEMO.project_id))
    limits = {"volumes": 2, "gigabytes": 10, "snapshots": 1, "per_volume_gigabytes": 5}
    assert await acting(ADMIN, volumes.set_quotas(project_id=DEMO.project_id, limits=limits)) == limits
    assert await acting(DEMO, volumes.get_quotas(project_id=DEMO.project_id)) == limits
    assert await acting(OTHER, volumes.get_quotas(project_id=OTHER.project_id)) == {
        "volumes": -1,
        "gigabytes": -1,
        "snapshots": -1,
        "per_volume_gigabytes": -1,
    }
    first = await acting(DEMO, volumes.create(size=3))
    clone = await acting(DEMO, volumes.create(source_volid=first["id"]))
    with pytest.raises(QuotaExceeded, match="VolumeLimitExceeded"):
        await acting(DEMO, volumes.create(size=1))
    await acting(None, volumes.create(size=1))  # a service's volume is no project's: not counted
    await acting(OTHER, volumes.create(size=1))  # another project's counts for that project
    snapshot = await acting(DEMO, volumes.create_snapshot(volume_id=first["id"]))
    with pytest.raises(QuotaExceeded, match="VolumeSizeExceedsAvailableQuota"):
        await acting(DEMO, volumes.extend(volume_id=clone["id"], new_size=5))  # 9 GiB held, 2 more
    usage = await acting(DEMO, volumes.get_quota_usage(project_id=DEMO.project_id))
    assert {name: used["in_use"] for name, used in usage.items()} == {
        "volumes": 2,
        "gigabytes": 9,
        "snapshots": 1,
        "per_volume_gigabytes": 0,
    }
    with pytest.raises(Conflict, match="Current usage is 9"):
        await acting(ADMIN, volumes.set_quotas(project_id=DEMO.project_id, limits={"gigabytes": 8}))
    await acting(DEMO, volumes.delete_snapshot(snapshot_id=snapshot["id"]))
    await acting(DEMO, volumes.delete(volume_id=clone["id"]))
    usage = await acting(DEMO, volumes.get_quota_usage(project_id=DEMO.project_id))
    assert (usage["volumes"]["in_use"], usage["gigabytes"]["in_use"], usage["snapshots"]["in_use"]) == (
        1,
        3,
        0,
    )
    await acting(ADMIN, volumes.delete_quotas(project_id=DEMO.project_id))
    assert await acting(DEMO, volumes.get_quotas(project_id=DEMO.project_id)) == await acting(
        DEMO, volumes.get_default_quotas()
    )


async def test_a_failed_extend_gives_back_the_gigabytes_it_reserved(
    volume_actor: VolumeActor, volumes: Volumes
) -> None:
    await acting(ADMIN, volumes.set_quotas(project_id=DEMO.project_id, limits={"gigabytes": 5}))
    volume = await acting(DEMO, volumes.create(size=2))
    os.unlink(volume["path"])  # the storage host cannot grow what is gone
    with pytest.raises(Conflict, match="could not be extended"):
        await acting(DEMO, volumes.extend(volume_id=volume["id"], new_size=4))
    after = await acting(DEMO, volumes.get(volume_id=volume["id"]))
    assert (after["status"], after["size"]) == ("available", 2)
    usage = await acting(DEMO, volumes.get_quota_usage(project_id=DEMO.project_id))
    assert usage["gigabytes"] == {"limit": 5, "in_use": 2, "reserved": 0}
    assert (await acting(DEMO, volumes.create(size=3)))["status"] == "available"  # nothing left held


# -- Cinder's API besides: metadata, actions, types, lists, snapshots and copies ----------------


async def test_metadata_merges_replaces_and_deletes_items(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    volume = await acting(DEMO, volumes.create(size=1, metadata={"a": "1"}))
    volume_id = volume["id"]
    merged = await acting(DEMO, volumes.set_metadata(volume_id=volume_id, metadata={"b": "2", "a": "0"}))
    assert merged == {"a": "0", "b": "2"}
    replaced = await acting(
        DEMO, volumes.set_metadata(volume_id=volume_id, metadata={"c": "3"}, replace=True)
    )
    assert replaced == {"c": "3"}
    await acting(DEMO, volumes.delete_metadata(volume_id=volume_id, key="c"))
    with pytest.raises(NotFound, match="no metadata with key c"):
        await acting(DEMO, volumes.delete_metadata(volume_id=volume_id, key="c"))
    updated = await acting(DEMO, volumes.update(volume_id=volume_id, metadata={"d": "4"}))
    assert updated["metadata"] == {"d": "4"} and updated["name"] == ""
    with pytest.raises(NotFound):
        await acting(OTHER, volumes.set_metadata(volume_id=volume_id, metadata={"x": "y"}))
    assert (await acting(DEMO, volumes.get(volume_id=volume_id)))["metadata"] == {"d": "4"}


async def test_bootable_and_readonly_flags_and_a_readonly_connection(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    assert volume["readonly"] is None
    assert (await acting(DEMO, volumes.set_bootable(volume_id=volume["id"], bootable=True)))[
        "bootable"
    ] == "true"
    assert (await acting(DEMO, volumes.set_readonly(volume_id=volume["id"], readonly=True)))[
        "readonly"
    ] is True
    reserved = await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
    assert reserved["connection"]["readonly"] is True
    with pytest.raises(Conflict, match="must be available to update readonly flag"):
        await acting(DEMO, volumes.set_readonly(volume_id=volume["id"], readonly=False))
    await acting(DEMO, volumes.unreserve(volume_id=volume["id"]))
    assert (await acting(DEMO, volumes.set_readonly(volume_id=volume["id"], readonly=False)))[
        "readonly"
    ] is False


@pytest.mark.parametrize("volume_format", ["raw", "qcow2"])
async def test_extend_grows_an_available_volume_file(
    volumes: Volumes, volume_actor: VolumeActor, volume_format: Any
) -> None:
    volume = await acting(DEMO, volumes.create(size=1, volume_format=volume_format))
    extended = await acting(DEMO, volumes.extend(volume_id=volume["id"], new_size=3))
    assert (extended["size"], extended["status"]) == (3, "available")
    if volume_format == "raw":
        assert Path(volume["path"]).stat().st_size == 3 * GIB
    else:
        process = await asyncio.create_subprocess_exec(
            "qemu-img", "info", "--output=json", volume["path"], stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await process.communicate()
        assert json.loads(stdout)["virtual-size"] == 3 * GIB
    with pytest.raises(Conflict, match="must be greater than current size"):
        await acting(DEMO, volumes.extend(volume_id=volume["id"], new_size=3))
    in_use = await attached(volumes)
    with pytest.raises(Conflict, match="must be available to extend"):
        await acting(DEMO, volumes.extend(volume_id=in_use["id"], new_size=2))
    assert (await acting(DEMO, volumes.get(volume_id=in_use["id"])))["size"] == 1


async def test_user_reserve_and_detaching_marks_move_status_as_cinder(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    assert (await acting(DEMO, volumes.reserve_volume(volume_id=volume["id"])))["status"] == "attaching"
    with pytest.raises(Conflict, match="must be available to be reserved"):
        await acting(DEMO, volumes.reserve_volume(volume_id=volume["id"]))
    assert (await acting(DEMO, volumes.unreserve(volume_id=volume["id"])))["status"] == "available"
    with pytest.raises(Conflict, match="must be in-use to begin detaching"):
        await acting(DEMO, volumes.begin_detaching(volume_id=volume["id"]))
    in_use = await attached(volumes)
    detaching = await acting(DEMO, volumes.begin_detaching(volume_id=in_use["id"]))
    assert detaching["status"] == "detaching" and len(detaching["attachments"]) == 1
    assert (await acting(DEMO, volumes.roll_detaching(volume_id=in_use["id"])))["status"] == "in-use"
    [record] = await acting(None, volumes.list_attachments())
    assert record["attach_status"] == "attached"


async def test_volume_types_default_admin_made_and_taken_by_create(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    [default] = await acting(DEMO, volumes.list_types())
    assert (default["name"], default["is_public"]) == ("__DEFAULT__", True)
    with pytest.raises(AiostackError, match="Policy doesn't allow"):
        await acting(DEMO, volumes.create_type(name="fast"))
    fast = await acting(ADMIN, volumes.create_type(name="fast", description="ssd", extra_specs={"k": "v"}))
    with pytest.raises(Conflict):
        await acting(ADMIN, volumes.create_type(name="fast"))
    assert [t["name"] for t in await acting(DEMO, volumes.list_types())] == ["__DEFAULT__", "fast"]
    assert await acting(DEMO, volumes.get_type(type_id="fast")) == fast
    by_id = await acting(DEMO, volumes.create(size=1, volume_type=fast["id"]))
    assert by_id["volume_type"] == "fast"
    with pytest.raises(NotFound, match="Volume type nope could not be found"):
        await acting(DEMO, volumes.create(size=1, volume_type="nope"))
    with pytest.raises(Conflict, match="volumes present with the type"):
        await acting(ADMIN, volumes.delete_type(type_id=fast["id"]))
    with pytest.raises(Conflict, match="Default volume type can not be deleted"):
        await acting(ADMIN, volumes.delete_type(type_id=default["id"]))
    await acting(DEMO, volumes.delete(volume_id=by_id["id"]))
    await acting(ADMIN, volumes.delete_type(type_id=fast["id"]))
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.get_type(type_id=fast["id"]))
    assert len(await acting(DEMO, volumes.list())) == 0


async def test_list_filters_sorts_and_pages(volumes: Volumes, volume_actor: VolumeActor) -> None:
    made = [
        await acting(DEMO, volumes.create(size=size, name=f"v{size}", metadata={"n": str(size % 2)}))
        for size in (1, 2, 3)
    ]
    await acting(DEMO, volumes.set_bootable(volume_id=made[0]["id"], bootable=True))
    newest_first = [volume["id"] for volume in await acting(DEMO, volumes.list())]
    assert sorted(newest_first) == sorted(volume["id"] for volume in made)
    odd = await acting(DEMO, volumes.list(metadata={"n": "1"}))
    assert sorted(v["name"] for v in odd) == ["v1", "v3"]
    assert [v["name"] for v in await acting(DEMO, volumes.list(bootable=True))] == ["v1"]
    assert await acting(DEMO, volumes.list(availability_zone="elsewhere")) == []
    by_size = await acting(DEMO, volumes.list(sort=[{"key": "size", "direction": "asc"}]))
    assert [v["size"] for v in by_size] == [1, 2, 3]
    first = await acting(DEMO, volumes.list(sort=[{"key": "size", "direction": "desc"}], limit=2))
    assert [v["size"] for v in first] == [3, 2]
    rest = await acting(
        DEMO, volumes.list(sort=[{"key": "size", "direction": "desc"}], limit=2, marker=first[-1]["id"])
    )
    assert [v["size"] for v in rest] == [1]
    assert [v["id"] for v in await acting(DEMO, volumes.list(offset=1, limit=1))] == newest_first[1:2]
    with pytest.raises(NotFound, match="Marker"):
        await acting(DEMO, volumes.list(marker=SERVER))


def _write_at_start(path: str, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.write(data)


async def test_snapshots_copy_the_file_and_volumes_are_made_from_them_and_from_volumes(
    volumes: Volumes, volume_actor: VolumeActor, config: Config
) -> None:
    source = await acting(DEMO, volumes.create(size=1, name="source"))
    await asyncio.to_thread(_write_at_start, source["path"], b"written before the snapshot")
    await acting(DEMO, volumes.set_bootable(volume_id=source["id"], bootable=True))
    snapshot = await acting(
        DEMO, volumes.create_snapshot(volume_id=source["id"], name="s", metadata={"k": "v"})
    )
    assert (snapshot["status"], snapshot["size"], snapshot["volume_id"]) == ("available", 1, source["id"])
    with pytest.raises(NotFound):
        await acting(OTHER, volumes.get_snapshot(snapshot_id=snapshot["id"]))
    with pytest.raises(Conflict, match="still has 1 dependent snapshots"):
        await acting(DEMO, volumes.delete(volume_id=source["id"]))
    from_snapshot = await acting(DEMO, volumes.create(snapshot_id=snapshot["id"], size=2))
    clone = await acting(DEMO, volumes.create(source_volid=source["id"]))
    for copy, size in ((from_snapshot, 2), (clone, 1)):
        assert (copy["status"], copy["size"]) == ("available", size)
        assert Path(copy["path"]).read_bytes()[:27] == b"written before the snapshot"
        assert Path(copy["path"]).stat().st_size == size * GIB
    assert (from_snapshot["snapshot_id"], clone["source_volid"]) == (snapshot["id"], source["id"])
    assert (from_snapshot["bootable"], clone["bootable"]) == ("true", "true")  # as their source
    with pytest.raises(Conflict, match="smaller than its source's"):
        await acting(DEMO, volumes.create(source_volid=from_snapshot["id"], size=1))
    in_use = await attached(volumes)
    with pytest.raises(Conflict, match="must be available to be snapshotted"):
        await acting(DEMO, volumes.create_snapshot(volume_id=in_use["id"]))
    with pytest.raises(Conflict, match="must be available"):
        await acting(DEMO, volumes.create(source_volid=in_use["id"]))
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.create(snapshot_id=SERVER))
    renamed = await acting(
        DEMO,
        volumes.update_snapshot(
            snapshot_id=snapshot["id"], name="t", metadata={"a": "b"}, replace_metadata=False
        ),
    )
    assert (renamed["name"], renamed["metadata"]) == ("t", {"k": "v", "a": "b"})
    assert [s["id"] for s in await acting(DEMO, volumes.list_snapshots(volume_id=source["id"]))] == [
        snapshot["id"]
    ]
    assert await acting(DEMO, volumes.list_snapshots(name="s")) == []
    await acting(DEMO, volumes.delete_snapshot(snapshot_id=snapshot["id"]))
    for volume in (source, from_snapshot, clone):
        await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    assert sorted(path.name for path in (config.data_dir / "volumes").iterdir()) == [f"{in_use['id']}.raw"]


@pytest.mark.parametrize("volume_format", ["raw", "qcow2"])
async def test_a_volume_from_an_image_holds_its_bytes_and_is_bootable(
    start_actor: Any,
    config: Config,
    bus: Bus,
    volumes: Volumes,
    volume_actor: VolumeActor,
    volume_format: Any,
) -> None:
    await start_actor(ImageActor, config)
    images = Images.client(bus)
    volume = await acting(DEMO, volumes.create(size=1, image_id=TINY_ID, volume_format=volume_format))
    assert (volume["status"], volume["bootable"], volume["format"]) == ("available", "true", volume_format)
    image_metadata = volume["image_metadata"] or {}
    assert (image_metadata["image_id"], image_metadata["disk_format"]) == (TINY_ID, "raw")
    raw = config.data_dir / "check.raw"
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "convert", "-f", volume_format, "-O", "raw", volume["path"], str(raw)
    )
    assert await process.wait() == 0
    data = await asyncio.to_thread(raw.read_bytes)
    raw.unlink()
    assert len(data) == GIB and data[: len(tiny_disk())] == tiny_disk()
    private = await acting(OTHER, images.create(name="theirs", disk_format="raw"))
    await acting(OTHER, images.upload(image_id=private["id"], data=b"x" * 512))
    with pytest.raises(NotFound):
        await acting(DEMO, volumes.create(size=1, image_id=private["id"]))
    big = await acting(DEMO, images.create(name="big", disk_format="raw", min_disk=2))
    await acting(DEMO, images.upload(image_id=big["id"], data=b"x" * 512))
    with pytest.raises(Conflict, match="minDisk"):
        await acting(DEMO, volumes.create(size=1, image_id=big["id"]))
    corrupt = await acting(DEMO, images.create(name="not-qcow2", disk_format="qcow2"))
    await acting(DEMO, images.upload(image_id=corrupt["id"], data=b"x" * 512))
    failed = await acting(DEMO, volumes.create(size=1, image_id=corrupt["id"]))
    assert failed["status"] == "error" and "qemu-img convert" in (failed["fault"] or "")
    with pytest.raises(InvalidRequest, match="one of a snapshot, a volume or an image"):
        await acting(DEMO, volumes.create(size=1, image_id=TINY_ID, source_volid=volume["id"]))
    await acting(DEMO, volumes.delete(volume_id=failed["id"]))
    await acting(DEMO, volumes.delete(volume_id=volume["id"]))
    assert sorted(path.name for path in (config.data_dir / "volumes").iterdir()) == []


async def test_a_volume_being_copied_is_not_attached_extended_or_deleted(
    volumes: Volumes, volume_actor: VolumeActor
) -> None:
    """While a snapshot or a volume is being copied from a file (as ``creating`` says), what would
    write to the file or remove it is refused; so is deleting a snapshot a volume is made from."""
    source = await acting(DEMO, volumes.create(size=1))
    snapshot = await acting(DEMO, volumes.create_snapshot(volume_id=source["id"]))
    copy = await acting(DEMO, volumes.create(snapshot_id=snapshot["id"]))
    store = volume_actor.store
    await store.execute("UPDATE snapshots SET status = 'creating' WHERE id = ?", (snapshot["id"],))
    await store.execute("UPDATE volumes SET status = 'creating' WHERE id = ?", (copy["id"],))
    for refused in (
        volumes.reserve(volume_id=source["id"], instance_uuid=SERVER),
        volumes.reserve_volume(volume_id=source["id"]),
        volumes.extend(volume_id=source["id"], new_size=2),
        volumes.delete(volume_id=source["id"]),
    ):
        with pytest.raises(Conflict):
            await acting(DEMO, refused)
    await store.execute("UPDATE snapshots SET status = 'available' WHERE id = ?", (snapshot["id"],))
    with pytest.raises(Conflict, match="volumes are being made from snapshot"):
        await acting(DEMO, volumes.delete_snapshot(snapshot_id=snapshot["id"]))
    await store.execute("UPDATE volumes SET status = 'available' WHERE id = ?", (copy["id"],))
    await acting(DEMO, volumes.delete_snapshot(snapshot_id=snapshot["id"]))
    assert (await acting(DEMO, volumes.get(volume_id=source["id"])))["status"] == "available"


async def test_a_readonly_volume_is_exported_readonly_and_stays_so_across_a_restart(
    volumes: Volumes, start_actor: Any, config: Config
) -> None:
    port = free_port()
    actor = await start_actor(VolumeActor, config, nbd_listen=f"127.0.0.1:{port}")
    try:
        volume = await acting(DEMO, volumes.create(size=1, volume_format="qcow2"))
        await acting(DEMO, volumes.set_readonly(volume_id=volume["id"], readonly=True))
        reserved = await acting(DEMO, volumes.reserve(volume_id=volume["id"], instance_uuid=SERVER))
        connection = dict(reserved["connection"])
        assert connection["readonly"] is True
        assert "read 512/512" in _nbd_io(connection, "read 0 512", readonly=True)
        assert "Permission denied" in _nbd_io(connection, "write -P 0x61 0 512")
        await actor.stop()
        actor = await start_actor(VolumeActor, config, nbd_listen=f"127.0.0.1:{port}")
        assert "read 512/512" in _nbd_io(connection, "read 0 512", readonly=True)
        assert "Permission denied" in _nbd_io(connection, "write -P 0x61 0 512")
        await acting(DEMO, volumes.unreserve(volume_id=volume["id"]))
    finally:
        assert actor.storage.nbd is not None
        await actor.storage.nbd.stop(daemon=True)


async def test_snapshot_lists_sort_and_page(volumes: Volumes, volume_actor: VolumeActor) -> None:
    volume = await acting(DEMO, volumes.create(size=1))
    made = [
        await acting(DEMO, volumes.create_snapshot(volume_id=volume["id"], name=f"s{n}")) for n in range(3)
    ]
    by_name = await acting(DEMO, volumes.list_snapshots(sort=[{"key": "name", "direction": "asc"}]))
    assert [snapshot["name"] for snapshot in by_name] == ["s0", "s1", "s2"]
    page = await acting(
        DEMO,
        volumes.list_snapshots(sort=[{"key": "name", "direction": "desc"}], limit=1, marker=made[2]["id"]),
    )
    assert [snapshot["name"] for snapshot in page] == ["s1"]
    assert await acting(DEMO, volumes.list_snapshots(limit=0)) == []
    with pytest.raises(InvalidRequest, match="not sorted by bootable"):
        await acting(DEMO, volumes.list_snapshots(sort=[{"key": "bootable", "direction": "asc"}]))
    with pytest.raises(NotFound, match="Marker"):
        await acting(DEMO, volumes.list_snapshots(marker=volume["id"]))
