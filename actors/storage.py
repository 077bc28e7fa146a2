"""One storage host's volume files and their NBD exports (``api.volume.VolumeStorage``, served on
``volume.storage.<host>``): Cinder's volume service on a host.

The volume actor of each controller runs one for its own host (``VolumeActor`` starts it), and
every volume actor, on any controller, asks the host a volume lives on to make, remove, export
or stop exporting its file. Files are ``<data>/volumes/<id>.<format>``: sparse raw files, or
qcow2 made by ``qemu-img``; a snapshot's or a clone's is a copy of its source's file (``cp
--sparse=always``, so holes stay holes, reflinked where the filesystem can): a whole copy, not a
qcow2 overlay on a backing file, so that a snapshot and the volumes made from it are independent
files, each removed on its own whatever becomes of the others, and the same for raw volumes as for
qcow2. The volume actor copies a volume only while it is available (attached to nothing), so
nothing writes to the source meanwhile. Exports: ``actors/nbd.py``; without an NBD address a connection is
the file itself, for a node on the same host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path

from actors.nbd import NbdError, NbdServer, parse_listen
from api.volume import Connection, StoredVolume, VolumeStorage
from bus import Actor, Bus, Conflict
from runtime.config import Config


class StorageActor(Actor, VolumeStorage):
    """Serves ``api.volume.VolumeStorage`` for ``host``."""

    def __init__(self, bus: Bus, config: Config, *, host: str, nbd_listen: str | None = None) -> None:
        super().__init__(bus, address=VolumeStorage.address_for(host=host))
        self.host = host
        self.pool = config.data_dir / "volumes"
        self.nbd = NbdServer(self.pool / "nbd", *parse_listen(nbd_listen)) if nbd_listen else None

    async def on_start(self) -> None:
        self.pool.mkdir(parents=True, exist_ok=True)
        if self.nbd is not None:
            await self.nbd.start()

    async def on_stop(self) -> None:
        if self.nbd is not None:
            await self.nbd.stop()

    def path_of(self, volume: StoredVolume) -> Path:
        return self.pool / f"{volume['volume_id']}.{volume['volume_format']}"

    def _fault(self, exc: OSError) -> str:
        """What went wrong with a volume file, without the pool's path."""
        return str(exc).replace(f"{self.pool}{os.sep}", "")

    async def make_file(self, *, volume: StoredVolume, size: int) -> str:
        """``api.volume.VolumeStorage.make_file``."""
        path = self.path_of(volume)
        try:
            if volume["volume_format"] == "qcow2":
                await _make_qcow2(path, size)
            else:
                await asyncio.to_thread(_make_raw, path, size << 30)
        except OSError as exc:
            raise Conflict(self._fault(exc)) from None
        return str(path)

    async def copy_file(self, *, source: StoredVolume, volume: StoredVolume, size: int) -> str:
        """``api.volume.VolumeStorage.copy_file``."""
        path = self.path_of(volume)
        try:
            await _run("cp", "--sparse=always", "--reflink=auto", str(self.path_of(source)), str(path))
            await _grow(path, volume["volume_format"], size)
        except OSError as exc:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise Conflict(self._fault(exc)) from None
        return str(path)

    async def extend_file(self, *, volume: StoredVolume, size: int) -> None:
        """``api.volume.VolumeStorage.extend_file``."""
        try:
            await _grow(self.path_of(volume), volume["volume_format"], size)
        except OSError as exc:
            raise Conflict(self._fault(exc)) from None

    async def remove_file(self, *, volume: StoredVolume) -> None:
        """``api.volume.VolumeStorage.remove_file``."""
        try:
            await asyncio.to_thread(self.path_of(volume).unlink, missing_ok=True)
        except OSError as exc:
            raise Conflict(self._fault(exc)) from None

    async def connect(self, *, volume: StoredVolume, export: str, readonly: bool = False) -> Connection:
        """``api.volume.VolumeStorage.connect``."""
        path = str(self.path_of(volume))
        if self.nbd is None or not export:
            return {
                "transport": "file",
                "path": path,
                "format": volume["volume_format"],
                "host": "",
                "port": 0,
                "export": "",
                "readonly": readonly,
            }
        try:
            await self.nbd.export(export, path, volume["volume_format"], writable=not readonly)
        except (NbdError, OSError) as exc:
            raise Conflict(f"volume {volume['volume_id']} could not be exported: {exc}") from None
        return {
            "transport": "nbd",
            "path": "",
            "format": "raw",
            "host": self.nbd.address,
            "port": self.nbd.port,
            "export": export,
            "readonly": readonly,
        }

    async def unexport(self, *, export: str) -> None:
        """``api.volume.VolumeStorage.unexport``."""
        if self.nbd is not None:
            await self.nbd.unexport(export)

    async def keep_exports(
        self, *, exports: dict[str, StoredVolume], readonly: list[str] | None = None
    ) -> None:
        """``api.volume.VolumeStorage.keep_exports``."""
        if self.nbd is None:
            return
        for name in await self.nbd.exports() - set(exports):
            await self.nbd.unexport(name)
        for name, volume in exports.items():
            writable = name not in (readonly or ())
            await self.nbd.export(name, str(self.path_of(volume)), volume["volume_format"], writable=writable)


def qcow2_supported() -> bool:
    """Whether this host can make qcow2 volumes (``qemu-img`` installed)."""
    return shutil.which("qemu-img") is not None


def _make_raw(path: Path, size_bytes: int) -> None:
    """A new sparse file of ``size_bytes`` (blocking: run it in a thread)."""
    with open(path, "xb"):
        pass
    os.truncate(path, size_bytes)


async def _make_qcow2(path: Path, size_gib: int) -> None:
    """``qemu-img create -f qcow2 PATH SIZEG``. :raises OSError: it failed or could not run."""
    await _run("qemu-img", "create", "-f", "qcow2", str(path), f"{size_gib}G")


async def _grow(path: Path, volume_format: str, size_gib: int) -> None:
    """Make a volume file ``size_gib`` GiB big, if it is smaller (``qemu-img resize`` for qcow2).

    :raises OSError: it failed.
    """
    if volume_format == "qcow2":
        await _run("qemu-img", "resize", "-f", "qcow2", str(path), f"{size_gib}G")
    elif (await asyncio.to_thread(os.stat, path)).st_size < size_gib << 30:
        await asyncio.to_thread(os.truncate, path, size_gib << 30)


async def _run(program: str, *arguments: str) -> None:
    """Run a program to its end. :raises OSError: it is not installed, or it failed (its words)."""
    found = shutil.which(program)
    if found is None:
        raise OSError(f"{program} is not installed on the volume host")
    process = await asyncio.create_subprocess_exec(found, *arguments, stdout=DEVNULL, stderr=PIPE)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise OSError(
            f"{program} {arguments[0]} exited {process.returncode}: {stderr.decode(errors='replace').strip()}"
        )
