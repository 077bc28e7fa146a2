"""createImage on a node: a copy of an instance's disk uploaded as the image the conductor made.

A real guest's disk is a qcow2 overlay on its image's base: ``qemu-img convert`` flattens it into
one qcow2 file (read with ``-U``, as the guest may be running: the copy is what the disk held at
that moment, as a live snapshot without a guest agent to quiesce it is), which is streamed to the
image actor in chunks (``ImageForNodes.upload_snapshot``), then made active. A test-driver domain
never writes to its disk, so its snapshot is its image's bytes, read from the image actor and
written back as the snapshot (in the image's format). Either way the node then reports
``task_done``, which ends the task; a failed upload discards the image first.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from api.conductor import Instance
from api.image import CHUNK_MAX, DiskFormat
from node.hypervisor import Hypervisor
from node.images import ImageCache
from node.peers import Peers
from node.records import Records

log = logging.getLogger(__name__)


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


class Snapshots:
    """Uploads of this node's instances' disks as images."""

    def __init__(
        self, host: str, *, peers: Peers, hypervisor: Hypervisor, records: Records, images: ImageCache
    ) -> None:
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.images = images

    async def snapshot_instance(self, instance_uuid: str, image_id: str) -> None:
        """Upload the instance's disk into ``image_id``, then report ``task_done`` (also when it failed)."""
        async with self.records.working_on(instance_uuid):
            try:
                await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
                if self.hypervisor.real_guests:
                    await self._upload_disk(instance_uuid, image_id)
                else:
                    await self._upload_image_bytes(instance_uuid, image_id)
                await self.peers.image.finish_snapshot(image_id=image_id, instance_uuid=instance_uuid)
            except Exception as exc:
                log.warning("node %s: snapshot of %s failed: %r", self.host, instance_uuid, exc)
                await self.peers.image.discard_snapshot(image_id=image_id, instance_uuid=instance_uuid)
            finally:
                self.images.remove_snapshot(instance_uuid)
                await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)

    async def _upload_disk(self, instance_uuid: str, image_id: str) -> None:
        path = await self.images.flatten_disk(instance_uuid)
        offset = 0
        while chunk := await asyncio.to_thread(_read, path, offset, CHUNK_MAX):
            await self._put(instance_uuid, image_id, offset, chunk, "qcow2")
            offset += len(chunk)

    async def _upload_image_bytes(self, instance_uuid: str, image_id: str) -> None:
        instance = await self._instance(instance_uuid)
        image = await self.peers.image.get(image_id=instance["image_ref"], instance_uuid=instance_uuid)
        offset = 0
        while chunk := await self.peers.image.read_chunk(
            image_id=image["id"], instance_uuid=instance_uuid, offset=offset, length=CHUNK_MAX
        ):
            await self._put(instance_uuid, image_id, offset, chunk, image["disk_format"] or "raw")
            offset += len(chunk)

    async def _put(
        self, instance_uuid: str, image_id: str, offset: int, chunk: bytes, disk_format: DiskFormat
    ) -> None:
        await self.peers.image.upload_snapshot(
            image_id=image_id, instance_uuid=instance_uuid, offset=offset, data=chunk, disk_format=disk_format
        )

    async def _instance(self, instance_uuid: str) -> Instance:
        for instance in await self.peers.conductor.list_host_instances():
            if instance["id"] == instance_uuid:
                return instance
        raise LookupError(f"instance {instance_uuid} is not recorded on {self.host}")
