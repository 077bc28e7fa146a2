"""Cinder's quota sets over real HTTP: shown, set and deleted (members read their own, admins any),
and enforced where volumes, snapshots and extends are recorded, concurrent creates included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.volume import VolumeActor
from runtime.config import Config
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import Api

UNLIMITED = {
    "volumes": -1,
    "gigabytes": -1,
    "snapshots": -1,
    "per_volume_gigabytes": -1,
    "backups": -1,
    "backup_gigabytes": -1,
    "groups": -1,
}


@pytest.fixture
async def demo(start_actor, config: Config, api: Api) -> Api:
    """The identity and volume actors (checking tokens and policies) behind the gateway, and
    ``api`` logged in as demo."""
    await start_actor(IdentityActor, config, secure=True)
    await start_actor(VolumeActor, config, secure=True)
    await api.login()
    return api


@pytest.fixture
async def admin(demo: Api) -> Api:
    admin = Api(demo.session, demo.base_url)
    await admin.login("admin", ADMIN_PASSWORD, "admin")
    return admin


def quotas(caller: Api, target: str | None, suffix: str = "") -> str:
    return f"/volume/v3/{caller.project_id}/os-quota-sets/{target}{suffix}"


def volumes(caller: Api, suffix: str = "") -> str:
    return f"/volume/v3/{caller.project_id}/volumes{suffix}"


async def usage(caller: Api, target: str | None) -> dict[str, Any]:
    status, body = await caller.get(quotas(caller, target, "?usage=True"))
    assert status == 200, body
    shown: dict[str, Any] = body["quota_set"]
    return shown


async def create(caller: Api, size: int = 1) -> tuple[int, Any]:
    return await caller.post(volumes(caller), {"volume": {"size": size}})


def pool_files(config: Config) -> list[str]:
    pool = config.data_dir / "volumes"
    return sorted(path.name for path in pool.iterdir()) if pool.exists() else []


async def test_quota_sets_are_shown_to_members_and_set_and_deleted_by_admins(demo: Api, admin: Api) -> None:
    project = demo.project_id
    assert await demo.get(quotas(demo, project)) == (200, {"quota_set": {"id": project, **UNLIMITED}})
    assert await demo.get(quotas(demo, project, "/defaults")) == (
        200,
        {"quota_set": {"id": project, **UNLIMITED}},
    )
    shown = await usage(demo, project)
    assert shown.pop("id") == project
    assert shown == {name: {"limit": -1, "in_use": 0, "reserved": 0, "allocated": 0} for name in UNLIMITED}

    assert (await admin.get(quotas(admin, "defaults")))[0] == 404  # a sibling route's word is no project's id
    for path in (quotas(demo, admin.project_id), quotas(demo, admin.project_id, "/defaults")):
        status, body = await demo.get(path)
        assert status == 403 and "quotas:show" in body["forbidden"]["message"], body
    for method in ("PUT", "DELETE"):
        status, body = await demo.request(method, quotas(demo, project), json={"quota_set": {"volumes": 50}})
        assert status == 403 and "forbidden" in body, body
    assert (await demo.get(quotas(demo, project)))[1]["quota_set"]["volumes"] == -1

    status, body = await admin.put(
        quotas(admin, project), {"quota_set": {"volumes": 5, "gigabytes": 100, "tenant_id": project}}
    )
    assert (status, body) == (200, {"quota_set": {**UNLIMITED, "volumes": 5, "gigabytes": 100}})
    assert (await admin.get(quotas(admin, project)))[1]["quota_set"]["volumes"] == 5
    assert (await demo.get(quotas(demo, project)))[1]["quota_set"]["gigabytes"] == 100
    assert (await admin.get(quotas(admin, admin.project_id)))[1]["quota_set"]["volumes"] == -1
    assert (await demo.get(quotas(demo, project, "/defaults")))[1]["quota_set"]["volumes"] == -1

    for bad in (
        {"quota_set": {"backups": 5}},  # nothing here makes backups
        {"quota_set": {"groups": 1, "volumes": 1}},
        {"quota_set": {"volumes_fast": 1}},
        {"quota_set": {"volumes": -2}},
        {"quota_set": {"volumes": "many"}},
        {"volumes": 1},
    ):
        status, body = await admin.put(quotas(admin, project), bad)
        assert status == 400 and body["badRequest"]["message"], (bad, body)
    status, body = await admin.put(quotas(admin, project), {"quota_set": {"backups": 5}})
    assert "backups" in body["badRequest"]["message"]
    assert (await admin.put(quotas(admin, project), {"quota_set": {"backups": -1}}))[0] == 200
    assert (await demo.get(quotas(demo, project)))[1]["quota_set"] == {
        "id": project,
        **UNLIMITED,
        "volumes": 5,
        "gigabytes": 100,
    }

    status, body = await admin.delete(quotas(admin, project))
    assert (status, body) == (200, b"")
    assert await demo.get(quotas(demo, project)) == (200, {"quota_set": {"id": project, **UNLIMITED}})


async def test_fifty_concurrent_creates_against_a_limit_of_five_make_exactly_five(
    demo: Api, admin: Api, config: Config
) -> None:
    project = demo.project_id
    assert (await admin.put(quotas(admin, project), {"quota_set": {"volumes": 5}}))[0] == 200
    answers = await asyncio.gather(*(create(demo) for _ in range(50)))
    statuses = [status for status, _ in answers]
    assert statuses.count(202) == 5 and statuses.count(413) == 45, sorted(set(statuses))
    refused = next(body for status, body in answers if status == 413)
    assert refused == {
        "overLimit": {
            "code": 413,
            "message": "VolumeLimitExceeded: Maximum number of volumes allowed (5) exceeded for quota"
            " 'volumes'.",
        }
    }
    made = [body["volume"]["id"] for status, body in answers if status == 202]
    listed = (await demo.get(volumes(demo)))[1]["volumes"]
    assert sorted(volume["id"] for volume in listed) == sorted(made)
    assert pool_files(config) == sorted(f"{volume_id}.raw" for volume_id in made)
    shown = await usage(demo, project)
    assert shown["volumes"] == {"limit": 5, "in_use": 5, "reserved": 0, "allocated": 0}
    assert shown["gigabytes"]["in_use"] == 5

    status, body = await admin.put(quotas(admin, project), {"quota_set": {"volumes": 4}})
    assert status == 409 and "Current usage is 5" in body["conflictingRequest"]["message"]
    assert (await demo.get(quotas(demo, project)))[1]["quota_set"]["volumes"] == 5

    assert (await demo.delete(volumes(demo, f"/{made[0]}")))[0] == 202
    assert (await usage(demo, project))["volumes"]["in_use"] == 4  # a deleted volume stops counting
    assert (await create(demo))[0] == 202
    assert (await create(demo))[0] == 413
    assert (await admin.delete(quotas(admin, project)))[0] == 200
    assert (await create(demo))[0] == 202


async def test_gigabytes_and_per_volume_gigabytes_limit_creates_extends_and_snapshots(
    demo: Api, admin: Api
) -> None:
    project = demo.project_id
    assert (await admin.put(quotas(admin, project), {"quota_set": {"gigabytes": 3}}))[0] == 200
    status, body = await create(demo, 2)
    assert status == 202, body
    volume_id = body["volume"]["id"]
    status, body = await create(demo, 2)
    assert status == 413 and body["overLimit"]["message"] == (
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota."
        " Requested 2G, quota is 3G and 2G has been consumed."
    )
    status, body = await demo.post(volumes(demo, f"/{volume_id}/action"), {"os-extend": {"new_size": 4}})
    assert status == 413 and "Requested 2G, quota is 3G" in body["overLimit"]["message"]
    volume = (await demo.get(volumes(demo, f"/{volume_id}")))[1]["volume"]
    assert (volume["status"], volume["size"]) == ("available", 2)  # as it was
    snapshots = f"/volume/v3/{project}/snapshots"
    status, body = await demo.post(snapshots, {"snapshot": {"volume_id": volume_id}})
    assert status == 413 and "VolumeSizeExceedsAvailableQuota" in body["overLimit"]["message"]
    assert (await demo.get(snapshots))[1] == {"snapshots": []}

    status, _ = await demo.post(volumes(demo, f"/{volume_id}/action"), {"os-extend": {"new_size": 3}})
    assert status == 202
    shown = await usage(demo, project)
    assert shown["gigabytes"] == {"limit": 3, "in_use": 3, "reserved": 0, "allocated": 0}
    assert shown["volumes"]["in_use"] == 1
    status, body = await admin.put(quotas(admin, project), {"quota_set": {"gigabytes": 2}})
    assert (
        status == 409
        and "Current usage is 3 and the requested limit is 2" in body["conflictingRequest"]["message"]
    )

    limits = {"gigabytes": -1, "per_volume_gigabytes": 3}
    assert (await admin.put(quotas(admin, project), {"quota_set": limits}))[0] == 200
    status, body = await create(demo, 4)
    assert status == 413 and body["overLimit"]["message"] == (
        "VolumeSizeExceedsLimit: Requested volume size 4G is larger than maximum allowed limit 3G."
    )
    status, body = await demo.post(volumes(demo, f"/{volume_id}/action"), {"os-extend": {"new_size": 4}})
    assert status == 413 and "VolumeSizeExceedsLimit" in body["overLimit"]["message"]
    assert (await create(demo, 3))[0] == 202
    assert (await usage(demo, project))["gigabytes"]["in_use"] == 6


async def test_snapshots_count_against_snapshots_and_gigabytes_until_deleted(demo: Api, admin: Api) -> None:
    project = demo.project_id
    status, body = await create(demo, 2)
    volume_id = body["volume"]["id"]
    assert (await admin.put(quotas(admin, project), {"quota_set": {"snapshots": 1}}))[0] == 200
    snapshots = f"/volume/v3/{project}/snapshots"
    status, body = await demo.post(snapshots, {"snapshot": {"volume_id": volume_id, "name": "one"}})
    assert status == 202, body
    snapshot_id = body["snapshot"]["id"]
    status, body = await demo.post(snapshots, {"snapshot": {"volume_id": volume_id, "name": "two"}})
    assert (status, body) == (
        413,
        {
            "overLimit": {
                "code": 413,
                "message": "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded",
            }
        },
    )
    assert [snapshot["name"] for snapshot in (await demo.get(snapshots))[1]["snapshots"]] == ["one"]
    shown = await usage(demo, project)
    assert shown["snapshots"] == {"limit": 1, "in_use": 1, "reserved": 0, "allocated": 0}
    assert shown["gigabytes"]["in_use"] == 4  # the volume's 2 GiB and its snapshot's

    assert (await demo.delete(f"{snapshots}/{snapshot_id}"))[0] == 202
    shown = await usage(demo, project)
    assert (shown["snapshots"]["in_use"], shown["gigabytes"]["in_use"]) == (0, 2)
    assert (await demo.post(snapshots, {"snapshot": {"volume_id": volume_id}}))[0] == 202
