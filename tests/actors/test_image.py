"""The image actor over the bus: records, chunked uploads and reads, visibility, paging, deletion."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.image import CHUNK_MAX, TINY_NAME, ImageActor, tiny_disk
from bus import Bus, Conflict, Context, Forbidden, InvalidRequest, NotFound, decode, request_scope

DEMO = Context("u-demo", "p-demo", ("member",))
OTHER = Context("u-other", "p-other", ("member",))
ADMIN = Context("u-admin", "p-admin", ("admin",))


async def call(bus: Bus, ctx: Context | None, method: str, **body: Any) -> Any:
    """``image.<method>`` as ``ctx`` (None: a service-internal call)."""
    with request_scope(context=ctx):
        return await bus.call(f"image.{method}", body)


async def read_all(bus: Bus, ctx: Context | None, image_id: str) -> bytes:
    data = bytearray()
    while chunk := await call(bus, ctx, "read_chunk", image_id=image_id, offset=len(data), length=1 << 30):
        assert len(chunk) <= CHUNK_MAX
        data += chunk
    return bytes(data)


@pytest.fixture
async def image_actor(start_actor, config) -> ImageActor:
    return await start_actor(ImageActor, config)


@pytest.fixture
async def events(bus: Bus) -> asyncio.Queue[dict[str, Any]]:
    """Image events as they are published."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        queue.put_nowait(decode(msg.data).body)

    await bus.subscribe(bus.subject("evt.image.>"), on_event)
    await bus.flush()
    return queue


async def next_event(queue: asyncio.Queue[dict[str, Any]], image_id: str) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(queue.get(), 10)
        if event["id"] == image_id:
            return event


async def test_default_image_is_active_public_and_visible_to_demo(bus: Bus, image_actor, config) -> None:
    images = await call(bus, DEMO, "list", name=TINY_NAME)
    assert len(images) == 1
    tiny = images[0]
    assert tiny["status"] == "active" and tiny["visibility"] == "public"
    assert (tiny["disk_format"], tiny["container_format"]) == ("raw", "bare")
    expected = tiny_disk()
    assert expected[510:512] == b"\x55\xaa"
    assert tiny["size"] == len(expected) == 1024 * 1024
    assert tiny["checksum"] == hashlib.md5(expected).hexdigest()
    assert tiny["os_hash_algo"] == "sha512"
    assert tiny["os_hash_value"] == hashlib.sha512(expected).hexdigest()
    assert await read_all(bus, DEMO, tiny["id"]) == expected
    assert (config.data_dir / "images" / tiny["id"]).read_bytes() == expected


async def test_default_image_is_registered_once(bus: Bus, start_actor, config) -> None:
    first = await start_actor(ImageActor, config)
    await first.stop()
    await start_actor(ImageActor, config)
    assert len(await call(bus, None, "list", name=TINY_NAME)) == 1


async def test_chunked_upload_then_read_gives_the_same_bytes_and_hashes(
    bus: Bus, image_actor, events
) -> None:
    payload = random.Random(7).randbytes(1_300_000)
    image = await call(bus, DEMO, "create", name="big", disk_format="qcow2", properties={"os_distro": "x"})
    assert image["status"] == "queued" and image["owner"] == "p-demo" and image["size"] is None
    assert image["properties"] == {"os_distro": "x"} and image["checksum"] is None
    created = await next_event(events, image["id"])
    assert (created["type"], created["project"]) == ("image.queued", "p-demo")
    offset = 0
    for start in range(0, len(payload), CHUNK_MAX):
        reply = await call(
            bus,
            DEMO,
            "upload_chunk",
            image_id=image["id"],
            offset=offset,
            data=payload[start : start + CHUNK_MAX],
        )
        offset = reply["size"]
        assert (await call(bus, DEMO, "get", image_id=image["id"]))["status"] == "saving"
    assert offset == len(payload)
    active = await call(bus, DEMO, "finish_upload", image_id=image["id"])
    assert active["status"] == "active" and active["size"] == len(payload)
    assert active["checksum"] == hashlib.md5(payload).hexdigest()
    assert active["os_hash_value"] == hashlib.sha512(payload).hexdigest()
    event = await next_event(events, image["id"])
    assert event["type"] == "image.active" and event["state"]["checksum"] == active["checksum"]
    assert await read_all(bus, DEMO, image["id"]) == payload


async def test_offsets_must_follow_the_bytes_received(bus: Bus, image_actor) -> None:
    image = await call(bus, DEMO, "create", name="gappy")
    with pytest.raises(Conflict):
        await call(bus, DEMO, "upload_chunk", image_id=image["id"], offset=10, data=b"x" * 10)
    both = await asyncio.gather(
        call(bus, DEMO, "upload_chunk", image_id=image["id"], offset=0, data=b"a" * 100),
        call(bus, DEMO, "upload_chunk", image_id=image["id"], offset=0, data=b"b" * 100),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in both) == ["Conflict", "dict"]
    with pytest.raises(Conflict):
        await call(bus, DEMO, "read_chunk", image_id=image["id"], offset=0, length=10)


async def test_upload_to_an_active_image_is_a_conflict_and_changes_nothing(bus: Bus, image_actor) -> None:
    image = await call(bus, DEMO, "create", name="done")
    active = await call(bus, DEMO, "upload", image_id=image["id"], data=b"original")
    for method, body in (("upload", {"data": b"other"}), ("upload_chunk", {"offset": 8, "data": b"more"})):
        with pytest.raises(Conflict):
            await call(bus, DEMO, method, image_id=image["id"], **body)
    with pytest.raises(Conflict):
        await call(bus, DEMO, "finish_upload", image_id=image["id"])
    assert await call(bus, DEMO, "get", image_id=image["id"]) == active
    assert await read_all(bus, DEMO, image["id"]) == b"original"


async def test_an_aborted_upload_can_start_again(bus: Bus, image_actor) -> None:
    image = await call(bus, DEMO, "create", name="retry")
    await call(bus, DEMO, "upload_chunk", image_id=image["id"], offset=0, data=b"half")
    queued = await call(bus, DEMO, "abort_upload", image_id=image["id"])
    assert queued["status"] == "queued"
    active = await call(bus, DEMO, "upload", image_id=image["id"], data=b"whole")
    assert active["size"] == 5 and active["checksum"] == hashlib.md5(b"whole").hexdigest()


async def test_another_projects_private_image_is_not_found(bus: Bus, image_actor) -> None:
    image = await call(bus, ADMIN, "create", name="secret")
    await call(bus, ADMIN, "upload", image_id=image["id"], data=b"classified")
    for method, body in (
        ("get", {}),
        ("read_chunk", {"offset": 0, "length": 10}),
        ("upload_chunk", {"offset": 0, "data": b"x"}),
        ("delete", {}),
    ):
        with pytest.raises(NotFound) as raised:
            await call(bus, DEMO, method, image_id=image["id"], **body)
        assert raised.value.message == f"image {image['id']} could not be found"
    assert image["id"] not in {i["id"] for i in await call(bus, DEMO, "list")}
    assert image["id"] in {i["id"] for i in await call(bus, ADMIN, "list")}
    assert (await call(bus, None, "get", image_id=image["id"]))["name"] == "secret"
    community = await call(bus, OTHER, "create", name="shared-ish", visibility="community")
    assert (await call(bus, DEMO, "get", image_id=community["id"]))["owner"] == "p-other"
    with pytest.raises(Forbidden):
        await call(bus, DEMO, "delete", image_id=community["id"])


async def test_only_admins_and_services_create_public_images(bus: Bus, image_actor) -> None:
    with pytest.raises(Forbidden):
        await call(bus, DEMO, "create", name="mine-for-all", visibility="public")
    assert await call(bus, DEMO, "list", name="mine-for-all") == []
    by_admin = await call(bus, ADMIN, "create", name="for-all", visibility="public")
    by_service = await call(bus, None, "create", name="also-for-all", visibility="public")
    assert by_service["owner"] is None
    seen = {i["id"] for i in await call(bus, DEMO, "list", visibility="public")}
    assert {by_admin["id"], by_service["id"]} <= seen


async def test_list_pages_with_limit_and_marker(bus: Bus, image_actor) -> None:
    for n in range(5):
        await call(bus, DEMO, "create", name=f"page-{n}")
    everything = await call(bus, DEMO, "list")
    assert len(everything) == 6  # and the default image
    keys = [(i["created_at"], i["id"]) for i in everything]
    assert keys == sorted(keys, reverse=True)
    pages, marker = [], None
    while page := await call(bus, DEMO, "list", limit=2, marker=marker):
        pages.append(page)
        marker = page[-1]["id"]
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [i["id"] for page in pages for i in page] == [i["id"] for i in everything]
    assert [i["status"] for i in await call(bus, DEMO, "list", status="active")] == ["active"]
    with pytest.raises(InvalidRequest):
        await call(bus, DEMO, "list", marker="00000000-0000-0000-0000-000000000000")
    hidden = await call(bus, OTHER, "create", name="elsewhere")
    with pytest.raises(InvalidRequest):
        await call(bus, DEMO, "list", marker=hidden["id"])
    victim = next(i for i in everything if i["name"] == "page-0")
    await call(bus, DEMO, "delete", image_id=victim["id"])
    assert len(await call(bus, DEMO, "list")) == 5


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "disk_format": "floppy"},
        {"name": "x", "container_format": "zip"},
        {"name": "x", "visibility": "everyone"},
        {"name": 42},
        {"name": "x", "min_disk": "big"},
        {"name": "x", "min_ram": -1},
        {"name": "x", "protected": "yes"},
        {"name": "x", "tags": "a,b"},
        {"name": "x", "properties": {"kernel_id": 7}},
        {"name": "x", "properties": {"status": "active"}},
        {"name": "x", "id": "not-a-uuid"},
        {"name": "x", "colour": "red"},
        {},
    ],
)
async def test_bad_create_input_is_refused_and_changes_nothing(bus: Bus, image_actor, body) -> None:
    before = await call(bus, None, "list")
    with pytest.raises(InvalidRequest):
        await call(bus, DEMO, "create", **body)
    assert await call(bus, None, "list") == before


async def test_bad_data_arguments_are_refused(bus: Bus, image_actor) -> None:
    image = await call(bus, DEMO, "create", name="typed")
    for body in (
        {"offset": 0, "data": "text"},
        {"offset": -1, "data": b"x"},
        {"offset": 0, "data": b"x" * (CHUNK_MAX + 1)},
    ):
        with pytest.raises(InvalidRequest):
            await call(bus, DEMO, "upload_chunk", image_id=image["id"], **body)
    with pytest.raises(InvalidRequest):
        await call(bus, DEMO, "list", limit="ten")
    assert (await call(bus, DEMO, "get", image_id=image["id"]))["status"] == "queued"


async def test_an_existing_id_is_a_conflict(bus: Bus, image_actor) -> None:
    image = await call(bus, DEMO, "create", name="first", id="7b3c6f0e-2f2a-4c43-9d59-4a1f0b8f1a11")
    assert image["id"] == "7b3c6f0e-2f2a-4c43-9d59-4a1f0b8f1a11"
    with pytest.raises(Conflict):
        await call(bus, OTHER, "create", name="second", id=image["id"])


async def test_delete_removes_the_file_but_not_a_protected_image(
    bus: Bus, image_actor, config, events
) -> None:
    image = await call(bus, DEMO, "create", name="doomed")
    await call(bus, DEMO, "upload", image_id=image["id"], data=b"bytes")
    path = config.data_dir / "images" / image["id"]
    assert path.exists()
    assert await call(bus, DEMO, "delete", image_id=image["id"]) is None
    assert not path.exists()
    assert [(await next_event(events, image["id"]))["type"] for _ in range(3)] == [
        "image.queued",
        "image.active",
        "image.deleted",
    ]
    with pytest.raises(NotFound):
        await call(bus, DEMO, "get", image_id=image["id"])
    kept = await call(bus, DEMO, "create", name="kept", protected=True)
    await call(bus, DEMO, "upload", image_id=kept["id"], data=b"bytes")
    with pytest.raises(Forbidden):
        await call(bus, DEMO, "delete", image_id=kept["id"])
    with pytest.raises(Forbidden):
        await call(bus, ADMIN, "delete", image_id=kept["id"])
    assert (config.data_dir / "images" / kept["id"]).exists()
    assert (await call(bus, DEMO, "get", image_id=kept["id"]))["status"] == "active"
