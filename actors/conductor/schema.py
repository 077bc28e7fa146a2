"""The conductor's store: its tables, an instance row, and the instance as answers and events show it."""

from __future__ import annotations

from typing import Any, Final, TypedDict

from actors.conductor.keypairs import MIGRATION as KEYPAIRS_MIGRATION
from actors.conductor.quotas import MIGRATION as QUOTAS_MIGRATION
from actors.conductor.quotas import USAGE_MIGRATION
from actors.conductor.states import status_of
from api.conductor import BlockDevice, Flavor, Instance, MigrationStatus, boot_volume
from runtime.states import PowerState, TaskState, VmState
from runtime.store import Migration, Step, from_json

FINAL: Final[frozenset[MigrationStatus]] = frozenset(
    {"confirmed", "reverted", "error", "failed", "done", "completed", "cancelled"}
)
"""The statuses that end a migration record (``migrations.py``)."""
IN_PROGRESS_SQL: Final[str] = f"status NOT IN ({', '.join(repr(status) for status in sorted(FINAL))})"
"""The migration records not ended, as the partial index ``migrations_in_progress`` has it (the
same text in a query lets sqlite use the index)."""

_TASK_SUPERVISION = """
    ALTER TABLE instances ADD COLUMN progress_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN task_sent_at REAL;
    ALTER TABLE instances ADD COLUMN task_acked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN task_sends INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN build_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN tried_hosts TEXT NOT NULL DEFAULT '[]';
    UPDATE instances SET progress_at = {now};
    CREATE INDEX instances_task ON instances(deleted, task_state);
    CREATE TABLE instance_action_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, action_id INTEGER NOT NULL, event TEXT NOT NULL,
        host TEXT, time TEXT NOT NULL, result TEXT NOT NULL, details TEXT);
    CREATE INDEX instance_action_events_action ON instance_action_events(action_id);
"""

MIGRATIONS: list[Step] = [
    """
    CREATE TABLE flavors (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, ram INTEGER NOT NULL,
        disk INTEGER NOT NULL, ephemeral INTEGER NOT NULL DEFAULT 0, swap INTEGER NOT NULL DEFAULT 0,
        is_public INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE instances (
        uuid TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
        flavor TEXT NOT NULL, image_ref TEXT NOT NULL, requested_networks TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}', key_name TEXT, user_data TEXT,
        host TEXT, vm_state TEXT NOT NULL, task_state TEXT, power_state INTEGER NOT NULL DEFAULT 0,
        addresses TEXT NOT NULL DEFAULT '{}', fault TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, launched_at TEXT, terminated_at TEXT,
        deleted INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX instances_project ON instances(project_id, deleted, created_at);
    CREATE INDEX instances_host ON instances(host, deleted);
    CREATE TABLE instance_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_uuid TEXT NOT NULL, action TEXT NOT NULL,
        request_id TEXT, user_id TEXT, project_id TEXT, start_time TEXT NOT NULL,
        finish_time TEXT, result TEXT, message TEXT);
    CREATE INDEX instance_actions_uuid ON instance_actions(instance_uuid);
    """,
    # 2: volumes attached at boot
    """
    ALTER TABLE instances ADD COLUMN block_devices TEXT NOT NULL DEFAULT '[]';
    """,
    # 3: task supervision (watch.py): when the instance last made progress, whether the node took
    # the task's cast, how often it was sent, the build attempts and the hosts tried; the steps of
    # each action (Nova's instance_actions_events).
    Migration(
        sqlite=_TASK_SUPERVISION.format(now="CAST(strftime('%s', 'now') AS REAL)"),
        postgresql=_TASK_SUPERVISION.format(now="extract(epoch FROM now())"),
    ),
    KEYPAIRS_MIGRATION,
    # 5: admins' all-projects pages walk every live instance newest first
    """
    CREATE INDEX instances_listing ON instances(deleted, created_at, uuid);
    """,
    # 6: a request sent again finds what it started (``Core.asked_already``)
    """
    CREATE INDEX instance_actions_request ON instance_actions(request_id);
    """,
    # 7: every state change is numbered, and the last one whose event the stream has is kept
    # (``Core.announce_missed``)
    """
    ALTER TABLE instances ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN announced_version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX instances_unannounced ON instances(uuid) WHERE announced_version < version;
    """,
    # 8: what a user sets besides power (``details.py``): access addresses, the lock
    """
    ALTER TABLE instances ADD COLUMN access_ip_v4 TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN access_ip_v6 TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN locked_by TEXT;
    ALTER TABLE instances ADD COLUMN locked_reason TEXT;
    """,
    # 9: the administrator password a build delivers (``Core._write`` forgets it when the build ends)
    """
    ALTER TABLE instances ADD COLUMN admin_pass TEXT;
    """,
    QUOTAS_MIGRATION,
    # 11: the image a createImage task uploads the instance's disk to
    """
    ALTER TABLE instances ADD COLUMN snapshot_image TEXT;
    """,
    # 12: the security groups (ids, JSON) the instance's new ports join; NULL: its project's default
    """
    ALTER TABLE instances ADD COLUMN security_groups TEXT;
    """,
    # 13: a resize: the flavor it leaves (JSON) until confirmed or reverted, whether the domain ran
    # before it, and when it became RESIZED
    """
    ALTER TABLE instances ADD COLUMN old_flavor TEXT;
    ALTER TABLE instances ADD COLUMN resize_power_on INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN resized_at REAL;
    """,
    # 14: an evacuate: the host it leaves (while it runs) and the one it was asked to go to
    """
    ALTER TABLE instances ADD COLUMN evacuate_from TEXT;
    ALTER TABLE instances ADD COLUMN evacuate_to TEXT;
    """,
    # 15: Nova's flavor extra specs (aiostack reads its own maxima for live changes from them)
    """
    CREATE TABLE flavor_extra_specs (
        flavor_id TEXT NOT NULL REFERENCES flavors(id), key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (flavor_id, key));
    """,
    # 16: the user's description of the instance (Nova 2.19; NULL: none)
    """
    ALTER TABLE instances ADD COLUMN description TEXT;
    """,
    # 17: migration records (``migrations.py``); on the instance the one in progress and, for a
    # cold or live migration, the host it leaves and the one it goes to
    """
    CREATE TABLE migrations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE, instance_uuid TEXT NOT NULL,
        project_id TEXT NOT NULL, user_id TEXT NOT NULL, migration_type TEXT NOT NULL,
        status TEXT NOT NULL, source_compute TEXT, dest_compute TEXT,
        old_instance_type_id TEXT, new_instance_type_id TEXT,
        memory_total_bytes INTEGER, memory_processed_bytes INTEGER, memory_remaining_bytes INTEGER,
        disk_total_bytes INTEGER, disk_processed_bytes INTEGER, disk_remaining_bytes INTEGER,
        force_complete INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT);
    CREATE INDEX migrations_instance ON migrations(instance_uuid);
    ALTER TABLE instances ADD COLUMN migration_id INTEGER;
    ALTER TABLE instances ADD COLUMN migrate_from TEXT;
    ALTER TABLE instances ADD COLUMN migrate_to TEXT;
    ALTER TABLE instances ADD COLUMN migration_step TEXT;
    """,
    # 18: Nova's instance system metadata (JSON): a shelve's shelved_at, shelved_image_id, shelved_host
    """
    ALTER TABLE instances ADD COLUMN system_metadata TEXT NOT NULL DEFAULT '{}';
    """,
    # 19: the watch ends the records in progress no instance points to (``migrations.end_orphans``)
    f"""
    CREATE INDEX migrations_in_progress ON migrations(created_at) WHERE {IN_PROGRESS_SQL};
    CREATE INDEX instances_migration ON instances(migration_id) WHERE migration_id IS NOT NULL;
    """,
    # 20: the task watch reads the work in flight alone, however many instances rest: those with a
    # task, the resized and shelved ones (auto-confirm, offload) by their state, the NIC changes
    # not finished; the owners' orphan sweeps read the instances deleted since their last; a
    # project's page of instances walks that project's alone, in the page's order
    """
    CREATE INDEX instances_in_task ON instances(task_state) WHERE task_state IS NOT NULL;
    CREATE INDEX instances_vm_state ON instances(vm_state, resized_at);
    CREATE INDEX instance_actions_unfinished ON instance_actions(action, start_time)
        WHERE finish_time IS NULL;
    CREATE INDEX instances_deleted ON instances(deleted, terminated_at);
    DROP INDEX instances_project;
    CREATE INDEX instances_project ON instances(project_id, deleted, created_at, uuid);
    """,
    # 21: each project's instances, vCPUs and RAM, summed as they change (``quotas.USAGE_TRIGGERS``)
    USAGE_MIGRATION,
]

# The periodic reads (watch.py), each over an index of the work in flight alone
TASKS_IN_FLIGHT = "SELECT * FROM instances WHERE task_state IS NOT NULL"
"""The instances with a task (a deleted one has none): the partial index ``instances_in_task``."""
RESTING_IN = "SELECT * FROM instances WHERE vm_state = ? AND task_state IS NULL"
"""The instances in a state (shelved: to offload) with no task: ``instances_vm_state``."""
EXPIRED_RESIZES = f"{RESTING_IN} AND resized_at < ?"
"""The instances RESIZED, with no task, since before a time (to confirm): ``instances_vm_state``."""
UNANNOUNCED = "SELECT * FROM instances WHERE announced_version < version"
"""The instances whose last change the event stream has not acknowledged: the partial index
``instances_unannounced``."""
UNFINISHED_ACTIONS = (
    "SELECT DISTINCT instance_uuid, action FROM instance_actions"
    " WHERE finish_time IS NULL AND action IN (?, ?) AND start_time < ?"
)
"""Two actions (attach and detach interface) started before a time and not finished: the partial
index ``instance_actions_unfinished``."""
DELETED_SINCE = "SELECT uuid FROM instances WHERE deleted = 1 AND terminated_at >= ?"
"""The instances deleted since a time (the owners' orphan sweeps): a range of the index
``instances_deleted``."""


class InstanceRow(TypedDict):
    """A row of ``instances``. JSON columns: flavor, requested_networks, block_devices, metadata,
    addresses, fault, tried_hosts. A deleted row (``deleted`` 1, vm_state ``deleted``) is never
    changed again.

    Task supervision: ``task_state`` is the task the node was handed (or the conductor is doing:
    scheduling); ``task_sent_at``/``task_sends`` when and how often its cast was sent, reset with
    ``task_acked`` whenever ``task_state`` changes; ``progress_at`` (epoch seconds) moves with every
    change and every ``task_progress``; ``build_attempts`` counts the hosts claimed, ``tried_hosts``
    those a build failed or stalled on.

    Events: ``version`` counts the row's state changes (its creation is 1), ``announced_version``
    is the last whose event the stream acknowledged; a change a conductor recorded but could not
    announce (it died, or the stream did not answer) is announced by a replica's watch."""

    uuid: str
    name: str
    project_id: str
    user_id: str
    flavor: str
    image_ref: str
    requested_networks: str
    metadata: str
    key_name: str | None
    user_data: str | None
    host: str | None
    vm_state: str
    task_state: str | None
    power_state: int
    addresses: str
    fault: str | None
    created_at: str
    updated_at: str
    launched_at: str | None
    terminated_at: str | None
    deleted: int
    block_devices: str
    progress_at: float
    task_sent_at: float | None
    task_acked: int
    task_sends: int
    build_attempts: int
    tried_hosts: str
    version: int
    announced_version: int
    access_ip_v4: str
    access_ip_v6: str
    locked_by: str | None
    """Who locked the instance: ``owner`` or ``admin`` (Nova's ``locked_by``); None: unlocked."""
    locked_reason: str | None
    admin_pass: str | None
    """Until the build ends: the password the guest's config drive gives its administrator."""
    snapshot_image: str | None
    """The image the latest createImage task uploads to."""
    security_groups: str | None
    """JSON: the ids of the security groups its new ports join, resolved at create; None: its
    project's default group."""
    old_flavor: str | None
    """JSON: during a resize, the flavor it leaves (``flavor`` is the one it goes to: while it
    reverts, the old one again, and this the one given up); during a live change of vCPUs and
    RAM, the size it leaves (``flavor``: the one it goes to). None: neither."""
    resize_power_on: int
    """1: the domain ran when the resize (or its revert) began, and runs again after it."""
    resized_at: float | None
    """When the resize became RESIZED (epoch seconds): the auto-confirm window counts from it."""
    evacuate_from: str | None
    """While an evacuate runs: the (down) host it leaves; its node's word on the instance is no
    longer taken, nor listed to it. None: no evacuate."""
    evacuate_to: str | None
    """The destination an evacuate was asked for (None: the scheduler's choice)."""
    description: str | None
    """The user's description (Nova's ``display_description``); None: none."""
    migration_id: int | None
    """The migration record (``migrations.py``) of the resize, migration or evacuate in progress."""
    migrate_from: str | None
    """During a cold or live migration: the host it leaves (its claim there is held until the end)."""
    migrate_to: str | None
    """During a cold or live migration: the host it goes to."""
    migration_step: str | None
    """During a live migration: ``claim`` (the conductor's), ``copy`` (the source's node), ``switch``
    (the destination's node defines and starts it there), ``rollback`` (the source's node takes its
    ports and volumes back). During a cold migration's revert: ``copy_removed`` once the
    destination's node removed its copy (the source's node defines and starts it next). A new
    task starts without one."""
    system_metadata: str
    """JSON: Nova's system metadata; while shelved, ``shelved_at``, ``shelved_image_id`` (the image
    its disk was saved to; None for a volume-backed one) and ``shelved_host``."""


def system_metadata(row: InstanceRow) -> dict[str, Any]:
    """The instance's system metadata."""
    return from_json(row["system_metadata"], {})


def unshelving(row: InstanceRow) -> bool:
    """Whether the instance is an offloaded one its host's node builds (an unshelve's spawning)."""
    return row["vm_state"] == VmState.SHELVED_OFFLOADED and row["task_state"] == TaskState.SPAWNING


def booted_image(row: InstanceRow) -> str:
    """The image the instance's node builds its disk from: its shelved image while an offloaded
    instance is unshelved, else its ``image_ref`` (empty: it boots from a volume)."""
    return (shelved_image(row) if unshelving(row) else None) or row["image_ref"]


def shelved_image(row: InstanceRow) -> str | None:
    """The image a shelve saved (or saves) the instance's disk to; None: none."""
    image_id = system_metadata(row).get("shelved_image_id")
    return str(image_id) if image_id else None


def host_claim(flavor: Flavor, block_devices: list[BlockDevice]) -> Flavor:
    """What a host must hold for the instance: the flavor, without its root disk when the
    instance boots from a volume (as Nova claims no local disk then)."""
    return {**flavor, "disk": 0} if boot_volume(block_devices) is not None else flavor


def recorded_claim(row: InstanceRow) -> Flavor:
    """``host_claim`` of a recorded instance."""
    return host_claim(from_json(row["flavor"]), from_json(row["block_devices"], []))


class ShownRow(TypedDict):
    """The columns of ``instances`` that ``view`` shows (an ``InstanceRow`` is one): all a page of
    instances reads (``SHOWN_COLUMNS``), not the build's, tasks' and migrations' own."""

    uuid: str
    name: str
    description: str | None
    vm_state: str
    task_state: str | None
    power_state: int
    project_id: str
    user_id: str
    host: str | None
    flavor: str
    image_ref: str
    metadata: str
    key_name: str | None
    access_ip_v4: str
    access_ip_v6: str
    locked_by: str | None
    locked_reason: str | None
    addresses: str
    fault: str | None
    created_at: str
    updated_at: str
    launched_at: str | None
    terminated_at: str | None


SHOWN_COLUMNS: Final = ", ".join(ShownRow.__annotations__)
"""The select list of ``ShownRow``."""


def vm_state_of(row: ShownRow) -> VmState:
    return VmState(row["vm_state"])


def task_state_of(row: ShownRow) -> TaskState | None:
    return None if row["task_state"] is None else TaskState(row["task_state"])


def states_of(row: InstanceRow) -> tuple[VmState, TaskState | None]:
    return vm_state_of(row), task_state_of(row)


def view(row: ShownRow) -> Instance:
    """An instance as the API and events show it."""
    vm_state, task_state = vm_state_of(row), task_state_of(row)
    return {
        "id": row["uuid"],
        "name": row["name"],
        "description": row["description"],
        "status": status_of(vm_state, task_state),
        "vm_state": vm_state,
        "task_state": task_state,
        "power_state": PowerState(row["power_state"]),
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "host": row["host"],
        "flavor": from_json(row["flavor"], {}),
        "image_ref": row["image_ref"],
        "metadata": from_json(row["metadata"], {}),
        "key_name": row["key_name"],
        "access_ip_v4": row["access_ip_v4"],
        "access_ip_v6": row["access_ip_v6"],
        "locked": row["locked_by"] is not None,
        "locked_reason": row["locked_reason"],
        "addresses": from_json(row["addresses"], {}),
        "fault": from_json(row["fault"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "launched_at": row["launched_at"],
        "terminated_at": row["terminated_at"],
    }
