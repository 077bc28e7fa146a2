"""A router's plan becoming traffic (``node/routers.py``), on real namespaces (as root).

A "host" namespace with a tenant bridge and the external bridge, a guest (a namespace on the
tenant bridge, a TCP server on port 2222), an "outside" namespace on the external bridge. Each
round plans a new router with a floating IP for the guest and measures the seconds from the
``RouterAgent.refresh()`` call to the outside's first connection to FLOATING_IP:2222 answered
(a prober in the outside namespace, started just before, connecting in a loop; read once the
refresh has returned, so never less than the refresh), and how long the refresh itself took;
then the router is removed (so the next round's router, with a new MAC, is announced to an
outside that still remembers the old one). Everything is deleted at the end.
Ends with one RESULT line.

    python bench/routers.py [--rounds 10]
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
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from api.net import HostRouters, RouterPlan, RouterPort
from node.routers import RouterAgent

BRIDGES = {"external": "brext", "tenant": "brtenant"}
FLOATING_IP = "203.0.113.20"
SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 2222)); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'up'); c.close()\n"
)
PROBER = (
    "import socket, time\n"
    "while True:\n"
    "    try:\n"
    f"        with socket.create_connection(({FLOATING_IP!r}, 2222), timeout=0.05) as s:\n"
    "            if s.recv(2) == b'up':\n"
    "                break\n"
    "    except OSError:\n"
    "        time.sleep(0.005)\n"
    "print('up', flush=True)\n"
)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def port(network_id: str, ip_address: str, cidr: str, gateway_ip: str | None = None) -> RouterPort:
    return RouterPort(
        port_id=str(uuid.uuid4()), network_id=network_id, subnet_id=str(uuid.uuid4()),
        mac_address="fa:16:3e:" + ":".join(f"{byte:02x}" for byte in os.urandom(3)),
        ip_address=ip_address, cidr=cidr, gateway_ip=gateway_ip, mtu=1500,
    )  # fmt: skip


def plan() -> RouterPlan:
    """A new router: the tenant subnet's gateway, the external gateway, the guest's floating IP."""
    return RouterPlan(
        router_id=str(uuid.uuid4()), admin_state_up=True, enable_snat=True,
        interfaces=[port("tenant", "10.0.0.1", "10.0.0.0/24")],
        gateway=port("external", "203.0.113.10", "203.0.113.0/24", "203.0.113.1"),
        floating_ips=[{
            "floatingip_id": str(uuid.uuid4()), "floating_ip_address": FLOATING_IP,
            "fixed_ip_address": "10.0.0.10", "port_id": str(uuid.uuid4()),
        }],
    )  # fmt: skip


def plug(host: str, namespace: str, bridge: str, address: str, gateway: str | None = None) -> None:
    """A namespace with a veth into ``bridge`` (in ``host``), holding ``address``."""
    sh("ip", "netns", "add", namespace)
    sh(
        "ip",
        "-n",
        host,
        "link",
        "add",
        f"v{bridge}",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        namespace,
    )
    sh("ip", "-n", host, "link", "set", f"v{bridge}", "master", bridge, "up")
    sh("ip", "-n", namespace, "addr", "add", address, "dev", "eth0")
    sh("ip", "-n", namespace, "link", "set", "eth0", "up")
    sh("ip", "-n", namespace, "link", "set", "lo", "up")
    if gateway:
        sh("ip", "-n", namespace, "route", "add", "default", "via", gateway)


async def rounds(host: str, count: int, state_dir: Path) -> tuple[list[float], list[float]]:
    """Per round: seconds to the floating IP answering, seconds of the refresh."""
    plans: list[RouterPlan] = []

    async def fetch() -> HostRouters:
        return HostRouters(routers=list(plans))

    agent = RouterAgent(fetch, BRIDGES.__getitem__, state_dir, host_namespace=host)
    answered, refreshed = [], []
    for _ in range(count):
        prober = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", f"{host}-outside", sys.executable, "-c", PROBER,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert prober.stdout is not None
        plans[:] = [plan()]
        start = time.monotonic()
        await agent.refresh()
        refreshed.append(time.monotonic() - start)
        await asyncio.wait_for(prober.stdout.readline(), 30)
        answered.append(time.monotonic() - start)
        await prober.wait()
        plans[:] = []
        await agent.refresh()
    return answered, refreshed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    host = f"aiostack-bench-l3-{uuid.uuid4().hex[:6]}"
    server: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "netns", "add", host)
        for bridge in BRIDGES.values():
            sh("ip", "-n", host, "link", "add", bridge, "type", "bridge")
            sh("ip", "-n", host, "link", "set", bridge, "up")
        plug(host, f"{host}-guest", BRIDGES["tenant"], "10.0.0.10/24", "10.0.0.1")
        plug(host, f"{host}-outside", BRIDGES["external"], "203.0.113.1/24")
        server = subprocess.Popen(["ip", "netns", "exec", f"{host}-guest", sys.executable, "-c", SERVER])
        with tempfile.TemporaryDirectory() as state_dir:
            answered, refreshed = asyncio.run(rounds(host, args.rounds, Path(state_dir)))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        for name in os.listdir("/run/netns"):
            if name.startswith(f"{host}-"):
                subprocess.run(["ip", "netns", "del", name], check=False)
        subprocess.run(["ip", "netns", "del", host], check=False)
    print(f"floating IP answering after a refresh, s: {', '.join(f'{t:.3f}' for t in answered)}")
    print(
        f"refresh (namespace, veths, addresses, route, table), s: {', '.join(f'{t:.3f}' for t in refreshed)}"
    )
    print(
        "RESULT "
        f"fip_answers_p50_s={statistics.median(answered):.3f} fip_answers_max_s={max(answered):.3f} "
        f"refresh_p50_s={statistics.median(refreshed):.3f} rounds={len(answered)}"
    )


if __name__ == "__main__":
    main()
