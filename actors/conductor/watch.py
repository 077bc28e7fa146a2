"""The conductor's task supervision: no instance stays in BUILD or a task state, whatever dies.

Every task the conductor hands a node (build, stop, start, reboot, pause..., delete) is
recorded on the instance row before the cast (``Core.send_task``): which task, when it was
sent, whether the node took it, when the instance last made progress. The conductor's sqlite
file is the durable queue, so a cast lost with a crashed node process or nats-server is sent
again:

* **delivery**: the node acknowledges a task when it starts it (``get_build_request`` for a
  build, ``task_progress`` for the others); a task not acknowledged within ``ack_timeout`` is
  sent again while its host is up (the node's handlers are idempotent).
* **progress**: every change the node reports, and its periodic ``task_progress`` for the
  work it has in hand (sent with its heartbeat), moves ``progress_at``. A task with no
  progress for ``task_timeout`` (60 s) is resolved: a build is rescheduled where that is
  safe (its node is down, or answers that it has no domain for it), else ends in ERROR with
  a fault saying what happened; a delete on a down node is finished here (the node removes
  the orphan domain when it comes back); a power change is settled from the domain's real
  state, or given up with the host down.
* **reschedule**: a build that fails on a node, or stalls, goes to another host (the hosts
  tried are excluded) up to ``max_build_attempts`` in all, as Nova's retries do (``build.py``).

It also answers the other actors' "which of these instances are still alive?"
(``live_instances``, their orphan sweep at start) and "which were deleted since?"
(``deleted_since``, their periodic ones), with which they release what they hold for instances
that are gone, and "where is this instance, and whose is it?" (``placement``), against which they
check a node's calls; a node's "which instances are recorded on me?" (``list_host_instances``, and
``recorded_here`` for the ids of its domains; the host the subject's); and the operator's reads:
``aiostack audit``'s ``audit_instances``, and each instance's actions and their steps.

Every round reads the work in flight alone, through indexes of it (``schema``: the instances with
a task, resized or shelved ones, the NIC changes unfinished, the changes not announced): however
many instances rest, a round costs what is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from actors.conductor.build import Builder
from actors.conductor.core import NODE_TASKS, Core, action_of, arriving_at
from actors.conductor.evacuate import Evacuations
from actors.conductor.interfaces import Interfaces
from actors.conductor.lifecycle import DomainReports
from actors.conductor.live import LiveMigrations
from actors.conductor.live_resources import LiveResources
from actors.conductor.migrations import end_orphans
from actors.conductor.resize import Resizes
from actors.conductor.schema import (
    DELETED_SINCE,
    TASKS_IN_FLIGHT,
    InstanceRow,
    booted_image,
    recorded_claim,
    task_state_of,
    view,
    vm_state_of,
)
from actors.conductor.shelve import Shelves, stalled_here
from actors.conductor.states import Action, Report
from api.conductor import (
    Audit,
    BlockDevice,
    ConductorForOwners,
    ConductorOperator,
    CopyVerdict,
    Deletions,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    NodeTasks,
    Placement,
    boot_volume,
)
from api.node import LiveMigrationTarget
from api.node import PowerState as DomainPower
from bus import AiostackError, InvalidRequest, NotFound, request_scope
from runtime.context import check_visible
from runtime.stamps import STAMP_FORMAT, stamp
from runtime.states import LIVE_RESOURCE_TASKS, RESIZE_TASKS, TaskState
from runtime.store import from_json

log = logging.getLogger(__name__)

DELETIONS_OVERLAP = 30.0
"""Seconds each ``deleted_since`` answer's ``until`` lies before its time: a delete being written
meanwhile, or stamped by a replica whose clock is a little behind, is in the next answer too."""
MAX_TASK_SENDS = 3
"""A stalled build or delete is sent again while its node answers, this often."""
DOMAIN_QUERY_TIMEOUT = 5.0


class TaskWatch(NodeTasks, ConductorForOwners, ConductorOperator):
    """Serves ``api.conductor.NodeTasks``, ``ConductorForOwners`` and ``ConductorOperator``; its
    ``watch_forever`` sends unacknowledged tasks again and resolves the stalled ones."""

    def __init__(
        self,
        core: Core,
        builder: Builder,
        reports: DomainReports,
        resizes: Resizes,
        evacuations: Evacuations,
        live_resources: LiveResources,
        live: LiveMigrations,
        shelves: Shelves,
        interfaces: Interfaces,
    ) -> None:
        self.core = core
        self.interfaces = interfaces
        self.builder = builder
        self.reports = reports
        self.resizes = resizes
        self.evacuations = evacuations
        self.live_resources = live_resources
        self.live = live
        self.shelves = shelves

    # -- what nodes, owners and the operator ask --------------------------------------------

    async def task_progress(self, *, instance_uuids: list[str], host: str) -> int:
        """A node took these instances' tasks, or is still working on them: they make progress.
        Only those recorded on the node's ``host`` count (the others are left as they are)."""
        if not instance_uuids:
            return 0
        marks = ", ".join("?" * len(instance_uuids))
        return await self.core.store.execute(
            f"UPDATE instances SET task_acked = 1, progress_at = ? WHERE host = ? AND deleted = 0"
            f" AND task_state IS NOT NULL AND uuid IN ({marks})",
            (time.time(), host, *instance_uuids),
        )

    async def list_host_instances(self, *, host: str) -> list[Instance]:
        """Every live instance recorded on the calling node's ``host`` (it reconciles libvirt with
        these), but those being evacuated away from it (their domain there is stale)."""
        rows = await self.core.store.fetchall(
            "SELECT * FROM instances WHERE host = ? AND deleted = 0 AND coalesce(evacuate_from, '') != ?",
            (host, host),
            row=InstanceRow,
        )
        return [view(row) for row in rows]

    async def recorded_here(self, *, instance_uuids: list[str], host: str) -> list[str]:
        if not instance_uuids:
            return []
        marks = ", ".join("?" * len(instance_uuids))
        rows = await self.core.store.fetchall(
            f"SELECT uuid FROM instances WHERE uuid IN ({marks}) AND deleted = 0"
            " AND ((host = ? AND coalesce(evacuate_from, '') != ?) OR ? IN (migrate_from, migrate_to))",
            (*instance_uuids, host, host, host),
        )
        return [row["uuid"] for row in rows]

    async def migration_progress(
        self,
        *,
        instance_uuid: str,
        memory_total_bytes: int,
        memory_processed_bytes: int,
        memory_remaining_bytes: int,
        host: str,
    ) -> CopyVerdict:
        return await self.live.progress(
            instance_uuid, host, memory_total_bytes, memory_processed_bytes, memory_remaining_bytes
        )

    async def live_migration_target(self, *, instance_uuid: str, host: str) -> LiveMigrationTarget:
        return await self.live.target(instance_uuid, host)

    async def live_instances(self, *, instance_uuids: list[str]) -> list[str]:
        """Which of these instances still exist (not deleted): the rest hold nothing any more."""
        if not instance_uuids:
            return []
        marks = ", ".join("?" * len(instance_uuids))
        rows = await self.core.store.fetchall(
            f"SELECT uuid FROM instances WHERE deleted = 0 AND uuid IN ({marks})", instance_uuids
        )
        return [row["uuid"] for row in rows]

    async def deleted_since(self, *, since: str | None) -> Deletions:
        """:raises InvalidRequest: ``since`` is no time as the conductor stamps them."""
        until = stamp(datetime.fromtimestamp(time.time() - DELETIONS_OVERLAP, UTC))
        if since is None:
            return {"instance_uuids": [], "until": until}
        try:
            datetime.strptime(since, STAMP_FORMAT)
        except ValueError:
            raise InvalidRequest(f"Invalid time {since!r}: not as deleted_since answers them") from None
        rows = await self.core.store.fetchall(DELETED_SINCE, (since,))
        return {"instance_uuids": [row["uuid"] for row in rows], "until": until}

    async def placement(self, *, instance_uuid: str) -> Placement:
        """Where a live instance is, whose, and the image (for one booted from a volume, the image
        the volume was made from) and volumes it uses.

        :raises NotFound: no such live instance.
        """
        row = await self.core.fresh(instance_uuid)
        if row is None:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        devices: list[BlockDevice] = from_json(row["block_devices"], [])
        boot = boot_volume(devices)
        return {
            "instance_uuid": row["uuid"],
            # being evacuated away from its host: no node's, until the destination is recorded
            "host": None if row["evacuate_from"] == row["host"] else row["host"],
            "project_id": row["project_id"],
            "image_ref": booted_image(row) or (boot is not None and boot.get("image_id")) or "",
            "volumes": [device["volume_id"] for device in devices],
            "arriving": arriving_at(row),
        }

    async def audit_instances(self) -> Audit:
        """Every live instance with its host, states and seconds since its last progress."""
        now = time.time()
        rows = await self.core.store.fetchall("SELECT * FROM instances WHERE deleted = 0", row=InstanceRow)
        return {
            "task_timeout": self.core.task_timeout,
            "instances": [
                {
                    "uuid": row["uuid"],
                    "name": row["name"],
                    "project_id": row["project_id"],
                    "host": row["host"],
                    "vm_state": vm_state_of(row),
                    "task_state": task_state_of(row),
                    "fault": from_json(row["fault"]),
                    "idle_s": round(now - row["progress_at"], 1),
                    "vcpus": recorded_claim(row)["vcpus"],
                    "memory_mb": recorded_claim(row)["ram"],
                    "other_host": row["migrate_to"]
                    if row["host"] == row["migrate_from"]
                    else row["migrate_from"],
                }
                for row in rows
            ],
        }

    async def _seen(self, instance_uuid: str, deleted_too: bool) -> None:
        """:raises NotFound: no such instance the caller may see (live, unless ``deleted_too``)."""
        if not deleted_too:
            await self.core.row(instance_uuid)
            return
        row = await self.core.store.fetchone(
            "SELECT project_id FROM instances WHERE uuid = ?", (instance_uuid,)
        )
        if row is None:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        check_visible("Instance", instance_uuid, row["project_id"])

    async def list_actions(self, *, instance_uuid: str, deleted_too: bool = False) -> list[InstanceAction]:
        await self._seen(instance_uuid, deleted_too)
        return await self.core.store.fetchall(
            "SELECT * FROM instance_actions WHERE instance_uuid = ? ORDER BY id",
            (instance_uuid,),
            row=InstanceAction,
        )

    async def list_action_events(
        self, *, instance_uuid: str, deleted_too: bool = False
    ) -> list[InstanceActionEvent]:
        """The steps of the instance's actions, oldest first, each with its action's name."""
        await self._seen(instance_uuid, deleted_too)
        return await self.core.store.fetchall(
            "SELECT e.action_id, a.action, e.event, e.host, e.time, e.result, e.details"
            " FROM instance_action_events e"
            " JOIN instance_actions a ON a.id = e.action_id WHERE a.instance_uuid = ? ORDER BY e.id",
            (instance_uuid,),
            row=InstanceActionEvent,
        )

    # -- the watch ------------------------------------------------------------------------

    async def watch_forever(self) -> None:
        """Every ≤ 1 s: refresh host liveness, send unacknowledged tasks again, resolve stalled ones,
        confirm the resizes past their window, offload the instances shelved past theirs, settle the
        NIC changes no one sees through, record the events published and publish those missed."""
        interval = max(0.2, min(1.0, self.core.ack_timeout / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.core.refresh_hosts()
                await self._check_tasks()
                await self._end_orphan_migrations()
                await self.resizes.confirm_expired(time.time())
                await self.interfaces.settle_stalled()
                await self.shelves.offload_expired(time.time())
                await self.core.record_announced()
                await self.core.announce_missed(time.time())
            except Exception:
                log.exception("task watch round failed; next round in %.1f s", interval)

    async def _end_orphan_migrations(self) -> None:
        """Migration records a stopped conductor made but never started a task with: ``error``."""
        made_before = stamp(datetime.now(UTC) - timedelta(seconds=self.core.task_timeout))
        for migration_id in await end_orphans(self.core.store, made_before):
            log.warning("migration %d: no instance started it (its conductor stopped); error", migration_id)

    async def _check_tasks(self) -> None:
        now = time.time()
        rows = await self.core.store.fetchall(TASKS_IN_FLIGHT, row=InstanceRow)
        for row in rows:
            task = task_state_of(row)
            assert task is not None
            if now - row["progress_at"] > self.core.task_timeout:
                with request_scope():
                    await self._resolve_stalled(row, task)
            elif (
                task in NODE_TASKS
                and not (task is TaskState.REBUILDING and row["evacuate_from"] is not None)  # the conductor's
                and not (task is TaskState.MIGRATING and row["migration_step"] == "claim")  # the conductor's
                and not row["task_acked"]
                and now - (row["task_sent_at"] or 0) > self.core.ack_timeout
                and (row["host"] is None or self.core.hosts_alive.get(row["host"], True))
            ):
                log.info(
                    "instance %s: node %s did not take %s; sending it again", row["uuid"], row["host"], task
                )
                await self.core.send_task(row)

    async def _node_domain(self, host: str | None, instance_uuid: str) -> DomainPower | None:
        """What the host's node says of the instance's domain, None if it is down or cannot say."""
        if host is None or not self.core.hosts_alive.get(host):
            return None
        try:
            node = self.core.node(host, timeout=DOMAIN_QUERY_TIMEOUT)
            return await node.get_power_state(instance_uuid=instance_uuid)
        except AiostackError:
            return None

    async def _resolve_stalled(self, row: InstanceRow, task: TaskState) -> None:
        host, uuid = row["host"], row["uuid"]
        idle = time.time() - row["progress_at"]
        reason = f"{task} made no progress for {idle:.0f} s" + (f" on {host}" if host else "")
        log.warning("instance %s: %s", uuid, reason)
        await self.core.record_step(uuid, action_of(row, task), "stalled", host, "Error", reason)
        if task is TaskState.SCHEDULING:
            await self.core.touch(uuid, task)
            self.builder.resume_scheduling(row)
            return
        if task in RESIZE_TASKS:
            await self.resizes.resolve_stalled(row, task, reason)
            return
        if task in LIVE_RESOURCE_TASKS:
            await self.live_resources.resolve_stalled(row, task, reason)
            return
        if task is TaskState.MIGRATING:
            await self.live.resolve_stalled(row, reason)
            return
        if action_of(row, task) is Action.EVACUATE:
            await self.evacuations.resolve_stalled(row, task, reason)
            return
        if stalled_here(row, task):
            await self.shelves.resolve_stalled(row, task, reason)
            return
        domain = await self._node_domain(host, uuid)
        resend = domain is not None and row["task_sends"] < MAX_TASK_SENDS
        if task is TaskState.SPAWNING:
            if domain is not None and domain["running"]:
                await self._settle_power(row, running=True)
            elif resend:
                await self.core.touch(uuid, task)
                await self.core.send_task(row)
            elif domain is not None and domain["exists"]:
                await self.builder.fail_build(
                    uuid, f"{reason}; its domain on {host} does not start", host=host
                )
            else:
                await self.builder.reschedule(row, reason)
        elif task is TaskState.DELETING:
            if resend:
                await self.core.touch(uuid, task)
                await self.core.send_task(row)
            else:
                await self._delete_here(row, reason)
        elif domain is not None:
            await self._settle_power(row, running=domain["running"])
        else:
            moved = await self.core.transit(row, Report.TASK_ABANDONED)
            if moved is not None:
                await self.core.finish_action(uuid, action_of(row, task), "Error", f"{reason}; host down")
                await self.core.publish(moved.row)

    async def _settle_power(self, row: InstanceRow, *, running: bool) -> None:
        """Settle the instance's task from the power state its node says its domain has (if the
        instance is still on that host)."""
        fresh = await self.core.fresh(row["uuid"])
        if fresh is not None and fresh["host"] == row["host"]:
            await self.reports.settle_power(fresh, running=running)

    async def _delete_here(self, row: InstanceRow, reason: str) -> None:
        """Finish a delete without the node (it is down or does not answer): release everything
        here; the node removes the orphan domain when it reconciles."""
        try:
            await self.core.release_everywhere(row["uuid"])
            await self.core.finish_delete(
                row, Report.DELETED_HERE, {"domain_event": None, "detail": reason, "host": row["host"]}
            )
        except AiostackError as exc:
            log.warning("instance %s: local delete must wait: %s", row["uuid"], exc)
            await self.core.touch(row["uuid"], TaskState.DELETING)
