"""The volume actor (Cinder): volume records and their attachments, over files on storage hosts.

A volume is a file on the storage host of the volume actor that made it (``host``): a sparse raw
file (``<id>.raw``) or a qcow2 image (``<id>.qcow2``, made by ``qemu-img``), which that host's
``StorageActor`` (``actors/storage.py``, started by this actor) makes, removes and exports. Every
controller of a cluster runs a volume actor over the same records (a replica: any of them
answers, and asks the volume's storage host, over the bus, for what touches its file); one
machine runs one, storage host ``local``. Attached, a volume is reached by the node as its file
(one machine), or, given an NBD address, as an NBD export of its own for each attachment,
served by qemu-storage-daemon on its storage host to nodes on any host (``actors/nbd.py``).

Each status change runs in one store transaction and is then published. Attachment rows follow
the attach protocol: reserved (the volume attaching) -> attached (in-use) <-> detaching; only
attached and detaching ones are shown in a volume's ``attachments``. An orphan sweep frees the
volumes of instances the conductor no longer knows. Compute nodes reach the attach protocol
through ``NodeVolumes`` (``api.volume.VolumeAttacher``), each only for the boot volumes of the
instances the conductor records on its host.

Quotas (Cinder's quota sets, ``actors/volume_quotas.py``, served by ``VolumeQuotaBook``) are
checked in the transactions that record a volume (``_insert``), a snapshot and an extend.

Its API, the attach protocol, events and version history: ``api/volume.py``.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

from actors.orphans import ORPHAN_SWEEP_INTERVAL, sweep_orphans_forever
from actors.placement import Placements, sees_for
from actors.storage import StorageActor, qcow2_supported
from actors.volume_quotas import MIGRATION as QUOTA_MIGRATION
from actors.volume_quotas import VolumeQuotaBook, check_extend, check_snapshot, check_volume
from api.image import ImageReader
from api.volume import (
    DEFAULT_TYPE,
    LOCAL_STORAGE,
    MAX_PAGE,
    SNAPSHOT_SORT_KEYS,
    Attachment,
    AttachmentRecord,
    AttachStatus,
    Connected,
    Connection,
    Detached,
    Reattached,
    Snapshot,
    SnapshotStatus,
    Sort,
    StoredVolume,
    Volume,
    VolumeAttacher,
    VolumeFormat,
    VolumeRecords,
    VolumeStatus,
    VolumeStorage,
    VolumeType,
)
from bus import Actor, AiostackError, Bus, Conflict, Forbidden, InvalidRequest, NotFound
from runtime.config import Config
from runtime.context import caller, check_visible
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import Db, from_json, open_store, to_json

log = logging.getLogger(__name__)

DEFAULT_TYPE_ID = "d3d5f8a5-8ab1-4b5e-9d0a-6c1f4c0b7e01"
"""The default volume type's id (made by migration 4; Cinder makes one of its own at install)."""

MIGRATIONS = [
    """
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
        size INTEGER NOT NULL, status TEXT NOT NULL, format TEXT NOT NULL, path TEXT NOT NULL,
        user_id TEXT, project_id TEXT, metadata TEXT NOT NULL, fault TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX volumes_project ON volumes(project_id);
    CREATE TABLE attachments (
        id TEXT PRIMARY KEY, volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
        server_id TEXT NOT NULL, attach_status TEXT NOT NULL,
        host_name TEXT, device TEXT, attached_at TEXT);
    CREATE INDEX attachments_volume ON attachments(volume_id);
    CREATE INDEX attachments_server ON attachments(server_id);
    """,
    # 2: the NBD export of each attachment (its random name; '' where volumes are files only)
    "ALTER TABLE attachments ADD COLUMN export TEXT NOT NULL DEFAULT ''",
    # 3: the storage host each volume's file is on ('' where there was one: the actor's own)
    "ALTER TABLE volumes ADD COLUMN host TEXT NOT NULL DEFAULT ''",
    # 4: Cinder's volume flags (readonly NULL: never set), sources and types; snapshots
    f"""
    ALTER TABLE volumes ADD COLUMN bootable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE volumes ADD COLUMN readonly INTEGER;
    ALTER TABLE volumes ADD COLUMN volume_type TEXT NOT NULL DEFAULT '{DEFAULT_TYPE}';
    ALTER TABLE volumes ADD COLUMN snapshot_id TEXT;
    ALTER TABLE volumes ADD COLUMN source_volid TEXT;
    CREATE TABLE volume_types (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT,
        is_public INTEGER NOT NULL, extra_specs TEXT NOT NULL);
    INSERT INTO volume_types (id, name, description, is_public, extra_specs)
        VALUES ('{DEFAULT_TYPE_ID}', '{DEFAULT_TYPE}', 'Default Volume Type', 1, '{{}}');
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY, volume_id TEXT NOT NULL REFERENCES volumes(id),
        name TEXT NOT NULL, description TEXT NOT NULL, size INTEGER NOT NULL, status TEXT NOT NULL,
        metadata TEXT NOT NULL, user_id TEXT, project_id TEXT, fault TEXT,
        host TEXT NOT NULL, format TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX snapshots_volume ON snapshots(volume_id);
    CREATE INDEX snapshots_project ON snapshots(project_id);
    """,
    # 5: what a volume made from an image shows of it (JSON; NULL: made from none)
    "ALTER TABLE volumes ADD COLUMN image_metadata TEXT",
    # 6: quotas (``actors.volume_quotas``): projects' own limits, the size an extend grows to
    QUOTA_MIGRATION,
]


class VolumeRow(TypedDict):
    """A row of ``volumes`` (``metadata`` as JSON)."""

    id: str
    name: str
    description: str
    size: int
    status: VolumeStatus
    format: VolumeFormat
    path: str
    user_id: str | None
    project_id: str | None
    metadata: str
    fault: str | None
    created_at: str
    updated_at: str
    host: str
    bootable: int
    readonly: int | None
    volume_type: str
    snapshot_id: str | None
    source_volid: str | None
    image_metadata: str | None
    extending_to: int | None
    """The size an extend grows the volume to, while it is extending (its quota's reserved GiB)."""


class TypeRow(TypedDict):
    """A row of ``volume_types`` (``extra_specs`` as JSON)."""

    id: str
    name: str
    description: str | None
    is_public: int
    extra_specs: str


class SnapshotRow(TypedDict):
    """A row of ``snapshots`` (``metadata`` as JSON)."""

    id: str
    volume_id: str
    name: str
    description: str
    size: int
    status: SnapshotStatus
    metadata: str
    user_id: str | None
    project_id: str | None
    fault: str | None
    host: str
    format: VolumeFormat
    created_at: str
    updated_at: str


class AttachmentRow(TypedDict):
    """A row of ``attachments``: host_name, device and attached_at are set from ``attached`` on."""

    id: str
    volume_id: str
    server_id: str
    attach_status: AttachStatus
    host_name: str | None
    device: str | None
    attached_at: str | None
    export: str


class AttachmentOfProject(AttachmentRow):
    project_id: str | None


DELETABLE = ("available", "error", "error_deleting")
AVAILABILITY_ZONE = "nova"
"""The one availability zone (Cinder's default), every storage host's."""
SHOWN_ATTACHMENTS = "attach_status IN ('attached', 'detaching')"
ATTACHMENTS_OF = f"SELECT * FROM attachments WHERE volume_id = ? AND {SHOWN_ATTACHMENTS} ORDER BY attached_at"
INTERNAL_FIELDS = ("path", "format", "host")

# what the attach protocol does to attachment rows (reserved -> attached <-> detaching)
RESERVE = "INSERT INTO attachments (id, volume_id, server_id, attach_status, export)"
RESERVE += " VALUES (?, ?, ?, 'reserved', ?)"
UNRESERVE = "DELETE FROM attachments WHERE volume_id = ? AND attach_status = 'reserved'"
ATTACH = "UPDATE attachments SET attach_status = 'attached', host_name = ?, device = ?, attached_at = ?"
ATTACH += " WHERE id = ?"
BEGIN_DETACH = "UPDATE attachments SET attach_status = 'detaching' WHERE id = ?"
ROLL_DETACHING = (
    "UPDATE attachments SET attach_status = 'attached' WHERE volume_id = ? AND attach_status = 'detaching'"
)
DETACH = "DELETE FROM attachments WHERE id = ?"
ATTACHMENT_TO = (
    "SELECT id FROM attachments WHERE volume_id = ? AND server_id = ? AND attach_status != 'arriving'"
)
_EXPORT = (
    "SELECT a.export, v.host FROM attachments a JOIN volumes v ON v.id = a.volume_id WHERE a.volume_id = ?"
)
EXPORT_TO = _EXPORT + " AND a.server_id = ? AND a.attach_status != 'arriving'"
EXPORT_RESERVED = _EXPORT + " AND a.attach_status = 'reserved'"

# a change of a volume inside a transaction: gets the volume, answers its new status (None: same)
Step = Callable[[Db, Volume], Awaitable[VolumeStatus | None]]


def _attachment_view(row: AttachmentRow) -> Attachment:
    """An attachment as Cinder shows it (its ``id`` is the volume's, as in Cinder)."""
    return {
        "id": row["volume_id"],
        "attachment_id": row["id"],
        "volume_id": row["volume_id"],
        "server_id": row["server_id"],
        "host_name": row["host_name"],
        "device": row["device"],
        "attached_at": row["attached_at"],
    }


def _record(row: VolumeRow, attachments: list[AttachmentRow]) -> Volume:
    """The volume record: every column of its row, the fixed Cinder fields, its attachments."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "size": row["size"],
        "status": row["status"],
        "format": row["format"],
        "path": row["path"],
        "host": row["host"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "metadata": from_json(row["metadata"], {}),
        "fault": row["fault"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "availability_zone": AVAILABILITY_ZONE,
        "bootable": "true" if row["bootable"] else "false",
        "encrypted": False,
        "multiattach": False,
        "volume_type": row["volume_type"],
        "readonly": None if row["readonly"] is None else bool(row["readonly"]),
        "snapshot_id": row["snapshot_id"],
        "source_volid": row["source_volid"],
        "image_metadata": from_json(row["image_metadata"], None) if row["image_metadata"] else None,
        "attachments": [_attachment_view(attachment) for attachment in attachments],
    }


def _type_record(row: TypeRow) -> VolumeType:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "is_public": bool(row["is_public"]),
        "extra_specs": from_json(row["extra_specs"], {}),
    }


def _snapshot_record(row: SnapshotRow) -> Snapshot:
    return {**row, "metadata": from_json(row["metadata"], {})}


Listed = TypeVar("Listed", bound=Mapping[str, Any])
"""A volume or a snapshot, as lists give them."""


def _sorted(items: builtins.list[Listed], sort: builtins.list[Sort]) -> builtins.list[Listed]:
    """``items`` (newest first) in ``sort``'s order, the newest first where keys are equal
    (stable sorts, the last key first)."""
    ordered = builtins.list(items)
    for order in reversed(sort):
        key = order["key"]
        ordered.sort(key=lambda item: item[key], reverse=order["direction"] == "desc")
    return ordered


def _page(
    items: builtins.list[Listed], marker: str | None, offset: int, limit: int | None
) -> builtins.list[Listed]:
    """The items after ``marker`` (or from the ``offset``-th), at most ``limit`` and ``MAX_PAGE``.

    :raises NotFound: ``marker`` is none of them.
    """
    if marker is not None:
        ids = [item["id"] for item in items]
        if marker not in ids:
            raise NotFound(f"Marker {marker} could not be found.")
        offset = ids.index(marker) + 1
    size = MAX_PAGE if limit is None else min(limit, MAX_PAGE)
    return items[offset : offset + size]


def public_view(volume: Volume) -> dict[str, Any]:
    """The volume without the fields only the volume host needs (file path and format)."""
    return {key: value for key, value in volume.items() if key not in INTERNAL_FIELDS}


def _stored(volume_id: str, volume_format: VolumeFormat) -> StoredVolume:
    return {"volume_id": volume_id, "volume_format": volume_format}


def _export_name() -> str:
    """An attachment's NBD export name: random (96 bits), and a valid QMP id."""
    return "e" + secrets.token_hex(12)


def _check_found(volume_id: str, row: VolumeRow | None) -> VolumeRow:
    """The row if the caller may see it. :raises NotFound: missing or another project's."""
    if row is None:
        raise NotFound(f"Volume {volume_id} could not be found.")
    check_visible("Volume", volume_id, row["project_id"])
    return row


def _check_status(volume: Volume, status: VolumeStatus, purpose: str) -> None:
    """:raises Conflict: the volume is not in ``status`` (Cinder's InvalidVolume, 400 there: 409
    here, as for every request its resource's state refuses)."""
    if volume["status"] != status:
        raise Conflict(
            f"Invalid volume: Volume status must be {status} {purpose},"
            f" but current status is: {volume['status']}."
        )


async def _check_not_copied(db: Db, volume_id: str) -> None:
    """:raises Conflict: a snapshot or a volume is being copied from the volume's file."""
    copies = await db.fetchone(
        "SELECT (SELECT COUNT(*) FROM snapshots WHERE volume_id = ? AND status = 'creating')"
        " + (SELECT COUNT(*) FROM volumes WHERE source_volid = ? AND status = 'creating') AS n",
        (volume_id, volume_id),
    )
    if copies is not None and copies["n"]:
        raise Conflict(f"Invalid volume: Volume {volume_id} is being copied (a snapshot or a clone).")


async def _check_copyable(db: Db, table: str, source_id: str) -> None:
    """:raises Conflict: the volume or snapshot (``table``) is gone or not available (a volume
    may then be written to, a snapshot deleted)."""
    row = await db.fetchone(f"SELECT status FROM {table} WHERE id = ?", (source_id,))
    if row is None or row["status"] != "available":
        raise Conflict(f"Invalid source: {source_id} must be available to be copied.")


def _check_admin(action: str) -> None:
    """:raises Forbidden: the caller is a user and no admin."""
    ctx = caller()
    if ctx is not None and ctx.user_id is not None and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow {action} to be performed.")


def _scope(all_tenants: bool) -> tuple[str, tuple[Any, ...]]:
    """An SQL condition on ``v.project_id``: services see all, admins all with ``all_tenants``."""
    ctx = caller()
    if ctx is None or ctx.user_id is None or (all_tenants and ctx.is_admin):
        return "1 = 1", ()
    return "v.project_id = ?", (ctx.project_id,)


class VolumeActor(Actor, VolumeRecords):
    name = "volume"
    orphan_sweep_interval = ORPHAN_SWEEP_INTERVAL

    def __init__(
        self, bus: Bus, config: Config, *, host: str = LOCAL_STORAGE, nbd_listen: str | None = None
    ) -> None:
        """``host``: the storage host this actor runs on (its volumes' files are made here, and
        its ``StorageActor`` serves them); ``nbd_listen`` (``ADDRESS[:PORT]``): the files are
        reached as NBD exports served there, from any host (``actors.nbd``), not as files."""
        super().__init__(bus)
        self.host = host
        self.store = open_store(config, "volume", MIGRATIONS)
        self.storage = StorageActor(bus, config, host=host, nbd_listen=nbd_listen)
        self.serve(NodeVolumes(self, Placements(bus)), VolumeQuotaBook(self.store))

    async def on_start(self) -> None:
        await self.storage.start()
        await self.store.open()
        await self._keep_exports()
        self.spawn(
            sweep_orphans_forever(
                self.bus,
                self._attached_instances,
                self._detach_orphan,
                "volume attachments",
                self.orphan_sweep_interval,
            ),
            name="volume-orphans",
        )

    async def _attached_instances(self, among: Sequence[str] | None) -> list[str]:
        """The instances with volumes attached: all, or those ``among`` these."""
        where = "" if among is None else f" WHERE server_id IN ({', '.join('?' * len(among))})"
        rows = await self.store.fetchall(
            f"SELECT DISTINCT server_id FROM attachments{where}", list(among or ())
        )
        return [row["server_id"] for row in rows]

    async def _detach_orphan(self, instance_uuid: str) -> Detached:
        return await self.detach_all(instance_uuid=instance_uuid)

    async def on_stop(self) -> None:
        await self.store.close()
        await self.storage.stop()

    # -- the storage hosts ----------------------------------------------------------------

    def _storage_of(self, host: str) -> VolumeStorage:
        """The storage host a volume lives on (``''``: one of an earlier version, this host's)."""
        return VolumeStorage.client(self.bus, host=host or self.host)

    async def _keep_exports(self) -> None:
        """Have this host's storage export every recorded attachment of its volumes, and nothing
        else (a restarted actor: the daemon's exports outlive it)."""
        rows = await self.store.fetchall(
            "SELECT a.export, v.id, v.format, v.readonly"
            " FROM attachments a JOIN volumes v ON v.id = a.volume_id"
            " WHERE a.export != '' AND v.host IN (?, '')",
            (self.host,),
        )
        exports = {row["export"]: _stored(row["id"], row["format"]) for row in rows}
        readonly = [row["export"] for row in rows if row["readonly"]]
        await self._storage_of(self.host).keep_exports(exports=exports, readonly=readonly)

    async def _connection(self, volume: Volume, export: str) -> Connection:
        """How a node reaches the volume for the attachment whose export name is ``export``.

        :raises Conflict: its storage host could not export it.
        """
        stored = _stored(volume["id"], volume["format"])
        readonly = bool(volume["readonly"])
        return await self._storage_of(volume["host"]).connect(volume=stored, export=export, readonly=readonly)

    async def _unexport(self, export: tuple[str, str] | None) -> None:
        """End an attachment's export, given as (name, storage host); logged, not raised: the
        attachment is gone already, and its host's next start ends the export if this failed."""
        if export is None or not export[0]:
            return
        try:
            await self._storage_of(export[1]).unexport(export=export[0])
        except AiostackError as exc:
            log.warning("volume: export %s on %s not ended: %s", export[0][:5], export[1], exc)

    async def _export_of(self, sql: str, params: tuple[Any, ...]) -> tuple[str, str] | None:
        row = await self.store.fetchone(sql, params)
        return (row["export"], row["host"]) if row is not None else None

    # -- helpers --------------------------------------------------------------------------

    async def _publish(self, volume: Volume, **changes: Any) -> None:
        """Publish ``volume.<status>`` with the volume as users see it (``changes`` applied)."""
        state = {**public_view(volume), **changes}
        await publish_event(
            self.bus, "volume", volume["id"], volume["project_id"], f"volume.{state['status']}", state
        )

    async def _load(self, db: Db, volume_id: str) -> Volume:
        """A visible volume's record inside a transaction. :raises NotFound:"""
        row = await db.fetchone("SELECT * FROM volumes WHERE id = ?", (volume_id,), row=VolumeRow)
        found = _check_found(volume_id, row)
        return _record(found, await db.fetchall(ATTACHMENTS_OF, (volume_id,), row=AttachmentRow))

    async def _change(self, volume_id: str, step: Step) -> Volume:
        """Run ``step`` on a visible volume in one transaction; write and publish a new status."""
        async with self.store.transaction() as db:
            status = await step(db, await self._load(db, volume_id))
            if status is not None:
                await db.execute(
                    "UPDATE volumes SET status = ?, updated_at = ? WHERE id = ?",
                    (status, utcnow(), volume_id),
                )
            volume = await self._load(db, volume_id)
        if status is not None:
            await self._publish(volume)
        return volume

    async def _set_status(self, volume_id: str, status: VolumeStatus, fault: str | None = None) -> Volume:
        async def step(db: Db, volume: Volume) -> VolumeStatus:
            await db.execute("UPDATE volumes SET fault = ? WHERE id = ?", (fault, volume_id))
            return status

        return await self._change(volume_id, step)

    # -- volumes --------------------------------------------------------------------------

    async def create(
        self,
        *,
        size: int | None = None,
        name: str = "",
        description: str = "",
        volume_format: VolumeFormat = "raw",
        metadata: dict[str, str] | None = None,
        volume_type: str | None = None,
        snapshot_id: str | None = None,
        source_volid: str | None = None,
        image_id: str | None = None,
    ) -> Volume:
        """Make a volume, empty, a copy of a source or an image (``api.volume.Volumes.create``)."""
        if sum(source is not None for source in (snapshot_id, source_volid, image_id)) > 1:
            raise InvalidRequest(
                "Invalid input received: a volume is made from one of a snapshot, a volume or an image."
            )
        type_name = (await self.get_type(type_id=volume_type or DEFAULT_TYPE))["name"]
        source = await self._source(snapshot_id, source_volid)
        if source is None and size is None:
            raise InvalidRequest("Invalid input received: a volume without a source needs a size.")
        if source is not None:
            volume_format = source["format"]
            if size is not None and size < source["size"]:
                raise Conflict(
                    f"Invalid input received: the volume's size ({size} GiB) is smaller than its"
                    f" source's ({source['size']} GiB)."
                )
        elif (volume_format == "qcow2" or image_id is not None) and not qcow2_supported():  # this host's
            raise InvalidRequest("qcow2 volumes and volumes from images need qemu-img, not installed here")
        size = size or (source["size"] if source else 1)
        image_metadata = await self._image_metadata(image_id, size) if image_id is not None else None
        volume = await self._insert(
            size,
            name,
            description,
            volume_format,
            metadata,
            type_name,
            snapshot_id,
            source_volid,
            source,
            bootable=image_id is not None or await self._bootable(source),
            image_metadata=image_metadata,
        )
        try:
            path = await self._make_file(volume, source, image_id)
        except AiostackError as exc:
            log.warning("volume %s: could not create its file: %s", volume["id"], exc)
            return await self._set_status(volume["id"], "error", f"could not create the volume file: {exc}")
        await self.store.execute("UPDATE volumes SET path = ? WHERE id = ?", (path, volume["id"]))
        return await self._set_status(volume["id"], "available")

    async def _make_file(self, volume: Volume, source: Snapshot | Volume | None, image_id: str | None) -> str:
        """Have the storage host make a new volume's file (a copy of ``source``'s, the image, or
        empty); its path. :raises AiostackError: it could not."""
        stored = _stored(volume["id"], volume["format"])
        storage = self._storage_of(volume["host"])
        if source is not None:
            from_file = _stored(source["id"], source["format"])
            return await storage.copy_file(source=from_file, volume=stored, size=volume["size"])
        if image_id is not None:
            return await storage.copy_image(image_id=image_id, volume=stored, size=volume["size"])
        return await storage.make_file(volume=stored, size=volume["size"])

    async def _bootable(self, source: Snapshot | Volume | None) -> bool:
        """Whether a copy of ``source`` is bootable: its volume is (a snapshot's: the volume it was
        taken of, which stays as long as it has snapshots)."""
        if source is None:
            return False
        taken_of = source.get("volume_id")
        volume = await self.get(volume_id=taken_of) if isinstance(taken_of, str) else source
        return volume.get("bootable") == "true"

    async def _image_metadata(self, image_id: str, size: int) -> dict[str, str]:
        """What a volume made from the image shows of it (Cinder's ``volume_image_metadata``): its
        properties (a kernel and ramdisk, a disk bus: what a server booted from the volume boots
        with), then its own fields.

        :raises NotFound: the caller sees no such image.
        :raises Conflict: it is not active, or asks for a disk bigger than ``size`` GiB (its ``min_disk``).
        """
        image = await ImageReader.client(self.bus).get(image_id=image_id)
        if image["status"] != "active":
            raise Conflict(f"Image {image_id} is not active.")
        if image["min_disk"] > size:
            raise Conflict(
                f"Invalid input received: Volume size {size}GB cannot be smaller than the image minDisk"
                f" size {image['min_disk']}GB."
            )
        return image["properties"] | {
            "image_id": image_id,
            "image_name": image["name"] or "",
            "checksum": image["checksum"] or "",
            "container_format": image["container_format"],
            "disk_format": image["disk_format"],
            "min_disk": str(image["min_disk"]),
            "min_ram": str(image["min_ram"]),
            "size": str(image["size"] or 0),
        }

    async def _source(self, snapshot_id: str | None, source_volid: str | None) -> Snapshot | Volume | None:
        """The snapshot or volume a volume is made from, available.

        :raises NotFound: no such snapshot or volume visible to the caller.
        :raises Conflict: it is not available.
        """
        source: Snapshot | Volume
        if snapshot_id is not None:
            source = await self.get_snapshot(snapshot_id=snapshot_id)
        elif source_volid is not None:
            source = await self.get(volume_id=source_volid)
        else:
            return None
        if source["status"] != "available":
            raise Conflict(f"Invalid source: {source['id']} is {source['status']}; it must be available.")
        return source

    async def _insert(
        self,
        size: int,
        name: str,
        description: str,
        volume_format: VolumeFormat,
        metadata: dict[str, str] | None,
        volume_type: str,
        snapshot_id: str | None,
        source_volid: str | None,
        source: Snapshot | Volume | None,
        *,
        bootable: bool,
        image_metadata: dict[str, str] | None,
    ) -> Volume:
        """Record a new volume, creating, on its source's storage host (else this one); publish it.

        :raises Conflict: the source is no longer available (a volume copied must stay so).
        """
        ctx = caller()
        volume_id = new_uuid()
        now = utcnow()
        owner = (ctx.user_id, ctx.project_id) if ctx else (None, None)
        host = source["host"] or self.host if source else self.host
        row = (volume_id, name, description, size, volume_format, "", *owner, to_json(metadata or {}))
        async with self.store.transaction() as db:
            if source is not None:  # the copy is made while the source is available: keep it so
                await _check_copyable(db, "volumes" if source_volid else "snapshots", source["id"])
            await check_volume(db, owner[1], size)
            await db.execute(
                "INSERT INTO volumes (id, name, description, size, format, path, user_id, project_id,"
                " metadata, status, host, created_at, updated_at, volume_type, snapshot_id, source_volid,"
                " bootable, image_metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *row,
                    *(host, now, now, volume_type, snapshot_id, source_volid, int(bootable)),
                    None if image_metadata is None else to_json(image_metadata),
                ),
            )
            volume = await self._load(db, volume_id)
        await self._publish(volume)
        return volume

    async def get(self, *, volume_id: str) -> Volume:
        """One volume (``api.volume.VolumeAttachments.get``)."""
        row = await self.store.fetchone("SELECT * FROM volumes WHERE id = ?", (volume_id,), row=VolumeRow)
        found = _check_found(volume_id, row)
        return _record(found, await self.store.fetchall(ATTACHMENTS_OF, (volume_id,), row=AttachmentRow))

    async def update(
        self,
        *,
        volume_id: str,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Volume:
        """Rename or redescribe a volume, replace its metadata (``api.volume.Volumes.update``)."""

        async def step(db: Db, volume: Volume) -> None:
            await db.execute(
                "UPDATE volumes SET name = COALESCE(?, name), description = COALESCE(?, description),"
                " metadata = COALESCE(?, metadata), updated_at = ? WHERE id = ?",
                (name, description, None if metadata is None else to_json(metadata), utcnow(), volume_id),
            )

        return await self._change(volume_id, step)

    async def set_metadata(
        self, *, volume_id: str, metadata: dict[str, str], replace: bool = False
    ) -> dict[str, str]:
        """Merge or replace a volume's metadata (``api.volume.Volumes.set_metadata``)."""

        async def step(db: Db, volume: Volume) -> None:
            merged = metadata if replace else {**volume["metadata"], **metadata}
            await db.execute(
                "UPDATE volumes SET metadata = ?, updated_at = ? WHERE id = ?",
                (to_json(merged), utcnow(), volume_id),
            )

        return (await self._change(volume_id, step))["metadata"]

    async def delete_metadata(self, *, volume_id: str, key: str) -> None:
        """Remove one metadata item (``api.volume.Volumes.delete_metadata``)."""

        async def step(db: Db, volume: Volume) -> None:
            if key not in volume["metadata"]:
                raise NotFound(f"Volume {volume_id} has no metadata with key {key}.")
            kept = {name: value for name, value in volume["metadata"].items() if name != key}
            await db.execute(
                "UPDATE volumes SET metadata = ?, updated_at = ? WHERE id = ?",
                (to_json(kept), utcnow(), volume_id),
            )

        await self._change(volume_id, step)

    async def set_bootable(self, *, volume_id: str, bootable: bool) -> Volume:
        """``api.volume.Volumes.set_bootable``."""

        async def step(db: Db, volume: Volume) -> None:
            await db.execute(
                "UPDATE volumes SET bootable = ?, updated_at = ? WHERE id = ?",
                (int(bootable), utcnow(), volume_id),
            )

        return await self._change(volume_id, step)

    async def set_readonly(self, *, volume_id: str, readonly: bool) -> Volume:
        """``api.volume.Volumes.set_readonly``: available volumes only, so no attachment was made
        with the other mode."""

        async def step(db: Db, volume: Volume) -> None:
            _check_status(volume, "available", "to update readonly flag")
            await db.execute(
                "UPDATE volumes SET readonly = ?, updated_at = ? WHERE id = ?",
                (int(readonly), utcnow(), volume_id),
            )

        return await self._change(volume_id, step)

    async def extend(self, *, volume_id: str, new_size: int) -> Volume:
        """Available -> extending -> available, the file grown (``api.volume.Volumes.extend``)."""

        async def step(db: Db, volume: Volume) -> VolumeStatus:
            _check_status(volume, "available", "to extend")
            await _check_not_copied(db, volume_id)
            if new_size <= volume["size"]:
                raise Conflict(
                    f"Invalid input received: New size for extend must be greater than current size."
                    f" (current: {volume['size']}, extended: {new_size})."
                )
            await check_extend(db, volume["project_id"], volume["size"], new_size)
            await db.execute("UPDATE volumes SET extending_to = ? WHERE id = ?", (new_size, volume_id))
            return "extending"

        volume = await self._change(volume_id, step)
        try:
            await self._storage_of(volume["host"]).extend_file(
                volume=_stored(volume_id, volume["format"]), size=new_size
            )
        except AiostackError as exc:
            log.warning("volume %s: could not extend its file: %s", volume_id, exc)
            await self._end_extend(volume_id, volume["size"], volume["fault"])
            raise Conflict(f"Volume {volume_id} could not be extended: {exc}") from None
        return await self._end_extend(volume_id, new_size, volume["fault"])

    async def _end_extend(self, volume_id: str, size: int, fault: str | None) -> Volume:
        """Extending -> available at ``size`` GiB, the growth no longer reserved."""

        async def step(db: Db, volume: Volume) -> VolumeStatus:
            await db.execute(
                "UPDATE volumes SET size = ?, extending_to = NULL, fault = ? WHERE id = ?",
                (size, fault, volume_id),
            )
            return "available"

        return await self._change(volume_id, step)

    async def reserve_volume(self, *, volume_id: str) -> Volume:
        """Available -> attaching for no instance (``api.volume.Volumes.reserve_volume``)."""

        async def step(db: Db, volume: Volume) -> VolumeStatus:
            _check_status(volume, "available", "to be reserved")
            await _check_not_copied(db, volume_id)
            return "attaching"

        return await self._change(volume_id, step)

    async def begin_detaching(self, *, volume_id: str) -> Volume:
        """In-use -> detaching (``api.volume.Volumes.begin_detaching``)."""

        async def step(db: Db, volume: Volume) -> VolumeStatus:
            _check_status(volume, "in-use", "to begin detaching")
            await db.execute(
                "UPDATE attachments SET attach_status = 'detaching'"
                " WHERE volume_id = ? AND attach_status = 'attached'",
                (volume_id,),
            )
            return "detaching"

        return await self._change(volume_id, step)

    async def delete(self, *, volume_id: str) -> None:
        """Remove a volume and its file (``api.volume.Volumes.delete``).

        A volume in error_deleting (its file could not be removed) may be deleted again.
        """

        async def step(db: Db, volume: Volume) -> VolumeStatus:
            if volume["status"] not in DELETABLE:
                raise Conflict(
                    "Invalid volume: Volume status must be available or error and must not be attached,"
                    f" but current status is: {volume['status']}."
                )
            snapshots = await db.fetchone(
                "SELECT COUNT(*) AS n FROM snapshots WHERE volume_id = ?", (volume_id,)
            )
            if snapshots is not None and snapshots["n"]:
                raise Conflict(f"Invalid volume: Volume still has {snapshots['n']} dependent snapshots.")
            await _check_not_copied(db, volume_id)
            return "deleting"

        volume = await self._change(volume_id, step)
        try:
            await self._storage_of(volume["host"]).remove_file(volume=_stored(volume_id, volume["format"]))
        except AiostackError as exc:
            log.warning("volume %s: could not remove its file: %s", volume_id, exc)
            fault = f"could not remove the volume file: {exc}"
            await self._set_status(volume_id, "error_deleting", fault)
            raise AiostackError(f"Volume {volume_id}: {fault}") from None
        await self.store.execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
        await self._publish(volume, status="deleted", updated_at=utcnow())

    async def list(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        metadata: dict[str, str] | None = None,
        bootable: bool | None = None,
        availability_zone: str | None = None,
        all_tenants: bool = False,
        sort: builtins.list[Sort] | None = None,
        limit: int | None = None,
        marker: str | None = None,
        offset: int = 0,
    ) -> builtins.list[Volume]:
        """The caller's volumes, filtered, sorted, a page (``api.volume.Volumes.list``)."""
        condition, scope_params = _scope(all_tenants)
        clauses, params = [condition], [*scope_params]
        for column, value in (("name", name), ("status", status), ("bootable", bootable)):
            if value is not None:
                clauses.append(f"v.{column} = ?")
                params.append(int(value) if isinstance(value, bool) else value)
        if availability_zone not in (None, AVAILABILITY_ZONE):
            clauses.append("1 = 0")
        where = " AND ".join(clauses)
        rows = await self.store.fetchall(
            f"SELECT v.* FROM volumes v WHERE {where} ORDER BY v.created_at DESC, v.id", params, row=VolumeRow
        )
        wanted = (metadata or {}).items()
        volumes = [_record(row, []) for row in rows]
        volumes = [volume for volume in volumes if wanted <= volume["metadata"].items()]
        page = _page(_sorted(volumes, sort or []), marker, offset, limit)
        attachments: dict[str, builtins.list[AttachmentRow]] = {}
        ids = [volume["id"] for volume in page]
        for attachment in await self.store.fetchall(
            f"SELECT * FROM attachments WHERE volume_id IN ({', '.join('?' * len(ids)) or 'NULL'})"
            f" AND {SHOWN_ATTACHMENTS} ORDER BY attached_at",
            ids,
            row=AttachmentRow,
        ):
            attachments.setdefault(attachment["volume_id"], []).append(attachment)
        return [
            {**volume, "attachments": [_attachment_view(a) for a in attachments.get(volume["id"], [])]}
            for volume in page
        ]

    # -- volume types ---------------------------------------------------------------------

    async def list_types(self) -> builtins.list[VolumeType]:
        """``api.volume.Volumes.list_types``."""
        rows = await self.store.fetchall(
            "SELECT * FROM volume_types ORDER BY name != ?, name", (DEFAULT_TYPE,), row=TypeRow
        )
        return [_type_record(row) for row in rows]

    async def get_type(self, *, type_id: str) -> VolumeType:
        """``api.volume.Volumes.get_type``: by id, else by name."""
        row = await self.store.fetchone(
            "SELECT * FROM volume_types WHERE id = ? OR name = ? ORDER BY id = ? DESC",
            (type_id, type_id, type_id),
            row=TypeRow,
        )
        if row is None:
            raise NotFound(f"Volume type {type_id} could not be found.")
        return _type_record(row)

    async def create_type(
        self,
        *,
        name: str,
        description: str | None = None,
        is_public: bool = True,
        extra_specs: dict[str, str] | None = None,
    ) -> VolumeType:
        """``api.volume.Volumes.create_type``."""
        _check_admin("volume_extension:types_manage")
        type_id = new_uuid()
        async with self.store.transaction() as db:
            if await db.fetchone("SELECT id FROM volume_types WHERE name = ?", (name,)) is not None:
                raise Conflict(f"Volume Type {name} already exists.")
            await db.execute(
                "INSERT INTO volume_types (id, name, description, is_public, extra_specs)"
                " VALUES (?, ?, ?, ?, ?)",
                (type_id, name, description, int(is_public), to_json(extra_specs or {})),
            )
        return await self.get_type(type_id=type_id)

    async def delete_type(self, *, type_id: str) -> None:
        """``api.volume.Volumes.delete_type``."""
        _check_admin("volume_extension:types_manage")
        async with self.store.transaction() as db:
            row = await db.fetchone("SELECT * FROM volume_types WHERE id = ?", (type_id,), row=TypeRow)
            if row is None:
                raise NotFound(f"Volume type {type_id} could not be found.")
            if row["name"] == DEFAULT_TYPE:
                raise Conflict("Default volume type can not be deleted.")
            if await db.fetchone("SELECT id FROM volumes WHERE volume_type = ?", (row["name"],)) is not None:
                raise Conflict(
                    f"Volume Type {type_id} deletion is not allowed with volumes present with the type."
                )
            await db.execute("DELETE FROM volume_types WHERE id = ?", (type_id,))

    # -- snapshots ------------------------------------------------------------------------

    async def create_snapshot(
        self, *, volume_id: str, name: str = "", description: str = "", metadata: dict[str, str] | None = None
    ) -> Snapshot:
        """Copy an available volume's file (``api.volume.Volumes.create_snapshot``)."""
        ctx = caller()
        snapshot_id = new_uuid()
        now = utcnow()
        owner = (ctx.user_id, ctx.project_id) if ctx else (None, None)
        async with self.store.transaction() as db:
            volume = await self._load(db, volume_id)
            _check_status(volume, "available", "to be snapshotted")
            await check_snapshot(db, owner[1], volume["size"])
            await db.execute(
                "INSERT INTO snapshots (id, volume_id, name, description, size, status, metadata, user_id,"
                " project_id, host, format, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?)",
                (snapshot_id, volume_id, name, description, volume["size"], to_json(metadata or {}), *owner,
                 volume["host"] or self.host, volume["format"], now, now),
            )  # fmt: skip
        stored = _stored(snapshot_id, volume["format"])
        try:
            await self._storage_of(volume["host"]).copy_file(
                source=_stored(volume_id, volume["format"]), volume=stored, size=volume["size"]
            )
        except AiostackError as exc:
            log.warning("snapshot %s: could not copy volume %s: %s", snapshot_id, volume_id, exc)
            return await self._set_snapshot_status(
                snapshot_id, "error", f"could not copy the volume file: {exc}"
            )
        return await self._set_snapshot_status(snapshot_id, "available")

    async def _set_snapshot_status(
        self, snapshot_id: str, status: SnapshotStatus, fault: str | None = None
    ) -> Snapshot:
        await self.store.execute(
            "UPDATE snapshots SET status = ?, fault = ?, updated_at = ? WHERE id = ?",
            (status, fault, utcnow(), snapshot_id),
        )
        return await self.get_snapshot(snapshot_id=snapshot_id)

    async def _load_snapshot(self, db: Db, snapshot_id: str) -> Snapshot:
        """A visible snapshot. :raises NotFound: missing or another project's."""
        row = await db.fetchone("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,), row=SnapshotRow)
        if row is None:
            raise NotFound(f"Snapshot {snapshot_id} could not be found.")
        check_visible("Snapshot", snapshot_id, row["project_id"])
        return _snapshot_record(row)

    async def get_snapshot(self, *, snapshot_id: str) -> Snapshot:
        """``api.volume.Volumes.get_snapshot``."""
        async with self.store.transaction() as db:
            return await self._load_snapshot(db, snapshot_id)

    async def update_snapshot(
        self,
        *,
        snapshot_id: str,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        replace_metadata: bool = True,
    ) -> Snapshot:
        """``api.volume.Volumes.update_snapshot``."""
        async with self.store.transaction() as db:
            snapshot = await self._load_snapshot(db, snapshot_id)
            if metadata is not None and not replace_metadata:
                metadata = {**snapshot["metadata"], **metadata}
            await db.execute(
                "UPDATE snapshots SET name = COALESCE(?, name), description = COALESCE(?, description),"
                " metadata = COALESCE(?, metadata), updated_at = ? WHERE id = ?",
                (name, description, None if metadata is None else to_json(metadata), utcnow(), snapshot_id),
            )
            return await self._load_snapshot(db, snapshot_id)

    async def delete_snapshot_metadata(self, *, snapshot_id: str, key: str) -> None:
        """``api.volume.Volumes.delete_snapshot_metadata``."""
        async with self.store.transaction() as db:
            snapshot = await self._load_snapshot(db, snapshot_id)
            if key not in snapshot["metadata"]:
                raise NotFound(f"Snapshot {snapshot_id} has no metadata with key {key}.")
            kept = {name: value for name, value in snapshot["metadata"].items() if name != key}
            await db.execute(
                "UPDATE snapshots SET metadata = ?, updated_at = ? WHERE id = ?",
                (to_json(kept), utcnow(), snapshot_id),
            )

    async def delete_snapshot(self, *, snapshot_id: str) -> None:
        """``api.volume.Volumes.delete_snapshot``: deleting -> gone."""
        async with self.store.transaction() as db:
            snapshot = await self._load_snapshot(db, snapshot_id)
            if snapshot["status"] in ("creating", "deleting"):
                raise Conflict(
                    "Invalid snapshot: Snapshot status must be available or error,"
                    f" but current status is: {snapshot['status']}."
                )
            copies = await db.fetchone(
                "SELECT COUNT(*) AS n FROM volumes WHERE snapshot_id = ? AND status = 'creating'",
                (snapshot_id,),
            )
            if copies is not None and copies["n"]:
                raise Conflict(f"Invalid snapshot: volumes are being made from snapshot {snapshot_id}.")
            await db.execute(
                "UPDATE snapshots SET status = 'deleting', updated_at = ? WHERE id = ?",
                (utcnow(), snapshot_id),
            )
        try:
            await self._storage_of(snapshot["host"]).remove_file(
                volume=_stored(snapshot_id, snapshot["format"])
            )
        except AiostackError as exc:
            log.warning("snapshot %s: could not remove its file: %s", snapshot_id, exc)
            fault = f"could not remove the snapshot file: {exc}"
            await self._set_snapshot_status(snapshot_id, "error_deleting", fault)
            raise AiostackError(f"Snapshot {snapshot_id}: {fault}") from None
        await self.store.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    async def list_snapshots(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        volume_id: str | None = None,
        all_tenants: bool = False,
        sort: builtins.list[Sort] | None = None,
        limit: int | None = None,
        marker: str | None = None,
        offset: int = 0,
    ) -> builtins.list[Snapshot]:
        """``api.volume.Volumes.list_snapshots``."""
        unknown = [order["key"] for order in sort or [] if order["key"] not in SNAPSHOT_SORT_KEYS]
        if unknown:
            raise InvalidRequest(f"Invalid input received: snapshots are not sorted by {unknown[0]}.")
        condition, params = _scope(all_tenants)
        clauses, values = [condition], [*params]
        for column, value in (("name", name), ("status", status), ("volume_id", volume_id)):
            if value is not None:
                clauses.append(f"v.{column} = ?")
                values.append(value)
        rows = await self.store.fetchall(
            f"SELECT v.* FROM snapshots v WHERE {' AND '.join(clauses)} ORDER BY v.created_at DESC, v.id",
            values,
            row=SnapshotRow,
        )
        return _page(_sorted([_snapshot_record(row) for row in rows], sort or []), marker, offset, limit)

    # -- the attach protocol --------------------------------------------------------------

    async def _move(
        self,
        volume_id: str,
        source: VolumeStatus,
        target: VolumeStatus,
        sql: str,
        params: tuple[Any, ...],
        *,
        instance_uuid: str | None = None,
        settled: VolumeStatus | None = None,
        guard: Callable[[Db, str], Awaitable[None]] | None = None,
    ) -> Volume:
        """Move a volume from status ``source`` to ``target``, running ``sql`` on its attachments.

        With ``instance_uuid`` the volume must have an attachment to that instance, whose id
        is the last parameter of ``sql``. A volume already ``settled`` is left as it is, so
        that retries and rollbacks are idempotent. ``guard`` may refuse the move (it raises).

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is not in ``source`` status.
        """

        async def step(db: Db, volume: Volume) -> VolumeStatus | None:
            if volume["status"] == settled:
                return None
            arguments = params
            if instance_uuid is not None:
                attachment = await db.fetchone(ATTACHMENT_TO, (volume_id, instance_uuid))
                if attachment is None:
                    raise NotFound(f"Volume {volume_id} is not attached to instance {instance_uuid}.")
                arguments = (*params, attachment["id"])
            if volume["status"] != source:
                raise Conflict(
                    f"Volume {volume_id} is {volume['status']}; it must be {source} to become {target}."
                )
            if guard is not None:
                await guard(db, volume_id)
            await db.execute(sql, arguments)
            return target

        return await self._change(volume_id, step)

    async def reserve(self, *, volume_id: str, instance_uuid: str) -> Connected:
        """Available -> attaching, for ``instance_uuid`` (``api.volume.VolumeAttacher.reserve``).

        :raises Conflict: the volume is not available, or could not be exported (it stays available).
        """
        export = _export_name()
        volume = await self._move(
            volume_id,
            "available",
            "attaching",
            RESERVE,
            (new_uuid(), volume_id, instance_uuid, export),
            guard=_check_not_copied,
        )
        try:
            connection = await self._connection(volume, export)
        except AiostackError:
            await self.unreserve(volume_id=volume_id)
            raise
        return {"volume": volume, "connection": connection}

    async def unreserve(self, *, volume_id: str) -> Volume:
        """Attaching -> available; idempotent (``api.volume.VolumeAttachments.unreserve``)."""
        export = await self._export_of(EXPORT_RESERVED, (volume_id,))
        volume = await self._move(
            volume_id, "attaching", "available", UNRESERVE, (volume_id,), settled="available"
        )
        await self._unexport(export)
        return volume

    async def attach_complete(self, *, volume_id: str, instance_uuid: str, host: str, device: str) -> Volume:
        """Attaching -> in-use (``api.volume.VolumeAttacher.attach_complete``)."""
        arguments = (host, device, utcnow())
        return await self._move(
            volume_id, "attaching", "in-use", ATTACH, arguments, instance_uuid=instance_uuid
        )

    async def begin_detach(self, *, volume_id: str, instance_uuid: str) -> Connected:
        """In-use -> detaching (``api.volume.VolumeAttachments.begin_detach``)."""
        volume = await self._move(
            volume_id, "in-use", "detaching", BEGIN_DETACH, (), instance_uuid=instance_uuid
        )
        export = await self._export_of(EXPORT_TO, (volume_id, instance_uuid))
        return {"volume": volume, "connection": await self._connection(volume, export[0] if export else "")}

    async def roll_detaching(self, *, volume_id: str) -> Volume:
        """Detaching -> in-use; idempotent (``api.volume.VolumeAttachments.roll_detaching``)."""
        return await self._move(
            volume_id, "detaching", "in-use", ROLL_DETACHING, (volume_id,), settled="in-use"
        )

    async def detach_complete(self, *, volume_id: str, instance_uuid: str) -> Volume:
        """Detaching -> available; idempotent (``api.volume.VolumeAttachments.detach_complete``)."""
        export = await self._export_of(EXPORT_TO, (volume_id, instance_uuid))
        volume = await self._move(
            volume_id, "detaching", "available", DETACH, (), instance_uuid=instance_uuid, settled="available"
        )
        await self._unexport(export)
        return volume

    async def detach_all(self, *, instance_uuid: str) -> Detached:
        """Free every volume of a deleted instance (``api.volume.VolumeAttacher.detach_all``)."""
        condition, params = _scope(all_tenants=True)
        async with self.store.transaction() as db:
            rows = await db.fetchall(
                "SELECT DISTINCT v.id, v.host, a.export"
                " FROM volumes v JOIN attachments a ON a.volume_id = v.id"
                f" WHERE a.server_id = ? AND {condition} ORDER BY v.id",
                (instance_uuid, *params),
            )
            volumes = []
            for row in rows:
                await db.execute(
                    "DELETE FROM attachments WHERE volume_id = ? AND server_id = ?",
                    (row["id"], instance_uuid),
                )
                await db.execute(
                    "UPDATE volumes SET status = 'available', updated_at = ? WHERE id = ?",
                    (utcnow(), row["id"]),
                )
                volumes.append(await self._load(db, row["id"]))
        for row in rows:
            await self._unexport((row["export"], row["host"]))
        for volume in volumes:
            await self._publish(volume)
        return {"detached": [volume["id"] for volume in volumes]}

    async def attach_offloaded(self, *, volume_id: str, instance_uuid: str) -> Volume:
        """Attaching -> in-use on no host (``api.volume.VolumeAttachments.attach_offloaded``)."""
        volume = await self._move(
            volume_id, "attaching", "in-use", ATTACH, (None, None, utcnow()), instance_uuid=instance_uuid
        )
        await self.release_host(instance_uuid=instance_uuid)
        return volume

    async def release_host(self, *, instance_uuid: str) -> builtins.list[str]:
        """The instance's attachments kept with no host, their exports ended
        (``api.volume.VolumeAttachments.release_host``)."""
        async with self.store.transaction() as db:
            rows = await db.fetchall(
                "SELECT a.id, a.volume_id, a.export, v.host FROM attachments a"
                " JOIN volumes v ON v.id = a.volume_id WHERE a.server_id = ? AND a.attach_status = 'attached'"
                " ORDER BY a.volume_id",
                (instance_uuid,),
            )
            for row in rows:  # a name no storage host exports yet (a detach's connection exports it)
                await db.execute(
                    "UPDATE attachments SET host_name = NULL, export = ? WHERE id = ?",
                    (_export_name(), row["id"]),
                )
        for row in rows:
            await self._unexport((row["export"], row["host"]))
        return [row["volume_id"] for row in rows]

    async def reattach_all(self, *, instance_uuid: str, host: str) -> builtins.list[Reattached]:
        """The instance's attached volumes, their attachments moved to ``host``
        (``api.volume.VolumeAttacher.reattach_all``: the caller checked the instance is there)."""
        async with self.store.transaction() as db:
            ended = await _settle_arriving(db, instance_uuid, host)
            attachments = await db.fetchall(
                "SELECT * FROM attachments WHERE server_id = ? AND attach_status = 'attached'"
                " ORDER BY attached_at, volume_id",
                (instance_uuid,),
                row=AttachmentRow,
            )
            volumes: builtins.list[tuple[Volume, str, str]] = []
            for attachment in attachments:
                volume_row = await db.fetchone(
                    "SELECT * FROM volumes WHERE id = ?", (attachment["volume_id"],), row=VolumeRow
                )
                if volume_row is None:
                    continue
                export = attachment["export"]
                if attachment["host_name"] != host:
                    if export:
                        ended.append((export, volume_row["host"]))
                        export = _export_name()
                    await db.execute(
                        "UPDATE attachments SET host_name = ?, export = ? WHERE id = ?",
                        (host, export, attachment["id"]),
                    )
                volumes.append((_record(volume_row, []), export, attachment["device"] or ""))
        for old in ended:
            await self._unexport(old)
        reattached: builtins.list[Reattached] = []
        for volume, export, device in volumes:
            connection = await self._connection(volume, export)
            reattached.append({"volume": volume, "device": device, "connection": connection})
        if attachments:
            log.info("volume: %d attachment(s) of %s made again for %s", len(reattached), instance_uuid, host)
        return reattached

    async def attach_arriving(self, *, instance_uuid: str, host: str) -> builtins.list[Reattached]:
        """``api.volume.VolumeAttachments.attach_arriving``: a second attachment per volume, for ``host``."""
        async with self.store.transaction() as db:
            rows = await db.fetchall(
                "SELECT * FROM attachments WHERE server_id = ? AND attach_status IN ('attached', 'arriving')"
                " ORDER BY attached_at, volume_id",
                (instance_uuid,),
                row=AttachmentRow,
            )
            arriving = {
                row["volume_id"]: row
                for row in rows
                if row["attach_status"] == "arriving" and row["host_name"] == host
            }
            for row in rows:
                if row["attach_status"] != "attached" or row["volume_id"] in arriving:
                    continue
                made: AttachmentRow = {
                    **row,
                    "id": new_uuid(),
                    "attach_status": "arriving",
                    "host_name": host,
                    "export": _export_name() if row["export"] else "",
                }
                await db.execute(
                    "INSERT INTO attachments (id, volume_id, server_id, attach_status, host_name, device,"
                    " attached_at, export) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(made[key] for key in AttachmentRow.__annotations__),  # type: ignore[literal-required]
                )
                arriving[row["volume_id"]] = made
            volumes = {volume_id: await self._load(db, volume_id) for volume_id in arriving}
        made_for: builtins.list[Reattached] = []
        for volume_id, row in arriving.items():
            connection = await self._connection(volumes[volume_id], row["export"])
            made_for.append(
                {"volume": volumes[volume_id], "device": row["device"] or "", "connection": connection}
            )
        if made_for:
            log.info(
                "volume: %d attachment(s) of %s made for %s, arriving", len(made_for), instance_uuid, host
            )
        return made_for

    async def drop_arriving(self, *, instance_uuid: str) -> builtins.list[str]:
        """``api.volume.VolumeAttachments.drop_arriving``."""
        async with self.store.transaction() as db:
            rows = await db.fetchall(
                "SELECT a.volume_id, a.export, v.host FROM attachments a JOIN volumes v ON v.id = a.volume_id"
                " WHERE a.server_id = ? AND a.attach_status = 'arriving' ORDER BY a.volume_id",
                (instance_uuid,),
            )
            await db.execute(
                "DELETE FROM attachments WHERE server_id = ? AND attach_status = 'arriving'", (instance_uuid,)
            )
        for row in rows:
            await self._unexport((row["export"], row["host"]))
        return [row["volume_id"] for row in rows]

    async def list_attachments(
        self, *, server_ids: builtins.list[str] | None = None
    ) -> builtins.list[AttachmentRecord]:
        """Every attachment the caller may see (``api.volume.VolumeAttachments.list_attachments``)."""
        condition, params = _scope(all_tenants=True)
        if server_ids is not None:
            condition += f" AND a.server_id IN ({', '.join('?' * len(server_ids)) or 'NULL'})"
            params = [*params, *server_ids]
        rows = await self.store.fetchall(
            "SELECT a.*, v.project_id FROM attachments a JOIN volumes v ON v.id = a.volume_id"
            f" WHERE {condition} ORDER BY a.volume_id",
            params,
            row=AttachmentOfProject,
        )
        return [
            {**_attachment_view(row), "attach_status": row["attach_status"], "project_id": row["project_id"]}
            for row in rows
        ]


async def _settle_arriving(db: Db, instance_uuid: str, host: str) -> builtins.list[tuple[str, str]]:
    """A live migration's arriving attachments as the instance settles on ``host``: one on it
    becomes its volume's attachment (the other removed), one elsewhere is removed. Answers the
    exports to end, with their storage hosts."""
    rows = await db.fetchall(
        "SELECT a.id, a.volume_id, a.attach_status, a.host_name, a.export, v.host AS storage"
        " FROM attachments a JOIN volumes v ON v.id = a.volume_id WHERE a.server_id = ?"
        " AND a.attach_status IN ('attached', 'arriving')",
        (instance_uuid,),
    )
    arrived = {
        row["volume_id"] for row in rows if row["attach_status"] == "arriving" and row["host_name"] == host
    }
    ended: builtins.list[tuple[str, str]] = []
    for row in rows:
        if row["attach_status"] == "arriving" and row["host_name"] == host:
            await db.execute("UPDATE attachments SET attach_status = 'attached' WHERE id = ?", (row["id"],))
        elif row["attach_status"] == "arriving" or row["volume_id"] in arrived:
            await db.execute("DELETE FROM attachments WHERE id = ?", (row["id"],))
            if row["export"]:
                ended.append((row["export"], row["storage"]))
    return ended


class NodeVolumes(VolumeAttacher):
    """Serves ``api.volume.VolumeAttacher``: a compute node attaches the volumes an instance placed
    on its host boots with (of the instance's project), and frees those of an instance on its
    host (``actors.placement``). Anything else is ``NotFound`` and changes nothing."""

    def __init__(self, actor: VolumeActor, placements: Placements) -> None:
        self.actor = actor
        self.placements = placements

    async def reserve(self, *, volume_id: str, instance_uuid: str, host: str) -> Connected:
        """Available -> attaching (``api.volume.VolumeAttacher.reserve``)."""
        await self._boot_volume(volume_id, instance_uuid, host)
        return await self.actor.reserve(volume_id=volume_id, instance_uuid=instance_uuid)

    async def attach_complete(self, *, volume_id: str, instance_uuid: str, device: str, host: str) -> Volume:
        """Attaching -> in-use on ``host`` (``api.volume.VolumeAttacher.attach_complete``)."""
        await self._boot_volume(volume_id, instance_uuid, host)
        return await self.actor.attach_complete(
            volume_id=volume_id, instance_uuid=instance_uuid, host=host, device=device
        )

    async def reattach_all(self, *, instance_uuid: str, host: str) -> builtins.list[Reattached]:
        """The attachments of an instance on ``host``, made again there
        (``api.volume.VolumeAttacher.reattach_all``)."""
        await self.placements.on_host(instance_uuid, host, fresh=True)
        return await self.actor.reattach_all(instance_uuid=instance_uuid, host=host)

    async def detach_all(self, *, instance_uuid: str, host: str) -> Detached:
        """Free the volumes of an instance on ``host`` (``api.volume.VolumeAttacher.detach_all``)."""
        await self.placements.on_host(instance_uuid, host, fresh=True)
        return await self.actor.detach_all(instance_uuid=instance_uuid)

    async def _boot_volume(self, volume_id: str, instance_uuid: str, host: str) -> None:
        """:raises NotFound: the instance is not on ``host``, does not boot with the volume, or
        the volume is not its project's (the same answer whichever check failed)."""
        placement = await self.placements.on_host(instance_uuid, host, fresh=True)
        row = await self.actor.store.fetchone(
            "SELECT * FROM volumes WHERE id = ?", (volume_id,), row=VolumeRow
        )
        if volume_id not in placement["volumes"] or row is None or not sees_for(placement, row["project_id"]):
            raise NotFound(f"Volume {volume_id} could not be found for instance {instance_uuid}.")
