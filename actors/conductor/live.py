"""Live migration: a running instance moved to another host (Nova's ``os-migrateLive``).

The instance is ACTIVE (or PAUSED: a real guest, which stays paused on its destination),
``migrating`` (MIGRATING) from start to end; its step is recorded on the
row (``migration_step``) before each cast, and its migration record (``migrations.py``) goes
queued, preparing, running, post-migrating, then completed (or cancelled, failed, error):

* ``claim`` (the conductor's): the scheduler takes the flavor's claim on the destination beside
  the instance's own (``claim_resize`` ``elsewhere``: the host asked for, forced, or the best
  other one); none: nothing moved, 400.
* ``copy``: the source's node copies the running guest (``live_migration``; on the test driver
  its memory at the node's ``migration_bandwidth``; a real guest's destination prepared first,
  ``target``, with an arriving attachment of each of its volumes: NBD exports of its own),
  reporting its progress
  (``migration_progress``, which answers whether to go on: an abort stops it) and ``task_done``.
* ``switch``: the instance is recorded on the destination, whose node defines and starts the
  domain from its build request with its ports (bound there) and volumes (attached there); its
  power state ends the migration: the source's claim given back, its domain removed.
* ``rollback``: a destination that fails (or makes no progress): the instance is recorded on its
  source again, whose domain kept running, the destination's claim given back; the source's node
  takes its ports and volumes back; it ends ACTIVE there, the record ``failed``.

An abort (of a running copy, as Nova's before 2.65) rolls back before the switch: the destination's claim
given back, ``cancelled``; the source's node stops copying at its next report. A step that makes
no progress for the task timeout is sent again while its host is up (3 sends), else the
migration is rolled back (before the switch: nothing moved; after it: ``rollback``); a rollback
that cannot finish ends in ERROR with one claim, on the source.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.conductor.core import Core, arriving_at
from actors.conductor.migrations import Kind, list_migrations, set_status
from actors.conductor.recorded import begin_recorded, claim_beside, drop_moved
from actors.conductor.schema import InstanceRow, task_state_of, view
from actors.conductor.states import Action, Report
from api.conductor import (
    Cause,
    CopyVerdict,
    Fault,
    Instance,
    InstanceChange,
    MigrationRecord,
    MigrationStatus,
)
from api.node import LiveMigrationTarget
from bus import AiostackError, Conflict, InvalidRequest, NotFound, NoValidHost
from runtime.stamps import utcnow
from runtime.states import Lifecycle, TaskState, VmState
from runtime.store import to_json

log = logging.getLogger(__name__)

LIVE_HYPERVISORS = frozenset({"test", "qemu", "kvm"})
"""The hypervisors whose hosts migrate live: libvirt's test driver (the node moves the domain
itself) and QEMU (libvirt's ``migrateToURI3``, between hosts with a libvirtd each: a host whose
QEMU runs in its node's process, ``qemu:///embed``, refuses to take part)."""
PREPARE_TIMEOUT = 300.0
"""Seconds a destination may take to prepare for a real guest (its image fetched, its networks made)."""
IN_PROGRESS: frozenset[MigrationStatus] = frozenset({"queued", "preparing", "running", "post-migrating"})
MAX_STEP_SENDS = 3
ENDED: dict[str, Any] = {"migration_step": None}


class LiveMigrations:
    """The conductor's part of live migrations (see the module's docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # -- what an operator asks --------------------------------------------------------------

    async def live_migrate_instance(self, instance_uuid: str, host: str | None) -> Instance:
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.LIVE_MIGRATION, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        self.core.check_lock(row)
        self.core.require(row, Action.LIVE_MIGRATION)
        source = row["host"]
        hosts = {known["host"]: known for known in await self.core.hosts.list_hosts()}
        if host is not None:
            if host not in hosts:
                raise InvalidRequest(f"Compute host {host} could not be found.")
            if host == source:
                raise InvalidRequest(f"The target host can't be the same one: {host}.")
            if not hosts[host]["alive"]:
                raise InvalidRequest(f"Compute service of {host} is unavailable at this time.")
        kind = hosts[source]["hypervisor_type"] if source in hosts else None
        if kind not in LIVE_HYPERVISORS:
            raise InvalidRequest(
                f"Migration pre-check error: instance {instance_uuid}'s host {source} runs {kind or 'no'}"
                " guests, which aiostack does not migrate live between hosts"
            )
        if kind == "test" and row["vm_state"] == VmState.PAUSED:
            raise Conflict(
                f"Cannot '{Action.LIVE_MIGRATION}' instance {instance_uuid} while it is in vm_state"
                f" {VmState.PAUSED}: a paused guest of libvirt's test driver is not migrated live"
            )
        columns = {"migrate_from": source, "migrate_to": None, "migration_step": "claim"}
        row, _ = await begin_recorded(
            self.core, instance_uuid, Action.LIVE_MIGRATION, Kind.LIVE, columns, status="queued", dest=host
        )
        if task_state_of(row) is TaskState.MIGRATING and row["migration_step"] == "claim":
            row = await self._claim(row, host)
        return view(row)

    async def server_migration(self, instance_uuid: str, migration_id: int) -> MigrationRecord:
        """:raises NotFound: no such live migration of the instance in progress."""
        await self.core.row(instance_uuid)
        found = await list_migrations(self.core.store, instance_uuid=instance_uuid, migration_id=migration_id)
        if (
            not found
            or found[0]["migration_type"] != "live-migration"
            or found[0]["status"] not in IN_PROGRESS
        ):
            raise NotFound(
                f"In-progress live migration {migration_id} is not found for server {instance_uuid}."
            )
        return found[0]

    async def _running(self, instance_uuid: str, migration_id: int, method: str) -> InstanceRow:
        """The instance, whose live migration ``migration_id`` is running (Nova's checks, in order).

        :raises NotFound: no such instance, or no such migration of it.
        :raises Conflict: the instance is not migrating.
        :raises InvalidRequest: the migration is not running (or no live migration).
        """
        row = await self.core.row(instance_uuid)
        if task_state_of(row) is not TaskState.MIGRATING:
            raise Conflict(
                f"Cannot '{method}' instance {instance_uuid} while it is in task_state {row['task_state']}"
            )
        found = await list_migrations(self.core.store, instance_uuid=instance_uuid, migration_id=migration_id)
        if not found:
            raise NotFound(f"Migration {migration_id} for instance {instance_uuid} could not be found.")
        status = found[0]["status"]
        if status != "running" or found[0]["migration_type"] != "live-migration":
            raise InvalidRequest(
                f"Migration {migration_id} state of instance {instance_uuid} is {status}."
                f" Cannot {method} while the migration is in this state."
            )
        return row

    async def abort(self, instance_uuid: str, migration_id: int) -> None:
        row = await self._running(instance_uuid, migration_id, "abort live migration")
        await self._end_before_switch(row, "cancelled", "aborted by an administrator")

    async def force_complete(self, instance_uuid: str, migration_id: int) -> None:
        await self._running(instance_uuid, migration_id, "force complete")
        await self.core.store.execute(
            "UPDATE migrations SET force_complete = 1 WHERE id = ?", (migration_id,)
        )

    # -- the steps --------------------------------------------------------------------------

    async def _claim(self, row: InstanceRow, host: str | None) -> InstanceRow:
        """claim: the destination's claim beside the source's, then the source's node copies.

        :raises InvalidRequest: no host can take it (nothing moved).
        """
        uuid = row["uuid"]
        try:
            dest = await claim_beside(self.core, row, elsewhere=True, host=host)
        except (NoValidHost, NotFound) as exc:
            reason = f"No valid host was found. {exc}"
            await self._end_before_switch(row, "error", reason)
            raise InvalidRequest(reason) from None
        moved = await self.core.transit(row, Report.LIVE_STEP, {"migrate_to": dest, "migration_step": "copy"})
        if moved is None:  # deleted meanwhile: its delete gives both claims back
            return await self.core.fresh(uuid) or row
        assert moved.row["migration_id"] is not None
        await set_status(self.core.store, moved.row["migration_id"], "preparing")
        await self.core.record_step(uuid, Action.LIVE_MIGRATION, "claim_resize", dest, "Success")
        await self.core.publish(moved.row, f"instance.{TaskState.MIGRATING}")
        await self.core.send_task(moved.row)
        return moved.row

    async def progress(
        self, instance_uuid: str, host: str, total: int, processed: int, remaining: int
    ) -> CopyVerdict:
        """The source's node copied this much: the record shows it; go on, stop or finish now."""
        row = await self.core.placed(instance_uuid, host)
        if task_state_of(row) is not TaskState.MIGRATING or row["migration_step"] != "copy":
            return "stop"
        migration_id = row["migration_id"]
        assert migration_id is not None, f"instance {instance_uuid} migrates with no record"
        await self.core.touch(instance_uuid, TaskState.MIGRATING)
        await set_status(
            self.core.store,
            migration_id,
            "running",
            memory_total_bytes=total,
            memory_processed_bytes=processed,
            memory_remaining_bytes=remaining,
        )
        forced = await self.core.store.fetchone(
            "SELECT force_complete FROM migrations WHERE id = ?", (migration_id,)
        )
        return "finish_now" if forced and forced["force_complete"] else "go_on"

    async def target(self, instance_uuid: str, host: str) -> LiveMigrationTarget:
        """A real guest's source asks where it goes (a live migration, or a cold one's disk
        copy): its destination prepares (with its ports and its own volume attachments).

        :raises Conflict: the instance is not being copied, or the destination cannot take it.
        """
        row = await self.core.placed(instance_uuid, host)
        dest, task = arriving_at(row), task_state_of(row)
        if dest is None or task is None:
            raise Conflict(f"Instance {instance_uuid} is not being migrated from {host} now")
        await self.core.touch(instance_uuid, task)
        ports = await self.core.net.list_ports(device_id=instance_uuid)
        node = self.core.node(dest, timeout=PREPARE_TIMEOUT)
        try:
            volumes = await self.core.volumes.attach_arriving(instance_uuid=instance_uuid, host=dest)
            if any(volume["connection"]["transport"] != "nbd" for volume in volumes):
                raise Conflict(
                    f"Instance {instance_uuid} has volumes that are files of one host (no NBD export):"
                    " another host cannot reach them"
                )
            target = await node.prepare_live_migration(
                instance_uuid=instance_uuid, ports=ports, volumes=volumes
            )
        except AiostackError:
            await self.core.volumes.drop_arriving(instance_uuid=instance_uuid)
            raise
        if task is TaskState.MIGRATING:
            await self.core.record_step(
                instance_uuid, Action.LIVE_MIGRATION, "pre_live_migration", dest, "Success"
            )
        return target

    async def copied(self, row: InstanceRow) -> None:
        """copy is done (``task_done``): the instance is recorded on its destination (switch)."""
        if row["migration_step"] != "copy" or row["migrate_to"] is None:
            return
        columns = {"host": row["migrate_to"], "migration_step": "switch", "task_acked": 0, "task_sends": 0}
        moved = await self.core.transit(row, Report.LIVE_STEP, columns)
        if moved is None:
            return
        assert row["migration_id"] is not None
        await set_status(self.core.store, row["migration_id"], "post-migrating")
        await self.core.record_step(
            row["uuid"], Action.LIVE_MIGRATION, "live_migration", row["host"], "Success"
        )
        await self.core.publish(moved.row, f"instance.{TaskState.MIGRATING}")  # now on its destination
        await self.core.send_task(moved.row)

    async def end(self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause) -> InstanceChange | None:
        """The instance's domain says how the migration ends: the claim of the host it is recorded
        on kept, the other given back; completed on the destination, else failed (or error)."""
        uuid, step = row["uuid"], row["migration_step"]
        arrived = row["host"] == row["migrate_to"]
        if arrived:
            await self.core.scheduler.confirm_resize(instance_uuid=uuid)
        else:
            await self.core.scheduler.revert_resize(instance_uuid=uuid)
        migration_id = row["migration_id"]
        moved = await self.core.transit(row, trigger, ENDED)
        if moved is None or task_state_of(moved.before) is not TaskState.MIGRATING:
            return None  # ended meanwhile (by another report of the same domain)
        kept = (
            moved.row["task_state"] is None and moved.row["vm_state"] == row["vm_state"]
        )  # running or paused
        status: MigrationStatus = "completed" if arrived and kept else "failed" if kept else "error"
        if migration_id is not None:
            await set_status(self.core.store, migration_id, status)
        if status == "completed":
            await self.core.record_step(
                uuid, Action.LIVE_MIGRATION, "post_live_migration", row["host"], "Success"
            )
            await self.core.finish_action(uuid, Action.LIVE_MIGRATION, "Success")
            await drop_moved(self.core, uuid, row["migrate_from"])
        else:
            reason = f"live migration {status} in step {step} ({trigger.name.lower()})"
            await self.core.record_step(
                uuid, Action.LIVE_MIGRATION, "rollback_live_migration", row["host"], "Error", reason
            )
            await self.core.finish_action(uuid, Action.LIVE_MIGRATION, "Error", reason)
            if step == "rollback" and row["migrate_to"] is not None:
                await drop_moved(self.core, uuid, row["migrate_to"])
        return await self.core.publish_change(moved.row, cause)

    async def _end_before_switch(self, row: InstanceRow, status: MigrationStatus, reason: str) -> None:
        """Before the switch nothing moved: the destination's arriving volume attachments and its
        claim (if taken) given back, the instance ACTIVE on its host, the record ``status``; what
        the destination prepared (a real guest's) removed there."""
        uuid, dest = row["uuid"], row["migrate_to"]
        await self.core.volumes.drop_arriving(instance_uuid=uuid)  # first: a crash after it ends it again
        await self.core.scheduler.revert_resize(instance_uuid=uuid)
        migration_id = row["migration_id"]
        moved = await self.core.transit(row, Report.LIVE_ENDED, ENDED)
        if moved is None:
            return
        if migration_id is not None:
            await set_status(self.core.store, migration_id, status)
        await self.core.finish_action(uuid, Action.LIVE_MIGRATION, "Error", reason)
        await self.core.publish(moved.row)
        if dest is not None:
            await drop_moved(self.core, uuid, dest)

    async def rollback(self, row: InstanceRow, reason: str) -> None:
        """After the switch: recorded on its source again (its domain kept running there), the
        destination's claim given back; the source's node takes its ports and volumes back."""
        uuid, source = row["uuid"], row["migrate_from"]
        if row["migration_step"] != "switch" or source is None:
            return
        await self.core.scheduler.revert_resize(instance_uuid=uuid)
        columns = {"host": source, "migration_step": "rollback", "task_acked": 0, "task_sends": 0}
        moved = await self.core.transit(row, Report.LIVE_STEP, columns)
        if moved is None:
            return
        await self.core.record_step(
            uuid, Action.LIVE_MIGRATION, "rollback_live_migration", row["host"], "Error", reason
        )
        await self.core.publish(moved.row, f"instance.{TaskState.MIGRATING}")  # back on its source
        await self.core.send_task(moved.row)

    async def failed(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """The destination's node could not define the domain (``build_failed``): roll back; or
        the source's could not copy a real guest (its domain runs on there): nothing moved."""
        if task is TaskState.MIGRATING and row["migration_step"] == "copy":
            await self._end_before_switch(row, "failed", reason)
        elif task is TaskState.MIGRATING:
            await self.rollback(row, reason)

    # -- what the watch does ----------------------------------------------------------------

    async def resolve_stalled(self, row: InstanceRow, reason: str) -> None:
        """A step made no progress for the task timeout: do it again, or roll back, or end it."""
        uuid, host, step = row["uuid"], row["host"], row["migration_step"]
        if step == "claim":
            await self.core.touch(uuid, TaskState.MIGRATING)
            try:
                await self._claim(row, None)
            except AiostackError as exc:
                log.warning("instance %s: its live migration's claim did not go through: %s", uuid, exc)
            return
        if host is not None and self.core.hosts_alive.get(host) and row["task_sends"] < MAX_STEP_SENDS:
            await self.core.touch(uuid, TaskState.MIGRATING)
            await self.core.send_task(row)
        elif step == "copy":
            await self._end_before_switch(row, "error", f"{reason}; the source gave no word")
        elif step == "switch":
            await self.rollback(row, f"{reason}; the destination gave no word")
        else:
            await self._fail(row, f"{reason}; {'host down' if host else 'no host'}")

    async def _fail(self, row: InstanceRow, reason: str) -> None:
        """A rollback that cannot finish: ERROR, with one claim (the source's, where it is)."""
        await self.core.scheduler.revert_resize(instance_uuid=row["uuid"])
        fault: Fault = {"code": 500, "message": reason[:1000], "created": utcnow()}
        migration_id = row["migration_id"]
        moved = await self.core.transit(row, Report.LIVE_FAILED, {**ENDED, "fault": to_json(fault)})
        if moved is None:
            return
        if migration_id is not None:
            await set_status(self.core.store, migration_id, "error")
        await self.core.finish_action(row["uuid"], Action.LIVE_MIGRATION, "Error", reason)
        await self.core.publish(moved.row)
