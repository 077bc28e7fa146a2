"""The volume actor (Cinder): volumes as files in ``<data>/volumes/`` and their attachments.

A volume is a sparse raw file (``<id>.raw``) or a qcow2 image (``<id>.qcow2``, made by
``qemu-img``). The conductor drives the attach protocol; a node does the libvirt part:

    reserve -> attach_complete        available -> attaching -> in-use
    unreserve                         attaching -> available   (the node failed)
    begin_detach -> detach_complete   in-use -> detaching -> available
    roll_detaching                    detaching -> in-use      (the node failed)
    detach_all                        every volume of a deleted instance -> available

Every status change is published as ``volume.<status>`` on ``evt.volume.<project>.<id>``
with the volume as users see it (no ``path``, no ``format``).

Handlers (version history: 1 - initial): create, get, list, update, delete; the attach
protocol above (reserve and begin_detach also answer the ``connection``: the file's path and
format); list_attachments for audits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from actors.orphans import ORPHAN_SWEEP_INTERVAL, sweep_orphans_forever
from bus import Actor, AiostackError, Bus, Conflict, InvalidRequest, NotFound, handler
from runtime.config import Config
from runtime.context import caller, check_visible
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import Store, fetchall, fetchone, from_json, to_json

log = logging.getLogger(__name__)

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
]

MAX_SIZE_GIB = 1024
MAX_TEXT = 255
FORMATS = ("raw", "qcow2")
DELETABLE = ("available", "error", "error_deleting")
# attachment rows: reserved (volume attaching), attached (in-use), detaching (volume detaching)
SHOWN_ATTACHMENTS = "attach_status IN ('attached', 'detaching')"
ATTACHMENTS_OF = f"SELECT * FROM attachments WHERE volume_id = ? AND {SHOWN_ATTACHMENTS} ORDER BY attached_at"
INTERNAL_FIELDS = ("path", "format")
ATTACHMENT_FIELDS = ("volume_id", "server_id", "host_name", "device", "attached_at")
FIXED_FIELDS = {
    "availability_zone": "nova",
    "bootable": "false",
    "encrypted": False,
    "multiattach": False,
    "volume_type": "__DEFAULT__",
    "snapshot_id": None,
    "source_volid": None,
}

# what the attach protocol does to attachment rows (reserved -> attached <-> detaching)
RESERVE = "INSERT INTO attachments (id, volume_id, server_id, attach_status) VALUES (?, ?, ?, 'reserved')"
UNRESERVE = "DELETE FROM attachments WHERE volume_id = ? AND attach_status = 'reserved'"
ATTACH = "UPDATE attachments SET attach_status = 'attached', host_name = ?, device = ?, attached_at = ?"
ATTACH += " WHERE id = ?"
BEGIN_DETACH = "UPDATE attachments SET attach_status = 'detaching' WHERE id = ?"
ROLL_DETACHING = "UPDATE attachments SET attach_status = 'attached' WHERE volume_id = ?"
DETACH = "DELETE FROM attachments WHERE id = ?"
ATTACHMENT_TO = "SELECT id FROM attachments WHERE volume_id = ? AND server_id = ?"

# a change of a volume inside a transaction: gets the volume, answers its new status (None: same)
Step = Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[str | None]]


def _attachment_view(row: dict[str, Any]) -> dict[str, Any]:
    """An attachment as Cinder shows it (its ``id`` is the volume's, as in Cinder)."""
    return {
        "id": row["volume_id"],
        "attachment_id": row["id"],
        **{key: row[key] for key in ATTACHMENT_FIELDS},
    }


def _record(row: dict[str, Any], attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """The volume record: every column of its row, the fixed Cinder fields, its attachments."""
    return {
        **row,
        **FIXED_FIELDS,
        "attachments": [_attachment_view(attachment) for attachment in attachments],
        "metadata": from_json(row["metadata"], {}),
    }


def public_view(volume: dict[str, Any]) -> dict[str, Any]:
    """The volume without the fields only the volume host needs (file path and format)."""
    return {key: value for key, value in volume.items() if key not in INTERNAL_FIELDS}


def _connection(volume: dict[str, Any]) -> dict[str, str]:
    return {"path": volume["path"], "format": volume["format"]}


def _check_found(volume_id: str, row: dict[str, Any] | None) -> dict[str, Any]:
    """The row if the caller may see it. :raises NotFound: missing or another project's."""
    if row is None:
        raise NotFound(f"Volume {volume_id} could not be found.")
    check_visible("Volume", volume_id, row["project_id"])
    return row


def _check_text(field: str, value: Any, *, required: bool = False) -> None:
    """:raises InvalidRequest: not a string of at most 255 characters (non-empty if required)."""
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value):
        raise InvalidRequest(
            f"Invalid input received: {field} must be a string of at most {MAX_TEXT} characters"
        )


def _check_size(size: Any) -> None:
    """:raises InvalidRequest: not an integer number of GiB from 1 to ``MAX_SIZE_GIB``."""
    if type(size) is not int or not 1 <= size <= MAX_SIZE_GIB:
        raise InvalidRequest(
            f"Invalid input received: size must be an integer from 1 to {MAX_SIZE_GIB} (GiB), not {size!r}"
        )


def _check_metadata(metadata: Any) -> dict[str, str]:
    """:raises InvalidRequest: not a map of strings to strings."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("Invalid input received: metadata must be an object of strings")
    for key, value in metadata.items():
        _check_text("metadata key", key, required=True)
        _check_text(f"metadata value of {key}", value)
    return metadata


def _scope(all_tenants: bool) -> tuple[str, tuple[Any, ...]]:
    """An SQL condition on ``v.project_id``: services see all, admins all with ``all_tenants``."""
    ctx = caller()
    if ctx is None or ctx.user_id is None or (all_tenants and ctx.is_admin):
        return "1 = 1", ()
    return "v.project_id = ?", (ctx.project_id,)


def _make_raw(path: Path, size_bytes: int) -> None:
    """A new sparse file of ``size_bytes`` (blocking: run it in a thread)."""
    with open(path, "xb"):
        pass
    os.truncate(path, size_bytes)


async def _make_qcow2(qemu_img: str, path: Path, size_gib: int) -> None:
    """``qemu-img create -f qcow2 PATH SIZEG``. :raises OSError: it failed or could not run."""
    process = await asyncio.create_subprocess_exec(
        qemu_img, "create", "-f", "qcow2", str(path), f"{size_gib}G", stdout=DEVNULL, stderr=PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise OSError(
            f"qemu-img create exited {process.returncode}: {stderr.decode(errors='replace').strip()}"
        )


class VolumeActor(Actor):
    name = "volume"
    orphan_sweep_interval = ORPHAN_SWEEP_INTERVAL

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("volume"), MIGRATIONS)
        self.pool = config.data_dir / "volumes"

    async def on_start(self) -> None:
        self.pool.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        self.spawn(
            sweep_orphans_forever(
                self.bus,
                self._attached_instances,
                self.detach_all,
                "volume attachments",
                self.orphan_sweep_interval,
            ),
            name="volume-orphans",
        )

    async def _attached_instances(self) -> list[str]:
        return [
            row["server_id"]
            for row in await self.store.fetchall("SELECT DISTINCT server_id FROM attachments")
        ]

    async def on_stop(self) -> None:
        await self.store.close()

    # -- helpers --------------------------------------------------------------------------

    async def _publish(self, volume: dict[str, Any]) -> None:
        await publish_event(
            self.bus,
            "volume",
            volume["id"],
            volume["project_id"],
            f"volume.{volume['status']}",
            public_view(volume),
        )

    def _fault(self, exc: OSError) -> str:
        """What went wrong with a volume file, without the pool's path."""
        return str(exc).replace(f"{self.pool}{os.sep}", "")

    async def _load(self, db: aiosqlite.Connection, volume_id: str) -> dict[str, Any]:
        """A visible volume's record inside a transaction. :raises NotFound:"""
        row = _check_found(volume_id, await fetchone(db, "SELECT * FROM volumes WHERE id = ?", (volume_id,)))
        return _record(row, await fetchall(db, ATTACHMENTS_OF, (volume_id,)))

    async def _change(self, volume_id: str, step: Step) -> dict[str, Any]:
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

    async def _set_status(self, volume_id: str, status: str, fault: str | None = None) -> dict[str, Any]:
        async def step(db: aiosqlite.Connection, volume: dict[str, Any]) -> str:
            await db.execute("UPDATE volumes SET fault = ? WHERE id = ?", (fault, volume_id))
            return status

        return await self._change(volume_id, step)

    # -- volumes --------------------------------------------------------------------------

    @handler(policy="volume:write")
    async def create(
        self,
        size: int,
        name: str = "",
        description: str = "",
        volume_format: str = "raw",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make a volume of ``size`` GiB for the caller's project: creating -> available (or error).

        :raises InvalidRequest: bad size, name, description, format or metadata, or qcow2
            asked for where qemu-img is not installed.
        """
        _check_size(size)
        _check_text("name", name)
        _check_text("description", description)
        metadata = _check_metadata(metadata)
        if volume_format not in FORMATS:
            raise InvalidRequest(f"Invalid input received: volume_format must be one of {', '.join(FORMATS)}")
        qemu_img = shutil.which("qemu-img") if volume_format == "qcow2" else None
        if volume_format == "qcow2" and qemu_img is None:
            raise InvalidRequest("qcow2 volumes need qemu-img, which is not installed on the volume host")
        ctx = caller()
        volume_id = new_uuid()
        path = self.pool / f"{volume_id}.{volume_format}"
        now = utcnow()
        owner = (ctx.user_id, ctx.project_id) if ctx else (None, None)
        row = (volume_id, name, description, size, volume_format, str(path), *owner, to_json(metadata))
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO volumes (id, name, description, size, format, path, user_id, project_id,"
                " metadata, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?)",
                (*row, now, now),
            )
            volume = await self._load(db, volume_id)
        await self._publish(volume)
        try:
            if qemu_img is not None:
                await _make_qcow2(qemu_img, path, size)
            else:
                await asyncio.to_thread(_make_raw, path, size << 30)
        except OSError as exc:
            log.warning("volume %s: could not create %s: %s", volume_id, path, exc)
            return await self._set_status(
                volume_id, "error", f"could not create the volume file: {self._fault(exc)}"
            )
        return await self._set_status(volume_id, "available")

    @handler(policy="volume:read")
    async def get(self, volume_id: str) -> dict[str, Any]:
        """One volume. :raises NotFound: no such volume visible to the caller."""
        row = _check_found(
            volume_id, await self.store.fetchone("SELECT * FROM volumes WHERE id = ?", (volume_id,))
        )
        return _record(row, await self.store.fetchall(ATTACHMENTS_OF, (volume_id,)))

    @handler(policy="volume:read")
    async def list(
        self, name: str | None = None, status: str | None = None, all_tenants: bool = False
    ) -> list[dict[str, Any]]:
        """The caller's volumes (every project's for an admin with ``all_tenants``), newest first."""
        condition, scope_params = _scope(bool(all_tenants))
        clauses, params = [condition], [*scope_params]
        for column, value in (("name", name), ("status", status)):
            if value is not None:
                clauses.append(f"v.{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        rows = await self.store.fetchall(
            f"SELECT v.* FROM volumes v WHERE {where} ORDER BY v.created_at DESC, v.id", params
        )
        attachments: dict[str, list[dict[str, Any]]] = {}
        for attachment in await self.store.fetchall(
            f"SELECT a.* FROM attachments a JOIN volumes v ON v.id = a.volume_id"
            f" WHERE {where} AND a.{SHOWN_ATTACHMENTS} ORDER BY a.attached_at",
            params,
        ):
            attachments.setdefault(attachment["volume_id"], []).append(attachment)
        return [_record(row, attachments.get(row["id"], [])) for row in rows]

    @handler(policy="volume:write")
    async def update(
        self, volume_id: str, name: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Rename or redescribe a volume (None leaves a field as it is).

        :raises NotFound: no such volume visible to the caller.
        :raises InvalidRequest: name or description is not a string of at most 255 characters.
        """
        for field, value in (("name", name), ("description", description)):
            if value is not None:
                _check_text(field, value)

        async def step(db: aiosqlite.Connection, volume: dict[str, Any]) -> None:
            await db.execute(
                "UPDATE volumes SET name = COALESCE(?, name), description = COALESCE(?, description),"
                " updated_at = ? WHERE id = ?",
                (name, description, utcnow(), volume_id),
            )

        return await self._change(volume_id, step)

    @handler(policy="volume:write")
    async def delete(self, volume_id: str) -> None:
        """Remove a volume and its file: deleting -> gone (published as ``volume.deleted``).

        A volume in error_deleting (its file could not be removed) may be deleted again.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available or error (in-use, attaching, ...).
        :raises AiostackError: the file could not be removed; the volume is left error_deleting.
        """

        async def step(db: aiosqlite.Connection, volume: dict[str, Any]) -> str:
            if volume["status"] not in DELETABLE:
                raise Conflict(
                    "Invalid volume: Volume status must be available or error and must not be attached,"
                    f" but current status is: {volume['status']}."
                )
            return "deleting"

        volume = await self._change(volume_id, step)
        try:
            await asyncio.to_thread(Path(volume["path"]).unlink, missing_ok=True)
        except OSError as exc:
            log.warning("volume %s: could not remove %s: %s", volume_id, volume["path"], exc)
            fault = f"could not remove the volume file: {self._fault(exc)}"
            await self._set_status(volume_id, "error_deleting", fault)
            raise AiostackError(f"Volume {volume_id}: {fault}") from None
        await self.store.execute("DELETE FROM volumes WHERE id = ?", (volume_id,))
        await self._publish({**volume, "status": "deleted", "updated_at": utcnow()})

    # -- the attach protocol --------------------------------------------------------------

    async def _move(
        self,
        volume_id: str,
        source: str,
        target: str,
        sql: str,
        params: tuple[Any, ...],
        *,
        instance_uuid: str | None = None,
        settled: str | None = None,
    ) -> dict[str, Any]:
        """Move a volume from status ``source`` to ``target``, running ``sql`` on its attachments.

        With ``instance_uuid`` the volume must have an attachment to that instance, whose id
        is the last parameter of ``sql``. A volume already ``settled`` is left as it is, so
        that retries and rollbacks are idempotent.

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is not in ``source`` status.
        """

        async def step(db: aiosqlite.Connection, volume: dict[str, Any]) -> str | None:
            if volume["status"] == settled:
                return None
            arguments = params
            if instance_uuid is not None:
                attachment = await fetchone(db, ATTACHMENT_TO, (volume_id, instance_uuid))
                if attachment is None:
                    raise NotFound(f"Volume {volume_id} is not attached to instance {instance_uuid}.")
                arguments = (*params, attachment["id"])
            if volume["status"] != source:
                raise Conflict(
                    f"Volume {volume_id} is {volume['status']}; it must be {source} to become {target}."
                )
            await db.execute(sql, arguments)
            return target

        return await self._change(volume_id, step)

    @handler
    async def reserve(self, volume_id: str, instance_uuid: str) -> dict[str, Any]:
        """Claim an available volume for ``instance_uuid``: available -> attaching.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available (in-use, attaching, ...).
        :raises InvalidRequest: ``instance_uuid`` is not a non-empty string.
        """
        _check_text("instance_uuid", instance_uuid, required=True)
        volume = await self._move(
            volume_id, "available", "attaching", RESERVE, (new_uuid(), volume_id, instance_uuid)
        )
        return {"volume": volume, "connection": _connection(volume)}

    @handler
    async def unreserve(self, volume_id: str) -> dict[str, Any]:
        """Roll back a reserve (the node failed): attaching -> available; idempotent.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is neither attaching nor available.
        """
        return await self._move(
            volume_id, "attaching", "available", UNRESERVE, (volume_id,), settled="available"
        )

    @handler
    async def attach_complete(
        self, volume_id: str, instance_uuid: str, host: str, device: str
    ) -> dict[str, Any]:
        """The node attached the volume as ``device`` on ``host``: attaching -> in-use.

        :raises NotFound: no such volume visible to the caller, or not reserved for the instance.
        :raises Conflict: the volume is not attaching.
        :raises InvalidRequest: ``host`` or ``device`` is not a non-empty string.
        """
        _check_text("host", host, required=True)
        _check_text("device", device, required=True)
        arguments = (host, device, utcnow())
        return await self._move(
            volume_id, "attaching", "in-use", ATTACH, arguments, instance_uuid=instance_uuid
        )

    @handler
    async def begin_detach(self, volume_id: str, instance_uuid: str) -> dict[str, Any]:
        """Start detaching from ``instance_uuid``: in-use -> detaching.

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is not in-use (attaching, detaching, ...).
        """
        volume = await self._move(
            volume_id, "in-use", "detaching", BEGIN_DETACH, (), instance_uuid=instance_uuid
        )
        return {"volume": volume, "connection": _connection(volume)}

    @handler
    async def roll_detaching(self, volume_id: str) -> dict[str, Any]:
        """Roll back a begin_detach (the node failed): detaching -> in-use; idempotent.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is neither detaching nor in-use.
        """
        return await self._move(
            volume_id, "detaching", "in-use", ROLL_DETACHING, (volume_id,), settled="in-use"
        )

    @handler
    async def detach_complete(self, volume_id: str, instance_uuid: str) -> dict[str, Any]:
        """The node detached the volume: detaching -> available, attachment removed; idempotent.

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is attached to the instance but not detaching.
        """
        return await self._move(
            volume_id, "detaching", "available", DETACH, (), instance_uuid=instance_uuid, settled="available"
        )

    @handler
    async def detach_all(self, instance_uuid: str) -> dict[str, list[str]]:
        """Free every volume attached, attaching or detaching to a deleted instance; idempotent.

        :raises InvalidRequest: ``instance_uuid`` is not a non-empty string.
        """
        _check_text("instance_uuid", instance_uuid, required=True)
        condition, params = _scope(all_tenants=True)
        async with self.store.transaction() as db:
            rows = await fetchall(
                db,
                "SELECT DISTINCT v.id FROM volumes v JOIN attachments a ON a.volume_id = v.id"
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
        for volume in volumes:
            await self._publish(volume)
        return {"detached": [volume["id"] for volume in volumes]}

    @handler
    async def list_attachments(self) -> list[dict[str, Any]]:
        """Every attachment the caller may see (all for admins and services), for audits.

        Each is an attachment as volumes show it, plus ``attach_status`` (reserved, attached,
        detaching) and the volume's ``project_id``.
        """
        condition, params = _scope(all_tenants=True)
        rows = await self.store.fetchall(
            "SELECT a.*, v.project_id FROM attachments a JOIN volumes v ON v.id = a.volume_id"
            f" WHERE {condition} ORDER BY a.volume_id",
            params,
        )
        return [
            {**_attachment_view(row), "attach_status": row["attach_status"], "project_id": row["project_id"]}
            for row in rows
        ]
