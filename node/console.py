"""A guest's interactive serial console: libvirt's console stream, read and written for the gateway.

``virDomainOpenConsole`` hands the guest's console (its serial port, ttyS0) to a non-blocking
``virStream`` whose events arrive on the asyncio loop through libvirtaio, the node's libvirt
event implementation: what the guest writes is kept (its last ``BUFFER`` bytes) until the
gateway reads it, what the gateway writes goes to the guest at once. QEMU keeps writing the
console log meanwhile (the serial chardev's log file), so ``get_console_output`` is unchanged.

Only an instance recorded by this node, of a project the caller sees, is opened; a console is
known by a random session id only its opener (the gateway) holds, and is closed when nobody has
read or written it for ``CONSOLE_IDLE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import libvirt

from api.node import CONSOLE_CHUNK, CONSOLE_IDLE, ConsoleRead, NodeConsole, OpenedConsole
from bus import Conflict, NotFound
from node.hypervisor import Hypervisor
from node.records import Records
from runtime.context import check_visible

log = logging.getLogger(__name__)

BUFFER = 1 << 20
"""What the guest wrote and nobody read yet is kept up to this many bytes (the oldest go first)."""
STREAM_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
)
WOULD_BLOCK = -2
"""What a non-blocking stream's ``recv`` and ``send`` return when they would block."""
SEND_RETRY = 0.01
MAX_OPEN = 16
"""Consoles open at once on a node: a read waiting for a guest holds one of the node's handlers
(``NodeActor.max_inflight``), which builds and power changes need too."""


class Console:
    """One open console: its stream, and what the guest wrote that the gateway has not read."""

    def __init__(
        self, instance_uuid: str, project_id: str, stream: libvirt.virStream, on_idle: Callable[[], None]
    ) -> None:
        """``on_idle`` runs when nobody has used the console for ``CONSOLE_IDLE`` seconds."""
        self.instance_uuid = instance_uuid
        self.project_id = project_id
        self.stream = stream
        self.pending = bytearray()
        self.changed = asyncio.Event()
        self.closed = False
        self._on_idle = on_idle
        self._idle = asyncio.get_running_loop().call_later(CONSOLE_IDLE, on_idle)

    def start(self) -> None:
        """Have libvirt tell this console when the guest wrote, or the stream ended."""
        self.stream.eventAddCallback(STREAM_EVENTS, self._on_event, None)

    def touch(self) -> None:
        """Someone uses the console: it stays open another ``CONSOLE_IDLE`` seconds."""
        self._idle.cancel()
        if not self.closed:
            self._idle = asyncio.get_running_loop().call_later(CONSOLE_IDLE, self._on_idle)

    def _on_event(self, _stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            self._receive()
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.close()

    def _receive(self) -> None:
        """Take all the stream has now (it never blocks: the stream is non-blocking)."""
        while not self.closed:
            try:
                data = self.stream.recv(CONSOLE_CHUNK)
            except libvirt.libvirtError as exc:
                log.info("console of %s ended: %s", self.instance_uuid, exc)
                self.close()
                return
            if isinstance(data, int):  # WOULD_BLOCK
                return
            if not data:
                self.close()
                return
            self.pending += data
            del self.pending[: max(0, len(self.pending) - BUFFER)]
            self.changed.set()

    async def read(self, wait: float) -> ConsoleRead:
        """What the guest wrote since the last read, after waiting up to ``wait`` seconds for it."""
        self.touch()
        if not self.pending and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.changed.wait()
        data = bytes(self.pending[:CONSOLE_CHUNK])
        del self.pending[:CONSOLE_CHUNK]
        if not self.pending and not self.closed:
            self.changed.clear()
        return {"data": data, "closed": self.closed and not self.pending}

    async def write(self, data: bytes) -> None:
        """:raises Conflict: the console is closed."""
        self.touch()
        view = memoryview(data)
        while view:
            if self.closed:
                raise Conflict(f"the console of instance {self.instance_uuid} is closed")
            try:
                sent = self.stream.send(bytes(view))
            except libvirt.libvirtError as exc:
                self.close()
                raise Conflict(f"the console of instance {self.instance_uuid} ended: {exc}") from None
            if sent == WOULD_BLOCK:
                await asyncio.sleep(SEND_RETRY)
                continue
            view = view[sent:]

    def close(self) -> None:
        """End the stream (idempotent); a waiting read returns at once."""
        if self.closed:
            return
        self.closed = True
        self._idle.cancel()
        self.changed.set()
        for end in (self.stream.eventRemoveCallback, self.stream.abort):
            with contextlib.suppress(libvirt.libvirtError):
                end()


class Consoles(NodeConsole):
    """The node's ``NodeConsole`` facet: its open consoles, by session id."""

    def __init__(self, host: str, *, hypervisor: Hypervisor, records: Records) -> None:
        self.host = host
        self.hypervisor = hypervisor
        self.records = records
        self.sessions: dict[str, Console] = {}

    async def _openable(self, instance_uuid: str) -> tuple[libvirt.virDomain, str]:
        """The instance's running domain and its project.

        :raises NotFound: not this node's instance, or not the caller's project's.
        :raises Conflict: the driver has no serial console, or the guest is not running.
        """
        project_id = self.records.projects.get(instance_uuid)
        if project_id is None:
            raise NotFound(f"instance {instance_uuid} could not be found on {self.host}")
        check_visible("instance", instance_uuid, project_id)
        if not self.hypervisor.real_guests:
            raise Conflict(f"the {self.hypervisor.domain_type} driver of {self.host} has no serial console")
        domain = await self.hypervisor.existing(instance_uuid)
        if not await self.hypervisor.is_running(domain):
            raise Conflict(f"instance {instance_uuid} is not running")
        return domain, project_id

    async def check_console(self, *, instance_uuid: str) -> None:
        await self._openable(instance_uuid)

    async def open_console(self, *, instance_uuid: str) -> OpenedConsole:
        domain, project_id = await self._openable(instance_uuid)
        for other, console in list(self.sessions.items()):
            if console.instance_uuid == instance_uuid:
                self._forget(other)
        if len(self.sessions) >= MAX_OPEN:
            raise Conflict(f"{self.host} has {MAX_OPEN} consoles open already; close one first")
        stream = self.hypervisor.connection.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            await self.hypervisor.virt(domain.openConsole, None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise Conflict(f"the console of instance {instance_uuid} cannot be opened: {exc}") from None
        session = secrets.token_urlsafe(24)
        console = self.sessions[session] = Console(
            instance_uuid, project_id, stream, on_idle=lambda: self._forget(session)
        )
        try:
            console.start()
        except libvirt.libvirtError as exc:
            self._forget(session)
            raise Conflict(f"the console of instance {instance_uuid} cannot be watched: {exc}") from None
        log.info("node %s: console of %s opened", self.host, instance_uuid)
        return {"session": session}

    def _console(self, session: str) -> Console:
        """:raises NotFound: no such session, or one the caller's project may not see."""
        console = self.sessions.get(session)
        if console is None:
            raise NotFound("no such console session")
        check_visible("console session", "", console.project_id)
        return console

    async def read_console(self, *, session: str, wait: float = 10.0) -> ConsoleRead:
        console = self._console(session)
        read = await console.read(wait)
        if read["closed"]:
            self._forget(session)
        return read

    async def write_console(self, *, session: str, data: bytes) -> None:
        await self._console(session).write(data)

    async def close_console(self, *, session: str) -> None:
        if session in self.sessions:
            self._console(session)
            self._forget(session)

    def _forget(self, session: str) -> None:
        console = self.sessions.pop(session, None)
        if console is None:
            return
        console.close()
        log.info("node %s: console of %s closed", self.host, console.instance_uuid)

    def close_all(self) -> None:
        """Close every console (the node stops)."""
        for session in list(self.sessions):
            self._forget(session)
