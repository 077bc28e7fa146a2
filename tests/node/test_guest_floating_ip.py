"""A real guest is reached from outside the cloud: through a router and a floating IP, once a
security group rule opens its port 22.

The test plays both the cloud's admin and its user. The admin makes an external network
(``router:external``, 203.0.113.0/24: TEST-NET-3). "The outside" is a network namespace the test
makes, holding that subnet's gateway address on a veth into the external network's bridge
(the bridge the node's router part made for the router's gateway). The user makes a key pair, a
network and a router (``external_gateway_info`` on the external network, an interface on the
subnet), boots the test guest with a ``user_data`` script and gives it a floating IP. From the
outside namespace ``ssh -i KEY root@FLOATING_IP`` is refused until a rule of the guest's
security group allows TCP 22; then it runs a command in the guest that reads the instance's uuid
from the metadata service and shows the user data script ran. The guest reaches the outside
through the router's SNAT too. Nothing is left: no namespace, no router namespace, no domain.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiostack import ApiError
from aiostack.client import Client
from node.networks import bridge_name
from tests.conftest import ADMIN_PASSWORD
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud, qemu_running
from tests.node.test_guest_ssh import run, ssh_argv, with_key

EXTERNAL_CIDR = "203.0.113.0/24"
UPSTREAM = "203.0.113.1"
"""The external subnet's gateway: the outside namespace's address."""
USER_DATA = "#!/bin/sh\necho user-data-ran > /root/ran\n"
METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.fixture
def outside() -> Iterator[str]:
    """A namespace of the test's own, "the outside" (plugged in by ``plug_outside``)."""
    name = f"aio-outside-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name)


async def plug_outside(namespace: str, bridge: str) -> None:
    """A veth from the outside namespace into the external network's bridge, once the node's
    router part has made that bridge; the outside holds the external subnet's gateway."""
    async with asyncio.timeout(GUEST_DEADLINE):
        while not Path("/sys/class/net", bridge).exists():
            await asyncio.sleep(0.2)
    host_end, inner = f"{namespace[-6:]}-o", f"{namespace[-6:]}-i"
    sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", namespace)
    sh("ip", "link", "set", host_end, "master", bridge, "up")
    sh("ip", "-n", namespace, "addr", "add", f"{UPSTREAM}/24", "dev", inner)
    sh("ip", "-n", namespace, "link", "set", inner, "up")
    sh("ip", "-n", namespace, "link", "set", "lo", "up")


async def until_translated(namespace: str, floating: str, fixed: str) -> None:
    """Until the router's namespace translates the floating IP to the fixed one (the node's router
    part makes it so once the net actor has told it)."""
    rule = f"ip daddr {floating} dnat to {fixed}"
    async with asyncio.timeout(GUEST_DEADLINE):
        while rule not in (await run("ip", "netns", "exec", namespace, "nft", "list", "ruleset"))[1]:
            await asyncio.sleep(0.1)


@pytest.fixture
async def admin(gateway_url: str) -> AsyncIterator[Client]:
    async with Client(gateway_url) as client:
        await client.login("admin", ADMIN_PASSWORD, "admin")
        yield client


async def external_network(admin: Client) -> dict[str, Any]:
    network = (
        await admin.request(
            "POST", "/network/v2.0/networks", {"network": {"name": "public", "router:external": True}}
        )
    )["network"]
    subnet = {"network_id": network["id"], "cidr": EXTERNAL_CIDR, "ip_version": 4, "gateway_ip": UPSTREAM}
    await admin.request("POST", "/network/v2.0/subnets", {"subnet": subnet})
    return dict(network)


async def test_ssh_reaches_a_real_guest_through_its_floating_ip_once_a_rule_opens_port_22(
    qemu_cloud: QemuCloud,
    admin: Client,
    outside: str,
    tmp_path: Path,
) -> None:
    client = qemu_cloud.client
    public = await external_network(admin)
    keypair = (await client.request("POST", "/compute/v2.1/os-keypairs", {"keypair": {"name": "outer"}}))[
        "keypair"
    ]
    key = tmp_path / "outer"
    key.write_text(keypair["private_key"])
    key.chmod(0o600)

    network = (await client.request("POST", "/network/v2.0/networks", {"network": {"name": "app"}}))[
        "network"
    ]
    subnet = (
        await client.request(
            "POST",
            "/network/v2.0/subnets",
            {"subnet": {"network_id": network["id"], "cidr": "10.77.0.0/24", "ip_version": 4}},
        )
    )["subnet"]
    router = (
        await client.request(
            "POST",
            "/network/v2.0/routers",
            {"router": {"name": "edge", "external_gateway_info": {"network_id": public["id"]}}},
        )
    )["router"]
    await client.request(
        "PUT", f"/network/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]}
    )

    try:
        body = {
            "name": "outer",
            "imageRef": qemu_cloud.images["disk"],
            "flavorRef": "1",
            "key_name": "outer",
            "networks": [{"uuid": network["id"]}],
            "user_data": base64.b64encode(USER_DATA.encode()).decode(),
        }
        server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
        async with asyncio.timeout(GUEST_DEADLINE):
            while (await client.server(server_id))["status"] != "ACTIVE":
                await asyncio.sleep(0.2)
        await qemu_cloud.console_until(server_id, r"AIOSTACK-SSH keys=1 ")
        [port] = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"]
        floating = (
            await client.request(
                "POST",
                "/network/v2.0/floatingips",
                {"floatingip": {"floating_network_id": public["id"], "port_id": port["id"]}},
            )
        )["floatingip"]
        address = floating["floating_ip_address"]
        await plug_outside(outside, bridge_name(public["id"]))
        await until_translated(f"qrouter-{router['id']}", address, port["fixed_ips"][0]["ip_address"])
        from_outside = ["ip", "netns", "exec", outside]

        status, out, err = await run(
            *from_outside, *ssh_argv(address, *with_key(key), "-o", "ConnectTimeout=5"), "true"
        )
        assert status == 255 and "timed out" in err, (status, out, err)

        [group] = (await client.request("GET", "/network/v2.0/security-groups?name=default"))[
            "security_groups"
        ]
        rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"}
        rule |= {"port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}
        rules = "/network/v2.0/security-group-rules"
        opened = (await client.request("POST", rules, {"security_group_rule": rule}))["security_group_rule"]

        command = f"wget -q -O - {METADATA_URL}; echo; cat /root/ran"
        command += f"; ping -c 1 -W 5 {UPSTREAM} >/dev/null && echo out"
        async with asyncio.timeout(GUEST_DEADLINE):
            while True:
                status, out, err = await run(*from_outside, *ssh_argv(address, *with_key(key)), command)
                if status == 0:
                    break
                await asyncio.sleep(0.5)
        metadata, ran, reached = out.splitlines()
        assert json.loads(metadata)["uuid"] == server_id
        assert (ran, reached) == ("user-data-ran", "out")

        # the rule was what let ssh in: once it is gone (applied live, in well under a second), refused
        await client.request("DELETE", f"{rules}/{opened['id']}")
        async with asyncio.timeout(GUEST_DEADLINE):
            while True:
                status, out, err = await run(
                    *from_outside, *ssh_argv(address, *with_key(key), "-o", "ConnectTimeout=3"), "true"
                )
                if status == 255 and "timed out" in err:
                    break
                assert status == 0, (status, out, err)
                await asyncio.sleep(0.2)

        await client.request("DELETE", f"/network/v2.0/floatingips/{floating['id']}")
        await client.server_action(server_id, "delete", wait=True)
        assert not qemu_running(server_id)
    finally:
        await run("ip", "link", "del", f"{outside[-6:]}-o")  # the outside unplugged from the bridge
        await tear_down_router(client, router["id"], subnet["id"])
    external_bridge = Path("/sys/class/net", bridge_name(public["id"]))
    async with asyncio.timeout(GUEST_DEADLINE):  # the node made it for the router, and removes it
        while external_bridge.exists():
            await asyncio.sleep(0.2)


async def tear_down_router(client: Client, router_id: str, subnet_id: str) -> None:
    """What the test made of L3 goes through the API, also when the test failed: the router's
    floating IPs, its interface, the router; and with it, its namespace on the node."""
    routers = "/network/v2.0/routers"
    with contextlib.suppress(ApiError):
        listed = await client.request("GET", f"/network/v2.0/floatingips?router_id={router_id}")
        for floating in listed["floatingips"]:
            await client.request("DELETE", f"/network/v2.0/floatingips/{floating['id']}")
    with contextlib.suppress(ApiError):
        await client.request(
            "PUT", f"{routers}/{router_id}/remove_router_interface", {"subnet_id": subnet_id}
        )
    with contextlib.suppress(ApiError):
        await client.request("DELETE", f"{routers}/{router_id}")
    async with asyncio.timeout(GUEST_DEADLINE):
        while f"qrouter-{router_id}" in namespaces():
            await asyncio.sleep(0.2)
