"""Cinder v3 volume routes over real HTTP: shapes, status codes, bad input and project isolation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.image import TINY_ID, ImageActor
from actors.volume import VolumeActor
from api.identity import IdentityAdmin, Tokens
from bus import Bus, Context, NotFound, request_scope
from runtime.config import Config

GIB = 1 << 30
DETAIL_KEYS = {
    "id",
    "name",
    "description",
    "size",
    "status",
    "user_id",
    "availability_zone",
    "bootable",
    "encrypted",
    "multiattach",
    "volume_type",
    "attachments",
    "metadata",
    "snapshot_id",
    "source_volid",
    "created_at",
    "updated_at",
    "replication_status",
    "consistencygroup_id",
    "migration_status",
    "os-vol-tenant-attr:tenant_id",
    "links",
}
UNKNOWN = "1b8ac4a7-0f60-4a0c-9d76-2b0b1f7b2a4e"
CREATED_KEYS = DETAIL_KEYS - {"os-vol-tenant-attr:tenant_id"}
"""Cinder's create and update answers: the detail without the tenant-attribute extension's field."""


@pytest.fixture
async def volume_api(start_actor, config: Config, api: Any) -> Any:
    """The identity and volume actors behind the gateway, and ``api`` logged in as demo."""
    await start_actor(IdentityActor, config)
    await start_actor(VolumeActor, config)
    await api.login()
    return api


def volumes_path(project_id: str, suffix: str = "") -> str:
    return f"/volume/v3/{project_id}/volumes{suffix}"


def pool_files(config: Config) -> list[str]:
    return sorted(path.name for path in (config.data_dir / "volumes").iterdir())


async def login_context(bus: Bus, user: str, password: str) -> Context:
    issued = await Tokens.client(bus).issue(username=user, password=password)
    roles = tuple(role["name"] for role in issued["roles"])
    return Context(issued["user"]["id"], issued["project"]["id"], roles, issued["token"])


async def test_create_show_list_update_delete(volume_api: Any, config: Config) -> None:
    pid = volume_api.project_id
    nulls = {
        "source_volid": None,
        "snapshot_id": None,
        "imageRef": None,
        "volume_type": None,
    }  # as clients send
    status, body = await volume_api.post(volumes_path(pid), {"volume": {"size": 1, "name": "data", **nulls}})
    assert status == 202, body
    created = body["volume"]
    assert set(created) == CREATED_KEYS
    assert (created["replication_status"], created["consistencygroup_id"]) == (None, None)
    status, body = await volume_api.get(volumes_path(pid, f"/{created['id']}"))
    volume = body["volume"]
    assert status == 200 and set(volume) == DETAIL_KEYS
    assert volume == {**created, "os-vol-tenant-attr:tenant_id": pid}
    assert (volume["size"], volume["name"], volume["status"]) == (1, "data", "available")
    assert volume["bootable"] == "false" and volume["attachments"] == [] and volume["metadata"] == {}
    [link] = volume["links"]
    assert link["rel"] == "self" and link["href"].endswith(volumes_path(pid, f"/{volume['id']}"))
    assert pool_files(config) == [f"{volume['id']}.raw"]
    assert (config.data_dir / "volumes" / f"{volume['id']}.raw").stat().st_size == GIB

    status, body = await volume_api.get(volumes_path(pid, f"/{volume['id']}"))
    assert status == 200 and body == {"volume": volume}

    status, body = await volume_api.get(volumes_path(pid))
    assert status == 200
    assert body == {"volumes": [{"id": volume["id"], "name": "data", "links": volume["links"]}]}

    status, body = await volume_api.get(volumes_path(pid, "/detail"))
    assert status == 200 and body == {"volumes": [volume]}

    status, body = await volume_api.put(
        volumes_path(pid, f"/{volume['id']}"), {"volume": {"description": "db"}}
    )
    assert status == 200
    assert (body["volume"]["name"], body["volume"]["description"]) == ("data", "db")

    status, body = await volume_api.delete(volumes_path(pid, f"/{volume['id']}"))
    assert status == 202
    assert pool_files(config) == []
    status, body = await volume_api.get(volumes_path(pid, f"/{volume['id']}"))
    assert status == 404 and "could not be found" in body["itemNotFound"]["message"]
    status, body = await volume_api.get(volumes_path(pid, "/detail"))
    assert body == {"volumes": []}


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {"volume": {"size": 0}}},
        {"json": {"volume": {"size": "big"}}},
        {"json": {"volume": {"name": "no size"}}},
        {"json": {"volume": "not an object"}},
        {"json": {"size": 1}},
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"volume": {"size": -1}}},
        {"json": {"volume": {"size": 1, "volume_type": ""}}},
        {"json": {"volume": {"size": 1, "source_volid": UNKNOWN, "snapshot_id": UNKNOWN}}},
        # content from a backup is not built: refused, never ignored
        {"json": {"volume": {"size": 1, "backup_id": "1b8ac4a7-0f60-4a0c-9d76-2b0b1f7b2a4e"}}},
    ],
)
async def test_bad_input_is_400_and_creates_nothing(
    volume_api: Any, config: Config, request_kwargs: dict[str, Any]
) -> None:
    status, body = await volume_api.request("POST", volumes_path(volume_api.project_id), **request_kwargs)
    assert status == 400, body
    assert body["badRequest"]["code"] == 400 and body["badRequest"]["message"]
    assert (await volume_api.get(volumes_path(volume_api.project_id)))[1] == {"volumes": []}
    assert pool_files(config) == []


async def test_another_project_gets_404_and_a_foreign_project_path_403(
    volume_api: Any, bus: Bus, config: Config
) -> None:
    admin = await login_context(bus, "admin", "admin-secret")
    with request_scope(context=admin):
        directory = IdentityAdmin.client(bus)
        await directory.create_project(name="other")
        await directory.create_user(name="bob", password="bob-pw", default_project="other")
        await directory.grant_role(user="bob", project="other", role="member")
    demo_pid = volume_api.project_id
    status, body = await volume_api.post(volumes_path(demo_pid), {"volume": {"size": 1}})
    assert status == 202
    volume_id = body["volume"]["id"]

    bob = type(volume_api)(volume_api.session, volume_api.base_url)
    await bob.login("bob", "bob-pw", project="other")
    other_pid = bob.project_id
    for method in ("GET", "DELETE"):
        status, body = await bob.request(method, volumes_path(other_pid, f"/{volume_id}"))
        assert status == 404 and "itemNotFound" in body
    status, body = await bob.put(volumes_path(other_pid, f"/{volume_id}"), {"volume": {"name": "mine"}})
    assert status == 404
    assert await bob.get(volumes_path(other_pid, "/detail?all_tenants=1")) == (200, {"volumes": []})
    status, body = await bob.get(volumes_path(demo_pid))
    assert status == 403 and "Policy doesn't allow volume:get_all" in body["forbidden"]["message"]
    status, body = await bob.post(volumes_path(demo_pid), {"volume": {"size": 1}})
    assert status == 403 and pool_files(config) == [f"{volume_id}.raw"]

    bob_context = await login_context(bus, "bob", "bob-pw")
    with request_scope(context=bob_context), pytest.raises(NotFound):
        await bus.call("volume.get", {"volume_id": volume_id})

    admin_api = type(volume_api)(volume_api.session, volume_api.base_url)
    await admin_api.login("admin", "admin-secret")
    status, body = await admin_api.get(volumes_path(demo_pid, "/detail"))
    assert status == 200 and body == {"volumes": []}
    status, body = await admin_api.get(volumes_path(demo_pid, "/detail?all_tenants=true"))
    assert [volume["id"] for volume in body["volumes"]] == [volume_id]
    status, body = await admin_api.get(volumes_path(demo_pid, f"/{volume_id}"))
    assert status == 200 and body["volume"]["os-vol-tenant-attr:tenant_id"] == demo_pid


async def test_an_attached_volume_shows_its_attachment_and_cannot_be_deleted(
    volume_api: Any, bus: Bus
) -> None:
    pid = volume_api.project_id
    status, body = await volume_api.post(volumes_path(pid), {"volume": {"size": 1}})
    volume_id = body["volume"]["id"]
    server = "0c1d2e3f-0000-4000-8000-000000000002"
    await bus.call("volume.reserve", {"volume_id": volume_id, "instance_uuid": server})
    await bus.call(
        "volume.attach_complete",
        {"volume_id": volume_id, "instance_uuid": server, "host": "node1", "device": "/dev/vdb"},
    )
    status, body = await volume_api.delete(volumes_path(pid, f"/{volume_id}"))
    assert (
        status == 409 and "Volume status must be available or error" in body["conflictingRequest"]["message"]
    )
    status, body = await volume_api.get(volumes_path(pid, f"/{volume_id}"))
    assert body["volume"]["status"] == "in-use"
    [attachment] = body["volume"]["attachments"]
    assert (attachment["server_id"], attachment["device"], attachment["id"]) == (
        server,
        "/dev/vdb",
        volume_id,
    )


async def test_requests_without_a_token_are_refused(volume_api: Any) -> None:
    status, body = await volume_api.get(volumes_path(volume_api.project_id), headers={"X-Auth-Token": ""})
    assert status == 401 and "unauthorized" in body


def project_path(project_id: str, suffix: str) -> str:
    return f"/volume/v3/{project_id}{suffix}"


async def made(api: Any, **volume: Any) -> str:
    status, body = await api.post(volumes_path(api.project_id), {"volume": {"size": 1, **volume}})
    assert status == 202, body
    return str(body["volume"]["id"])


async def test_volume_metadata_routes_merge_replace_and_delete(volume_api: Any) -> None:
    volume_id = await made(volume_api, metadata={"a": "1"})
    path = volumes_path(volume_api.project_id, f"/{volume_id}/metadata")
    status, body = await volume_api.post(path, {"metadata": {"b": "<2&>"}})
    assert (status, body) == (200, {"metadata": {"a": "1", "b": "<2&>"}})
    status, body = await volume_api.put(path, {"metadata": {"c": "3"}})
    assert (status, body) == (200, {"metadata": {"c": "3"}})
    assert await volume_api.get(path) == (200, {"metadata": {"c": "3"}})
    assert await volume_api.put(f"{path}/c", {"meta": {"c": "4"}}) == (200, {"meta": {"c": "4"}})
    assert await volume_api.get(f"{path}/c") == (200, {"meta": {"c": "4"}})
    status, body = await volume_api.put(f"{path}/c", {"meta": {"d": "4"}})
    assert status == 400 and "mismatch" in body["badRequest"]["message"]
    status, _ = await volume_api.put(f"{path}/c", {"meta": {"c": "4", "d": "5"}})
    assert status == 400
    status, _ = await volume_api.delete(f"{path}/c")
    assert status == 200
    assert (await volume_api.get(f"{path}/c"))[0] == 404
    assert (await volume_api.delete(f"{path}/c"))[0] == 404
    assert await volume_api.get(path) == (200, {"metadata": {}})


async def test_volume_actions_as_cinder(volume_api: Any, config: Config) -> None:
    volume_id = await made(volume_api)
    path = volumes_path(volume_api.project_id, f"/{volume_id}")
    status, _ = await volume_api.post(f"{path}/action", {"os-set_bootable": {"bootable": True}})
    assert status == 200
    status, _ = await volume_api.post(f"{path}/action", {"os-update_readonly_flag": {"readonly": "true"}})
    assert status == 202
    volume = (await volume_api.get(path))[1]["volume"]
    assert (volume["bootable"], volume["metadata"]) == ("true", {"readonly": "True"})
    assert await volume_api.get(f"{path}/metadata") == (200, {"metadata": {}})
    assert (await volume_api.post(f"{path}/action", {"os-extend": {"new_size": 2}}))[0] == 202
    assert (config.data_dir / "volumes" / f"{volume_id}.raw").stat().st_size == 2 * GIB
    status, body = await volume_api.post(f"{path}/action", {"os-extend": {"new_size": 1}})
    assert status == 409 and "greater than current size" in body["conflictingRequest"]["message"]
    assert (await volume_api.post(f"{path}/action", {"os-reserve": {}}))[0] == 202
    assert (await volume_api.get(path))[1]["volume"]["status"] == "attaching"
    assert (await volume_api.post(f"{path}/action", {"os-unreserve": {}}))[0] == 202
    assert (await volume_api.get(path))[1]["volume"]["status"] == "available"
    status, body = await volume_api.post(f"{path}/action", {"os-begin_detaching": {}})
    assert status == 409 and "must be in-use" in body["conflictingRequest"]["message"]
    for bad in (
        {"os-unknown": {}},
        {},
        {"os-reserve": {}, "os-unreserve": {}},
        {"os-extend": {"new_size": 0}},
    ):
        status, body = await volume_api.post(f"{path}/action", bad)
        assert status == 400, bad
    volume = (await volume_api.get(path))[1]["volume"]
    assert (volume["status"], volume["size"]) == ("available", 2)
    assert (
        await volume_api.post(volumes_path(volume_api.project_id, f"/{UNKNOWN}/action"), {"os-reserve": {}})
    )[0] == 404


async def test_zones_extensions_and_types(volume_api: Any) -> None:
    pid = volume_api.project_id
    status, body = await volume_api.get(project_path(pid, "/os-availability-zone"))
    assert (status, body) == (
        200,
        {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}}]},
    )
    status, body = await volume_api.get(project_path(pid, "/extensions"))
    assert status == 200 and "os-volume-actions" in {extension["alias"] for extension in body["extensions"]}
    status, body = await volume_api.get(project_path(pid, "/types"))
    [default] = body["volume_types"]
    assert default["name"] == "__DEFAULT__" and default["os-volume-type-access:is_public"] is True
    assert await volume_api.get(project_path(pid, f"/types/{default['id']}")) == (
        200,
        {"volume_type": default},
    )
    assert (await volume_api.post(project_path(pid, "/types"), {"volume_type": {"name": "fast"}}))[0] == 403
    status, body = await volume_api.post(volumes_path(pid), {"volume": {"size": 1, "volume_type": "nope"}})
    assert status == 404 and "Volume type nope" in body["itemNotFound"]["message"]
    volume_id = await made(volume_api, volume_type="__DEFAULT__")
    assert (await volume_api.get(volumes_path(pid, f"/{volume_id}")))[1]["volume"][
        "volume_type"
    ] == "__DEFAULT__"


async def test_lists_filter_sort_and_link_the_next_page(volume_api: Any) -> None:
    pid = volume_api.project_id
    ids = {await made(volume_api, name=f"v{n}", metadata={"Type": "work" if n else "play"}) for n in range(3)}
    seen: list[str] = []
    path = volumes_path(pid, "/detail?limit=1&sort=id:asc")
    while path:
        status, body = await volume_api.get(path)
        assert status == 200 and len(body["volumes"]) <= 1
        seen += [volume["id"] for volume in body["volumes"]]
        links = body.get("volumes_links", [])
        path = links[0]["href"].removeprefix(volume_api.base_url) if links else ""
    assert seen == sorted(ids)
    status, body = await volume_api.get(volumes_path(pid), params={"metadata": "{'Type': 'work'}"})
    assert status == 200 and len(body["volumes"]) == 2
    status, body = await volume_api.get(
        volumes_path(pid, "/detail"), params={"sort_key": "name", "sort_dir": "asc"}
    )
    assert [volume["name"] for volume in body["volumes"]] == ["v0", "v1", "v2"]
    for bad in ({"metadata": "{Type: work}"}, {"sort": "colour:asc"}, {"limit": "-1"}, {"sort_dir": "up"}):
        status, _ = await volume_api.get(volumes_path(pid), params=bad)
        assert status == 400, bad
    status, body = await volume_api.get(volumes_path(pid), params={"marker": UNKNOWN})
    assert status == 404


async def test_snapshots_routes_and_volumes_made_from_them(volume_api: Any, config: Config) -> None:
    pid = volume_api.project_id
    volume_id = await made(volume_api)
    status, body = await volume_api.post(
        project_path(pid, "/snapshots"),
        {"snapshot": {"volume_id": volume_id, "name": "s", "metadata": {"k": "v"}}},
    )
    assert status == 202 and body["snapshot"]["status"] == "available"
    snapshot = body["snapshot"]
    path = project_path(pid, f"/snapshots/{snapshot['id']}")
    status, body = await volume_api.get(path)
    assert body["snapshot"]["os-extended-snapshot-attributes:project_id"] == pid
    status, body = await volume_api.put(path, {"snapshot": {"name": "t", "description": "d"}})
    assert (status, body["snapshot"]["name"], body["snapshot"]["description"]) == (200, "t", "d")
    assert await volume_api.post(f"{path}/metadata", {"metadata": {"a": "b"}}) == (
        200,
        {"metadata": {"k": "v", "a": "b"}},
    )
    assert await volume_api.put(f"{path}/metadata/a", {"meta": {"a": "c"}}) == (200, {"meta": {"a": "c"}})
    assert (await volume_api.delete(f"{path}/metadata/k"))[0] == 200
    assert await volume_api.get(f"{path}/metadata") == (200, {"metadata": {"a": "c"}})
    status, body = await volume_api.get(project_path(pid, "/snapshots/detail"), params={"name": "t"})
    assert [s["id"] for s in body["snapshots"]] == [snapshot["id"]]
    status, body = await volume_api.delete(volumes_path(pid, f"/{volume_id}"))
    assert status == 409 and "dependent snapshots" in body["conflictingRequest"]["message"]
    copy_id = await made(volume_api, snapshot_id=snapshot["id"])
    status, _ = await volume_api.post(volumes_path(pid), {"volume": {"snapshot_id": snapshot["id"]}})
    assert status == 400  # the size is asked for
    clone_id = await made(volume_api, source_volid=volume_id)
    copy = (await volume_api.get(volumes_path(pid, f"/{copy_id}")))[1]["volume"]
    assert (copy["snapshot_id"], copy["size"], copy["status"]) == (snapshot["id"], 1, "available")
    for source in ({"snapshot_id": UNKNOWN}, {"source_volid": UNKNOWN}):
        status, _ = await volume_api.post(volumes_path(pid), {"volume": {"size": 1, **source}})
        assert status == 404
    status, _ = await volume_api.post(project_path(pid, "/snapshots"), {"snapshot": {"volume_id": None}})
    assert status == 404
    assert (await volume_api.delete(path))[0] == 202
    for volume in (volume_id, copy_id, clone_id):
        assert (await volume_api.delete(volumes_path(pid, f"/{volume}")))[0] == 202
    assert pool_files(config) == []


async def test_a_volume_from_an_image_is_bootable(volume_api: Any, start_actor: Any, config: Config) -> None:
    await start_actor(ImageActor, config)
    pid = volume_api.project_id
    volume_id = await made(volume_api, imageRef=TINY_ID)
    volume = (await volume_api.get(volumes_path(pid, f"/{volume_id}")))[1]["volume"]
    assert (volume["status"], volume["bootable"]) == ("available", "true")
    assert volume["volume_image_metadata"]["image_id"] == TINY_ID
    assert volume["volume_image_metadata"]["image_name"] == "aiostack-tiny"
    assert (await volume_api.post(volumes_path(pid), {"volume": {"size": 1, "imageRef": UNKNOWN}}))[0] == 404
    both = {"size": 1, "imageRef": TINY_ID, "source_volid": volume_id}
    assert (await volume_api.post(volumes_path(pid), {"volume": both}))[0] == 400
    assert (await volume_api.delete(volumes_path(pid, f"/{volume_id}")))[0] == 202
    assert pool_files(config) == []


async def test_snapshot_lists_link_the_next_page(volume_api: Any) -> None:
    pid = volume_api.project_id
    volume_id = await made(volume_api)
    for n in range(2):
        body = {"snapshot": {"volume_id": volume_id, "name": f"s{n}"}}
        assert (await volume_api.post(project_path(pid, "/snapshots"), body))[0] == 202
    status, body = await volume_api.get(
        project_path(pid, "/snapshots"), params={"limit": 1, "sort": "name:asc"}
    )
    assert [snapshot["name"] for snapshot in body["snapshots"]] == ["s0"]
    [link] = body["snapshots_links"]
    status, body = await volume_api.get(link["href"].removeprefix(volume_api.base_url))
    assert [snapshot["name"] for snapshot in body["snapshots"]] == ["s1"]
    status, body = await volume_api.get(project_path(pid, "/snapshots/detail"), params={"limit": 100000})
    assert status == 200 and len(body["snapshots"]) == 2 and "snapshots_links" not in body
    assert (await volume_api.get(project_path(pid, "/snapshots"), params={"sort_key": "bootable"}))[0] == 400
