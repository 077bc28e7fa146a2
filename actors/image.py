"""The image actor (Glance): image records in its store, image bytes in ``<data>/images/<id>``.

An image is created ``queued``; its bytes arrive in chunks at increasing offsets (the first
turns it ``saving``) and ``finish_upload`` hashes the file (md5 and sha512) and makes it
``active``. Downloads read it back in chunks. Every chunk travels in one bus message, so
none is larger than ``CHUNK_MAX``. File I/O runs in threads, never on the event loop.

Handlers (version history: 1 - initial):
* create(name, disk_format, container_format, visibility, min_disk, min_ram, protected,
  tags, properties, id) -> image                                  public images: admin only
* upload_chunk(image_id, offset, data) -> {size}; finish_upload(image_id) -> image
* upload(image_id, data) -> image; abort_upload(image_id) -> image (back to queued)
* get(image_id) -> image; list(name, status, visibility, limit, marker) -> [image]
* read_chunk(image_id, offset, length) -> bytes                   active images only
* delete(image_id) -> None                                        owner or admin, not protected
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bus import Actor, Bus, Conflict, Forbidden, InvalidRequest, NotFound, handler
from runtime.config import Config
from runtime.context import caller, check_visible, sees_all
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import Store, from_json, to_json

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
]

DISK_FORMATS = ("raw", "qcow2", "ami", "ari", "aki", "vhd", "vmdk", "vdi", "iso")
CONTAINER_FORMATS = ("bare", "ami", "ari", "aki", "ovf", "ova", "docker")
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = ("queued", "saving", "active", "killed", "deleted")
FIELDS = (
    "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo", "os_hash_value",
    "owner", "size", "virtual_size", "min_disk", "min_ram", "disk_format", "container_format",
    "created_at", "updated_at", "tags", "properties",
)  # fmt: skip
RESERVED_PROPERTIES = frozenset((*FIELDS, "self", "file", "schema", "locations", "direct_url"))
CHUNK_MAX = 512 * 1024
READ_BLOCK = 1024 * 1024

TINY_NAME = "aiostack-tiny"
TINY_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "aiostack:image:aiostack-tiny"))
TINY_SIZE = 1024 * 1024


def tiny_disk() -> bytes:
    """The default image's bytes: a zeroed 1 MiB raw disk with an MBR boot signature."""
    disk = bytearray(TINY_SIZE)
    disk[510:512] = b"\x55\xaa"
    return bytes(disk)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidRequest(message)


def _is_count(value: Any) -> bool:
    """A non-negative int (bools excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` and cut the file there (a retried chunk overwrites)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.pwrite(fd, data, offset)
        os.ftruncate(fd, offset + len(data))
    finally:
        os.close(fd)


def _read_at(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _digest(path: Path) -> tuple[int, str, str]:
    """Size, md5 and sha512 (hex) of a file."""
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            md5.update(block)
            sha512.update(block)
            size += len(block)
    return size, md5.hexdigest(), sha512.hexdigest()


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """An image as the actor shows it (Glance v2 field names)."""
    image = {key: row[key] for key in FIELDS}
    image["protected"] = bool(row["protected"])
    image["tags"] = from_json(row["tags"], [])
    image["properties"] = from_json(row["properties"], {})
    return image


class ImageActor(Actor):
    name = "image"

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("image"), MIGRATIONS)
        self.images_dir = config.data_dir / "images"
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()

    async def on_start(self) -> None:
        await asyncio.to_thread(self.images_dir.mkdir, parents=True, exist_ok=True)
        await self.store.open()
        await self._bootstrap()

    async def on_stop(self) -> None:
        await self.store.close()

    def _path(self, image_id: str) -> Path:
        return self.images_dir / image_id

    async def _bootstrap(self) -> None:
        """Register the public ``aiostack-tiny`` image on first start (an empty store)."""
        if await self.store.fetchone("SELECT id FROM images LIMIT 1"):
            return
        path = self._path(TINY_ID)
        await asyncio.to_thread(_write_at, path, 0, tiny_disk())
        size, md5, sha512 = await asyncio.to_thread(_digest, path)
        now = utcnow()
        await self.store.execute(
            "INSERT OR IGNORE INTO images (id, name, status, visibility, checksum, os_hash_algo,"
            " os_hash_value, size, disk_format, container_format, created_at, updated_at, received)"
            " VALUES (?, ?, 'active', 'public', ?, 'sha512', ?, ?, 'raw', 'bare', ?, ?, ?)",
            (TINY_ID, TINY_NAME, md5, sha512, size, now, now, size),
        )
        await publish_event(self.bus, "image", TINY_ID, None, "image.active", await self._get(TINY_ID))

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

    async def _load(self, image_id: Any, *, deleted: bool = False) -> dict[str, Any]:
        """The image's row if the caller may see it (deleted ones only when asked)."""
        _check(isinstance(image_id, str), "image_id must be a string")
        row = await self.store.fetchone("SELECT * FROM images WHERE id = ?", (image_id,))
        if row is None or (row["status"] == "deleted" and not deleted):
            raise NotFound(f"image {image_id} could not be found")  # as check_visible says it
        check_visible("image", image_id, row["owner"], public=row["visibility"] in ("public", "community"))
        return row

    async def _get(self, image_id: str) -> dict[str, Any]:
        return _record(await self._load(image_id, deleted=True))

    def _require_owner(self, row: dict[str, Any], action: str) -> None:
        ctx = caller()
        if not sees_all(ctx) and (ctx is None or row["owner"] != ctx.project_id):
            raise Forbidden(f"You are not permitted to {action} image {row['id']}.")

    # -- records --------------------------------------------------------------------------

    @handler(policy="image:write")
    async def create(
        self,
        name: str,
        disk_format: str = "raw",
        container_format: str = "bare",
        visibility: str = "private",
        min_disk: int = 0,
        min_ram: int = 0,
        protected: bool = False,
        tags: list[str] | None = None,
        properties: dict[str, str] | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        """Register a ``queued`` image owned by the caller's project.

        :raises InvalidRequest: a field has a bad type or value.
        :raises Forbidden: someone other than an admin or a service asks for a public image.
        :raises Conflict: an image with this ``id`` exists (or existed).
        """
        _check(isinstance(name, str) and len(name) <= 255, "name must be a string of at most 255 characters")
        _check(disk_format in DISK_FORMATS, f"disk_format must be one of {', '.join(DISK_FORMATS)}")
        _check(
            container_format in CONTAINER_FORMATS,
            f"container_format must be one of {', '.join(CONTAINER_FORMATS)}",
        )
        _check(visibility in VISIBILITIES, f"visibility must be one of {', '.join(VISIBILITIES)}")
        _check(_is_count(min_disk) and _is_count(min_ram), "min_disk and min_ram must be integers >= 0")
        _check(isinstance(protected, bool), "protected must be a boolean")
        tags = [] if tags is None else tags
        _check(
            isinstance(tags, list) and all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags),
            "tags must be a list of non-empty strings",
        )
        properties = {} if properties is None else properties
        _check(
            isinstance(properties, dict)
            and all(
                isinstance(k, str) and 0 < len(k) <= 255 and isinstance(v, str) for k, v in properties.items()
            ),
            "properties must map names to string values",
        )
        reserved = sorted(RESERVED_PROPERTIES.intersection(properties))
        _check(not reserved, f"property names {', '.join(reserved)} are reserved")
        _check(id is None or _is_uuid(id), "id must be a UUID")
        ctx = caller()
        if visibility == "public" and not sees_all(ctx):
            raise Forbidden("Only an admin may create public images.")
        now = utcnow()
        image = {
            "id": str(uuid.UUID(id)) if id is not None else new_uuid(),
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
            "tags": to_json(list(dict.fromkeys(tags))),
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
        except sqlite3.IntegrityError:
            raise Conflict(f"An image with ID {image['id']} already exists") from None
        record = await self._get(image["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.queued", record)
        return record

    @handler(policy="image:read")
    async def get(self, image_id: str) -> dict[str, Any]:
        """One image.

        :raises NotFound: no such image, deleted, or another project's private/shared image.
        """
        return _record(await self._load(image_id))

    @handler(policy="image:read")
    async def list(
        self,
        name: str | None = None,
        status: str | None = None,
        visibility: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[dict[str, Any]]:
        """The images the caller may see, newest first (``created_at`` then ``id``, descending).

        :raises InvalidRequest: a bad filter or limit, or a marker the caller cannot see.
        """
        clauses, params = ["status != 'deleted'"], []
        ctx = caller()
        if not sees_all(ctx):
            clauses.append("(visibility IN ('public', 'community') OR owner = ?)")
            params.append(ctx.project_id if ctx is not None else None)
        _check(name is None or isinstance(name, str), "name must be a string")
        _check(status is None or status in STATUSES, f"status must be one of {', '.join(STATUSES)}")
        _check(
            visibility is None or visibility in VISIBILITIES,
            "visibility must be one of " + ", ".join(VISIBILITIES),
        )
        _check(limit is None or _is_count(limit), "limit must be an integer >= 0")
        for column, value in (("name", name), ("status", status), ("visibility", visibility)):
            if value is not None:
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
        return [_record(row) for row in await self.store.fetchall(sql, params)]

    @handler(policy="image:write")
    async def delete(self, image_id: str) -> None:
        """Mark the image deleted and remove its file.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: not the owner's project (nor an admin), or the image is protected.
        """
        async with self._image_lock(str(image_id)):
            row = await self._load(image_id)
            self._require_owner(row, "delete")
            if row["protected"]:
                raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
            await self.store.execute(
                "UPDATE images SET status = 'deleted', updated_at = ? WHERE id = ?", (utcnow(), row["id"])
            )
            await asyncio.to_thread(self._path(row["id"]).unlink, missing_ok=True)
        record = await self._get(row["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.deleted", record)

    # -- data -----------------------------------------------------------------------------

    @handler(policy="image:write")
    async def upload_chunk(self, image_id: str, offset: int, data: bytes) -> dict[str, int]:
        """Append one chunk at ``offset`` (the bytes received so far); return the new total.

        :raises InvalidRequest: bad offset, or data that is not bytes or over ``CHUNK_MAX``.
        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not queued/saving, or ``offset`` is not the bytes received.
        """
        async with self._image_lock(str(image_id)):
            return {"size": await self._write_chunk(image_id, offset, data)}

    @handler(policy="image:write")
    async def finish_upload(self, image_id: str) -> dict[str, Any]:
        """Hash the uploaded bytes and make the image ``active``.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not ``saving``.
        """
        async with self._image_lock(str(image_id)):
            return await self._finish(image_id)

    @handler(policy="image:write")
    async def upload(self, image_id: str, data: bytes) -> dict[str, Any]:
        """One-shot upload of a small image: one chunk at offset 0, then ``finish_upload``.

        :raises InvalidRequest, NotFound, Forbidden, Conflict: as ``upload_chunk``.
        """
        async with self._image_lock(str(image_id)):
            await self._write_chunk(image_id, 0, data)
            return await self._finish(image_id)

    @handler(policy="image:write")
    async def abort_upload(self, image_id: str) -> dict[str, Any]:
        """Drop a half-done upload: ``saving`` back to ``queued``, file removed, so it can restart.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not ``saving``.
        """
        async with self._image_lock(str(image_id)):
            row = await self._load(image_id)
            self._require_owner(row, "upload data to")
            if row["status"] != "saving":
                raise Conflict(f"Image {image_id} is {row['status']}, not saving; nothing to abort.")
            await self.store.execute(
                "UPDATE images SET status = 'queued', received = 0, updated_at = ? WHERE id = ?",
                (utcnow(), row["id"]),
            )
            await asyncio.to_thread(self._path(row["id"]).unlink, missing_ok=True)
            return await self._get(row["id"])

    @handler(policy="image:read")
    async def read_chunk(self, image_id: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes (at most ``CHUNK_MAX``) of an active image from ``offset``.

        :raises InvalidRequest: bad offset or length.
        :raises NotFound: the caller cannot see the image, or its file is gone.
        :raises Conflict: the image is not ``active``.
        """
        _check(_is_count(offset) and _is_count(length), "offset and length must be integers >= 0")
        row = await self._load(image_id)
        if row["status"] != "active":
            raise Conflict(f"Image {image_id} is {row['status']}; only active images can be read.")
        try:
            return await asyncio.to_thread(_read_at, self._path(row["id"]), offset, min(length, CHUNK_MAX))
        except FileNotFoundError:
            raise NotFound(f"The data of image {image_id} could not be found") from None

    async def _write_chunk(self, image_id: str, offset: int, data: bytes) -> int:
        """Write one chunk under the image's lock; return the bytes received so far."""
        _check(_is_count(offset), "offset must be an integer >= 0")
        _check(isinstance(data, bytes) and len(data) <= CHUNK_MAX, f"data must be at most {CHUNK_MAX} bytes")
        row = await self._load(image_id)
        self._require_owner(row, "upload data to")
        if row["status"] not in ("queued", "saving"):
            raise Conflict(f"Image status transition from {row['status']} to saving is not allowed")
        if offset != row["received"]:
            raise Conflict(f"Upload offset {offset} does not match the {row['received']} bytes received")
        await asyncio.to_thread(_write_at, self._path(row["id"]), offset, data)
        received = offset + len(data)
        changed = await self.store.execute(
            "UPDATE images SET status = 'saving', received = ?, updated_at = ?"
            " WHERE id = ? AND received = ? AND status IN ('queued', 'saving')",
            (received, utcnow(), row["id"], offset),
        )
        if not changed:
            raise Conflict(f"Image {image_id} changed during the upload")
        return received

    async def _finish(self, image_id: str) -> dict[str, Any]:
        row = await self._load(image_id)
        self._require_owner(row, "upload data to")
        if row["status"] != "saving":
            raise Conflict(f"Image {image_id} is {row['status']}; only a saving image can be finished.")
        size, md5, sha512 = await asyncio.to_thread(_digest, self._path(row["id"]))
        await self.store.execute(
            "UPDATE images SET status = 'active', size = ?, checksum = ?, os_hash_algo = 'sha512',"
            " os_hash_value = ?, updated_at = ? WHERE id = ?",
            (size, md5, sha512, utcnow(), row["id"]),
        )
        record = await self._get(row["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.active", record)
        return record
