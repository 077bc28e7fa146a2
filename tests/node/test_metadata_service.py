"""The metadata service at 169.254.169.254 (``node/metadata.py``) with real guests: each guest of a
network reads its own metadata there (the test guest prints ``AIOSTACK-METADATA``), a source on the
network that is no guest gets 404 (as does the host itself), and the address and listener go with the
network's last guest. In an overlay network's DHCP namespace (``node/overlay.py``), the service
answers there, on the DHCP port's end, its guest only, and goes when the network does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from node.metadata import METADATA_ADDRESS, Guest, MetadataService
from node.networks import bridge_name, libvirt_network_name, network_address
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud
from tests.node.test_metadata_paths import NETWORK, guest

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "curl", "ss")),
    reason="needs root, ip, curl and ss",
)
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
    qemu_cloud: QemuCloud,
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


class OneGuest:
    """Finds ``guest()`` at ``GUEST_ADDRESS`` on ``NETWORK``, no one anywhere else."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    async def __call__(self, network_id: str, address: str) -> Guest | None:
        return guest() if (network_id, address) == (NETWORK, GUEST_ADDRESS) else None

    def forget(self, network_id: str) -> None:
        self.forgotten.append(network_id)


GUEST_ADDRESS = "10.232.0.23"
DHCP_ADDRESS = "10.232.0.2"


@contextlib.contextmanager
def dhcp_namespace_and_guests() -> Iterator[tuple[str, str, str]]:
    """A DHCP namespace (its end of a veth ``ns-…`` holding ``DHCP_ADDRESS``), as ``node.overlay``
    makes one, and two guest namespaces on the same segment (a bridge in a namespace of its own,
    as a host's): one at ``GUEST_ADDRESS``, one at an address no guest holds; each routes the
    metadata address through ``DHCP_ADDRESS``. Their names: (dhcp, guest, stranger)."""
    tag = f"{os.getpid() % 100000}"
    host, dhcp, guest_ns, stranger = (
        f"aiostack-mdns-{role}-{tag}" for role in ("host", "dhcp", "guest", "stranger")
    )
    device = f"ns-md{tag}"

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    try:
        for namespace in (host, dhcp, guest_ns, stranger):
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", host, "link", "add", "segment", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ip("-n", host, "link", "set", "segment", "up")
        for namespace, inside, address in (
            (dhcp, device, DHCP_ADDRESS),
            (guest_ns, "eth0", GUEST_ADDRESS),
            (stranger, "eth0", "10.232.0.99"),
        ):
            outside = f"tap-{namespace.split('-')[2]}"
            ip("-n", host, "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
            ip("-n", host, "link", "set", outside, "master", "segment", "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", namespace, "link", "set", inside, "up")
            if namespace != dhcp:
                ip("-n", namespace, "route", "add", f"{METADATA_ADDRESS}/32", "via", DHCP_ADDRESS)
        yield dhcp, guest_ns, stranger
    finally:
        for namespace in (host, dhcp, guest_ns, stranger):
            run("ip", "netns", "del", namespace)


@needs_namespaces
async def test_in_a_dhcp_namespace_the_service_answers_its_guest_only_and_goes_with_the_network() -> None:
    service = MetadataService(OneGuest())
    with dhcp_namespace_and_guests() as (dhcp, guest_ns, stranger):
        device = f"ns-md{os.getpid() % 100000}"
        await service.serve_in_namespace(NETWORK, dhcp, device)
        try:
            assert service.namespaces == {NETWORK: dhcp} and service.bridges == {}
            assert await curl("ip", "netns", "exec", guest_ns) == (0, "200")
            assert await curl("ip", "netns", "exec", stranger) == (0, "404")
            inside = run("ip", "netns", "exec", dhcp, "ss", "-Hltn", "src", METADATA_ADDRESS).stdout
            assert f"{METADATA_ADDRESS}%{device}:80" in inside, inside
            assert metadata_listeners(device) == []  # in the namespace, not on the host
            await service.serve_in_namespace(NETWORK, dhcp, device)  # again: the same listener
            assert len(service.namespaces) == 1
        finally:
            await service.stop(NETWORK)
        assert service.namespaces == {}
        held = run("ip", "-n", dhcp, "-o", "-4", "addr", "show", "dev", device).stdout
        assert METADATA_ADDRESS not in held and DHCP_ADDRESS in held
        assert run("ip", "netns", "exec", dhcp, "ss", "-Hltn").stdout == ""  # nothing listens any more
