"""A stolen node credential against a real `aiostack up --nodes 2` (issue 13, finding 4).

Connected as node-1 with its own credentials file (``<data>/credentials/node-1.json``), an
attacker tries what node-1's credential used to allow: report node-2's running guest SHUTOFF,
read another tenant's private image bytes and network, list another host's instances. Every
node-facing facet is served per calling host, the host taken from the subject (which only that
node's NATS user may publish to), and the callee acts only on instances recorded on that host,
as their project: so each attempt is refused (by NATS, or ``NotFound``), nothing changes, and
`aiostack audit` stays clean. The legitimate flows (boots with a network and a boot volume, a
volume attach, deletes, a node's reconcile after it was killed) still work. A node that lies
about its own instance's power state is caught by the audit, which compares each node's
domains with the conductor's records.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from actors.image import TINY_ID
from api.conductor import Compute, ConductorForNodes
from api.image import ImageForNodes, ImageReader
from api.net import Net, NetForNodes
from api.node import Node
from api.volume import VolumeAttacher
from bus import Bus, CallTimeout, InvalidRequest, NotFound
from deploy.chaos import victim_pid
from deploy.launch import RunningCloud, aiostack_up
from runtime.states import Lifecycle
from tests.helpers import Api, aiostack_audit

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-secret", "AIOSTACK_DEMO_PASSWORD": "demo-secret"}
RUNNING = 1
"""libvirt's VIR_DOMAIN_RUNNING."""


@dataclass
class TwoNodes:
    cloud: RunningCloud
    demo: Api
    admin: Api
    operator: Bus
    """The operator's bus (every subject)."""
    node_1: Bus
    """A connection with node-1's own credentials file: what a stolen credential gives."""


@pytest.fixture(scope="module")
async def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TwoNodes]:
    data_dir = tmp_path_factory.mktemp("two-nodes")
    async with (
        aiostack_up(data_dir, "--nodes", "2", "--task-timeout", "10", env=PASSWORDS) as cloud,
        aiohttp.ClientSession() as session,
        await Bus.connect(cloud.nats_url, name="operator", credentials=cloud.admin_credentials) as operator,
        await Bus.connect(
            cloud.nats_url, name="stolen", credentials=data_dir / "credentials" / "node-1.json"
        ) as node_1,
    ):
        demo, admin = Api(session, cloud.gateway_url), Api(session, cloud.gateway_url)
        await demo.login("demo", "demo-secret")
        await admin.login("admin", "admin-secret")
        yield TwoNodes(cloud, demo, admin, operator, node_1)


async def boot(api: Api, name: str, **server: Any) -> str:
    body = {"server": {"name": name, "imageRef": TINY_ID, "flavorRef": "1", **server}}
    status, created = await api.post("/compute/v2.1/servers", body)
    assert status == 202, created
    return str(created["server"]["id"])


async def wait_status(api: Api, server_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            code, body = await api.get(f"/compute/v2.1/servers/{server_id}")
            if code == 200 and body["server"]["status"] == status:
                return dict(body["server"])
            if status == "DELETED" and code == 404:
                return {}
            await asyncio.sleep(0.1)


async def host_of(bus: Bus, server_id: str) -> str:
    return str((await Compute.client(bus).get_instance(instance_uuid=server_id))["host"])


async def one_on_each_host(setup: TwoNodes) -> dict[str, str]:
    """Boot demo's instances until each host has one; host -> instance (the extra ones deleted)."""
    placed: dict[str, str] = {}
    extra = []
    for number in range(6):
        server_id = await boot(setup.demo, f"vm-{number}")
        await wait_status(setup.demo, server_id, "ACTIVE")
        host = await host_of(setup.operator, server_id)
        if host in placed:
            extra.append(server_id)
        placed.setdefault(host, server_id)
        if len(placed) == 2:
            break
    for server_id in extra:
        await delete(setup.demo, server_id)
    assert sorted(placed) == ["node-1", "node-2"], placed
    return placed


async def delete(api: Api, server_id: str) -> None:
    assert (await api.delete(f"/compute/v2.1/servers/{server_id}"))[0] == 204
    await wait_status(api, server_id, "DELETED")


async def domain_states(bus: Bus, host: str) -> dict[str, int]:
    return {d["uuid"]: d["state"] for d in await Node.client(bus, host=host, timeout=20).list_domains()}


async def refused_by_nats(call: Any) -> None:
    """A call to a subject this user may not publish to: the server drops it, no one answers."""
    with pytest.raises(CallTimeout):
        await call


async def test_a_stolen_node_credential_reaches_only_its_own_hosts_instances(two_nodes: TwoNodes) -> None:
    setup = two_nodes
    placed = await one_on_each_host(setup)
    mine, theirs = placed["node-1"], placed["node-2"]
    as_node_1 = ConductorForNodes.client(setup.node_1, host="node-1")

    # the attack of the issue: node-1 reports node-2's running guest stopped (and more)
    for attempt in (
        as_node_1.sync_power_state(instance_uuid=theirs, running=False),
        as_node_1.domain_event(instance_uuid=theirs, event=Lifecycle.STOPPED, detail=0),
        as_node_1.domain_gone(instance_uuid=theirs),
        as_node_1.task_done(instance_uuid=theirs),
        as_node_1.build_failed(instance_uuid=theirs, message="forged"),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert await as_node_1.task_progress(instance_uuids=[theirs]) == 0
    with pytest.raises(InvalidRequest, match="host"):  # the host is the subject's, not the body's
        await setup.node_1.call(
            "conductor.host.node-1.sync_power_state",
            {"instance_uuid": theirs, "host": "node-2", "running": False},
        )
    # ... and as node-2: NATS refuses node-1's user every subject of another host
    as_node_2 = ConductorForNodes.client(setup.node_1, host="node-2", timeout=1)
    await refused_by_nats(as_node_2.sync_power_state(instance_uuid=theirs, running=False))
    await refused_by_nats(as_node_2.domain_event(instance_uuid=theirs, event=Lifecycle.STOPPED, detail=0))
    await refused_by_nats(as_node_2.task_progress(instance_uuids=[theirs]))
    await refused_by_nats(as_node_2.domain_gone(instance_uuid=theirs))
    await refused_by_nats(as_node_2.list_host_instances())

    # listing another host's instances: only its own, whatever it sends
    assert [i["id"] for i in await as_node_1.list_host_instances()] == [mine]
    with pytest.raises(InvalidRequest, match="host"):
        await setup.node_1.call("conductor.host.node-1.list_host_instances", {"host": "node-2"})

    # another tenant's private image bytes and network (the admin project's; demo's instances only here)
    image_id = await private_image(setup.admin, b"the admin project's secret")
    network_id, subnet_id = await private_network(setup.admin, "10.77.0.0/24")
    images = ImageForNodes.client(setup.node_1, host="node-1")
    net = NetForNodes.client(setup.node_1, host="node-1")
    for attempt in (
        images.get(image_id=image_id, instance_uuid=mine),
        images.read_chunk(image_id=image_id, instance_uuid=mine, offset=0, length=1024),
        images.read_chunk(image_id=TINY_ID, instance_uuid=theirs, offset=0, length=1024),
        net.get_network(network_id=network_id, instance_uuid=mine),
        net.get_subnet(subnet_id=subnet_id, instance_uuid=mine),
        net.get_network(network_id=network_id, instance_uuid=theirs),
        net.deallocate_for_instance(instance_uuid=theirs),
        net.allocate_for_instance(instance_uuid=theirs, requested_networks=[{"uuid": network_id}]),
        VolumeAttacher.client(setup.node_1, host="node-1").detach_all(instance_uuid=theirs),
    ):
        with pytest.raises(NotFound):
            await attempt
    # the facets a node used to reach them by are gone from its permissions
    await refused_by_nats(
        ImageReader.client(setup.node_1, timeout=1).read_chunk(image_id=image_id, offset=0, length=9)
    )
    await refused_by_nats(Net.client(setup.node_1, timeout=1).get_network(network_id=network_id))
    await refused_by_nats(Net.client(setup.node_1, timeout=1).list_networks())
    await refused_by_nats(Compute.client(setup.node_1, timeout=1).list_instances(all_projects=True))
    await wait_for_nothing_in_flight(setup)

    # nothing changed: node-2's guest runs, the conductor says ACTIVE, its port is there, the audit is clean
    assert (await wait_status(setup.demo, theirs, "ACTIVE"))["addresses"]
    assert (await domain_states(setup.operator, "node-2"))[theirs] == RUNNING
    assert [p["device_id"] for p in await Net.client(setup.operator).list_ports(device_id=theirs)] == [theirs]
    code, output = await aiostack_audit(setup.cloud.data_dir)
    assert code == 0 and "clean" in output, output
    for server_id in (mine, theirs):
        await delete(setup.demo, server_id)


async def private_image(api: Api, data: bytes) -> str:
    status, image = await api.post(
        "/image/v2/images", {"name": "private", "disk_format": "raw", "container_format": "bare"}
    )
    assert status == 201 and image["visibility"] == "private", image
    status, _ = await api.put(
        f"/image/v2/images/{image['id']}/file",
        None,
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 204
    return str(image["id"])


async def private_network(api: Api, cidr: str) -> tuple[str, str]:
    status, network = await api.post("/network/v2.0/networks", {"network": {"name": f"net-{cidr}"}})
    assert status == 201, network
    network_id = network["network"]["id"]
    status, subnet = await api.post(
        "/network/v2.0/subnets", {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4}}
    )
    assert status == 201, subnet
    return str(network_id), str(subnet["subnet"]["id"])


async def wait_for_nothing_in_flight(setup: TwoNodes) -> None:
    async with asyncio.timeout(30):
        while True:
            _, body = await setup.demo.get("/compute/v2.1/servers/detail")
            if all(server["OS-EXT-STS:task_state"] is None for server in body["servers"]):
                return
            await asyncio.sleep(0.1)


async def test_boots_volumes_deletes_and_a_reconcile_still_work(two_nodes: TwoNodes) -> None:
    setup = two_nodes
    demo, admin = setup.demo, setup.admin
    network_id, subnet_id = await private_network(demo, "10.88.0.0/24")
    status, volume = await demo.post(f"/volume/v3/{demo.project_id}/volumes", {"volume": {"size": 1}})
    assert status == 202, volume
    boot_volume = volume["volume"]["id"]
    status, volume = await demo.post(f"/volume/v3/{demo.project_id}/volumes", {"volume": {"size": 1}})
    assert status == 202, volume
    later_volume = volume["volume"]["id"]
    # a boot on the project's own network with a volume: the node reads the image, makes the port,
    # reads the network, reserves and attaches the volume, all as node-<n> for this instance
    server_id = await boot(
        demo,
        "with-everything",
        networks=[{"uuid": network_id}],
        block_device_mapping_v2=[
            {"uuid": boot_volume, "source_type": "volume", "destination_type": "volume", "boot_index": -1}
        ],
    )
    server = await wait_status(demo, server_id, "ACTIVE")
    assert list(server["addresses"]) == ["net-10.88.0.0/24"]
    assert server["addresses"]["net-10.88.0.0/24"][0]["addr"].startswith("10.88.0.")
    status, attached = await demo.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": later_volume}},
    )
    assert status == 200, attached
    _, listed = await demo.get(f"/compute/v2.1/servers/{server_id}/os-volume_attachments")
    assert {a["volumeId"] for a in listed["volumeAttachments"]} == {boot_volume, later_volume}
    host = await host_of(setup.operator, server_id)

    # the admin project's private image boots for an admin instance (its own project's image)
    image_id = await private_image(admin, b"\0" * 4096)
    admin_server = await boot(admin, "admin-private-image", imageRef=image_id)
    await wait_status(admin, admin_server, "ACTIVE")

    # its node is killed; `aiostack up` restarts it, it reconciles with the conductor's records of its host
    os.kill(victim_pid(setup.cloud.data_dir, host), signal.SIGKILL)
    async with asyncio.timeout(60):
        while True:
            try:
                await Node.client(setup.operator, host=host, timeout=2).ping()
                break
            except Exception:
                await asyncio.sleep(0.5)
    assert (await domain_states(setup.operator, host))[server_id] == RUNNING
    assert (await wait_status(demo, server_id, "ACTIVE"))["addresses"] == server["addresses"]

    for api, uuid in ((demo, server_id), (admin, admin_server)):
        await delete(api, uuid)
    for volume_id in (boot_volume, later_volume):
        _, volume = await demo.get(f"/volume/v3/{demo.project_id}/volumes/{volume_id}")
        assert volume["volume"]["status"] == "available"
    assert await Net.client(setup.operator).list_ports(device_id=server_id) == []
    assert (await demo.delete(f"/network/v2.0/subnets/{subnet_id}"))[0] == 204
    code, output = await aiostack_audit(setup.cloud.data_dir)
    assert code == 0 and "clean" in output, output


async def test_the_audit_reports_a_power_state_the_conductor_does_not_share(two_nodes: TwoNodes) -> None:
    """node-1 lies about its own instance (allowed: it is the authority on its domains): the
    conductor records SHUTOFF while the domain runs, and the audit says so until they agree."""
    setup = two_nodes
    server_id = await boot(setup.demo, "lied-about")
    await wait_status(setup.demo, server_id, "ACTIVE")
    host = await host_of(setup.operator, server_id)
    liar = ConductorForNodes.client(setup.node_1, host="node-1")
    if host == "node-1":
        await liar.sync_power_state(instance_uuid=server_id, running=False)
    else:  # node-1 may not lie about node-2's: the operator plants it as node-2 would
        await ConductorForNodes.client(setup.operator, host=host).sync_power_state(
            instance_uuid=server_id, running=False
        )
    await wait_status(setup.demo, server_id, "SHUTOFF")
    assert (await domain_states(setup.operator, host))[server_id] == RUNNING
    code, output = await aiostack_audit(setup.cloud.data_dir)
    assert code == 1, output
    assert f"PROBLEM: instance {server_id} is stopped but its domain on {host} is running" in output, output
    # os-start: the node finds the domain running and says so; the records agree again
    assert (await setup.demo.post(f"/compute/v2.1/servers/{server_id}/action", {"os-start": None}))[0] == 202
    await wait_status(setup.demo, server_id, "ACTIVE")
    code, output = await aiostack_audit(setup.cloud.data_dir)
    assert code == 0 and "clean" in output, output
    await delete(setup.demo, server_id)
