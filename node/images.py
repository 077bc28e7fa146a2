"""A node's image cache and instance disks, as Nova's libvirt image backend keeps them.

Each image a guest needs (its disk, kernel and ramdisk) is fetched from the image actor
once, checked against the image's md5 and sha512, and kept under ``_base/<image id>``.
An instance's root disk is a qcow2 overlay on that base, sized to the flavor's root disk,
in the instance's own directory next to its console log (``console_output`` reads its
tail); deleting the instance deletes the directory.

The cache ages, as Nova's image cache manager does it: a base's mtime is the last time an
instance used it (set when it is handed out for a guest, and by each ``age`` round while a
domain of this node uses it), and ``age`` removes the bases no domain uses that have gone
unused for longer than a maximum age, and fetches left unfinished as long ago. A base being
fetched, or having an overlay made on it, holds its image's lock and is never removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from api.image import CHUNK_MAX, Image, ImageForNodes
from bus import Conflict
from node.configdrive import FILE_NAME as CONFIG_DRIVE
from runtime.processes import run_tool

log = logging.getLogger(__name__)

FETCH_CHUNK = CHUNK_MAX
FETCH_WINDOW = 4
QEMU_IMG_FORMATS = {"raw": "raw", "qcow2": "qcow2", "ami": "raw", "aki": "raw", "ari": "raw"}
CONSOLE_MAX_BYTES = 1024 * 1024
PART_SUFFIX = ".part"
SNAPSHOT = "snapshot.qcow2"
"""A flattened copy of an instance's disk, while it is uploaded as an image (``node.snapshots``)."""
RESIZE_BACKUP = "disk.resize-backup"
"""The root overlay as it was before a resize grew it, kept until the resize is confirmed or reverted."""
QCOW2_MAGIC = b"QFI\xfb"


class ImageCache:
    """Base images fetched once per node; overlays and console logs per instance."""

    def __init__(self, reader: ImageForNodes, state_dir: Path) -> None:
        self.reader = reader
        """The image actor, as this node (it reads only the images of instances on this host)."""
        self.base_dir = state_dir / "images" / "_base"
        self.instances_dir = state_dir / "instances"
        self._locks: dict[str, asyncio.Lock] = {}
        self._virtual_sizes: dict[str, int] = {}
        """Each base's virtual size, by image id: an image's data never changes once it is active."""

    def instance_dir(self, instance_uuid: str) -> Path:
        return self.instances_dir / instance_uuid

    def console_log(self, instance_uuid: str) -> Path:
        return self.instance_dir(instance_uuid) / "console.log"

    def _lock(self, image_id: str) -> asyncio.Lock:
        """The image's lock: its fetch, the overlays made on it and its removal never overlap."""
        return self._locks.setdefault(image_id, asyncio.Lock())

    async def base(self, image: Image, instance_uuid: str) -> Path:
        """The verified local copy of an active image, fetched on first use (for ``instance_uuid``,
        which uses it: the image actor gives a node only the images of its instances)."""
        async with self._lock(image["id"]):
            return await self._used_base(image, instance_uuid)

    async def _used_base(self, image: Image, instance_uuid: str) -> Path:
        """``base``, its image's lock held: fetched if missing, and marked used now (its mtime)."""
        path = self.base_dir / image["id"]
        if not path.exists():
            await self._fetch(image, instance_uuid, path)
        os.utime(path)
        return path

    async def _fetch(self, image: Image, instance_uuid: str, path: Path) -> None:
        size = image.get("size")
        if image.get("status") != "active" or not isinstance(size, int):
            raise Conflict(f"image {image['id']} is {image.get('status')}; only active images can boot")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(PART_SUFFIX)
        md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
        offsets = range(0, size, FETCH_CHUNK)
        with partial.open("wb") as out:
            for first in range(0, len(offsets), FETCH_WINDOW):
                window = offsets[first : first + FETCH_WINDOW]
                chunks = await asyncio.gather(
                    *(
                        self.reader.read_chunk(
                            image_id=image["id"],
                            instance_uuid=instance_uuid,
                            offset=offset,
                            length=FETCH_CHUNK,
                        )
                        for offset in window
                    )
                )
                for chunk in chunks:
                    md5.update(chunk)
                    sha512.update(chunk)
                    out.write(chunk)
        received = partial.stat().st_size
        if (
            received != size
            or md5.hexdigest() != image.get("checksum")
            or (image.get("os_hash_value") and sha512.hexdigest() != image["os_hash_value"])
        ):
            partial.unlink()
            raise Conflict(
                f"image {image['id']} arrived corrupted ({received} of {size} bytes, checksum differs)"
            )
        partial.rename(path)
        log.info("cached image %s (%d bytes)", image["id"], size)

    async def create_root_disk(self, instance_uuid: str, image: Image, root_gb: int) -> Path:
        """A qcow2 overlay on the image's base, at least ``root_gb`` GiB (never smaller than the image)."""
        backing_format = QEMU_IMG_FORMATS.get(image.get("disk_format") or "raw")
        if backing_format is None:
            raise Conflict(
                f"image {image['id']} has disk format {image['disk_format']}, which cannot boot here"
            )
        async with self._lock(image["id"]):  # aging leaves the base alone until the overlay is on it
            base = await self._used_base(image, instance_uuid)
            directory = self.instance_dir(instance_uuid)
            directory.mkdir(parents=True, exist_ok=True)
            disk = directory / "disk"
            virtual_size = self._virtual_sizes.get(image["id"])
            if virtual_size is None:
                virtual_size = await _virtual_size(base, backing_format)
                self._virtual_sizes[image["id"]] = virtual_size
            size = max(root_gb * 1024**3, virtual_size)
            await run_tool(
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                backing_format,
                "-b",
                str(base),
                str(disk),
                str(size),
            )
        return disk

    async def used_by(self, domain_xmls: Iterable[str]) -> set[str]:
        """The ids of the cached images these domains use: their kernel, initrd and disks in
        ``_base``, and the bases their disks in this node's instance directories are overlays on.

        :raises OSError: an overlay could not be read. :raises ET.ParseError: an XML is not XML.
        """
        return await asyncio.to_thread(self._used_by, list(domain_xmls))

    def _used_by(self, domain_xmls: list[str]) -> set[str]:
        used: set[str] = set()
        for xml in domain_xmls:
            root = ET.fromstring(xml)
            boot_files = root.findall("./os/kernel") + root.findall("./os/initrd")
            files = [element.text or "" for element in boot_files]
            files += [source.get("file", "") for source in root.findall("./devices/disk/source")]
            for name in filter(None, files):
                path = Path(name)
                if path.is_relative_to(self.instances_dir):
                    path = _backing_file(path) or path
                if path.parent == self.base_dir:
                    used.add(path.name)
        return used

    async def age(self, in_use: set[str], max_age: float) -> list[str]:
        """Remove the cached images not in ``in_use`` that went unused for over ``max_age`` seconds,
        and the fetches left unfinished as long ago; mark those in use as used now. An image
        being fetched or having an overlay made on it is left for the next round.

        Returns the ids of the images removed. A file that cannot be touched or removed is logged
        and left. :raises OSError: the cache could not be listed.
        """
        removed: list[str] = []
        for path in await asyncio.to_thread(_files, self.base_dir):
            image_id = path.name.removesuffix(PART_SUFFIX)
            unfinished = path.name != image_id
            lock = self._lock(image_id)
            if lock.locked():
                continue
            async with lock:
                try:
                    freed = await asyncio.to_thread(
                        _age_file, path, image_id in in_use and not unfinished, max_age
                    )
                except OSError as exc:
                    log.warning("image cache: could not age %s: %s", path, exc)
                    continue
            if freed is None:
                continue
            if unfinished:
                log.info("removed the unfinished fetch of image %s (%d bytes freed)", image_id, freed)
            else:
                log.info(
                    "removed cached image %s, unused for over %g s (%d bytes freed)", image_id, max_age, freed
                )
                removed.append(image_id)
                self._virtual_sizes.pop(image_id, None)
        return removed

    async def console_output(self, instance_uuid: str, length: int | None = None) -> str:
        """The tail of the guest's serial console log (its last MiB); its last ``length`` lines when given."""
        data = await asyncio.to_thread(_tail, self.console_log(instance_uuid), CONSOLE_MAX_BYTES)
        lines = data.decode(errors="replace").replace("\r\n", "\n").splitlines(keepends=True)
        if length is not None:
            lines = lines[-length:] if length > 0 else []
        return "".join(lines)

    async def flatten_disk(self, instance_uuid: str) -> Path:
        """The instance's disk and what it is an overlay on, as one qcow2 file (read as it is now,
        the guest perhaps running: ``-U``); its path, in the instance's directory."""
        directory = self.instance_dir(instance_uuid)
        target = directory / SNAPSHOT
        await run_tool("qemu-img", "convert", "-U", "-O", "qcow2", str(directory / "disk"), str(target))
        return target

    async def grow_root_disk(self, instance_uuid: str, root_gb: int) -> bool:
        """Grow the instance's overlay to ``root_gb`` GiB if it is smaller, first copying it as it
        is (``RESIZE_BACKUP``, for a revert: a disk still smaller is as this resize found it, so
        the copy replaces any older one); whether it grew."""
        disk = self.instance_dir(instance_uuid) / "disk"
        if not disk.exists() or await _virtual_size(disk, "qcow2") >= root_gb * 1024**3:
            return False
        await asyncio.to_thread(shutil.copy2, disk, disk.with_name(RESIZE_BACKUP))
        await run_tool("qemu-img", "resize", "-q", "-f", "qcow2", str(disk), f"{root_gb}G")
        return True

    async def restore_root_disk(self, instance_uuid: str, root_gb: int) -> None:
        """Revert to a flavor of ``root_gb`` GiB: put back the overlay as it was before the resize
        grew it. The copy kept is this resize's if it holds at least ``root_gb`` GiB (the overlay
        was made at least that big) and less than the disk now; a smaller one is an older
        resize's, whose confirm did not reach this node (disks only grow), and is dropped, never
        restored."""
        backup = self.instance_dir(instance_uuid) / RESIZE_BACKUP
        disk = backup.with_name("disk")
        if not backup.exists():
            return
        size = await _virtual_size(backup, "qcow2")
        current = await _virtual_size(disk, "qcow2") if disk.exists() else 0
        if root_gb * 1024**3 <= size < current:
            backup.replace(disk)
        else:
            log.warning("instance %s: dropping an older resize backup (%d bytes)", instance_uuid, size)
            backup.unlink()

    def drop_resize_backup(self, instance_uuid: str) -> None:
        """The copy kept for a revert (the resize is confirmed)."""
        (self.instance_dir(instance_uuid) / RESIZE_BACKUP).unlink(missing_ok=True)

    def remove_snapshot(self, instance_uuid: str) -> None:
        (self.instance_dir(instance_uuid) / SNAPSHOT).unlink(missing_ok=True)

    def remove_disks(self, instance_uuid: str) -> None:
        """The instance's root disk and config drive (a rebuild makes them again); its log stays."""
        for name in ("disk", CONFIG_DRIVE):
            (self.instance_dir(instance_uuid) / name).unlink(missing_ok=True)

    def remove_instance(self, instance_uuid: str) -> None:
        """The overlay, console log and anything else the instance had on this node."""
        shutil.rmtree(self.instance_dir(instance_uuid), ignore_errors=True)


def _files(directory: Path) -> list[Path]:
    """The regular files in ``directory``, by name (none if it does not exist yet)."""
    try:
        return sorted(entry for entry in directory.iterdir() if entry.is_file() and not entry.is_symlink())
    except FileNotFoundError:
        return []


def _age_file(path: Path, in_use: bool, max_age: float) -> int | None:
    """Mark ``path`` used now if it is in use; else remove it if unchanged for over ``max_age``
    seconds. Returns the bytes freed (None: kept)."""
    if in_use:
        os.utime(path)
        return None
    info = path.stat()
    if time.time() - info.st_mtime <= max_age:
        return None
    path.unlink()
    return info.st_size


def _backing_file(path: Path) -> Path | None:
    """The backing file a qcow2 image's header names (None: no such file, not qcow2, or no backing)."""
    try:
        with path.open("rb") as image:
            header = image.read(20)
            if len(header) < 20 or header[:4] != QCOW2_MAGIC:
                return None
            offset, length = struct.unpack(">QI", header[8:20])
            if not offset:
                return None
            image.seek(offset)
            backing = Path(os.fsdecode(image.read(length)))
    except FileNotFoundError:
        return None
    return backing if backing.is_absolute() else path.parent / backing


def _tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of a file (nothing if it does not exist yet)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read()
    except FileNotFoundError:
        return b""


async def _virtual_size(path: Path, disk_format: str) -> int:
    if disk_format == "raw":
        return path.stat().st_size
    output = await run_tool("qemu-img", "info", "--output=json", "-f", disk_format, str(path))
    return int(json.loads(output)["virtual-size"])
