"""Shelve on a node: a domain powered off for its disk to be saved as an image, and removed when
the shelved instance is offloaded.

The conductor casts each step, recorded first (``actors/conductor/shelve.py``):
``shelve_instance`` powers the domain off as a stop does (an ACPI shutdown, ``destroy`` after the
shutdown timeout; a paused guest is destroyed at once, a suspended one's managed-save image is
dropped: the shelve keeps the disk, not the memory) and reports ``task_done``; the upload is
``snapshot_instance`` (``node/snapshots.py``); ``shelve_offload_instance`` destroys and
undefines the domain and removes its files and DHCP entries here (never its ports and volumes,
which the instance keeps: the conductor unbinds them from this host), then reports ``task_done``.
An offloaded instance's unshelve on this node is the evacuate's build (``Builder.evacuate_instance``).
Each step is idempotent and holds the instance's lock, so a delete never runs beside it; one
that fails is not reported, and the conductor's watch sends it again or ends the shelve.

Why not libvirt's managed save (which keeps the guest's memory, as suspend does): a shelved
instance may be offloaded and unshelved on any host, from an image, as Nova's is; a memory image
would bind it to this host and to a domain definition the offload removes, so the shelve keeps
the disk alone, even while the domain is still here.
"""

from __future__ import annotations

import logging

import libvirt

from bus import NotFound
from node.build import Builder
from node.power import Power

log = logging.getLogger(__name__)


class Shelver:
    """The node's part of shelves (see the module's docstring)."""

    def __init__(self, power: Power, builder: Builder) -> None:
        """``power`` powers the domain off (its peers, hypervisor and records are this part's too);
        ``builder`` removes an offloaded domain."""
        self.host = power.host
        self.peers = power.peers
        self.hypervisor = power.hypervisor
        self.records = power.records
        self.power = power
        self.builder = builder

    async def shelve_instance(self, instance_uuid: str) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                domain = await self.hypervisor.existing(instance_uuid)
            except NotFound as exc:
                log.warning("node %s: not shelving %s: %s", self.host, instance_uuid, exc)
                return
            self.records.note_request(instance_uuid)
            await self.records.set_desired(instance_uuid, "shutoff")
            if await self.hypervisor.state(domain) == libvirt.VIR_DOMAIN_PAUSED:
                await self.hypervisor.virt(domain.destroy)
            elif await self.hypervisor.is_running(domain):
                await self.power.shut_down(instance_uuid, domain)
            if await self.hypervisor.virt(domain.hasManagedSaveImage, 0):
                await self.hypervisor.virt(domain.managedSaveRemove, 0)
            await self._done(instance_uuid)

    async def shelve_offload_instance(self, instance_uuid: str) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            self.records.note_request(instance_uuid)
            await self.builder.remove_domain(instance_uuid)
            await self._done(instance_uuid)
        self.records.forget_lock(instance_uuid)

    async def _done(self, instance_uuid: str) -> None:
        """Report the step done (an instance no longer recorded here has nothing to report)."""
        try:
            await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)
        except NotFound:
            log.info("node %s: %s is no longer recorded here", self.host, instance_uuid)
