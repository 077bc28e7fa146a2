"""Security-group benchmark: seconds from a rule's creation to it taking effect on a real guest.

`aiostack up --libvirt qemu:///system` boots the test guest (dropbear on port 22), on a network
of its own (``BENCH_CIDR``: a subnet no test's guests use on a shared libvirtd), in the admin
project's default group: the host, from its address on the guest network's bridge, gets no
answer on 22. Then, ``--rounds`` times: ``POST /network/v2.0/security-group-rules`` (TCP 22 from
the host's address, through the gateway) and a new connection attempt every ``--probe`` seconds
until dropbear's banner comes on one of them (that time is the sample), then ``DELETE`` the rule
and wait until the port is closed again. The path measured: the net actor's commit and notice,
the node's ``security_for_host`` call and one ``nft -f``, the guest's answer and the probe's own
resolution. Issue 17's goal: at most 1 s. Ends with one RESULT line (the median of the rounds).

    python bench/security_groups.py [--rounds 5] [--probe 0.05]
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
from typing import Any

from aiostack.client import Client
from deploy.launch import aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import ensure_libvirtd

PASSWORD = "bench-secret"
GOAL_S = 1.0
BENCH_CIDR = "10.232.0.0/24"
GUEST_DEADLINE = 180.0


async def banner(address: str, timeout: float) -> bool:
    """Whether dropbear's ``SSH-`` banner comes from the guest's port 22 within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, 22)
            try:
                return (await reader.readline()).startswith(b"SSH-")
            finally:
                writer.close()
    except (TimeoutError, OSError):
        return False


async def first_banner(address: str, every: float) -> None:
    """Return once the guest answers on 22: a new connection attempt every ``every`` seconds, each
    waiting a while for its answer (a TCG guest answers slowly), the first banner ending them all."""
    loop = asyncio.get_running_loop()
    attempts: set[asyncio.Task[bool]] = set()
    try:
        while True:
            started = loop.time()
            attempts.add(asyncio.create_task(banner(address, 5.0)))
            done, _ = await asyncio.wait(attempts, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            attempts -= done
            if any(task.result() for task in done):
                return
            await asyncio.sleep(max(0.0, every - (loop.time() - started)))
    finally:
        for task in attempts:
            task.cancel()


async def host_address_towards(address: str) -> str:
    """The host's own address on the route to ``address`` (its address on the guest's bridge)."""
    process = await asyncio.create_subprocess_exec(
        "ip", "-o", "route", "get", address, stdout=asyncio.subprocess.PIPE
    )
    route, _ = await process.communicate()
    return route.decode().split(" src ")[1].split()[0]


async def boot_on_own_network(client: Client, image_id: str) -> dict[str, Any]:
    """The test guest, ACTIVE, on a network and subnet (``BENCH_CIDR``) made for it."""
    network = (await client.request("POST", "/network/v2.0/networks", {"network": {"name": "bench"}}))[
        "network"
    ]
    subnet = {"network_id": network["id"], "ip_version": 4, "cidr": BENCH_CIDR}
    await client.request("POST", "/network/v2.0/subnets", {"subnet": subnet})
    body = {"name": "guarded", "imageRef": image_id, "flavorRef": "1", "networks": [{"uuid": network["id"]}]}
    server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["status"] not in ("ACTIVE", "ERROR"):
            await asyncio.sleep(0.2)
    if server["status"] != "ACTIVE":
        await client.server_action(server_id, "delete", wait=True)
        raise RuntimeError(f"the guest ended {server['status']}: {server.get('fault')}")
    return server


async def until_console(client: Client, server_id: str, marker: str) -> None:
    async with asyncio.timeout(GUEST_DEADLINE):
        while marker not in await client.console_output(server_id):
            await asyncio.sleep(0.2)


async def one_round(client: Client, group_id: str, host: str, address: str, probe: float) -> float:
    """Seconds from the rule's POST to the guest answering on 22; the rule deleted and the port
    closed again afterwards."""
    body = {
        "security_group_rule": {
            "security_group_id": group_id,
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 22,
            "port_range_max": 22,
            "remote_ip_prefix": f"{host}/32",
        }
    }
    started = time.perf_counter()
    rule = (await client.request("POST", "/network/v2.0/security-group-rules", body))["security_group_rule"]
    async with asyncio.timeout(GUEST_DEADLINE):
        await first_banner(address, probe)
    took = time.perf_counter() - started
    await client.request("DELETE", f"/network/v2.0/security-group-rules/{rule['id']}")
    async with asyncio.timeout(GUEST_DEADLINE):
        while await banner(address, 1.0):
            await asyncio.sleep(probe)
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probe", type=float, default=0.05, help="seconds between connection attempts")
    args = parser.parse_args()
    await asyncio.to_thread(ensure_libvirtd)
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-secgroups-") as data_dir:
        async with (
            aiostack_up(data_dir, "--libvirt", "qemu:///system", env=env, timeout=180) as cloud,
            Client(cloud.gateway_url) as client,
        ):
            await client.login("admin", PASSWORD, "admin")
            images = await register_test_guest(client, guest, name="test-guest")
            print(f"node log: {cloud.data_dir / 'logs' / 'node-1.log'}")
            server = await boot_on_own_network(client, images["disk"])
            try:
                [fixed] = server["addresses"]["bench"]
                address = fixed["addr"]
                await until_console(client, server["id"], "AIOSTACK-SSH")
                host = await host_address_towards(address)
                groups = await client.request("GET", "/network/v2.0/security-groups?name=default")
                [default] = groups["security_groups"]
                if await banner(address, 2.0):
                    raise RuntimeError("the guest answers on 22 without a rule: nothing is filtered")
                for number in range(args.rounds):
                    took = await one_round(client, default["id"], host, address, args.probe)
                    samples.append(took)
                    print(f"round {number + 1}: rule to effect {took:.3f} s")
            finally:
                await client.server_action(server["id"], "delete", wait=True)

    median = statistics.median(samples)
    print(f"rounds {len(samples)}: min {min(samples):.3f} s, max {max(samples):.3f} s")
    print(f"RESULT rule_to_effect_s={median:.3f} goal_met={'yes' if median <= GOAL_S else 'no'}")


if __name__ == "__main__":
    asyncio.run(main())
