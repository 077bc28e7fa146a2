"""A live change of vCPUs and RAM (aiostack's ``setResources``): a running instance given another
size within its flavor's maxima, on its host, without a restart.

The flavor an instance boots with may set ``aiostack:max_vcpus`` and ``aiostack:max_ram_mb``
(copied into the instance's flavor record at boot as ``max_vcpus``/``max_ram``): its domain
then has that many vCPUs (those of the flavor online) and that much memory (a balloon at the
flavor's RAM). ``set_resources`` checks the size (from the flavor's own to its maximum), the
quota for what grows, and starts resources_claiming with ``flavor`` = the new size and
``old_flavor`` = the old. The scheduler sets the instance's claim to the *covering* size (each
resource the larger of old and new) in one transaction (``set_claim_size``; no room for the
growth: 409, the change undone), so the host never holds less than the domain may have;
resources_changing: the node hot-plugs the vCPUs and sets the balloon (definition and running
guest) and reports ``task_done``; the claim is then set to the new size and the instance is
active again, its flavor record showing the size it now has. A change libvirt refuses (a guest
that will not unplug a vCPU) is put back by the node, which reports ``task_refused``: the old
size and claim, active, the action in error.

Crash-proof as the other tasks (``watch.py``): each step is recorded before it is taken; a
stalled claim is undone (its claim set back: idempotent); the node's step is sent again while
its host is up (the node does it again to the same end), up to ``MAX_STEP_SENDS``. The node
takes the task through ``task_progress`` before it changes anything, so the conductor knows
which size the domain may have: a change its node never took ends with the old size, one it
took with the new (the node keeps the new definition, which a host that comes back defines
again). An end otherwise than by ``task_done`` (the node gave up: ERROR with a fault; libvirt's
word, the guest stopped or crashed) keeps one claim, of that size.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.conductor.core import Core
from actors.conductor.resize import check_resize_quota
from actors.conductor.schema import InstanceRow, task_state_of, view
from actors.conductor.states import Action, Report
from api.conductor import Cause, Fault, Flavor, Instance, InstanceChange, ServerLiveResources
from bus import Conflict, InvalidRequest, NotFound, NoValidHost
from runtime.stamps import utcnow
from runtime.states import Lifecycle, TaskState
from runtime.store import from_json, to_json

log = logging.getLogger(__name__)

MAX_STEP_SENDS = 3
"""The node's step that made no progress is sent again, while its host is up, this often in all."""
LIMITS = (("vcpus", "aiostack:max_vcpus", "vCPUs"), ("ram", "aiostack:max_ram_mb", "RAM (MB)"))
"""Each resource a live change sets: the flavor record's field, the extra spec of its maximum, and
its label."""


def covering(old: Flavor, new: Flavor) -> dict[str, int]:
    """The claim that holds either size: each resource the larger of the two."""
    return {"vcpus": max(old["vcpus"], new["vcpus"]), "memory_mb": max(old["ram"], new["ram"])}


def check_size(flavor: Flavor, booted: Flavor, asked: dict[str, int | None]) -> dict[str, int]:
    """The size asked for (what is not asked: as it is), checked against the flavor's limits:
    from what the flavor boots with (``booted``) to its maximum.

    :raises InvalidRequest: the flavor sets no maximum for what is asked, or it is outside.
    """
    size = {"vcpus": flavor["vcpus"], "ram": flavor["ram"]}
    lowest = {"vcpus": booted["vcpus"], "ram": booted["ram"]}
    highest = {"vcpus": flavor.get("max_vcpus"), "ram": flavor.get("max_ram")}
    for field, spec, label in LIMITS:
        value, low, high = asked[field], lowest[field], highest[field]
        if value is None:
            continue
        if high is None and value != size[field]:
            raise InvalidRequest(
                f"The flavor {flavor['name']} of the server allows no live change of its {label}"
                f" (it sets no {spec})."
            )
        if not low <= value <= (high or low):
            raise InvalidRequest(
                f"Invalid {label} {value}: the flavor {flavor['name']} allows {low} to {high or low}."
            )
        size[field] = value
    return size


class LiveResources(ServerLiveResources):
    """Serves ``api.conductor.ServerLiveResources``; the node's ``task_done``, the watch's stalls
    and libvirt's word ending the change come here too (see the module's docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def set_resources(
        self, *, instance_uuid: str, vcpus: int | None = None, ram: int | None = None
    ) -> Instance:
        row = await self.core.row(instance_uuid)
        if await self.core.asked_already(Action.SET_RESOURCES, instance_uuid) is not None:
            return view(row)  # this request, sent again: its reply was lost
        self.core.check_lock(row)
        self.core.require(row, Action.SET_RESOURCES)
        old: Flavor = from_json(row["flavor"])
        booted = await self._booted_size(old)
        size = check_size(old, booted, {"vcpus": vcpus, "ram": ram})
        if size["vcpus"] == old["vcpus"] and size["ram"] == old["ram"]:
            return view(row)  # the size it has: nothing to change
        await check_resize_quota(self.core.store, row["project_id"], old, {**old, **size})
        columns = {"flavor": to_json({**old, **size}), "old_flavor": row["flavor"]}
        row, _ = await self.core.begin(instance_uuid, Action.SET_RESOURCES, columns)
        if task_state_of(row) is TaskState.RESOURCES_CLAIMING:
            row = await self._claim(row)
        return view(row)

    async def _booted_size(self, flavor: Flavor) -> Flavor:
        """The size the instance's flavor boots with (the least a live change may give it)."""
        row = await self.core.store.fetchone("SELECT * FROM flavors WHERE id = ?", (flavor["id"],))
        return {**flavor, "vcpus": row["vcpus"], "ram": row["ram"]} if row is not None else flavor

    # -- the steps --------------------------------------------------------------------------

    async def _claim(self, row: InstanceRow) -> InstanceRow:
        """resources_claiming: the claim set to cover both sizes, then the node's step.

        :raises Conflict: the host has no room for the growth (the change is undone).
        """
        uuid = row["uuid"]
        old: Flavor = from_json(row["old_flavor"])
        try:
            await self.core.scheduler.set_claim_size(
                instance_uuid=uuid, **covering(old, from_json(row["flavor"]))
            )
        except (NoValidHost, NotFound) as exc:
            await self._undo_claim(row, f"No valid host was found for the change: {exc}")
            raise Conflict(f"No valid host was found for the change: {exc}") from None
        # deleted meanwhile: its delete gives the claim back
        return await self.core.on_to_node(
            row, Report.RESOURCES_CLAIMED, Action.SET_RESOURCES, "set_claim_size"
        )

    async def _undo_claim(self, row: InstanceRow, reason: str) -> None:
        """A resources_claiming that cannot go on: the old size and its claim again, as it was."""
        old: Flavor = from_json(row["old_flavor"])
        await self.core.scheduler.set_claim_size(
            instance_uuid=row["uuid"], vcpus=old["vcpus"], memory_mb=old["ram"]
        )
        moved = await self.core.transit(
            row, Report.RESOURCES_FAILED, {"flavor": row["old_flavor"], "old_flavor": None}
        )
        if moved is None:
            return
        await self.core.finish_action(row["uuid"], Action.SET_RESOURCES, "Error", reason)
        await self.core.publish(moved.row)

    async def step_done(self, row: InstanceRow) -> None:
        """The node changed the domain (``task_done``): the claim is the new size, active again."""
        if task_state_of(row) is not TaskState.RESOURCES_CHANGING:
            return
        new: Flavor = from_json(row["flavor"])
        await self.core.scheduler.set_claim_size(
            instance_uuid=row["uuid"], vcpus=new["vcpus"], memory_mb=new["ram"]
        )
        moved = await self.core.transit(row, Report.TASK_DONE, {"old_flavor": None})
        if moved is None:
            return
        uuid = row["uuid"]
        await self.core.record_step(uuid, Action.SET_RESOURCES, "set_resources", row["host"], "Success")
        await self.core.finish_action(uuid, Action.SET_RESOURCES, "Success")
        await self.core.publish(moved.row)

    async def refused(self, row: InstanceRow, reason: str) -> None:
        """libvirt refused the node the change, which put the old size back: the old claim, as it was."""
        old: Flavor = from_json(row["old_flavor"])
        await self.core.scheduler.set_claim_size(
            instance_uuid=row["uuid"], vcpus=old["vcpus"], memory_mb=old["ram"]
        )
        columns = {"flavor": row["old_flavor"], "old_flavor": None}
        moved = await self.core.transit(row, Report.RESOURCES_REFUSED, columns)
        if moved is None:
            return
        uuid = row["uuid"]
        await self.core.record_step(uuid, Action.SET_RESOURCES, "set_resources", row["host"], "Error", reason)
        await self.core.finish_action(uuid, Action.SET_RESOURCES, "Error", reason)
        await self.core.publish(moved.row)

    async def _settle_claim(self, row: InstanceRow) -> dict[str, Any]:
        """A change that ends otherwise than by ``task_done`` keeps one claim: the new size once
        its node took the step (it defines the new size before anything else), the old before.
        The instance's columns that go with it."""
        taken = task_state_of(row) is TaskState.RESOURCES_CHANGING and bool(row["task_acked"])
        kept = row["flavor"] if taken else row["old_flavor"] or row["flavor"]
        size: Flavor = from_json(kept)
        await self.core.scheduler.set_claim_size(
            instance_uuid=row["uuid"], vcpus=size["vcpus"], memory_mb=size["ram"]
        )
        return {"flavor": kept, "old_flavor": None}

    async def abandon(
        self, row: InstanceRow, trigger: Report | Lifecycle, cause: Cause
    ) -> InstanceChange | None:
        """libvirt's word ends the change (the guest stopped, crashed or was paused): one claim kept."""
        columns = await self._settle_claim(row)
        moved = await self.core.transit(row, trigger, columns)
        if moved is None:
            return None
        reason = f"{row['task_state']} ended by {trigger.name.lower()}"
        await self.core.finish_action(row["uuid"], Action.SET_RESOURCES, "Error", reason)
        return await self.core.publish_change(moved.row, cause)

    # -- what the watch does ----------------------------------------------------------------

    async def resolve_stalled(self, row: InstanceRow, task: TaskState, reason: str) -> None:
        """The change made no progress for the task timeout: undo the claim, send the node's step
        again, or end it (ERROR, with one claim)."""
        host = row["host"]
        if task is TaskState.RESOURCES_CLAIMING:
            await self._undo_claim(row, reason)
        elif host is not None and self.core.hosts_alive.get(host) and row["task_sends"] < MAX_STEP_SENDS:
            await self.core.touch(row["uuid"], task)
            await self.core.send_task(row)
        else:
            await self._fail(row, f"{reason}; {'host down' if host else 'no host'}")

    async def _fail(self, row: InstanceRow, reason: str) -> None:
        """The node's step its node will not finish: ERROR, with one claim (``_settle_claim``)."""
        fault: Fault = {"code": 500, "message": reason[:1000], "created": utcnow()}
        columns = {**await self._settle_claim(row), "fault": to_json(fault)}
        moved = await self.core.transit(row, Report.RESOURCES_FAILED, columns)
        if moved is None:
            return
        await self.core.finish_action(row["uuid"], Action.SET_RESOURCES, "Error", reason)
        await self.core.publish(moved.row)
