"""A node's security group tables (``node/firewall.py``) on real traffic: a "host" network
namespace holding a bridge (and the tables), two "guests" (namespaces, each a veth into the bridge
as a guest's tap would be), pings and TCP connections between them, a rule added live."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from api.net import HostSecurity
from node.firewall import (
    ISOLATION_TABLE,
    PortFilter,
    Rule,
    Ruleset,
    apply,
    conntrack_zone,
    isolate,
    remove,
    render,
    ruleset_of,
    table_name,
)
from node.metadata import METADATA_ADDRESS

GROUP = "5b0c6f0a-0000-4000-8000-000000000001"
DEFAULT_RULES = (
    Rule("egress", "IPv4"),
    Rule("egress", "IPv6"),
    Rule("ingress", "IPv4", remote_group_id=GROUP),
    Rule("ingress", "IPv6", remote_group_id=GROUP),
)
"""Neutron's default group: egress anywhere, ingress from the group's members."""
SSH_AND_PING = (
    Rule("ingress", "IPv4", protocol=6, port_range_min=22, port_range_max=22, remote_cidr="10.77.0.1/32"),
    Rule("ingress", "IPv4", protocol=1, port_range_min=8, remote_cidr="10.77.0.0/24"),
)


@dataclass(frozen=True, slots=True)
class Lab:
    host: str
    guests: tuple[str, str]
    bridge: str

    def port(self, number: int, rules: tuple[Rule, ...]) -> PortFilter:
        return PortFilter(
            bridge=self.bridge, tap=f"sgtap{number}", mac=f"fa:16:3e:77:00:1{number}",
            addresses=(f"10.77.0.1{number}",), rules=rules,
        )  # fmt: skip

    def ruleset(self, rules: tuple[Rule, ...]) -> Ruleset:
        return Ruleset(
            ports=(self.port(1, rules), self.port(2, rules)), members={GROUP: ("10.77.0.11", "10.77.0.12")}
        )


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def _in(namespace: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", namespace, *argv, check=check)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The namespaces, the bridge and the veths; all deleted afterwards (the tables with them)."""
    tag = uuid.uuid4().hex[:6]
    host, guests = f"aiostack-test-sg-{tag}", (f"aiostack-test-sg-{tag}-g1", f"aiostack-test-sg-{tag}-g2")
    made: list[str] = []
    try:
        for name in (host, *guests):
            _run("ip", "netns", "add", name)
            made.append(name)
        _in(
            host,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-ip6tables=1",
        )
        _in(host, "ip", "link", "add", "sgbr", "type", "bridge")
        _in(host, "ip", "addr", "add", "10.77.0.1/24", "dev", "sgbr")
        _in(host, "ip", "link", "set", "sgbr", "up")
        for number, guest in enumerate(guests, start=1):
            _in(
                host,
                "ip",
                "link",
                "add",
                f"sgtap{number}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                guest,
            )
            _in(host, "ip", "link", "set", f"sgtap{number}", "master", "sgbr", "up")
            _in(guest, "ip", "link", "set", "eth0", "address", f"fa:16:3e:77:00:1{number}", "up")
            _in(guest, "ip", "addr", "add", f"10.77.0.1{number}/24", "dev", "eth0")
            _in(guest, "ip", "link", "set", "lo", "up")
        yield Lab(host, guests, "sgbr")
    finally:
        for name in made:
            _run("ip", "netns", "del", name, check=False)


def pings(namespace: str, address: str, source: str | None = None) -> bool:
    frm = ("-I", source) if source else ()
    return _in(namespace, "busybox", "ping", "-c", "1", "-W", "1", *frm, address, check=False).returncode == 0


def connects(namespace: str, address: str, port: int) -> bool:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(1)\n"
        f"sys.exit(s.connect_ex(({address!r}, {port})))\n"
    )
    return _in(namespace, "python3", "-c", probe, check=False).returncode == 0


def test_the_rules_render_as_one_transaction_replacing_both_tables() -> None:
    ports = (PortFilter("br", "tap1", "fa:16:3e:00:00:01", ("10.0.0.5",), DEFAULT_RULES),)
    script = render("node 1", Ruleset(ports=ports, members={GROUP: ("10.0.0.5",)}))
    assert table_name("node 1") == "aiostack_sg_node_1"
    assert script.splitlines()[:4] == [
        "table inet aiostack_sg_node_1", "delete table inet aiostack_sg_node_1",
        "table bridge aiostack_sg_node_1", "delete table bridge aiostack_sg_node_1",
    ]  # fmt: skip
    assert "meta nfproto ipv4 ip saddr @g_5b0c6f0a000040008000000000000001_4 accept" in script
    assert 'oifname "br" ip daddr 10.0.0.5 jump to_0' in script
    assert 'iifname "tap1" ether saddr != fa:16:3e:00:00:01 drop' in script
    assert f'iifname "br" ct zone set {conntrack_zone("br")}' in script
    assert f'oifname "br" ct zone set {conntrack_zone("br")}' in script
    unfiltered = PortFilter("br", "tap1", "fa:16:3e:00:00:01", ("10.0.0.5",), (), port_security_enabled=False)
    assert "jump" not in render("node 1", Ruleset(ports=(unfiltered,)))


def test_what_the_net_actor_tells_becomes_the_ruleset_of_the_ports_plugged_here() -> None:
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": 6, "port_range_min": 22}
    rule |= {"port_range_max": 22, "remote_cidr": None, "remote_group_id": GROUP}
    port = {"port_id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01"}
    port |= {"fixed_ips": ["10.0.0.5"], "port_security_enabled": True, "rules": [rule]}
    told: HostSecurity = {"ports": [port, {**port, "port_id": "p2"}], "members": {GROUP: ["10.0.0.5"]}}
    ruleset = ruleset_of(told, {"p1": ("brq1", "tap1")})
    assert ruleset == Ruleset(
        ports=(PortFilter("brq1", "tap1", "fa:16:3e:00:00:01", ("10.0.0.5",), (Rule(**rule),)),),
        members={GROUP: ("10.0.0.5",)},
    )


async def test_ingress_is_denied_but_for_the_rules_and_a_rule_added_takes_effect_at_once(lab: Lab) -> None:
    server = subprocess.Popen(  # noqa: ASYNC220 (a server for the test's whole length)
        ["ip", "netns", "exec", lab.guests[0], "python3", "-m", "http.server", "22", "--bind", "10.77.0.11"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if connects(lab.guests[0], "10.77.0.11", 22):
                break
            await asyncio.sleep(0.1)
        assert pings(lab.host, "10.77.0.11") and connects(lab.host, "10.77.0.11", 22)  # no tables yet
        await apply("node-1", lab.ruleset(DEFAULT_RULES), lab.host)
        assert pings(lab.guests[1], "10.77.0.11")  # a member of the group
        assert not pings(lab.host, "10.77.0.11")  # not a member
        assert not connects(lab.host, "10.77.0.11", 22)
        assert pings(lab.guests[0], "10.77.0.1")  # egress, and its replies
        await apply("node-1", lab.ruleset(DEFAULT_RULES + SSH_AND_PING), lab.host)
        assert pings(lab.host, "10.77.0.11") and connects(lab.host, "10.77.0.11", 22)
        _in(lab.guests[1], "ip", "addr", "add", "10.77.0.99/24", "dev", "eth0")
        assert pings(lab.guests[1], "10.77.0.1", source="10.77.0.12")
        assert not pings(lab.guests[1], "10.77.0.1", source="10.77.0.99")  # not its fixed IP
        await remove("node-1", lab.host)
        assert _in(lab.host, "nft", "list", "tables").stdout == ""
    finally:
        server.terminate()
        server.wait()


def conntrack_zones(namespace: str, address: str) -> set[int]:
    """The conntrack zones of the flows the namespace tracks to ``address`` (0: no zone given)."""
    zones = set()
    for line in _in(namespace, "cat", "/proc/net/nf_conntrack").stdout.splitlines():
        if f" dst={address} " in line:
            words = dict(word.split("=", 1) for word in line.split() if "=" in word)
            zones.add(int(words.get("zone", "0")))
    return zones


async def test_each_bridge_tracks_its_flows_in_its_own_conntrack_zone(lab: Lab) -> None:
    try:
        await apply("node-1", lab.ruleset(DEFAULT_RULES + SSH_AND_PING), lab.host)
        assert pings(lab.host, "10.77.0.11")  # sent by the host onto the bridge
        assert pings(lab.guests[1], "10.77.0.11")  # bridged from one guest to the other
        assert conntrack_zones(lab.host, "10.77.0.11") == {conntrack_zone(lab.bridge)}
        assert conntrack_zone(lab.bridge) != conntrack_zone("other-bridge")
    finally:
        await remove("node-1", lab.host)


async def test_a_guest_allowed_no_egress_still_reaches_the_metadata_service(lab: Lab) -> None:
    _in(lab.host, "ip", "addr", "add", f"{METADATA_ADDRESS}/32", "dev", lab.bridge)
    _in(lab.guests[0], "ip", "route", "add", METADATA_ADDRESS, "dev", "eth0")
    server = subprocess.Popen(  # noqa: ASYNC220 (a server for the test's whole length)
        ["ip", "netns", "exec", lab.host, "python3", "-m", "http.server", "80"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    no_egress = (Rule("ingress", "IPv4", remote_group_id=GROUP),)
    try:
        for _ in range(100):
            if connects(lab.guests[0], METADATA_ADDRESS, 80) and connects(lab.guests[0], "10.77.0.1", 80):
                break
            await asyncio.sleep(0.1)
        await apply("node-1", lab.ruleset(no_egress), lab.host)
        assert connects(lab.guests[0], METADATA_ADDRESS, 80)
        assert not connects(lab.guests[0], "10.77.0.1", 80)  # the same server at the host's address
        assert not pings(lab.guests[0], "10.77.0.1")
    finally:
        server.terminate()
        server.wait()
        await remove("node-1", lab.host)


@dataclass(frozen=True, slots=True)
class RoutedLab:
    """A host routing between two bridges (``ip_forward`` on), a guest on each and a neighbour of
    the first guest on its bridge."""

    host: str
    guest: str
    across: str
    neighbour: str


@pytest.fixture
def routed_lab() -> Iterator[RoutedLab]:
    tag = uuid.uuid4().hex[:6]
    names = [f"aiostack-test-iso-{tag}{suffix}" for suffix in ("", "-g1", "-g2", "-g3")]
    made: list[str] = []
    try:
        for name in names:
            _run("ip", "netns", "add", name)
            made.append(name)
        host, guest, across, neighbour = names
        _in(host, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")
        for bridge, subnet in (("isobr1", "10.78.1"), ("isobr2", "10.78.2")):
            _in(host, "ip", "link", "add", bridge, "type", "bridge")
            _in(host, "ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
            _in(host, "ip", "link", "set", bridge, "up")
        for number, (namespace, bridge, address) in enumerate(
            (
                (guest, "isobr1", "10.78.1.11"),
                (across, "isobr2", "10.78.2.12"),
                (neighbour, "isobr1", "10.78.1.13"),
            )
        ):
            _in(
                host,
                "ip",
                "link",
                "add",
                f"isotap{number}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace,
            )
            _in(host, "ip", "link", "set", f"isotap{number}", "master", bridge, "up")
            _in(namespace, "ip", "link", "set", "eth0", "up")
            _in(namespace, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            _in(namespace, "ip", "route", "add", "default", "via", address.rsplit(".", 1)[0] + ".1")
        yield RoutedLab(host, guest, across, neighbour)
    finally:
        for name in made:
            _run("ip", "netns", "del", name, check=False)


async def test_an_isolated_bridge_routes_nothing_in_or_out_but_bridges_and_serves_the_host(
    routed_lab: RoutedLab,
) -> None:
    lab = routed_lab
    assert pings(lab.guest, "10.78.2.12"), "the lab's host must route between its bridges"

    await isolate(["isobr1", "isobr2"], lab.host)

    assert not pings(lab.guest, "10.78.2.12")
    assert not pings(lab.across, "10.78.1.11")
    assert pings(lab.guest, "10.78.1.1"), "the host's own address on the bridge (DHCP, metadata)"
    assert pings(lab.guest, "10.78.1.13"), "a neighbour on the same bridge"

    await isolate([], lab.host)

    assert ISOLATION_TABLE not in _in(lab.host, "nft", "list", "tables").stdout
    assert pings(lab.guest, "10.78.2.12")
