"""A node's image cache and instance disks, as Nova's libvirt image backend keeps them.

Each image a guest needs (its disk, kernel and ramdisk) is fetched from the image actor
once, checked against the image's md5 and sha512, and kept under ``_base/<image id>``.
An instance's root disk is a qcow2 overlay on that base, sized to the flavor's root disk,
in the instance's own directory next to its console log (``console_output`` reads its
tail); deleting the instance deletes the directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
from pathlib import Path

from api.image import CHUNK_MAX, Image, ImageForNodes
from bus import Conflict

log = logging.getLogger(__name__)

FETCH_CHUNK = CHUNK_MAX
FETCH_WINDOW = 4
QEMU_IMG_FORMATS = {"raw": "raw", "qcow2": "qcow2", "ami": "raw", "aki": "raw", "ari": "raw"}
CONSOLE_MAX_BYTES = 1024 * 1024


class ImageCache:
    """Base images fetched once per node; overlays and console logs per instance."""

    def __init__(self, reader: ImageForNodes, state_dir: Path) -> None:
        self.reader = reader
        """The image actor, as this node (it reads only the images of instances on this host)."""
        self.base_dir = state_dir / "images" / "_base"
        self.instances_dir = state_dir / "instances"
        self._locks: dict[str, asyncio.Lock] = {}

    def instance_dir(self, instance_uuid: str) -> Path:
        return self.instances_dir / instance_uuid

    def console_log(self, instance_uuid: str) -> Path:
        return self.instance_dir(instance_uuid) / "console.log"

    async def base(self, image: Image, instance_uuid: str) -> Path:
        """The verified local copy of an active image, fetched on first use (for ``instance_uuid``,
        which uses it: the image actor gives a node only the images of its instances)."""
        path = self.base_dir / image["id"]
        lock = self._locks.setdefault(image["id"], asyncio.Lock())
        async with lock:
            if not path.exists():
                await self._fetch(image, instance_uuid, path)
        return path

    async def _fetch(self, image: Image, instance_uuid: str, path: Path) -> None:
        size = image.get("size")
        if image.get("status") != "active" or not isinstance(size, int):
            raise Conflict(f"image {image['id']} is {image.get('status')}; only active images can boot")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
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
        base = await self.base(image, instance_uuid)
        directory = self.instance_dir(instance_uuid)
        directory.mkdir(parents=True, exist_ok=True)
        disk = directory / "disk"
        backing_format = QEMU_IMG_FORMATS.get(image.get("disk_format") or "raw")
        if backing_format is None:
            raise Conflict(
                f"image {image['id']} has disk format {image['disk_format']}, which cannot boot here"
            )
        virtual_size = await _virtual_size(base, backing_format)
        size = max(root_gb * 1024**3, virtual_size)
        await _run(
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

    async def console_output(self, instance_uuid: str, length: int | None = None) -> str:
        """The tail of the guest's serial console log (its last MiB); its last ``length`` lines when given."""
        data = await asyncio.to_thread(_tail, self.console_log(instance_uuid), CONSOLE_MAX_BYTES)
        lines = data.decode(errors="replace").replace("\r\n", "\n").splitlines(keepends=True)
        if length is not None:
            lines = lines[-length:] if length > 0 else []
        return "".join(lines)

    def remove_instance(self, instance_uuid: str) -> None:
        """The overlay, console log and anything else the instance had on this node."""
        shutil.rmtree(self.instance_dir(instance_uuid), ignore_errors=True)


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
    output = await _run("qemu-img", "info", "--output=json", "-f", disk_format, str(path))
    return int(json.loads(output)["virtual-size"])


async def _run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} {command[1]} failed: {stderr.decode(errors='replace').strip()}")
    return stdout.decode()
