"""The image actor (Glance): image records and image bytes in its store, so every replica (one
per controller of a cluster, sharing PostgreSQL) serves every image.

The bytes are kept as the chunks they were uploaded in (``image_chunks``: at most ``CHUNK_MAX``
each, keyed by their offset); a retried chunk replaces the chunks from its offset on.
``finish_upload`` hashes them in order (md5 and sha512). Changes to one image's bytes are
serialized by a lock per image in this process; the store's ``received`` column (the bytes
written so far) is compared-and-swapped in the chunk's transaction, so a second replica cannot
interleave. An image file an earlier version kept in ``<data>/images/<id>`` is moved into the
store at start. On its first start (an empty store) it registers the public ``aiostack-tiny``
image.

Its API, events and version history: ``api/image.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from actors.placement import Placements, sees_for
from api.image import (
    CHUNK_MAX,
    ContainerFormat,
    DiskFormat,
    Image,
    ImageForNodes,
    Images,
    ImageStatus,
    Received,
    Visibility,
)
from bus import Actor, Bus, Conflict, Forbidden, InvalidRequest, NotFound
from runtime.config import Config
from runtime.context import caller, check_visible, sees_all
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import ConstraintViolation, Db, Migration, from_json, open_store, to_json

MIGRATIONS = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, visibility TEXT NOT NULL,
        protected INTEGER NOT NULL DEFAULT 0, checksum TEXT, os_hash_algo TEXT, os_hash_value TEXT,
        owner TEXT, size INTEGER, virtual_size INTEGER, min_disk INTEGER NOT NULL DEFAULT 0,
        min_ram INTEGER NOT NULL DEFAULT 0, disk_format TEXT NOT NULL, container_format TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
        properties TEXT NOT NULL DEFAULT '{}', received INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX images_listing ON images(created_at, id);
    """,
    Migration(
        sqlite="""
        CREATE TABLE image_chunks (
            image_id TEXT NOT NULL, start_at INTEGER NOT NULL, size INTEGER NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY (image_id, start_at));
        """,
        postgresql="""
        CREATE TABLE image_chunks (
            image_id TEXT NOT NULL, start_at INTEGER NOT NULL, size INTEGER NOT NULL,
            data BYTEA NOT NULL, PRIMARY KEY (image_id, start_at));
        """,
    ),
]


class ImageRow(TypedDict):
    """A row of ``images``: tags and properties as JSON, ``received`` the bytes written so far."""

    id: str
    name: str
    status: ImageStatus
    visibility: Visibility
    protected: int
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    owner: str | None
    size: int | None
    virtual_size: int | None
    min_disk: int
    min_ram: int
    disk_format: DiskFormat
    container_format: ContainerFormat
    created_at: str
    updated_at: str
    tags: str
    properties: str
    received: int


RESERVED_PROPERTIES = frozenset((*Image.__annotations__, "self", "file", "schema", "locations", "direct_url"))

TINY_NAME = "aiostack-tiny"
TINY_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "aiostack:image:aiostack-tiny"))
TINY_SIZE = 1024 * 1024


def tiny_disk() -> bytes:
    """The default image's bytes: a zeroed 1 MiB raw disk with an MBR boot signature."""
    disk = bytearray(TINY_SIZE)
    disk[510:512] = b"\x55\xaa"
    return bytes(disk)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def _put_chunks(db: Db, image_id: str, offset: int, data: bytes) -> None:
    """Keep ``data`` at ``offset`` (in pieces of at most ``CHUNK_MAX``), dropping what was kept
    from ``offset`` on (a retried chunk replaces it)."""
    await _drop_chunks(db, image_id, offset)
    pieces = [(offset + start, data[start : start + CHUNK_MAX]) for start in range(0, len(data), CHUNK_MAX)]
    await db.executemany(
        "INSERT INTO image_chunks (image_id, start_at, size, data) VALUES (?, ?, ?, ?)",
        [(image_id, start, len(piece), piece) for start, piece in pieces],
    )


async def _drop_chunks(db: Db, image_id: str, offset: int = 0) -> None:
    """Drop what is kept of an image's bytes from ``offset`` on."""
    await db.execute("DELETE FROM image_chunks WHERE image_id = ? AND start_at >= ?", (image_id, offset))


async def _digest(db: Db, image_id: str) -> tuple[int, str, str]:
    """Size, md5 and sha512 (hex) of an image's bytes, read a few chunks at a time."""
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    while chunks := await db.fetchall(
        "SELECT size, data FROM image_chunks WHERE image_id = ? AND start_at >= ? ORDER BY start_at LIMIT 8",
        (image_id, size),
    ):
        for chunk in chunks:
            md5.update(chunk["data"])
            sha512.update(chunk["data"])
            size += chunk["size"]
    return size, md5.hexdigest(), sha512.hexdigest()


def _public(row: ImageRow) -> bool:
    """Whether every project sees the image (public and community ones)."""
    return row["visibility"] in ("public", "community")


def _record(row: ImageRow) -> Image:
    """An image as the actor shows it (Glance v2 field names)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "visibility": row["visibility"],
        "protected": bool(row["protected"]),
        "checksum": row["checksum"],
        "os_hash_algo": row["os_hash_algo"],
        "os_hash_value": row["os_hash_value"],
        "owner": row["owner"],
        "size": row["size"],
        "virtual_size": row["virtual_size"],
        "min_disk": row["min_disk"],
        "min_ram": row["min_ram"],
        "disk_format": row["disk_format"],
        "container_format": row["container_format"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "tags": from_json(row["tags"], []),
        "properties": from_json(row["properties"], {}),
    }


class ImageActor(Actor, Images):
    name = "image"

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.store = open_store(config, "image", MIGRATIONS)
        self.images_dir = config.data_dir / "images"
        """Where an earlier version kept image bytes (moved into the store at start)."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()
        self.serve(NodeImages(self, Placements(bus)))

    async def on_start(self) -> None:
        await self.store.open()
        await self._bootstrap()
        await self._adopt_files()

    async def on_stop(self) -> None:
        await self.store.close()

    async def _bootstrap(self) -> None:
        """Register the public ``aiostack-tiny`` image on first start (an empty store)."""
        if await self.store.fetchone("SELECT id FROM images LIMIT 1"):
            return
        data = tiny_disk()
        now = utcnow()
        async with self.store.transaction() as db:
            inserted = await db.execute(
                "INSERT INTO images (id, name, status, visibility, checksum, os_hash_algo,"
                " os_hash_value, size, disk_format, container_format, created_at, updated_at, received)"
                " VALUES (?, ?, 'active', 'public', ?, 'sha512', ?, ?, 'raw', 'bare', ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    TINY_ID, TINY_NAME, hashlib.md5(data, usedforsecurity=False).hexdigest(),
                    hashlib.sha512(data).hexdigest(), len(data), now, now, len(data),
                ),
            )  # fmt: skip
            if inserted:
                await _put_chunks(db, TINY_ID, 0, data)
        await publish_event(self.bus, "image", TINY_ID, None, "image.active", await self._get(TINY_ID))

    async def _adopt_files(self) -> None:
        """Move the image files an earlier version kept in ``<data>/images/`` into the store."""
        if not await asyncio.to_thread(self.images_dir.is_dir):
            return
        for path in await asyncio.to_thread(lambda: sorted(self.images_dir.iterdir())):
            data = await asyncio.to_thread(_read_file, path)
            if data is not None:
                async with self.store.transaction() as db:
                    if not await db.fetchone("SELECT 1 FROM image_chunks WHERE image_id = ?", (path.name,)):
                        await _put_chunks(db, path.name, 0, data)
                await asyncio.to_thread(path.unlink, missing_ok=True)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.images_dir.rmdir)

    @asynccontextmanager
    async def _image_lock(self, image_id: str) -> AsyncIterator[None]:
        """Serialize this process's changes to one image's data (the lock lives while in use)."""
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        self._lock_users[image_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[image_id] -= 1
            if not self._lock_users[image_id]:
                del self._lock_users[image_id], self._locks[image_id]

    async def _load(self, image_id: str, *, deleted: bool = False) -> ImageRow:
        """The image's row if the caller may see it (deleted ones only when asked).

        :raises NotFound: no such image (or deleted), or the caller may not see it.
        """
        row = await self.stored(image_id, deleted=deleted)
        check_visible("image", image_id, row["owner"], public=_public(row))
        return row

    async def stored(self, image_id: str, *, deleted: bool = False) -> ImageRow:
        """The image's row, whoever may see it (deleted ones only when asked).

        :raises NotFound: no such image (or deleted).
        """
        row = await self.store.fetchone("SELECT * FROM images WHERE id = ?", (image_id,), row=ImageRow)
        if row is None or (row["status"] == "deleted" and not deleted):
            raise NotFound(f"image {image_id} could not be found")  # as check_visible says it
        return row

    async def _get(self, image_id: str) -> Image:
        return _record(await self._load(image_id, deleted=True))

    def _require_owner(self, row: ImageRow, action: str) -> None:
        ctx = caller()
        if not sees_all(ctx) and (ctx is None or row["owner"] != ctx.project_id):
            raise Forbidden(f"You are not permitted to {action} image {row['id']}.")

    # -- records --------------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        disk_format: DiskFormat = "raw",
        container_format: ContainerFormat = "bare",
        visibility: Visibility = "private",
        min_disk: int = 0,
        min_ram: int = 0,
        protected: bool = False,
        tags: builtins.list[str] | None = None,
        properties: dict[str, str] | None = None,
        id: str | None = None,
    ) -> Image:
        """Register a queued image (``api.image.Images.create``)."""
        properties = {} if properties is None else properties
        reserved = sorted(RESERVED_PROPERTIES.intersection(properties))
        if reserved:
            raise InvalidRequest(f"property names {', '.join(reserved)} are reserved")
        if id is not None and not _is_uuid(id):
            raise InvalidRequest("id must be a UUID")
        ctx = caller()
        if visibility == "public" and not sees_all(ctx):
            raise Forbidden("Only an admin may create public images.")
        image_id = str(uuid.UUID(id)) if id is not None else new_uuid()
        now = utcnow()
        image = {
            "id": image_id,
            "name": name,
            "status": "queued",
            "visibility": visibility,
            "protected": protected,
            "owner": ctx.project_id if ctx is not None else None,
            "min_disk": min_disk,
            "min_ram": min_ram,
            "disk_format": disk_format,
            "container_format": container_format,
            "created_at": now,
            "updated_at": now,
            "tags": to_json(builtins.list(dict.fromkeys(tags or ()))),
            "properties": to_json(properties),
        }
        try:
            await self.store.execute(
                "INSERT INTO images (id, name, status, visibility, protected, owner, min_disk, min_ram,"
                " disk_format, container_format, created_at, updated_at, tags, properties)"
                " VALUES (:id, :name, :status, :visibility, :protected, :owner, :min_disk, :min_ram,"
                " :disk_format, :container_format, :created_at, :updated_at, :tags, :properties)",
                image,
            )
        except ConstraintViolation:
            raise Conflict(f"An image with ID {image_id} already exists") from None
        record = await self._get(image_id)
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.queued", record)
        return record

    async def get(self, *, image_id: str) -> Image:
        """One image (``api.image.ImageReader.get``)."""
        return _record(await self._load(image_id))

    async def list(
        self,
        *,
        name: str | None = None,
        status: ImageStatus | None = None,
        visibility: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> builtins.list[Image]:
        """The images the caller may see, newest first (``api.image.Images.list``). As Glance
        lists them: without ``visibility``, community images are left out but the caller's own
        (another project's community image of a name never shadows the public one); ``community``
        lists them all, ``all`` everything the caller may see."""
        clauses = ["status != 'deleted'"]
        params: builtins.list[object] = []
        ctx = caller()
        project = ctx.project_id if ctx is not None else None
        if not sees_all(ctx):
            clauses.append("(visibility IN ('public', 'community') OR owner = ?)")
            params.append(project)
        if visibility is None:
            clauses.append("(visibility != 'community' OR owner = ?)")
            params.append(project)
        for column, value in (("name", name), ("status", status), ("visibility", visibility)):
            if value is not None and value != "all":
                clauses.append(f"{column} = ?")
                params.append(value)
        if marker is not None:
            try:
                last = await self._load(marker, deleted=True)
            except NotFound:
                raise InvalidRequest(f"marker {marker} could not be found") from None
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [last["created_at"], last["created_at"], last["id"]]
        sql = f"SELECT * FROM images WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_record(row) for row in await self.store.fetchall(sql, params, row=ImageRow)]

    async def delete(self, *, image_id: str) -> None:
        """Mark the image deleted and drop its bytes (``api.image.Images.delete``)."""
        async with self._image_lock(image_id):
            row = await self._load(image_id)
            self._require_owner(row, "delete")
            if row["protected"]:
                raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
            async with self.store.transaction() as db:
                await db.execute(
                    "UPDATE images SET status = 'deleted', updated_at = ? WHERE id = ?", (utcnow(), row["id"])
                )
                await _drop_chunks(db, row["id"])
        record = await self._get(row["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.deleted", record)

    # -- data -----------------------------------------------------------------------------

    async def upload_chunk(self, *, image_id: str, offset: int, data: bytes) -> Received:
        """Write one chunk at ``offset`` (``api.image.Images.upload_chunk``)."""
        async with self._image_lock(image_id):
            return {"size": await self._write_chunk(image_id, offset, data)}

    async def finish_upload(self, *, image_id: str) -> Image:
        """Hash the uploaded bytes and make the image active (``api.image.Images.finish_upload``)."""
        async with self._image_lock(image_id):
            return await self._finish(image_id)

    async def upload(self, *, image_id: str, data: bytes) -> Image:
        """One chunk at offset 0, then ``finish_upload`` (``api.image.Images.upload``)."""
        async with self._image_lock(image_id):
            await self._write_chunk(image_id, 0, data)
            return await self._finish(image_id)

    async def abort_upload(self, *, image_id: str) -> Image:
        """Saving back to queued, bytes dropped (``api.image.Images.abort_upload``)."""
        async with self._image_lock(image_id):
            row = await self._load(image_id)
            self._require_owner(row, "upload data to")
            if row["status"] != "saving":
                raise Conflict(f"Image {image_id} is {row['status']}, not saving; nothing to abort.")
            async with self.store.transaction() as db:
                await db.execute(
                    "UPDATE images SET status = 'queued', received = 0, updated_at = ? WHERE id = ?",
                    (utcnow(), row["id"]),
                )
                await _drop_chunks(db, row["id"])
            return await self._get(row["id"])

    async def read_chunk(self, *, image_id: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of an active image (``api.image.ImageReader.read_chunk``)."""
        return await self.read_bytes(await self._load(image_id), offset, length)

    async def read_bytes(self, row: ImageRow, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes (at most ``CHUNK_MAX``) of an active image from ``offset``.

        :raises Conflict: the image is not active.
        """
        image_id = row["id"]
        if row["status"] != "active":
            raise Conflict(f"Image {image_id} is {row['status']}; only active images can be read.")
        end = offset + min(length, CHUNK_MAX)
        chunks = await self.store.fetchall(
            "SELECT start_at, size, data FROM image_chunks WHERE image_id = ? AND start_at < ?"
            " AND start_at + size > ? ORDER BY start_at",
            (image_id, end, offset),
        )
        return b"".join(
            bytes(chunk["data"])[max(offset - chunk["start_at"], 0) : end - chunk["start_at"]]
            for chunk in chunks
        )

    async def _write_chunk(self, image_id: str, offset: int, data: bytes) -> int:
        """Write one chunk under the image's lock; return the bytes received so far.

        :raises Conflict: the image is not queued/saving, or ``offset`` is not the bytes received.
        """
        row = await self._load(image_id)
        self._require_owner(row, "upload data to")
        if row["status"] not in ("queued", "saving"):
            raise Conflict(f"Image status transition from {row['status']} to saving is not allowed")
        if offset != row["received"]:
            raise Conflict(f"Upload offset {offset} does not match the {row['received']} bytes received")
        received = offset + len(data)
        async with self.store.transaction() as db:
            changed = await db.execute(
                "UPDATE images SET status = 'saving', received = ?, updated_at = ?"
                " WHERE id = ? AND received = ? AND status IN ('queued', 'saving')",
                (received, utcnow(), row["id"], offset),
            )
            if not changed:
                raise Conflict(f"Image {image_id} changed during the upload")
            await _put_chunks(db, row["id"], offset, data)
        return received

    async def _finish(self, image_id: str) -> Image:
        row = await self._load(image_id)
        self._require_owner(row, "upload data to")
        if row["status"] != "saving":
            raise Conflict(f"Image {image_id} is {row['status']}; only a saving image can be finished.")
        size, md5, sha512 = await _digest(self.store, row["id"])
        await self.store.execute(
            "UPDATE images SET status = 'active', size = ?, checksum = ?, os_hash_algo = 'sha512',"
            " os_hash_value = ?, updated_at = ? WHERE id = ?",
            (size, md5, sha512, utcnow(), row["id"]),
        )
        record = await self._get(row["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.active", record)
        return record


class NodeImages(ImageForNodes):
    """Serves ``api.image.ImageForNodes``: a compute node reads the images an instance placed on
    its host boots from (its image, and the kernel and ramdisk that image names), as the
    instance's project sees them (``actors.placement``). Anything else is ``NotFound``."""

    def __init__(self, actor: ImageActor, placements: Placements) -> None:
        self.actor = actor
        self.placements = placements

    async def get(self, *, image_id: str, instance_uuid: str, host: str) -> Image:
        """One image the instance uses (``api.image.ImageForNodes.get``)."""
        return _record(await self._usable(image_id, instance_uuid, host))

    async def read_chunk(
        self, *, image_id: str, instance_uuid: str, offset: int, length: int, host: str
    ) -> bytes:
        """Bytes of an image the instance uses (``api.image.ImageForNodes.read_chunk``)."""
        return await self.actor.read_bytes(await self._usable(image_id, instance_uuid, host), offset, length)

    async def _usable(self, image_id: str, instance_uuid: str, host: str) -> ImageRow:
        """The image's row, if the instance is on ``host`` and boots from it (or from an image
        that names it as its kernel or ramdisk), and the instance's project may see it.

        :raises NotFound: otherwise (the same answer whichever check failed).
        """
        placement = await self.placements.on_host(instance_uuid, host)
        booted = placement["image_ref"]
        try:
            if image_id != booted:
                properties = from_json((await self.actor.stored(booted))["properties"], {})
                if image_id not in (properties.get("kernel_id"), properties.get("ramdisk_id")):
                    raise NotFound(f"image {image_id} could not be found")
            row = await self.actor.stored(image_id)
        except NotFound:
            raise NotFound(f"image {image_id} could not be found for instance {instance_uuid}") from None
        if not sees_for(placement, row["owner"], public=_public(row)):
            raise NotFound(f"image {image_id} could not be found for instance {instance_uuid}")
        return row
