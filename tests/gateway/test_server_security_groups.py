"""Nova's side of security groups: a server's ports join the groups its create names (by name or
id, resolved once), the server shows its ports' groups, and addSecurityGroup/removeSecurityGroup
change every port of it; a group the project does not have is refused before anything is made."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import Api

SERVERS = "/compute/v2.1/servers"
GROUPS = "/network/v2.0/security-groups"
PORTS = "/network/v2.0/ports"


async def _image(api: Api) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    return str(images["images"][0]["id"])


async def _group(api: Api, name: str) -> str:
    status, body = await api.post(GROUPS, {"security_group": {"name": name}})
    assert status == 201, body
    return str(body["security_group"]["id"])


async def _group_ids(api: Api) -> dict[str, str]:
    _, body = await api.get(GROUPS)
    return {group["id"]: group["name"] for group in body["security_groups"]}


async def _until_active(api: Api, server_id: str) -> dict[str, Any]:
    for _ in range(400):
        _, shown = await api.get(f"{SERVERS}/{server_id}")
        if shown["server"]["status"] in ("ACTIVE", "ERROR"):
            assert shown["server"]["status"] == "ACTIVE", shown
            return dict(shown["server"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"server {server_id} never became ACTIVE")


async def _port_groups(api: Api, server_id: str) -> list[str]:
    """The names of the groups of the server's one port."""
    _, body = await api.get(PORTS, params={"device_id": server_id})
    [port] = body["ports"]
    names = await _group_ids(api)
    return sorted(names[group_id] for group_id in port["security_groups"])


async def _action(api: Api, server_id: str, action: dict[str, Any]) -> tuple[int, Any]:
    return await api.post(f"{SERVERS}/{server_id}/action", action)


async def test_a_server_created_with_named_groups_has_its_port_in_them_and_not_in_default(
    api: Api, cloud
) -> None:
    await api.login()
    await _group(api, "web")
    db_id = await _group(api, "db")
    server = {"name": "sg", "imageRef": await _image(api), "flavorRef": "1"}
    server["security_groups"] = [{"name": "web"}, {"name": db_id}]  # by name, and by id
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202, created
    assert created["server"]["security_groups"] == [{"name": "web"}, {"name": db_id}]
    server_id = created["server"]["id"]
    await api.put(f"{GROUPS}/{db_id}", {"security_group": {"name": "renamed"}})  # resolved at create
    shown = await _until_active(api, server_id)
    assert await _port_groups(api, server_id) == ["renamed", "web"]
    assert sorted(group["name"] for group in shown["security_groups"]) == ["renamed", "web"]
    _, detail = await api.get(f"{SERVERS}/detail")
    [listed] = [s for s in detail["servers"] if s["id"] == server_id]
    assert sorted(group["name"] for group in listed["security_groups"]) == ["renamed", "web"]


async def test_a_server_created_without_groups_is_in_default(api: Api, cloud) -> None:
    await api.login()
    server = {"name": "plain", "imageRef": await _image(api), "flavorRef": "1"}
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202 and created["server"]["security_groups"] == [{"name": "default"}]
    shown = await _until_active(api, created["server"]["id"])
    assert shown["security_groups"] == [{"name": "default"}]
    assert await _port_groups(api, created["server"]["id"]) == ["default"]


async def test_an_unknown_group_is_a_400_and_makes_no_server_port_or_claim(api: Api, cloud) -> None:
    await api.login()
    await _group(api, "web")
    server = {"name": "bad", "imageRef": await _image(api), "flavorRef": "1"}
    server["security_groups"] = [{"name": "web"}, {"name": "nope"}]
    status, body = await api.post(SERVERS, {"server": server})
    assert (status, body["badRequest"]["message"]) == (
        400,
        f"Security group nope not found for project {api.project_id}.",
    )
    assert (await api.get(SERVERS))[1]["servers"] == []
    assert (await api.get(PORTS, params={"device_owner": "compute:nova"}))[1]["ports"] == []
    _, limits = await api.get("/compute/v2.1/limits")
    assert limits["limits"]["absolute"]["totalInstancesUsed"] == 0
    await api.login("admin", "admin-secret", "admin")
    _, hypervisors = await api.get("/compute/v2.1/os-hypervisors/detail")
    assert [(h["memory_mb_used"], h["running_vms"]) for h in hypervisors["hypervisors"]] == [(0, 0)]


async def test_add_and_remove_security_group_change_the_ports_groups_and_the_view(api: Api, cloud) -> None:
    await api.login()
    await _group(api, "web")
    server = {"name": "act", "imageRef": await _image(api), "flavorRef": "1"}
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202
    server_id = created["server"]["id"]
    await _until_active(api, server_id)

    assert await _action(api, server_id, {"addSecurityGroup": {"name": "web"}}) == (202, b"")
    assert await _port_groups(api, server_id) == ["default", "web"]
    _, shown = await api.get(f"{SERVERS}/{server_id}")
    assert sorted(group["name"] for group in shown["server"]["security_groups"]) == ["default", "web"]
    assert (await _action(api, server_id, {"addSecurityGroup": {"name": "web"}}))[0] == 202  # already in
    assert await _port_groups(api, server_id) == ["default", "web"]

    assert await _action(api, server_id, {"removeSecurityGroup": {"name": "default"}}) == (202, b"")
    assert await _port_groups(api, server_id) == ["web"]
    status, body = await _action(api, server_id, {"removeSecurityGroup": {"name": "default"}})
    assert (status, body["itemNotFound"]["message"]) == (
        404,
        f"Security group default not associated with the instance {server_id}",
    )
    status, body = await _action(api, server_id, {"addSecurityGroup": {"name": "nope"}})
    assert status == 404 and body["itemNotFound"]["message"].startswith("Security group nope is not found")
    assert await _port_groups(api, server_id) == ["web"]
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await _action(api, missing, {"addSecurityGroup": {"name": "web"}}))[0] == 404
    assert (await _action(api, server_id, {"addSecurityGroup": {}}))[0] == 400
