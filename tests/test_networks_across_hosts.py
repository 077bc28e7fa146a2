"""Tenant networks across hosts: real QEMU guests on two compute hosts of the harness, each host
a network namespace with a libvirtd of its own (``deploy.cluster.start_host_libvirtd``), and
each network a VXLAN segment between them (``node.overlay``).

A client on a third host registers the test guest, makes two networks with the same subnet
(``red`` and ``blue``, 10.77.0.0/24) and boots three guests, their addresses asked for: A
(10.77.0.10) and B (10.77.0.20) on ``red``, on different hosts, each pinging the other; C
(10.77.0.30) on ``blue`` pinging A's address. Each guest reports on its console the address
DHCP gave it (on every host, the host's own dnsmasq serves its own guests) and whether its
pings were answered: A and B reach each other across hosts, C reaches nothing (the same
addresses, another segment); and who the metadata service, in its network's DHCP namespace on
its host, says it is (each guest itself). A volume (a file on the controller that made it,
served over NBD) is attached live to A, which writes to it; attaching it to B meanwhile is
refused; detached from A and attached to B, it shows B what A wrote. Deleting the guests gives
every DHCP port back; the audit is clean.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from deploy.cluster import cloud_on_hosts
from deploy.testguest import TestGuest

CLIENT = """
import asyncio, json, os, sys, time
from aiostack import ApiError
from aiostack.client import Client
from deploy.testguest import TestGuest, console_match, register_test_guest, register_variant

url, guest_json = sys.argv[1:3]
guest = TestGuest.from_json(guest_json)
GUESTS = {"a": ("red", "10.77.0.10", "10.77.0.20"), "b": ("red", "10.77.0.20", "10.77.0.10"),
          "c": ("blue", "10.77.0.30", "10.77.0.10")}

async def boot(client, networks, images, name):
    network, address, _ = GUESTS[name]
    body = {"server": {"name": name, "imageRef": images[name], "flavorRef": "1",
                       "networks": [{"uuid": networks[network], "fixed_ip": address}]}}
    server = (await client.request("POST", "/compute/v2.1/servers", body))["server"]
    async with asyncio.timeout(150):
        while (shown := await client.server(server["id"]))["status"] != "ACTIVE":
            assert shown["status"] != "ERROR", shown
            await asyncio.sleep(0.5)
    return shown

async def main():
    report = {}
    async with Client(url) as client:
        await client.login("admin", os.environ["ADMIN_PASSWORD"], "admin")
        ids = await register_test_guest(client, guest)
        stamps = {"a": " aiostack.stamp=written-on-a"}
        images = {
            name: await register_variant(
                client, guest, ids, f"ping-{name}", f"aiostack.ping={peer}{stamps.get(name, '')}")
            for name, (_, _, peer) in GUESTS.items()}
        networks = {}
        for name in ("red", "blue"):
            body = {"network": {"name": name}}
            network = (await client.request("POST", "/network/v2.0/networks", body))["network"]
            await client.request("POST", "/network/v2.0/subnets", {"subnet": {
                "network_id": network["id"], "cidr": "10.77.0.0/24", "ip_version": 4}})
            networks[name] = network["id"]
        servers = {"a": await boot(client, networks, images, "a")}
        await console_match(client, servers["a"]["id"], r"AIOSTACK-READY")
        servers["b"] = await boot(client, networks, images, "b")
        servers["c"] = await boot(client, networks, images, "c")
        for name, server in servers.items():
            address = await console_match(client, server["id"], r"AIOSTACK-IP dev=eth0 addr=([0-9.]+)/")
            ping = await console_match(client, server["id"], r"AIOSTACK-PING to=\\S+ result=(\\w+)")
            metadata = await console_match(client, server["id"], r"AIOSTACK-METADATA (\\S+)")
            report[name] = {"host": server["OS-EXT-SRV-ATTR:host"], "ip": address[1], "ping": ping[1],
                            "id": server["id"], "metadata": metadata[1]}
        a, b = servers["a"]["id"], servers["b"]["id"]
        volume = await client.volumes.create(1, "moving")
        started = time.monotonic()
        await client.servers.attach_volume(a, volume.id)  # live, over NBD from its storage host
        attach_s = [time.monotonic() - started]
        written = await console_match(client, a, r"AIOSTACK-DISK-STAMPED name=(\\w+) stamp=(\\S+)")
        try:
            await client.servers.attach_volume(b, volume.id)
            refused = None
        except ApiError as exc:
            refused = exc.status
        await client.servers.detach_volume(a, volume.id)
        started = time.monotonic()
        await client.servers.attach_volume(b, volume.id)
        attach_s.append(time.monotonic() - started)
        read = await console_match(client, b, r"AIOSTACK-DISK-HEAD name=(\\w+) head=(\\S*)")
        await client.servers.detach_volume(b, volume.id)
        await client.volumes.delete(volume.id)
        report["volume"] = {"written": written[2], "read": read[2], "second_attach": refused,
                            "attach_s": attach_s}
        ports = (await client.request("GET", "/network/v2.0/ports?device_owner=network:dhcp"))["ports"]
        report["dhcp_ports"] = sorted(
            (p["binding:host_id"], p["network_id"] == networks["red"]) for p in ports)
        for server in servers.values():
            await client.server_action(server["id"], "delete", wait=True)
        report["dhcp_ports_after"] = len(
            (await client.request("GET", "/network/v2.0/ports?device_owner=network:dhcp"))["ports"])
        for network_id in networks.values():
            await client.request("DELETE", f"/network/v2.0/networks/{network_id}")
    print(json.dumps(report))

asyncio.run(main())
"""


@pytest.mark.full_size
@pytest.mark.timeout(900)
async def test_guests_on_two_hosts_share_their_network_not_anothers_and_a_volume_moves_between_them(
    test_guest: TestGuest,
) -> None:
    async with cloud_on_hosts(computes=2, clients=1, guests=2) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]]
        env = {**os.environ, "ADMIN_PASSWORD": cloud.admin_password}
        output = await client.run(
            sys.executable, "-c", CLIENT, cloud.url, test_guest.to_json(), timeout=600, env=env
        )
        report = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
        assert {report[name]["ip"] for name in "abc"} == {"10.77.0.10", "10.77.0.20", "10.77.0.30"}, report
        assert report["a"]["ip"] == "10.77.0.10" and report["c"]["ip"] == "10.77.0.30", report
        assert report["a"]["host"] != report["b"]["host"], report  # the scheduler spread them
        assert (report["a"]["ping"], report["b"]["ping"]) == ("ok", "ok"), report
        assert report["c"]["ping"] == "failed", report  # the same address on another segment
        for name in "abc":  # the metadata service in its network's DHCP namespace on its host
            assert report[name]["metadata"] == f"uuid={report[name]['id']}", report
        assert report["dhcp_ports_after"] == 0, report
        volume = report["volume"]  # written on one host, read on the other; never on two guests
        assert (volume["written"], volume["read"]) == ("written-on-a", "written-on-a"), report
        assert volume["second_attach"] in (400, 409), report
        hosts_serving_red = sorted(host for host, on_red in report["dhcp_ports"] if on_red)
        assert hosts_serving_red == sorted({report["a"]["host"], report["b"]["host"]}), report
        await cloud.audit()
