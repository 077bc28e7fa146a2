"""Migration records (Nova's ``migrations`` table): one row per resize, cold migration, live
migration and evacuate, its status following the instance's steps.

A row is made when the operation starts (``start``; ``recorded.begin_recorded`` writes its id on
the instance, ``migration_id``, in the same write that starts the task). Every later state change
of the instance moves its status (``Core.transit`` calls ``follow``), decided from the
instance's states before and after the change by ``status_after`` (a pure function, as
``states.transition``), or set by the operation itself where the states do not tell (a live
migration's preparing, running, cancelled). A final status ends the record: the instance's
``migration_id`` is cleared. ``list_migrations`` answers ``GET /os-migrations`` (admins).
"""

from __future__ import annotations

import enum
import uuid as uuidlib
from typing import Any, Final

from actors.conductor.schema import FINAL, IN_PROGRESS_SQL, InstanceRow
from api.conductor import Flavor, MigrationRecord, MigrationStatus
from runtime.stamps import utcnow
from runtime.states import TaskState, VmState
from runtime.store import Db, Store, from_json


class Kind(enum.StrEnum):
    """Nova's ``migration_type``."""

    RESIZE = "resize"
    MIGRATION = "migration"
    LIVE = "live-migration"
    EVACUATION = "evacuation"


RESIZE_STEP_STATUS: Final[dict[TaskState, MigrationStatus]] = {
    TaskState.RESIZE_PREP: "pre-migrating",
    TaskState.RESIZE_MIGRATING: "migrating",
    TaskState.RESIZE_MIGRATED: "post-migrating",
    TaskState.RESIZE_FINISH: "post-migrating",
    TaskState.RESIZE_CONFIRMING: "confirming",
    TaskState.RESIZE_REVERTING: "reverting",
}
"""A resize's or cold migration's status in each of its tasks."""


def status_after(
    kind: Kind,
    before: tuple[VmState, TaskState | None],
    after: tuple[VmState, TaskState | None],
) -> MigrationStatus | None:
    """The status a change of the instance's states gives its migration record (None: as it is)."""
    (_, old_task), (vm_state, task) = before, after
    if vm_state is VmState.DELETED or task is TaskState.DELETING:
        return "error"
    if kind is Kind.EVACUATION:
        if task is TaskState.REBUILD_SPAWNING:
            return "pre-migrating"
        if task is None:
            done = old_task is TaskState.REBUILD_SPAWNING and vm_state in (VmState.ACTIVE, VmState.STOPPED)
            return "done" if done else "failed"
        return None
    if kind is Kind.LIVE:
        return "error" if vm_state is VmState.ERROR else None
    if task in RESIZE_STEP_STATUS:
        return RESIZE_STEP_STATUS[task]
    if task is None and vm_state is VmState.RESIZED:
        return "finished"
    if task is None and vm_state is not VmState.ERROR:
        if old_task is TaskState.RESIZE_CONFIRMING:
            return "confirmed"
        if old_task is TaskState.RESIZE_REVERTING:
            return "reverted"
    return "error" if task is None else None


async def start(
    db: Db | Store,
    row: InstanceRow,
    kind: Kind,
    *,
    status: MigrationStatus,
    dest: str | None,
    new_flavor: Flavor | None = None,
) -> int:
    """Record a migration of the instance from its host (to ``dest``, when known); its id."""
    old: Flavor = from_json(row["flavor"])
    now = utcnow()
    created = await db.fetchone(
        "INSERT INTO migrations (uuid, instance_uuid, project_id, user_id, migration_type, status,"
        " source_compute, dest_compute, old_instance_type_id, new_instance_type_id, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            str(uuidlib.uuid4()),
            row["uuid"],
            row["project_id"],
            row["user_id"],
            kind,
            status,
            row["host"],
            dest,
            old["id"],
            (new_flavor or old)["id"],
            now,
            now,
        ),
    )
    assert created is not None, "an insert returns its row"
    return int(created["id"])


async def set_status(store: Store, migration_id: int, status: MigrationStatus, **progress: int) -> None:
    """Set a record's status (and a live migration's progress columns), unless it ended already;
    a final status clears it off its instance."""
    columns: dict[str, Any] = {"status": status, "updated_at": utcnow(), **progress}
    assignments = ", ".join(f"{column} = ?" for column in columns)
    finals = ", ".join("?" * len(FINAL))
    await store.execute(
        f"UPDATE migrations SET {assignments} WHERE id = ? AND status NOT IN ({finals})",
        (*columns.values(), migration_id, *sorted(FINAL)),
    )
    if status in FINAL:
        await store.execute(
            "UPDATE instances SET migration_id = NULL, migrate_from = NULL, migrate_to = NULL"
            " WHERE migration_id = ?",
            (migration_id,),
        )


async def end_orphans(store: Store, made_before: str) -> list[int]:
    """Records in progress made before ``made_before`` that no instance points to (a conductor
    stopped between making one and starting its task): ``error``. Reads only the records in
    progress."""
    orphans = await store.fetchall(
        f"SELECT id FROM migrations m WHERE {IN_PROGRESS_SQL} AND created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.migration_id = m.id)",
        (made_before,),
    )
    for orphan in orphans:
        await set_status(store, int(orphan["id"]), "error")
    return [int(orphan["id"]) for orphan in orphans]


async def follow(store: Store, before: InstanceRow, after: InstanceRow) -> None:
    """The instance changed: its migration record's status (and destination) with it."""
    migration_id = before["migration_id"]
    if migration_id is None:
        return
    record = await store.fetchone(
        "SELECT migration_type, dest_compute FROM migrations WHERE id = ?", (migration_id,)
    )
    if record is None:
        return
    dest = after["migrate_to"] or (after["host"] if after["host"] != before["host"] else None)
    if dest is not None and record["dest_compute"] is None:
        await store.execute("UPDATE migrations SET dest_compute = ? WHERE id = ?", (dest, migration_id))
    status = status_after(
        Kind(record["migration_type"]),
        (VmState(before["vm_state"]), _task(before)),
        (VmState(after["vm_state"]), _task(after)),
    )
    if status is not None:
        await set_status(store, migration_id, status)


def _task(row: InstanceRow) -> TaskState | None:
    return None if row["task_state"] is None else TaskState(row["task_state"])


async def list_migrations(
    store: Store,
    *,
    host: str | None = None,
    status: str | None = None,
    instance_uuid: str | None = None,
    migration_type: str | None = None,
    migration_id: int | None = None,
) -> list[MigrationRecord]:
    """The records that match every filter given, newest first (``host``: source or destination)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", status),
        ("instance_uuid", instance_uuid),
        ("migration_type", migration_type),
        ("id", migration_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if host is not None:
        clauses.append("(source_compute = ? OR dest_compute = ?)")
        params += [host, host]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await store.fetchall(f"SELECT * FROM migrations{where} ORDER BY id DESC", params)
    return [_record(row) for row in rows]


def _record(row: dict[str, Any]) -> MigrationRecord:
    return {
        "id": row["id"],
        "uuid": row["uuid"],
        "instance_uuid": row["instance_uuid"],
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "migration_type": row["migration_type"],
        "status": row["status"],
        "source_compute": row["source_compute"],
        "dest_compute": row["dest_compute"],
        "old_instance_type_id": row["old_instance_type_id"],
        "new_instance_type_id": row["new_instance_type_id"],
        "memory_total_bytes": row["memory_total_bytes"],
        "memory_processed_bytes": row["memory_processed_bytes"],
        "memory_remaining_bytes": row["memory_remaining_bytes"],
        "disk_total_bytes": row["disk_total_bytes"],
        "disk_processed_bytes": row["disk_processed_bytes"],
        "disk_remaining_bytes": row["disk_remaining_bytes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
