"""A node's libvirt connection: open, close callback and reconnect, calls off the loop, domain lookups.

libvirt's events run on the asyncio loop through libvirtaio, registered once per process
before the first ``libvirt.open``. Every libvirt call that may block (all of them, on a remote
or QEMU driver) goes through ``Hypervisor.virt``: to a worker thread, except on the in-process
test driver, which never blocks. When libvirt closes the connection (libvirtd restarted, or
dropped this client) the node reconnects with backoff, registers its callbacks again and hands
over to whoever catches up on what changed meanwhile (``on_reconnect``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import libvirt
import libvirtaio  # type: ignore[import-untyped]

from bus import NotFound
from node.virt_type import choose_virt_type

log = logging.getLogger(__name__)

_registered_loop: asyncio.AbstractEventLoop | None = None

UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
)
"""What an undefine takes with the domain, most needed first: a suspended guest's managed-save
image (libvirt refuses to undefine a domain that has one), then snapshot and checkpoint metadata
and UEFI variables where the domain has them. A driver that refuses one is asked again without
the last one left (``Hypervisor.undefine``)."""

FLAG_REFUSED = (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
"""How a driver says it does not know a flag (the test driver: ``unsupported flags (0x4)``)."""

LifecycleCallback = Callable[[libvirt.virConnect, libvirt.virDomain, int, int, object], None]
"""libvirt's domain lifecycle callback: (connection, domain, event, detail, opaque)."""


def register_event_loop() -> None:
    """Register libvirtaio on the running loop, once per process, before any ``libvirt.open``.

    libvirt allows one event implementation per process; a second loop cannot take over.
    """
    global _registered_loop
    loop = asyncio.get_running_loop()
    if _registered_loop is loop:
        return
    if _registered_loop is not None:
        raise RuntimeError("libvirt events are registered on another event loop of this process")
    libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
    _registered_loop = loop
    log.info("libvirt events run on the asyncio loop")


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; aiostack logs them where they are handled."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Hypervisor:
    """One host's libvirt connection and the calls every part of the node makes through it."""

    def __init__(
        self,
        uri: str,
        *,
        host: str,
        on_lifecycle: LifecycleCallback,
        on_reconnect: Callable[[], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, Any], str], object],
    ) -> None:
        """``on_lifecycle`` is registered for every domain's lifecycle events (again on each
        reconnect); ``on_reconnect`` runs once a lost connection is back; ``spawn(work, name)``
        runs the reconnect as the actor's background work."""
        self.uri = uri
        self.host = host
        self.in_process_driver = uri.startswith("test://")
        self.domain_type = "test"
        """What the domain XML asks for: ``test``, or ``qemu`` / ``kvm`` on a QEMU host."""
        self.conn: libvirt.virConnect | None = None
        """The open ``libvirt.virConnect``; None while there is none (before start, while reconnecting)."""
        self._on_lifecycle = on_lifecycle
        self._on_reconnect = on_reconnect
        self._spawn = spawn
        self._callback_id: int | None = None

    @property
    def real_guests(self) -> bool:
        """QEMU runs this host's guests (else libvirt's test driver pretends to)."""
        return self.domain_type in ("qemu", "kvm")

    @property
    def connection(self) -> libvirt.virConnect:
        """The open connection. :raises ConnectionError: there is none (libvirt is away)."""
        if self.conn is None:
            raise ConnectionError(f"node {self.host} has no libvirt connection")
        return self.conn

    # -- the connection ----------------------------------------------------------------------

    async def open(self, requested_virt_type: str) -> None:
        """Connect, and choose the domain type (KVM only where it really runs a guest)."""
        register_event_loop()
        silence_libvirt_stderr()
        await self._connect()
        if (await self.virt(self.connection.getType)).lower() != "qemu":
            return
        local = "://" in self.uri and self.uri.split("://", 1)[1].startswith("/")
        choice = await choose_virt_type(requested_virt_type, local=local)
        self.domain_type = choice.domain_type
        log.info("node %s: guests run with type=%s: %s", self.host, choice.domain_type, choice.reason)

    async def _connect(self) -> None:
        """Open libvirt and register the lifecycle and close callbacks (again after a reconnect)."""
        conn = await asyncio.to_thread(libvirt.open, self.uri)
        self._callback_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        conn.registerCloseCallback(self._on_close, None)
        self.conn = conn

    def _on_close(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        """libvirt closed the connection (libvirtd restarted, or dropped us): reconnect and catch up."""
        log.warning("node %s: libvirt connection closed (reason %d); reconnecting", self.host, reason)
        self.conn = None
        self._spawn(self._reconnect(), "reconnect")

    async def _reconnect(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._connect()
                break
            except libvirt.libvirtError as exc:
                log.info("node %s: libvirt not back yet (%s); again in %.1f s", self.host, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        log.info("node %s: libvirt connection is back; reconciling", self.host)
        await self._on_reconnect()

    async def close(self) -> None:
        if self.conn is not None:
            if self._callback_id is not None:
                self.conn.domainEventDeregisterAny(self._callback_id)
            self.conn.unregisterCloseCallback()
            await asyncio.to_thread(self.conn.close)
            self.conn = None

    # -- calls --------------------------------------------------------------------------------

    async def virt(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run one libvirt call: off the event loop, except on the test driver.

        The test driver lives in this process's memory and never blocks, so a thread hop
        would only cost CPU; every real driver's call goes to a worker thread.
        """
        if self.in_process_driver:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    async def domain(self, instance_uuid: str) -> libvirt.virDomain | None:
        """The instance's ``virDomain`` (the instance uuid is the domain's), None if libvirt has none.

        :raises ConnectionError: libvirt is away.
        """
        try:
            return await self.virt(self.connection.lookupByUUIDString, instance_uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    async def existing(self, instance_uuid: str) -> libvirt.virDomain:
        """The instance's domain. :raises NotFound: libvirt has none."""
        domain = await self.domain(instance_uuid)
        if domain is None:
            raise NotFound(f"no domain for instance {instance_uuid} on {self.host}")
        return domain

    async def domains(self) -> list[libvirt.virDomain]:
        """Every domain libvirt has (several nodes may share a libvirtd: not all are this node's)."""
        return list(await self.virt(self.connection.listAllDomains, 0))

    async def is_running(self, domain: libvirt.virDomain) -> bool:
        return bool(await self.virt(domain.isActive))

    async def state(self, domain: libvirt.virDomain) -> int:
        """The domain's ``VIR_DOMAIN_*`` state."""
        return int((await self.virt(domain.state))[0])

    async def persistent_xml(self, domain: libvirt.virDomain) -> str:
        return str(await self.virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))

    async def define(self, xml: str) -> libvirt.virDomain:
        """Define (or redefine) a domain; its ``virDomain``."""
        return await self.virt(self.connection.defineXML, xml)

    async def undefine(self, domain: libvirt.virDomain) -> None:
        """Undefine a (stopped) domain with what it leaves behind (``UNDEFINE_FLAGS``), whatever its
        state: a suspended guest's managed-save image goes with it.

        Nova's libvirt driver asks for ``MANAGED_SAVE`` (with ``NVRAM`` for UEFI guests) and falls
        back to a plain undefine, which a suspended guest's image makes fail again; here a driver
        that refuses a flag is asked again without the last flag left, down to ``MANAGED_SAVE``
        alone, and one that refuses even that has the image removed before a plain undefine.

        :raises libvirt.libvirtError: libvirt refused for another reason than a flag it does not know.
        """
        for count in range(len(UNDEFINE_FLAGS), 0, -1):
            flags = 0
            for flag in UNDEFINE_FLAGS[:count]:
                flags |= flag
            try:
                await self.virt(domain.undefineFlags, flags)
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in FLAG_REFUSED:
                    raise
                log.debug("node %s: undefine flags %#x refused (%s)", self.host, flags, exc)
        if await self.virt(domain.hasManagedSaveImage, 0):
            await self.virt(domain.managedSaveRemove, 0)
        await self.virt(domain.undefine)
