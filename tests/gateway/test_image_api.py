"""The Glance v2 routes over real HTTP: records, streamed uploads and downloads, visibility, errors."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.msg import Msg

from actors.identity.actor import IdentityActor
from actors.image import TINY_NAME, ImageActor
from bus import Bus, decode
from gateway.image import CHUNK

OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def image_service(start_actor, config) -> ImageActor:
    """The identity actor (for logins) and the image actor."""
    await start_actor(IdentityActor, config)
    return await start_actor(ImageActor, config)


async def watch(bus: Bus, address: str) -> list[Msg]:
    """Copies of the requests sent to ``address`` (a plain subscription beside the actor's queue group)."""
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await bus.subscribe(bus.rpc_subject(address), record)
    await bus.flush()
    return seen


async def wait_for(seen: list[Msg], count: int = 1) -> None:
    """Until ``count`` messages were seen (bounded by tries, not by a time)."""
    for _ in range(1000):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"saw {len(seen)} of {count} messages")


async def download(api, image_id: str) -> tuple[int, bytes, dict[str, str]]:
    url = f"{api.base_url}/image/v2/images/{image_id}/file"
    async with api.session.get(url, headers=api.headers) as response:
        return response.status, await response.read(), dict(response.headers)


async def create(api, **body: Any) -> dict[str, Any]:
    status, image = await api.post("/image/v2/images", body)
    assert status == 201, image
    return image


async def test_versions_document_needs_no_token(api, image_service) -> None:
    status, body = await api.get("/image")
    assert status == 300
    assert body["versions"][0]["links"][0]["href"].endswith("/image/v2/")
    status, body = await api.get("/image/v2/images")
    assert status == 401 and body["error"]["code"] == 401


async def test_streamed_upload_and_download_give_the_same_bytes(api, image_service, bus: Bus) -> None:
    await api.login()
    chunks = await watch(bus, "image.upload_chunk")
    payload = random.Random(11).randbytes(1_300_000)
    image = await create(api, name="big", disk_format="qcow2", container_format="bare", os_distro="cirros")
    assert image["status"] == "queued" and image["os_distro"] == "cirros" and "properties" not in image
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file" and image["schema"] == "/v2/schemas/image"
    status, _ = await api.request("PUT", f"/image/v2/images/{image['id']}/file", data=payload, headers=OCTETS)
    assert status == 204
    await wait_for(chunks, 3)
    assert [len(decode(msg.data).body["data"]) for msg in chunks] == [CHUNK, CHUNK, len(payload) - 2 * CHUNK]
    status, shown = await api.get(f"/image/v2/images/{image['id']}")
    assert status == 200 and shown["status"] == "active" and shown["size"] == len(payload)
    assert shown["checksum"] == hashlib.md5(payload).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(payload).hexdigest()
    status, data, headers = await download(api, image["id"])
    assert status == 200 and data == payload
    assert headers["Content-MD5"] == shown["checksum"]
    assert headers["Content-Type"] == "application/octet-stream"


async def test_download_of_an_image_without_data_is_204(api, image_service) -> None:
    await api.login()
    image = await create(api, name="empty-yet")
    status, data, _ = await download(api, image["id"])
    assert status == 204 and data == b""
    status, body = await api.request("PUT", f"/image/v2/images/{image['id']}/file", data=b"", headers=OCTETS)
    assert status == 204, body
    status, shown = await api.get(f"/image/v2/images/{image['id']}")
    assert shown["status"] == "active" and shown["size"] == 0


async def test_default_image_is_listed_for_demo(api, image_service) -> None:
    await api.login()
    status, body = await api.get("/image/v2/images")
    assert status == 200
    assert body["schema"] == "/v2/schemas/images" and body["first"] == "/v2/images"
    assert "next" not in body
    (tiny,) = [image for image in body["images"] if image["name"] == TINY_NAME]
    assert tiny["status"] == "active" and tiny["visibility"] == "public" and tiny["size"] == 1024 * 1024
    status, data, headers = await download(api, tiny["id"])
    assert status == 200 and hashlib.md5(data).hexdigest() == tiny["checksum"] == headers["Content-MD5"]


async def test_demo_gets_404_for_an_admins_private_image(api, image_service) -> None:
    await api.login("admin", "admin-secret")
    secret = await create(api, name="secret")
    await api.login("demo", "demo-secret")
    for method in ("GET", "DELETE"):
        status, body = await api.request(method, f"/image/v2/images/{secret['id']}")
        assert status == 404 and body["error"]["code"] == 404
    status, _, _ = await download(api, secret["id"])
    assert status == 404
    status, _ = await api.request("PUT", f"/image/v2/images/{secret['id']}/file", data=b"x", headers=OCTETS)
    assert status == 404
    status, body = await api.get("/image/v2/images")
    assert secret["id"] not in {image["id"] for image in body["images"]}


async def test_only_admin_creates_public_images(api, image_service) -> None:
    await api.login()
    status, body = await api.post("/image/v2/images", {"name": "for-all", "visibility": "public"})
    assert status == 403 and body["error"]["code"] == 403
    await api.login("admin", "admin-secret")
    image = await create(api, name="for-all", visibility="public")
    await api.login()
    status, body = await api.get("/image/v2/images?visibility=public&name=for-all")
    assert [i["id"] for i in body["images"]] == [image["id"]]


async def test_another_projects_community_image_never_shadows_a_name(api, image_service) -> None:
    """Glance's default list leaves out other projects' community images: one named like the
    default image does not make a lookup by name ambiguous (issue 13, finding 5)."""
    await api.login("admin", "admin-secret")  # another project than demo's
    shadow = await create(api, name=TINY_NAME, visibility="community")
    status, body = await api.get(f"/image/v2/images?name={TINY_NAME}")
    assert {i["id"] for i in body["images"]} >= {shadow["id"]}  # its owner still lists it
    await api.login()
    status, body = await api.get(f"/image/v2/images?name={TINY_NAME}")
    assert status == 200
    (tiny,) = body["images"]
    assert tiny["visibility"] == "public" and tiny["owner"] is None and tiny["id"] != shadow["id"]
    status, body = await api.get("/image/v2/images")
    assert shadow["id"] not in {i["id"] for i in body["images"]}
    status, body = await api.get(f"/image/v2/images?name={TINY_NAME}&visibility=community")
    assert [i["id"] for i in body["images"]] == [shadow["id"]]
    status, body = await api.get(f"/image/v2/images?name={TINY_NAME}&visibility=all")
    assert {i["id"] for i in body["images"]} == {shadow["id"], tiny["id"]}
    status, shown = await api.get(f"/image/v2/images/{shadow['id']}")
    assert status == 200 and shown["visibility"] == "community"  # still found by its id
    mine = await create(api, name="mine", visibility="community")
    status, body = await api.get("/image/v2/images")
    assert mine["id"] in {i["id"] for i in body["images"]}  # a project's own are in its default list


async def test_list_pages_with_limit_and_marker(api, image_service) -> None:
    await api.login()
    for n in range(4):
        await create(api, name=f"page-{n}")
    status, everything = await api.get("/image/v2/images")
    assert len(everything["images"]) == 5
    seen, path = [], "/v2/images?limit=2"
    while path:
        status, body = await api.get("/image" + path)
        assert status == 200
        seen += [image["id"] for image in body["images"]]
        path = body.get("next")
    assert seen == [image["id"] for image in everything["images"]]
    status, body = await api.get("/image/v2/images?limit=2&name=page-1")
    assert [i["name"] for i in body["images"]] == ["page-1"] and "next" not in body
    for query in ("limit=many", "limit=-1", "marker=nope", "status=bogus"):
        status, body = await api.get(f"/image/v2/images?{query}")
        assert status == 400, query
        assert body["error"]["message"]


async def test_upload_to_an_active_image_is_409_and_changes_nothing(api, image_service) -> None:
    await api.login()
    image = await create(api, name="done")
    path = f"/image/v2/images/{image['id']}/file"
    assert (await api.request("PUT", path, data=b"original", headers=OCTETS))[0] == 204
    _, before = await api.get(f"/image/v2/images/{image['id']}")
    status, body = await api.request("PUT", path, data=b"replacement", headers=OCTETS)
    assert status == 409 and body["error"]["code"] == 409
    assert (await api.get(f"/image/v2/images/{image['id']}"))[1] == before
    assert (await download(api, image["id"]))[1] == b"original"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"name": "x", "disk_format": "floppy"}}, 400),
        ({"json": {"name": "x", "min_disk": "big"}}, 400),
        ({"json": {"name": "x", "protected": "yes"}}, 400),
        ({"json": {"name": "x", "kernel_id": 7}}, 400),
        ({"json": ["name", "x"]}, 400),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": {"name": "x", "status": "active"}}, 403),
        ({"json": {"name": "x", "os_glance_foo": "bar"}}, 403),
        ({"json": {"name": "x", "os_hidden": "yes"}}, 400),
    ],
)
async def test_bad_create_bodies_are_refused_and_change_nothing(api, image_service, kwargs, status) -> None:
    await api.login()
    _, before = await api.get("/image/v2/images")
    got, body = await api.request("POST", "/image/v2/images", **kwargs)
    assert got == status and body["error"]["message"]
    assert (await api.get("/image/v2/images"))[1] == before


async def test_upload_needs_octet_stream(api, image_service) -> None:
    await api.login()
    image = await create(api, name="typed")
    status, body = await api.request(
        "PUT", f"/image/v2/images/{image['id']}/file", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and body["error"]["code"] == 415
    assert (await api.get(f"/image/v2/images/{image['id']}"))[1]["status"] == "queued"


async def test_delete_drops_the_bytes_but_not_a_protected_image(api, image_service: ImageActor) -> None:
    await api.login()
    image = await create(api, name="doomed")
    await api.request("PUT", f"/image/v2/images/{image['id']}/file", data=b"bytes", headers=OCTETS)
    kept = "SELECT COUNT(*) AS chunks FROM image_chunks WHERE image_id = ?"
    assert (await image_service.store.fetchone(kept, (image["id"],)))["chunks"] == 1
    status, _ = await api.delete(f"/image/v2/images/{image['id']}")
    assert status == 204 and (await image_service.store.fetchone(kept, (image["id"],)))["chunks"] == 0
    assert (await api.get(f"/image/v2/images/{image['id']}"))[0] == 404
    kept = await create(api, name="kept", protected=True)
    status, body = await api.delete(f"/image/v2/images/{kept['id']}")
    assert status == 403 and "protected" in body["error"]["message"]
    assert (await api.get(f"/image/v2/images/{kept['id']}"))[0] == 200


async def test_a_broken_upload_returns_the_image_to_queued(api, image_service, bus: Bus) -> None:
    await api.login()
    image = await create(api, name="interrupted")
    chunks, aborts = await watch(bus, "image.upload_chunk"), await watch(bus, "image.abort_upload")

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * (CHUNK + 1000)
        await wait_for(chunks)
        raise OSError("the client gave up after its first chunk was sent")

    path = f"/image/v2/images/{image['id']}/file"
    with pytest.raises((aiohttp.ClientError, OSError)):
        await api.request("PUT", path, data=body(), headers=OCTETS)
    await wait_for(aborts)
    # the retry's calls reach the actor after the abort: it starts again at offset 0
    assert (await api.request("PUT", path, data=b"whole", headers=OCTETS))[0] == 204
    assert (await download(api, image["id"]))[1] == b"whole"
