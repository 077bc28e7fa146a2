"""The metadata service at 169.254.169.254 (``node/metadata.py``) with real guests: each guest of a
network reads its own metadata there (the test guest prints ``AIOSTACK-METADATA``), a source on the
network that is no guest gets 404 (as does the host itself), and the address and listener go with the
network's last guest."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator

from node.metadata import METADATA_ADDRESS
from node.networks import bridge_name, libvirt_network_name, network_address
from tests.node.test_real_guests import GUEST_DEADLINE, QemuCloud, qemu_cloud, test_guest  # noqa: F401

SCRIPT = "#!/bin/sh\necho metadata-user-data\n"
STRANGER = "10.20.250.250/16"
"""An address of the default network's subnet no port holds."""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def metadata_addresses(bridge: str) -> list[str]:
    """The metadata address on ``bridge``, if it holds it (other tests' bridges may hold theirs)."""
    held = run("ip", "-o", "-4", "addr", "show", "dev", bridge).stdout.splitlines()
    return [line.split()[3] for line in held if METADATA_ADDRESS in line]


def metadata_listeners(bridge: str) -> list[str]:
    """The listeners on the metadata address bound to ``bridge``."""
    listening = run("ss", "-Hltn", "src", METADATA_ADDRESS).stdout.splitlines()
    return [line for line in listening if f"%{bridge}:" in line]


@contextlib.contextmanager
def stranger_on(bridge: str, dhcp_address: str) -> Iterator[str]:
    """A network namespace plugged into ``bridge`` (a veth) with ``STRANGER``, routing the metadata
    address through the host's DHCP address there, as a guest does; its name."""
    tag = os.getpid() % 100000
    namespace, outside, inside = f"aiostack-mdtest-{tag}", f"mdo{tag}", f"mdi{tag}"
    try:
        for argv in (
            ("ip", "netns", "add", namespace),
            ("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace),
            ("ip", "link", "set", outside, "master", bridge, "up"),
            ("ip", "-n", namespace, "addr", "add", STRANGER, "dev", inside),
            ("ip", "-n", namespace, "link", "set", inside, "up"),
            ("ip", "-n", namespace, "route", "add", f"{METADATA_ADDRESS}/32", "via", dhcp_address),
        ):
            subprocess.run(argv, check=True, capture_output=True)
        yield namespace
    finally:
        run("ip", "link", "del", outside)
        run("ip", "netns", "del", namespace)


def bridge_address(cloud: QemuCloud, network_id: str) -> str:
    """The host's (its DHCP port's) address on the network's bridge."""
    xml = cloud.node.hypervisor.connection.networkLookupByName(libvirt_network_name(network_id)).XMLDesc(0)
    address = network_address(xml)
    assert address is not None
    return address


async def curl(*prefix: str) -> tuple[int | None, str]:
    """GET the metadata service's ``meta_data.json`` (after ``prefix``: run in a namespace), off
    the event loop the node serves it on; curl's exit status and the HTTP status it saw."""
    url = f"http://{METADATA_ADDRESS}/openstack/latest/meta_data.json"
    process = await asyncio.create_subprocess_exec(
        *prefix, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode, output.decode()


async def boot(cloud: QemuCloud, name: str, **extra: str) -> str:
    body = {"name": name, "imageRef": cloud.images["disk"], "flavorRef": "1", **extra}
    server_id = str(
        (await cloud.client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    )
    async with asyncio.timeout(GUEST_DEADLINE):
        while (await cloud.client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    return server_id


async def test_two_guests_each_read_their_own_metadata_and_no_one_else_is_answered(
    qemu_cloud: QemuCloud,  # noqa: F811
) -> None:
    client = qemu_cloud.client
    await client.request("POST", "/compute/v2.1/os-keypairs", {"keypair": {"name": "mine"}})
    user_data = base64.b64encode(SCRIPT.encode()).decode()
    first = await boot(qemu_cloud, "meta-1", adminPass="Secret-Pass-1", key_name="mine", user_data=user_data)
    second = await boot(qemu_cloud, "meta-2")
    said = await qemu_cloud.console_until(first, r"AIOSTACK-METADATA (.*)")
    digest = hashlib.md5(SCRIPT.encode()).hexdigest()
    assert said[1].strip() == f"uuid={first} instance_id={first} admin_pass=absent user_data={digest}"
    said = await qemu_cloud.console_until(second, r"AIOSTACK-METADATA (.*)")
    assert said[1].strip() == f"uuid={second} instance_id={second} admin_pass=absent user_data=none"

    network = (await client.request("GET", "/network/v2.0/networks?name=default"))["networks"][0]
    bridge = bridge_name(network["id"])
    assert qemu_cloud.node.metadata.bridges == {network["id"]: bridge}
    assert metadata_addresses(bridge) == [f"{METADATA_ADDRESS}/32"] and len(metadata_listeners(bridge)) == 1
    with stranger_on(bridge, bridge_address(qemu_cloud, network["id"])) as namespace:
        assert await curl("ip", "netns", "exec", namespace) == (0, "404")
    assert await curl() == (0, "404")  # the host itself: no guest either

    for server_id in (first, second):
        await client.server_action(server_id, "delete", wait=True)
    assert qemu_cloud.node.metadata.bridges == {}
    assert metadata_addresses(bridge) == [] and metadata_listeners(bridge) == []
