"""The limit, side by side in one run: domains created straight through libvirt vs booted through aiostack.

Each direct domain is the very definition the node built (``node.domain.domain_xml``, as the node
stored it in ``node.sqlite`` for a server booted through aiostack), with its own UUID and name.

1. Test driver (`aiostack up --nodes 1`): per-boot time of N domains defined and started one
   after another through libvirt-python (to running: ``create()`` returned) against N servers
   booted one after another through the REST API (POST -> the ``instance.active`` event on the
   websocket); then the same N at once: direct define+create of all, against aiostack with 64 in
   flight.
2. Real QEMU (`aiostack up --libvirt qemu:///system`, the test guest), one boot after another:
   each round boots a server through aiostack (to ACTIVE, and to ``AIOSTACK-READY`` in its
   console log), stops it, then defines and starts a clone of its domain straight through
   libvirt (to running, and to the same line in its console log). The clone has a copy of the
   server's root disk and shares its config drive and NIC (port, tap name, DHCP entry): while
   the server is stopped its guest does the very same work. A first server, not counted, warms
   the caches and stays up through the rounds, so the network each round's guest plugs into (its
   bridge and DHCP server) exists already, as on any host that runs guests; its own time to
   ACTIVE, the network made on the way, is reported. Each round also times what the node's plug
   of a port costs in libvirt: one DHCP host entry added to the running network, live. Each
   timed boot starts ``SETTLE`` seconds after the step before it (the last round's delete; the
   stop and the disk's copy), so neither side pays for the other's leftovers on the two cores.

Ratios are aiostack over direct (p50s); the rounds' own differences (aiostack's ACTIVE less the
direct domain's running) are reported too, being less at the mercy of a shared machine's drift.
Goal: aiostack adds <= 10 % to a real QEMU boot's time to ACTIVE: both aiostack's p50 to ACTIVE
<= 1.1 x the direct p50 to running, and the rounds' p50 difference <= 0.1 x the direct p50 to
running (so a lucky or unlucky drift of the machine's load meets it in neither). Ends with one
RESULT line.

    python bench/limit.py [--test-boots 200] [--qemu-boots 5]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from aiostack.client import Client
from bench.boot import IN_FLIGHT, PASSWORD, Cloud, boot_many
from deploy.launch import RunningCloud, aiostack_up
from deploy.testguest import build_test_guest, default_cache_dir, register_test_guest
from node.libvirtd import SYSTEM_URI, ensure_libvirtd
from node.networks import UPDATE_FLAGS

READY = "AIOSTACK-READY"
SETTLE = 1.0
ENV = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD}


def node_xml(data_dir: Path, instance_uuid: str, host: str = "node-1") -> str:
    """The domain XML the node built for an instance (its store keeps it)."""
    with sqlite3.connect(data_dir / "nodes" / host / "node.sqlite") as db:
        row = db.execute("SELECT xml FROM domains WHERE uuid = ?", (instance_uuid,)).fetchone()
    if row is None:
        raise RuntimeError(f"node {host} has no domain {instance_uuid}")
    return str(row[0])


def clone_xml(xml: str, name: str, disk: Path | None = None, console_log: Path | None = None) -> str:
    """``xml`` with a new UUID and ``name`` (not ``instance-*``: the node's orphan sweep leaves it
    alone); with ``disk``, its root disk (vda) there; with ``console_log``, its console logged there."""
    root = ET.fromstring(xml)
    root.findall("uuid")[0].text = str(uuid.uuid4())
    root.findall("name")[0].text = name
    if disk is not None:
        for element in root.iter("disk"):
            target = element.find("target")
            source = element.find("source")
            if target is not None and target.get("dev") == "vda" and source is not None:
                source.set("file", str(disk))
    if console_log is not None:
        for log in root.iter("log"):
            log.set("file", str(console_log))
    return ET.tostring(root, encoding="unicode")


def xml_paths(xml: str) -> tuple[Path, Path]:
    """The root disk (vda) and the console log of a real guest's domain XML."""
    root = ET.fromstring(xml)
    disk = next(
        element.find("source")
        for element in root.iter("disk")
        if (target := element.find("target")) is not None and target.get("dev") == "vda"
    )
    log = next(root.iter("log"))
    assert disk is not None
    return Path(disk.get("file", "")), Path(log.get("file", ""))


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def wait_for_line(path: Path, text: str, timeout: float = 180.0) -> float:
    """When ``text`` first appears in the file at ``path`` (read every 10 ms)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if text.encode() in path.read_bytes():
                    return time.perf_counter()
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.01)


def define_and_start(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    domain = conn.defineXML(xml)
    domain.create()
    if domain.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        raise RuntimeError(f"{domain.name()} is not running after create()")
    return domain


def remove(domain: libvirt.virDomain) -> None:
    if domain.isActive():
        domain.destroy()
    domain.undefine()


# -- test driver ----------------------------------------------------------------------------------


async def test_driver_phase(args: argparse.Namespace, results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "cloud"
        async with aiostack_up(data_dir, "--nodes", "1", "--log-level", "WARNING", env=ENV) as up:
            cloud = Cloud(up.gateway_url)
            await cloud.start()
            boots: list[float] = []
            for number in range(args.test_boots):
                server_id, sent, _ = await cloud.boot(f"seq-{number}")
                arrived, _ = await cloud.wait(server_id, "instance.active")
                boots.append(arrived - sent)
            elapsed = await boot_many(cloud, args.test_boots, "many")
            await cloud.close()
            template = node_xml(data_dir, server_id)
            node_file = Path(scratch) / "testnode.xml"
            shutil.copy(data_dir / "nodes" / "node-1" / "testnode.xml", node_file)
        conn = libvirt.open(f"test://{node_file}")
        try:
            direct: list[float] = []
            for xml in [clone_xml(template, f"seq-{n}") for n in range(args.test_boots)]:
                began = time.perf_counter()
                define_and_start(conn, xml)
                direct.append(time.perf_counter() - began)
            xmls = [clone_xml(template, f"many-{n}") for n in range(args.test_boots)]
            began = time.perf_counter()
            for xml in xmls:
                define_and_start(conn, xml)
            direct_elapsed = time.perf_counter() - began
        finally:
            conn.close()
    results["td_direct_p50_ms"] = median_ms(direct)
    results["td_aiostack_p50_ms"] = median_ms(boots)
    results["td_ratio"] = results["td_aiostack_p50_ms"] / results["td_direct_p50_ms"]
    results["td_direct_per_s"] = args.test_boots / direct_elapsed
    results["td_aiostack_per_s"] = args.test_boots / elapsed


# -- real QEMU ------------------------------------------------------------------------------------


class QemuRound:
    """One server booted through aiostack, then its domain's clone straight through libvirt."""

    def __init__(self, up: RunningCloud, cloud: Cloud, client: Client, conn: libvirt.virConnect) -> None:
        self.up, self.cloud, self.client, self.conn = up, cloud, client, conn

    async def run(self, number: int) -> dict[str, float]:
        times: dict[str, float] = {}
        await asyncio.sleep(SETTLE)
        began = time.perf_counter()
        server_id, sent, _ = await self.cloud.boot(f"limit-{number}")
        arrived, _ = await self.cloud.wait(server_id, "instance.active")
        _, started = await self.cloud.wait(server_id, "STARTED")
        times["aiostack_active"] = arrived - sent
        times["aiostack_to_started"] = started["state"]["libvirt_ts"] - sent
        times["aiostack_started_to_active"] = arrived - started["state"]["libvirt_ts"]
        xml = node_xml(self.up.data_dir, server_id)
        disk, console_log = xml_paths(xml)
        times["aiostack_ready"] = await wait_for_line(console_log, READY) - began
        await self.client.server_action(server_id, "stop", wait=True)
        copy = disk.with_name("disk.limit-direct")
        await asyncio.to_thread(shutil.copy, disk, copy)
        direct_log = console_log.with_name("console.limit-direct.log")
        clone = clone_xml(xml, f"limit-direct-{number}", copy, direct_log)
        await asyncio.sleep(SETTLE)
        began = time.perf_counter()
        domain = await asyncio.to_thread(define_and_start, self.conn, clone)
        times["direct_running"] = time.perf_counter() - began
        try:
            times["direct_ready"] = await wait_for_line(direct_log, READY) - began
        finally:
            await asyncio.to_thread(remove, domain)
            copy.unlink(missing_ok=True)
            direct_log.unlink(missing_ok=True)
        times["dhcp_host_update"] = await asyncio.to_thread(self.dhcp_host_update, xml)
        await self.client.server_action(server_id, "delete", wait=True)
        return times

    def dhcp_host_update(self, xml: str) -> float:
        """Seconds libvirt takes to add a DHCP host entry to a running network, live (what the node
        does for each port it plugs in): the stopped server's own entry, removed and added back."""
        interface = next(ET.fromstring(xml).iter("interface"))
        source = interface.find("source")
        if source is None or source.get("network") is None:
            raise RuntimeError(
                "the guest got user-mode networking, not its network's bridge (another cloud's"
                " libvirt network on the same addresses?): the node's log says why"
            )
        network = self.conn.networkLookupByName(source.get("network"))
        mac = interface.findall("mac")[0].get("address")
        entry = next(
            host for host in ET.fromstring(network.XMLDesc(0)).iter("host") if host.get("mac") == mac
        )
        entry_xml = ET.tostring(entry, encoding="unicode")
        section, flags = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, UPDATE_FLAGS
        network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1, entry_xml, flags)
        began = time.perf_counter()
        network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, -1, entry_xml, flags)
        return time.perf_counter() - began


async def qemu_phase(args: argparse.Namespace, results: dict[str, float]) -> None:
    await asyncio.to_thread(ensure_libvirtd)
    guest = await asyncio.to_thread(build_test_guest, default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-limit-") as data_dir:
        async with (
            aiostack_up(
                data_dir, "--libvirt", SYSTEM_URI, "--log-level", "WARNING", env=ENV, timeout=180
            ) as up,
            Client(up.gateway_url) as client,
        ):
            await client.login("admin", PASSWORD, "admin")
            ids = await register_test_guest(client, guest, name="test-guest")
            cloud = Cloud(up.gateway_url)
            await cloud.start("instance,domain")
            cloud.image = ids["disk"]
            conn = await asyncio.to_thread(libvirt.open, SYSTEM_URI)
            try:
                rounds = QemuRound(up, cloud, client, conn)
                keeper, sent, _ = await cloud.boot("limit-keeper")  # warms the caches; keeps the network
                results["qemu_first_active_s"] = (await cloud.wait(keeper, "instance.active"))[0] - sent
                measured = [await rounds.run(number) for number in range(1, args.qemu_boots + 1)]
                await client.server_action(keeper, "delete", wait=True)
            finally:
                for server in await client.servers.list():  # those a failed round left: QEMU guests
                    await client.servers.delete(server, wait=True)
                await cloud.close()
                await asyncio.to_thread(conn.close)
    for number, times in enumerate(measured, 1):
        print(
            f"  QEMU round {number}: aiostack ACTIVE {times['aiostack_active']:.3f} s"
            f" (STARTED at {times['aiostack_to_started']:.3f} s), ready {times['aiostack_ready']:.3f} s;"
            f" direct running {times['direct_running']:.3f} s, ready {times['direct_ready']:.3f} s"
        )
    for key in measured[0]:
        results[f"qemu_{key}_p50_s"] = statistics.median(times[key] for times in measured)
    results["qemu_ratio_active"] = (
        results["qemu_aiostack_active_p50_s"] / results["qemu_direct_running_p50_s"]
    )
    results["qemu_extra_p50_s"] = statistics.median(
        times["aiostack_active"] - times["direct_running"] for times in measured
    )
    results["qemu_ratio_ready"] = results["qemu_aiostack_ready_p50_s"] / results["qemu_direct_ready_p50_s"]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--test-boots", type=int, default=200)
    parser.add_argument("--qemu-boots", type=int, default=5)
    args = parser.parse_args()
    r: dict[str, float] = {}
    await test_driver_phase(args, r)
    await qemu_phase(args, r)
    print(
        f"test driver, one after another: direct define+create p50 {r['td_direct_p50_ms']:.2f} ms,"
        f" aiostack POST -> ACTIVE p50 {r['td_aiostack_p50_ms']:.2f} ms (x{r['td_ratio']:.0f});"
        f" {args.test_boots} at once: direct {r['td_direct_per_s']:.0f}/s,"
        f" aiostack ({IN_FLIGHT} in flight) {r['td_aiostack_per_s']:.0f}/s"
    )
    print(
        f"real QEMU, p50 of {args.qemu_boots}: direct create -> running"
        f" {r['qemu_direct_running_p50_s']:.3f} s, aiostack POST -> ACTIVE"
        f" {r['qemu_aiostack_active_p50_s']:.3f} s (x{r['qemu_ratio_active']:.2f}; POST -> libvirt"
        f" STARTED {r['qemu_aiostack_to_started_p50_s']:.3f} s, STARTED -> ACTIVE at the client"
        f" {r['qemu_aiostack_started_to_active_p50_s']:.3f} s); to {READY} on the console: direct"
        f" {r['qemu_direct_ready_p50_s']:.3f} s, aiostack {r['qemu_aiostack_ready_p50_s']:.3f} s"
        f" (x{r['qemu_ratio_ready']:.2f}); per round, aiostack's ACTIVE after the direct domain's"
        f" running: p50 {r['qemu_extra_p50_s']:+.3f} s"
    )
    print(
        f"  of aiostack's extra time: libvirt adding one DHCP host entry to the running network, live"
        f" (the node does it for each port it plugs in) {r['qemu_dhcp_host_update_p50_s']:.3f} s;"
        f" the first guest on the host (image cache, network and its bridge made) was ACTIVE after"
        f" {r['qemu_first_active_s']:.3f} s"
    )
    goal_met = (
        r["qemu_ratio_active"] <= 1.10 and r["qemu_extra_p50_s"] <= 0.10 * r["qemu_direct_running_p50_s"]
    )
    print(
        f"RESULT td_direct_p50_ms={r['td_direct_p50_ms']:.2f}"
        f" td_aiostack_p50_ms={r['td_aiostack_p50_ms']:.2f} td_ratio={r['td_ratio']:.1f}"
        f" td_direct_per_s={r['td_direct_per_s']:.0f}"
        f" td_aiostack_per_s={r['td_aiostack_per_s']:.0f}"
        f" qemu_direct_running_s={r['qemu_direct_running_p50_s']:.3f}"
        f" qemu_aiostack_active_s={r['qemu_aiostack_active_p50_s']:.3f}"
        f" qemu_ratio_active={r['qemu_ratio_active']:.2f} qemu_extra_p50_s={r['qemu_extra_p50_s']:.3f}"
        f" qemu_direct_ready_s={r['qemu_direct_ready_p50_s']:.3f}"
        f" qemu_aiostack_ready_s={r['qemu_aiostack_ready_p50_s']:.3f}"
        f" qemu_ratio_ready={r['qemu_ratio_ready']:.2f}"
        f" qemu_dhcp_host_update_s={r['qemu_dhcp_host_update_p50_s']:.3f}"
        f" goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
