"""Shelve, shelve offload, unshelve: an instance's disk saved as an image, its host's resources
freed, and the instance brought back (on any host once offloaded), as Nova's.

Nova's sequence (``states.py`` decides each step): ``shelve_instance`` records the shelve (the
image its disk goes to named in the instance's system metadata, with ``shelved_at`` and
``shelved_host``; no image for a volume-backed instance) and starts shelving: the node powers
the domain off (``task_done``); shelving_image_pending_upload, where the conductor makes the
queued image ``<name>-shelved`` (the reused createImage path: ``power.new_snapshot_image``, its
id chosen when the shelve was recorded, so a step done again never makes a second one);
shelving_image_uploading, where the node uploads the disk into it (``snapshot_instance``,
``task_done``); SHELVED once the image is active. A SHELVED instance is offloaded at once when
``offload_time`` is 0 (Nova's ``shelved_offload_time``), after that many seconds otherwise (the
watch's ``offload_expired``; -1: never), or by an admin's ``shelveOffload``: shelving_offloading,
the node removes the domain and its files (``task_done``), then the conductor gives the claim
back, unbinds the ports from the host (their addresses kept) and releases the volume
attachments from it (kept attached): SHELVED_OFFLOADED, on no host.

``unshelve_instance`` of a SHELVED instance has its node start the domain (powering-on); of an
offloaded one, it claims a host (unshelving: the scheduler's ``select_destinations``, any host),
records it, and that host's node builds the domain from the shelved image with the instance's
ports and volumes (spawning: ``Node.unshelve_instance``, the evacuate's build path). Either way
ACTIVE after, the shelved image deleted and the system metadata cleaned (``report``).

Crash-proof as the other tasks (``watch.py``): every step is recorded on the row before its
cast; a stalled node step is sent again while its host is up (3 sends in all), the conductor's
own steps are done again (each is idempotent); then a shelve ends in ERROR (or, if its node
never took it and is down, where it was), an offload is finished by the conductor (the node's
orphan sweep removes a domain left behind), an unshelve is offloaded again; each releases what
it held, so one claim at most is left, on the host the instance is recorded on.
"""

from __future__ import annotations

import logging
from datetime import datetime

from actors.conductor.core import UNSHELVE_STEPS, Core
from actors.conductor.power import new_snapshot_image
from actors.conductor.schema import (
    RESTING_IN,
    InstanceRow,
    recorded_claim,
    shelved_image,
    system_metadata,
    task_state_of,
    view,
    vm_state_of,
)
from actors.conductor.states import SHELVED_STATES, Action, Report
from api.conductor import Cause, Fault, Instance, InstanceChange, ServerShelves
from api.image import Images
from bus import AiostackError, Conflict, NoValidHost, request_scope
from runtime.stamps import new_uuid, utcnow
from runtime.states import SHELVE_TASKS, Lifecycle, TaskState, VmState
from runtime.store import to_json

log = logging.getLogger(__name__)

MAX_STEP_SENDS = 3
"""A node's step that made no progress is sent again, while its host is up, this often in all."""
SHELVE_KEYS = ("shelved_at", "shelved_image_id", "shelved_host")
UPLOADING = frozenset({"queued", "saving"})
"""The statuses of a shelved image whose upload has not ended (a ``task_done`` then is not the
upload's: the power-off step's, sent again)."""
"""The system metadata a shelve records, and an unshelve (or a failed shelve) removes."""


def unshelved_metadata(row: InstanceRow) -> str:
    """The instance's system metadata without a shelve's keys (JSON)."""
    return to_json({key: value for key, value in system_metadata(row).items() if key not in SHELVE_KEYS})


def shelved_for(row: InstanceRow, now: float) -> float:
    """Seconds since the instance was shelved (0 when it does not say)."""
    shelved_at = system_metadata(row).get("shelved_at")
    if not shelved_at:
        return 0.0
    return now - datetime.fromisoformat(str(shelved_at)).timestamp()


def in_shelve(row: InstanceRow) -> bool:
    """Whether the instance is shelving, shelved or being unshelved (and not being deleted)."""
    return task_state_of(row) in SHELVE_TASKS or vm_state_of(row) in SHELVED_STATES


class Shelves(ServerShelves):
    """Serves ``api.conductor.ServerShelves``; the node's steps, libvirt's word on a shelved
    instance, the watch's stalls and the offload after ``offload_time`` come here too (see the
    module's docstring)."""

    def __init__(self, core: Core, *, offload_time: float = 0.0) -> None:
        self.core = core
        self.offload_time = offload_time
        self.images = Images.client(core.bus)

    # -- what a user asks -------------------------------------------------------------------

    async def shelve_instance(self, *, instance_uuid: str) -> Instance:
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.SHELVE, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        system = system_metadata(row) | {
            "shelved_at": utcnow(),
            "shelved_image_id": new_uuid() if row["image_ref"] else None,
            "shelved_host": row["host"],
        }
        row, started = await self.core.begin(
            instance_uuid, Action.SHELVE, {"system_metadata": to_json(system)}
        )
        if started:
            await self._make_image(row)
            await self.core.send_task(row)
        return view(row)

    async def shelve_offload_instance(self, *, instance_uuid: str) -> Instance:
        row, started = await self.core.begin(instance_uuid, Action.SHELVE_OFFLOAD)
        if started:
            await self.core.send_task(row)
        return view(row)

    async def unshelve_instance(self, *, instance_uuid: str) -> Instance:
        row, started = await self.core.begin(instance_uuid, Action.UNSHELVE)
        if not started:
            return view(row)
        if task_state_of(row) is TaskState.UNSHELVING:
            row = await self._claim(row)
        else:  # a shelved domain, still on its host: started again
            await self.core.send_task(row)
        return view(row)

    # -- a shelve's steps -------------------------------------------------------------------

    async def _make_image(self, row: InstanceRow) -> None:
        """The queued image the shelve uploads the disk to, made once (its id is recorded);
        logged, not raised, when the image service does not make it (the upload step asks again)."""
        image_id = shelved_image(row)
        if image_id is None:
            return
        try:
            await new_snapshot_image(
                self.core.images, self.images, row, f"{row['name']}-shelved", image_id=image_id
            )
        except Conflict:
            pass  # made already
        except AiostackError as exc:
            log.warning("instance %s: its shelved image was not made yet: %s", row["uuid"], exc)

    async def step_done(self, row: InstanceRow) -> None:
        """The node finished its step of a shelve or an offload (``task_done``): the next one."""
        task, uuid, host = task_state_of(row), row["uuid"], row["host"]
        if task is TaskState.SHELVING:
            if shelved_image(row) is None:  # volume-backed: no image to upload
                await self._shelved(row, "shelve_instance")
                return
            moved = await self.core.transit(row, Report.SHELVE_POWERED_OFF)
            if moved is None:
                return
            await self.core.record_step(uuid, Action.SHELVE, "shelve_instance", host, "Success")
            await self.core.publish(moved.row, f"instance.{TaskState.SHELVING_IMAGE_PENDING_UPLOAD}")
            await self._upload(moved.row)
        elif task is TaskState.SHELVING_IMAGE_UPLOADING:
            image_id = str(shelved_image(row))
            try:
                status = (await self.core.images.get(image_id=image_id))["status"]
            except AiostackError as exc:
                status = f"unknown ({exc})"
            if status == "active":
                await self._shelved(row, "snapshot_instance")
            elif status in UPLOADING:  # a power-off step's report sent again: the upload goes on
                log.info("instance %s: its shelved image is %s; the upload goes on", uuid, status)
            else:
                await self.fail(row, f"the shelved image {image_id} was not uploaded: {status}")
        elif task is TaskState.SHELVING_OFFLOADING:
            await self._offloaded(row)

    async def _upload(self, row: InstanceRow) -> None:
        """shelving_image_pending_upload: the image made (if it was not), the upload handed to the node."""
        await self._make_image(row)
        moved = await self.core.transit(row, Report.SHELVE_UPLOADING)
        if moved is None:
            return
        await self.core.publish(moved.row, f"instance.{TaskState.SHELVING_IMAGE_UPLOADING}")
        await self.core.send_task(moved.row)

    async def _shelved(self, row: InstanceRow, step: str) -> None:
        """SHELVED; offloaded at once when ``offload_time`` is 0 (recorded before ``instance.shelved``
        is published, as Nova saves both at once: whoever reads the server after that event
        sees whether it is being offloaded)."""
        moved = await self.core.transit(row, Report.SHELVE_DONE)
        if moved is None:
            return
        await self.core.record_step(row["uuid"], Action.SHELVE, step, row["host"], "Success")
        await self.core.finish_action(row["uuid"], Action.SHELVE, "Success")
        offloading = (
            await self.core.transit(moved.row, Action.SHELVE_OFFLOAD) if self.offload_time == 0 else None
        )
        await self.core.publish(moved.row)
        if offloading is not None:
            await self._send_offload(offloading.row)

    async def offload(self, row: InstanceRow) -> None:
        """Offload a SHELVED instance (the conductor's own decision: no user asked)."""
        moved = await self.core.transit(row, Action.SHELVE_OFFLOAD)
        if moved is not None:
            await self._send_offload(moved.row)

    async def _send_offload(self, row: InstanceRow) -> None:
        """Record the offload the conductor started, publish it, hand it to the node."""
        await self.core.start_action(row["uuid"], Action.SHELVE_OFFLOAD)
        await self.core.publish(row, f"instance.{TaskState.SHELVING_OFFLOADING}")
        await self.core.send_task(row)

    async def _release_host(self, instance_uuid: str) -> None:
        """What an instance leaving its host gives back there: its claim, its ports' binding, its
        volume exports (idempotent; the ports, addresses and attachments stay the instance's)."""
        await self.core.scheduler.release(instance_uuid=instance_uuid)
        await self.core.net.unbind_instance_ports(instance_uuid=instance_uuid)
        await self.core.volumes.release_host(instance_uuid=instance_uuid)

    async def _offloaded(self, row: InstanceRow) -> None:
        """shelving_offloading ends: the host's resources given back, SHELVED_OFFLOADED on no host."""
        await self._release_host(row["uuid"])
        await self.core.end_task(
            row,
            Report.OFFLOADED,
            Action.SHELVE_OFFLOAD,
            "Success",
            columns={"host": None},
            step="shelve_offload_instance",
        )

    async def fail(self, row: InstanceRow, reason: str) -> None:
        """A shelve that cannot go on: ERROR with a fault, its image deleted, its system metadata
        cleaned (an offload never fails: the conductor finishes it)."""
        fault: Fault = {"code": 500, "message": reason[:1000], "created": utcnow()}
        columns = {"fault": to_json(fault), "system_metadata": unshelved_metadata(row)}
        if await self.core.end_task(row, Report.SHELVE_FAILED, Action.SHELVE, "Error", reason, columns):
            await self.core.delete_shelved_image(row)

    async def _abandon(self, row: InstanceRow, reason: str) -> None:
        """A shelve its node never took, on a host that is down: dropped, the instance as it was."""
        columns = {"system_metadata": unshelved_metadata(row)}
        if await self.core.end_task(row, Report.TASK_ABANDONED, Action.SHELVE, "Error", reason, columns):
            await self.core.delete_shelved_image(row)

    # -- an unshelve's steps ----------------------------------------------------------------

    async def _claim(self, row: InstanceRow) -> InstanceRow:
        """unshelving: claim a host, record it, hand its node the build."""
        uuid = row["uuid"]
        claim = recorded_claim(row)
        try:
            destination = await self.core.scheduler.select_destinations(
                instance_uuid=uuid,
                vcpus=claim["vcpus"],
                memory_mb=claim["ram"],
                disk_gb=claim["disk"],
                hypervisor_type=claim.get("hypervisor_type"),
            )
        except NoValidHost as exc:
            await self.unshelve_failed(row, f"No valid host was found. {exc}")
            return await self.core.fresh(uuid) or row
        except AiostackError as exc:  # the watch claims again
            log.warning("instance %s: its unshelve's claim did not go through: %s", uuid, exc)
            return row
        host = destination["host"]
        moved = await self.core.transit(row, Report.UNSHELVE_CLAIMED, {"host": host})
        if moved is None:
            fresh = await self.core.fresh(uuid)
            if fresh is None or fresh["host"] is None:  # deleted or offloaded again meanwhile
                await self.core.scheduler.release(instance_uuid=uuid)
            return fresh or row
        await self.core.record_step(uuid, Action.UNSHELVE, "schedule", host, "Success")
        await self.core.publish(moved.row, f"instance.{TaskState.SPAWNING}")
        await self.core.send_task(moved.row)
        return moved.row

    async def unshelve_failed(self, row: InstanceRow, reason: str) -> None:
        """An offloaded instance's unshelve that cannot go on (no host, or its node failed or
        stalled): offloaded again, with nothing held on any host."""
        await self._release_host(row["uuid"])
        await self.core.end_task(
            row, Report.UNSHELVE_FAILED, Action.UNSHELVE, "Error", reason, {"host": None}
        )

    async def report(
        self, row: InstanceRow, trigger: Lifecycle | Report, cause: Cause
    ) -> InstanceChange | None:
        """libvirt's (or the node's) word on an instance being shelved, shelved or unshelved; one
        that leaves the shelved states is unshelved: its image deleted, its system metadata cleaned."""
        change = self.core.decide(row, trigger)
        if change is None:
            return None
        may_leave = vm_state_of(row) in SHELVED_STATES and change.vm_state not in SHELVED_STATES
        columns = {"system_metadata": unshelved_metadata(row)} if may_leave else None
        moved = await self.core.transit(row, trigger, columns)
        if moved is None:
            return None
        before = moved.before  # the row the change was decided on: ``row`` may have been stale
        leaving = vm_state_of(before) in SHELVED_STATES and vm_state_of(moved.row) not in SHELVED_STATES
        task = task_state_of(before)
        unshelving = task is not None and (vm_state_of(before), task) in UNSHELVE_STEPS
        if leaving:
            await self.core.delete_shelved_image(row)
            if unshelving:
                step = "unshelve_instance" if task is TaskState.SPAWNING else "start_instance"
                await self.core.record_step(row["uuid"], Action.UNSHELVE, step, row["host"], "Success")
                await self.core.finish_action(row["uuid"], Action.UNSHELVE, "Success")
        elif unshelving and moved.change.task_state is None:
            reason = f"{task} ended {moved.change.vm_state} by {trigger.name.lower()}"
            await self.core.finish_action(row["uuid"], Action.UNSHELVE, "Error", reason)
        return await self.core.publish_moved(moved, cause)

    # -- what the watch does ----------------------------------------------------------------

    async def offload_expired(self, now: float) -> None:
        """Offload the instances SHELVED for ``offload_time`` seconds (-1: never)."""
        if self.offload_time < 0:
            return
        rows = await self.core.store.fetchall(RESTING_IN, (VmState.SHELVED,), row=InstanceRow)
        for row in rows:
            if shelved_for(row, now) < self.offload_time:
                continue
            with request_scope():
                try:
                    await self.offload(row)
                    log.info("instance %s: offloaded, shelved for %.0f s", row["uuid"], shelved_for(row, now))
                except AiostackError as exc:
                    log.warning("instance %s: not offloaded yet: %s", row["uuid"], exc)

    async def resolve_stalled(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """A shelve's, offload's or unshelve's step made no progress for the task timeout: do the
        conductor's step again, send the node's again, or end it (see the module's docstring)."""
        uuid, host = row["uuid"], row["host"]
        alive = host is not None and bool(self.core.hosts_alive.get(host))
        resend = alive and row["task_sends"] < MAX_STEP_SENDS
        if task is TaskState.SHELVING_IMAGE_PENDING_UPLOAD:
            await self.core.touch(uuid, task)
            await self._upload(row)
        elif task is TaskState.UNSHELVING:
            await self.core.touch(uuid, task)
            await self._claim(row)
        elif resend:
            await self.core.touch(uuid, task)
            await self.core.send_task(row)
        elif task is TaskState.SHELVING_OFFLOADING:
            await self._offloaded(row)  # the node removes the domain it kept when it sweeps orphans
        elif task is TaskState.SPAWNING:
            await self.unshelve_failed(row, f"{reason}; {'host down' if not alive else 'no progress'}")
        elif task is TaskState.SHELVING and not row["task_acked"] and not alive:
            await self._abandon(row, f"{reason}; host down")
        else:
            await self.fail(row, f"{reason}; {'host down' if not alive else 'no progress'}")


def stalled_here(row: InstanceRow, task: TaskState) -> bool:
    """Whether a stalled ``task`` of the instance is a shelve's, offload's or unshelve's own to
    resolve (an unshelve's start of a shelved domain is settled as any power change)."""
    offloaded_spawn = vm_state_of(row) is VmState.SHELVED_OFFLOADED and task is TaskState.SPAWNING
    return task in SHELVE_TASKS or task is TaskState.UNSHELVING or offloaded_spawn
