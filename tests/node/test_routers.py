"""A node's routers (``node/routers.py``) on real namespaces and real traffic: a "host" network
namespace of the test's own holds the tenant bridges (made by the test, as the node's networking
would) and the external bridge (made by the agent); "guests" are namespaces with a veth into a
tenant bridge, "outside" one with a veth into the external bridge at the external subnet's gateway
address. A small TCP server answers each connection with the address it sees the peer at."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from api.net import FloatingIpPlan, HostRouters, RouterPlan, RouterPort
from node.routers import NAT_TABLE, RouterAgent, interface_names, render

EXTERNAL, NET_A, NET_B, NET_C = "external", "tenant-a", "tenant-b", "tenant-c"
BRIDGES = {EXTERNAL: "brext", NET_A: "brta", NET_B: "brtb", NET_C: "brtc"}
OUTSIDE_IP = "203.0.113.1"
"""The outside's address: the external subnet's gateway, the routers' next hop."""
FLOATING_IP = "203.0.113.20"
SERVER = (
    "import socket, sys, threading\n"
    "def serve(c, peer):\n"
    "    with c:\n"
    "        c.sendall(peer[0].encode())\n"
    "        while data := c.recv(100):\n"
    "            c.sendall(data)\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen()\n"
    "while True:\n"
    "    threading.Thread(target=serve, args=s.accept(), daemon=True).start()\n"
)
"""Answers each connection with the address it sees the peer at, then echoes what it gets."""
CLIENT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
    "print(s.recv(100).decode())\n"
)

HELD_CLIENT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "print(s.recv(100).decode(), flush=True)\n"
    "s.settimeout(2)\n"
    "for _ in sys.stdin:\n"
    "    try:\n"
    "        s.sendall(b'x'); echoed = s.recv(1) == b'x'\n"
    "    except OSError:\n"
    "        echoed = False\n"
    "    print('echoed' if echoed else 'lost', flush=True)\n"
)
"""A connection held open: prints the peer the server saw, then for each line read, whether a
byte sent through it came back."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def _in(namespace: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", namespace, *argv, check=check)


def peer_seen(namespace: str, address: str, port: int, timeout: float = 5.0) -> str | None:
    """The address the server at ``address:port`` saw this connection from (None: no connection)."""
    done = _in(namespace, sys.executable, "-c", CLIENT, address, str(port), str(timeout), check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def mac() -> str:
    return "fa:16:3e:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))


def router_port(network_id: str, ip_address: str, cidr: str, gateway_ip: str | None = None) -> RouterPort:
    return RouterPort(
        port_id=str(uuid.uuid4()), network_id=network_id, subnet_id=str(uuid.uuid4()), mac_address=mac(),
        ip_address=ip_address, cidr=cidr, gateway_ip=gateway_ip, mtu=1500,
    )  # fmt: skip


def gateway_port(ip_address: str) -> RouterPort:
    return router_port(EXTERNAL, ip_address, "203.0.113.0/24", OUTSIDE_IP)


def router(
    interfaces: list[RouterPort],
    gateway: RouterPort | None,
    floating_ips: list[FloatingIpPlan] | None = None,
    enable_snat: bool = True,
) -> RouterPlan:
    return RouterPlan(
        router_id=str(uuid.uuid4()), admin_state_up=True, gateway=gateway, enable_snat=enable_snat,
        interfaces=interfaces, floating_ips=floating_ips or [],
    )  # fmt: skip


def floating(fixed_ip_address: str) -> FloatingIpPlan:
    return FloatingIpPlan(
        floatingip_id=str(uuid.uuid4()), floating_ip_address=FLOATING_IP,
        fixed_ip_address=fixed_ip_address, port_id=str(uuid.uuid4()),
    )  # fmt: skip


@dataclass
class HeldConnection:
    """A connection kept open from a namespace (``HELD_CLIENT``)."""

    client: subprocess.Popen[str]
    peer_seen: str

    def echoes(self) -> bool:
        """Whether a byte sent through it now comes back."""
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write("\n")
        self.client.stdin.flush()
        return self.client.stdout.readline().strip() == "echoed"


@dataclass
class Lab:
    """The test's namespaces and servers, and the plans its agent fetches."""

    host: str
    state_dir: Path
    plans: list[RouterPlan] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: list[subprocess.Popen[str]] = field(default_factory=list)

    async def fetch(self) -> HostRouters:
        return HostRouters(routers=list(self.plans))

    def agent(self) -> RouterAgent:
        return RouterAgent(self.fetch, BRIDGES.__getitem__, self.state_dir, host_namespace=self.host)

    def namespace(self, name: str) -> str:
        namespace = f"{self.host}-{name}"
        _run("ip", "netns", "add", namespace)
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        return namespace

    def bridge(self, network_id: str) -> None:
        """A tenant network's bridge on the host, as the node's networking makes it."""
        _run("ip", "-n", self.host, "link", "add", BRIDGES[network_id], "type", "bridge")
        _run("ip", "-n", self.host, "link", "set", BRIDGES[network_id], "up")

    def plug(self, name: str, network_id: str, address: str, gateway: str | None = None) -> str:
        """A namespace ``name`` with a veth into the network's bridge, holding ``address``."""
        namespace = self.namespace(name)
        veth = f"v{name}"
        _run(
            "ip",
            "-n",
            self.host,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace,
        )
        _run("ip", "-n", self.host, "link", "set", veth, "master", BRIDGES[network_id], "up")
        _run("ip", "-n", namespace, "addr", "add", address, "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")
        if gateway:
            _run("ip", "-n", namespace, "route", "add", "default", "via", gateway)
        return namespace

    def outside(self) -> str:
        return self.plug("out", EXTERNAL, f"{OUTSIDE_IP}/24")

    def start_server(self, namespace: str, port: int) -> None:
        """The peer-reporting server in ``namespace``, stopped at the end."""
        command = ["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, str(port)]
        self.servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def hold(self, namespace: str, address: str, port: int) -> HeldConnection:
        """A connection from ``namespace`` to the server at ``address:port``, kept open."""
        command = ["ip", "netns", "exec", namespace, sys.executable, "-c", HELD_CLIENT, address, str(port)]
        client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.clients.append(client)
        assert client.stdout is not None
        return HeldConnection(client, client.stdout.readline().strip())

    async def serve(self, namespace: str, port: int) -> None:
        """The peer-reporting server in ``namespace``, once it answers."""
        self.start_server(namespace, port)
        for _ in range(100):
            if peer_seen(namespace, "127.0.0.1", port) is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the server in {namespace} never answered")

    def router_namespaces(self) -> set[str]:
        return {name for name in os.listdir("/run/netns") if name.startswith(f"{self.host}-qrouter-")}

    def host_links(self) -> set[str]:
        return {
            link["ifname"] for link in json.loads(_run("ip", "-n", self.host, "-j", "link", "show").stdout)
        }


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The host namespace; at the end every namespace named after it (guests, outside, routers)
    and it, with their links and tables, and the servers."""
    host = f"aiostack-test-l3-{uuid.uuid4().hex[:6]}"
    _run("ip", "netns", "add", host)
    lab = Lab(host, tmp_path / "node")
    try:
        yield lab
    finally:
        processes: list[subprocess.Popen[Any]] = [*lab.clients, *lab.servers]
        for process in processes:
            process.kill()
            process.communicate()
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir("/run/netns"):
                if name.startswith(f"{host}-"):
                    _run("ip", "netns", "del", name, check=False)
        _run("ip", "netns", "del", host, check=False)


def test_the_nat_table_renders_as_one_transaction_and_drops_flows_through_a_nat_gone() -> None:
    gateway = gateway_port("203.0.113.10")
    plan = router([router_port(NET_A, "10.0.0.1", "10.0.0.0/24")], gateway, [floating("10.0.0.10")])
    script = render(plan).splitlines()
    qg = interface_names("qg", gateway["port_id"])[0]
    assert script[:2] == [f"table ip {NAT_TABLE}", f"delete table ip {NAT_TABLE}"]
    assert script.count(f"    ip daddr {FLOATING_IP} dnat to 10.0.0.10") == 2  # prerouting and output
    own = script.index(f'    oifname "{qg}" ip saddr 10.0.0.10 snat to {FLOATING_IP}')
    assert own < script.index(f'    oifname "{qg}" ip saddr {{ 10.0.0.0/24 }} snat to 203.0.113.10')
    assert "snat to" not in render({**plan, "enable_snat": False, "floating_ips": []})
    assert "dnat to" not in render({**plan, "gateway": None})  # a floating IP needs the gateway
    # what still flows through a NAT the plan no longer has is dropped
    assert f"    ct status dnat ct original ip daddr != {{ {FLOATING_IP} }} drop" in script
    assert (
        f'    oifname "{qg}" ct status snat ct reply ip daddr != {{ {FLOATING_IP}, 203.0.113.10 }} drop'
        in script
    )
    assert "    ct status dnat drop" in render({**plan, "floating_ips": []}).splitlines()


async def test_a_guest_leaves_as_its_routers_gateway_and_reaches_other_interfaces_unnatted(lab: Lab) -> None:
    lab.bridge(NET_A)
    guest_a = lab.plug("ga", NET_A, "10.0.0.10/24", "10.0.0.1")
    interface_a = router_port(NET_A, "10.0.0.1", "10.0.0.0/24")
    plan = router([interface_a], gateway_port("203.0.113.10"))
    lab.plans = [plan]
    agent = lab.agent()
    await agent.refresh()
    assert "brext" in lab.host_links()  # the external bridge, made by the agent
    outside = lab.outside()
    await lab.serve(outside, 8080)
    assert peer_seen(guest_a, OUTSIDE_IP, 8080) == "203.0.113.10"

    # an interface on a network whose bridge is not on this host yet: plugged in once it is
    lab.plans = [{**plan, "interfaces": [interface_a, router_port(NET_B, "10.1.0.1", "10.1.0.0/24")]}]
    await agent.refresh()
    lab.bridge(NET_B)
    guest_b = lab.plug("gb", NET_B, "10.1.0.10/24", "10.1.0.1")
    await lab.serve(guest_b, 8080)
    assert peer_seen(guest_a, "10.1.0.10", 8080, timeout=1) is None
    await agent.refresh()
    assert peer_seen(guest_a, "10.1.0.10", 8080) == "10.0.0.10"


async def test_a_floating_ip_reaches_its_guest_and_its_guest_leaves_as_it_until_disassociated(
    lab: Lab,
) -> None:
    lab.bridge(NET_A)
    guest, neighbour = (
        lab.plug(name, NET_A, f"10.0.0.{n}/24", "10.0.0.1") for name, n in (("g1", 10), ("g2", 11))
    )
    plan = router([router_port(NET_A, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.10"))
    lab.plans = [{**plan, "floating_ips": [floating("10.0.0.10")]}]
    agent = lab.agent()
    await agent.refresh()
    outside = lab.outside()
    await lab.serve(outside, 8080)
    await lab.serve(guest, 2222)
    assert peer_seen(outside, FLOATING_IP, 2222) == OUTSIDE_IP
    assert peer_seen(guest, OUTSIDE_IP, 8080) == FLOATING_IP
    assert peer_seen(neighbour, OUTSIDE_IP, 8080) == "203.0.113.10"  # no floating IP: the router's
    inbound, outbound = lab.hold(outside, FLOATING_IP, 2222), lab.hold(guest, OUTSIDE_IP, 8080)
    assert (inbound.peer_seen, outbound.peer_seen) == (OUTSIDE_IP, FLOATING_IP)
    await agent.refresh()  # the table replaced, the same plan: its connections go on
    assert inbound.echoes() and outbound.echoes()

    lab.plans = [plan]
    await agent.refresh()
    assert peer_seen(outside, FLOATING_IP, 2222, timeout=1) is None
    assert peer_seen(guest, OUTSIDE_IP, 8080) == "203.0.113.10"
    assert not inbound.echoes() and not outbound.echoes()  # cut, as Neutron deletes their conntrack entries


async def test_a_floating_ip_moved_to_another_router_is_announced_to_the_outside(lab: Lab) -> None:
    lab.bridge(NET_A)
    lab.bridge(NET_C)
    guest_a = lab.plug("ga", NET_A, "10.0.0.10/24", "10.0.0.1")
    guest_c = lab.plug("gc", NET_C, "10.0.0.10/24", "10.0.0.1")
    first = router([router_port(NET_A, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.10"))
    second = router([router_port(NET_C, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.11"))
    lab.plans = [{**first, "floating_ips": [floating("10.0.0.10")]}, second]
    agent = lab.agent()
    await agent.refresh()
    outside = lab.outside()
    await lab.serve(guest_a, 2222)
    await lab.serve(guest_c, 2223)
    assert peer_seen(outside, FLOATING_IP, 2222) == OUTSIDE_IP  # the outside's ARP cache: the first

    lab.plans = [{**second, "floating_ips": [floating("10.0.0.10")]}]  # the first router goes
    await agent.refresh()
    assert peer_seen(outside, FLOATING_IP, 2223) == OUTSIDE_IP


async def test_without_snat_the_outside_sees_the_guests_own_address(lab: Lab) -> None:
    lab.bridge(NET_A)
    guest = lab.plug("ga", NET_A, "10.0.0.10/24", "10.0.0.1")
    lab.plans = [
        router(
            [router_port(NET_A, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.10"), enable_snat=False
        )
    ]
    await lab.agent().refresh()
    outside = lab.outside()
    _run("ip", "-n", outside, "route", "add", "10.0.0.0/24", "via", "203.0.113.10")
    await lab.serve(outside, 8080)
    assert peer_seen(guest, OUTSIDE_IP, 8080) == "10.0.0.10"


async def test_two_routers_with_the_same_tenant_cidr_stay_apart(lab: Lab) -> None:
    lab.bridge(NET_A)
    lab.bridge(NET_C)
    guest_a = lab.plug("ga", NET_A, "10.0.0.10/24", "10.0.0.1")
    guest_c = lab.plug("gc", NET_C, "10.0.0.10/24", "10.0.0.1")
    lab.plans = [
        router([router_port(NET_A, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.10")),
        router([router_port(NET_C, "10.0.0.1", "10.0.0.0/24")], gateway_port("203.0.113.11")),
    ]
    await lab.agent().refresh()
    assert len(lab.router_namespaces()) == 2
    outside = lab.outside()
    await lab.serve(outside, 8080)
    assert peer_seen(guest_a, OUTSIDE_IP, 8080) == "203.0.113.10"
    assert peer_seen(guest_c, OUTSIDE_IP, 8080) == "203.0.113.11"


async def test_a_removed_router_leaves_no_namespace_veth_table_or_external_bridge(lab: Lab) -> None:
    lab.bridge(NET_A)
    interface, gateway = router_port(NET_A, "10.0.0.1", "10.0.0.0/24"), gateway_port("203.0.113.10")
    plan = router([interface], gateway, [floating("10.0.0.10")])
    not_ours = lab.namespace(f"qrouter-{uuid.uuid4()}")  # named as a router's, not made by the agent
    lab.plans = [plan]
    agent = lab.agent()
    await agent.refresh()
    namespace = agent.namespace_for(plan["router_id"])
    assert lab.router_namespaces() == {namespace, not_ours}
    veths = {interface_names("qr", interface["port_id"])[1], interface_names("qg", gateway["port_id"])[1]}
    assert veths | {"brext"} <= lab.host_links()
    assert NAT_TABLE in _in(namespace, "nft", "list", "tables").stdout

    lab.outside()
    lab.plans = [{**plan, "admin_state_up": False}]  # not served: removed as well
    await agent.refresh()
    assert lab.router_namespaces() == {not_ours}
    assert not veths & lab.host_links()
    assert "brext" in lab.host_links()  # the outside is still plugged into it
    _run("ip", "-n", lab.host, "link", "del", "vout")  # unplugged
    await agent.refresh()
    assert "brext" not in lab.host_links()
    assert "brta" in lab.host_links()  # a tenant bridge is never the agent's
    assert not list((lab.state_dir / "routers").glob("*.json"))
    lab.plans = []
    await agent.refresh()
    assert lab.router_namespaces() == {not_ours}


async def test_a_refresh_converges_a_half_made_router_and_a_changed_plan(lab: Lab) -> None:
    lab.bridge(NET_A)
    guest = lab.plug("ga", NET_A, "10.0.0.10/24", "10.0.0.1")
    interface = router_port(NET_A, "10.0.0.1", "10.0.0.0/24")
    plan = router([interface], gateway_port("203.0.113.10"))
    lab.plans = [plan]
    agent = lab.agent()
    await agent.refresh()
    outside = lab.outside()
    await lab.serve(outside, 8080)
    assert peer_seen(guest, OUTSIDE_IP, 8080) == "203.0.113.10"

    namespace = agent.namespace_for(plan["router_id"])
    _run("ip", "-n", namespace, "link", "del", interface_names("qr", interface["port_id"])[0])
    _in(namespace, "nft", "delete", "table", "ip", NAT_TABLE)
    assert peer_seen(guest, OUTSIDE_IP, 8080, timeout=1) is None
    await agent.refresh()
    assert peer_seen(guest, OUTSIDE_IP, 8080) == "203.0.113.10"

    lab.plans = [{**plan, "gateway": gateway_port("203.0.113.12")}]  # another gateway port
    await agent.refresh()
    assert peer_seen(guest, OUTSIDE_IP, 8080) == "203.0.113.12"
    links = json.loads(_run("ip", "-n", namespace, "-j", "link", "show").stdout)
    assert len([link for link in links if link["ifname"].startswith("qg-")]) == 1


def test_an_agent_running_in_a_hosts_own_namespace_names_its_routers_after_it(lab: Lab) -> None:
    gateway = gateway_port("203.0.113.10")
    plan = router([], gateway)
    agent_in_host = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from node.routers import RouterAgent\n"
        "async def fetch():\n"
        "    return {'routers': [json.loads(sys.argv[1])]}\n"
        "agent = RouterAgent(fetch, {'external': 'brext'}.__getitem__, Path(sys.argv[2]))\n"
        "asyncio.run(agent.refresh())\n"
    )
    # as the cluster harness starts a host's processes (deploy/hosts.py): its network, the machine's mounts
    command = [
        "nsenter",
        f"--net=/run/netns/{lab.host}",
        sys.executable,
        "-c",
        agent_in_host,
        json.dumps(plan),
    ]
    subprocess.run([*command, str(lab.state_dir)], check=True, cwd=Path(__file__).parents[2])
    assert lab.router_namespaces() == {f"{lab.host}-qrouter-{plan['router_id']}"}
    assert {"brext", interface_names("qg", gateway["port_id"])[1]} <= lab.host_links()


async def test_a_notice_makes_the_running_agent_converge(lab: Lab) -> None:
    plan = router([], gateway_port("203.0.113.10"))
    agent = lab.agent()
    running = asyncio.create_task(agent.run())
    try:
        lab.plans = [plan]
        agent.notice()
        for _ in range(100):
            if lab.router_namespaces():
                break
            await asyncio.sleep(0.1)
        assert lab.router_namespaces() == {agent.namespace_for(plan["router_id"])}
        lab.plans = []
        agent.notice()
        for _ in range(100):
            if not lab.router_namespaces():
                break
            await asyncio.sleep(0.1)
        assert lab.router_namespaces() == set()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_refreshes_asked_together_run_once_and_once_more(tmp_path: Path) -> None:
    fetched = 0
    release = asyncio.Event()

    async def fetch() -> HostRouters:
        nonlocal fetched
        fetched += 1
        await release.wait()
        return HostRouters(routers=[])

    agent = RouterAgent(fetch, BRIDGES.__getitem__, tmp_path)
    refreshes = [asyncio.create_task(agent.refresh()) for _ in range(5)]
    while fetched == 0:
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*refreshes)
    assert fetched == 2  # the first, then one for the four asked while it ran
