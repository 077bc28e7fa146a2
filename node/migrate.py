"""A live migration's source on a node: the running guest copied to its destination.

libvirt's test driver has no migration API, so a test-driver node moves the domain itself: it
"copies" the guest's memory (its ``<memory>``) at ``migration_bandwidth`` MB/s (0: at once; a
real setting, to watch a migration's progress and abort it), reporting each round's progress to
the conductor (``migration_progress``), which answers whether to go on, stop (aborted: the domain
keeps running here, untouched) or finish now (forced to complete). It then reports
``task_done``; the conductor records the instance on the destination, whose node defines and
starts the domain there (``finish_migration``), and has this node remove its own
(``drop_moved_instance``) once the destination runs it. The domain runs here throughout.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET

from bus import NotFound
from node.hypervisor import Hypervisor
from node.peers import Peers
from node.records import Records

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.2
"""Seconds between two progress reports of a copy."""
MIB = 1 << 20


def memory_bytes(xml: str) -> int:
    """The guest memory a domain definition gives it, in bytes."""
    memory = ET.fromstring(xml).find("memory")
    if memory is None or memory.text is None:
        return 0
    units = {"KiB": 1 << 10, "k": 1 << 10, "MiB": MIB, "M": MIB, "GiB": 1 << 30, "G": 1 << 30, "b": 1}
    return int(memory.text) * units.get(memory.get("unit", "KiB"), 1 << 10)


class LiveMigrator:
    """The node's part of live migrations as their source (see the module's docstring)."""

    def __init__(
        self, host: str, *, peers: Peers, hypervisor: Hypervisor, records: Records, bandwidth_mb: float
    ) -> None:
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.bandwidth_mb = bandwidth_mb

    async def live_migration(self, instance_uuid: str, destination: str) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                domain = await self.hypervisor.existing(instance_uuid)
            except NotFound as exc:
                log.warning("node %s: not migrating %s: %s", self.host, instance_uuid, exc)
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
