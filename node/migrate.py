"""A live migration's source on a node: the running guest copied to its destination.

libvirt's test driver has no migration API, so a test-driver node moves the domain itself: it
"copies" the guest's memory (its ``<memory>``) at ``migration_bandwidth`` MB/s (0: at once; a
real setting, to watch a migration's progress and abort it), reporting each round's progress to
the conductor (``migration_progress``), which answers whether to go on, stop (aborted: the domain
keeps running here, untouched) or finish now (forced to complete). It then reports
``task_done``; the conductor records the instance on the destination, whose node defines and
starts the domain there (``finish_migration``), and has this node remove its own
(``drop_moved_instance``) once the destination runs it. The domain runs here throughout.

A real guest (QEMU, each host with a libvirtd of its own: ``node.libvirtd.host_libvirtd``) is
moved by libvirt, with Nova's flags and sequence. The source asks the conductor for its
destination (``live_migration_target``), whose node prepares first (``prepare``: Nova's
``pre_live_migration``; ``Builder.prepare_incoming``): its disk an overlay on the same image, its
config drive and boot files, its ports plugged into their networks there, its definition with
the destination's paths, which it answers. The source then calls ``migrateToURI3`` (LIVE,
PEER2PEER, PERSIST_DEST, UNDEFINE_SOURCE and NON_SHARED_INC: the disks are never shared between
hosts, so the top layer of each is always copied, as ``--block-migration`` asks) in a thread,
its libvirtd opening the destination's itself and QEMU's stream going to the destination's
address; every ``PROGRESS_INTERVAL`` it reports libvirt's job info (``migration_progress``), and
aborts the job (``abortJob``) when told to stop, or lets it pause the guest for as long as the
rest takes when told to finish now (``migrateSetMaxDowntime``: the pause Nova's force-complete
makes without post-copy, as the migration's own, whose events are the migration's). Done, it
reports ``task_done``: the destination's node, at the switch, finds the domain running there and
takes its ports (``finish_migration``).
A copy that fails leaves the guest running here: the source reports ``build_failed`` and the
conductor has the destination remove what it prepared. Volumes stay attached: the destination's
definition names its own attachments (NBD exports of their own, ``attach_arriving``), which the
destination's QEMU opens inactive and uses once the guest runs there; only the local disks are
copied (``VIR_MIGRATE_PARAM_MIGRATE_DISKS``, as Nova lists them), never a volume. A paused
guest migrates with libvirt's PAUSED flag and stays paused there.

A cold migration's source (``Resizer.resize_instance`` with a destination) has the stopped guest's
local disks copied the same way (``copy_stopped``): the destination prepared first, the guest
started paused here (it never runs), migrated not live, then stopped there; the source's
definition and disk stay until the migration is confirmed, for a revert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from api.conductor import ConductorForNodes
from api.net import Port
from api.node import LiveMigrationTarget
from api.volume import Reattached
from bus import AiostackError, Conflict, NotFound
from node.build import Builder
from node.hypervisor import Hypervisor
from node.peers import Peers
from node.records import Records

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.2
"""Seconds between two progress reports of a copy."""
MIB = 1 << 20
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_INC
)
"""Nova's live-migration flags, with its block migration's (disks never shared here)."""
COPY_FLAGS = (
    libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_NON_SHARED_INC
    | libvirt.VIR_MIGRATE_PAUSED
)
"""A cold migration's copy of a stopped guest's disks: not live, the source's definition kept."""
FORCED_DOWNTIME_MS = 60_000
"""The downtime a migration forced to complete may take: its next round is the last."""
TARGET_TIMEOUT = 330.0
"""Seconds the source waits for its destination to be prepared (the conductor waits 300 for it)."""


def takes_migrations(uri: str) -> bool:
    """Whether a libvirt URI names a libvirtd that can send and receive migrating guests (one of
    its own, not QEMU in the node's process, ``qemu:///embed``, nor the test driver)."""
    return uri.startswith(("qemu:///system", "qemu+"))


def memory_bytes(xml: str) -> int:
    """The guest memory a domain definition gives it, in bytes."""
    memory = ET.fromstring(xml).find("memory")
    if memory is None or memory.text is None:
        return 0
    units = {"KiB": 1 << 10, "k": 1 << 10, "MiB": MIB, "M": MIB, "GiB": 1 << 30, "G": 1 << 30, "b": 1}
    return int(memory.text) * units.get(memory.get("unit", "KiB"), 1 << 10)


def local_disks(xml: str) -> list[str]:
    """The targets of a domain's disks that live on its host and are written (its root overlay):
    what a block migration copies. Never a volume (a network disk, or one with a volume's
    ``<serial>``: each host reaches it through an attachment of its own), nor a read-only one."""
    return [
        target.get("dev", "")
        for disk in ET.fromstring(xml).iter("disk")
        if disk.get("type") == "file"
        and disk.get("device", "disk") == "disk"
        and disk.find("readonly") is None
        and disk.find("serial") is None
        and (target := disk.find("target")) is not None
    ]


def _stop_there(uri: str, instance_uuid: str) -> None:
    """Stop the guest a cold migration's copy left paused on its destination (blocking)."""
    connection = libvirt.open(uri)
    try:
        domain = connection.lookupByUUIDString(instance_uuid)
        if domain.isActive():
            domain.destroy()
    finally:
        connection.close()


class LiveMigrator:
    """The node's part of live migrations as their source (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        *,
        peers: Peers,
        hypervisor: Hypervisor,
        records: Records,
        bandwidth_mb: float,
        builder: Builder,
        address: str | None,
        targets: ConductorForNodes,
    ) -> None:
        """``address``: where guests migrating here are sent (None: this host takes none);
        ``targets``: the conductor, waiting ``TARGET_TIMEOUT`` for a destination to be prepared."""
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.bandwidth_mb = bandwidth_mb
        self.builder = builder
        self.address = address
        self.targets = targets

    async def live_migration(self, instance_uuid: str, destination: str) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                domain = await self.hypervisor.existing(instance_uuid)
            except NotFound as exc:
                log.warning("node %s: not migrating %s: %s", self.host, instance_uuid, exc)
                return
            if self.hypervisor.real_guests:
                await self._migrate(instance_uuid, domain)
                return
            total = memory_bytes(await self.hypervisor.persistent_xml(domain))
            if not await self._copy(instance_uuid, total):
                log.info("node %s: live migration of %s to %s stopped", self.host, instance_uuid, destination)
                return
            await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)

    async def _copy(self, instance_uuid: str, total: int) -> bool:
        """Copy ``total`` bytes at the node's bandwidth, reporting each round; whether it finished."""
        rate = self.bandwidth_mb * MIB
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            processed = total if rate <= 0 else min(total, int(elapsed * rate))
            verdict = await self.peers.patient_conductor.migration_progress(
                instance_uuid=instance_uuid,
                memory_total_bytes=total,
                memory_processed_bytes=processed,
                memory_remaining_bytes=total - processed,
            )
            if verdict == "stop":
                return False
            if verdict == "finish_now" or processed >= total:
                return True
            await asyncio.sleep(PROGRESS_INTERVAL)

    # -- a real guest ---------------------------------------------------------------------------

    async def prepare(
        self, instance_uuid: str, ports: list[Port], volumes: list[Reattached]
    ) -> LiveMigrationTarget:
        """The destination's part before a real guest arrives: what it needs made here."""
        if not self.hypervisor.real_guests or not takes_migrations(self.hypervisor.uri) or not self.address:
            raise Conflict(
                f"host {self.host} cannot take live-migrating guests ({self.hypervisor.uri} has no"
                " libvirtd of its own, or the node no migration address)"
            )
        xml = await self.builder.prepare_incoming(instance_uuid, ports, volumes)
        return {"xml": xml, "libvirt_uri": self.hypervisor.uri, "migrate_uri": f"tcp://{self.address}"}

    async def copy_stopped(self, instance_uuid: str) -> None:
        """A cold migration's copy of the stopped guest's local disks to its destination (prepared
        first, as a live migration's): libvirt copies disks only from a running QEMU, so the guest
        is started paused here (it never runs: its events are not the conductor's), migrated (not
        live; PERSIST_DEST, the local disks copied, PAUSED) and stopped there; its domain stays
        here, shut off, for a revert. Sent again, it copies again.

        :raises Conflict: this host cannot send, or the destination cannot take the guest.
        :raises libvirt.libvirtError: the copy failed (the guest stays here, shut off).
        """
        if not takes_migrations(self.hypervisor.uri):
            raise Conflict(f"{self.hypervisor.uri} cannot send a guest to another host")
        domain = await self.hypervisor.existing(instance_uuid)
        disks = local_disks(await self.hypervisor.persistent_xml(domain))
        target = await self.targets.live_migration_target(instance_uuid=instance_uuid)
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_URI: target["migrate_uri"],
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: target["xml"],
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: target["xml"],
        }
        flags = COPY_FLAGS
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
        else:
            flags &= ~libvirt.VIR_MIGRATE_NON_SHARED_INC
        self.records.copying.add(instance_uuid)
        try:
            await self.hypervisor.virt(domain.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED)
            await asyncio.to_thread(domain.migrateToURI3, target["libvirt_uri"], params, flags)
        finally:
            if await self.hypervisor.is_running(domain):
                await self.hypervisor.virt(domain.destroy)
            self.records.copying.discard(instance_uuid)
        await asyncio.to_thread(_stop_there, target["libvirt_uri"], instance_uuid)

    async def _migrate(self, instance_uuid: str, domain: libvirt.virDomain) -> None:
        """Send the running guest to its destination; ``task_done`` once it runs there, else
        ``build_failed`` (it runs on here) unless the migration was stopped."""
        try:
            if not takes_migrations(self.hypervisor.uri):
                raise Conflict(f"{self.hypervisor.uri} cannot send a guest to another host")
            disks = local_disks(await self.hypervisor.persistent_xml(domain))
            target = await self.targets.live_migration_target(instance_uuid=instance_uuid)
            if not await self._send(instance_uuid, domain, target, disks):
                log.info("node %s: live migration of %s stopped", self.host, instance_uuid)
                return
        except (AiostackError, libvirt.libvirtError) as exc:
            message = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc)
            log.warning("node %s: live migration of %s failed: %s", self.host, instance_uuid, message)
            await self.peers.patient_conductor.build_failed(
                instance_uuid=instance_uuid, message=f"live migration failed: {message}"[:1000]
            )
            return
        await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)

    async def _send(
        self, instance_uuid: str, domain: libvirt.virDomain, target: LiveMigrationTarget, disks: list[str]
    ) -> bool:
        """``migrateToURI3`` in a thread, its progress reported meanwhile, copying the local
        ``disks`` (none: no block migration); whether it finished (False: stopped, the guest runs
        on here). :raises libvirt.libvirtError: it failed."""
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_URI: target["migrate_uri"],
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: target["xml"],
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: target["xml"],
        }
        flags = MIGRATE_FLAGS
        if await self.hypervisor.state(domain) == libvirt.VIR_DOMAIN_PAUSED:
            flags |= libvirt.VIR_MIGRATE_PAUSED  # a paused guest stays paused on its destination
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
        else:
            flags &= ~libvirt.VIR_MIGRATE_NON_SHARED_INC
        job = asyncio.ensure_future(
            asyncio.to_thread(domain.migrateToURI3, target["libvirt_uri"], params, flags)
        )
        stopped = forced = False
        while not job.done():
            await asyncio.wait({job}, timeout=PROGRESS_INTERVAL)
            if job.done() or stopped:
                continue
            try:
                info = await asyncio.to_thread(domain.jobStats)
            except libvirt.libvirtError:
                continue  # between the job's phases (or just ended)
            verdict = await self.peers.patient_conductor.migration_progress(
                instance_uuid=instance_uuid,
                memory_total_bytes=int(info.get("memory_total", 0)),
                memory_processed_bytes=int(info.get("memory_processed", 0)),
                memory_remaining_bytes=int(info.get("memory_remaining", 0)),
            )
            if verdict == "stop":
                stopped = True
                with contextlib.suppress(libvirt.libvirtError):
                    await asyncio.to_thread(domain.abortJob)
            elif verdict == "finish_now" and not forced:
                forced = True
                with contextlib.suppress(libvirt.libvirtError):
                    await asyncio.to_thread(domain.migrateSetMaxDowntime, FORCED_DOWNTIME_MS, 0)
        try:
            await job
        except libvirt.libvirtError:
            if stopped:
                return False
            raise
        return True
