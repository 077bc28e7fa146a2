"""Evacuate: an instance of a host that is down built again on another host (Nova's evacuate).

Nova's sequence (``states.py`` decides each step): ``evacuate_instance`` checks the target host
(known, up, not the instance's own) and that the instance's host is down, and starts
rebuilding with ``evacuate_from`` (the host it leaves) recorded; from then on that host's node
is no longer heard about the instance, nor told of it (``Core.placed``,
``list_host_instances``): when it comes back, its orphan sweep removes the stale domain (Nova's
``_destroy_evacuated_instances``) and nothing else. The scheduler moves the claim to the
destination in one transaction (``claim_evacuate``: taken there, given back on the source; the
host asked for is forced, as Nova's before 2.29); ``EVACUATE_CLAIMED`` records the destination
as the instance's host, rebuild_spawning: the node there builds the domain again from the
image (or the boot volume), with the instance's ports (their binding moved there: the net
actor tells the hosts concerned) and volumes (their attachments made again for that host:
``reattach_all``), starts it unless the instance was stopped, and reports its power state. It
ends active, or stopped (libvirt's STARTED, or the power state: ``lifecycle.py`` hands the end
here), the action ``evacuate`` with its steps.

Crash-proof as the other tasks (``watch.py``): a claim that did not finish is done again (it
is idempotent) or, with no destination, undone (back where it was, nothing moved); the node's
step is sent again while the destination is up, else the evacuate ends in ERROR with one
claim, on the destination it was moved to.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.conductor.core import Core
from actors.conductor.migrations import Kind
from actors.conductor.recorded import begin_recorded
from actors.conductor.schema import InstanceRow, recorded_claim, task_state_of, view, vm_state_of
from actors.conductor.states import Action, Report
from api.conductor import Cause, Fault, Instance, InstanceChange, ServerEvacuations
from bus import AiostackError, Conflict, InvalidRequest, NotFound, NoValidHost
from runtime.stamps import utcnow
from runtime.states import Lifecycle, TaskState, VmState
from runtime.store import to_json

log = logging.getLogger(__name__)

MAX_STEP_SENDS = 3
"""The node's step that made no progress is sent again, while its host is up, this often in all."""
ENDED: dict[str, Any] = {"evacuate_from": None, "evacuate_to": None}
"""The columns of an evacuate that is over."""


class Evacuations(ServerEvacuations):
    """Serves ``api.conductor.ServerEvacuations``; the end of the node's step, the watch's stalls
    and a destination's failure come here too (see the module's docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # -- what an operator asks --------------------------------------------------------------

    async def evacuate_instance(
        self, *, instance_uuid: str, host: str | None = None, admin_pass: str | None = None
    ) -> Instance:
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.EVACUATE, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        hosts = {known["host"]: known for known in await self.core.hosts.list_hosts()}
        if host is not None and host not in hosts:
            raise NotFound(f"Compute host {host} not found.")
        source = row["host"]
        if host is not None and source == host:
            raise InvalidRequest("The target host can't be the same one.")
        self.core.check_lock(row)
        self.core.require(row, Action.EVACUATE)
        if source is None:
            raise Conflict(f"Cannot 'evacuate' instance {instance_uuid} while it has no host")
        if source in hosts and hosts[source]["alive"]:
            raise InvalidRequest(f"Compute service of {source} is still in use.")
        if host is not None and not hosts[host]["alive"]:
            raise InvalidRequest(f"Compute service of {host} is unavailable at this time.")
        columns = {"evacuate_from": source, "evacuate_to": host, "admin_pass": admin_pass}
        row, _ = await begin_recorded(
            self.core, instance_uuid, Action.EVACUATE, Kind.EVACUATION, columns, status="accepted", dest=host
        )
        if task_state_of(row) is TaskState.REBUILDING and row["evacuate_from"] is not None:
            row = await self._claim(row)
        return view(row)

    # -- the steps --------------------------------------------------------------------------

    async def _claim(self, row: InstanceRow) -> InstanceRow:
        """rebuilding: move the claim to the destination, record it as the instance's host, hand
        its node the build.

        :raises InvalidRequest: no host (or not the one asked for) can take it (nothing moved).
        """
        uuid, source = row["uuid"], row["evacuate_from"]
        assert source is not None, f"instance {uuid} is not being evacuated"
        claim = recorded_claim(row)
        try:
            destination = await self.core.scheduler.claim_evacuate(
                instance_uuid=uuid,
                source_host=source,
                vcpus=claim["vcpus"],
                memory_mb=claim["ram"],
                disk_gb=claim["disk"],
                host=row["evacuate_to"],
            )
        except (NoValidHost, NotFound) as exc:
            reason = f"No valid host was found. {exc}"
            await self._undo(row, reason)
            raise InvalidRequest(reason) from None
        host = destination["host"]
        moved = await self.core.transit(row, Report.EVACUATE_CLAIMED, {"host": host})
        if moved is None:
            fresh = await self.core.fresh(uuid)
            if fresh is None:  # deleted meanwhile: the claim just moved is no one's
                await self.core.scheduler.release(instance_uuid=uuid)
            return fresh or row
        await self.core.record_step(
            uuid, Action.EVACUATE, "claim_evacuate", host, "Success", f"from {source}"
        )
        await self.core.publish(moved.row, f"instance.{TaskState.REBUILD_SPAWNING}")
        await self.core.send_task(moved.row)
        return moved.row

    async def _undo(self, row: InstanceRow, reason: str) -> None:
        """An evacuate with no destination: back where it was (its claim never moved)."""
        moved = await self.core.transit(row, Report.EVACUATE_FAILED, ENDED)
        if moved is None:
            return
        await self.core.finish_action(row["uuid"], Action.EVACUATE, "Error", reason)
        await self.core.publish(moved.row)

    async def finished(
        self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause
    ) -> InstanceChange | None:
        """rebuild_spawning ends: libvirt's word (or the power state) from the destination."""
        moved = await self.core.transit(row, trigger, ENDED)
        if moved is None:
            return None
        if task_state_of(moved.before) is not TaskState.REBUILD_SPAWNING:
            return await self.core.publish_moved(moved, cause)  # another report of the domain ended it
        uuid, vm_state = row["uuid"], vm_state_of(moved.row)
        if vm_state in (VmState.ACTIVE, VmState.STOPPED):
            await self.core.record_step(uuid, Action.EVACUATE, "rebuild_instance", row["host"], "Success")
            await self.core.finish_action(uuid, Action.EVACUATE, "Success")
        else:
            reason = f"{TaskState.REBUILD_SPAWNING} ended {vm_state} by {trigger.name.lower()}"
            await self.core.record_step(
                uuid, Action.EVACUATE, "rebuild_instance", row["host"], "Error", reason
            )
            await self.core.finish_action(uuid, Action.EVACUATE, "Error", reason)
        return await self.core.publish_change(moved.row, cause)

    async def fail(self, row: InstanceRow, reason: str) -> None:
        """The destination will not build it: ERROR, with one claim (the destination's, where the
        instance is recorded), its ports and volumes kept."""
        fault: Fault = {"code": 500, "message": reason[:1000], "created": utcnow()}
        moved = await self.core.transit(row, Report.EVACUATE_FAILED, {**ENDED, "fault": to_json(fault)})
        if moved is None:
            return
        await self.core.finish_action(row["uuid"], Action.EVACUATE, "Error", reason)
        await self.core.publish(moved.row)

    # -- what the watch does ----------------------------------------------------------------

    async def resolve_stalled(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """An evacuate's step made no progress for the task timeout: do it again, or end it."""
        uuid, host = row["uuid"], row["host"]
        if task is TaskState.REBUILDING:  # the claim, which is idempotent
            await self.core.touch(uuid, task)
            try:
                await self._claim(row)
            except AiostackError as exc:
                log.warning("instance %s: its evacuate's claim did not go through: %s", uuid, exc)
        elif host is not None and self.core.hosts_alive.get(host) and row["task_sends"] < MAX_STEP_SENDS:
            await self.core.touch(uuid, task)
            await self.core.send_task(row)
        else:
            await self.fail(row, f"{reason}; {'host down' if host else 'no host'}")
