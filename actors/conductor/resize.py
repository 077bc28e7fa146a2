"""Resize: an instance given another flavor on its host, then the change confirmed or reverted.

Nova's sequence (``states.py`` decides each step): ``resize_instance`` checks the flavor and the
quota and starts resize_prep; the scheduler takes the new flavor's claim beside the old one in
one transaction (``claim_resize``: the host must hold both until the resize is confirmed or
reverted, so it is never over-committed and never without the instance's claim);
resize_migrating: the node powers the domain off and defines it again with the new vCPUs and
RAM (growing its disk); resize_migrated; resize_finish: the node starts it again if it ran;
RESIZED (VERIFY_RESIZE), showing the new flavor. ``confirm_resize`` gives the old claim back,
``revert_resize`` has the node give the domain its old flavor back, then the new claim is given
back and the held one is the instance's again (one transaction, ``revert_resize``); either
ends active, or stopped when the domain is not running (a stopped server stays stopped).

Every step is recorded on the row before it is taken (the task supervision of ``watch.py``
resends a step a node did not take), and a resize whose step made no progress for the task
timeout is settled (``resolve_stalled``): a claim that did not finish is undone; a node step
that its node will not finish ends in ERROR with one claim, that of the flavor the instance is
left recorded with. A RESIZED instance is confirmed by itself ``confirm_window`` seconds after
(Nova's ``resize_confirm_window``; 0: never).

A cold migration (``migrate_instance``, Nova's ``migrate``) is a resize to the instance's own
flavor on another host, with the same steps: ``migrate_from`` records the host it leaves; the
claim is taken on the best other host (``migrate_to``) beside the source's; resize_migrating: the
source's node powers the domain off (a real guest's local disks then copied to the destination,
prepared as for a live migration: ``node.migrate``); resize_finish: the instance is recorded on
its destination, whose node defines the domain from the build request, or takes the copied one
(its ports' binding and volumes' attachments moved there, as an evacuate's), and starts it if it
ran. The source's node keeps its domain, shut off, until the migration ends (Nova's): confirm
gives the source's claim back and has it removed; revert records the instance on its source
again, whose node takes its domain back (ports and volumes back; a real guest's disk as it left)
and starts it if it ran, then the destination's claim is given back and its domain removed. A
node step that will not finish ends in ERROR on the host the domain was moving from (still
there), the destination's arriving volume attachments dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from actors.conductor.core import COPY_REMOVED, Core
from actors.conductor.flavors import find_flavor
from actors.conductor.migrations import Kind
from actors.conductor.quotas import UNITS, instance_usage, limits_of
from actors.conductor.recorded import begin_recorded, claim_beside, drop_moved
from actors.conductor.schema import EXPIRED_RESIZES, InstanceRow, task_state_of, view, vm_state_of
from actors.conductor.states import ACTION_OF_TASK, Action, Report
from api.conductor import Cause, Fault, Flavor, Instance, InstanceChange, ServerResizes, boot_volume
from bus import AiostackError, Conflict, InvalidRequest, NotFound, NoValidHost, QuotaExceeded, request_scope
from runtime.stamps import utcnow
from runtime.states import Lifecycle, PowerState, TaskState, VmState
from runtime.store import Store, from_json, to_json

log = logging.getLogger(__name__)

NEW_FLAVOR_DEFINED = frozenset(
    {TaskState.RESIZE_MIGRATED, TaskState.RESIZE_FINISH, TaskState.RESIZE_CONFIRMING}
)
"""The steps of a resize by which its node has given the domain the new flavor."""
MOVING_FROM: dict[TaskState, Literal["migrate_from", "migrate_to"]] = {
    TaskState.RESIZE_FINISH: "migrate_from",
    TaskState.RESIZE_REVERTING: "migrate_to",
}
"""A cold migration's node steps: the column naming the host the domain moves from in each."""
MIGRATING_HYPERVISORS = frozenset({"test", "qemu", "kvm"})
"""The hypervisors whose hosts cold-migrate: libvirt's test driver (no disk to copy) and QEMU (the
source's libvirtd copies the disks to the destination's: ``node.migrate``; a host whose QEMU runs
in its node's process, ``qemu:///embed``, cannot take part, and the migration fails)."""
MAX_STEP_SENDS = 3
"""A node step that made no progress is sent again, while its host is up, this often in all."""


async def check_resize_quota(store: Store, project_id: str, old: Flavor, new: Flavor) -> None:
    """:raises QuotaExceeded: the new flavor's extra cores or RAM go past the project's limit."""
    limits = await limits_of(store, project_id)
    used = await instance_usage(store, project_id)
    extra = {"cores": new["vcpus"] - old["vcpus"], "ram": new["ram"] - old["ram"]}
    for resource, amount in extra.items():
        limit = limits[resource]
        if amount > 0 and limit >= 0 and used[resource] + amount > limit:
            raise QuotaExceeded(
                f"Quota exceeded for {resource}: Requested {amount}, but already used {used[resource]}"
                f" of {limit} {UNITS[resource]}"
            )


def power_report(row: InstanceRow) -> Report:
    """What ends a confirm: the domain's power state as last recorded (active or stopped)."""
    return Report.RUNNING if row["power_state"] == PowerState.RUNNING else Report.NOT_RUNNING


class Resizes(ServerResizes):
    """Serves ``api.conductor.ServerResizes``; the node's steps, the watch's stalls and the
    auto-confirm come here too (see the module's docstring)."""

    def __init__(self, core: Core, *, confirm_window: float = 0.0) -> None:
        self.core = core
        self.confirm_window = confirm_window

    # -- what a user asks -------------------------------------------------------------------

    async def resize_instance(self, *, instance_uuid: str, flavor_ref: str) -> Instance:
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.RESIZE, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        self.core.check_lock(row)
        self.core.require(row, Action.RESIZE)
        flavor = await find_flavor(self.core.store, flavor_ref)
        if flavor is None:
            raise InvalidRequest("Unable to locate requested flavor.")
        old: Flavor = from_json(row["flavor"])
        if flavor["id"] == old["id"]:
            raise InvalidRequest("Resize requires a flavor change.")
        volume_backed = boot_volume(from_json(row["block_devices"], [])) is not None
        if not volume_backed and flavor["disk"] < old["disk"]:
            raise InvalidRequest(
                f"Resize error: Unable to resize disk down: flavor {flavor['name']} has a {flavor['disk']} GB"
                f" disk, the server's is {old['disk']} GB."
            )
        await check_resize_quota(self.core.store, row["project_id"], old, flavor)
        columns = {
            "flavor": to_json(flavor),
            "old_flavor": row["flavor"],
            "resize_power_on": int(row["vm_state"] == VmState.ACTIVE),
            "resized_at": None,
        }
        row, _ = await begin_recorded(
            self.core,
            instance_uuid,
            Action.RESIZE,
            Kind.RESIZE,
            columns,
            status="pre-migrating",
            dest=row["host"],
            new_flavor=flavor,
        )
        if task_state_of(row) is TaskState.RESIZE_PREP:
            row = await self._claim(row)
        return view(row)

    async def migrate_instance(self, *, instance_uuid: str) -> Instance:
        """Cold migration (``api.conductor.ServerMigrations.migrate_instance``): a resize to the
        instance's own flavor, claimed on another host (``migrate_from``: the one it leaves)."""
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.MIGRATE, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        self.core.check_lock(row)
        self.core.require(row, Action.MIGRATE)
        await self._check_movable(row)
        columns = {
            "old_flavor": row["flavor"],
            "resize_power_on": int(row["vm_state"] == VmState.ACTIVE),
            "resized_at": None,
            "migrate_from": row["host"],
        }
        row, _ = await begin_recorded(
            self.core,
            instance_uuid,
            Action.MIGRATE,
            Kind.MIGRATION,
            columns,
            status="pre-migrating",
            dest=None,
        )
        if task_state_of(row) is TaskState.RESIZE_PREP:
            row = await self._claim(row)
        return view(row)

    async def _check_movable(self, row: InstanceRow) -> None:
        """:raises Conflict: the instance has no host, or its host runs real guests (a cold
        migration defines the domain again on its destination: the disk would not follow)."""
        hosts = {host["host"]: host for host in await self.core.hosts.list_hosts()}
        source = row["host"]
        kind = hosts[source]["hypervisor_type"] if source in hosts else None
        if kind not in MIGRATING_HYPERVISORS:
            raise Conflict(
                f"Cannot 'migrate' instance {row['uuid']}: its host {source} runs {kind or 'no'} guests,"
                " which aiostack does not migrate"
            )

    async def confirm_resize(self, *, instance_uuid: str) -> Instance:
        row, _ = await self.core.begin(instance_uuid, Action.CONFIRM_RESIZE)
        if task_state_of(row) is TaskState.RESIZE_CONFIRMING:
            row = await self._confirm(row)
        return view(row)

    async def revert_resize(self, *, instance_uuid: str) -> Instance:
        row = await self.core.row(instance_uuid)
        columns = {
            "flavor": row["old_flavor"] or row["flavor"],
            "old_flavor": row["flavor"],
            "resize_power_on": int(row["power_state"] == PowerState.RUNNING),
        }
        if row["migrate_from"] is not None:
            columns["host"] = row["migrate_from"]  # its domain is defined there again
        row, _ = await self.core.begin(instance_uuid, Action.REVERT_RESIZE, columns)
        if task_state_of(row) is TaskState.RESIZE_REVERTING:
            await self.core.send_task(row)
        return view(row)

    # -- the steps --------------------------------------------------------------------------

    async def _claim(self, row: InstanceRow) -> InstanceRow:
        """resize_prep: claim the new flavor beside the old (a migration: on another host, recorded
        as ``migrate_to``), then hand the node its first step.

        :raises Conflict: the host has no room for the new flavor (the resize is undone).
        :raises InvalidRequest: no other host has room for a migration (it is undone).
        """
        migrating = row["migrate_from"] is not None
        try:
            host = await claim_beside(self.core, row, elsewhere=migrating)
        except (NoValidHost, NotFound) as exc:
            if migrating:
                await self._undo_prep(row, f"No valid host was found. {exc}")
                raise InvalidRequest(f"No valid host was found. {exc}") from None
            await self._undo_prep(row, f"No valid host was found for the resize: {exc}")
            raise Conflict(f"No valid host was found for the resize: {exc}") from None
        # deleted meanwhile: its delete gives both claims back
        return await self.core.on_to_node(
            row,
            Report.RESIZE_CLAIMED,
            self._action(row),
            "claim_resize",
            {"migrate_to": host} if migrating else None,
            step_host=host,
        )

    async def _undo_prep(self, row: InstanceRow, reason: str) -> None:
        """A resize_prep that cannot go on: no new claim, the old flavor again, as it was."""
        await self.core.scheduler.revert_resize(instance_uuid=row["uuid"])
        columns = {"flavor": row["old_flavor"] or row["flavor"], "old_flavor": None}
        moved = await self.core.transit(row, Report.RESIZE_FAILED, columns)
        if moved is None:
            return
        await self.core.finish_action(row["uuid"], self._action(row), "Error", reason)
        await self.core.publish(moved.row)

    @staticmethod
    def _action(row: InstanceRow) -> Action:
        """The action of the instance's resize steps: a resize, or a cold migration."""
        return Action.MIGRATE if row["migrate_from"] is not None else Action.RESIZE

    async def step_done(self, row: InstanceRow) -> None:
        """The node finished resize_migrating (``task_done``): on to resize_finish."""
        if task_state_of(row) is not TaskState.RESIZE_MIGRATING:
            return
        moved = await self.core.transit(row, Report.TASK_DONE)
        if moved is not None:
            await self.core.record_step(
                row["uuid"], self._action(row), "resize_instance", row["host"], "Success"
            )
            await self.core.publish(moved.row, f"instance.{TaskState.RESIZE_MIGRATED}")
            await self.finish(moved.row)

    async def finished(
        self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause
    ) -> InstanceChange | None:
        """resize_finish -> RESIZED: the node reported the resized domain's power state."""
        moved = await self.core.transit(row, trigger, {"resized_at": time.time()})
        if moved is None:
            return None
        if task_state_of(moved.before) is not TaskState.RESIZE_FINISH:
            return await self.core.publish_moved(moved, cause)  # another report of the domain ended it
        action = self._action(row)
        await self.core.record_step(row["uuid"], action, "finish_resize", row["host"], "Success")
        await self.core.finish_action(row["uuid"], action, "Success")
        return await self.core.publish_change(moved.row, cause)

    async def finish(self, row: InstanceRow) -> None:
        """resize_migrated -> resize_finish: the node starts the resized domain (if it ran); a
        migration's is recorded on its destination, whose node defines it there."""
        columns = {"host": row["migrate_to"]} if row["migrate_from"] is not None else None
        moved = await self.core.transit(row, Report.RESIZE_FINISHING, columns)
        if moved is not None:
            await self.core.publish(moved.row, f"instance.{TaskState.RESIZE_FINISH}")
            await self.core.send_task(moved.row)

    async def _confirm(self, row: InstanceRow) -> InstanceRow:
        """resize_confirming: the old claim given back, the instance as its domain is."""
        cause: Cause = {"domain_event": None, "detail": "resize confirmed", "host": row["host"]}
        await self.end(row, power_report(row), cause)
        if row["host"] is not None and row["migrate_from"] is None:
            try:
                await self.core.node(row["host"]).confirm_resize(instance_uuid=row["uuid"])
            except AiostackError as exc:
                log.warning("instance %s: its node did not take the confirm: %s", row["uuid"], exc)
        return await self.core.fresh(row["uuid"]) or row

    async def end(self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause) -> InstanceChange | None:
        """End a confirm or a revert (``trigger`` gives the power state it ends with): its claims
        settled first (the new one kept, or the held one back), then the states."""
        task = task_state_of(row)
        uuid = row["uuid"]
        if task is TaskState.RESIZE_CONFIRMING:
            await self.core.scheduler.confirm_resize(instance_uuid=uuid)
        else:
            await self.core.scheduler.revert_resize(instance_uuid=uuid)
        moved = await self.core.transit(row, trigger, {"old_flavor": None, "resized_at": None})
        if moved is None:
            return None
        action = Action.CONFIRM_RESIZE if task is TaskState.RESIZE_CONFIRMING else Action.REVERT_RESIZE
        await self.core.finish_action(uuid, action, "Success")
        left = row["migrate_from"] if task is TaskState.RESIZE_CONFIRMING else row["migrate_to"]
        if left is not None:
            await drop_moved(self.core, row["uuid"], left)
        return await self.core.publish_change(moved.row, cause)

    # -- what the watch does ----------------------------------------------------------------

    async def confirm_expired(self, now: float) -> None:
        """Confirm the resizes RESIZED for longer than ``confirm_window`` (0: never)."""
        if self.confirm_window <= 0:
            return
        rows = await self.core.store.fetchall(
            EXPIRED_RESIZES, (VmState.RESIZED, now - self.confirm_window), row=InstanceRow
        )
        for row in rows:
            with request_scope():
                try:
                    await self.confirm_resize(instance_uuid=row["uuid"])
                    log.info("instance %s: resize confirmed after %.0f s", row["uuid"], self.confirm_window)
                except AiostackError as exc:
                    log.warning("instance %s: its resize could not be confirmed: %s", row["uuid"], exc)

    async def resolve_stalled(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """A resize's step made no progress for the task timeout: go on, send it again, or end it."""
        uuid, host = row["uuid"], row["host"]
        if task is TaskState.RESIZE_PREP:
            await self._undo_prep(row, reason)
        elif task is TaskState.RESIZE_MIGRATED:
            await self.finish(row)
        elif task is TaskState.RESIZE_CONFIRMING:
            await self._confirm(row)
        elif host is not None and self.core.hosts_alive.get(host) and row["task_sends"] < MAX_STEP_SENDS:
            await self.core.touch(uuid, task)
            await self.core.send_task(row)
        else:
            await self.fail(row, task, f"{reason}; {'host down' if host else 'no host'}")

    async def _settle_claims(self, row: InstanceRow, host: str | None = None) -> dict[str, Any]:
        """A resize that ends otherwise than confirmed or reverted keeps one claim, that of the
        flavor its domain was last given: the new one once the node defined it (resize_migrated
        and after), the old one before it and during a revert (``flavor`` since the revert
        began); a migration's, that of the host the instance is recorded on (or ``host``, where
        it goes back to). The instance's columns that go with it."""
        task = task_state_of(row)
        defined = task in NEW_FLAVOR_DEFINED or (task is None and vm_state_of(row) is VmState.RESIZED)
        if row["migrate_from"] is not None:
            defined = (host or row["host"]) == row["migrate_to"]
        if defined:
            await self.core.scheduler.confirm_resize(instance_uuid=row["uuid"])
        else:
            await self.core.scheduler.revert_resize(instance_uuid=row["uuid"])
        keep = defined or task is TaskState.RESIZE_REVERTING
        return {
            "flavor": row["flavor"] if keep else row["old_flavor"] or row["flavor"],
            "old_flavor": None,
            "resized_at": None,
            **({"host": host} if host is not None else {}),
        }

    async def abandon(
        self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause
    ) -> InstanceChange | None:
        """libvirt's word ends a resize otherwise (the guest crashed, or was paused): one claim kept."""
        columns = await self._settle_claims(row)
        moved = await self.core.transit(row, trigger, columns)
        if moved is None:
            return None
        task = task_state_of(row)
        if task is not None:
            reason = f"{task} ended by {trigger.name.lower()}"
            await self.core.finish_action(row["uuid"], ACTION_OF_TASK[task], "Error", reason)
        return await self.core.publish_change(moved.row, cause)

    async def fail(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """A node's step its node will not finish: ERROR, with one claim (``_settle_claims``). A
        migration whose node would not define the domain is recorded again on the host it was
        moving from, whose domain is still there (dropped only once the move is done); a revert's,
        once the destination removed its copy, stays on its source, which kept its disk."""
        uuid = row["uuid"]
        fault: Fault = {"code": 500, "message": reason[:1000], "created": utcnow()}
        moving = row["migrate_from"] is not None and row["migration_step"] != COPY_REMOVED
        back = MOVING_FROM.get(task) if moving else None
        columns = {**await self._settle_claims(row, back and row[back]), "fault": to_json(fault)}
        moved = await self.core.transit(row, Report.RESIZE_FAILED, columns)
        if moved is None:
            return
        if row["migrate_from"] is not None:
            await self.core.volumes.drop_arriving(instance_uuid=uuid)
        action = Action.REVERT_RESIZE if task is TaskState.RESIZE_REVERTING else self._action(row)
        await self.core.finish_action(uuid, action, "Error", reason)
        await self.core.publish(moved.row)
