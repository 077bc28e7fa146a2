"""A server's description (Nova 2.19): given at create, update and rebuild, shown in show, the detailed
list, update and rebuild answers from 2.19; refused (400) and not shown at 2.18."""

from __future__ import annotations

from tests.gateway.test_server_details import SERVERS, _boot, _image, _until
from tests.helpers import Api

V218 = {"OpenStack-API-Version": "compute 2.18"}
V219 = {"OpenStack-API-Version": "compute 2.19"}
UNEXPECTED = "Additional properties are not allowed ('description' was unexpected)"


async def _shown(api: Api, server_id: str, headers: dict[str, str]) -> dict[str, object]:
    _, shown = await api.get(f"{SERVERS}/{server_id}", headers=headers)
    return dict(shown["server"])


async def test_a_description_is_set_at_create_update_and_rebuild_and_shown_from_2_19(api: Api, cloud) -> None:
    await api.login()
    image = await _image(api)
    status, created = await api.post(
        SERVERS,
        {"server": {"name": "described", "imageRef": image, "flavorRef": "1", "description": "web"}},
        headers=V219,
    )
    assert status == 202 and "description" not in created["server"]  # Nova's create answer has none
    server_id = created["server"]["id"]
    assert (await _shown(api, server_id, V219))["description"] == "web"
    assert "description" not in await _shown(api, server_id, V218)
    _, listed = await api.get(f"{SERVERS}/detail", headers=V219)
    assert {s["id"]: s["description"] for s in listed["servers"]}[server_id] == "web"
    _, listed = await api.get(f"{SERVERS}/detail", headers=V218)
    assert all("description" not in s for s in listed["servers"])
    await _until(api, server_id, "ACTIVE")

    status, updated = await api.put(f"{SERVERS}/{server_id}", {"server": {"description": "db"}}, headers=V219)
    assert status == 200 and updated["server"]["description"] == "db"
    status, updated = await api.put(f"{SERVERS}/{server_id}", {"server": {"name": "renamed"}}, headers=V219)
    assert updated["server"]["description"] == "db"  # left out: unchanged
    status, updated = await api.put(f"{SERVERS}/{server_id}", {"server": {"description": None}}, headers=V219)
    assert status == 200 and updated["server"]["description"] is None
    assert (await _shown(api, server_id, V219))["description"] is None
    status, updated = await api.put(f"{SERVERS}/{server_id}", {"server": {"description": ""}}, headers=V219)
    assert updated["server"]["description"] == ""

    action = f"{SERVERS}/{server_id}/action"
    rebuild = {"rebuild": {"imageRef": image, "description": "rebuilt"}}
    status, rebuilt = await api.post(action, rebuild, headers=V219)
    assert status == 202 and rebuilt["server"]["description"] == "rebuilt"
    await _until(api, server_id, "ACTIVE")
    assert (await _shown(api, server_id, V219))["description"] == "rebuilt"
    status, rebuilt = await api.post(action, {"rebuild": {"imageRef": image}}, headers=V218)
    assert status == 202 and "description" not in rebuilt["server"]
    await _until(api, server_id, "ACTIVE")
    assert (await _shown(api, server_id, V219))["description"] == "rebuilt"  # not given: unchanged


async def test_a_description_is_refused_before_2_19_and_a_bad_one_always(api: Api, cloud) -> None:
    await api.login()
    image = await _image(api)
    server = {"name": "plain", "imageRef": image, "flavorRef": "1"}
    status, body = await api.post(SERVERS, {"server": {**server, "description": "web"}}, headers=V218)
    assert status == 400 and UNEXPECTED in body["badRequest"]["message"]
    for bad in ("x" * 256, "tab\tin it", 7):
        status, body = await api.post(SERVERS, {"server": {**server, "description": bad}}, headers=V219)
        assert status == 400, (bad, body)
    _, listed = await api.get(f"{SERVERS}/detail")
    assert listed["servers"] == []  # nothing refused was created

    server_id = await _boot(api, "plain")  # at 2.1: described by its name, as Nova does before 2.19
    assert (await _shown(api, server_id, V219))["description"] == "plain"
    status, body = await api.put(f"{SERVERS}/{server_id}", {"server": {"description": "db"}}, headers=V218)
    assert status == 400 and UNEXPECTED in body["badRequest"]["message"]
    await _until(api, server_id, "ACTIVE")
    status, body = await api.post(
        f"{SERVERS}/{server_id}/action", {"rebuild": {"imageRef": image, "description": "x"}}, headers=V218
    )
    assert status == 400 and UNEXPECTED in body["badRequest"]["message"]
    shown = await _shown(api, server_id, V219)
    assert (shown["description"], shown["status"]) == ("plain", "ACTIVE")  # nothing changed
