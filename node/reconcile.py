"""Reconciliation: libvirt, this node's store and the conductor's records agree again.

* **At start** (a restarted node, or libvirt): for each instance the conductor records on
  this host, finish its delete, build it if the node died before defining it, define its domain
  again from the store if libvirt lost it, and bring its power to what the record wants (or
  tell the conductor the power it has, which libvirt sends no event for).
* **After a reconnect**: publish what changed while the connection was down
  (``domain.reconciled``), and define again the domains libvirt lost.
* **Orphans**, at start and every ``orphan_sweep_interval``: remove the domains of instances
  no longer recorded on this host (deleted while the node was away, or rebuilt elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import libvirt

from api.conductor import Instance
from bus import AiostackError, Bus, Conflict, NotFound, request_scope
from node.build import Builder
from node.events import EventForwarder
from node.hypervisor import Hypervisor
from node.peers import Peers
from node.power import Power
from node.records import Records
from runtime.events import publish_event
from runtime.states import RESIZE_TASKS, SHELVE_TASKS, PowerState, TaskState, VmState

log = logging.getLogger(__name__)

ASK_AT_ONCE = 500
"""Instance ids per ``recorded_here`` question: the messages stay small however many domains."""
RUNNING_VM_STATES = (VmState.ACTIVE, VmState.BUILDING, VmState.PAUSED)
"""The instance's ``vm_state`` when its domain should run (unless it is being powered off; a
RESIZED one runs if it ran)."""


class Reconciler:
    """Brings libvirt back in line with the records (see the module's docstring)."""

    def __init__(
        self,
        bus: Bus,
        host: str,
        *,
        peers: Peers,
        hypervisor: Hypervisor,
        records: Records,
        events: EventForwarder,
        builder: Builder,
        power: Power,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object],
        orphan_sweep_interval: float,
    ) -> None:
        self.bus = bus
        self.host = host
        self.conductor = peers.conductor
        self.hypervisor = hypervisor
        self.records = records
        self.events = events
        self.builder = builder
        self.power = power
        self.spawn = spawn
        self.orphan_sweep_interval = orphan_sweep_interval

    async def reconcile(self) -> None:
        """Make libvirt match the conductor's records of this host (a restarted node or libvirt)."""
        records = await self._records_when_conductor_answers()
        stored = {row["uuid"]: row for row in await self.records.rows()}
        for instance in records:
            uuid = instance["id"]
            domain = await self.hypervisor.domain(uuid)
            if instance["task_state"] == TaskState.DELETING:
                await self.builder.terminate_instance(uuid)
                continue
            if domain is None and uuid not in stored:
                if instance["vm_state"] == VmState.BUILDING:  # the node died before defining it: build it now
                    self.spawn(self.builder.build_and_run_instance(uuid), f"resume-{uuid}")
                continue
            if domain is None:
                domain = await self.hypervisor.define(stored[uuid]["xml"])
            if instance["task_state"] in RESIZE_TASKS | SHELVE_TASKS:
                continue  # the conductor sends the resize's (or shelve's) step again, or ends it
            want_running = (
                instance["vm_state"] in RUNNING_VM_STATES and instance["task_state"] != TaskState.POWERING_OFF
            ) or (instance["vm_state"] == VmState.RESIZED and instance["power_state"] == PowerState.RUNNING)
            if instance["task_state"] == TaskState.POWERING_ON:
                want_running = True
            running = await self.hypervisor.is_running(domain)
            if want_running and not running:
                await self.hypervisor.virt(domain.create)
            elif not want_running and running:
                await self.hypervisor.virt(domain.destroy)
            elif instance["vm_state"] != VmState.ERROR:  # an ERROR instance keeps its fault, running or not
                await self.power.sync(uuid, running=running)
        await self.remove_orphans()
        log.info("node %s reconciled %d instances", self.host, len(records))
        self.spawn(self._sweep_orphans_forever(), "orphans")

    async def _records_when_conductor_answers(self) -> list[Instance]:
        while True:
            try:
                return await self.conductor.list_host_instances()
            except AiostackError as exc:
                log.info("node %s: waiting for the conductor to reconcile (%s)", self.host, exc)
                await asyncio.sleep(1)

    async def catch_up(self) -> None:
        """After a reconnect: publish what changed while the connection was down; bring back
        domains libvirt lost."""
        await self.events.snapshot(self.hypervisor)
        for row in await self.records.rows():
            uuid, was_running = row["uuid"], self.events.last_running.get(row["uuid"])
            domain = await self.hypervisor.domain(uuid)
            if domain is None:
                domain = await self.hypervisor.define(row["xml"])
                if row["desired_power"] == "running":
                    await self.hypervisor.virt(domain.create)
                continue
            running = await self.hypervisor.is_running(domain)
            if was_running is None or running == was_running:
                continue
            self.events.last_running[uuid] = running
            with request_scope():
                await publish_event(
                    self.bus,
                    "domain",
                    uuid,
                    self.records.projects.get(uuid),
                    "domain.reconciled",
                    {
                        "event": "STARTED" if running else "STOPPED",
                        "running": running,
                        "host": self.host,
                        "detail": "changed while the libvirt connection was down",
                    },
                )
                if not running:
                    await self.records.set_desired(uuid, "shutoff")
                await self.power.sync(uuid, running=running)

    # -- orphans ------------------------------------------------------------------------------

    async def _sweep_orphans_forever(self) -> None:
        while True:
            await asyncio.sleep(self.orphan_sweep_interval)
            try:
                await self.remove_orphans()
            except (AiostackError, libvirt.libvirtError, ConnectionError) as exc:
                log.info("node %s: orphan sweep postponed: %s", self.host, exc)

    async def remove_if_orphan(self, instance_uuid: str) -> None:
        """Remove the instance's domain here if it is not (or no longer) recorded on this host,
        after any step on it in hand (a migration's source, once the instance moved)."""
        async with self.records.lock(instance_uuid):
            if not await self.conductor.recorded_here(instance_uuids=[instance_uuid]) and not (
                instance_uuid in self.records.arriving and await self._still_arriving(instance_uuid)
            ):
                log.info(
                    "node %s: %s moved to another host; removing its domain here", self.host, instance_uuid
                )
                await self.builder.remove_domain(instance_uuid)

    async def remove_reverted_copy(self, instance_uuid: str) -> None:
        """Remove the domain a cold migration brought here, which the conductor is reverting
        (the instance counts as recorded here until the revert ends), after any step on it in hand."""
        async with self.records.lock(instance_uuid):
            log.info(
                "node %s: %s goes back to its source; removing its domain here", self.host, instance_uuid
            )
            await self.builder.remove_domain(instance_uuid)

    async def _still_arriving(self, instance_uuid: str) -> bool:
        """Whether a live migration brings the instance (not recorded here) to this host now: the
        conductor answers its build request to that destination only. A removal cast before this
        migration began, delivered late, leaves what it prepared alone."""
        try:
            await self.conductor.get_build_request(instance_uuid=instance_uuid)
        except (NotFound, Conflict):
            return False
        return True

    async def remove_orphans(self) -> None:
        """Remove the domains of instances not (or no longer) recorded on this host: deleted
        while the node was away, or rebuilt on another host. Ports, volumes and claims are
        not theirs to release here: the instance's new host, or the owners' sweeps, see to them.
        Only this node's domains (stored here, or built here since it started) are looked at, and
        only those there were before the conductor was asked: a build finishing meanwhile is
        not in its answer, and is no orphan."""
        stored = await self.records.uuids()
        # several nodes may share a libvirtd: only this node's domains are candidates, those stored
        # and those built here since it started that libvirt still has (looked up one by one:
        # libvirt's every domain is not listed)
        built = [uuid for uuid in self.records.projects if uuid not in stored]
        in_libvirt = {uuid for uuid in built if await self.hypervisor.domain(uuid) is not None}
        candidates = sorted(stored | in_libvirt)
        recorded: set[str] = set()
        for start in range(0, len(candidates), ASK_AT_ONCE):
            chunk = candidates[start : start + ASK_AT_ONCE]
            recorded.update(await self.conductor.recorded_here(instance_uuids=chunk))
        for uuid in set(candidates) - recorded:
            if uuid in self.records.working or uuid in self.records.arriving:
                continue
            async with self.records.lock(uuid):
                log.warning(
                    "node %s: domain %s has no live instance record here; removing it", self.host, uuid
                )
                await self.builder.remove_domain(uuid)
