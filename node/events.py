"""Event forwarding: libvirt's lifecycle events -> the event stream -> the conductor.

libvirtaio runs the lifecycle callback on the loop thread; it only queues the event (of this
node's domains: several nodes may share one libvirtd). One task takes them in order: each is
published at once as a ``domain.lifecycle`` event (in the request of the work that caused it)
and handed, at the same time, to the conductor's ``domain_event``, which turns it into the
instance's state.
Both are retried, bounded, while nats-server or the conductor is away. A live migration's
own events (``MIGRATION_EVENTS``), and the UNDEFINED of a domain that left with one, are only
published: the migration's steps say what they mean; so are those of a stopped guest started
paused for a cold migration's copy of its disks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import libvirt

from api.conductor import ConductorForNodes
from bus import AiostackError, Bus, NotFound, request_scope
from node.hypervisor import Hypervisor
from node.records import Records
from runtime.events import publish_event
from runtime.states import lifecycle_name

log = logging.getLogger(__name__)

RUNNING_EVENTS = (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED)
NOT_RUNNING_EVENTS = (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED)
MIGRATION_EVENTS = {
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED),
}
"""A live migration's own events (a real guest leaving, or arriving, paused at the switchover): the
conductor follows the migration from the nodes' reports instead (``node.migrate``)."""


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    instance_uuid: str
    event: int
    """libvirt's ``VIR_DOMAIN_EVENT_*``."""
    detail: int
    at: float
    copying: bool = False
    """The domain ran only for a cold migration's copy of its disks (``Records.copying``)."""


class EventForwarder:
    """The node's lifecycle events, from libvirt's callback to the event stream and the conductor."""

    def __init__(self, bus: Bus, host: str, records: Records, conductor: ConductorForNodes) -> None:
        self.bus = bus
        self.host = host
        self.records = records
        self.conductor = conductor
        self.last_running: dict[str, bool] = {}
        """Whether each domain ran at its last event (or when first seen): what a reconnect compares."""
        self._queue: asyncio.Queue[LifecycleEvent] = asyncio.Queue()
        self._stopped: dict[str, asyncio.Event] = {}
        self._left: set[str] = set()
        """Domains that left with a live migration, until their UNDEFINED event (which may never
        come here: the node may have forgotten the domain first) or their coming back."""
        self._stream_known = False
        """Whether an event of this node was stored: its connection has checked the event stream."""

    def on_lifecycle(
        self, _conn: libvirt.virConnect, domain: libvirt.virDomain, event: int, detail: int, _opaque: object
    ) -> None:
        """libvirtaio runs this on the loop thread: only queue the event, if the domain is this node's."""
        self.queue(domain.UUIDString(), event, detail)

    def queue(self, instance_uuid: str, event: int, detail: int) -> None:
        """Queue a lifecycle event (libvirt's ``VIR_DOMAIN_EVENT_*``), if the domain is this node's
        (an LXC node's containers' state changes come as the libvirt events they stand for)."""
        if instance_uuid in self.records.projects:
            copying = instance_uuid in self.records.copying
            self._queue.put_nowait(LifecycleEvent(instance_uuid, event, detail, time.time(), copying))

    async def snapshot(self, hypervisor: Hypervisor) -> None:
        """Note whether each domain runs, if nothing is noted yet (a reconnect compares with it)."""
        if self.last_running:
            return
        for domain in await asyncio.to_thread(hypervisor.connection.listAllDomains, 0):
            self.last_running[domain.UUIDString()] = bool(await asyncio.to_thread(domain.isActive))

    @contextlib.contextmanager
    def awaiting_stop(self, instance_uuid: str) -> Iterator[asyncio.Event]:
        """An event set when the domain's STOPPED event arrives (while the block runs)."""
        stopped = self._stopped.setdefault(instance_uuid, asyncio.Event())
        try:
            yield stopped
        finally:
            self._stopped.pop(instance_uuid, None)

    async def forward_forever(self) -> None:
        """Publish each domain event at once, then let the conductor turn it into instance state."""
        while True:
            item = await self._queue.get()
            if item.event in RUNNING_EVENTS:
                self.last_running[item.instance_uuid] = True
            elif item.event in NOT_RUNNING_EVENTS:
                self.last_running[item.instance_uuid] = False
            if item.event == libvirt.VIR_DOMAIN_EVENT_STOPPED and item.instance_uuid in self._stopped:
                self._stopped[item.instance_uuid].set()
            project = self.records.projects.get(item.instance_uuid)
            with request_scope(self.records.request_ids.get(item.instance_uuid)):
                if project is None or not self._for_conductor(item):
                    await self._publish(item, project)
                elif self._stream_known:
                    # at once: the event leaves first on this connection (which has checked the
                    # stream, so nothing is asked before it), and the stream has it before the
                    # conductor hears of it and publishes what follows from it
                    await asyncio.gather(self._publish(item, project), self.tell_conductor(item))
                else:
                    await self._publish(item, project)
                    await self.tell_conductor(item)

    def _for_conductor(self, item: LifecycleEvent) -> bool:
        """Whether the conductor is told of the event (see the module's docstring)."""
        if item.event == libvirt.VIR_DOMAIN_EVENT_STARTED:  # (back) here: its next UNDEFINED is news
            self._left.discard(item.instance_uuid)
        if item.copying:
            return False
        if (item.event, item.detail) in MIGRATION_EVENTS:
            if item.event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._left.add(item.instance_uuid)
            return False
        if item.event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED and item.instance_uuid in self._left:
            self._left.discard(item.instance_uuid)
            return False
        return item.event != libvirt.VIR_DOMAIN_EVENT_DEFINED

    async def _publish(self, item: LifecycleEvent, project: str | None) -> None:
        """Store the raw event in the event stream, riding out a nats-server restart (bounded)."""
        body = {
            "event": lifecycle_name(item.event),
            "event_id": item.event,
            "detail": item.detail,
            "host": self.host,
            "libvirt_ts": item.at,
        }
        for attempt in range(8):
            try:
                await publish_event(
                    self.bus, "domain", item.instance_uuid, project, "domain.lifecycle", body, host=self.host
                )
                self._stream_known = True
                return
            except Exception as exc:  # the bus's own errors, and nats-py's while it reconnects
                log.warning(
                    "node %s: event of %s not stored yet (%s); retrying", self.host, item.instance_uuid, exc
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 5))
        log.error("node %s: gave up storing event %s of %s", self.host, body["event"], item.instance_uuid)

    async def tell_conductor(self, item: LifecycleEvent) -> None:
        """Hand the event to the conductor, retrying while it is away (bounded: about a minute)."""
        for attempt in range(12):
            try:
                await self.conductor.domain_event(
                    instance_uuid=item.instance_uuid, event=item.event, detail=item.detail
                )
                return
            except NotFound:  # not (or no longer) recorded on this host: nothing of the conductor's to change
                log.info(
                    "node %s: event %s of %s: the instance is not recorded on this host",
                    self.host,
                    item.event,
                    item.instance_uuid,
                )
                return
            except AiostackError as exc:
                log.warning(
                    "node %s: conductor did not take event %s of %s (%s); retrying",
                    self.host,
                    item.event,
                    item.instance_uuid,
                    exc,
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 10))
        log.error("node %s: gave up telling the conductor about %s", self.host, item.instance_uuid)
