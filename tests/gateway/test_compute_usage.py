"""Usage reports (os-simple-tenant-usage): hours each instance lived in a period, times its flavor."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import Api

USAGE = "/compute/v2.1/os-simple-tenant-usage"
SERVERS = "/compute/v2.1/servers"
NOVA_TIME = "%Y-%m-%dT%H:%M:%S.%f"
WIDE = "start=2000-01-01T00:00:00&end=2999-01-01T00:00:00"


async def boot(api: Api, name: str) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    server = {"name": name, "imageRef": images["images"][0]["id"], "flavorRef": "1"}
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202, created
    server_id = str(created["server"]["id"])
    for _ in range(400):
        _, shown = await api.get(f"{SERVERS}/{server_id}")
        if shown["server"]["status"] in ("ACTIVE", "ERROR"):
            assert shown["server"]["status"] == "ACTIVE", shown
            return server_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never settled")


async def delete(api: Api, server_id: str) -> None:
    assert (await api.delete(f"{SERVERS}/{server_id}"))[0] == 204
    for _ in range(400):
        if (await api.get(f"{SERVERS}/{server_id}"))[0] == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{server_id} was never deleted")


def at(when: str) -> datetime:
    return datetime.strptime(when, NOVA_TIME)


async def test_a_projects_usage_counts_its_live_and_deleted_instances_for_the_hours_they_lived(
    api: Api, cloud: Any
) -> None:
    await api.login()
    demo = api.project_id
    kept = await boot(api, "usage-kept")
    gone = await boot(api, "usage-gone")
    await delete(api, gone)

    status, body = await api.get(f"{USAGE}/{demo}?{WIDE}")
    assert status == 200, body
    usage = body["tenant_usage"]
    by_id = {server["instance_id"]: server for server in usage["server_usages"]}
    assert set(by_id) == {kept, gone}
    alive, deleted = by_id[kept], by_id[gone]
    assert (alive["name"], alive["state"], alive["ended_at"]) == ("usage-kept", "active", None)
    assert (deleted["name"], deleted["state"]) == ("usage-gone", "terminated")
    assert at(deleted["ended_at"]) >= at(deleted["started_at"])
    lived = (at(deleted["ended_at"]) - at(deleted["started_at"])).total_seconds()
    assert deleted["hours"] == pytest.approx(lived / 3600) and deleted["uptime"] == int(lived)
    for server in (alive, deleted):
        assert server["tenant_id"] == demo and server["flavor"] == "m1.tiny"
        assert (server["vcpus"], server["memory_mb"], server["local_gb"]) == (1, 512, 1)
    assert alive["hours"] > 0  # it lives until the period's end: now
    hours = alive["hours"] + deleted["hours"]
    assert usage["tenant_id"] == demo
    assert usage["total_hours"] == pytest.approx(hours)
    assert usage["total_vcpus_usage"] == pytest.approx(hours)
    assert usage["total_memory_mb_usage"] == pytest.approx(512 * hours)
    assert usage["total_local_gb_usage"] == pytest.approx(hours)
    assert usage["start"] == "2000-01-01T00:00:00.000000"
    assert at(usage["stop"]) >= at(alive["started_at"])  # the end is capped at now

    # a period that ends when the first of them started holds neither
    first = min(alive["started_at"], deleted["started_at"])
    assert await api.get(f"{USAGE}/{demo}?start=2000-01-01T00:00:00&end={quote(first)}") == (
        200,
        {"tenant_usage": {}},
    )
    # a period that starts when the deleted one ended holds only the live one
    status, body = await api.get(f"{USAGE}/{demo}?start={quote(deleted['ended_at'])}&end=2999-01-01T00:00:00")
    assert [server["instance_id"] for server in body["tenant_usage"]["server_usages"]] == [kept]


async def test_every_projects_usage_is_for_admins_and_a_projects_for_its_members(
    api: Api, cloud: Any
) -> None:
    await api.login()
    demo = api.project_id
    server_id = await boot(api, "usage-listed")
    status, body = await api.get(f"{USAGE}?{WIDE}")
    assert status == 403
    assert body["forbidden"]["message"] == (
        "Policy doesn't allow os_compute_api:os-simple-tenant-usage:list to be performed."
    )
    await api.login("admin", "admin-secret", "admin")
    admin = api.project_id
    _, listed = await api.get(f"{USAGE}?{WIDE}")
    [summary] = [usage for usage in listed["tenant_usages"] if usage["tenant_id"] == demo]
    assert "server_usages" not in summary and summary["total_hours"] > 0
    _, detailed = await api.get(f"{USAGE}?{WIDE}&detailed=1")
    [usage] = [usage for usage in detailed["tenant_usages"] if usage["tenant_id"] == demo]
    assert [server["instance_id"] for server in usage["server_usages"]] == [server_id]
    _, detailed = await api.get(f"{USAGE}?{WIDE}&detailed=True")  # as openstacksdk asks
    [usage] = [usage for usage in detailed["tenant_usages"] if usage["tenant_id"] == demo]
    assert [server["instance_id"] for server in usage["server_usages"]] == [server_id]
    assert (await api.get(f"{USAGE}/{demo}?{WIDE}"))[0] == 200  # an admin sees any project's

    await api.login()
    status, body = await api.get(f"{USAGE}/{admin}?{WIDE}")
    assert status == 403
    assert "os-simple-tenant-usage:show" in body["forbidden"]["message"]


async def test_bad_periods_are_refused_with_novas_messages(api: Api, cloud: Any) -> None:
    await api.login()
    demo = api.project_id
    now = datetime.now()
    later = (now + timedelta(days=1)).strftime(NOVA_TIME)
    for query, message in (
        ("start=yesterday&end=2999-01-01T00:00:00", "Invalid datetime string: Datetime is in invalid format"),
        ("start=2026-01-01T00:00:00Z", "Invalid datetime string: Datetime is in invalid format"),
        ("start=2026-02-30T00:00:00", "Invalid datetime string: Datetime is in invalid format"),
        ("end=2026-01-01%2000:00:00", "Invalid datetime string: Datetime is in invalid format"),
        ("end=2026-01-01T00:00:00%0A", "Invalid datetime string: Datetime is in invalid format"),
        (
            f"start={later}&end=2000-01-01T00:00:00",
            "Invalid start time. The start time cannot occur after the end time.",
        ),
        (
            "start=2020-01-01 00:00:00.000000&end=2020-01-01 00:00:00.000000",
            "Invalid start time. The start time cannot occur after the end time.",
        ),
    ):
        for path in (f"{USAGE}/{demo}", USAGE):
            status, body = await api.get(f"{path}?{query}")
            assert (status, body["badRequest"]["message"]) == (400, message), (path, query)
