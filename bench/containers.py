"""Containers beside VMs: `aiostack up --libvirt qemu:///system --lxc-nodes 1` booting the busybox
container image on the LXC node and the test guest under QEMU on the other.

Prints, for each kind, boots one after another (deleted in between): time from POST /servers to
the instance.active event (the SDK waits on the websocket) and to the ready marker on the console
(``AIOSTACK-READY``, read through os-getConsoleOutput every 20 ms), and, for containers, the
node's own part: ``lxc-start`` to the marker in the console log, measured on a container of the
same image under the LXC node's runtime (``node.lxc.runtime``) outside the cloud; then a
volume attached to a running container and detached again (``--volumes`` times): the time from
POST os-volume_attachments to its answer (the block device is in the container then), and from
DELETE to its answer (gone from the container and the host). The goal: a container ready within
300 ms of its POST (median). Ends with one RESULT line.

    python bench/containers.py [--containers 10] [--vms 2] [--volumes 10]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiostack.client import Client
from deploy.launch import aiostack_up
from deploy.testcontainer import CONTAINER_SPEC
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import ensure_libvirtd
from node.lxc.rootfs import CONTAINER_FORMAT, DISK_FORMAT, READY_MARKER, busybox_rootfs, unpack
from node.lxc.runtime import Containers, ContainerSpec, StateChange

PASSWORD = "bench-secret"
GOAL_S = 0.3
VM_FLAVOR = "m1.tiny"
CONTAINER_FLAVOR, CONTAINER_FLAVOR_ID = "m1.small", "2"
"""The flavor made a container flavor (its ``capabilities:hypervisor_type`` extra spec)."""


async def until_ready(client: Client, server_id: str, poll: float, timeout: float = 300.0) -> None:
    async with asyncio.timeout(timeout):
        while READY_MARKER not in await client.console_output(server_id):
            await asyncio.sleep(poll)


async def boot(client: Client, name: str, image: str, flavor: str, poll: float) -> tuple[str, float, float]:
    """(server id, seconds to ACTIVE, seconds to the ready marker), both from the POST."""
    started = time.perf_counter()
    server = await client.create_server(name, image=image, flavor=flavor, wait=True)
    if server["status"] != "ACTIVE":
        raise RuntimeError(f"{name} ended {server['status']}: {server.get('fault')}")
    active = time.perf_counter() - started
    await until_ready(client, server["id"], poll)
    return server["id"], active, time.perf_counter() - started


async def boots(
    client: Client, kind: str, count: int, image: str, flavor: str, poll: float
) -> tuple[list[float], list[float]]:
    actives, readies = [], []
    for number in range(count):
        server_id, active, ready = await boot(client, f"{kind}-{number}", image, flavor, poll)
        actives.append(active)
        readies.append(ready)
        print(f"{kind} {number + 1}: ACTIVE {active * 1000:.0f} ms, ready marker {ready * 1000:.0f} ms")
        await client.server_action(server_id, "delete", wait=True)
    return actives, readies


async def volume_cycles(
    client: Client, image: str, flavor: str, count: int
) -> tuple[list[float], list[float]]:
    """Seconds each attach and detach of one volume to one running container took (the API's answer)."""
    server = await client.create_server("volume-bench", image=image, flavor=flavor, wait=True)
    created = await client.request("POST", f"/volume/v3/{client.project_id}/volumes", {"volume": {"size": 1}})
    volume_id = created["volume"]["id"]
    attachments = f"/compute/v2.1/servers/{server['id']}/os-volume_attachments"
    attaches, detaches = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await client.request("POST", attachments, {"volumeAttachment": {"volumeId": volume_id}})
            attaches.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.request("DELETE", f"{attachments}/{volume_id}")
            detaches.append(time.perf_counter() - started)
    finally:
        await client.server_action(server["id"], "delete", wait=True)
        await client.request("DELETE", f"/volume/v3/{client.project_id}/volumes/{volume_id}")
    print(f"volume: attach median {ms(attaches)} ms, detach median {ms(detaches)} ms ({count} each)")
    return attaches, detaches


async def runtime_starts(archive: Path, directory: Path, count: int) -> list[float]:
    """Seconds from ``lxc-start`` to the ready marker in the console log, for ``count`` starts of
    one container (killed in between), on the LXC node's runtime alone."""
    rootfs = directory / "rootfs"
    unpack(archive, rootfs)
    running: asyncio.Queue[StateChange] = asyncio.Queue()
    containers = Containers(directory / "lxc", running.put_nowait)
    await containers.open()
    log = directory / "console.log"
    seconds = []
    try:
        await containers.define(ContainerSpec("bench", "bench", rootfs, log))
        for _ in range(count):
            log.unlink(missing_ok=True)
            started = time.perf_counter()
            await containers.start("bench")
            async with asyncio.timeout(30):
                while not (log.exists() and READY_MARKER in log.read_text()):
                    await asyncio.sleep(0.002)
            seconds.append(time.perf_counter() - started)
            await containers.kill("bench")
    finally:
        await containers.destroy("bench")
        containers.close()
    return seconds


def ms(values: list[float]) -> int:
    return round(statistics.median(values) * 1000)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--vms", type=int, default=2)
    parser.add_argument("--volumes", type=int, default=10)
    args = parser.parse_args()
    await asyncio.to_thread(ensure_libvirtd)
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-containers-") as data_dir:
        archive = busybox_rootfs(Path(data_dir) / "busybox-rootfs.tar.gz")
        node_only = await runtime_starts(archive, Path(data_dir) / "runtime", args.containers)
        print(f"runtime alone: lxc-start to ready marker, median {ms(node_only)} ms")
        up_args = ("--libvirt", "qemu:///system", "--lxc-nodes", "1")
        async with (
            aiostack_up(data_dir + "/cloud", *up_args, env=env, timeout=180) as cloud,
            Client(cloud.gateway_url) as client,
        ):
            await client.login("admin", PASSWORD, "admin")
            await register_test_guest(client, guest, name="test-guest")
            await client.upload_image(
                "busybox-rootfs", archive, disk_format=DISK_FORMAT, container_format=CONTAINER_FORMAT
            )
            path = f"/compute/v2.1/flavors/{CONTAINER_FLAVOR_ID}/os-extra_specs"
            await client.request("POST", path, {"extra_specs": CONTAINER_SPEC})
            print(f"logs: {cloud.data_dir / 'logs'}")
            c_active, c_ready = await boots(
                client, "container", args.containers, "busybox-rootfs", "m1.small", 0.02
            )
            v_active, v_ready = await boots(client, "vm", args.vms, "test-guest", VM_FLAVOR, 0.05)
            attaches, detaches = await volume_cycles(client, "busybox-rootfs", "m1.small", args.volumes)

    goal_met = statistics.median(c_ready) <= GOAL_S
    print(
        f"RESULT container_active_p50_ms={ms(c_active)} container_ready_p50_ms={ms(c_ready)}"
        f" container_runtime_ready_p50_ms={ms(node_only)} vm_active_p50_ms={ms(v_active)}"
        f" vm_ready_p50_ms={ms(v_ready)} volume_attach_p50_ms={ms(attaches)}"
        f" volume_detach_p50_ms={ms(detaches)} containers={args.containers} vms={args.vms}"
        f" volumes={args.volumes}"
        f" goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
