"""What the conductor's servants share: the store, the bus and its clients, the timers, and the one
path every state change takes.

A state change is decided by ``states.transition`` and written by ``Core.transit`` as one
compare-and-swap on the instance's vm_state, task_state and host (``UPDATE ... RETURNING``):
when the row changed meanwhile, the trigger is decided again on the fresh row. Every task the
conductor hands a node is recorded on the row before its cast (``send_task``), so a lost cast
is sent again (``watch.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.conductor.flavors import is_container_flavor
from actors.conductor.migrations import follow as follow_migration
from actors.conductor.schema import (
    UNANNOUNCED,
    InstanceRow,
    ShownRow,
    recorded_claim,
    shelved_image,
    states_of,
    task_state_of,
    view,
    vm_state_of,
)
from actors.conductor.states import ACTION_OF_TASK, Action, Change, Trigger, status_of, transition
from api.conductor import BlockDevice, Cause, Fault, HostStatus, Instance, InstanceChange, Server
from api.image import ImageReader, Images
from api.net import Net
from api.node import DomainFlavor, Node, RebootType
from api.scheduler import Scheduler
from api.volume import VolumeRecords
from bus import AiostackError, Bus, Conflict, NotFound, current_request_id
from runtime.context import caller, check_visible
from runtime.events import publish_event
from runtime.stamps import utcnow
from runtime.states import TaskState, VmState
from runtime.store import Db, Store, from_json

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5
HOSTS_REFRESH = 2.0
HOSTS_TIMEOUT = 5.0
ANNOUNCE_AFTER = 20.0
"""Seconds a recorded change may go without its event before a watch publishes it (longer than
the bus's ``EVENT_TIMEOUT``, the first try's patience)."""
SOFT: RebootType = "SOFT"
HARD: RebootType = "HARD"

NODE_TASKS: dict[TaskState, tuple[str, dict[str, str]]] = {
    TaskState.SPAWNING: (Node.build_and_run_instance.__name__, {}),
    TaskState.POWERING_OFF: (Node.stop_instance.__name__, {}),
    TaskState.POWERING_ON: (Node.start_instance.__name__, {}),
    TaskState.REBOOTING: (Node.reboot_instance.__name__, {"reboot_type": SOFT}),
    TaskState.REBOOTING_HARD: (Node.reboot_instance.__name__, {"reboot_type": HARD}),
    TaskState.DELETING: (Node.terminate_instance.__name__, {}),
    TaskState.REBUILDING: (Node.rebuild_instance.__name__, {}),
    TaskState.IMAGE_SNAPSHOT: (Node.snapshot_instance.__name__, {}),
    TaskState.RESIZE_MIGRATING: (Node.resize_instance.__name__, {}),
    TaskState.RESIZE_FINISH: (Node.finish_resize.__name__, {}),
    TaskState.RESIZE_REVERTING: (Node.revert_resize.__name__, {}),
    TaskState.REBUILD_SPAWNING: (Node.evacuate_instance.__name__, {}),
    TaskState.RESOURCES_CHANGING: (Node.set_resources.__name__, {}),
    TaskState.MIGRATING: (Node.live_migration.__name__, {}),
    TaskState.SHELVING: (Node.shelve_instance.__name__, {}),
    TaskState.SHELVING_IMAGE_UPLOADING: (Node.snapshot_instance.__name__, {}),
    TaskState.SHELVING_OFFLOADING: (Node.shelve_offload_instance.__name__, {}),
    **{
        task: (Node.change_power.__name__, {"action": ACTION_OF_TASK[task]})
        for task in (TaskState.PAUSING, TaskState.UNPAUSING, TaskState.SUSPENDING, TaskState.RESUMING)
    },
}
"""task_state -> the node method (a cast of ``api.node.Node``) that does the node's part, and its
arguments besides the instance (those a row gives: ``task_arguments``). A task's method is looked
up here each time it is sent. A resize's claim (resize_prep), its step between the node's two
(resize_migrated) and its confirmation (resize_confirming) are the conductor's own, and so is an
evacuate's claim (rebuilding, with ``evacuate_from``: never sent to a node), a live change's
(resources_claiming), a live migration's (``migration_step`` claim), and a shelve's
shelving_image_pending_upload and an unshelve's claim (unshelving). An offloaded instance's
spawning is an unshelve's: ``node_call``."""


MIGRATION_TASKS: dict[TaskState, str] = dict.fromkeys(
    (TaskState.RESIZE_FINISH, TaskState.RESIZE_REVERTING), Node.finish_migration.__name__
)
"""A cold migration's node steps where they are not a resize's: the host it goes to (reverting:
the one it returns to) defines the domain from the build request."""


COPY_REMOVED = "copy_removed"
"""A cold migration's revert's ``migration_step`` once its destination's copy is removed."""
REMOVE_COPY_TIMEOUT = 60.0
"""Seconds the destination's node has to destroy a reverted copy (a real guest's QEMU, its disk)."""


UNSHELVE_STEPS = frozenset(
    {(VmState.SHELVED, TaskState.POWERING_ON), (VmState.SHELVED_OFFLOADED, TaskState.SPAWNING)}
)
"""An unshelve's node steps (vm_state, task_state): a shelved domain started, an offloaded one built."""


def action_of(row: InstanceRow, task: TaskState) -> Action:
    """The action the instance's ``task`` belongs to (an evacuate's rebuilding is no rebuild, a
    cold migration's resize_prep... no resize)."""
    if row["evacuate_from"] is not None and task in (TaskState.REBUILDING, TaskState.REBUILD_SPAWNING):
        return Action.EVACUATE
    if row["migrate_from"] is not None and ACTION_OF_TASK[task] is Action.RESIZE:
        return Action.MIGRATE
    if (row["vm_state"], task) in UNSHELVE_STEPS:
        return Action.UNSHELVE
    return ACTION_OF_TASK[task]


def arriving_at(row: InstanceRow) -> str | None:
    """The destination a live migration copies the instance to now, or a cold migration's source
    its disks (its node prepares for it)."""
    task = task_state_of(row)
    copying = task is TaskState.MIGRATING and row["migration_step"] == "copy"
    cold = task is TaskState.RESIZE_MIGRATING and row["migrate_from"] is not None
    return row["migrate_to"] if copying or cold else None


def reverting_copy(row: InstanceRow) -> bool:
    """Whether the instance's cold migration is reverting and its destination's copy is not
    removed yet."""
    reverting = task_state_of(row) is TaskState.RESIZE_REVERTING and row["migrate_from"] is not None
    return reverting and row["migration_step"] != COPY_REMOVED


def node_call(row: InstanceRow, task: TaskState) -> tuple[str, dict[str, Any]]:
    """The node method of the instance's ``task`` and its arguments besides the instance (an
    offloaded instance's spawning is its unshelve)."""
    if task is TaskState.SPAWNING and row["vm_state"] == VmState.SHELVED_OFFLOADED:
        return Node.unshelve_instance.__name__, task_arguments(row, task)
    if row["migrate_from"] is not None and task in MIGRATION_TASKS:
        return MIGRATION_TASKS[task], {}
    if task is TaskState.MIGRATING and row["migration_step"] != "copy":  # switch, or rollback
        return Node.finish_migration.__name__, {}
    if task is TaskState.MIGRATING:
        return Node.live_migration.__name__, {"destination": row["migrate_to"]}
    return NODE_TASKS[task][0], task_arguments(row, task)


def domain_flavor(row: InstanceRow) -> DomainFlavor:
    """The size the instance's ``flavor`` (and its boot) gives its domain."""
    claim = recorded_claim(row)
    flavor: DomainFlavor = {
        "name": claim["name"],
        "vcpus": claim["vcpus"],
        "memory_mb": claim["ram"],
        "disk_gb": claim["disk"],
    }
    if "max_vcpus" in claim:
        flavor["max_vcpus"] = claim["max_vcpus"]
    if "max_ram" in claim:
        flavor["max_memory_mb"] = claim["max_ram"]
    return flavor


def task_arguments(row: InstanceRow, task: TaskState) -> dict[str, Any]:
    """The arguments of the node method of ``task`` besides the instance."""
    power_on = bool(row["resize_power_on"])
    if task is TaskState.IMAGE_SNAPSHOT:
        return {"image_id": str(row["snapshot_image"])}
    if task is TaskState.SHELVING_IMAGE_UPLOADING:
        return {"image_id": str(shelved_image(row))}
    if task is TaskState.RESIZE_MIGRATING and row["migrate_from"] is not None:
        return {"flavor": domain_flavor(row), "destination": row["migrate_to"]}
    if task is TaskState.RESIZE_MIGRATING:
        return {"flavor": domain_flavor(row)}
    if task is TaskState.RESIZE_FINISH:
        return {"power_on": power_on}
    if task is TaskState.RESIZE_REVERTING:
        return {"flavor": domain_flavor(row), "power_on": power_on}
    if task is TaskState.RESOURCES_CHANGING:
        size = domain_flavor(row)
        return {"vcpus": size["vcpus"], "memory_mb": size["memory_mb"]}
    return NODE_TASKS[task][1]


CONTAINERS_REFUSE = frozenset(
    {
        Action.PAUSE, Action.UNPAUSE, Action.SUSPEND, Action.RESUME, Action.ATTACH_INTERFACE,
        Action.DETACH_INTERFACE, Action.REBUILD, Action.CREATE_IMAGE, Action.RESIZE, Action.EVACUATE,
        Action.SET_RESOURCES, Action.TRIGGER_CRASH_DUMP, Action.MIGRATE, Action.LIVE_MIGRATION,
        Action.SHELVE, Action.SHELVE_OFFLOAD, Action.UNSHELVE,
    }
)  # fmt: skip
"""What a container (an instance of a flavor whose ``capabilities:hypervisor_type`` is ``lxc``) is
refused: an LXC node starts, stops, reboots and deletes containers and attaches and detaches their
volumes, nothing else yet."""


@dataclass(frozen=True, slots=True)
class Moved:
    """An instance ``transit`` took through a trigger: the row before and after, and the change."""

    before: InstanceRow
    row: InstanceRow
    change: Change

    @property
    def states_changed(self) -> bool:
        """Whether its vm_state or task_state changed (not only its power state or columns)."""
        return states_of(self.row) != states_of(self.before)


class Core:
    """The conductor's shared state: store, bus, clients of the other services, host liveness."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        spawn: Callable[..., Any],
        *,
        task_timeout: float,
        ack_timeout: float,
        announce_after: float = ANNOUNCE_AFTER,
    ) -> None:
        self.bus = bus
        self.store = store
        self.spawn: Callable[..., Any] = spawn
        """The actor's ``spawn(coro, name=...)``: background work that crashes the actor if it raises."""
        self.task_timeout = task_timeout
        self.ack_timeout = ack_timeout
        self.announce_after = announce_after
        self.scheduler = Scheduler.client(bus)
        self.images = ImageReader.client(bus)
        self.image_writer = Images.client(bus)
        self.net = Net.client(bus)
        self.volumes = VolumeRecords.client(bus)
        self.hosts = Scheduler.client(bus, timeout=HOSTS_TIMEOUT)
        self.hosts_alive: dict[str, bool] = {}
        """Each host's liveness as the scheduler last said (refreshed at most every ``HOSTS_REFRESH``)."""
        self._hosts_checked = 0.0
        self.announced: dict[str, int] = {}
        """Versions whose events this process published, not yet written (``record_announced``)."""
        self.unannounced_since: dict[tuple[str, int], float] = {}
        """When this process first saw each (instance, version) without its event."""

    def node(self, host: str, *, timeout: float | None = None) -> Node:
        """A client of one compute host."""
        return Node.client(self.bus, host=host, timeout=timeout)

    # -- reading --------------------------------------------------------------------------

    async def row(self, instance_uuid: str) -> InstanceRow:
        """The live instance, if the caller may see it.

        :raises NotFound: no such instance, or another project's.
        """
        row = await self.fresh(instance_uuid)
        if row is None:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        check_visible("Instance", instance_uuid, row["project_id"])
        return row

    async def fresh(self, instance_uuid: str) -> InstanceRow | None:
        """The live instance as the store has it now (no visibility check)."""
        return await self.store.fetchone(
            "SELECT * FROM instances WHERE uuid = ? AND deleted = 0", (instance_uuid,), row=InstanceRow
        )

    async def placed(self, instance_uuid: str, host: str, *, arriving: bool = False) -> InstanceRow:
        """The live instance, if it is recorded on ``host``: the only instances a node's call may
        name (``api.conductor.ConductorForNodes``, whose ``host`` is the subject's); with
        ``arriving``, also if ``host`` is where a live migration copies it now (``arriving_at``).

        :raises NotFound: no such live instance on ``host``, whether it exists elsewhere or not
            (a node learns nothing of other hosts' instances).
        """
        row = await self.fresh(instance_uuid)
        if row is not None and arriving and arriving_at(row) == host:
            return row
        if row is None or row["host"] != host or row["evacuate_from"] == host:
            # an instance being evacuated away from its host is no longer that host's node's
            raise NotFound(f"Instance {instance_uuid} could not be found on host {host}.")
        return row

    async def shown(self, row: InstanceRow) -> Server:
        """An instance as the API shows it: its view and whether its host is up."""
        await self.refresh_hosts(unless_known=row["host"])
        return self.as_server(row)

    def as_server(self, row: ShownRow) -> Server:
        """An instance as the API shows it, its host's liveness as last refreshed."""
        return {**view(row), "host_status": self.host_status(row["host"])}

    @staticmethod
    def check_lock(row: InstanceRow) -> None:
        """:raises Conflict: the instance is locked and the caller is no admin (Nova's lock)."""
        ctx = caller()
        if row["locked_by"] is not None and ctx is not None and ctx.user_id is not None and not ctx.is_admin:
            raise Conflict(f"Instance {row['uuid']} is locked")

    def host_status(self, host: str | None) -> HostStatus:
        """Nova's ``host_status``: UP, DOWN, UNKNOWN (no word yet), or "" with no host."""
        if not host:
            return ""
        alive = self.hosts_alive.get(host)
        return "UNKNOWN" if alive is None else "UP" if alive else "DOWN"

    async def refresh_hosts(self, unless_known: str | None = None) -> None:
        """Ask the scheduler which hosts are alive, unless it was asked very recently and knew
        ``unless_known`` (a host that joined since the last answer is asked about at once)."""
        recent = time.monotonic() - self._hosts_checked < HOSTS_REFRESH
        if recent and (unless_known is None or unless_known in self.hosts_alive):
            return
        try:
            hosts = await self.hosts.list_host_liveness()
        except AiostackError as exc:
            log.info("host liveness unknown: %s", exc)
            return
        self.hosts_alive = {host["host"]: host["alive"] for host in hosts}
        self._hosts_checked = time.monotonic()

    # -- state changes --------------------------------------------------------------------

    @staticmethod
    def decide(row: InstanceRow, trigger: Trigger) -> Change | None:
        """What ``trigger`` does to the instance (``states.transition``)."""
        return transition(vm_state_of(row), task_state_of(row), trigger)

    def require(self, row: InstanceRow, action: Action) -> Change:
        """What ``action`` does to the instance.

        :raises Conflict: the instance's states do not allow the action, or it is a container
            and containers do not do it (``CONTAINERS_REFUSE``).
        """
        if action in CONTAINERS_REFUSE and is_container_flavor(from_json(row["flavor"], {})):
            raise Conflict(
                f"Cannot '{action}' instance {row['uuid']}: it runs as a container (its flavor's"
                " capabilities:hypervisor_type is lxc), which aiostack does not do that to"
            )
        change = self.decide(row, action)
        if change is None:
            task = row["task_state"]
            raise Conflict(
                f"Cannot '{action}' instance {row['uuid']} while it is in vm_state {row['vm_state']}"
                + (f", task_state {task}" if task else "")
            )
        return change

    async def transit(
        self, row: InstanceRow, trigger: Trigger, columns: Mapping[str, Any] | None = None
    ) -> Moved | None:
        """Write what ``trigger`` does to the instance, with ``columns``, if the row still has the
        states and host it was decided on; else decide again on the fresh row (a few times).

        None when the trigger changes nothing (refused, ignored, or the instance is gone or moved
        to another host meanwhile).
        """
        host = row["host"]
        for _ in range(CAS_ATTEMPTS):
            change = self.decide(row, trigger)
            if change is None:
                return None
            updated = await self._write(row, change, columns or {})
            if updated is not None:
                await follow_migration(self.store, row, updated)
                return Moved(row, updated, change)
            fresh = await self.fresh(row["uuid"])
            if fresh is None or fresh["host"] != host:
                return None
            row = fresh
        log.warning("instance %s: kept changing under %s; left as it is", row["uuid"], trigger)
        return None

    async def _write(
        self, row: InstanceRow, change: Change, columns: Mapping[str, Any]
    ) -> InstanceRow | None:
        now = utcnow()
        changes: dict[str, Any] = dict(columns)
        if change.vm_state != row["vm_state"]:
            changes["vm_state"] = change.vm_state
        if change.task_state != row["task_state"]:
            changes |= {"task_state": change.task_state, "task_acked": 0, "task_sends": 0}
            changes.setdefault("migration_step", None)  # a step is its task's
        if change.power_state is not None:
            changes["power_state"] = change.power_state
        if change.launched:
            changes["launched_at"] = now
        if (
            row["admin_pass"] is not None
            and change.vm_state is not VmState.BUILDING
            and change.task_state is None
        ):
            changes["admin_pass"] = (
                None  # the build (or rebuild) ended: the password was delivered, or never will be
            )
        if change.deleted:
            changes |= {"deleted": 1, "terminated_at": now}
        changes |= {"updated_at": now, "progress_at": time.time()}
        assignments = ", ".join([*(f"{column} = ?" for column in changes), "version = version + 1"])
        return await self.store.fetchone(
            f"UPDATE instances SET {assignments} WHERE uuid = ? AND deleted = 0 AND vm_state = ?"
            " AND task_state IS NOT DISTINCT FROM ? AND host IS NOT DISTINCT FROM ? RETURNING *",
            [*changes.values(), row["uuid"], row["vm_state"], row["task_state"], row["host"]],
            row=InstanceRow,
        )

    async def end_task(
        self,
        row: InstanceRow,
        trigger: Trigger,
        action: Action,
        result: str,
        message: str | None = None,
        columns: Mapping[str, Any] | None = None,
        step: str | None = None,
    ) -> Moved | None:
        """End the instance's task by ``trigger`` (writing ``columns``), record its last ``step``
        (a success), finish its ``action`` with ``result`` and publish its new state; None when
        the trigger changed nothing."""
        moved = await self.transit(row, trigger, columns)
        if moved is None:
            return None
        if states_of(moved.before) == states_of(row):  # else another report ended the task first
            if step is not None:
                await self.record_step(row["uuid"], action, step, row["host"], "Success")
            await self.finish_action(row["uuid"], action, result, message)
        await self.publish(moved.row)
        return moved

    async def touch(self, instance_uuid: str, task_state: TaskState) -> None:
        """The instance made progress in its task (a resend, a retry): its deadline starts again."""
        await self.store.execute(
            "UPDATE instances SET updated_at = ?, progress_at = ? WHERE uuid = ? AND deleted = 0"
            " AND task_state IS NOT DISTINCT FROM ?",
            (utcnow(), time.time(), instance_uuid, task_state),
        )

    async def begin(
        self, instance_uuid: str, action: Action, columns: Mapping[str, Any] | None = None
    ) -> tuple[InstanceRow, bool]:
        """Start ``action``: set the task it runs under (writing ``columns`` with it), record it,
        publish ``instance.<task_state>``.

        Returns the instance and whether it started now (False: the same request sent again, or
        a delete asked again, which finds its task running).

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: the instance's states do not allow the action.
        """
        row = await self.row(instance_uuid)
        if await self.asked_already(action, instance_uuid) is not None:
            return row, False  # this request, sent again: its reply was lost
        self.check_lock(row)
        change = self.require(row, action)
        if change.task_state == row["task_state"]:
            return row, False
        moved = await self.transit(row, action, columns)
        if moved is None:
            raise Conflict(f"Instance {instance_uuid} changed state meanwhile; try again")
        await self.start_action(instance_uuid, action)
        await self.publish(moved.row, f"instance.{moved.change.task_state}")
        return moved.row, True

    async def finish_delete(self, row: InstanceRow, trigger: Trigger, cause: Cause) -> InstanceChange | None:
        """The instance is gone (``trigger`` says how): its claim released, it is DELETED.

        :raises AiostackError: the scheduler did not release the claim (the delete is not finished).
        """
        if self.decide(row, trigger) is None:
            return None
        await self.scheduler.release(instance_uuid=row["uuid"])
        moved = await self.transit(row, trigger)
        if moved is None:
            return None
        await self.finish_action(row["uuid"], Action.DELETE, "Success")
        await self._delete_volumes_on_termination(row)
        await self._drop_on_other_host(row)
        await self.delete_shelved_image(row)
        return await self.publish_change(moved.row, cause)

    async def _drop_on_other_host(self, row: InstanceRow) -> None:
        """A migration's instance deleted: the node of the migration's other host removes the
        domain it may hold (else its orphan sweep will)."""
        for host in {row["migrate_from"], row["migrate_to"]} - {row["host"], None}:
            assert host is not None
            try:
                await self.node(host).drop_moved_instance(instance_uuid=row["uuid"])
            except AiostackError as exc:
                log.warning(
                    "instance %s: %s did not take the removal of its domain: %s", row["uuid"], host, exc
                )

    async def _delete_volumes_on_termination(self, row: InstanceRow) -> None:
        """Delete the volumes the instance was booted with ``delete_on_termination`` (freed by now:
        its node detached them before it undefined the domain). One that cannot be deleted stays,
        available, and is said in the log."""
        devices: list[BlockDevice] = from_json(row["block_devices"], [])
        for device in devices:
            if not device.get("delete_on_termination"):
                continue
            try:
                await self.volumes.delete(volume_id=device["volume_id"])
            except NotFound:
                pass
            except AiostackError as exc:
                log.error(
                    "instance %s: its volume %s (delete_on_termination) could not be deleted: %s",
                    row["uuid"],
                    device["volume_id"],
                    exc,
                )

    async def delete_shelved_image(self, row: InstanceRow) -> None:
        """Delete the image a shelve saved the instance's disk to, if any (gone already: fine);
        one the image service does not delete stays, and is said in the log."""
        image_id = shelved_image(row)
        if image_id is None:
            return
        try:
            await self.image_writer.delete(image_id=image_id)
        except NotFound:
            pass
        except AiostackError as exc:
            log.error("instance %s: shelved image %s not deleted: %s", row["uuid"], image_id, exc)

    async def release_everywhere(self, instance_uuid: str) -> None:
        """The instance's ports and volume attachments (what its node gives back when it has one)."""
        await self.net.deallocate_for_instance(instance_uuid=instance_uuid)
        await self.volumes.detach_all(instance_uuid=instance_uuid)

    async def publish(
        self, row: InstanceRow, event_type: str | None = None, *, fault: Fault | None = None
    ) -> Instance:
        """Publish the instance's state as ``event_type`` (``instance.<status>`` by default), with
        ``fault`` instead of its own when given; return it as published."""
        instance = view(row)
        if fault is not None:
            instance["fault"] = fault
        await self._publish(row, instance, event_type)
        return instance

    async def publish_change(self, row: InstanceRow, cause: Cause) -> InstanceChange:
        """Publish the instance's new state as ``instance.<status>``, with the cause of the change."""
        instance: InstanceChange = {**view(row), "cause": cause}
        await self._publish(row, instance, None)
        return instance

    async def publish_moved(self, moved: Moved, cause: Cause) -> InstanceChange:
        """The instance as ``moved`` left it, published if its states changed (a power state or
        column alone is not an event)."""
        if moved.states_changed:
            return await self.publish_change(moved.row, cause)
        return {**view(moved.row), "cause": cause}

    async def _publish(self, row: InstanceRow, instance: Instance, event_type: str | None) -> None:
        """Publish, then note the row's version announced (written with the next watch round)."""
        status = status_of(instance["vm_state"], instance["task_state"])
        event_type = event_type or f"instance.{status.lower()}"
        await publish_event(
            self.bus,
            "instance",
            instance["id"],
            instance["project_id"],
            event_type,
            dict(instance),
            message_id=f"{instance['id']}/{row['version']}/{event_type}",
        )
        announced = self.announced.get(row["uuid"], 0)
        self.announced[row["uuid"]] = max(announced, row["version"])

    async def record_announced(self) -> None:
        """Write the versions announced since the last call (one transaction)."""
        announced, self.announced = self.announced, {}
        if announced:
            await self.store.executemany(
                "UPDATE instances SET announced_version = ? WHERE uuid = ? AND announced_version < ?",
                [(version, uuid, version) for uuid, version in announced.items()],
            )

    async def announce_missed(self, now: float) -> None:
        """Publish the state of each instance whose last change has had no event for
        ``announce_after`` seconds (its conductor died between recording and publishing, or the
        stream did not answer): as ``instance.<status>``, the message id the first try used for
        that event type, so the stream keeps one if both got through."""
        rows = await self.store.fetchall(UNANNOUNCED, row=InstanceRow)
        pending = {(row["uuid"], row["version"]) for row in rows}
        self.unannounced_since = {key: self.unannounced_since.get(key, now) for key in pending}
        for row in rows:
            if now - self.unannounced_since[(row["uuid"], row["version"])] > self.announce_after:
                log.warning("instance %s: change %d had no event; publishing it", row["uuid"], row["version"])
                await self.publish(row)

    # -- node tasks -----------------------------------------------------------------------

    async def send_task(self, row: InstanceRow) -> None:
        """Cast the node its part of the instance's current task (again, when redelivering)."""
        task, host = task_state_of(row), row["host"]
        assert task is not None and host is not None, f"instance {row['uuid']} has no task or no host"
        method, arguments = node_call(row, task)
        await self.store.execute(
            "UPDATE instances SET task_sent_at = ?, task_sends = task_sends + 1 WHERE uuid = ?",
            (time.time(), row["uuid"]),
        )
        if reverting_copy(row) and not await self._remove_reverted_copy(row):
            return
        await getattr(self.node(host), method)(instance_uuid=row["uuid"], **arguments)
        step = "sent" if not row["task_sends"] else "sent_again"
        await self.record_step(row["uuid"], action_of(row, task), f"{method}:{step}", host, "Success")

    async def _remove_reverted_copy(self, row: InstanceRow) -> bool:
        """A cold migration's revert, before its source defines and starts the domain again: the
        destination's node removes its copy (Nova's ``revert_resize`` on the destination), so that
        the guest never runs on two hosts at once; then ``migration_step`` says it is gone. A
        destination that is down is not waited for, as for an evacuate: its orphan sweep removes
        the copy once the revert ends. Whether the source may go on (else the watch sends the
        step again)."""
        uuid, destination = row["uuid"], row["migrate_to"]
        assert destination is not None
        if self.hosts_alive.get(destination):
            try:
                await self.node(destination, timeout=REMOVE_COPY_TIMEOUT).remove_reverted_copy(
                    instance_uuid=uuid
                )
            except AiostackError as exc:
                log.warning("instance %s: %s did not remove its copy: %s", uuid, destination, exc)
                await self.record_step(
                    uuid, Action.REVERT_RESIZE, "remove_reverted_copy", destination, "Error", str(exc)
                )
                return False
            result, details = "Success", None
        else:
            result, details = "Error", "host down: its copy is left to its orphan sweep"
        await self.store.execute(
            "UPDATE instances SET migration_step = ? WHERE uuid = ? AND task_state = ?",
            (COPY_REMOVED, uuid, TaskState.RESIZE_REVERTING),
        )
        await self.record_step(
            uuid, Action.REVERT_RESIZE, "remove_reverted_copy", destination, result, details
        )
        return True

    async def on_to_node(
        self,
        row: InstanceRow,
        trigger: Trigger,
        action: Action,
        step: str,
        columns: dict[str, Any] | None = None,
        step_host: str | None = None,
    ) -> InstanceRow:
        """The conductor's ``step`` of ``action`` (taken on ``step_host``, else the instance's host)
        is done: ``trigger`` takes the instance on to its node's task (``columns`` written with it),
        recorded, published and cast. The instance as it now is (as it was found when the trigger
        changed nothing: deleted meanwhile)."""
        moved = await self.transit(row, trigger, columns)
        if moved is None:
            return await self.fresh(row["uuid"]) or row
        await self.record_step(row["uuid"], action, step, step_host or row["host"], "Success")
        await self.publish(moved.row, f"instance.{moved.change.task_state}")
        await self.send_task(moved.row)
        return moved.row

    # -- the actions log ------------------------------------------------------------------

    async def asked_already(
        self, action: Action, instance_uuid: str | None = None, *, db: Db | None = None
    ) -> InstanceRow | None:
        """The instance this request (its id, the caller's project) already started ``action`` on
        (on ``instance_uuid`` when given), None when it did not."""
        ctx = caller()
        request_id = current_request_id()
        if request_id is None or ctx is None:
            return None
        return await (db or self.store).fetchone(
            "SELECT i.* FROM instance_actions a JOIN instances i ON i.uuid = a.instance_uuid"
            " WHERE a.request_id = ? AND a.action = ? AND a.project_id IS NOT DISTINCT FROM ?"
            " AND (i.uuid = ? OR CAST(? AS TEXT) IS NULL)",
            (request_id, action, ctx.project_id, instance_uuid, instance_uuid),
            row=InstanceRow,
        )

    async def start_action(
        self,
        instance_uuid: str,
        action: Action,
        *,
        finished: bool = False,
        db: Db | None = None,
    ) -> None:
        """Record an action the caller starts (``db``: inside that transaction)."""
        ctx = caller()
        now = utcnow()
        values = (
            instance_uuid,
            action,
            current_request_id(),
            ctx.user_id if ctx else None,
            ctx.project_id if ctx else None,
            now,
            now if finished else None,
            "Success" if finished else None,
        )
        sql = (
            "INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id,"
            " start_time, finish_time, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        if db is not None:
            await db.execute(sql, values)
        else:
            await self.store.execute(sql, values)

    async def finish_action(
        self, instance_uuid: str, action: Action, result: str, message: str | None = None
    ) -> None:
        """Finish the instance's latest unfinished ``action``."""
        await self.store.execute(
            "UPDATE instance_actions SET finish_time = ?, result = ?, message = ? WHERE id = ("
            "SELECT MAX(id) FROM instance_actions"
            " WHERE instance_uuid = ? AND action = ? AND finish_time IS NULL)",
            (utcnow(), result, message, instance_uuid, action),
        )

    async def record_step(
        self,
        instance_uuid: str,
        action: Action,
        event: str,
        host: str | None,
        result: str,
        details: str | None = None,
    ) -> None:
        """One step of the instance's latest ``action`` (Nova's instance action events)."""
        await self.store.execute(
            "INSERT INTO instance_action_events (action_id, event, host, time, result, details)"
            " SELECT MAX(id), ?, ?, ?, ?, ? FROM instance_actions WHERE instance_uuid = ? AND action = ?"
            " HAVING MAX(id) IS NOT NULL",
            (event, host, utcnow(), result, details, instance_uuid, action),
        )
