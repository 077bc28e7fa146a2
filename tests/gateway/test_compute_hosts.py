"""An operator's view of the compute hosts: os-services (and disabling one), os-hypervisors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import Api

SERVICES = "/compute/v2.1/os-services"
HYPERVISORS = "/compute/v2.1/os-hypervisors"


async def boot(api: Api, name: str) -> dict[str, Any]:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    server = {"name": name, "imageRef": images["images"][0]["id"], "flavorRef": "1"}
    status, created = await api.post("/compute/v2.1/servers", {"server": server})
    assert status == 202, created
    for _ in range(400):
        _, shown = await api.get(f"/compute/v2.1/servers/{created['server']['id']}")
        if shown["server"]["status"] in ("ACTIVE", "ERROR"):
            return dict(shown["server"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never settled")


@pytest.mark.nodes(2)
async def test_a_disabled_compute_service_gets_no_new_instances_until_enabled(api: Api, cloud) -> None:
    await api.login()
    for path in (SERVICES, HYPERVISORS, f"{HYPERVISORS}/detail", f"{HYPERVISORS}/statistics"):
        status, body = await api.get(path)
        assert status == 403 and "Policy doesn't allow compute:admin" in body["forbidden"]["message"], body
    status, _ = await api.put(f"{SERVICES}/disable", {"host": "node-1", "binary": "nova-compute"})
    assert status == 403

    await api.login("admin", "admin-secret", "admin")
    _, listed = await api.get(SERVICES)
    assert [(s["host"], s["binary"], s["status"], s["state"]) for s in listed["services"]] == [
        ("node-1", "nova-compute", "enabled", "up"),
        ("node-2", "nova-compute", "enabled", "up"),
    ]
    change = {"host": "node-1", "binary": "nova-compute", "disabled_reason": "disk swap"}
    status, changed = await api.put(f"{SERVICES}/disable-log-reason", change)
    assert (status, changed["service"]) == (
        200,
        {"host": "node-1", "binary": "nova-compute", "status": "disabled", "disabled_reason": "disk swap"},
    )
    _, filtered = await api.get(f"{SERVICES}?host=node-1")
    [service] = filtered["services"]
    assert (service["status"], service["disabled_reason"]) == ("disabled", "disk swap")
    placed = [(await boot(api, f"after-disable-{n}"))["OS-EXT-SRV-ATTR:host"] for n in range(4)]
    assert placed == ["node-2"] * 4

    status, changed = await api.put(f"{SERVICES}/enable", {"host": "node-1", "binary": "nova-compute"})
    assert status == 200 and changed["service"]["status"] == "enabled"
    _, detail = await api.get(f"{HYPERVISORS}/detail")
    by_host = {h["hypervisor_hostname"]: h for h in detail["hypervisors"]}
    assert by_host["node-2"]["running_vms"] == 4 and by_host["node-1"]["running_vms"] == 0
    assert by_host["node-2"]["memory_mb_used"] == 4 * 512 and by_host["node-2"]["vcpus_used"] == 4
    assert by_host["node-1"]["service"]["disabled_reason"] is None
    _, one = await api.get(f"{HYPERVISORS}/{by_host['node-2']['id']}")
    assert one["hypervisor"] == by_host["node-2"]
    status, uptime = await api.get(f"{HYPERVISORS}/{by_host['node-2']['id']}/uptime")
    assert status == 501 and "does not implement host uptime" in uptime["notImplemented"]["message"]
    assert await api.get("/compute/v2.1/os-aggregates") == (200, {"aggregates": []})
    _, statistics = await api.get(f"{HYPERVISORS}/statistics")
    assert statistics["hypervisor_statistics"]["count"] == 2
    assert statistics["hypervisor_statistics"]["running_vms"] == 4


async def test_bad_service_changes_are_refused_and_change_nothing(api: Api, cloud) -> None:
    await api.login("admin", "admin-secret", "admin")
    for body, status in (
        ({"host": "nowhere", "binary": "nova-compute"}, 404),
        ({"host": "node-1", "binary": "nova-scheduler"}, 404),
        ({"host": "node-1"}, 400),
        ({"host": "node-1", "binary": "nova-compute", "disabled_reason": "x" * 256}, 400),
    ):
        answered, error = await api.put(f"{SERVICES}/disable-log-reason", body)
        assert answered == status, (body, error)
    _, listed = await api.get(SERVICES)
    assert [s["status"] for s in listed["services"]] == ["enabled"]
    assert (await api.get(f"{HYPERVISORS}/12345"))[0] == 404
