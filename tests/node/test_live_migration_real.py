"""Live migration of a real QEMU guest between two hosts, each a network namespace of the harness
(``deploy.hosts``) running a libvirtd of its own (``node.libvirtd.host_libvirtd``); the nodes and
the other actors run in the test's process and drive those daemons through their sockets.

The guest (``deploy.testguest``) prints a counter on its serial console once a second (its user
data), and writes it to its volume (``/dev/vdb``: attached live, an NBD export served by
qemu-storage-daemon on a third harness host) each time, saying so once it reached the volume
(``conv=fsync``). A live migration to a destination that cannot take it fails, the guest running on where
it was (the record ``failed``). One aborted while libvirt copies it (``DELETE /servers/{id}/migrations/{id}``,
``abortJob``) leaves it running where it was, the record ``cancelled``, nothing of it on the
destination; meanwhile the destination had an export of its own of the volume (two), afterwards
only the source's is left. Live-migrated to the other host, it keeps running: the console there
goes on counting from where it was, with no second boot, and writing to the volume, whose file
holds what the destination wrote; the volume attached to the destination through a new export,
the source's ended; its address and its port are the same, the port now bound
to the destination; the source keeps nothing of it; the migration record is completed with its
memory figures; libvirt on the destination measured the guest's downtime. Paused there, it
moves back paused: it counts no further until unpaused, then writes to its volume from there.
"""

from __future__ import annotations

import asyncio
import base64
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import ImageActor
from actors.nbd import NbdServer
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from deploy.cluster import start_host_libvirtd
from deploy.hosts import Hosts
from deploy.testguest import register_test_guest
from node.actor import NodeActor
from node.domain import tap_name
from node.firewall import table_name
from tests.conftest import ADMIN_PASSWORD

GUEST_DEADLINE = 120.0
COUNTER_SCRIPT = (
    "#!/bin/sh\n"
    '( i=0; while true; do i=$((i+1)); echo "AIOSTACK-COUNT $i" > /dev/console;'
    ' [ -b /dev/vdb ] && echo "vol-$i-" | dd of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null'
    ' && echo "AIOSTACK-VOL wrote=$i" > /dev/console; sleep 1; done ) &\n'
)
COUNT = r"AIOSTACK-COUNT (\d+)"
WROTE = r"AIOSTACK-VOL wrote=(\d+)"
MICROVERSION = {"OpenStack-API-Version": "compute 2.25"}
BOOTED = "AIOSTACK-CONFIG-DRIVE"
"""What the guest says once each boot."""


@dataclass
class TwoHosts:
    client: Client
    nodes: dict[str, NodeActor]
    uris: dict[str, str]
    volumes: VolumeActor


@pytest.fixture
async def two_hosts(start_actor, config, gateway_url, test_guest) -> AsyncIterator[TwoHosts]:
    hosts = Hosts(Path(tempfile.mkdtemp(prefix="aiostack-hosts-")))
    await hosts.open()
    nodes: dict[str, NodeActor] = {}
    volumes: VolumeActor | None = None
    try:
        harness = {name: hosts.add(name, "compute") for name in ("mig-a", "mig-b")}
        started = await asyncio.gather(*(start_host_libvirtd(host) for host in harness.values()))
        uris = dict(zip(harness, started, strict=True))
        storage = hosts.add("mig-vol", "storage")  # the volumes' NBD exports, served in its namespace
        nbd = NbdServer(config.data_dir / "volumes" / "nbd", storage.address)
        nbd.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        await storage.run(*nbd.command())  # the volume actor finds it running
        for actor_class in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor):
            await start_actor(actor_class, config, secure=True)
        volume_actor = await start_actor(VolumeActor, config, secure=True, nbd_listen=storage.address)
        assert isinstance(volume_actor, VolumeActor)
        volumes = volume_actor
        for name, host in harness.items():
            node = await start_actor(
                NodeActor,
                config,
                host=name,
                libvirt_uri=uris[name],
                migration_address=host.address,
                secure=True,
                shutdown_timeout=5.0,
            )
            assert isinstance(node, NodeActor)
            await node.report_capacity()
            nodes[name] = node
        async with Client(gateway_url) as client:
            await client.login("admin", ADMIN_PASSWORD, "admin")
            await register_test_guest(client, test_guest, name="test-guest")
            yield TwoHosts(client, nodes, uris, volume_actor)
    finally:
        for node in nodes.values():
            for uuid in await node.records.uuids():
                await node.builder.remove_domain(uuid)
        if volumes is not None and volumes.storage.nbd is not None:
            await volumes.storage.nbd.stop()  # its daemon goes with the harness
        await hosts.close()  # its daemons too (libvirtds, qemu-storage-daemon)


async def nft_table(host: str) -> str:
    """The bridge table of the node's security-group ruleset (empty if it has none)."""
    process = await asyncio.create_subprocess_exec(
        "nft", "list", "table", "bridge", table_name(host),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    output, _ = await process.communicate()
    return output.decode()


async def console_counts(client: Client, server_id: str) -> tuple[list[int], str]:
    output = await client.console_output(server_id)
    return [int(count) for count in re.findall(COUNT, output)], output


async def counted_past(client: Client, server_id: str, at_least: int) -> list[int]:
    """The counter values on the console, once one is ``at_least``."""
    output = ""
    try:
        async with asyncio.timeout(GUEST_DEADLINE):
            while True:
                counts, output = await console_counts(client, server_id)
                if counts and counts[-1] >= at_least:
                    return counts
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"the counter did not reach {at_least}:\n{output[-3000:]}") from None


async def wrote_past(client: Client, server_id: str, at_least: int) -> int:
    """The last count the guest wrote to its volume, once one is ``at_least``."""
    output = ""
    try:
        async with asyncio.timeout(GUEST_DEADLINE):
            while True:
                output = await client.console_output(server_id)
                wrote = [int(count) for count in re.findall(WROTE, output)]
                if wrote and wrote[-1] >= at_least:
                    return wrote[-1]
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"no count {at_least} written to the volume:\n{output[-3000:]}") from None


async def volume_state(two_hosts: TwoHosts, volume_id: str) -> tuple[list[tuple[str, str | None]], set[str]]:
    """The volume's attachments (status, host), and the names its storage host exports."""
    rows = await two_hosts.volumes.store.fetchall(
        "SELECT attach_status, host_name FROM attachments WHERE volume_id = ? ORDER BY attach_status",
        (volume_id,),
    )
    nbd = two_hosts.volumes.storage.nbd
    assert nbd is not None
    return [(row["attach_status"], row["host_name"]) for row in rows], await nbd.exports()


def volume_head(two_hosts: TwoHosts, volume_id: str) -> str:
    """What the volume's file starts with, as its storage host holds it."""
    with open(two_hosts.volumes.storage.pool / f"{volume_id}.raw", "rb") as file:
        return file.read(64).split(b"\0")[0].decode(errors="replace")


async def server_migrations(client: Client, server_id: str) -> list[dict[str, Any]]:
    """The server's live migrations in progress (``GET /servers/{id}/migrations``)."""
    path = f"/compute/v2.1/servers/{server_id}/migrations"
    return list((await client.request("GET", path, headers=MICROVERSION))["migrations"])


async def migrations_of(client: Client, server_id: str) -> list[dict[str, Any]]:
    """The server's migration records, newest first."""
    path = f"/compute/v2.1/os-migrations?instance_uuid={server_id}"
    return list((await client.request("GET", path))["migrations"])


async def settled(client: Client, server_id: str) -> dict[str, Any]:
    """The server once no task is in hand."""
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.2)
    return server


async def until_status(client: Client, server_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["status"] != status:
            assert server["status"] != "ERROR", server
            await asyncio.sleep(0.3)
    return server


async def test_a_real_guest_live_migrates_to_the_other_host_and_keeps_counting_and_its_volume(
    two_hosts: TwoHosts,
) -> None:
    client = two_hosts.client
    body = {
        "name": "counter",
        "imageRef": (await client.request("GET", "/image/v2/images?name=test-guest"))["images"][0]["id"],
        "flavorRef": "1",
        "user_data": base64.b64encode(COUNTER_SCRIPT.encode()).decode(),
    }
    server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    server = await until_status(client, server_id, "ACTIVE")
    source = server["OS-EXT-SRV-ATTR:host"]
    [dest] = set(two_hosts.nodes) - {source}
    addresses = server["addresses"]
    await counted_past(client, server_id, 1)
    volume = await client.volumes.create(1, "migrating")
    await client.servers.attach_volume(server_id, volume.id)  # live, over NBD
    await wrote_past(client, server_id, 1)
    attached, exports = await volume_state(two_hosts, volume.id)
    assert attached == [("attached", source)] and len(exports) == 1, (attached, exports)

    # a destination that cannot take it (no address for the guest's stream): it runs on here
    migrator = two_hosts.nodes[dest].live_migrator
    address, migrator.address = migrator.address, None
    await client.servers.live_migrate(server_id, dest, wait=False)
    server = await settled(client, server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source), server
    assert [m["status"] for m in await migrations_of(client, server_id)] == ["failed"]
    assert await volume_state(two_hosts, volume.id) == (attached, exports)  # no second export left
    migrator.address = address

    # aborted while libvirt copies it: it runs on here, the destination keeps nothing of it
    await client.servers.live_migrate(server_id, dest, wait=False)
    async with asyncio.timeout(GUEST_DEADLINE):
        while (
            not (running := await server_migrations(client, server_id)) or running[0]["status"] != "running"
        ):
            await asyncio.sleep(0.1)
    # while the copy runs, the destination filters the arriving guest's tap (still bound to the source)
    [port] = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"]
    assert port["binding:host_id"] == source
    assert tap_name(port["id"]) in await nft_table(dest) and tap_name(port["id"]) in await nft_table(source)
    # and it reaches the volume through an attachment and an export of its own
    both, copying = await volume_state(two_hosts, volume.id)
    assert both == [("arriving", dest), ("attached", source)] and len(copying) == 2 and exports < copying
    path = f"/compute/v2.1/servers/{server_id}/migrations/{running[0]['id']}"
    await client.request("DELETE", path, headers=MICROVERSION)
    server = await settled(client, server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source), server
    assert [m["status"] for m in await migrations_of(client, server_id)] == ["cancelled", "failed"]
    async with asyncio.timeout(30):
        while await two_hosts.nodes[dest].records.uuids() or await two_hosts.nodes[dest].hypervisor.domains():
            await asyncio.sleep(0.2)
    assert await volume_state(two_hosts, volume.id) == (attached, exports)
    before = await counted_past(client, server_id, (await console_counts(client, server_id))[0][-1] + 1)
    written_before = await wrote_past(client, server_id, before[-1] - 1)
    assert (await console_counts(client, server_id))[1].count(BOOTED) == 1

    await client.servers.live_migrate(server_id, dest, wait=False)
    seen_totals: list[int] = []
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["OS-EXT-STS:task_state"] is not None:
            seen_totals += [m["memory_total_bytes"] or 0 for m in await server_migrations(client, server_id)]
            await asyncio.sleep(0.2)
    actions = await client.request("GET", f"/compute/v2.1/servers/{server_id}/os-instance-actions")
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", dest), (server, actions)

    after = await counted_past(client, server_id, before[-1] + 2)  # the destination's console
    assert after[0] > before[-1] - 2 and after == list(range(after[0], after[-1] + 1)), (before, after)
    _, output = await console_counts(client, server_id)
    assert BOOTED not in output  # no second boot
    written = await wrote_past(client, server_id, written_before + 2)  # to the volume, from the destination
    head = re.fullmatch(r"vol-(\d+)-\n?", volume_head(two_hosts, volume.id))
    assert head is not None and int(head[1]) >= written, volume_head(two_hosts, volume.id)
    moved, served = await volume_state(two_hosts, volume.id)
    assert moved == [("attached", dest)] and len(served) == 1 and not served & exports, (moved, served)
    assert server["addresses"] == addresses
    port = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"][0]
    assert port["binding:host_id"] == dest
    migrations = await migrations_of(client, server_id)
    assert [m["status"] for m in migrations] == ["completed", "cancelled", "failed"], migrations
    assert max(seen_totals, default=0) >= 500 * 2**20, seen_totals  # libvirt's job info, as it ran

    conn = await asyncio.to_thread(libvirt.open, two_hosts.uris[dest])
    try:
        domain = conn.lookupByUUIDString(server_id)
        assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        assert 0 < stats["downtime"] < 10_000, stats  # ms, as libvirt measured it
    finally:
        conn.close()
    async with asyncio.timeout(30):  # the source removes its domain and files once it moved
        while await two_hosts.nodes[source].records.uuids():
            await asyncio.sleep(0.2)
    assert await two_hosts.nodes[source].hypervisor.domains() == []

    # paused, it moves back paused (libvirt's PAUSED flag): it runs nowhere until unpaused there
    action = f"/compute/v2.1/servers/{server_id}/action"
    await client.request("POST", action, {"pause": None})
    await until_status(client, server_id, "PAUSED")
    await client.servers.live_migrate(server_id, source, wait=False)
    server = await settled(client, server_id)
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("PAUSED", source), server
    statuses = [m["status"] for m in await migrations_of(client, server_id)]
    assert statuses == ["completed", "completed", "cancelled", "failed"], statuses
    paused_at, _ = await console_counts(client, server_id)  # the source's console log, new
    await asyncio.sleep(2)
    assert (await console_counts(client, server_id))[0] == paused_at  # no step while paused
    back, _ = await volume_state(two_hosts, volume.id)
    assert back == [("attached", source)], back
    await client.request("POST", action, {"unpause": None})
    await until_status(client, server_id, "ACTIVE")
    await wrote_past(client, server_id, written + 2)  # to the volume, on the source again

    await client.server_action(server_id, "delete", wait=True)
    assert await two_hosts.nodes[source].hypervisor.domains() == []
    assert await two_hosts.nodes[dest].hypervisor.domains() == []
    assert await volume_state(two_hosts, volume.id) == ([], set())
    assert (await client.volumes.get(volume.id)).status == "available"


STAMP_SCRIPT = (
    "#!/bin/sh\n"
    "old=$(dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | tr -dc 'a-z0-9-')\n"
    "new=boot-$(tr -dc 'a-f0-9' < /proc/sys/kernel/random/boot_id | cut -c1-12)\n"
    "echo $new | dd of=/dev/vda bs=512 seek=2048 conv=sync,fsync 2>/dev/null\n"
    'echo "AIOSTACK-STAMP read=$old wrote=$new" > /dev/console\n'
)
STAMP = r"AIOSTACK-STAMP read=([a-z0-9-]*) wrote=([a-z0-9-]+)"


async def stamped(client: Client, server_id: str, after: int = 0) -> tuple[str, str]:
    """The last boot's stamp line once there are more than ``after``: what it read from its
    root disk, and what it wrote there."""
    output = ""
    try:
        async with asyncio.timeout(GUEST_DEADLINE):
            while len(stamps := re.findall(STAMP, output := await client.console_output(server_id))) <= after:
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"no stamp past {after}:\n{output[-3000:]}") from None
    read, wrote = stamps[-1]
    return read, wrote


@pytest.mark.full_size  # four boots of the guest under TCG: about 50 s
async def test_a_real_guest_cold_migrates_with_its_disk_and_reverts_to_the_disk_it_left(
    two_hosts: TwoHosts,
) -> None:
    """Cold migration (``migrate``): the guest is powered off, its root disk copied to the other
    host, where it boots from it (what it wrote before is there) in VERIFY_RESIZE, its port bound
    there; the source keeps its shut-off domain and disk until the migration is confirmed or
    reverted. Reverted, the destination's guest is destroyed, then it boots on its source from the
    disk as it left; migrated again and
    confirmed, the source keeps nothing. Its volume follows it each time (an NBD export of its own
    on each host, the other's ended), never copied."""
    client = two_hosts.client
    body = {
        "name": "cold",
        "imageRef": (await client.request("GET", "/image/v2/images?name=test-guest"))["images"][0]["id"],
        "flavorRef": "1",
        "user_data": base64.b64encode(STAMP_SCRIPT.encode()).decode(),
    }
    server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    server = await until_status(client, server_id, "ACTIVE")
    source = server["OS-EXT-SRV-ATTR:host"]
    [dest] = set(two_hosts.nodes) - {source}
    _, first = await stamped(client, server_id)
    action = f"/compute/v2.1/servers/{server_id}/action"
    volume = await client.volumes.create(1, "cold")
    await client.servers.attach_volume(server_id, volume.id)  # live, over NBD
    _, exports = await volume_state(two_hosts, volume.id)

    await client.request("POST", action, {"migrate": None})
    server = await until_status(client, server_id, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == dest
    moved, served = await volume_state(two_hosts, volume.id)  # its own export there, the source's ended
    assert moved == [("attached", dest)] and len(served) == 1 and not served & exports, (moved, served)
    read, second = await stamped(client, server_id)  # the destination's console: its first boot
    assert read == first, (read, first)  # the disk it boots from is the one it left
    [port] = (await client.request("GET", f"/network/v2.0/ports?device_id={server_id}"))["ports"]
    assert port["binding:host_id"] == dest
    kept = two_hosts.nodes[source].hypervisor
    [domain] = await kept.domains()
    assert domain.UUIDString() == server_id and not await kept.is_running(domain)

    await client.request("POST", action, {"revertResize": None})
    server = await until_status(client, server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == source
    read, third = await stamped(client, server_id, after=1)  # the source's console log goes on
    assert read == first, (read, first, second)  # its disk as it left, not the destination's
    back, served_back = await volume_state(two_hosts, volume.id)
    assert back == [("attached", source)] and len(served_back) == 1 and not served_back & served, back
    disks = await client.request("GET", f"/compute/v2.1/servers/{server_id}/os-volume_attachments")
    assert [a["volumeId"] for a in disks["volumeAttachments"]] == [volume.id]
    # the destination's guest was destroyed before the source's started: never two at once
    assert await two_hosts.nodes[dest].hypervisor.domains() == []
    assert await two_hosts.nodes[dest].records.uuids() == set()

    await client.request("POST", action, {"migrate": None})
    await until_status(client, server_id, "VERIFY_RESIZE")
    read, _ = await stamped(client, server_id)
    assert read == third, (read, third)
    await client.request("POST", action, {"confirmResize": None})
    server = await until_status(client, server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == dest
    async with asyncio.timeout(30):  # the source's copy goes once confirmed
        while await kept.domains() or await two_hosts.nodes[source].records.uuids():
            await asyncio.sleep(0.2)
    statuses = [m["status"] for m in await migrations_of(client, server_id)]
    assert statuses == ["confirmed", "reverted"], statuses
    assert (await volume_state(two_hosts, volume.id))[0] == [("attached", dest)]
    await client.server_action(server_id, "delete", wait=True)
    assert await two_hosts.nodes[dest].hypervisor.domains() == []
    assert await volume_state(two_hosts, volume.id) == ([], set())
