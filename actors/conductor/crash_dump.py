"""A crash dump triggered in a guest (Nova's ``trigger_crash_dump``, 2.17): its node injects an NMI.

Nothing changes state: the action is allowed by ``states.transition`` (active, paused, resized or
error with no task; never-launched instances are refused as Nova refuses them), recorded, and the
instance's node is called (not cast: the driver's refusal reaches the caller, and nothing is left
to resend). The action ends with the node's answer: a step ``trigger_crash_dump`` and its result.
A conductor that dies during the call leaves the action without a finish; the instance is as it
was, and the guest got the NMI or did not.
"""

from __future__ import annotations

from actors.conductor.core import Core
from actors.conductor.states import Action
from api.conductor import ServerCrashDumps
from bus import AiostackError, Conflict

NMI_TIMEOUT = 30.0
"""An NMI is one libvirt call; a node that does not answer in this long is not reached."""


class CrashDumps(ServerCrashDumps):
    """Serves ``api.conductor.ServerCrashDumps``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def trigger_crash_dump(self, *, instance_uuid: str) -> None:
        """Inject an NMI into the guest through its node; the action records the node's answer."""
        row = await self.core.row(instance_uuid)
        self.core.check_lock(row)
        self.core.require(row, Action.TRIGGER_CRASH_DUMP)
        if row["launched_at"] is None:
            action = Action.TRIGGER_CRASH_DUMP
            raise Conflict(f"Cannot '{action}' instance {instance_uuid} while it is in launched_at None")
        host = row["host"]
        if host is None:
            raise Conflict(f"Instance {instance_uuid} is not ready")
        await self.core.start_action(instance_uuid, Action.TRIGGER_CRASH_DUMP)
        try:
            await self.core.node(host, timeout=NMI_TIMEOUT).trigger_crash_dump(instance_uuid=instance_uuid)
        except AiostackError as exc:
            await self._finish(instance_uuid, host, "Error", str(exc))
            raise
        await self._finish(instance_uuid, host, "Success")

    async def _finish(self, instance_uuid: str, host: str, result: str, message: str | None = None) -> None:
        action = Action.TRIGGER_CRASH_DUMP
        await self.core.record_step(instance_uuid, action, str(action), host, result, message)
        await self.core.finish_action(instance_uuid, action, result, message)
