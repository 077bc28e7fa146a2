"""Cinder v3 volume routes over real HTTP: shapes, status codes, bad input and project isolation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.identity.actor import IdentityActor
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
        # content from a source is not built: refused, never ignored
        {"json": {"volume": {"size": 1, "source_volid": "1b8ac4a7-0f60-4a0c-9d76-2b0b1f7b2a4e"}}},
        {"json": {"volume": {"size": 1, "snapshot_id": "1b8ac4a7-0f60-4a0c-9d76-2b0b1f7b2a4e"}}},
        {"json": {"volume": {"size": 1, "imageRef": "1b8ac4a7-0f60-4a0c-9d76-2b0b1f7b2a4e"}}},
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
