"""Glance v2 changes over real HTTP: PATCH in both JSON-patch dialects, tags, and the list's
filters, sort and pages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from gateway.image import PATCH_V20, PATCH_V21

OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def image_service(start_actor, config) -> ImageActor:
    """The identity actor (for logins) and the image actor."""
    await start_actor(IdentityActor, config)
    return await start_actor(ImageActor, config)


async def create(api, **body: Any) -> dict[str, Any]:
    status, image = await api.post("/image/v2/images", body)
    assert status == 201, image
    return image


async def patch(api, image_id: str, operations: Any, media_type: str = PATCH_V21) -> tuple[int, Any]:
    return await api.request(
        "PATCH",
        f"/image/v2/images/{image_id}",
        data=json.dumps(operations),
        headers={"Content-Type": media_type},
    )


async def shown(api, image_id: str) -> dict[str, Any]:
    status, image = await api.get(f"/image/v2/images/{image_id}")
    assert status == 200, image
    return image


async def listed(api, query: str) -> list[str]:
    """The names the list answers for ``query``."""
    status, body = await api.get(f"/image/v2/images?{query}")
    assert status == 200, body
    return [image["name"] for image in body["images"]]


async def test_patch_sets_fields_and_properties_in_one_go(api, image_service) -> None:
    await api.login()
    image = await create(api, name="before", os_distro="cirros", hw_disk_bus="virtio")
    status, changed = await patch(
        api,
        image["id"],
        [
            {"op": "replace", "path": "/name", "value": "after"},
            {"op": "add", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/protected", "value": True},
            {"op": "add", "path": "/os_hidden", "value": True},
            {"op": "replace", "path": "/tags", "value": ["a", "b", "a"]},
            {"op": "replace", "path": "/disk_format", "value": "qcow2"},
            {"op": "add", "path": "/os_distro", "value": "debian"},
            {"op": "add", "path": "/a~1b~0c", "value": "escaped"},
            {"op": "remove", "path": "/hw_disk_bus"},
        ],
    )
    assert status == 200, changed
    assert (changed["name"], changed["min_ram"], changed["protected"], changed["os_hidden"]) == (
        "after", 512, True, True,
    )  # fmt: skip
    assert changed["tags"] == ["a", "b"] and changed["disk_format"] == "qcow2"
    assert changed["os_distro"] == "debian" and changed["a/b~c"] == "escaped" and "hw_disk_bus" not in changed
    assert await shown(api, image["id"]) == changed


async def test_an_image_needs_no_name(api, image_service) -> None:
    """As Glance: a create without a name (or with null) makes an image whose name is null."""
    await api.login()
    nameless = await create(api, disk_format="qcow2")
    assert nameless["name"] is None and (await create(api, name=None))["name"] is None
    status, named = await patch(api, nameless["id"], [{"op": "replace", "path": "/name", "value": "now"}])
    assert status == 200 and named["name"] == "now"
    status, unnamed = await patch(api, nameless["id"], [{"op": "replace", "path": "/name", "value": None}])
    assert status == 200 and unnamed["name"] is None
    assert await listed(api, "sort=name:asc&disk_format=qcow2") == [None]


async def test_the_v20_dialect_replaces_and_refuses_to_add_what_exists(api, image_service) -> None:
    await api.login()
    image = await create(api, name="old-dialect", protected=True)
    status, changed = await patch(
        api,
        image["id"],
        [{"replace": "/protected", "value": False}, {"add": "/login_user", "value": "root"}],
        PATCH_V20,
    )
    assert status == 200 and changed["protected"] is False and changed["login_user"] == "root"
    for operation in ({"add": "/login_user", "value": "admin"}, {"add": "/name", "value": "x"}):
        status, body = await patch(api, image["id"], [operation], PATCH_V20)
        assert status == 409 and "already present" in body["error"]["message"]
    status, body = await patch(api, image["id"], [{"add": "/a", "replace": "/b", "value": "x"}], PATCH_V20)
    assert status == 400 and "exactly one member" in body["error"]["message"]
    assert await shown(api, image["id"]) == changed


async def test_a_protected_image_is_deleted_once_unprotected(api, image_service) -> None:
    await api.login()
    image = await create(api, name="guarded", protected=True)
    status, body = await api.delete(f"/image/v2/images/{image['id']}")
    assert status == 403 and "protected" in body["error"]["message"]
    assert (await patch(api, image["id"], [{"op": "replace", "path": "/protected", "value": False}]))[
        0
    ] == 200
    assert (await api.delete(f"/image/v2/images/{image['id']}"))[0] == 204
    assert (await api.get(f"/image/v2/images/{image['id']}"))[0] == 404
    assert (await patch(api, image["id"], []))[0] == 404


@pytest.mark.parametrize(
    ("operations", "status", "says"),
    [
        ([{"op": "replace", "path": "/status", "value": "active"}], 403, "read-only"),
        ([{"op": "replace", "path": "/id", "value": "x"}], 403, "read-only"),
        ([{"op": "add", "path": "/checksum", "value": "x"}], 403, "read-only"),
        ([{"op": "replace", "path": "/owner", "value": "p-other"}], 403, "non admin"),
        ([{"op": "add", "path": "/os_glance_foo", "value": "x"}], 403, "reserved"),
        ([{"op": "add", "path": "/deleted", "value": "x"}], 403, "reserved"),
        ([{"op": "remove", "path": "/name"}], 403, "may not be removed"),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], 403, "admin"),
        ([{"op": "replace", "path": "/missing", "value": "x"}], 409, "does not exist"),
        ([{"op": "remove", "path": "/missing"}], 409, "does not exist"),
        ([{"op": "replace", "path": "/min_disk", "value": -1}], 400, "min_disk"),
        ([{"op": "replace", "path": "/protected", "value": "yes"}], 400, "protected"),
        ([{"op": "replace", "path": "/disk_format", "value": "floppy"}], 400, "disk_format"),
        ([{"op": "add", "path": "/os_distro", "value": 7}], 400, "os_distro"),
        ([{"op": "add", "path": "/os_distro"}], 400, "value"),
        ([{"op": "move", "path": "/name", "value": "x"}], 400, "op"),
        ([{"op": "replace", "path": "name", "value": "x"}], 400, "path"),
        ([{"op": "replace", "path": "/a/b", "value": "x"}], 400, "path"),
        ([{"op": "replace", "path": "/a~2", "value": "x"}], 400, "path"),
        ({"op": "replace", "path": "/name", "value": "x"}, 400, "array"),
        # a good change first: nothing of it is kept
        (
            [{"op": "replace", "path": "/name", "value": "new"}, {"op": "remove", "path": "/nope"}],
            409,
            "nope",
        ),
    ],
)
async def test_bad_patches_are_refused_and_change_nothing(
    api, image_service, operations, status, says
) -> None:
    await api.login()
    image = await create(api, name="steady")
    before = await shown(api, image["id"])
    got, body = await patch(api, image["id"], operations)
    assert got == status and says in body["error"]["message"], body
    assert await shown(api, image["id"]) == before


async def test_patch_needs_a_json_patch_media_type(api, image_service) -> None:
    await api.login()
    image = await create(api, name="typed")
    operations = [{"op": "replace", "path": "/name", "value": "x"}]
    for media_type in ("application/json", "application/json-patch+json"):
        status, body = await patch(api, image["id"], operations, media_type)
        assert status == 415 and PATCH_V21 in body["error"]["message"]
    assert (await shown(api, image["id"]))["name"] == "typed"


async def test_only_the_owner_or_an_admin_changes_an_image(api, image_service) -> None:
    await api.login("admin", "admin-secret")
    public = await create(api, name="for-all", visibility="public")
    await api.login()
    status, body = await patch(api, public["id"], [{"op": "replace", "path": "/name", "value": "mine"}])
    assert status == 403 and body["error"]["code"] == 403
    assert (await api.put(f"/image/v2/images/{public['id']}/tags/mine"))[0] == 403
    mine = await create(api, name="demo's")
    await api.login("admin", "admin-secret")
    changes = [
        {"op": "replace", "path": "/owner", "value": None},
        {"op": "replace", "path": "/name", "value": "x"},
    ]
    status, changed = await patch(api, mine["id"], changes)
    assert status == 200 and changed["owner"] is None and changed["name"] == "x"


async def test_formats_change_only_while_queued(api, image_service) -> None:
    await api.login()
    image = await create(api, name="formats")
    operations = [{"op": "replace", "path": "/container_format", "value": "ovf"}]
    assert (await patch(api, image["id"], operations))[1]["container_format"] == "ovf"
    path = f"/image/v2/images/{image['id']}/file"
    assert (await api.request("PUT", path, data=b"data", headers=OCTETS))[0] == 204
    status, body = await patch(
        api, image["id"], [{"op": "replace", "path": "/container_format", "value": "bare"}]
    )
    assert status == 403 and "queued" in body["error"]["message"]
    assert (await patch(api, image["id"], [{"op": "replace", "path": "/min_disk", "value": 1}]))[0] == 200


async def test_tags_are_added_once_and_removed(api, image_service) -> None:
    await api.login()
    image = await create(api, name="tagged", tags=["first"])
    tags = f"/image/v2/images/{image['id']}/tags"
    for _ in range(2):
        assert (await api.put(f"{tags}/second"))[0] == 204
    assert (await shown(api, image["id"]))["tags"] == ["first", "second"]
    assert (await api.delete(f"{tags}/first"))[0] == 204
    assert (await shown(api, image["id"]))["tags"] == ["second"]
    status, body = await api.delete(f"{tags}/first")
    assert status == 404 and body["error"]["code"] == 404
    missing = "/image/v2/images/00000000-0000-0000-0000-000000000000/tags/x"
    assert (await api.put(missing))[0] == 404
    assert (await api.put(f"{tags}/{'t' * 256}"))[0] == 400


async def test_list_filters_as_glance(api, image_service) -> None:
    await api.login()
    small = await create(api, name="small", disk_format="qcow2", tags=["x", "y"], protected=True)
    await api.request("PUT", f"/image/v2/images/{small['id']}/file", data=b"s" * 10, headers=OCTETS)
    big = await create(api, name="big", container_format="ovf", tags=["x"])
    await api.request("PUT", f"/image/v2/images/{big['id']}/file", data=b"b" * 100, headers=OCTETS)
    await create(api, name="hidden", os_hidden=True)
    await create(api, name="empty")
    assert set(await listed(api, "")) == {"small", "big", "empty", "aiostack-tiny"}
    assert await listed(api, "disk_format=qcow2") == ["small"]
    assert await listed(api, "container_format=ovf") == ["big"]
    assert await listed(api, "size=100") == ["big"]
    assert await listed(api, "size_min=5&size_max=50") == ["small"]
    assert await listed(api, "tag=x&tag=y") == ["small"]
    assert await listed(api, "tag=x&sort=name:asc") == ["big", "small"]
    assert await listed(api, "protected=true") == ["small"]
    assert await listed(api, "os_hidden=true") == ["hidden"]
    assert await listed(api, f"owner={small['owner']}&status=active&sort_key=name") == ["small", "big"]
    assert await listed(api, "member_status=pending&visibility=private&name=empty") == ["empty"]
    for query in ("protected=maybe", "os_hidden=1", "size_min=x", "member_status=sure", "tag="):
        status, body = await api.get(f"/image/v2/images?{query}")
        assert status == 400 and body["error"]["message"], query


async def test_list_sorts_and_pages_as_glance(api, image_service) -> None:
    await api.login()
    for name, size in (("b", 30), ("a", 10), ("c", 20), ("d", None)):
        image = await create(api, name=name)
        if size is not None:
            await api.request("PUT", f"/image/v2/images/{image['id']}/file", data=b"x" * size, headers=OCTETS)
    by_size = ["d", "a", "c", "b", "aiostack-tiny"]  # an image without data first
    assert await listed(api, "sort_key=size&sort_dir=asc") == by_size
    assert await listed(api, "sort=size:desc") == by_size[::-1]
    assert await listed(api, "sort_key=status,name&sort_dir=asc,desc") == [
        "c",
        "b",
        "aiostack-tiny",
        "a",
        "d",
    ]
    assert await listed(api, "sort_key=status&sort_key=name&sort_dir=asc") == [
        "a",
        "aiostack-tiny",
        "b",
        "c",
        "d",
    ]
    assert await listed(api, "sort=status,name:asc") == ["d", "a", "aiostack-tiny", "b", "c"]
    seen, path = [], "/v2/images?sort=size:asc&limit=2"
    while path:
        status, body = await api.get("/image" + path)
        assert status == 200 and len(body["images"]) <= 2
        seen += [image["name"] for image in body["images"]]
        path = body.get("next")
        assert path is None or "sort=size%3Aasc" in path
    assert seen == by_size
    for query in ("sort_key=checksum", "sort_dir=up", "sort=size:sideways", "sort=owner"):
        status, body = await api.get(f"/image/v2/images?{query}")
        assert status == 400 and body["error"]["message"], query


async def test_a_deactivated_image_is_downloaded_by_admins_only(api, image_service) -> None:
    await api.login()
    image = await create(api, name="paused")
    actions = f"/image/v2/images/{image['id']}/actions"
    status, body = await api.post(f"{actions}/deactivate")
    assert status == 403 and "queued" in body["error"]["message"]
    assert (await api.request("PUT", f"/image/v2/images/{image['id']}/file", data=b"bytes", headers=OCTETS))[
        0
    ] == 204
    for _ in range(2):
        assert (await api.post(f"{actions}/deactivate"))[0] == 204
    assert (await shown(api, image["id"]))["status"] == "deactivated"
    status, body = await api.get(f"/image/v2/images/{image['id']}/file")
    assert status == 403 and "deactivated" in body["error"]["message"]
    assert await listed(api, "status=deactivated") == ["paused"]
    demo = api.headers
    await api.login("admin", "admin-secret")
    assert await api.get(f"/image/v2/images/{image['id']}/file") == (200, b"bytes")
    api.headers = demo
    for _ in range(2):
        assert (await api.post(f"{actions}/reactivate"))[0] == 204
    assert (await shown(api, image["id"]))["status"] == "active"
    assert await api.get(f"/image/v2/images/{image['id']}/file") == (200, b"bytes")
    assert (await api.post("/image/v2/images/00000000-0000-0000-0000-000000000000/actions/reactivate"))[
        0
    ] == 404


async def test_no_import_method_is_offered(api, image_service) -> None:
    await api.login()
    status, body = await api.get("/image/v2/info/import")
    assert status == 200 and body == {
        "import-methods": {"description": "Import methods available.", "type": "array", "value": []}
    }
