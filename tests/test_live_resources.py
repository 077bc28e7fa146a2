"""A live change of vCPUs and RAM (``aiostack:setResources``): up and down within the flavor's
maxima on a running domain, its claim set atomically, refusals that change nothing, and changes
whose conductor or node dies midway ending with one claim of the size the domain has.

The cloud is test_resize's (every actor in this process, a real nats-server, a test-driver node,
the gateway over loopback HTTP; a conductor task timeout of 3 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from aiostack import BadRequest, Client, ResourceFailed
from api.conductor import ConductorOperator
from api.scheduler import Scheduler
from deploy.audit import audit
from gateway.compute.live_resources import SET_RESOURCES_FROM
from node.actor import NodeActor
from tests.helpers import DEMO_PASSWORD
from tests.test_resize import TASK_TIMEOUT, ResizeCloud, events_until_active, resize_cloud, steps_taken

__all__ = ["resize_cloud"]  # the fixture, used by these tests

VERSION = {"OpenStack-API-Version": f"compute {SET_RESOURCES_FROM[0]}.{SET_RESOURCES_FROM[1]}"}
BELOW = {"OpenStack-API-Version": f"compute {SET_RESOURCES_FROM[0]}.{SET_RESOURCES_FROM[1] - 1}"}
MAXIMA = {"aiostack:max_vcpus": "4", "aiostack:max_ram_mb": "2048"}


async def set_maxima(cloud: ResizeCloud, flavor: str = "1", maxima: dict[str, str] = MAXIMA) -> None:
    status, body = await cloud.api.post(
        f"/compute/v2.1/flavors/{flavor}/os-extra_specs", {"extra_specs": maxima}
    )
    assert status == 200, body


async def change(cloud: ResizeCloud, server_id: str, **size: int) -> tuple[int, Any]:
    path = f"/compute/v2.1/servers/{server_id}/action"
    return await cloud.api.post(path, {"aiostack:setResources": size}, headers=VERSION)


async def shown(cloud: ResizeCloud, server_id: str) -> dict[str, Any]:
    status, body = await cloud.api.get(f"/compute/v2.1/servers/{server_id}", headers=VERSION)
    assert status == 200, body
    return dict(body["server"])


async def settled(cloud: ResizeCloud, server_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The server once no task runs."""
    async with asyncio.timeout(timeout):
        while (server := await shown(cloud, server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.05)
    return server


async def live_size(cloud: ResizeCloud, server_id: str) -> tuple[int, int, int, int]:
    """The running guest's vCPUs and MiB, and its definition's, as libvirt has them."""
    assert cloud.node is not None
    domain = await cloud.node.hypervisor.existing(server_id)
    live_vcpus = domain.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    live_mib = domain.info()[2] // 1024
    root = ET.fromstring(await cloud.node.hypervisor.persistent_xml(domain))
    vcpu, memory = root.find("vcpu"), root.find("currentMemory")
    assert vcpu is not None and memory is not None and memory.text
    return live_vcpus, live_mib, int(vcpu.get("current", vcpu.text or 0)), int(memory.text) // 1024


async def test_a_running_server_gets_more_then_fewer_vcpus_and_ram_live(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    assert (await shown(cloud, server_id))["aiostack:resources"] == {"vcpus": 1, "ram": 512}
    assert await cloud.domain_size(server_id) == (4, 2048, True)  # the maxima, for hot-plug
    assert await live_size(cloud, server_id) == (1, 512, 1, 512)

    assert (await change(cloud, server_id, vcpus=3, ram=1536))[0] == 202
    server = await settled(cloud, server_id)
    assert server["status"] == "ACTIVE" and server["aiostack:resources"] == {"vcpus": 3, "ram": 1536}
    assert await live_size(cloud, server_id) == (3, 1536, 3, 1536)
    assert await cloud.claims(server_id) == [(3, 1536, 1, False)]
    assert await cloud.host_used() == (3, 1536, 1)

    assert (await change(cloud, server_id, vcpus=1))[0] == 202
    server = await settled(cloud, server_id)
    assert server["aiostack:resources"] == {"vcpus": 1, "ram": 1536}
    assert await live_size(cloud, server_id) == (1, 1536, 1, 1536)
    assert await cloud.claims(server_id) == [(1, 1536, 1, False)]
    assert ("setResources", "Success") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_sizes_outside_the_flavors_range_and_flavors_without_maxima_are_refused(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud, maxima={"aiostack:max_vcpus": "4"})
    server_id = await cloud.boot()
    for size, words in (
        ({"vcpus": 5}, "Invalid vCPUs 5: the flavor m1.tiny allows 1 to 4."),
        ({"ram": 1024}, "allows no live change of its RAM (MB)"),
        ({"vcpus": 0}, "vcpus"),
    ):
        status, body = await change(cloud, server_id, **size)
        assert status == 400 and words in json.dumps(body), (size, body)
    plain = await cloud.boot(name="plain", flavor="2")
    status, body = await change(cloud, plain, vcpus=2)
    assert status == 400 and "The flavor m1.small of the server allows no live change" in json.dumps(body)
    status, body = await cloud.api.post(
        "/compute/v2.1/flavors/2/os-extra_specs", {"extra_specs": {"aiostack:max_ram_mb": "1024"}}
    )
    assert status == 400 and "no smaller than the flavor's ram (2048)" in json.dumps(body), body
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]
    assert await live_size(cloud, server_id) == (1, 512, 1, 512)
    assert [action for action, _ in await cloud.actions(server_id)] == ["create"]


async def test_the_action_is_served_from_its_microversion_only(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    path = f"/compute/v2.1/servers/{server_id}/action"
    status, body = await cloud.api.post(path, {"aiostack:setResources": {"vcpus": 2}}, headers=BELOW)
    assert status == 400 and "There is no such action: aiostack:setResources" in json.dumps(body), body
    status, body = await cloud.api.get(f"/compute/v2.1/servers/{server_id}", headers=BELOW)
    assert "aiostack:resources" not in body["server"]
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]


async def test_quota_room_state_and_other_projects_refuse_a_change_that_changes_nothing(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    project = (await shown(cloud, server_id))["tenant_id"]
    quota = f"/compute/v2.1/os-quota-sets/{project}"
    assert (await cloud.api.put(quota, {"quota_set": {"cores": 2}}))[0] == 200
    status, body = await change(cloud, server_id, vcpus=3)
    assert status == 403 and "Quota exceeded for cores: Requested 2, but already used 1 of 2" in json.dumps(
        body
    )
    assert (await cloud.api.put(quota, {"quota_set": {"cores": 200}}))[0] == 200

    filler = await Scheduler.client(cloud.bus).select_destinations(
        instance_uuid="filler", vcpus=1, memory_mb=64000, disk_gb=0
    )
    assert filler["host"] == "node-1"
    status, body = await change(cloud, server_id, ram=2048)  # 1536 MB more; the host has 1024 free
    assert status == 409 and "its host node-1 short of memory_mb" in json.dumps(body), body
    server = await settled(cloud, server_id)
    assert server["status"] == "ACTIVE" and server["aiostack:resources"] == {"vcpus": 1, "ram": 512}
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]
    assert await live_size(cloud, server_id) == (1, 512, 1, 512)
    assert ("setResources", "Error") in await cloud.actions(server_id)
    await Scheduler.client(cloud.bus).release(instance_uuid="filler")

    assert (await cloud.act(server_id, {"os-stop": None}))[0] == 202
    await cloud.until(server_id, "SHUTOFF")
    status, body = await change(cloud, server_id, vcpus=2)
    assert status == 409 and "Cannot 'setResources' instance" in json.dumps(body), body

    await cloud.api.login("demo", DEMO_PASSWORD, "demo")
    status, body = await change(cloud, server_id, vcpus=2)
    assert status == 404, body
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_change_libvirt_refuses_leaves_the_server_as_it_was(
    resize_cloud: ResizeCloud, gateway_url: str
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud, maxima={"aiostack:max_vcpus": "40"})
    server_id = await cloud.boot()
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        with pytest.raises(ResourceFailed, match="the change was refused: it has 1 vCPUs, 512 MB"):
            await client.servers.set_resources(server_id, vcpus=40)  # the test driver takes 32 at most
    server = await settled(cloud, server_id)
    assert server["status"] == "ACTIVE" and server["aiostack:resources"] == {"vcpus": 1, "ram": 512}
    assert await live_size(cloud, server_id) == (1, 512, 1, 512)
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]
    steps = await ConductorOperator.client(cloud.bus).list_action_events(instance_uuid=server_id)
    (refused,) = [step for step in steps if step["event"] == "set_resources"]
    assert refused["result"] == "Error" and "exceeds maximum" in (refused["details"] or "")
    assert ("setResources", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_every_step_is_an_event_and_an_action_step(resize_cloud: ResizeCloud, gateway_url: str) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    async with cloud.api.session.ws_connect(
        f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers
    ) as ws:
        assert (await change(cloud, server_id, vcpus=2, ram=1024))[0] == 202
        seen = await events_until_active(ws, server_id, "task_state")
    assert seen == [
        ("instance.resources_claiming", "resources_claiming"),
        ("instance.resources_changing", "resources_changing"),
        ("instance.active", None),
    ]
    assert await steps_taken(cloud.bus, server_id) == [
        ("setResources", "set_claim_size"),
        ("setResources", "set_resources:sent"),
        ("setResources", "set_resources"),
    ]


async def test_a_change_goes_on_after_its_conductor_restarts(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    conductor = cloud.conductor
    assert conductor is not None
    assert (await change(cloud, server_id, vcpus=2, ram=1024))[0] == 202
    await conductor.stop()  # the node's report of its step waits for a conductor, or is lost
    await asyncio.sleep(1.0)
    await cloud.start_conductor(0.0)
    server = await settled(cloud, server_id, timeout=TASK_TIMEOUT + 20)
    assert server["status"] == "ACTIVE" and server["aiostack:resources"] == {"vcpus": 2, "ram": 1024}
    assert await live_size(cloud, server_id) == (2, 1024, 2, 1024)
    assert await cloud.claims(server_id) == [(2, 1024, 1, False)]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_change_whose_node_is_gone_ends_in_error_with_the_size_the_domain_has(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    assert cloud.node is not None
    await cloud.node.stop()  # the node process is gone: the change's cast is never taken
    assert (await change(cloud, server_id, vcpus=3, ram=2048))[0] == 202
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT + 15)
    assert "made no progress" in server["fault"]["message"]
    assert server["aiostack:resources"] == {"vcpus": 1, "ram": 512}  # never taken: the old size
    assert await cloud.claims(server_id) == [(1, 512, 1, False)]
    assert ("setResources", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_change_whose_node_restarts_midway_ends_at_the_new_size(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    assert cloud.node is not None
    await cloud.node.stop()  # the node process dies: its cast is lost, and the test driver's domain
    assert (await change(cloud, server_id, vcpus=4, ram=1024))[0] == 202
    assert (await shown(cloud, server_id))["OS-EXT-STS:task_state"] == "resources_changing"
    node = await cloud.start_actor(
        NodeActor,
        cloud.config,
        host="node-1",
        libvirt_uri=cloud.node.hypervisor.uri,
        secure=True,
        report_interval=0.5,
    )
    assert isinstance(node, NodeActor)
    cloud.node = node  # it defines its domains again from its store; the watch sends the change again
    server = await settled(cloud, server_id, timeout=TASK_TIMEOUT + 20)
    assert server["status"] == "ACTIVE" and server["aiostack:resources"] == {"vcpus": 4, "ram": 1024}
    assert await live_size(cloud, server_id) == (4, 1024, 4, 1024)
    assert await cloud.claims(server_id) == [(4, 1024, 1, False)]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_change_its_node_took_settles_at_the_new_size_when_the_guest_stops(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    scheduler = Scheduler.client(cloud.bus)
    assert (await change(cloud, server_id, vcpus=2))[0] == 202
    await settled(cloud, server_id)
    assert cloud.node is not None
    domain = await cloud.node.hypervisor.existing(server_id)
    await cloud.node.hypervisor.virt(domain.destroy)  # the guest stops: STOPPED, SHUTOFF
    server = await cloud.until(server_id, "SHUTOFF")
    assert server["aiostack:resources"] == {"vcpus": 2, "ram": 512}
    assert (await scheduler.get_allocation(instance_uuid=server_id))["vcpus"] == 2
    assert (await audit(cloud.bus)).problems == {}


async def test_deleting_a_changed_server_gives_its_claim_back(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    assert (await change(cloud, server_id, ram=1024))[0] == 202
    await settled(cloud, server_id)
    await cloud.delete(server_id)
    assert await cloud.claims(server_id) == []
    assert await cloud.host_used() == (0, 0, 0)


async def test_the_sdk_and_the_cli_change_a_server_and_wait_for_it(
    resize_cloud: ResizeCloud, gateway_url: str
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot(name="sized")
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        server = await client.servers.set_resources("sized", vcpus=2, ram=1024)
        assert (server.status, server.vcpus, server.ram) == ("ACTIVE", 2, 1024)
        with pytest.raises(BadRequest):
            await client.servers.set_resources("sized", vcpus=5)
    environment = {
        **os.environ,
        "AIOSTACK_URL": gateway_url,
        "OS_USERNAME": "admin",
        "OS_PASSWORD": "admin-secret",
        "OS_PROJECT_NAME": "admin",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", "server", "set-resources", "sized", "--vcpus", "3", "--wait",
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode == 0 and "sized: ACTIVE (3 vCPUs, 1024 MB)" in output, output
    assert await live_size(cloud, server_id) == (3, 1024, 3, 1024)
    assert await cloud.claims(server_id) == [(3, 1024, 1, False)]


async def test_the_audit_finds_a_claim_or_a_running_domain_of_another_size_than_recorded(
    resize_cloud: ResizeCloud,
) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    server_id = await cloud.boot()
    await Scheduler.client(cloud.bus).set_claim_size(instance_uuid=server_id, vcpus=2, memory_mb=512)
    assert cloud.node is not None
    domain = await cloud.node.hypervisor.existing(server_id)
    domain.setMemoryFlags(1024 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # behind the conductor's back
    problems = (await audit(cloud.bus, recheck_after=0.1)).problems
    assert problems == {
        f"claim-size:{server_id}": (
            f"instance {server_id} has 1 vCPUs, 512 MB but its claim on node-1 is 2 vCPUs, 512 MB"
        ),
        f"size:{server_id}": (
            f"instance {server_id} has 1 vCPUs, 512 MB but its running domain on node-1 has 1 vCPUs, 1024 MB"
        ),
    }


async def test_a_locked_server_is_refused_and_only_admins_set_the_maxima(resize_cloud: ResizeCloud) -> None:
    cloud = resize_cloud
    await set_maxima(cloud)
    await cloud.api.login("demo", DEMO_PASSWORD, "demo")
    status, body = await cloud.api.post(
        "/compute/v2.1/flavors/1/os-extra_specs", {"extra_specs": {"aiostack:max_vcpus": "8"}}
    )
    assert status == 403, body
    status, body = await cloud.api.get("/compute/v2.1/flavors/1/os-extra_specs")
    assert status == 200 and body["extra_specs"] == MAXIMA, body
    server_id = await cloud.boot(name="owned")
    assert (await cloud.act(server_id, {"lock": None}))[0] == 202
    status, body = await change(cloud, server_id, vcpus=2)
    assert status == 409 and f"Instance {server_id} is locked" in json.dumps(body), body
    assert [action for action, _ in await cloud.actions(server_id)] == ["create", "lock"]
