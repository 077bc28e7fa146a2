"""What a subnet tells its hosts over the overlay's DHCP (``node.overlay``): a real dnsmasq,
started as the overlay starts it, in a network namespace, and a real DHCP client (busybox
udhcpc) in another, joined by a veth pair; the client's lease shows the router, the name servers
and the classless static routes (option 121): the metadata service through the DHCP port's
address, the host routes and the default route."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.net import Subnet
from node.metadata import METADATA_ADDRESS
from node.overlay import Segment, SubnetDhcp, dhcp_options, dnsmasq_command

CLIENT_MAC = "fa:16:3e:00:12:34"
SCRIPT = """#!/bin/sh
[ "$1" = bound ] && env > "{out}"
exit 0
"""

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "dnsmasq", "busybox")),
    reason="needs root, ip, dnsmasq and busybox",
)


def subnet(**changes: object) -> Subnet:
    record: Subnet = {
        "id": "s1", "name": "", "network_id": "n1", "project_id": "p", "tenant_id": "p",
        "cidr": "192.168.7.0/24", "ip_version": 4, "gateway_ip": "192.168.7.1",
        "allocation_pools": [{"start": "192.168.7.2", "end": "192.168.7.254"}], "enable_dhcp": True,
        "dns_nameservers": ["8.8.8.8", "8.8.4.4"],
        "host_routes": [{"destination": "10.50.0.0/16", "nexthop": "192.168.7.254"}],
        "description": "", "revision_number": 1, "tags": [], "created_at": "", "updated_at": "",
    }  # fmt: skip
    return {**record, **changes}  # type: ignore[typeddict-item]


def test_host_routes_go_as_classless_routes_with_the_default_route() -> None:
    assert dhcp_options(1450, SubnetDhcp.of(subnet())) == [
        "--dhcp-option=option:mtu,1450",
        "--dhcp-option=option:router,192.168.7.1",
        "--dhcp-option=option:dns-server,8.8.8.8,8.8.4.4",
        "--dhcp-option=option:classless-static-route,10.50.0.0/16,192.168.7.254,0.0.0.0/0,192.168.7.1",
    ]
    own_default = [{"destination": "0.0.0.0/0", "nexthop": "192.168.7.9"}]
    assert dhcp_options(1500, SubnetDhcp.of(subnet(host_routes=own_default, dns_nameservers=[])))[1:] == [
        "--dhcp-option=option:router,192.168.7.1",
        "--dhcp-option=option:classless-static-route,0.0.0.0/0,192.168.7.9",
    ]
    assert dhcp_options(1500, SubnetDhcp.of(subnet(host_routes=[], dns_nameservers=[]))) == [
        "--dhcp-option=option:mtu,1500",
        "--dhcp-option=option:router,192.168.7.1",
    ]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two network namespaces (the DHCP server's, a guest's), deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = (f"aiostack-test-dhcp-{tag}", f"aiostack-test-guest-{tag}")
    for name in names:
        _ip("netns", "add", name)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@needs_namespaces
def test_a_real_client_gets_the_subnets_routes_and_name_servers(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    server, guest = namespaces
    segment = Segment(
        network_id="n1", vni=7, mtu=1450, cidr="192.168.7.0/24", gateway="192.168.7.1",
        dhcp_port_id=uuid.uuid4().hex, dhcp_mac="fa:16:3e:00:00:02", dhcp_ip="192.168.7.2",
    )  # fmt: skip
    inside = segment.dhcp_link[1]
    _ip("link", "add", inside, "netns", server, "type", "veth", "peer", "name", "eth0", "netns", guest)
    _ip("-n", server, "addr", "add", "192.168.7.2/24", "dev", inside)
    _ip("-n", server, "link", "set", inside, "up")
    _ip("-n", guest, "link", "set", "eth0", "address", CLIENT_MAC, "up")
    tmp_path.chmod(0o755)  # dnsmasq writes its pid file before it drops to nobody
    pid_file = tmp_path / "dnsmasq.pid"
    command = dnsmasq_command(segment, SubnetDhcp.of(subnet()), {CLIENT_MAC: "192.168.7.23"}, pid_file)
    subprocess.run(["ip", "netns", "exec", server, *command], check=True, capture_output=True)
    try:
        out, script = tmp_path / "lease.env", tmp_path / "bound.sh"
        script.write_text(SCRIPT.format(out=out))
        script.chmod(0o755)
        client = subprocess.run(
            ["ip", "netns", "exec", guest, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
             "-t", "5", "-T", "1", "-O", "staticroutes", "-O", "mtu", "-s", str(script)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert client.returncode == 0, client.stdout + client.stderr
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    finally:
        os.kill(int(pid_file.read_text()), 15)
    assert lease["ip"] == "192.168.7.23" and lease["router"] == "192.168.7.1"
    assert lease["dns"].split() == ["8.8.8.8", "8.8.4.4"]
    assert lease["staticroutes"].split() == [
        f"{METADATA_ADDRESS}/32", "192.168.7.2", "10.50.0.0/16", "192.168.7.254", "0.0.0.0/0", "192.168.7.1",
    ]  # fmt: skip
    assert lease["mtu"] == "1450"
