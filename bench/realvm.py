"""Real-guest benchmark: `aiostack up --libvirt qemu:///system` booting the test guest under QEMU.

Prints, for 5 boots one after another: time from POST /servers to the instance.active event
(the SDK waits on the websocket, no polling) and to the guest's ready marker on its serial
console (``AIOSTACK-READY``, read through os-getConsoleOutput every 50 ms); then 8 guests
booted at once: time until all are ACTIVE and all have printed their marker, and the host
memory (resident set of each QEMU process) per guest. Anchors from the issue: Firecracker
<=125 ms to guest init, Nova+KVM about 8 s to ACTIVE. Ends with one RESULT line.

    python bench/realvm.py [--sequential 5] [--parallel 8]
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

import psutil

from aiostack.client import Client
from deploy.launch import aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import ensure_libvirtd

PASSWORD = "bench-secret"
READY = "AIOSTACK-READY"
NOVA_KVM_ACTIVE_S = 8.0


async def until_ready(client: Client, server_id: str, timeout: float = 180.0) -> None:
    async with asyncio.timeout(timeout):
        while READY not in await client.console_output(server_id):
            await asyncio.sleep(0.05)


async def boot(client: Client, name: str) -> tuple[str, float, float]:
    """(server id, seconds to ACTIVE, seconds to the ready marker), both from the POST."""
    started = time.perf_counter()
    server = await client.create_server(name, image="test-guest", flavor="m1.tiny", wait=True)
    if server["status"] != "ACTIVE":
        raise RuntimeError(f"{name} ended {server['status']}: {server.get('fault')}")
    active = time.perf_counter() - started
    await until_ready(client, server["id"])
    return server["id"], active, time.perf_counter() - started


def qemu_resident_mb(server_ids: list[str]) -> list[float]:
    """Resident memory of the QEMU process of each server."""
    wanted = {f"guest=instance-{server_id}" for server_id in server_ids}
    sizes = []
    for process in psutil.process_iter(["name", "cmdline", "memory_info"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"].startswith("qemu-system") and any(w in cmdline for w in wanted):
            sizes.append(process.info["memory_info"].rss / 2**20)
    return sizes


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    await asyncio.to_thread(ensure_libvirtd)
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-realvm-") as data_dir:
        async with (
            aiostack_up(data_dir, "--libvirt", "qemu:///system", env=env, timeout=180) as cloud,
            Client(cloud.gateway_url) as client,
        ):
            await client.login("admin", PASSWORD, "admin")
            await register_test_guest(client, guest, name="test-guest")
            print(f"node log: {cloud.data_dir / 'logs' / 'node-1.log'}")
            actives, readies = [], []
            for number in range(args.sequential):
                server_id, active, ready = await boot(client, f"seq-{number}")
                actives.append(active)
                readies.append(ready)
                print(f"boot {number + 1}: ACTIVE {active:.2f} s, ready marker {ready:.2f} s")
                await client.server_action(server_id, "delete", wait=True)

            started = time.perf_counter()
            results = await asyncio.gather(*(boot(client, f"par-{n}") for n in range(args.parallel)))
            all_ready = time.perf_counter() - started
            all_active = max(active for _, active, _ in results)
            memory = qemu_resident_mb([server_id for server_id, _, _ in results])
            print(
                f"{args.parallel} at once: all ACTIVE {all_active:.2f} s, all ready {all_ready:.2f} s,"
                f" QEMU resident per guest {statistics.mean(memory):.0f} MB"
                f" (min {min(memory):.0f}, max {max(memory):.0f}, {len(memory)} processes)"
            )
            await asyncio.gather(*(client.server_action(sid, "delete", wait=True) for sid, _, _ in results))

    active_p50, ready_p50 = statistics.median(actives), statistics.median(readies)
    goal_met = active_p50 < NOVA_KVM_ACTIVE_S and len(memory) == args.parallel
    print(
        f"RESULT active_p50_s={active_p50:.2f} ready_p50_s={ready_p50:.2f}"
        f" parallel={args.parallel} parallel_all_active_s={all_active:.2f}"
        f" parallel_all_ready_s={all_ready:.2f}"
        f" mb_per_guest={statistics.mean(memory):.0f} goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
