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
from typing import Any, TypedDict

import msgspec

from actors.placement import Placements, sees_for
from api.conductor import Placement
from api.image import (
    CHUNK_MAX,
    READ_ONLY,
    RESERVED,
    RESERVED_PREFIX,
    UPDATABLE,
    Change,
    ContainerFormat,
    DiskFormat,
    Image,
    ImageForNodes,
    Images,
    ImageStatus,
    PropertyValue,
    Received,
    Sort,
    Visibility,
)
from bus import Actor, Bus, Conflict, Context, Forbidden, InvalidRequest, NotFound
from runtime.config import Config
from runtime.context import caller, check_visible, sees_all
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import ConstraintViolation, Db, Migration, from_json, open_store, to_json

MIGRATIONS: list[str | Migration] = [
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
    "ALTER TABLE images ADD COLUMN os_hidden INTEGER NOT NULL DEFAULT 0;",
    Migration(  # an image's name may be NULL (Glance's images need none)
        sqlite="""
        CREATE TABLE images_named (
            id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, visibility TEXT NOT NULL,
            protected INTEGER NOT NULL DEFAULT 0, checksum TEXT, os_hash_algo TEXT, os_hash_value TEXT,
            owner TEXT, size INTEGER, virtual_size INTEGER, min_disk INTEGER NOT NULL DEFAULT 0,
            min_ram INTEGER NOT NULL DEFAULT 0, disk_format TEXT NOT NULL, container_format TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
            properties TEXT NOT NULL DEFAULT '{}', received INTEGER NOT NULL DEFAULT 0,
            os_hidden INTEGER NOT NULL DEFAULT 0);
        INSERT INTO images_named SELECT id, name, status, visibility, protected, checksum, os_hash_algo,
            os_hash_value, owner, size, virtual_size, min_disk, min_ram, disk_format, container_format,
            created_at, updated_at, tags, properties, received, os_hidden FROM images ORDER BY rowid;
        DROP TABLE images;
        ALTER TABLE images_named RENAME TO images;
        CREATE INDEX images_listing ON images(created_at, id);
        """,
        postgresql="ALTER TABLE images ALTER COLUMN name DROP NOT NULL;",
    ),
]


class ImageRow(TypedDict):
    """A row of ``images``: tags and properties as JSON, ``received`` the bytes written so far."""

    id: str
    name: str | None
    status: ImageStatus
    visibility: Visibility
    protected: int
    os_hidden: int
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


def _check_reserved(name: str) -> None:
    """:raises Forbidden: a name no extra property may have (Glance's reserved ones)."""
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{name}' is reserved.")


def _checked_value(change: Change) -> Any:
    """The value of an ``add`` or ``replace`` as its field's type (an extra property's: a string).

    :raises Forbidden: a read-only field or a reserved name.
    :raises InvalidRequest: no value, or one not of the field's type.
    """
    name = change["name"]
    if name in READ_ONLY:
        raise Forbidden(f"Attribute '{name}' is read-only.")
    _check_reserved(name)
    if change["op"] == "remove":
        return None
    if "value" not in change:
        raise InvalidRequest(f'Operation "{change["op"]}" requires a member named "value".')
    try:
        return msgspec.convert(change["value"], UPDATABLE.get(name, PropertyValue))
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid value for '{name}': {exc}") from None


async def _save(db: Db, image_id: str, fields: dict[str, Any], properties: dict[str, str]) -> None:
    """Write an image's updatable fields and extra properties (``Patched``)."""
    await db.execute(
        "UPDATE images SET name = :name, visibility = :visibility, protected = :protected,"
        " os_hidden = :os_hidden, min_disk = :min_disk, min_ram = :min_ram, tags = :tags,"
        " container_format = :container_format, disk_format = :disk_format, owner = :owner,"
        " properties = :properties, updated_at = :updated_at WHERE id = :id",
        {
            **fields,
            "protected": int(fields["protected"]),
            "os_hidden": int(fields["os_hidden"]),
            "tags": to_json(fields["tags"]),
            "properties": to_json(properties),
            "updated_at": utcnow(),
            "id": image_id,
        },
    )


NULL_SORTS_AS: dict[str, Any] = {"size": -1, "name": ""}
"""Where the sort keys that may be NULL put an image without one: first (as the smallest), on
sqlite and PostgreSQL alike (which put NULLs at opposite ends)."""

Order = list[tuple[str, str]]
"""Sort keys, each with its direction (``asc``, ``desc``)."""


def _order(sort: list[Sort]) -> Order:
    """A list's order: ``sort`` (default: newest first), then ``created_at`` and ``id``, in the
    direction every sort key has (else descending), as Glance pages them: each image has one
    place, so a marker says where a page ends."""
    order: Order = []
    for item in sort:
        if item["key"] not in {key for key, _ in order}:
            order.append((item["key"], item["direction"]))
    order = order or [("created_at", "desc")]
    directions = {direction for _, direction in order}
    tail = directions.pop() if len(directions) == 1 else "desc"
    return order + [(key, tail) for key in ("created_at", "id") if key not in {key for key, _ in order}]


def _sort_expression(key: str) -> str:
    """What a list orders by for ``key`` (its column, or ``NULL_SORTS_AS`` in place of a NULL)."""
    return f"COALESCE({key}, {NULL_SORTS_AS[key]!r})" if key in NULL_SORTS_AS else key


def _sort_value(row: ImageRow, key: str) -> Any:
    """The value of ``row`` that ``_sort_expression(key)`` orders by."""
    value = row[key]  # type: ignore[literal-required]
    return NULL_SORTS_AS.get(key) if value is None else value


def _order_by(order: Order) -> str:
    return ", ".join(f"{_sort_expression(key)} {direction.upper()}" for key, direction in order)


class Where:
    """The conditions of a list query (all must hold) and their parameters, in order."""

    def __init__(self) -> None:
        self.clauses = ["status NOT IN ('deleted', 'killed')"]
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params += params

    def visible_to(self, ctx: Context | None, visibility: str | None) -> None:
        """What the caller may see; without a ``visibility`` filter, no other project's community
        images (Glance's default list)."""
        project = ctx.project_id if ctx is not None else None
        if not sees_all(ctx):
            self.add("(visibility IN ('public', 'community') OR owner = ?)", project)
        if visibility is None:
            self.add("(visibility != 'community' OR owner = ?)", project)

    def after(self, order: Order, last: ImageRow) -> None:
        """Only the images after ``last`` in ``order`` (a total order: it ends with ``id``)."""
        alternatives, params = [], []
        for index, (key, direction) in enumerate(order):
            ties = [f"{_sort_expression(tied)} = ?" for tied, _ in order[:index]]
            beyond = f"{_sort_expression(key)} {'<' if direction == 'desc' else '>'} ?"
            alternatives.append(f"({' AND '.join([*ties, beyond])})")
            params += [_sort_value(last, tied) for tied, _ in order[: index + 1]]
        self.add(f"({' OR '.join(alternatives)})", *params)

    def sql(self) -> str:
        return " AND ".join(self.clauses)


class Patched:
    """An image's updatable fields and extra properties, as ``update``'s changes leave them."""

    def __init__(self, row: ImageRow) -> None:
        record = _record(row)
        self.status = row["status"]
        self.fields: dict[str, Any] = {name: record[name] for name in UPDATABLE}  # type: ignore[literal-required]
        self.properties: dict[str, str] = record["properties"]

    def apply(self, change: Change, value: Any, *, strict_add: bool, admin: bool) -> None:
        """Apply one checked change (``_checked_value``).

        :raises Forbidden: the removal of a field, an admin's change asked by another, a format
            of an image that is not queued.
        :raises Conflict: a property that is not there (there, for a strict add).
        """
        name, op = change["name"], change["op"]
        if name in UPDATABLE:
            self._set_field(name, op, value, strict_add=strict_add, admin=admin)
            return
        present = name in self.properties
        if op != "add" and not present:
            raise Conflict(f"Property {name} does not exist.")
        if op == "add" and strict_add and present:
            raise Conflict(f"Property {name} already present.")
        if op == "remove":
            del self.properties[name]
        else:
            self.properties[name] = value

    def _set_field(self, name: str, op: str, value: Any, *, strict_add: bool, admin: bool) -> None:
        if op == "remove":
            raise Forbidden(f"Property {name} may not be removed.")
        if op == "add" and strict_add:
            raise Conflict(f"Property {name} already present.")
        if name == "owner" and not admin:
            raise Forbidden("Owner can't be updated by non admin.")
        if name == "visibility" and value == "public" and not admin:
            raise Forbidden("Only an admin may make an image public.")
        if name in ("disk_format", "container_format") and self.status != "queued":
            raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
        self.fields[name] = builtins.list(dict.fromkeys(value)) if name == "tags" else value


def _record(row: ImageRow) -> Image:
    """An image as the actor shows it (Glance v2 field names)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "visibility": row["visibility"],
        "protected": bool(row["protected"]),
        "os_hidden": bool(row["os_hidden"]),
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

    async def _load(self, image_id: str, *, deleted: bool = False, db: Db | None = None) -> ImageRow:
        """The image's row if the caller may see it (deleted ones only when asked), read in
        ``db`` (a transaction) when given.

        :raises NotFound: no such image (or deleted), or the caller may not see it.
        """
        row = await self.stored(image_id, deleted=deleted, db=db)
        check_visible("image", image_id, row["owner"], public=_public(row))
        return row

    async def stored(self, image_id: str, *, deleted: bool = False, db: Db | None = None) -> ImageRow:
        """The image's row, whoever may see it (deleted ones only when asked).

        :raises NotFound: no such image (or deleted).
        """
        row = await (db or self.store).fetchone(
            "SELECT * FROM images WHERE id = ?", (image_id,), row=ImageRow
        )
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
        name: str | None = None,
        disk_format: DiskFormat = "raw",
        container_format: ContainerFormat = "bare",
        visibility: Visibility = "private",
        min_disk: int = 0,
        min_ram: int = 0,
        protected: bool = False,
        os_hidden: bool = False,
        tags: builtins.list[str] | None = None,
        properties: dict[str, str] | None = None,
        id: str | None = None,
    ) -> Image:
        """Register a queued image (``api.image.Images.create``)."""
        properties = {} if properties is None else properties
        for key in properties:
            _check_reserved(key)
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
            "os_hidden": os_hidden,
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
                "INSERT INTO images (id, name, status, visibility, protected, os_hidden, owner, min_disk,"
                " min_ram, disk_format, container_format, created_at, updated_at, tags, properties)"
                " VALUES (:id, :name, :status, :visibility, :protected, :os_hidden, :owner, :min_disk,"
                " :min_ram, :disk_format, :container_format, :created_at, :updated_at, :tags, :properties)",
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

    async def update(
        self, *, image_id: str, changes: builtins.list[Change], strict_add: bool = False
    ) -> Image:
        """Apply Glance's JSON-patch changes, all or none (``api.image.Images.update``)."""
        values = [_checked_value(change) for change in changes]
        if not changes:
            return await self.get(image_id=image_id)
        admin = sees_all(caller())
        async with self.store.transaction() as db:
            row = await self._load(image_id, db=db)
            self._require_owner(row, "modify")
            patched = Patched(row)
            for change, value in zip(changes, values, strict=True):
                patched.apply(change, value, strict_add=strict_add, admin=admin)
            await _save(db, row["id"], patched.fields, patched.properties)
        return await self._updated(row["id"])

    async def add_tag(self, *, image_id: str, tag: str) -> Image:
        """Tag the image (``api.image.Images.add_tag``)."""
        async with self.store.transaction() as db:
            row = await self._load(image_id, db=db)
            self._require_owner(row, "modify")
            tags = from_json(row["tags"], [])
            if tag in tags:
                return _record(row)
            await db.execute(
                "UPDATE images SET tags = ?, updated_at = ? WHERE id = ?",
                (to_json([*tags, tag]), utcnow(), row["id"]),
            )
        return await self._updated(row["id"])

    async def remove_tag(self, *, image_id: str, tag: str) -> Image:
        """Take a tag off the image (``api.image.Images.remove_tag``)."""
        async with self.store.transaction() as db:
            row = await self._load(image_id, db=db)
            self._require_owner(row, "modify")
            tags = from_json(row["tags"], [])
            if tag not in tags:
                raise NotFound(f"Tag {tag} not found for image {row['id']}.")
            tags.remove(tag)
            await db.execute(
                "UPDATE images SET tags = ?, updated_at = ? WHERE id = ?",
                (to_json(tags), utcnow(), row["id"]),
            )
        return await self._updated(row["id"])

    async def _updated(self, image_id: str) -> Image:
        """The image after a change of its record, published as ``image.updated``."""
        record = await self._get(image_id)
        await publish_event(self.bus, "image", record["id"], record["owner"], "image.updated", record)
        return record

    async def list(
        self,
        *,
        name: str | None = None,
        status: ImageStatus | None = None,
        visibility: str | None = None,
        owner: str | None = None,
        container_format: ContainerFormat | None = None,
        disk_format: DiskFormat | None = None,
        size: int | None = None,
        size_min: int | None = None,
        size_max: int | None = None,
        tags: builtins.list[str] | None = None,
        protected: bool | None = None,
        os_hidden: bool = False,
        sort: builtins.list[Sort] | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> builtins.list[Image]:
        """The images the caller may see, filtered and sorted (``api.image.Images.list``). As
        Glance lists them: without ``visibility``, community images are left out but the caller's
        own (another project's community image of a name never shadows the public one);
        ``community`` lists them all, ``all`` everything the caller may see. A ``tags`` filter is
        applied to the rows read (tags are kept as JSON), so ``limit`` is then applied after it."""
        where = Where()
        where.visible_to(caller(), visibility)
        for column, value in (
            ("name", name), ("status", status), ("visibility", visibility), ("owner", owner),
            ("container_format", container_format), ("disk_format", disk_format), ("size", size),
        ):  # fmt: skip
            if value is not None and value != "all":
                where.add(f"{column} = ?", value)
        if size_min is not None:
            where.add("size >= ?", size_min)
        if size_max is not None:
            where.add("size <= ?", size_max)
        if protected is not None:
            where.add("protected = ?", int(protected))
        where.add("os_hidden = ?", int(os_hidden))
        order = _order(sort or [])
        if marker is not None:
            try:
                last = await self._load(marker, deleted=True)
            except NotFound:
                raise InvalidRequest(f"marker {marker} could not be found") from None
            where.after(order, last)
        sql = f"SELECT * FROM images WHERE {where.sql()} ORDER BY {_order_by(order)}"
        if limit is not None and not tags:
            sql += f" LIMIT {int(limit)}"
        rows = await self.store.fetchall(sql, where.params, row=ImageRow)
        if tags:
            rows = [row for row in rows if set(tags) <= set(from_json(row["tags"], []))][:limit]
        return [_record(row) for row in rows]

    async def deactivate(self, *, image_id: str) -> Image:
        """Active to deactivated (``api.image.Images.deactivate``)."""
        return await self._switch(image_id, "active", "deactivated")

    async def reactivate(self, *, image_id: str) -> Image:
        """Deactivated to active (``api.image.Images.reactivate``)."""
        return await self._switch(image_id, "deactivated", "active")

    async def _switch(self, image_id: str, source: ImageStatus, target: ImageStatus) -> Image:
        """Move an image from ``source`` to ``target`` (one in ``target`` already stays), publishing
        ``image.<target>``.

        :raises Forbidden: not the owner's project (nor an admin), or in neither status.
        """
        action = "deactivate" if target == "deactivated" else "reactivate"
        async with self.store.transaction() as db:
            row = await self._load(image_id, db=db)
            self._require_owner(row, action)
            if row["status"] == target:
                return _record(row)
            if row["status"] != source:
                raise Forbidden(f"Not allowed to {action} image in status '{row['status']}'.")
            await db.execute(
                "UPDATE images SET status = ?, updated_at = ? WHERE id = ?", (target, utcnow(), row["id"])
            )
        record = await self._get(row["id"])
        await publish_event(self.bus, "image", record["id"], record["owner"], f"image.{target}", record)
        return record

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
        return await self.read_bytes(
            await self._load(image_id), offset, length, privileged=sees_all(caller())
        )

    async def read_bytes(self, row: ImageRow, offset: int, length: int, *, privileged: bool) -> bytes:
        """Up to ``length`` bytes (at most ``CHUNK_MAX``) of an active image from ``offset`` (or of
        a deactivated one, for a ``privileged`` reader: an admin or a service).

        :raises Forbidden: the image is deactivated and the reader is not privileged.
        :raises Conflict: the image is neither active nor deactivated.
        """
        image_id = row["id"]
        if row["status"] == "deactivated" and not privileged:
            raise Forbidden("The requested image has been deactivated. Image data download is forbidden.")
        if row["status"] not in ("active", "deactivated"):
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
        row = await self._usable(image_id, instance_uuid, host)
        return await self.actor.read_bytes(row, offset, length, privileged=False)

    async def _snapshot_of(self, image_id: str, instance_uuid: str, host: str) -> ImageRow:
        """The queued or saving image whose ``instance_uuid`` property names the instance, if the
        instance is on ``host`` (a snapshot its node is uploading).

        :raises NotFound: otherwise.
        """
        await self.placements.on_host(instance_uuid, host, fresh=True)
        try:
            row = await self.actor.stored(image_id)
        except NotFound:
            row = None
        if (
            row is None
            or from_json(row["properties"], {}).get("instance_uuid") != instance_uuid
            or row["status"] not in ("queued", "saving")
        ):
            raise NotFound(f"image {image_id} is no snapshot being made of instance {instance_uuid}")
        return row

    async def upload_snapshot(
        self,
        *,
        image_id: str,
        instance_uuid: str,
        offset: int,
        data: bytes,
        disk_format: DiskFormat,
        host: str,
    ) -> Received:
        """A chunk of a snapshot of the instance (``api.image.ImageForNodes.upload_snapshot``)."""
        row = await self._snapshot_of(image_id, instance_uuid, host)
        if offset == 0 and row["status"] == "queued" and row["disk_format"] != disk_format:
            await self.actor.update(
                image_id=image_id, changes=[{"op": "replace", "name": "disk_format", "value": disk_format}]
            )
        return await self.actor.upload_chunk(image_id=image_id, offset=offset, data=data)

    async def finish_snapshot(self, *, image_id: str, instance_uuid: str, host: str) -> Image:
        """The snapshot is uploaded (``api.image.ImageForNodes.finish_snapshot``)."""
        await self._snapshot_of(image_id, instance_uuid, host)
        return await self.actor.finish_upload(image_id=image_id)

    async def discard_snapshot(self, *, image_id: str, instance_uuid: str, host: str) -> None:
        """A snapshot that could not be made (``api.image.ImageForNodes.discard_snapshot``)."""
        await self._snapshot_of(image_id, instance_uuid, host)
        await self.actor.delete(image_id=image_id)

    async def _usable(self, image_id: str, instance_uuid: str, host: str) -> ImageRow:
        """The image's row, if the instance is on ``host`` and boots from it (or from an image
        that names it as its kernel or ramdisk), and the instance's project may see it.

        :raises NotFound: otherwise (the same answer whichever check failed).
        """
        placement = await self.placements.on_host(instance_uuid, host, arriving=True)
        try:
            row = await self._used_by(image_id, placement)
        except NotFound:  # it may have been rebuilt from that image since the placement was kept
            placement = await self.placements.on_host(instance_uuid, host, fresh=True, arriving=True)
            row = await self._used_by(image_id, placement)
        if not sees_for(placement, row["owner"], public=_public(row)):
            raise NotFound(f"image {image_id} could not be found for instance {instance_uuid}")
        return row

    async def _used_by(self, image_id: str, placement: Placement) -> ImageRow:
        """The image's row if the placed instance boots from it or from an image naming it as its
        kernel or ramdisk.

        :raises NotFound: it does not.
        """
        booted = placement["image_ref"]
        try:
            if image_id != booted:
                properties = from_json((await self.actor.stored(booted))["properties"], {})
                if image_id not in (properties.get("kernel_id"), properties.get("ramdisk_id")):
                    raise NotFound(f"image {image_id} could not be found")
            return await self.actor.stored(image_id)
        except NotFound:
            instance_uuid = placement["instance_uuid"]
            raise NotFound(f"image {image_id} could not be found for instance {instance_uuid}") from None
