"""A QEMU node's libvirt networks (``node/networks.py``): the bridge holds the host's DHCP port's
address, never the gateway (a router's interface takes that); DHCP gives guests, as classless
static routes, the metadata service through the DHCP port's address, the subnet's host routes and
the default route through the gateway. Proved on the XML, then with the real system libvirtd: its
dnsmasq answers a real DHCP client (busybox udhcpc) in a namespace plugged into the bridge; then
with a real guest: a network an earlier version defined at the gateway moves to the host's DHCP
port, and the port is given back when the network's last guest leaves, or at once when no bridge
can be made for the network (its guest falls back to user-mode networking)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from aiostack.client import Client
from api.net import DHCP_OWNER, Subnet
from node.firewall import ISOLATION_TABLE
from node.libvirtd import SYSTEM_URI, ensure_libvirtd
from node.metadata import METADATA_ADDRESS
from node.networks import (
    DNSMASQ_NS,
    KEEPER_MAC,
    SubnetDhcp,
    bridge_name,
    defined_as_wanted,
    dhcp_option_values,
    libvirt_network_name,
    network_address,
    network_xml,
)
from tests.conftest import ADMIN_PASSWORD
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud

CLIENT_MAC = "fa:16:3e:00:21:07"
SCRIPT = """#!/bin/sh
[ "$1" = bound ] && env > "{out}"
exit 0
"""

needs_libvirt_and_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "dnsmasq", "busybox", "libvirtd")),
    reason="needs root, ip, dnsmasq, busybox and libvirtd",
)


def subnet(**changes: object) -> Subnet:
    record: Subnet = {
        "id": "s1", "name": "", "network_id": "n1", "project_id": "p", "tenant_id": "p",
        "cidr": "10.231.7.0/24", "ip_version": 4, "gateway_ip": "10.231.7.1",
        "allocation_pools": [{"start": "10.231.7.2", "end": "10.231.7.254"}], "enable_dhcp": True,
        "dns_nameservers": ["10.231.7.53"],
        "host_routes": [{"destination": "10.50.0.0/16", "nexthop": "10.231.7.254"}],
        "description": "", "revision_number": 1, "tags": [], "created_at": "", "updated_at": "",
    }  # fmt: skip
    return {**record, **changes}  # type: ignore[typeddict-item]


def isolated_bridges() -> list[str]:
    """The bridges this host's isolation table keeps apart (none: no table)."""
    listed = subprocess.run(["nft", "list", "table", "inet", ISOLATION_TABLE], capture_output=True, text=True)
    return sorted(set(re.findall(r'iifname "([^"]+)"', listed.stdout)))


def dnsmasq_options(xml: str) -> list[str]:
    return [option.get("value", "") for option in ET.fromstring(xml).iter(f"{{{DNSMASQ_NS}}}option")]


def test_the_bridge_holds_the_dhcp_ports_address_and_routes_go_through_it_and_the_gateway() -> None:
    xml = network_xml("n1", subnet(), "10.231.7.2", {CLIENT_MAC: "10.231.7.23"})
    root = ET.fromstring(xml)
    assert network_address(xml) == "10.231.7.2"
    assert root.find("ip").get("prefix") == "24"  # type: ignore[union-attr]
    assert root.find("bridge").get("name") == bridge_name("n1")  # type: ignore[union-attr]
    hosts = {host.get("mac"): host.get("ip") for host in root.iter("host")}
    assert hosts == {KEEPER_MAC: "10.231.7.2", CLIENT_MAC: "10.231.7.23"}
    assert root.find("uuid") is None
    assert root.find("forward").get("mode") == "open"  # type: ignore[union-attr]
    assert defined_as_wanted(xml, "10.231.7.2") and not defined_as_wanted(xml, "10.231.7.1")
    isolated_by_libvirt = xml.replace('<forward mode="open" />', "")
    assert "forward" not in isolated_by_libvirt and not defined_as_wanted(isolated_by_libvirt, "10.231.7.2")
    assert dnsmasq_options(xml) == [
        "dhcp-option=option:router,10.231.7.1",
        "dhcp-option=option:dns-server,10.231.7.53",
        "dhcp-option=option:classless-static-route,"
        f"{METADATA_ADDRESS}/32,10.231.7.2,10.50.0.0/16,10.231.7.254,0.0.0.0/0,10.231.7.1",
    ]


def test_a_network_defined_anew_keeps_its_libvirt_uuid() -> None:
    same = str(uuid.uuid4())
    root = ET.fromstring(network_xml("n1", subnet(), "10.231.7.2", uuid=same))
    assert root.find("uuid").text == same  # type: ignore[union-attr]


def test_without_a_gateway_there_is_no_default_route_and_a_host_routes_default_wins() -> None:
    no_gateway = SubnetDhcp.of(subnet(gateway_ip=None, host_routes=[], dns_nameservers=[]))
    assert dhcp_option_values(no_gateway, metadata_via="10.231.7.2") == [
        "option:router",  # dnsmasq sends no router option, rather than its own address
        f"option:classless-static-route,{METADATA_ADDRESS}/32,10.231.7.2",
    ]
    own_default = SubnetDhcp.of(subnet(host_routes=[{"destination": "0.0.0.0/0", "nexthop": "10.231.7.9"}]))
    assert dhcp_option_values(own_default, mtu=1450, metadata_via="10.231.7.2") == [
        "option:mtu,1450",
        "option:router,10.231.7.1",
        "option:dns-server,10.231.7.53",
        f"option:classless-static-route,{METADATA_ADDRESS}/32,10.231.7.2,0.0.0.0/0,10.231.7.9",
    ]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def libvirt_network() -> Iterator[tuple[str, str]]:
    """A libvirt network of a fresh aiostack network id on the system libvirtd, serving
    ``CLIENT_MAC``, and a namespace plugged into its bridge; both removed afterwards. Their
    names: (bridge, namespace)."""
    ensure_libvirtd()
    network_id = f"test-{uuid.uuid4()}"
    namespace = f"aiostack-test-lvnet-{network_id[5:13]}"
    outside = f"lvo{network_id[5:13]}"
    conn = libvirt.open(SYSTEM_URI)
    network = conn.networkDefineXML(
        network_xml(network_id, subnet(), "10.231.7.2", {CLIENT_MAC: "10.231.7.23"})
    )
    try:
        network.create()
        _ip("netns", "add", namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", outside, "master", bridge_name(network_id), "up")
        _ip("-n", namespace, "link", "set", "eth0", "address", CLIENT_MAC, "up")
        yield bridge_name(network_id), namespace
    finally:
        subprocess.run(["ip", "link", "del", outside], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        if network.isActive():
            network.destroy()
        network.undefine()
        conn.close()


@needs_libvirt_and_namespaces
def test_libvirts_dnsmasq_gives_a_real_client_its_address_and_the_routes(
    libvirt_network: tuple[str, str], tmp_path: Path
) -> None:
    bridge, namespace = libvirt_network
    held = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True)
    assert [line.split()[3] for line in held.stdout.splitlines()] == ["10.231.7.2/24"]
    out, script = tmp_path / "lease.env", tmp_path / "bound.sh"
    script.write_text(SCRIPT.format(out=out))
    script.chmod(0o755)
    client = subprocess.run(
        ["ip", "netns", "exec", namespace, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
         "-t", "10", "-T", "1", "-O", "staticroutes", "-s", str(script)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert client.returncode == 0, client.stdout + client.stderr
    lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert lease["ip"] == "10.231.7.23" and lease["serverid"] == "10.231.7.2"
    assert lease["dns"].split() == ["10.231.7.53"]
    assert lease["staticroutes"].split() == [
        f"{METADATA_ADDRESS}/32", "10.231.7.2", "10.50.0.0/16", "10.231.7.254", "0.0.0.0/0", "10.231.7.1",
    ]  # fmt: skip
    assert lease["router"] == "10.231.7.1"  # never dnsmasq's own address, the DHCP port's


def earlier_network_xml(network_id: str, gateway: str, prefix: int, uuid: str = "") -> str:
    """A libvirt network as an earlier version defined it: the bridge at the subnet's gateway."""
    return (
        f"<network xmlns:dnsmasq='{DNSMASQ_NS}'><name>{libvirt_network_name(network_id)}</name>"
        + (f"<uuid>{uuid}</uuid>" if uuid else "")
        + f"<bridge name='{bridge_name(network_id)}' stp='off' delay='0'/>"
        f"<ip address='{gateway}' prefix='{prefix}'>"
        f"<dhcp><host mac='{KEEPER_MAC}' ip='{gateway}'/></dhcp></ip>"
        "<dnsmasq:options><dnsmasq:option value='dhcp-option=option:classless-static-route,"
        f"{METADATA_ADDRESS}/32,{gateway}'/></dnsmasq:options></network>"
    )


async def dhcp_ports(gateway_url: str, network_id: str) -> list[dict[str, Any]]:
    """The net actor's DHCP ports on the network (asked as the administrator: they are no user's)."""
    async with Client(gateway_url) as admin:
        await admin.login("admin", ADMIN_PASSWORD, "admin")
        query = f"network_id={network_id}&device_owner={DHCP_OWNER}"
        return list((await admin.request("GET", f"/network/v2.0/ports?{query}"))["ports"])


def addresses_of(bridge: str) -> list[str]:
    held = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True)
    return [line.split()[3] for line in held.stdout.splitlines()]


async def test_a_network_defined_at_the_gateway_moves_to_the_dhcp_port_which_goes_with_the_last_guest(
    qemu_cloud: QemuCloud,
    gateway_url: str,
) -> None:
    client = qemu_cloud.client
    network = (await client.request("GET", "/network/v2.0/networks?name=default"))["networks"][0]
    subnet = (await client.request("GET", f"/network/v2.0/subnets/{network['subnets'][0]}"))["subnet"]
    gateway, prefix = subnet["gateway_ip"], subnet["cidr"].split("/")[1]
    bridge, name = bridge_name(network["id"]), libvirt_network_name(network["id"])
    conn = libvirt.open(SYSTEM_URI)
    try:
        conn.networkDefineXML(earlier_network_xml(network["id"], gateway, int(prefix))).create()
        await qemu_cloud.node.networks.restore()  # no guest, no DHCP port of this host: not its to remove
        assert addresses_of(bridge) == [f"{gateway}/{prefix}"]

        body = {"name": "moved", "imageRef": qemu_cloud.images["disk"], "flavorRef": "1"}
        server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
        async with asyncio.timeout(GUEST_DEADLINE):
            while (await client.server(server_id))["status"] != "ACTIVE":
                await asyncio.sleep(0.2)
        said = await qemu_cloud.console_until(server_id, r"AIOSTACK-METADATA (\S+)")
        assert said[1] == f"uuid={server_id}"  # through the route DHCP gave, to the bridge's new address
        [port] = await dhcp_ports(gateway_url, network["id"])
        assert port["device_id"] == "dhcp-qemu-1" and port["binding:host_id"] == "qemu-1"
        [fixed_ip] = port["fixed_ips"]
        assert fixed_ip["ip_address"] != gateway
        assert addresses_of(bridge) == [f"{fixed_ip['ip_address']}/{prefix}", f"{METADATA_ADDRESS}/32"]
        assert network_address(conn.networkLookupByName(name).XMLDesc(0)) == fixed_ip["ip_address"]
        assert defined_as_wanted(conn.networkLookupByName(name).XMLDesc(0), fixed_ip["ip_address"])
        assert isolated_bridges() == [bridge]

        # defined at the gateway again (as if by an earlier version) while the guest runs: the
        # node's start defines it at the DHCP port's address, for the network's next start
        moved = conn.networkLookupByName(name)
        conn.networkDefineXML(earlier_network_xml(network["id"], gateway, int(prefix), moved.UUIDString()))
        assert network_address(moved.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)) == gateway
        await qemu_cloud.node.networks.restore()
        assert network_address(moved.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)) == fixed_ip["ip_address"]
        assert qemu_cloud.node.metadata.bridges == {network["id"]: bridge}
        assert [p["id"] for p in await dhcp_ports(gateway_url, network["id"])] == [port["id"]]

        await client.server_action(server_id, "delete", wait=True)
        assert await dhcp_ports(gateway_url, network["id"]) == []
        assert name not in conn.listNetworks() + conn.listDefinedNetworks()
        assert isolated_bridges() == []
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            left = conn.networkLookupByName(name)
            if left.isActive():
                left.destroy()
            left.undefine()
        conn.close()


@contextlib.contextmanager
def routed_on_this_host(cidr: str) -> Iterator[str]:
    """An interface of this host (one end of a veth pair) holding the first address of ``cidr`` (so
    libvirt will not make a bridge for that subnet); its name. Removed afterwards."""
    name = f"aiotd{os.getpid() % 100000}"
    argv = ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        first = str(next(ipaddress.ip_network(cidr).hosts()))
        prefix = cidr.split("/")[1]
        subprocess.run(
            ["ip", "addr", "add", f"{first}/{prefix}", "dev", name], check=True, capture_output=True
        )
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


async def test_a_subnet_routed_on_the_host_gets_its_guest_user_mode_and_its_dhcp_port_back(
    qemu_cloud: QemuCloud,
    gateway_url: str,
) -> None:
    client = qemu_cloud.client
    cidr = f"10.233.{os.getpid() % 250}.0/24"
    network = (await client.request("POST", "/network/v2.0/networks", {"network": {"name": "routed"}}))[
        "network"
    ]
    body = {"subnet": {"network_id": network["id"], "cidr": cidr, "ip_version": 4}}
    await client.request("POST", "/network/v2.0/subnets", body)
    with routed_on_this_host(cidr) as interface:
        server = {"name": "routed", "imageRef": qemu_cloud.images["disk"], "flavorRef": "1"}
        server["networks"] = [{"uuid": network["id"]}]  # type: ignore[assignment]
        server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": server}))["server"][
            "id"
        ]
        async with asyncio.timeout(GUEST_DEADLINE):
            while (await client.server(server_id))["status"] != "ACTIVE":
                await asyncio.sleep(0.2)
        [port] = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"]
        assert port["binding:vif_type"] == "user"
        assert f"in use by interface {interface}" in port["binding:vif_details"]["fallback_reason"], port
        assert await dhcp_ports(gateway_url, network["id"]) == []
        await client.server_action(server_id, "delete", wait=True)
    await client.request("DELETE", f"/network/v2.0/networks/{network['id']}")
