"""The conductor's task supervision: no instance stays in BUILD or a task state, whatever dies.

Every task the conductor hands a node (build, stop, start, reboot, delete) is recorded on the
instance row before the cast: which task, when it was sent, whether the node took it, when
the instance last made progress. The conductor's sqlite file is the durable queue, so a cast
lost with a crashed node process or nats-server is sent again:

* **delivery**: the node acknowledges a task when it starts it (``get_build_request`` for a
  build, ``task_progress`` for the others); a task not acknowledged within ``ack_timeout`` is
  sent again while it lasts (the node's handlers are idempotent).
* **progress**: every change the node reports, and its periodic ``task_progress`` for the
  work it has in hand (sent with its heartbeat), moves ``progress_at``. A task with no
  progress for ``task_timeout`` (60 s) is resolved: a build is rescheduled where that is
  safe (its node is down, or answers that it has no domain for it), else ends in ERROR with
  a fault saying what happened; a delete on a down node is finished here (the node removes
  the orphan domain when it comes back); a power change is settled from the domain's real
  state, or given up with the host down.
* **reschedule**: a build that fails on a node, or stalls, goes to another host (the hosts
  tried are excluded) up to ``max_build_attempts`` in all, as Nova's retries do.

It also answers the other actors' "which of these instances are still alive?"
(``live_instances``), with which they release what they hold for instances that are gone,
and ``aiostack audit``'s question for every live instance (``audit_instances``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bus import AiostackError, handler, request_scope
from runtime.events import publish_event
from runtime.store import from_json, to_json

log = logging.getLogger(__name__)

# task_state -> (node method, extra arguments) of the cast that does the node's part
NODE_TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "spawning": ("build_and_run_instance", {}),
    "powering-off": ("stop_instance", {}),
    "powering-on": ("start_instance", {}),
    "rebooting": ("reboot_instance", {"reboot_type": "SOFT"}),
    "rebooting_hard": ("reboot_instance", {"reboot_type": "HARD"}),
    "deleting": ("terminate_instance", {}),
    "pausing": ("change_power", {"action": "pause"}),
    "unpausing": ("change_power", {"action": "unpause"}),
    "suspending": ("change_power", {"action": "suspend"}),
    "resuming": ("change_power", {"action": "resume"}),
}
TASK_ACTIONS = {
    "scheduling": "create",
    "spawning": "create",
    "powering-off": "stop",
    "powering-on": "start",
    "rebooting": "reboot",
    "rebooting_hard": "reboot_hard",
    "deleting": "delete",
    "pausing": "pause",
    "unpausing": "unpause",
    "suspending": "suspend",
    "resuming": "resume",
}
MAX_TASK_SENDS = 3  # a stalled build or delete is sent again while its node answers, this often
HOSTS_REFRESH = 2.0


class TaskWatch:
    """Mixed into ConductorActor: sends node tasks, watches them, resolves the stalled ones."""

    # provided by ConductorActor
    bus: Any
    store: Any
    task_timeout: float
    ack_timeout: float
    max_build_attempts: int
    _building: set[str]
    _hosts_alive: dict[str, bool]
    _hosts_checked: float = 0.0

    async def _send_task(self, row: dict[str, Any]) -> None:
        """Cast the node its part of the instance's current task (again, when redelivering)."""
        method, extra = NODE_TASKS[row["task_state"]]
        await self.store.execute(
            "UPDATE instances SET task_sent_at = ?, task_sends = task_sends + 1 WHERE uuid = ?",
            (time.time(), row["uuid"]),
        )
        await self.bus.cast(f"node.{row['host']}.{method}", {"instance_uuid": row["uuid"], **extra})
        step = "sent" if not row["task_sends"] else "sent_again"
        await self._record_step(
            row["uuid"], TASK_ACTIONS[row["task_state"]], f"{method}:{step}", row["host"], "Success"
        )  # type: ignore[attr-defined]

    @handler
    async def task_progress(self, host: str, instance_uuids: list[str]) -> int:
        """A node took these instances' tasks, or is still working on them: they make progress."""
        if not instance_uuids:
            return 0
        marks = ", ".join("?" * len(instance_uuids))
        return await self.store.execute(
            f"UPDATE instances SET task_acked = 1, progress_at = ? WHERE host = ? AND deleted = 0"
            f" AND task_state IS NOT NULL AND uuid IN ({marks})",
            (time.time(), host, *instance_uuids),
        )

    @handler
    async def live_instances(self, instance_uuids: list[str]) -> list[str]:
        """Which of these instances still exist (not deleted): the rest hold nothing any more."""
        if not instance_uuids:
            return []
        marks = ", ".join("?" * len(instance_uuids))
        rows = await self.store.fetchall(
            f"SELECT uuid FROM instances WHERE deleted = 0 AND uuid IN ({marks})", list(instance_uuids)
        )
        return [row["uuid"] for row in rows]

    @handler
    async def audit_instances(self) -> dict[str, Any]:
        """Every live instance with its host, states and seconds since its last progress."""
        now = time.time()
        rows = await self.store.fetchall(
            "SELECT uuid, name, project_id, host, vm_state, task_state, progress_at, fault"
            " FROM instances WHERE deleted = 0"
        )
        for row in rows:
            row["idle_s"] = round(now - row.pop("progress_at"), 1)
            row["fault"] = from_json(row["fault"])
        return {"task_timeout": self.task_timeout, "instances": rows}

    def host_status(self, host: str | None) -> str:
        """Nova's ``host_status``: UP, DOWN, UNKNOWN (no word yet), or "" with no host."""
        if not host:
            return ""
        alive = self._hosts_alive.get(host)
        return "UNKNOWN" if alive is None else "UP" if alive else "DOWN"

    async def _refresh_hosts(self) -> None:
        if time.monotonic() - self._hosts_checked < HOSTS_REFRESH:
            return
        try:
            hosts = await self.bus.call("scheduler.list_hosts", timeout=5)
        except AiostackError as exc:
            log.info("host liveness unknown: %s", exc)
            return
        self._hosts_alive = {host["host"]: bool(host["alive"]) for host in hosts}
        self._hosts_checked = time.monotonic()

    async def _watch_tasks(self) -> None:
        interval = max(0.2, min(1.0, self.ack_timeout / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._refresh_hosts()
                await self._check_tasks()
            except Exception:
                log.exception("task watch round failed; next round in %.1f s", interval)

    async def _check_tasks(self) -> None:
        now = time.time()
        rows = await self.store.fetchall(
            "SELECT * FROM instances WHERE deleted = 0 AND task_state IS NOT NULL"
        )
        for row in rows:
            task = row["task_state"]
            if now - row["progress_at"] > self.task_timeout:
                with request_scope():
                    await self._resolve_stalled(row)
            elif (
                task in NODE_TASKS
                and not row["task_acked"]
                and now - (row["task_sent_at"] or 0) > self.ack_timeout
                and self._hosts_alive.get(row["host"], True)
            ):
                log.info(
                    "instance %s: node %s did not take %s; sending it again", row["uuid"], row["host"], task
                )
                await self._send_task(row)

    def _resume_scheduling(self, row: dict[str, Any]) -> None:
        if row["uuid"] in self._building:
            return
        self.spawn(  # type: ignore[attr-defined]
            self._schedule_and_build(  # type: ignore[attr-defined]
                row["uuid"], from_json(row["flavor"]), from_json(row["tried_hosts"], [])
            ),
            name=f"build-{row['uuid']}",
        )

    async def _node_domain(self, host: str, instance_uuid: str) -> dict[str, Any] | None:
        """What the node says of the instance's domain ({"exists", "running"}), None if it cannot say."""
        try:
            return await self.bus.call(
                f"node.{host}.get_power_state", {"instance_uuid": instance_uuid}, timeout=5
            )
        except AiostackError:
            return None

    async def _resolve_stalled(self, row: dict[str, Any]) -> None:
        task, host, uuid = row["task_state"], row["host"], row["uuid"]
        idle = time.time() - row["progress_at"]
        reason = f"{task} made no progress for {idle:.0f} s" + (f" on {host}" if host else "")
        log.warning("instance %s: %s", uuid, reason)
        await self._record_step(uuid, TASK_ACTIONS[task], "stalled", host, "Error", reason)  # type: ignore[attr-defined]
        if task == "scheduling":
            await self._update(uuid, expect_task="scheduling")  # type: ignore[attr-defined]
            self._resume_scheduling(row)
            return
        domain = await self._node_domain(host, uuid) if self._hosts_alive.get(host) else None
        if task == "spawning":
            if domain is not None and domain["running"]:
                await self.sync_power_state(uuid, host, True)  # type: ignore[attr-defined]
            elif domain is not None and row["task_sends"] < MAX_TASK_SENDS:
                await self._update(uuid, expect_task="spawning", task_sends=row["task_sends"])  # type: ignore[attr-defined]
                await self._send_task(row)
            elif domain is not None and domain["exists"]:
                await self._fail_build(uuid, f"{reason}; its domain on {host} does not start", host=host)  # type: ignore[attr-defined]
            else:
                await self._reschedule(row, reason)
        elif task == "deleting":
            if domain is not None and row["task_sends"] < MAX_TASK_SENDS:
                await self._update(uuid, expect_task="deleting", task_sends=row["task_sends"])  # type: ignore[attr-defined]
                await self._send_task(row)
            else:
                await self._delete_here(row, reason)
        elif domain is not None:
            await self.sync_power_state(uuid, host, domain["running"])  # type: ignore[attr-defined]
        else:
            updated = await self._update(uuid, expect_task=task, task_state=None)  # type: ignore[attr-defined]
            if updated is not None:
                await self._finish_action(uuid, TASK_ACTIONS[task], "Error", f"{reason}; host down")  # type: ignore[attr-defined]
                await self._publish_state(updated)

    async def _publish_state(self, row: dict[str, Any]) -> None:
        from actors.conductor import status_of, view

        event_type = f"instance.{status_of(row['vm_state'], row['task_state']).lower()}"
        await publish_event(self.bus, "instance", row["uuid"], row["project_id"], event_type, view(row))

    async def _reschedule(self, row: dict[str, Any], reason: str) -> None:
        """Release what the attempt on ``row['host']`` took and build on another host, or give up."""
        uuid, host = row["uuid"], row["host"]
        tried = from_json(row["tried_hosts"], []) + (
            [host] if host and host not in from_json(row["tried_hosts"], []) else []
        )
        if row["build_attempts"] >= self.max_build_attempts:
            await self._fail_build(  # type: ignore[attr-defined]
                uuid,
                f"{reason} (gave up after {row['build_attempts']} attempts: {', '.join(tried)})",
                host=host,
            )
            return
        updated = await self._update(  # type: ignore[attr-defined]
            uuid,
            expect_host=host,
            expect_task=row["task_state"],
            host=None,
            task_state="scheduling",
            tried_hosts=to_json(tried),
            addresses="{}",
        )
        if updated is None:
            return
        await self._release_attempt(uuid)
        await self._record_step(uuid, "create", "reschedule", host, "Error", reason)  # type: ignore[attr-defined]
        log.warning("instance %s: rescheduling away from %s: %s", uuid, host, reason)
        await self._publish_state({**updated, "fault": to_json({"message": reason})})
        self.spawn(  # type: ignore[attr-defined]
            self._schedule_and_build(uuid, from_json(row["flavor"]), tried, reason),  # type: ignore[attr-defined]
            name=f"build-{uuid}",
        )

    async def _release_attempt(self, instance_uuid: str) -> None:
        """Ports, volumes and claim of an attempt (idempotent: the node may have given them back)."""
        for subject in ("net.deallocate_for_instance", "volume.detach_all", "scheduler.release"):
            try:
                await self.bus.call(subject, {"instance_uuid": instance_uuid})
            except AiostackError as exc:
                log.error(
                    "instance %s: %s failed (%s); the owner's orphan sweep will retry",
                    instance_uuid,
                    subject,
                    exc,
                )

    async def _delete_here(self, row: dict[str, Any], reason: str) -> None:
        """Finish a delete without the node (it is down or does not answer): release everything
        here; the node removes the orphan domain when it reconciles."""
        try:
            await self._release_everywhere(row["uuid"])  # type: ignore[attr-defined]
            await self._finish_delete(row, {"domain_event": None, "detail": reason, "host": row["host"]})  # type: ignore[attr-defined]
        except AiostackError as exc:
            log.warning("instance %s: local delete must wait: %s", row["uuid"], exc)
            await self._update(row["uuid"], expect_task="deleting")  # type: ignore[attr-defined]
