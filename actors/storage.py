"""One storage host's volume files and their NBD exports (``api.volume.VolumeStorage``, served on
``volume.storage.<host>``): Cinder's volume service on a host.

The volume actor of each controller runs one for its own host (``VolumeActor`` starts it), and
every volume actor, on any controller, asks the host a volume lives on to make, remove, export
or stop exporting its file. Files are ``<data>/volumes/<id>.<format>``: sparse raw files, or
qcow2 made by ``qemu-img``. A volume made from an image is the image's bytes, read from the image
service as the user who asks sees it (as a node reads the image it boots from, checked against
its checksums), converted by ``qemu-img convert`` to the volume's format. A snapshot's or a
clone's file is a copy of its source's (``cp --sparse=always``, so holes stay holes, reflinked
where the filesystem can): a whole copy, not a qcow2 overlay on a backing file, so that a
snapshot and the volumes made from it are independent files, each removed on its own whatever
becomes of the others, and the same for raw volumes as for qcow2. The volume actor copies a
volume only while it is available (attached to nothing), so nothing writes to the source
meanwhile. Exports: ``actors/nbd.py``; without an NBD address a connection is the file itself,
for a node on the same host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path

from actors.nbd import NbdError, NbdServer, parse_listen
from api.image import CHUNK_MAX, Image, ImageReader
from api.volume import Connection, StoredVolume, VolumeStorage
from bus import Actor, AiostackError, Bus, Conflict
from runtime.config import Config

IMAGE_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vhd": "vpc",
    "iso": "raw",
    "ami": "raw",
}
"""What qemu-img reads each image disk format as (a volume is made of the images it can read)."""
FETCH_WINDOW = 8
"""Image chunks asked for at once."""


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

    async def copy_image(self, *, image_id: str, volume: StoredVolume, size: int) -> str:
        """``api.volume.VolumeStorage.copy_image``."""
        path = self.path_of(volume)
        fetched = path.with_name(f"{path.name}.image")
        try:
            image = await ImageReader.client(self.bus).get(image_id=image_id)
            source_format = IMAGE_FORMATS.get(image["disk_format"])
            if source_format is None:
                raise OSError(f"an image of disk format {image['disk_format']} cannot be a volume")
            await self._fetch(image, fetched)
            await _run(
                "qemu-img",
                "convert",
                "-f",
                source_format,
                "-O",
                volume["volume_format"],
                str(fetched),
                str(path),
            )
            if await _virtual_size(path, volume["volume_format"]) > size << 30:
                raise OSError(f"image {image_id} is bigger than the volume's {size} GiB")
            await _grow(path, volume["volume_format"], size)
        except (OSError, AiostackError) as exc:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise Conflict(self._fault(exc) if isinstance(exc, OSError) else str(exc)) from None
        finally:
            await asyncio.to_thread(fetched.unlink, missing_ok=True)
        return str(path)

    async def _fetch(self, image: Image, path: Path) -> None:
        """An active image's bytes into ``path``, checked against its md5 and sha512.

        :raises OSError: it is not active, or it arrived corrupted.
        :raises AiostackError: the image service refused (the caller does not see it...).
        """
        size = image["size"]
        if image["status"] != "active" or size is None:
            raise OSError(f"image {image['id']} is {image['status']}; only active images make volumes")
        reader = ImageReader.client(self.bus)
        md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
        offsets = range(0, size, CHUNK_MAX)
        with path.open("wb") as out:
            for first in range(0, len(offsets), FETCH_WINDOW):
                window = offsets[first : first + FETCH_WINDOW]
                chunks = await asyncio.gather(
                    *(
                        reader.read_chunk(image_id=image["id"], offset=offset, length=CHUNK_MAX)
                        for offset in window
                    )
                )
                for chunk in chunks:
                    md5.update(chunk)
                    sha512.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
        received = path.stat().st_size
        if (
            received != size
            or md5.hexdigest() != image["checksum"]
            or (image["os_hash_value"] and sha512.hexdigest() != image["os_hash_value"])
        ):
            raise OSError(
                f"image {image['id']} arrived corrupted ({received} of {size} bytes, checksum differs)"
            )

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


async def _virtual_size(path: Path, volume_format: str) -> int:
    """The size of the disk a volume file holds, in bytes (``qemu-img info``)."""
    found = shutil.which("qemu-img")
    if found is None:
        raise OSError("qemu-img is not installed on the volume host")
    process = await asyncio.create_subprocess_exec(
        found, "info", "--output=json", "-f", volume_format, str(path), stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise OSError(f"qemu-img info exited {process.returncode}: {stderr.decode(errors='replace').strip()}")
    size: int = json.loads(stdout)["virtual-size"]
    return size


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
