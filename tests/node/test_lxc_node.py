"""The LXC node (``node.lxc.actor``) in a cloud beside a test-driver node: instances of a flavor
whose ``capabilities:hypervisor_type`` is ``lxc`` boot as real liblxc containers from a busybox
root filesystem image, through the gateway, the conductor and the scheduler."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from api.node import Node
from bus import Bus, Conflict, NotFound
from deploy.cli import add_run_parser
from deploy.run import actor_factories
from deploy.up import child_specs
from node import firewall
from node.actor import NodeActor
from node.lxc.actor import LxcNodeActor
from node.lxc.rootfs import busybox_rootfs
from node.lxc.runtime import lock_dir, monitor_fifo
from node.lxc.volumes import loops_backed_by, mounted
from node.overlay import bridge_for
from node.testnode import write_test_node_file
from runtime.config import Config
from tests.conftest import ADMIN_PASSWORD, StartActor
from tests.helpers import Api
from tests.node.test_lxc_runtime import MEMORY_LIMIT
from tests.test_config_file import started

OCTETS = {"Content-Type": "application/octet-stream"}
CONTAINER_FLAVOR, VM_FLAVOR = "1", "2"
CONTAINER_IMAGE = {"container_format": "docker", "disk_format": "raw"}


@dataclass
class Cloud:
    api: Api
    admin: Api
    lxc: LxcNodeActor
    flavor: str
    image: str


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return busybox_rootfs(tmp_path_factory.mktemp("lxc-image") / "busybox.tar.gz").read_bytes()


@pytest.fixture
async def lxc_cloud(
    start_actor: StartActor, config: Config, api: Api, gateway_url: str, busybox_tar: bytes
) -> Any:
    """Every actor, a test-driver node ``node-1`` and an LXC node ``lxc-1``; flavor 1 (m1.tiny)
    made a container flavor, and the busybox image, public."""
    for cls in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        await start_actor(cls, config, secure=True)
    testnode = config.data_dir / "nodes" / "node-1" / "testnode.xml"
    uri = write_test_node_file(testnode, vcpus=64, memory_mb=65536)
    vm_node = await start_actor(NodeActor, config, host="node-1", libvirt_uri=uri, secure=True)
    lxc = await start_actor(LxcNodeActor, config, host="lxc-1", shutdown_timeout=10, secure=True)
    await vm_node.report_capacity()
    await lxc.report_capacity()
    admin = Api(api.session, api.base_url)
    await admin.login("admin", ADMIN_PASSWORD, "admin")
    flavor_id = CONTAINER_FLAVOR
    status, body = await admin.post(
        f"/compute/v2.1/flavors/{flavor_id}/os-extra_specs",
        {"extra_specs": {"capabilities:hypervisor_type": "lxc"}},
    )
    assert status == 200, body
    image_body = {"name": "busybox-rootfs", "visibility": "public", **CONTAINER_IMAGE}
    status, image = await admin.post("/image/v2/images", image_body)
    assert status == 201, image
    file = f"/image/v2/images/{image['id']}/file"
    status, _ = await admin.request("PUT", file, data=busybox_tar, headers=OCTETS)
    assert status == 204
    await api.login()
    cloud = Cloud(api, admin, lxc, flavor_id, image["id"])
    yield cloud
    lxc = cloud.lxc  # a test may have started it again
    lxcpath = lxc.containers.lxcpath
    left = lxc.containers.names()
    for name in left:  # a failed test's: removed with what it holds on the host, then reported
        await lxc.containers.destroy(name)
        if (xml := await lxc.records.stored_xml(name)) is not None:
            await lxc.networks.release(None, xml)
        await lxc.records.delete(name)
    volumes_left = lxc.volumes.connected()
    for instance, device in volumes_left:
        await lxc.volumes.disconnect(instance, device)
    await lxc.security.refresh()
    await lxc.stop()  # before the fixture does: what it leaves is checked
    assert lxc_ls(lxcpath) == ""
    assert not monitor_fifo(lxcpath).exists() and not lock_dir(lxcpath).exists()
    assert list(lxc.networks.dir.glob("*/network.json")) == []
    assert await run("nft", "list", "table", "inet", firewall.table_name(lxc.host)) != 0
    assert left == [], "containers left behind"
    assert volumes_left == [], "volume devices left behind"
    assert not any(mounted(path) for path in host_paths(lxc.volumes.directory))


def lxc_ls(lxcpath: Path) -> str:
    listed = subprocess.run(["lxc-ls", "-P", str(lxcpath)], capture_output=True, text=True, check=True)
    return listed.stdout.strip()


async def boot(cloud: Cloud, name: str, image: str | None = None, flavor: str | None = None) -> str:
    status, body = await cloud.api.post(
        "/compute/v2.1/servers",
        {"server": {"name": name, "imageRef": image or cloud.image, "flavorRef": flavor or cloud.flavor}},
    )
    assert status == 202, body
    return str(body["server"]["id"])


async def server(cloud: Cloud, server_id: str) -> dict[str, Any]:
    status, body = await cloud.admin.get(f"/compute/v2.1/servers/{server_id}")
    assert status == 200, body
    return dict(body["server"])


async def until_status(cloud: Cloud, server_id: str, wanted: str) -> dict[str, Any]:
    """The server once it has ``wanted`` status and no task."""
    async with asyncio.timeout(30):
        while True:
            shown = await server(cloud, server_id)
            if shown["status"] == wanted and shown["OS-EXT-STS:task_state"] is None:
                return shown
            assert shown["status"] != "ERROR" or wanted == "ERROR", shown.get("fault")
            await asyncio.sleep(0.05)


async def console(cloud: Cloud, server_id: str, marker: str, count: int = 1) -> str:
    """The console log once ``count`` of its lines start with ``marker``."""
    output = ""
    try:
        async with asyncio.timeout(30):
            while True:
                status, body = await cloud.api.post(
                    f"/compute/v2.1/servers/{server_id}/action", {"os-getConsoleOutput": {}}
                )
                assert status == 200, body
                output = str(body["output"])
                if sum(line.startswith(marker) for line in output.splitlines()) >= count:
                    return output
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no {count} {marker} lines in the console log:\n{output}") from None


async def action(cloud: Cloud, server_id: str, body: dict[str, Any]) -> None:
    status, answer = await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", body)
    assert status == 202, answer


async def test_a_container_boots_logs_stops_starts_reboots_and_is_deleted(lxc_cloud: Cloud, bus: Bus) -> None:
    cloud = lxc_cloud
    server_id = await boot(cloud, "box")
    shown = await until_status(cloud, server_id, "ACTIVE")
    assert shown["OS-EXT-SRV-ATTR:host"] == "lxc-1" and shown["OS-EXT-STS:power_state"] == 1
    [[address]] = [[fixed["addr"] for fixed in fixed_ips] for fixed_ips in shown["addresses"].values()]
    output = await console(cloud, server_id, "AIOSTACK-READY")
    assert "AIOSTACK-BOOT count=1" in output and f"AIOSTACK-READY ip={address}\n" in output
    node = Node.client(bus, host="lxc-1")
    assert await node.get_power_state(instance_uuid=server_id) == {"exists": True, "running": True}
    assert await cloud.lxc.containers.cgroup_value(server_id, MEMORY_LIMIT) == str(512 * 1024**2)  # m1.tiny
    [listed] = await node.list_domains()
    assert (listed["uuid"], listed["state"], listed["project_id"]) == (server_id, 1, cloud.api.project_id)

    await action(cloud, server_id, {"os-stop": None})
    await until_status(cloud, server_id, "SHUTOFF")
    assert "AIOSTACK-SHUTDOWN" in await console(cloud, server_id, "AIOSTACK-READY")
    assert await node.get_power_state(instance_uuid=server_id) == {"exists": True, "running": False}
    await action(cloud, server_id, {"os-start": None})
    await until_status(cloud, server_id, "ACTIVE")
    assert "AIOSTACK-BOOT count=2" in await console(cloud, server_id, "AIOSTACK-READY", count=2)

    await action(cloud, server_id, {"reboot": {"type": "SOFT"}})
    await until_status(cloud, server_id, "ACTIVE")
    assert "AIOSTACK-BOOT count=3" in await console(cloud, server_id, "AIOSTACK-READY", count=3)
    await action(cloud, server_id, {"reboot": {"type": "HARD"}})
    await until_status(cloud, server_id, "ACTIVE")
    assert "AIOSTACK-BOOT count=4" in await console(cloud, server_id, "AIOSTACK-READY", count=4)

    status, _ = await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    assert status == 204
    async with asyncio.timeout(30):
        while (await cloud.admin.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.05)
    assert cloud.lxc.containers.names() == [] and await node.list_domains() == []
    assert not cloud.lxc.images.instance_dir(server_id).exists()
    _, ports = await cloud.admin.get(f"/network/v2.0/ports?device_id={server_id}")
    assert ports["ports"] == []


async def test_vm_flavors_never_land_on_the_container_host(lxc_cloud: Cloud) -> None:
    cloud = lxc_cloud
    _, images = await cloud.api.get("/image/v2/images?name=aiostack-tiny")
    vms = [await boot(cloud, f"vm-{n}", image=images["images"][0]["id"], flavor=VM_FLAVOR) for n in range(3)]
    for server_id in vms:  # the container host has far more free RAM than the flavor needs
        assert (await until_status(cloud, server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"] == "node-1"
    assert cloud.lxc.containers.names() == []
    for server_id in vms:
        await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")


async def test_what_a_container_cannot_do_is_refused_and_changes_nothing(lxc_cloud: Cloud, bus: Bus) -> None:
    cloud = lxc_cloud
    server_id = await boot(cloud, "box")
    await until_status(cloud, server_id, "ACTIVE")
    path = f"/compute/v2.1/servers/{server_id}/action"
    live = {"host": None, "block_migration": False, "disk_over_commit": False}
    for api, body in (
        (cloud.api, {"pause": None}),
        (cloud.api, {"suspend": None}),
        (cloud.api, {"resize": {"flavorRef": VM_FLAVOR}}),
        (cloud.api, {"createImage": {"name": "snap"}}),
        (cloud.api, {"shelve": None}),
        (cloud.admin, {"os-migrateLive": live}),
    ):
        status, answer = await api.post(path, body)
        assert status == 409 and "it runs as a container" in str(answer), (body, answer)
    # the node, asked directly, refuses what it cannot do and leaves the container running
    node = Node.client(bus, host="lxc-1")
    with pytest.raises(Conflict, match="an interface is not supported by lxc-1, which runs containers"):
        await node.detach_interface(instance_uuid=server_id, mac_address="fa:16:3e:00:00:01")
    await node.change_power(instance_uuid=server_id, action="pause")
    shown = await until_status(cloud, server_id, "ACTIVE")
    assert shown["OS-EXT-STS:power_state"] == 1
    assert await node.get_power_state(instance_uuid=server_id) == {"exists": True, "running": True}
    await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    async with asyncio.timeout(30):
        while cloud.lxc.containers.names():
            await asyncio.sleep(0.05)


async def test_the_api_refuses_an_image_of_the_wrong_kind_at_once(lxc_cloud: Cloud) -> None:
    cloud = lxc_cloud
    _, images = await cloud.api.get("/image/v2/images?name=aiostack-tiny")
    vm_image = images["images"][0]["id"]
    for image, flavor, expected in (
        (vm_image, CONTAINER_FLAVOR, "a container boots from a root filesystem tar"),
        (cloud.image, VM_FLAVOR, "it boots with a container flavor"),
    ):
        status, body = await cloud.api.post(
            "/compute/v2.1/servers", {"server": {"name": "wrong", "imageRef": image, "flavorRef": flavor}}
        )
        assert status == 400 and expected in str(body), body
    status, volume = await cloud.api.post(
        f"/volume/v3/{cloud.api.project_id}/volumes", {"volume": {"size": 1}}
    )
    assert status == 202, volume
    mapping = {"uuid": volume["volume"]["id"], "source_type": "volume", "destination_type": "volume"}
    server = {"name": "with-volume", "imageRef": cloud.image, "flavorRef": CONTAINER_FLAVOR}
    status, body = await cloud.api.post(
        "/compute/v2.1/servers", {"server": {**server, "block_device_mapping_v2": [mapping]}}
    )
    assert status == 400 and "which boot from an image and take no volumes" in str(body), body
    _, servers = await cloud.api.get("/compute/v2.1/servers")
    assert servers["servers"] == []


async def test_what_changed_while_the_node_was_away_is_synced_when_it_starts(
    lxc_cloud: Cloud, start_actor: StartActor, config: Config
) -> None:
    cloud = lxc_cloud
    server_id = await boot(cloud, "box")
    await until_status(cloud, server_id, "ACTIVE")
    await console(cloud, server_id, "AIOSTACK-READY")
    away = cloud.lxc
    await away.stop()
    assert await away.containers.running(server_id)  # containers outlive their node
    await away.containers.kill(server_id)  # no node hears it
    cloud.lxc = await start_actor(LxcNodeActor, config, host="lxc-1", shutdown_timeout=10, secure=True)
    await until_status(cloud, server_id, "SHUTOFF")  # its power state, synced at the node's start
    await action(cloud, server_id, {"os-start": None})
    await until_status(cloud, server_id, "ACTIVE")  # the monitor read again: RUNNING is STARTED
    assert "AIOSTACK-BOOT count=2" in await console(cloud, server_id, "AIOSTACK-READY", count=2)
    await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    async with asyncio.timeout(30):
        while cloud.lxc.containers.names():
            await asyncio.sleep(0.05)


def test_the_busybox_image_is_a_gzip_tar_with_init(tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(busybox_rootfs(tmp_path / "rootfs.tar.gz")) as tar:
        names = set(tar.getnames())
    assert {"sbin/init", "bin/busybox", "bin/udhcpc", "etc/inittab", "etc/rc.boot"} <= names


async def run(*argv: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


async def test_containers_get_their_ports_addresses_and_security_groups_filter_them(
    lxc_cloud: Cloud,
) -> None:
    cloud = lxc_cloud
    first, second = await boot(cloud, "first"), await boot(cloud, "second")
    addresses = {}
    for server_id in (first, second):
        shown = await until_status(cloud, server_id, "ACTIVE")
        [[address]] = [[fixed["addr"] for fixed in fixed_ips] for fixed_ips in shown["addresses"].values()]
        assert f"AIOSTACK-READY ip={address}\n" in await console(cloud, server_id, "AIOSTACK-READY")
        addresses[server_id] = address
    _, ports = await cloud.admin.get(f"/network/v2.0/ports?device_id={first}")
    [port] = ports["ports"]
    assert port["binding:vif_type"] == "bridge" and port["binding:vif_details"]["port_filter"] is True
    network_id = port["network_id"]
    namespace = cloud.lxc.networks.namespace_for(network_id)
    query = f"device_owner=network:dhcp&network_id={network_id}"
    _, dhcp_ports = await cloud.admin.get(f"/network/v2.0/ports?{query}")
    [dhcp_address] = [fixed["ip_address"] for dhcp in dhcp_ports["ports"] for fixed in dhcp["fixed_ips"]]

    async def pings_from_outside(address: str) -> bool:
        """Whether ``address`` answers a ping from the DHCP port's namespace (in no security group)."""
        ping = ("busybox", "ping", "-c", "1", "-W", "1", address)
        return await run("ip", "netns", "exec", namespace, *ping) == 0

    # the default group: ingress from its members only
    lxcpath = str(cloud.lxc.containers.lxcpath)
    ping = ("ping", "-c", "1", "-W", "5", addresses[first])
    assert await run("lxc-attach", "-P", lxcpath, "-n", second, "--", *ping) == 0
    assert not await pings_from_outside(addresses[first])

    [default] = (await cloud.api.get("/network/v2.0/security-groups?name=default"))[1]["security_groups"]
    rule = {
        "security_group_id": default["id"],
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "icmp",
        "remote_ip_prefix": f"{dhcp_address}/32",
    }
    status, made = await cloud.api.post("/network/v2.0/security-group-rules", {"security_group_rule": rule})
    assert status == 201, made
    async with asyncio.timeout(20):
        while not await pings_from_outside(addresses[first]):
            await asyncio.sleep(0.1)
    assert await pings_from_outside(addresses[second])

    for server_id in (first, second):
        await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    async with asyncio.timeout(30):
        while cloud.lxc.containers.names() or (cloud.lxc.networks.dir / network_id).exists():
            await asyncio.sleep(0.05)
    assert await run("ip", "link", "show", "dev", bridge_for(network_id)) != 0
    assert await run("ip", "netns", "pids", namespace) != 0  # the DHCP namespace is gone


def test_up_runs_lxc_nodes_beside_the_others_each_an_lxc_node_process(tmp_path: Path) -> None:
    args = started(tmp_path, "--lxc-nodes", "2", "--shutdown-timeout", "7")
    specs = {spec.name: spec for spec in child_specs(args)}
    assert {"node-1", "lxc-1", "lxc-2"} <= set(specs)
    lxc = specs["lxc-2"]
    assert lxc.args == ("node", "--host", "lxc-2", "--virt-type", "lxc", "--shutdown-timeout", "7.0")
    assert lxc.hosts == ("lxc-2",) and lxc.principal.kind == "node"
    run = add_run_parser(argparse.ArgumentParser().add_subparsers())
    bus_options = ("--nats", "nats://127.0.0.1:1")
    run_args = run.parse_args(["node", *bus_options, *lxc.args[1:]])
    config = Config(data_dir=tmp_path, nats_url="nats://127.0.0.1:1")
    (factory,) = actor_factories("node", None, config, run_args)  # type: ignore[arg-type]
    node = factory()
    assert isinstance(node, LxcNodeActor) and node.host == "lxc-2" and node.shutdown_timeout == 7.0
    with_libvirt = run.parse_args(["node", *bus_options, *lxc.args[1:], "--libvirt", "x"])
    with pytest.raises(SystemExit, match="has no --libvirt"):
        actor_factories("node", None, config, with_libvirt)  # type: ignore[arg-type]


def host_paths(directory: Path) -> list[Path]:
    """The FUSE mount points a node's volume devices may have under ``directory``."""
    return list(directory.glob("*/disk")) if directory.exists() else []


async def in_container(cloud: Cloud, server_id: str, script: str) -> str:
    """What ``script`` says (stdout and stderr) run by the container's sh (``lxc-attach``)."""
    process = await asyncio.create_subprocess_exec(
        "lxc-attach", "-P", str(cloud.lxc.containers.lxcpath), "-n", server_id, "--", "/bin/sh", "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    return out.decode()


async def volume_status(cloud: Cloud, volume_id: str) -> str:
    status, body = await cloud.api.get(f"/volume/v3/{cloud.api.project_id}/volumes/{volume_id}")
    assert status == 200, body
    return str(body["volume"]["status"])


async def attach(cloud: Cloud, server_id: str, volume_id: str) -> tuple[int, Any]:
    return await cloud.api.post(
        f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume_id}},
    )


def disks_at_boot(output: str, count: int) -> list[str]:
    """The disks the busybox image's init saw at its ``count``th boot (its ``AIOSTACK-DISK`` lines)."""
    boot = output.split(f"AIOSTACK-BOOT count={count}\n", 1)[1].split("AIOSTACK-READY", 1)[0]
    return [
        line.removeprefix("AIOSTACK-DISK ") for line in boot.splitlines() if line.startswith("AIOSTACK-DISK ")
    ]


MOUNT = "mkdir -p /mnt && mount -t ext2 /dev/vdb /mnt"


async def test_a_volume_is_a_block_device_of_the_container_live_and_from_each_start(
    lxc_cloud: Cloud, bus: Bus, start_actor: StartActor, config: Config
) -> None:
    """Attached live, the volume is /dev/vdb in the container (its devices cgroup allowing it and
    no other disk); a mounted one is not detached; stopped and started, it is there again;
    detached, it is gone from the container and the host; what the container wrote is read by
    another one it is attached to while stopped; a delete frees it; the node's restart removes
    what a crash left."""
    cloud = lxc_cloud
    first = await boot(cloud, "first")
    await until_status(cloud, first, "ACTIVE")
    await console(cloud, first, "AIOSTACK-READY")
    status, created = await cloud.api.post(
        f"/volume/v3/{cloud.api.project_id}/volumes", {"volume": {"size": 1}}
    )
    assert status == 202, created
    volume_id = created["volume"]["id"]
    volume_file = config.data_dir / "volumes" / f"{volume_id}.raw"
    status, body = await attach(cloud, first, volume_id)
    assert status == 200 and body["volumeAttachment"]["device"] == "/dev/vdb", body
    assert await volume_status(cloud, volume_id) == "in-use"
    made = await in_container(
        cloud,
        first,
        f"mke2fs -q /dev/vdb 4096 && {MOUNT} && echo AIOSTACK-VOLUME-DATA > /mnt/data && cat /mnt/data",
    )
    assert made.endswith("AIOSTACK-VOLUME-DATA\n"), made
    denied = await in_container(cloud, first, "mknod /dev/memory c 1 1 && head -c 1 /dev/memory")
    assert "Operation not permitted" in denied, denied  # no device but its own

    path = f"/compute/v2.1/servers/{first}/os-volume_attachments/{volume_id}"
    status, body = await cloud.api.delete(path)
    assert status == 409 and "a filesystem on it is mounted in the container" in str(body), body
    assert await volume_status(cloud, volume_id) == "in-use"  # nothing changed
    assert await in_container(cloud, first, "cat /mnt/data") == "AIOSTACK-VOLUME-DATA\n"

    await action(cloud, first, {"os-stop": None})
    await until_status(cloud, first, "SHUTOFF")
    await action(cloud, first, {"os-start": None})
    await until_status(cloud, first, "ACTIVE")
    output = await console(cloud, first, "AIOSTACK-READY", count=2)
    assert disks_at_boot(output, 2) == [f"/dev/vdb bytes={1024**3}"]  # there (and usable) as init ran
    read = await in_container(cloud, first, f"{MOUNT} && cat /mnt/data && umount /mnt")
    assert read == "AIOSTACK-VOLUME-DATA\n", read
    await action(cloud, first, {"reboot": {"type": "SOFT"}})
    await until_status(cloud, first, "ACTIVE")
    output = await console(cloud, first, "AIOSTACK-READY", count=3)
    assert disks_at_boot(output, 3) == [f"/dev/vdb bytes={1024**3}"]
    status, _ = await cloud.api.delete(path)
    assert status == 202
    assert await volume_status(cloud, volume_id) == "available"
    assert "No such file" in await in_container(cloud, first, "ls /dev/vdb")
    assert cloud.lxc.volumes.connected() == [] and host_paths(cloud.lxc.volumes.directory) == []

    second = await boot(cloud, "second")
    await until_status(cloud, second, "ACTIVE")
    await action(cloud, second, {"os-stop": None})
    await until_status(cloud, second, "SHUTOFF")
    status, body = await attach(cloud, second, volume_id)  # while it is stopped
    assert status == 200 and body["volumeAttachment"]["device"] == "/dev/vdb", body
    status, body = await attach(cloud, first, volume_id)
    assert status in (400, 409), body  # in use: refused, nothing changed
    assert await volume_status(cloud, volume_id) == "in-use"
    await action(cloud, second, {"os-start": None})
    await until_status(cloud, second, "ACTIVE")
    output = await console(cloud, second, "AIOSTACK-READY", count=2)
    assert disks_at_boot(output, 1) == [] and disks_at_boot(output, 2) == [f"/dev/vdb bytes={1024**3}"]
    read = await in_container(cloud, second, f"{MOUNT} && cat /mnt/data && echo AIOSTACK-SECOND > /mnt/data")
    assert read == "AIOSTACK-VOLUME-DATA\n", read

    # a node that crashed mid-attach left a device no container has; its restart removes it
    node = Node.client(bus, host="lxc-1")
    gone = str(uuid.uuid4())
    with pytest.raises(NotFound):  # no such container: nothing made
        await node.attach_volume(
            instance_uuid=gone, volume_id=volume_id, connection=file_connection(volume_file)
        )
    assert cloud.lxc.volumes.connected() == [(second, "vdb")]
    await cloud.lxc.stop()
    other = config.data_dir / "other.raw"
    other.write_bytes(bytes(1024 * 1024))
    orphan = await cloud.lxc.volumes.connect(gone, "vdc", file_connection(other))
    cloud.lxc = await start_actor(LxcNodeActor, config, host="lxc-1", shutdown_timeout=10, secure=True)
    async with asyncio.timeout(20):
        while cloud.lxc.volumes.connected() != [(second, "vdb")]:
            await asyncio.sleep(0.05)
    assert not loops_backed_by(cloud.lxc.volumes.folder(gone, "vdc") / "disk")
    assert orphan.minor != cloud.lxc.volumes.device(second, "vdb").minor  # type: ignore[union-attr]
    assert await in_container(cloud, second, "cat /mnt/data") == "AIOSTACK-SECOND\n"  # kept its volume

    status, _ = await cloud.api.delete(f"/compute/v2.1/servers/{second}")  # mounted: the delete frees it
    assert status == 204
    async with asyncio.timeout(30):
        while second in cloud.lxc.containers.names() or await volume_status(cloud, volume_id) != "available":
            await asyncio.sleep(0.05)
    assert cloud.lxc.volumes.connected() == [] and host_paths(cloud.lxc.volumes.directory) == []
    assert b"AIOSTACK-SECOND" in volume_file.read_bytes()  # what the container wrote is in the volume
    await cloud.api.delete(f"/compute/v2.1/servers/{first}")
    async with asyncio.timeout(30):
        while cloud.lxc.containers.names():
            await asyncio.sleep(0.05)


def file_connection(path: Path) -> Any:
    """A raw volume file, as the volume actor with no NBD address connects it."""
    return {"transport": "file", "path": str(path), "format": "raw", "host": "", "port": 0, "export": ""}
