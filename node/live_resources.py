"""A live change of vCPUs and RAM on a node: a domain of a flavor with maxima given another size.

The conductor casts ``set_resources`` once it holds a claim covering both sizes
(``actors/conductor/live_resources.py``). The node first takes the task (``task_progress``: a
task the conductor no longer has is left undone), so the conductor knows that from then on the
domain may have the new size; it changes the definition (``VIR_DOMAIN_AFFECT_CONFIG``) and
stores it, then, if the domain runs, the running guest (``VIR_DOMAIN_AFFECT_LIVE``): vCPUs
hot-plugged or unplugged (``setVcpusFlags``), memory through the balloon (``setMemoryFlags``,
which takes one of the two flags at a time), and reports ``task_done``. Each call sets an
absolute size, so a step sent again does it again to the same end; it holds the instance's lock,
so a delete never runs beside it. A step that fails is not reported: the conductor's watch
sends it again, and ends the change if it keeps making no progress. A change libvirt refuses
(more vCPUs than the hypervisor takes, a guest that will not unplug one) is put back to the size
the definition had and reported ``task_refused``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import libvirt

from bus import NotFound
from node.hypervisor import Hypervisor
from node.peers import Peers
from node.records import Records

log = logging.getLogger(__name__)

KIB_PER_MIB = 1024


class LiveResizer:
    """The node's part of live changes of vCPUs and RAM (see the module's docstring)."""

    def __init__(self, host: str, *, peers: Peers, hypervisor: Hypervisor, records: Records) -> None:
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records

    async def set_resources(self, instance_uuid: str, vcpus: int, memory_mb: int) -> None:
        async with self.records.lock(instance_uuid):
            taken = await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            if not taken:
                log.warning(
                    "node %s: not changing %s: the conductor has no task for it", self.host, instance_uuid
                )
                return
            async with self.records.working_on(instance_uuid):
                try:
                    domain = await self.hypervisor.existing(instance_uuid)
                except NotFound as exc:
                    log.warning("node %s: not changing %s: %s", self.host, instance_uuid, exc)
                    return
                old_vcpus, old_mib = await self._size(domain)
                try:
                    await self._change(instance_uuid, domain, vcpus, memory_mb)
                except libvirt.libvirtError as exc:
                    log.warning(
                        "node %s: libvirt refused the change of %s: %s", self.host, instance_uuid, exc
                    )
                    await self._change(instance_uuid, domain, old_vcpus, old_mib)
                    await self.peers.patient_conductor.task_refused(
                        instance_uuid=instance_uuid, reason=f"libvirt refused the change: {exc}"[:1000]
                    )
                    return
                log.info("node %s: %s now has %d vCPUs, %d MiB", self.host, instance_uuid, vcpus, memory_mb)
            await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)

    async def _size(self, domain: libvirt.virDomain) -> tuple[int, int]:
        """The vCPUs and MiB of the domain's definition."""
        vcpus = await self.hypervisor.virt(domain.vcpusFlags, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        root = ET.fromstring(await self.hypervisor.persistent_xml(domain))
        memory = root.find("currentMemory")
        if memory is None:
            memory = root.find("memory")
        assert memory is not None and memory.text is not None
        kib = int(memory.text) * (KIB_PER_MIB if memory.get("unit") == "MiB" else 1)
        return int(vcpus), kib // KIB_PER_MIB

    async def _change(
        self, instance_uuid: str, domain: libvirt.virDomain, vcpus: int, memory_mb: int
    ) -> None:
        """Give the definition (stored) and the running guest this size."""
        await self._set(domain, vcpus, memory_mb, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        await self.records.set_xml(instance_uuid, await self.hypervisor.persistent_xml(domain))
        if await self.hypervisor.is_running(domain):
            await self._set(domain, vcpus, memory_mb, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    async def _set(self, domain: libvirt.virDomain, vcpus: int, memory_mb: int, flag: int) -> None:
        """Set the vCPUs and memory of the domain's definition or running guest (``flag``)."""
        await self.hypervisor.virt(domain.setVcpusFlags, vcpus, flag)
        await self.hypervisor.virt(domain.setMemoryFlags, memory_mb * KIB_PER_MIB, flag)
