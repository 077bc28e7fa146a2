"""Seconds from ``POST /servers`` to "ssh answers": the test guest under QEMU (TCG where there is
no KVM), reached from outside the cloud through a router and a floating IP.

`aiostack up --libvirt qemu:///system` (real processes). As admin: an external network
(203.0.113.0/24), a key pair, a network, a router with its gateway on the external network and an
interface on the subnet, and a rule opening TCP 22 in the default group. "The outside" is a network
namespace this script makes, holding the external subnet's gateway on a veth into the external
network's bridge. Each of ``--boots`` servers is booted with the key, given a floating IP as soon
as its port exists, and timed until ``ssh -i KEY root@FLOATING_IP true`` from the outside
succeeds (tried every 0.2 s). Goal (issue 17): p50 ≤ 10 s. Ends with one RESULT line.

    python bench/guest_ssh.py [--boots 3]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiostack.client import Client
from deploy.launch import aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import ensure_libvirtd
from node.networks import bridge_name

PASSWORD = "bench-secret"
ENV = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
GOAL_S = 10.0
UPSTREAM = "203.0.113.1"
SSH_OPTIONS = [
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
]  # fmt: skip


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


async def post(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.request("POST", path, body)
    return dict(next(iter(answer.values())))


async def ssh_answers(namespace: str, key: Path, address: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, "ssh", *SSH_OPTIONS, "-i", str(key), f"root@{address}", "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await process.wait() == 0


async def boot_until_ssh(
    client: Client, setup: dict[str, str], namespace: str, key: Path, name: str
) -> float:
    """Seconds from the POST to ssh answering on the server's floating IP."""
    body = {"name": name, "imageRef": setup["image"], "flavorRef": "1", "key_name": "bench"}
    body["networks"] = [{"uuid": setup["network"]}]
    started = time.perf_counter()
    server = await post(client, "/compute/v2.1/servers", {"server": body})
    async with asyncio.timeout(180):
        while not (
            ports := (await client.request("GET", f"/network/v2.0/ports?device_id={server['id']}"))["ports"]
        ):
            await asyncio.sleep(0.05)
        floating = await post(
            client,
            "/network/v2.0/floatingips",
            {"floatingip": {"floating_network_id": setup["public"], "port_id": ports[0]["id"]}},
        )
        while not await ssh_answers(namespace, key, floating["floating_ip_address"]):
            await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    await client.request("DELETE", f"/network/v2.0/floatingips/{floating['id']}")
    await client.server_action(server["id"], "delete", wait=True)
    return elapsed


async def tear_down_router(client: Client, router_id: str, subnet_id: str) -> None:
    """The router, its interface and its floating IPs deleted, and its namespace gone from the host."""
    for server in (await client.request("GET", "/compute/v2.1/servers"))["servers"]:
        await client.server_action(server["id"], "delete", wait=True)
    listed = await client.request("GET", f"/network/v2.0/floatingips?router_id={router_id}")
    for floating in listed["floatingips"]:
        await client.request("DELETE", f"/network/v2.0/floatingips/{floating['id']}")
    routers = "/network/v2.0/routers"
    await client.request("PUT", f"{routers}/{router_id}/remove_router_interface", {"subnet_id": subnet_id})
    await client.request("DELETE", f"{routers}/{router_id}")
    async with asyncio.timeout(60):
        while Path("/run/netns", f"qrouter-{router_id}").exists():
            await asyncio.sleep(0.1)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    await asyncio.to_thread(ensure_libvirtd)
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    namespace = f"aio-bench-out-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", namespace)
    times: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="aiostack-bench-ssh-") as data_dir:
            async with (
                aiostack_up(data_dir, "--libvirt", "qemu:///system", env=ENV, timeout=180) as cloud,
                Client(cloud.gateway_url) as client,
            ):  # fmt: skip
                await client.login("admin", PASSWORD, "admin")
                images = await register_test_guest(client, guest, name="test-guest")
                public = await post(
                    client, "/network/v2.0/networks", {"network": {"name": "public", "router:external": True}}
                )
                subnet = {
                    "network_id": public["id"],
                    "cidr": "203.0.113.0/24",
                    "ip_version": 4,
                    "gateway_ip": UPSTREAM,
                }
                await post(client, "/network/v2.0/subnets", {"subnet": subnet})
                network = await post(client, "/network/v2.0/networks", {"network": {"name": "app"}})
                tenant = await post(
                    client,
                    "/network/v2.0/subnets",
                    {"subnet": {"network_id": network["id"], "cidr": "10.30.0.0/24", "ip_version": 4}},
                )
                router = await post(
                    client,
                    "/network/v2.0/routers",
                    {"router": {"name": "edge", "external_gateway_info": {"network_id": public["id"]}}},
                )
                await client.request(
                    "PUT",
                    f"/network/v2.0/routers/{router['id']}/add_router_interface",
                    {"subnet_id": tenant["id"]},
                )
                [group] = (await client.request("GET", "/network/v2.0/security-groups?name=default"))[
                    "security_groups"
                ]
                rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"}
                rule |= {"port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}
                await post(client, "/network/v2.0/security-group-rules", {"security_group_rule": rule})
                keypair = await post(client, "/compute/v2.1/os-keypairs", {"keypair": {"name": "bench"}})
                key = Path(data_dir) / "bench-key"
                key.write_text(keypair["private_key"])
                key.chmod(0o600)

                bridge = bridge_name(public["id"])
                async with asyncio.timeout(60):
                    while not Path("/sys/class/net", bridge).exists():
                        await asyncio.sleep(0.1)
                outer, inner = f"{namespace[-6:]}-o", f"{namespace[-6:]}-i"
                sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
                sh("ip", "link", "set", outer, "master", bridge, "up")
                sh("ip", "-n", namespace, "addr", "add", f"{UPSTREAM}/24", "dev", inner)
                sh("ip", "-n", namespace, "link", "set", inner, "up")

                setup = {"image": images["disk"], "network": network["id"], "public": public["id"]}
                try:
                    for number in range(args.boots):
                        elapsed = await boot_until_ssh(client, setup, namespace, key, f"ssh-{number}")
                        times.append(elapsed)
                        print(f"boot {number + 1}: ssh answers {elapsed:.2f} s after POST /servers")
                finally:  # the router's namespace outlives the cloud's processes unless it is deleted
                    sh("ip", "link", "del", outer)
                    await tear_down_router(client, router["id"], tenant["id"])
    finally:
        sh("ip", "netns", "del", namespace)
    p50 = statistics.median(times)
    print(
        f"RESULT post_to_ssh_p50_s={p50:.2f} post_to_ssh_max_s={max(times):.2f} boots={len(times)}"
        f" goal_s={GOAL_S:.0f} goal_met={'yes' if p50 <= GOAL_S else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
