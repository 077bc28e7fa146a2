"""Volumes over the network: NBD exports served by qemu-storage-daemon on the volume host.

With an NBD address (``aiostack run volume --nbd-listen ADDRESS[:PORT]``, which ``up --cluster``
gives the volume actor: its host's address), a volume attached to an instance is exported for
that attachment alone, under a random name (``export``, the attachment's; 32 bytes of
``secrets``): a node on any host reaches it as a libvirt network disk (``protocol='nbd'``), the
volume's format decoded by the daemon (the node sees raw). The export goes when the attachment
does (unreserve, detach, an instance's deletion), so a name stops working once its attachment
ends; the attach protocol lets one attachment exist per volume, so a volume is never writable
by two guests. A live migration gives the destination an attachment of its own meanwhile
(``VolumeAttachments.attach_arriving``): its export shares the first's block node, and only the
guest that runs writes (the destination's QEMU holds the disk inactive until the source's stops).

One daemon per volume host, started by the actor, daemonized (``--daemonize``, its pid in
``<data>/volumes/nbd/qsd.pid``): it outlives a restart of the actor, so guests keep their disks;
the actor talks to it over QMP (``qemu.qmp``, QEMU's own client library) on a socket in the same
owner-only folder, and at start makes the exports match the attachments it records.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError, Runstate

from runtime.processes import running_pid, stop_pid

log = logging.getLogger(__name__)

NBD_PORT = 10809
NODE_PREFIX = "vol-"


def parse_listen(listen: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` as an address and a port (NBD's 10809 by default)."""
    address, colon, port = listen.rpartition(":")
    return (address, int(port)) if colon and port.isdigit() else (listen, NBD_PORT)


class NbdError(Exception):
    """qemu-storage-daemon refused or could not do what was asked (its words say why)."""


class NbdServer:
    """The volume host's qemu-storage-daemon and its exports."""

    def __init__(self, directory: Path, address: str, port: int = NBD_PORT) -> None:
        self.directory = directory
        self.address = address
        self.port = port
        self._qmp: QMPClient | None = None
        self._lock = asyncio.Lock()

    @property
    def socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qsd.pid"

    def _running_pid(self) -> int | None:
        return running_pid(self.pidfile, b"qemu-storage-daemon")

    def command(self) -> list[str]:
        """The daemon's command line (it daemonizes once it serves)."""
        return [
            "qemu-storage-daemon",
            "--chardev", f"socket,id=qmp,path={self.socket},server=on,wait=off",
            "--monitor", "chardev=qmp",
            "--nbd-server", f"addr.type=inet,addr.host={self.address},addr.port={self.port}",
            "--daemonize", "--pidfile", str(self.pidfile),
        ]  # fmt: skip

    async def start(self) -> None:
        """Connect to the running daemon, or start one first."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._running_pid() is None:
            self.socket.unlink(missing_ok=True)
            process = await asyncio.create_subprocess_exec(
                *self.command(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, err = await process.communicate()
            if process.returncode != 0:
                raise NbdError(f"qemu-storage-daemon did not start: {err.decode(errors='replace').strip()}")
            log.info("NBD exports served on %s:%d", self.address, self.port)
        qmp = QMPClient("volume")
        await qmp.connect(str(self.socket))
        self._qmp = qmp

    async def stop(self, *, daemon: bool = False) -> None:
        """Disconnect (the daemon serves on); with ``daemon``, stop it too."""
        if self._qmp is not None:
            await self._qmp.disconnect()
            self._qmp = None
        pid = self._running_pid()
        if daemon and pid is not None:
            await stop_pid(pid)

    async def _execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        if self._qmp is None or self._qmp.runstate != Runstate.RUNNING:
            await self.start()  # the connection dropped: connect again (the daemon if it died)
        assert self._qmp is not None
        try:
            return await self._qmp.execute(command, arguments)
        except ExecuteError as exc:
            raise NbdError(f"{command}: {exc.error.desc}") from exc
        except QMPError as exc:
            self._qmp = None
            raise NbdError(f"{command}: {exc}") from exc

    async def exports(self) -> set[str]:
        """The names exported now."""
        return {export["id"] for export in await self._execute("query-block-exports")}

    async def export(self, name: str, path: str, volume_format: str, *, writable: bool = True) -> None:
        """Export a volume's file under ``name`` (``writable`` or refusing writes: opened
        read-only); nothing if it is exported already. A file open for another export already
        (a live migration's second attachment) is exported from that same block node: one
        cache, one view of the file, and QEMU's lock on it taken once."""
        async with self._lock:
            if name in await self.exports():
                return
            node = await self._node_of(path, writable)
            opened = node is None
            if node is None:
                node = NODE_PREFIX + name
                await self._execute(
                    "blockdev-add",
                    {
                        "driver": volume_format,
                        "node-name": node,
                        "read-only": not writable,
                        "file": {"driver": "file", "filename": path},
                    },
                )
            try:
                await self._execute(
                    "block-export-add",
                    {"type": "nbd", "id": name, "node-name": node, "name": name, "writable": writable},
                )
            except NbdError:
                if opened:
                    await self._execute("blockdev-del", {"node-name": node})
                raise

    async def _node_of(self, path: str, writable: bool) -> str | None:
        """The block node of ours that has ``path`` open as asked (read-write or read-only), if any."""
        for node in await self._execute("query-named-block-nodes", {"flat": True}):
            name = node.get("node-name", "")
            if name.startswith(NODE_PREFIX) and node.get("file") == path and node.get("ro") != writable:
                return str(name)
        return None

    async def _export_nodes(self) -> dict[str, str]:
        """Each export's block node."""
        return {export["id"]: export["node-name"] for export in await self._execute("query-block-exports")}

    async def unexport(self, name: str) -> None:
        """End an export (its clients are cut off), and close the file unless another export
        serves it; nothing if there is none."""
        async with self._lock:
            node = (await self._export_nodes()).get(name, NODE_PREFIX + name)
            if name in await self.exports():
                await self._execute("block-export-del", {"id": name, "mode": "hard"})
                for _ in range(100):  # the export goes once its last request has ended
                    if name not in await self.exports():
                        break
                    await asyncio.sleep(0.02)
            if node in (await self._export_nodes()).values():
                return
            nodes = {node["node-name"] for node in await self._execute("query-named-block-nodes")}
            if node in nodes:
                await self._execute("blockdev-del", {"node-name": node})
