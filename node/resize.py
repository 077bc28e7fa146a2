"""Resize on a node: a domain given another flavor's vCPUs, RAM and disk, on the same host.

The conductor casts each step of the resize (``actors/conductor/resize.py``), recorded first:
``resize_instance`` powers the domain off (``destroy``: libvirt's STOPPED event changes only the
power state during a resize), grows a real guest's root overlay if the flavor's disk is bigger
(``qemu-img resize``, the overlay as it was kept beside it), defines the domain again with the
new ``<vcpu>`` and ``<memory>``, stores the definition (a cold migration's, ``destination``,
then copies a real guest's local disks there: ``LiveMigrator.copy_stopped``) and reports
``task_done``; ``finish_resize`` starts it if the instance ran, and reports its power state; ``revert_resize``
powers it off, puts the old overlay back, defines the old flavor again, starts it if it ran and
reports its power state; ``confirm_resize`` drops the old overlay. Each is idempotent (a step
sent again does it again to the same end) and holds the instance's lock, so a delete never runs
beside it. A step that fails is not reported: the conductor's watch sends it again, and ends
the resize in ERROR if it keeps making no progress.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

import libvirt

from api.node import DomainFlavor
from bus import AiostackError, NotFound
from node.domain import METADATA_NS, set_size
from node.hypervisor import Hypervisor
from node.images import ImageCache
from node.peers import Peers
from node.power import start_if_asked
from node.records import Records

log = logging.getLogger(__name__)


def resized_xml(xml: str, flavor: DomainFlavor) -> str:
    """A domain definition with the flavor's vCPUs, RAM (``<memory>``, ``<currentMemory>``), their
    live-change maxima and its name."""
    domain = ET.fromstring(xml)
    set_size(
        domain, flavor["vcpus"], flavor["memory_mb"], flavor.get("max_vcpus"), flavor.get("max_memory_mb")
    )
    name = domain.find(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}flavor")
    if name is not None:
        name.text = flavor["name"]
    return ET.tostring(domain, encoding="unicode")


class Resizer:
    """The node's part of resizes (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        *,
        peers: Peers,
        hypervisor: Hypervisor,
        records: Records,
        images: ImageCache,
        copy_disks: Callable[[str], Awaitable[None]],
    ) -> None:
        """``copy_disks``: a stopped real guest's local disks copied to its cold migration's destination."""
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.images = images
        self.copy_disks = copy_disks

    async def resize_instance(
        self, instance_uuid: str, flavor: DomainFlavor, destination: str | None
    ) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                await self._power_off(instance_uuid)
                if self.hypervisor.real_guests and flavor["disk_gb"]:
                    await self.images.grow_root_disk(instance_uuid, flavor["disk_gb"])
                await self._define(instance_uuid, flavor)
                if self.hypervisor.real_guests and destination is not None:
                    await self.copy_disks(instance_uuid)
            except NotFound as exc:
                log.warning("node %s: not resizing %s: %s", self.host, instance_uuid, exc)
                return
            except (AiostackError, libvirt.libvirtError) as exc:  # the watch sends the step again
                log.warning(
                    "node %s: the disks of %s were not copied to %s: %s",
                    self.host,
                    instance_uuid,
                    destination,
                    exc,
                )
                return
            await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)

    async def finish_resize(self, instance_uuid: str, power_on: bool) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                running = await self._power_on(instance_uuid, power_on)
            except NotFound as exc:
                log.warning("node %s: not finishing the resize of %s: %s", self.host, instance_uuid, exc)
                return
            await self.peers.patient_conductor.sync_power_state(instance_uuid=instance_uuid, running=running)

    async def revert_resize(self, instance_uuid: str, flavor: DomainFlavor, power_on: bool) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            try:
                await self._power_off(instance_uuid)
                if self.hypervisor.real_guests:
                    await self.images.restore_root_disk(instance_uuid, flavor["disk_gb"])
                await self._define(instance_uuid, flavor)
                running = await self._power_on(instance_uuid, power_on)
            except NotFound as exc:
                log.warning("node %s: not reverting the resize of %s: %s", self.host, instance_uuid, exc)
                return
            await self.peers.patient_conductor.sync_power_state(instance_uuid=instance_uuid, running=running)

    async def confirm_resize(self, instance_uuid: str) -> None:
        self.images.drop_resize_backup(instance_uuid)

    async def _power_off(self, instance_uuid: str) -> None:
        """:raises NotFound: the instance has no domain here."""
        domain = await self.hypervisor.existing(instance_uuid)
        self.records.note_request(instance_uuid)
        await self.records.set_desired(instance_uuid, "shutoff")
        if await self.hypervisor.is_running(domain):
            await self.hypervisor.virt(domain.destroy)

    async def _define(self, instance_uuid: str, flavor: DomainFlavor) -> None:
        """Define the (stopped) domain again with ``flavor``, and store the definition."""
        domain = await self.hypervisor.existing(instance_uuid)
        xml = resized_xml(await self.hypervisor.persistent_xml(domain), flavor)
        await self.hypervisor.define(xml)
        await self.records.set_xml(instance_uuid, xml)

    async def _power_on(self, instance_uuid: str, power_on: bool) -> bool:
        """Start the domain if ``power_on`` (and it is not running); whether it runs."""
        domain = await self.hypervisor.existing(instance_uuid)
        return await start_if_asked(self.hypervisor, self.records, instance_uuid, domain, power_on)
