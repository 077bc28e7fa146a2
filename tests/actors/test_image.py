"""The image actor over the bus: records, chunked uploads and reads, visibility, paging, deletion,
and the arguments dispatch refuses before a handler runs."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from nats.aio.msg import Msg

from actors.image import TINY_ID, TINY_NAME, ImageActor, tiny_disk
from api.image import CHUNK_MAX, Change, Images, Sort
from bus import Bus, Conflict, Context, Forbidden, InvalidRequest, NotFound, decode, request_scope

DEMO = Context("u-demo", "p-demo", ("member",))
OTHER = Context("u-other", "p-other", ("member",))
ADMIN = Context("u-admin", "p-admin", ("admin",))

T = TypeVar("T")


async def acting(ctx: Context | None, call: Awaitable[T]) -> T:
    """Await a call of a typed client as ``ctx`` (None: a service-internal call)."""
    with request_scope(context=ctx):
        return await call


async def send_raw(bus: Bus, ctx: Context | None, method: str, **body: Any) -> Any:
    """A body the typed client would not send (wrong types, unknown or missing fields), as ``ctx``."""
    assert method in Images.api_methods
    with request_scope(context=ctx):
        return await bus.call(f"{Images.address}.{method}", body)


async def read_all(images: Images, ctx: Context | None, image_id: str) -> bytes:
    data = bytearray()
    while chunk := await acting(ctx, images.read_chunk(image_id=image_id, offset=len(data), length=1 << 30)):
        assert len(chunk) <= CHUNK_MAX
        data += chunk
    return bytes(data)


@pytest.fixture
def images(bus: Bus) -> Images:
    return Images.client(bus)


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


async def test_default_image_is_active_public_and_visible_to_demo(
    images: Images, image_actor, config
) -> None:
    found = await acting(DEMO, images.list(name=TINY_NAME))
    assert len(found) == 1
    tiny = found[0]
    assert tiny["status"] == "active" and tiny["visibility"] == "public"
    assert (tiny["disk_format"], tiny["container_format"]) == ("raw", "bare")
    expected = tiny_disk()
    assert expected[510:512] == b"\x55\xaa"
    assert tiny["size"] == len(expected) == 1024 * 1024
    assert tiny["checksum"] == hashlib.md5(expected).hexdigest()
    assert tiny["os_hash_algo"] == "sha512"
    assert tiny["os_hash_value"] == hashlib.sha512(expected).hexdigest()
    assert await read_all(images, DEMO, tiny["id"]) == expected


async def test_default_image_is_registered_once(images: Images, start_actor, config) -> None:
    first = await start_actor(ImageActor, config)
    await first.stop()
    await start_actor(ImageActor, config)
    assert len(await images.list(name=TINY_NAME)) == 1


async def test_chunked_upload_then_read_gives_the_same_bytes_and_hashes(
    images: Images, image_actor, events
) -> None:
    payload = random.Random(7).randbytes(1_300_000)
    image = await acting(DEMO, images.create(name="big", disk_format="qcow2", properties={"os_distro": "x"}))
    assert image["status"] == "queued" and image["owner"] == "p-demo" and image["size"] is None
    assert image["properties"] == {"os_distro": "x"} and image["checksum"] is None
    created = await next_event(events, image["id"])
    assert (created["type"], created["project"]) == ("image.queued", "p-demo")
    offset = 0
    for start in range(0, len(payload), CHUNK_MAX):
        chunk = payload[start : start + CHUNK_MAX]
        reply = await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=offset, data=chunk))
        offset = reply["size"]
        assert (await acting(DEMO, images.get(image_id=image["id"])))["status"] == "saving"
    assert offset == len(payload)
    active = await acting(DEMO, images.finish_upload(image_id=image["id"]))
    assert active["status"] == "active" and active["size"] == len(payload)
    assert active["checksum"] == hashlib.md5(payload).hexdigest()
    assert active["os_hash_value"] == hashlib.sha512(payload).hexdigest()
    event = await next_event(events, image["id"])
    assert event["type"] == "image.active" and event["state"]["checksum"] == active["checksum"]
    assert await read_all(images, DEMO, image["id"]) == payload


async def test_offsets_must_follow_the_bytes_received(images: Images, image_actor) -> None:
    image = await acting(DEMO, images.create(name="gappy"))
    with pytest.raises(Conflict):
        await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=10, data=b"x" * 10))
    both = await asyncio.gather(
        acting(DEMO, images.upload_chunk(image_id=image["id"], offset=0, data=b"a" * 100)),
        acting(DEMO, images.upload_chunk(image_id=image["id"], offset=0, data=b"b" * 100)),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in both) == ["Conflict", "dict"]
    with pytest.raises(Conflict):
        await acting(DEMO, images.read_chunk(image_id=image["id"], offset=0, length=10))


async def test_upload_to_an_active_image_is_a_conflict_and_changes_nothing(
    images: Images, image_actor
) -> None:
    image = await acting(DEMO, images.create(name="done"))
    active = await acting(DEMO, images.upload(image_id=image["id"], data=b"original"))
    with pytest.raises(Conflict):
        await acting(DEMO, images.upload(image_id=image["id"], data=b"other"))
    with pytest.raises(Conflict):
        await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=8, data=b"more"))
    with pytest.raises(Conflict):
        await acting(DEMO, images.finish_upload(image_id=image["id"]))
    assert await acting(DEMO, images.get(image_id=image["id"])) == active
    assert await read_all(images, DEMO, image["id"]) == b"original"


async def test_an_aborted_upload_can_start_again(images: Images, image_actor) -> None:
    image = await acting(DEMO, images.create(name="retry"))
    await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=0, data=b"half"))
    queued = await acting(DEMO, images.abort_upload(image_id=image["id"]))
    assert queued["status"] == "queued"
    active = await acting(DEMO, images.upload(image_id=image["id"], data=b"whole"))
    assert active["size"] == 5 and active["checksum"] == hashlib.md5(b"whole").hexdigest()


async def test_another_projects_private_image_is_not_found(images: Images, image_actor) -> None:
    image = await acting(ADMIN, images.create(name="secret"))
    image_id = image["id"]
    await acting(ADMIN, images.upload(image_id=image_id, data=b"classified"))
    for attempt in (
        images.get(image_id=image_id),
        images.read_chunk(image_id=image_id, offset=0, length=10),
        images.upload_chunk(image_id=image_id, offset=0, data=b"x"),
        images.delete(image_id=image_id),
    ):
        with pytest.raises(NotFound) as raised:
            await acting(DEMO, attempt)
        assert raised.value.message == f"image {image_id} could not be found"
    assert image_id not in {i["id"] for i in await acting(DEMO, images.list())}
    assert image_id in {i["id"] for i in await acting(ADMIN, images.list())}
    assert (await images.get(image_id=image_id))["name"] == "secret"
    community = await acting(OTHER, images.create(name="shared-ish", visibility="community"))
    assert (await acting(DEMO, images.get(image_id=community["id"])))["owner"] == "p-other"
    with pytest.raises(Forbidden):
        await acting(DEMO, images.delete(image_id=community["id"]))


async def test_only_admins_and_services_create_public_images(images: Images, image_actor) -> None:
    with pytest.raises(Forbidden):
        await acting(DEMO, images.create(name="mine-for-all", visibility="public"))
    assert await acting(DEMO, images.list(name="mine-for-all")) == []
    by_admin = await acting(ADMIN, images.create(name="for-all", visibility="public"))
    by_service = await images.create(name="also-for-all", visibility="public")
    assert by_service["owner"] is None
    seen = {i["id"] for i in await acting(DEMO, images.list(visibility="public"))}
    assert {by_admin["id"], by_service["id"]} <= seen


async def test_list_pages_with_limit_and_marker(images: Images, image_actor) -> None:
    for n in range(5):
        await acting(DEMO, images.create(name=f"page-{n}"))
    everything = await acting(DEMO, images.list())
    assert len(everything) == 6  # and the default image
    keys = [(i["created_at"], i["id"]) for i in everything]
    assert keys == sorted(keys, reverse=True)
    pages, marker = [], None
    while page := await acting(DEMO, images.list(limit=2, marker=marker)):
        pages.append(page)
        marker = page[-1]["id"]
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [i["id"] for page in pages for i in page] == [i["id"] for i in everything]
    assert [i["status"] for i in await acting(DEMO, images.list(status="active"))] == ["active"]
    with pytest.raises(InvalidRequest):
        await acting(DEMO, images.list(marker="00000000-0000-0000-0000-000000000000"))
    hidden = await acting(OTHER, images.create(name="elsewhere"))
    with pytest.raises(InvalidRequest):
        await acting(DEMO, images.list(marker=hidden["id"]))
    victim = next(i for i in everything if i["name"] == "page-0")
    await acting(DEMO, images.delete(image_id=victim["id"]))
    assert len(await acting(DEMO, images.list())) == 5


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ({"name": "x", "disk_format": "floppy"}, "Invalid enum value 'floppy' - at `$.disk_format`"),
        ({"name": "x", "container_format": "zip"}, "- at `$.container_format`"),
        ({"name": "x", "visibility": "everyone"}, "- at `$.visibility`"),
        ({"name": 42}, "Expected `str | null`, got `int` - at `$.name`"),
        ({"name": "x" * 256}, "- at `$.name`"),
        ({"name": "x", "min_disk": "big"}, "Expected `int`, got `str` - at `$.min_disk`"),
        ({"name": "x", "min_ram": -1}, "Expected `int` >= 0 - at `$.min_ram`"),
        ({"name": "x", "protected": "yes"}, "Expected `bool`, got `str` - at `$.protected`"),
        ({"name": "x", "tags": "a,b"}, "Expected `array | null`, got `str` - at `$.tags`"),
        ({"name": "x", "tags": ["ok", ""]}, "- at `$.tags[1]`"),
        ({"name": "x", "properties": {"kernel_id": 7}}, "Expected `str`, got `int` - at `$.properties[...]`"),
        ({"name": "x", "properties": {"status": "active"}}, "property names status are reserved"),
        ({"name": "x", "id": "not-a-uuid"}, "id must be a UUID"),
        ({"name": "x", "colour": "red"}, "Object contains unknown field `colour`"),
    ],
)
async def test_bad_create_input_is_refused_and_changes_nothing(
    bus: Bus, images: Images, image_actor, body: dict[str, Any], refusal: str
) -> None:
    before = await images.list()
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, DEMO, "create", **body)
    assert refusal in raised.value.message
    assert await images.list() == before


@pytest.mark.parametrize(
    ("method", "body", "refusal"),
    [
        ("upload_chunk", {"offset": -1, "data": b"x"}, "Expected `int` >= 0 - at `$.offset`"),
        ("upload_chunk", {"offset": 0, "data": b"x" * (CHUNK_MAX + 1)}, f"<= {CHUNK_MAX} - at `$.data`"),
        ("upload_chunk", {"offset": 0}, "Object missing required field `data`"),
        ("upload_chunk", {"offset": 0, "data": b"x", "length": 1}, "Object contains unknown field `length`"),
        ("upload", {"data": 7}, "Expected `bytes`, got `int` - at `$.data`"),
        ("upload", {"data": b"x" * (CHUNK_MAX + 1)}, "- at `$.data`"),
        ("read_chunk", {"offset": 0, "length": -1}, "Expected `int` >= 0 - at `$.length`"),
        ("read_chunk", {"offset": "0", "length": 1}, "Expected `int`, got `str` - at `$.offset`"),
        ("finish_upload", {"image": "x"}, "Object contains unknown field `image`"),
        ("abort_upload", {"image_id": ""}, "Expected `str` of length >= 1 - at `$.image_id`"),
        ("delete", {"image_id": 7}, "Expected `str`, got `int` - at `$.image_id`"),
        ("get", {"image_id": None}, "Expected `str`, got `null` - at `$.image_id`"),
    ],
)
async def test_bad_data_arguments_are_refused_and_change_nothing(
    bus: Bus, images: Images, image_actor, method: str, body: dict[str, Any], refusal: str
) -> None:
    image = await acting(DEMO, images.create(name="typed"))
    await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=0, data=b"half"))
    before = await images.get(image_id=image["id"])
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, DEMO, method, **{"image_id": image["id"], **body})
    assert raised.value.message.startswith(f"{Images.address}.{method}: ") and refusal in raised.value.message
    assert await images.get(image_id=image["id"]) == before
    more = images.upload_chunk(image_id=image["id"], offset=4, data=b"more")
    assert await acting(DEMO, more) == {"size": 8}


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ({"limit": "ten"}, "Expected `int | null`, got `str` - at `$.limit`"),
        ({"limit": -1}, "Expected `int` >= 0 - at `$.limit`"),
        ({"status": "bogus"}, "Invalid enum value 'bogus' - at `$.status`"),
        ({"visibility": "everyone"}, "Invalid enum value 'everyone' - at `$.visibility`"),
        ({"owners": "p-demo"}, "Object contains unknown field `owners`"),
        ({"sort": [{"key": "checksum", "direction": "asc"}]}, "Invalid enum value 'checksum'"),
        ({"tags": [""]}, "Expected `str` of length >= 1 - at `$.tags[0]`"),
    ],
)
async def test_bad_list_filters_are_refused(
    bus: Bus, image_actor, body: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await send_raw(bus, DEMO, "list", **body)
    assert refusal in raised.value.message


async def test_text_is_not_image_data(bus: Bus, images: Images, image_actor) -> None:
    image = await acting(DEMO, images.create(name="typed"))
    with pytest.raises(InvalidRequest, match=r"\$\.data"):
        await send_raw(bus, DEMO, "upload_chunk", image_id=image["id"], offset=0, data="text")


async def test_an_existing_id_is_a_conflict(images: Images, image_actor) -> None:
    image = await acting(DEMO, images.create(name="first", id="7b3c6f0e-2f2a-4c43-9d59-4a1f0b8f1a11"))
    assert image["id"] == "7b3c6f0e-2f2a-4c43-9d59-4a1f0b8f1a11"
    with pytest.raises(Conflict):
        await acting(OTHER, images.create(name="second", id=image["id"]))


async def kept_bytes(actor: ImageActor, image_id: str) -> int:
    row = await actor.store.fetchone(
        "SELECT COALESCE(SUM(size), 0) AS kept FROM image_chunks WHERE image_id = ?", (image_id,)
    )
    return int(row["kept"])


async def test_delete_drops_the_bytes_but_not_a_protected_image(
    images: Images, image_actor, config, events
) -> None:
    image = await acting(DEMO, images.create(name="doomed"))
    await acting(DEMO, images.upload(image_id=image["id"], data=b"bytes"))
    assert await kept_bytes(image_actor, image["id"]) == 5
    assert await acting(DEMO, images.delete(image_id=image["id"])) is None
    assert await kept_bytes(image_actor, image["id"]) == 0
    assert [(await next_event(events, image["id"]))["type"] for _ in range(3)] == [
        "image.queued",
        "image.active",
        "image.deleted",
    ]
    with pytest.raises(NotFound):
        await acting(DEMO, images.get(image_id=image["id"]))
    kept = await acting(DEMO, images.create(name="kept", protected=True))
    await acting(DEMO, images.upload(image_id=kept["id"], data=b"bytes"))
    with pytest.raises(Forbidden):
        await acting(DEMO, images.delete(image_id=kept["id"]))
    with pytest.raises(Forbidden):
        await acting(ADMIN, images.delete(image_id=kept["id"]))
    assert await kept_bytes(image_actor, kept["id"]) == 5
    assert (await acting(DEMO, images.get(image_id=kept["id"])))["status"] == "active"


async def test_bytes_uploaded_through_one_replica_are_read_through_another(
    images: Images, start_actor, config
) -> None:
    first = await start_actor(ImageActor, config)
    image = await acting(DEMO, images.create(name="shared"))
    data = random.Random(7).randbytes(2 * CHUNK_MAX + 11)
    for offset in range(0, len(data), CHUNK_MAX):
        chunk = data[offset : offset + CHUNK_MAX]
        await acting(DEMO, images.upload_chunk(image_id=image["id"], offset=offset, data=chunk))
    await acting(DEMO, images.finish_upload(image_id=image["id"]))
    await first.stop()
    await start_actor(ImageActor, config)  # another replica, the same store
    assert await read_all(images, DEMO, image["id"]) == data


async def test_an_image_file_of_an_earlier_version_is_moved_into_the_store(
    images: Images, start_actor, config
) -> None:
    first = await start_actor(ImageActor, config)
    image = await acting(DEMO, images.create(name="old"))
    await acting(DEMO, images.upload(image_id=image["id"], data=b"old bytes"))
    await first.store.execute("DELETE FROM image_chunks WHERE image_id = ?", (image["id"],))
    await first.stop()
    (config.data_dir / "images").mkdir(parents=True)
    (config.data_dir / "images" / image["id"]).write_bytes(b"old bytes")

    await start_actor(ImageActor, config)

    assert await read_all(images, DEMO, image["id"]) == b"old bytes"
    assert not (config.data_dir / "images").exists()


async def test_update_applies_every_change_or_none(images: Images, image_actor, events) -> None:
    image = await acting(DEMO, images.create(name="before", properties={"os_distro": "x", "gone": "y"}))
    await next_event(events, image["id"])
    changes: list[Change] = [
        {"op": "replace", "name": "name", "value": "after"},
        {"op": "add", "name": "tags", "value": ["a", "a", "b"]},
        {"op": "replace", "name": "os_distro", "value": "debian"},
        {"op": "remove", "name": "gone"},
    ]
    changed = await acting(DEMO, images.update(image_id=image["id"], changes=changes))
    assert (changed["name"], changed["tags"], changed["properties"]) == (
        "after",
        ["a", "b"],
        {"os_distro": "debian"},
    )
    event = await next_event(events, image["id"])
    assert event["type"] == "image.updated" and event["state"] == changed
    refused: list[tuple[list[Change], type[Exception]]] = [
        ([{"op": "replace", "name": "name", "value": "x"}, {"op": "remove", "name": "nope"}], Conflict),
        (
            [{"op": "replace", "name": "name", "value": "x"}, {"op": "replace", "name": "size", "value": 1}],
            Forbidden,
        ),
        ([{"op": "replace", "name": "name", "value": "x"}, {"op": "remove", "name": "name"}], Forbidden),
        ([{"op": "replace", "name": "min_ram", "value": "lots"}], InvalidRequest),
        ([{"op": "add", "name": "os_glance_x", "value": "x"}], Forbidden),
        ([{"op": "add", "name": "os_distro", "value": "again"}], Conflict),  # strict: it exists
    ]
    for bad, error in refused:
        with pytest.raises(error):
            await acting(DEMO, images.update(image_id=image["id"], changes=bad, strict_add=error is Conflict))
    assert await acting(DEMO, images.get(image_id=image["id"])) == changed
    with pytest.raises(Forbidden):
        await acting(
            OTHER, images.update(image_id=TINY_ID, changes=[{"op": "replace", "name": "name", "value": "x"}])
        )
    with pytest.raises(NotFound):
        await acting(OTHER, images.update(image_id=image["id"], changes=[]))


async def test_tags_are_added_once_and_removed(images: Images, image_actor) -> None:
    image = await acting(DEMO, images.create(name="tagged"))
    for _ in range(2):
        tagged = await acting(DEMO, images.add_tag(image_id=image["id"], tag="t"))
    assert tagged["tags"] == ["t"]
    assert (await acting(DEMO, images.remove_tag(image_id=image["id"], tag="t")))["tags"] == []
    with pytest.raises(NotFound):
        await acting(DEMO, images.remove_tag(image_id=image["id"], tag="t"))
    with pytest.raises(Forbidden):
        await acting(DEMO, images.add_tag(image_id=TINY_ID, tag="mine"))


async def test_list_filters_sorts_and_pages(images: Images, image_actor) -> None:
    for name, size, tags in (("b", 30, ["x"]), ("a", 10, ["x", "y"]), ("c", None, [])):
        image = await acting(DEMO, images.create(name=name, tags=tags))
        if size is not None:
            await acting(DEMO, images.upload(image_id=image["id"], data=b"." * size))
    hidden = await acting(DEMO, images.create(os_hidden=True))
    nameless = await acting(DEMO, images.list(os_hidden=True, sort=[{"key": "name", "direction": "asc"}]))
    assert nameless == [hidden] and hidden["name"] is None

    async def names(**filters: Any) -> list[str]:
        return [image["name"] for image in await acting(DEMO, images.list(**filters))]

    assert await names(tags=["x", "y"]) == ["a"]
    assert await names(tags=["x"], limit=1, sort=[{"key": "name", "direction": "asc"}]) == ["a"]
    assert await names(size_min=5, size_max=20) == ["a"]
    assert await names(owner="p-demo", sort=[{"key": "size", "direction": "asc"}]) == ["c", "a", "b"]
    assert await names(os_hidden=True) == [None] and hidden["os_hidden"] is True
    order: list[Sort] = [{"key": "status", "direction": "asc"}, {"key": "name", "direction": "desc"}]
    everything = await names(sort=order)
    assert everything == ["b", "aiostack-tiny", "a", "c"]
    pages, marker = [], None
    while page := await acting(DEMO, images.list(sort=order, limit=1, marker=marker)):
        pages += [image["name"] for image in page]
        marker = page[-1]["id"]
    assert pages == everything


async def test_a_deactivated_image_is_read_by_admins_and_services_only(
    images: Images, image_actor, events
) -> None:
    image = await acting(DEMO, images.create(name="paused"))
    with pytest.raises(Forbidden):
        await acting(DEMO, images.deactivate(image_id=image["id"]))
    await acting(DEMO, images.upload(image_id=image["id"], data=b"bytes"))
    deactivated = await acting(DEMO, images.deactivate(image_id=image["id"]))
    assert deactivated["status"] == "deactivated"
    assert [(await next_event(events, image["id"]))["type"] for _ in range(3)] == [
        "image.queued", "image.active", "image.deactivated",
    ]  # fmt: skip
    with pytest.raises(Forbidden):
        await acting(DEMO, images.read_chunk(image_id=image["id"], offset=0, length=5))
    for ctx in (ADMIN, None):
        assert await acting(ctx, images.read_chunk(image_id=image["id"], offset=0, length=5)) == b"bytes"
    with pytest.raises(Forbidden):
        await acting(OTHER, images.reactivate(image_id=TINY_ID))
    assert (await acting(DEMO, images.reactivate(image_id=image["id"])))["status"] == "active"
    assert await read_all(images, DEMO, image["id"]) == b"bytes"
