"""Compute hosts across machines: real QEMU guests on a compute host of the multi-host harness
against the same guests on one machine, remote volumes, and guests pinging across hosts.

1. **Local**: `aiostack up --libvirt qemu:///system` on this machine; after a warm-up boot (the
   image cached), ``--boots`` (10) boots one after another, each timed from POST /servers to its
   ``instance.active`` event (the SDK waits on the websocket).
2. **Remote**: the harness (`deploy.cluster.cloud_on_hosts`: 3 controllers joined into a cluster,
   PostgreSQL, two compute hosts running QEMU in their own namespaces, VXLAN between them) and a
   client on a third host: a warm-up boot on each compute host, then the same timed boots; two
   guests on a network of their own, one per host, ping each other (their consoles say whether
   they were answered); a volume (a file on a controller, reached over NBD) is attached live to a
   guest and detached ``--attaches`` (5) times, each attach timed until the volume is in-use.

Goals (issue 15): remote boot p50 within 20% of the local one; live attach of a remote volume
≤ 2 s (the slowest); the guests' pings answered. Ends with one RESULT line.

    python bench/across_hosts.py [--boots 10] [--attaches 5]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

from aiostack.client import Client
from deploy.cluster import cloud_on_hosts
from deploy.launch import aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import ensure_libvirtd

PASSWORD = "bench-secret"
BOOT_GOAL = 1.2
ATTACH_GOAL_S = 2.0

REMOTE = """
import asyncio, json, os, sys, time
from aiostack.client import Client
from deploy.testguest import TestGuest, console_match, register_test_guest, register_variant

url, guest_json, boots, attaches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
guest = TestGuest.from_json(guest_json)

async def timed_boot(client, name, image="test-guest", networks=None):
    started = time.perf_counter()
    if networks is None:
        server = await client.create_server(name, image=image, flavor="m1.tiny", wait=True)
    else:
        body = {"server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": networks}}
        created = (await client.request("POST", "/compute/v2.1/servers", body))["server"]
        async with asyncio.timeout(150):
            while (server := await client.server(created["id"]))["status"] not in ("ACTIVE", "ERROR"):
                await asyncio.sleep(0.2)
    assert server["status"] == "ACTIVE", server
    return server, time.perf_counter() - started

async def main():
    report = {}
    async with Client(url) as client:
        await client.login("admin", os.environ["ADMIN_PASSWORD"], "admin")
        ids = await register_test_guest(client, guest, name="test-guest")
        warm = [await timed_boot(client, f"warm-{n}") for n in range(2)]  # one per host: images cached
        report["warm_hosts"] = sorted(server["OS-EXT-SRV-ATTR:host"] for server, _ in warm)
        for server, _ in warm:
            await client.server_action(server["id"], "delete", wait=True)
        times = []
        for number in range(boots):
            server, seconds = await timed_boot(client, f"boot-{number}")
            times.append(seconds)
            await client.server_action(server["id"], "delete", wait=True)
        report["boot_s"] = times

        body = {"network": {"name": "bench-net"}}
        network = (await client.request("POST", "/network/v2.0/networks", body))["network"]
        await client.request("POST", "/network/v2.0/subnets", {"subnet": {
            "network_id": network["id"], "cidr": "10.88.0.0/24", "ip_version": 4}})
        pair = {"a": ("10.88.0.10", "10.88.0.20"), "b": ("10.88.0.20", "10.88.0.10")}
        guests = {}
        for name, (address, peer) in pair.items():
            image = await register_variant(client, guest, ids, f"ping-{name}", f"aiostack.ping={peer}")
            guests[name], _ = await timed_boot(
                client, name, image, [{"uuid": network["id"], "fixed_ip": address}])
        report["ping_hosts"] = sorted(g["OS-EXT-SRV-ATTR:host"] for g in guests.values())
        report["pings"] = [
            (await console_match(client, g["id"], r"AIOSTACK-PING to=\\S+ result=(\\w+)"))[1]
            for g in guests.values()]

        volume = await client.volumes.create(1, "bench-volume")
        attach_s = []
        for _ in range(attaches):
            started = time.perf_counter()
            await client.servers.attach_volume(guests["a"]["id"], volume.id)
            attach_s.append(time.perf_counter() - started)
            await client.servers.detach_volume(guests["a"]["id"], volume.id)
        report["attach_s"] = attach_s
        await client.volumes.delete(volume.id)
        for g in guests.values():
            await client.server_action(g["id"], "delete", wait=True)
        await client.request("DELETE", f"/network/v2.0/networks/{network['id']}")
    print(json.dumps(report))

asyncio.run(main())
"""


async def local_boots(data_dir: str, boots: int) -> list[float]:
    """Boot times on one machine (`aiostack up --libvirt qemu:///system`), after a warm-up boot."""
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
    times = []
    async with (
        aiostack_up(data_dir, "--libvirt", "qemu:///system", env=env, timeout=180) as cloud,
        Client(cloud.gateway_url) as client,
    ):
        await client.login("admin", PASSWORD, "admin")
        await register_test_guest(client, guest, name="test-guest")
        for number in range(boots + 1):
            started = time.perf_counter()
            server = await client.create_server(
                f"local-{number}", image="test-guest", flavor="m1.tiny", wait=True
            )
            if server["status"] != "ACTIVE":
                raise RuntimeError(f"local boot ended {server['status']}: {server.get('fault')}")
            if number:  # the first is the warm-up
                times.append(time.perf_counter() - started)
            await client.server_action(server["id"], "delete", wait=True)
    return times


async def remote_report(boots: int, attaches: int) -> dict[str, Any]:
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    fields = guest.to_json()
    async with cloud_on_hosts(computes=2, clients=1, guests=2) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]]
        env = {**os.environ, "ADMIN_PASSWORD": cloud.admin_password}
        output = await client.run(
            sys.executable, "-c", REMOTE, cloud.url, fields, str(boots), str(attaches), timeout=900, env=env
        )
        await cloud.audit()
    return dict(json.loads([line for line in output.splitlines() if line.startswith("{")][-1]))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--attaches", type=int, default=5)
    args = parser.parse_args()
    await asyncio.to_thread(ensure_libvirtd)
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-hosts-") as directory:
        local = await local_boots(directory, args.boots)
    remote = await remote_report(args.boots, args.attaches)
    local_p50, remote_p50 = statistics.median(local), statistics.median(remote["boot_s"])
    attach: list[float] = remote["attach_s"]
    pings_ok = remote["pings"] == ["ok", "ok"] and len(set(remote["ping_hosts"])) == 2
    print(f"local boots to ACTIVE: {', '.join(f'{t:.2f}' for t in local)} s")
    print(f"remote boots to ACTIVE: {', '.join(f'{t:.2f}' for t in remote['boot_s'])} s")
    print(f"remote volume live attaches: {', '.join(f'{t:.2f}' for t in attach)} s")
    print(f"guests on {remote['ping_hosts']} pinged each other: {remote['pings']}")
    goal_met = remote_p50 <= BOOT_GOAL * local_p50 and max(attach) <= ATTACH_GOAL_S and pings_ok
    print(
        f"RESULT boot_p50_s_local={local_p50:.2f} boot_p50_s_remote={remote_p50:.2f}"
        f" remote_vs_local={remote_p50 / local_p50:.2f} attach_p50_s_remote={statistics.median(attach):.2f}"
        f" attach_max_s_remote={max(attach):.2f} ping_across_hosts={'ok' if pings_ok else 'failed'}"
        f" goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
