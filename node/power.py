"""Power: stop, start, pause and the like, reboot, and the real power state of a domain.

Each change is a cast the conductor recorded before sending: the node acknowledges it first
(``task_progress``), and libvirt's lifecycle event finishes it at the conductor. Where libvirt
sends no event (the domain already was where it was asked to go, a soft reboot) the node
tells the conductor itself; where the change fails, it tells the conductor the state the
domain is really in, so the instance never stays in a task state. Stop is an ACPI shutdown,
then ``destroy`` after the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import libvirt

from api.node import PowerAction, PowerState, RebootType
from bus import NotFound
from node.events import EventForwarder, LifecycleEvent
from node.hypervisor import Hypervisor
from node.peers import Peers
from node.records import Records

log = logging.getLogger(__name__)

ALREADY_THERE = {
    libvirt.VIR_DOMAIN_PAUSED: libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
    libvirt.VIR_DOMAIN_SHUTOFF: libvirt.VIR_DOMAIN_EVENT_STOPPED,
}
"""A domain's state -> the event libvirt would have sent on getting there (else RESUMED)."""


async def start_if_asked(
    hypervisor: Hypervisor, records: Records, instance_uuid: str, domain: libvirt.virDomain, power_on: bool
) -> bool:
    """Start ``domain`` if ``power_on`` and it is not running (recording that it should run);
    whether it runs."""
    running = await hypervisor.is_running(domain)
    if power_on and not running:
        await records.set_desired(instance_uuid, "running")
        await hypervisor.virt(domain.create)
        return True
    return running


class Power:
    """Power changes of this node's domains (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        *,
        peers: Peers,
        hypervisor: Hypervisor,
        records: Records,
        events: EventForwarder,
        shutdown_timeout: float,
    ) -> None:
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.events = events
        self.shutdown_timeout = shutdown_timeout

    async def stop_instance(self, instance_uuid: str) -> None:
        await self._settling(instance_uuid, self._stop)

    async def start_instance(self, instance_uuid: str) -> None:
        await self._settling(instance_uuid, self._start)

    async def change_power(self, instance_uuid: str, action: PowerAction) -> None:
        await self._settling(instance_uuid, lambda uuid: self._change(uuid, action))

    async def reboot_instance(self, instance_uuid: str, reboot_type: RebootType = "SOFT") -> None:
        await self._settling(instance_uuid, lambda uuid: self._reboot(uuid, reboot_type))

    async def get_power_state(self, instance_uuid: str) -> PowerState:
        domain = await self.hypervisor.domain(instance_uuid)
        return {
            "exists": domain is not None,
            "running": domain is not None and await self.hypervisor.is_running(domain),
        }

    async def sync(self, instance_uuid: str, *, running: bool) -> None:
        """Tell the conductor a power state libvirt will send no event for (it did not change)."""
        try:
            await self.peers.patient_conductor.sync_power_state(instance_uuid=instance_uuid, running=running)
        except NotFound:  # not (or no longer) recorded on this host: nothing of the conductor's to settle
            log.info(
                "node %s: %s is not recorded on this host; its power state is not reported",
                self.host,
                instance_uuid,
            )

    async def _settling(self, instance_uuid: str, power_change: Callable[[str], Awaitable[None]]) -> None:
        """Take the task (tell the conductor), run the power change; if it fails, tell the
        conductor the state the domain is really in, so the instance never stays in a task state."""
        try:
            async with self.records.working_on(instance_uuid):
                await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
                await power_change(instance_uuid)
        except Exception:
            domain = await self.hypervisor.domain(instance_uuid) if self.hypervisor.conn is not None else None
            running = domain is not None and await self.hypervisor.is_running(domain)
            await self.sync(instance_uuid, running=running)
            raise

    async def _existing(self, instance_uuid: str) -> libvirt.virDomain:
        """The instance's domain; its events from now on belong to this request.

        :raises NotFound: libvirt has none.
        """
        domain = await self.hypervisor.existing(instance_uuid)
        self.records.note_request(instance_uuid)
        return domain

    async def _stop(self, instance_uuid: str) -> None:
        """ACPI shutdown; destroy when the guest has not stopped within ``shutdown_timeout``."""
        domain = await self._existing(instance_uuid)
        await self.records.set_desired(instance_uuid, "shutoff")
        if not await self.hypervisor.is_running(domain):
            await self.sync(instance_uuid, running=False)
            return
        await self.shut_down(instance_uuid, domain)

    async def shut_down(self, instance_uuid: str, domain: libvirt.virDomain) -> None:
        """Power a running domain off: ACPI shutdown, ``destroy`` after ``shutdown_timeout``."""
        with self.events.awaiting_stop(instance_uuid) as stopped:
            try:
                await self.hypervisor.virt(domain.shutdown)
                async with asyncio.timeout(self.shutdown_timeout):
                    await stopped.wait()
            except TimeoutError:
                log.warning(
                    "node %s: %s ignored ACPI shutdown for %.0f s; destroying it",
                    self.host,
                    instance_uuid,
                    self.shutdown_timeout,
                )
                await self.hypervisor.virt(domain.destroy)

    async def _start(self, instance_uuid: str) -> None:
        domain = await self._existing(instance_uuid)
        await self.records.set_desired(instance_uuid, "running")
        if await self.hypervisor.is_running(domain):
            await self.sync(instance_uuid, running=True)
            return
        await self.hypervisor.virt(domain.create)

    async def _reboot(self, instance_uuid: str, reboot_type: RebootType) -> None:
        """SOFT: the guest reboots itself (no lifecycle event); HARD: destroy then create."""
        domain = await self._existing(instance_uuid)
        await self.records.set_desired(instance_uuid, "running")
        if reboot_type == "HARD":
            if await self.hypervisor.is_running(domain):
                await self.hypervisor.virt(domain.destroy)
            await self.hypervisor.virt(domain.create)
            return
        await self.hypervisor.virt(domain.reboot, 0)
        await self.peers.conductor.task_done(instance_uuid=instance_uuid)

    async def _change(self, instance_uuid: str, action: PowerAction) -> None:
        """pause (libvirt suspend), unpause (resume), suspend (managed save), resume (restore)."""
        domain = await self._existing(instance_uuid)
        state = await self.hypervisor.state(domain)
        if action == "pause" and state != libvirt.VIR_DOMAIN_PAUSED:
            await self.hypervisor.virt(domain.suspend)
        elif action == "unpause" and state == libvirt.VIR_DOMAIN_PAUSED:
            await self.hypervisor.virt(domain.resume)
        elif action == "suspend" and state != libvirt.VIR_DOMAIN_SHUTOFF:
            await self.records.set_desired(instance_uuid, "shutoff")
            await self.hypervisor.virt(domain.managedSave, 0)
        elif action == "resume" and state == libvirt.VIR_DOMAIN_SHUTOFF:
            await self.records.set_desired(instance_uuid, "running")
            await self.hypervisor.virt(domain.create)
        else:  # already there (a cast delivered again): say so as libvirt would have
            event = ALREADY_THERE.get(state, libvirt.VIR_DOMAIN_EVENT_RESUMED)
            await self.events.tell_conductor(LifecycleEvent(instance_uuid, event, 0, time.time()))
