"""libvirt's word on an instance's domain (step 29 and after): what makes it ACTIVE, SHUTOFF, DELETED.

A node hands the conductor each lifecycle event of its domains (``domain_event``), the power
states it sees without an event (``sync_power_state``: a node that restarted, a power change
that found the domain already there), a soft reboot's end (``task_done``) and a delete that
found no domain (``domain_gone``). ``states.transition`` says what each does. Each comes from
the node of the instance's host (the subject names the calling host, and only that node may
publish there): a report about an instance recorded elsewhere, or nowhere, is refused
``NotFound`` and changes nothing.
"""

from __future__ import annotations

from actors.conductor.core import Core
from actors.conductor.evacuate import Evacuations
from actors.conductor.live import LiveMigrations
from actors.conductor.live_resources import LiveResources
from actors.conductor.resize import Resizes
from actors.conductor.schema import InstanceRow, task_state_of, vm_state_of
from actors.conductor.shelve import Shelves, in_shelve
from actors.conductor.states import RESIZE_STEPS, Action, Report
from api.conductor import Cause, InstanceChange, NodeReports
from runtime.states import LIVE_RESOURCE_TASKS, RESIZE_TASKS, SHELVE_TASKS, Lifecycle, TaskState, VmState


class DomainReports(NodeReports):
    """Serves ``api.conductor.NodeReports`` (each call from the node of the instance's host: any
    other is refused ``NotFound`` by ``Core.placed``, and changes nothing)."""

    def __init__(
        self,
        core: Core,
        resizes: Resizes,
        evacuations: Evacuations,
        live_resources: LiveResources,
        live: LiveMigrations,
        shelves: Shelves,
    ) -> None:
        self.core = core
        self.resizes = resizes
        self.evacuations = evacuations
        self.live_resources = live_resources
        self.live = live
        self.shelves = shelves

    async def domain_event(
        self, *, instance_uuid: str, event: int, detail: int, host: str
    ) -> InstanceChange | None:
        """Turn a libvirt lifecycle event from ``host`` into the instance's new state; the instance
        as it now is, None when the event changed nothing.

        :raises NotFound: no such instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        try:
            lifecycle = Lifecycle(event)
        except ValueError:
            return None  # an event libvirt added since: it changes nothing here
        return await self.report(
            row, lifecycle, {"domain_event": lifecycle.name, "detail": detail, "host": host}
        )

    async def sync_power_state(
        self, *, instance_uuid: str, running: bool, host: str
    ) -> InstanceChange | None:
        """A node saw the domain's power state without an event (it did not change): settle the task.

        :raises NotFound: no such instance on ``host``.
        """
        return await self.settle_power(await self.core.placed(instance_uuid, host), running=running)

    async def settle_power(self, row: InstanceRow, *, running: bool) -> InstanceChange | None:
        """The power state of the instance's domain, as its node (or the conductor's watch, which
        asked it) says, with no lifecycle event: settle the task."""
        return await self.report(
            row,
            Report.RUNNING if running else Report.NOT_RUNNING,
            {"domain_event": None, "detail": "power state sync", "host": row["host"]},
        )

    async def domain_gone(self, *, instance_uuid: str, host: str) -> InstanceChange | None:
        """A node found no domain to undefine for an instance being deleted.

        :raises NotFound: no such instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        return await self.report(
            row, Report.DOMAIN_GONE, {"domain_event": None, "detail": "no domain", "host": host}
        )

    async def task_done(self, *, instance_uuid: str, host: str) -> None:
        """A node finished a soft reboot, a rebuild of a stopped instance, a snapshot or a step of
        a resize or a live change of vCPUs and RAM (libvirt reports no event for them).

        :raises NotFound: no such instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        if task_state_of(row) in RESIZE_STEPS:
            await self.resizes.step_done(row)
            return
        if task_state_of(row) is TaskState.RESOURCES_CHANGING:
            await self.live_resources.step_done(row)
            return
        if task_state_of(row) is TaskState.MIGRATING:
            await self.live.copied(row)
            return
        if task_state_of(row) in SHELVE_TASKS:
            await self.shelves.step_done(row)
            return
        moved = await self.core.transit(row, Report.TASK_DONE)
        if moved is not None:
            await self.core.publish(moved.row)

    async def task_refused(self, *, instance_uuid: str, reason: str, host: str) -> None:
        """libvirt refused the node a live change of vCPUs and RAM (the old size is back).

        :raises NotFound: no such instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        if task_state_of(row) is TaskState.RESOURCES_CHANGING:
            await self.live_resources.refused(row, reason)

    async def report(
        self, row: InstanceRow, trigger: Lifecycle | Report, cause: Cause
    ) -> InstanceChange | None:
        """Write what a node's report does to the instance and publish the event it makes, with its cause.

        :raises AiostackError: a delete could not be finished (its claim was not released): the
            node reports it again.
        """
        change = self.core.decide(row, trigger)
        if change is None:
            return None
        if change.deleted:
            return await self.core.finish_delete(row, trigger, cause)
        task = task_state_of(row)
        if in_shelve(row) and task is not TaskState.DELETING:
            return await self.shelves.report(row, trigger, cause)
        ends_task = change.task_state is None and task is not None
        if ends_task and task is TaskState.MIGRATING:
            return await self.live.end(row, trigger, cause)
        if ends_task and task is TaskState.REBUILD_SPAWNING:
            return await self.evacuations.finished(row, trigger, cause)
        if ends_task and task in LIVE_RESOURCE_TASKS:
            return await self.live_resources.abandon(row, trigger, cause)
        if ends_task and task is TaskState.RESIZE_FINISH and change.vm_state is VmState.RESIZED:
            return await self.resizes.finished(row, trigger, cause)
        decided = (TaskState.RESIZE_CONFIRMING, TaskState.RESIZE_REVERTING)
        if ends_task and task in decided and change.vm_state is not VmState.ERROR:
            return await self.resizes.end(row, trigger, cause)
        resizing = task in RESIZE_TASKS or vm_state_of(row) is VmState.RESIZED
        if resizing and change.task_state is None and change.vm_state is not VmState.RESIZED:
            return await self.resizes.abandon(row, trigger, cause)
        moved = await self.core.transit(row, trigger)
        if moved is None:
            return None
        if moved.change.launched:
            await self.core.finish_action(row["uuid"], Action.CREATE, "Success")
        return await self.core.publish_moved(moved, cause)
