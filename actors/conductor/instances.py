"""Reading instances: one, a page of them, a project's usage, a guest's console log."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from actors.conductor.core import Core
from actors.conductor.quotas import instance_usage
from actors.conductor.schema import SHOWN_COLUMNS, ShownRow
from actors.conductor.states import REBUILD_TASKS, RESIZE_FROM, RESIZE_STEPS, STATUS, TASK_STATUS
from api.conductor import ComputeHost, ConsoleOutput, ProjectUsage, Server, Servers
from bus import Conflict, InvalidRequest
from runtime.context import caller, require_caller, sees_all
from runtime.stamps import stamp
from runtime.states import TaskState, VmState
from runtime.store import from_json

MAX_LIMIT = 1000
"""Nova's ``osapi_max_limit``: a page never holds more."""


def status_condition(status: str) -> tuple[str, list[Any]]:
    """The SQL condition, and its parameters, for the instances Nova shows with ``status`` (an
    unknown status: none)."""
    if status == "REBUILD":
        return "(vm_state IN (?, ?, ?) AND task_state IN (?, ?))", [
            VmState.ACTIVE,
            VmState.STOPPED,
            VmState.ERROR,
            *sorted(REBUILD_TASKS),
        ]
    tasks = [task_state for task_state, shown in TASK_STATUS.items() if shown == status]
    if tasks:
        marks = ", ".join("?" * len(tasks))
        return f"(vm_state = ? AND task_state IN ({marks}))", [VmState.ACTIVE, *tasks]
    if status == "RESIZE":
        return "(vm_state IN (?, ?) AND task_state IN (?, ?, ?, ?))", [*RESIZE_FROM, *RESIZE_STEPS]
    if status == "REVERT_RESIZE":
        return "(vm_state = ? AND task_state = ?)", [VmState.RESIZED, TaskState.RESIZE_REVERTING]
    if status == "VERIFY_RESIZE":
        return "(vm_state = ? AND coalesce(task_state, '') != ?)", [
            VmState.RESIZED,
            TaskState.RESIZE_REVERTING,
        ]
    vm_states = [vm_state for vm_state, shown in STATUS.items() if shown == status]
    if not vm_states:
        return "1 = 0", []
    (vm_state,) = vm_states
    if vm_state is VmState.ACTIVE:  # but the active ones showing a task's status
        marks = ", ".join("?" * len(TASK_STATUS))
        return f"(vm_state = ? AND coalesce(task_state, '') NOT IN ({marks}))", [vm_state, *TASK_STATUS]
    if vm_state in (VmState.STOPPED, VmState.ERROR):  # but those rebuilding (REBUILD)
        return "(vm_state = ? AND coalesce(task_state, '') NOT IN (?, ?))", [vm_state, *sorted(REBUILD_TASKS)]
    return "vm_state = ?", [vm_state]


AFTER_MARKER = "created_at <= ? AND (created_at < ? OR uuid < ?)"
"""The instances after the marker's (its ``created_at``, the same, its ``uuid``) in a page's order:
a range of the index from the marker on (with an OR alone, every instance before it is read)."""


def page_query(clauses: list[str]) -> str:
    """The instances meeting every one of ``clauses``, newest first (``list_instances``)."""
    return (
        f"SELECT {SHOWN_COLUMNS} FROM instances WHERE {' AND '.join(clauses)}"
        " ORDER BY created_at DESC, uuid DESC"
    )


def _as_stamp(when: str) -> str:
    """An ISO 8601 time as the store writes its stamps (UTC, ``Z``), to compare with them.

    :raises InvalidRequest: not an ISO 8601 time.
    """
    try:
        parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Invalid changes-since value: {when!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return stamp(parsed)


def stamp_of(epoch: float) -> str:
    """An epoch time as the API shows times (ISO 8601, UTC)."""
    return stamp(datetime.fromtimestamp(epoch, UTC))


def _regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regular expression, or, when it is none, as the text it is."""
    try:
        return re.compile(pattern)
    except re.error:
        return re.compile(re.escape(pattern))


def _fixed_ips(row: ShownRow) -> list[str]:
    addresses: dict[str, list[dict[str, Any]]] = from_json(row["addresses"], {})
    return [str(address.get("addr", "")) for network in addresses.values() for address in network]


def _matchers(*, name: str | None, flavor: str | None, ip: str | None) -> list[Callable[[ShownRow], bool]]:
    """The filters of ``list_instances`` the store does not apply: one test of a row each."""
    matches: list[Callable[[ShownRow], bool]] = []
    if name:
        named = _regex(name)
        matches.append(lambda row: named.search(row["name"]) is not None)
    if flavor:
        matches.append(lambda row: str(from_json(row["flavor"], {}).get("id")) == flavor)
    if ip:
        address = _regex(ip)
        matches.append(lambda row: any(address.search(found) for found in _fixed_ips(row)))
    return matches


class ServerReads(Servers):
    """Serves ``api.conductor.Servers``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def get_instance(self, *, instance_uuid: str) -> Server:
        return await self.core.shown(await self.core.row(instance_uuid))

    async def list_instances(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        host: str | None = None,
        all_projects: bool = False,
        project_id: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        image: str | None = None,
        flavor: str | None = None,
        ip: str | None = None,
        changes_since: str | None = None,
    ) -> list[Server]:
        """Newest first; ``marker`` is the last id of the previous page. ``name`` and ``ip`` are
        regular expressions, searched in Python (the store has no common dialect for them).

        :raises InvalidRequest: an unknown marker, a bad regular expression or time.
        """
        ctx = caller()
        matches = _matchers(name=name, flavor=flavor, ip=ip)
        clauses: list[str] = []
        params: list[Any] = []
        if changes_since is None:
            clauses.append("deleted = 0")
        else:
            clauses.append("updated_at >= ?")
            params.append(_as_stamp(changes_since))
        if image:
            clauses.append("image_ref = ?")
            params.append(image)
        if not (all_projects and sees_all(ctx)) and ctx is not None and ctx.user_id is not None:
            clauses.append("project_id = ?")
            params.append(ctx.project_id)
        elif project_id:
            clauses.append("project_id = ?")
            params.append(project_id)
        if host:
            clauses.append("host = ?")
            params.append(host)
        if marker:
            anchor = await self.core.store.fetchone(
                "SELECT created_at, uuid FROM instances WHERE uuid = ?", (marker,)
            )
            if anchor is None:
                raise InvalidRequest(f"marker [{marker}] not found")
            clauses.append(AFTER_MARKER)
            params += [anchor["created_at"], anchor["created_at"], anchor["uuid"]]
        if status:
            condition, values = status_condition(status.upper())
            clauses.append(condition)
            params += values
        most = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
        sql = page_query(clauses)
        if matches:
            rows = await self.core.store.fetchall(sql, params, row=ShownRow)
            rows = [row for row in rows if all(match(row) for match in matches)][:most]
        else:
            rows = await self.core.store.fetchall(f"{sql} LIMIT ?", [*params, most], row=ShownRow)
        await self.core.refresh_hosts()
        return [self.core.as_server(row) for row in rows]

    async def list_compute_hosts(self) -> list[ComputeHost]:
        """Every compute host and whether it is up, as the scheduler says now."""
        hosts = await self.core.hosts.list_hosts()
        return [
            {
                "host": host["host"],
                "alive": host["alive"],
                "last_seen": stamp_of(host["last_seen"]) if host["last_seen"] else None,
            }
            for host in hosts
        ]

    async def project_usage(self) -> ProjectUsage:
        """What the caller's project uses now: instances, vCPUs, RAM."""
        used = await instance_usage(self.core.store, str(require_caller().project_id))
        return {"instances": used["instances"], "cores": used["cores"], "ram": used["ram"]}

    async def get_console_output(self, *, instance_uuid: str, length: int | None = None) -> ConsoleOutput:
        """The guest's serial console log from its node, the last ``length`` lines (-1 or None: all).

        :raises Conflict: the instance has no host yet, or its driver keeps no console log.
        """
        row = await self.core.row(instance_uuid)
        if not row["host"]:
            raise Conflict(f"Instance {instance_uuid} is not running on a host yet.")
        return await self.core.node(row["host"]).get_console_output(
            instance_uuid=instance_uuid, length=None if length == -1 else length
        )
