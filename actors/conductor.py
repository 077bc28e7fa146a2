"""The conductor actor (nova-conductor, and nova-api's database writes): the only writer of compute state.

It owns instances, flavors and instance actions. Steps 6-13 of the overview happen here:
``create_instance`` records the instance (BUILD/scheduling) and answers at once; a build
task asks the scheduler for a host (which claims the resources) and casts
``node.<host>.build_and_run_instance``. The node asks back for what it needs (steps
14-19, ``get_build_request``) and reports libvirt's lifecycle events through
``domain_event``: ACTIVE, SHUTOFF, DELETED come from those events, never from assuming
that a libvirt call worked. Every state change is published as an ``instance`` event.

Handlers (version history: 1 - initial; 2 - create_instance takes block_devices, volumes
attached at boot; schema 2 stores them):
* create_instance(name, flavor_ref, image_ref, networks="auto", metadata=None, key_name=None,
  user_data=None, block_devices=None) -> instance
* get_instance(instance_uuid), list_instances(...), delete_instance, stop_instance,
  start_instance, reboot_instance(reboot_type) -> instance
* attach_volume(instance_uuid, volume_id, device=None) -> attachment;
  detach_volume(instance_uuid, volume_id); list_volume_attachments(instance_uuid)
* list_flavors(), get_flavor(flavor_id), list_actions(instance_uuid)
* node side: get_build_request(instance_uuid, host), instance_spawning(instance_uuid, host,
  addresses), build_failed(instance_uuid, host, message), domain_event(instance_uuid, host,
  event, detail), task_done(instance_uuid, host), list_host_instances(host)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors import keypairs
from actors.conductor_watch import TaskWatch
from actors.keypairs import KeypairHandlers
from bus import (
    Actor,
    AiostackError,
    Bus,
    CallTimeout,
    Conflict,
    InvalidRequest,
    NotFound,
    current_request_id,
    handler,
)
from runtime.config import Config
from runtime.context import caller, check_visible, require_caller, sees_all
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.states import lifecycle_name
from runtime.store import Store, from_json, to_json

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE flavors (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, ram INTEGER NOT NULL,
        disk INTEGER NOT NULL, ephemeral INTEGER NOT NULL DEFAULT 0, swap INTEGER NOT NULL DEFAULT 0,
        is_public INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE instances (
        uuid TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
        flavor TEXT NOT NULL, image_ref TEXT NOT NULL, requested_networks TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}', key_name TEXT, user_data TEXT,
        host TEXT, vm_state TEXT NOT NULL, task_state TEXT, power_state INTEGER NOT NULL DEFAULT 0,
        addresses TEXT NOT NULL DEFAULT '{}', fault TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, launched_at TEXT, terminated_at TEXT,
        deleted INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX instances_project ON instances(project_id, deleted, created_at);
    CREATE INDEX instances_host ON instances(host, deleted);
    CREATE TABLE instance_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, instance_uuid TEXT NOT NULL, action TEXT NOT NULL,
        request_id TEXT, user_id TEXT, project_id TEXT, start_time TEXT NOT NULL,
        finish_time TEXT, result TEXT, message TEXT);
    CREATE INDEX instance_actions_uuid ON instance_actions(instance_uuid);
    """,
    """
    ALTER TABLE instances ADD COLUMN block_devices TEXT NOT NULL DEFAULT '[]';
    """,
    # 3: task supervision (actors/conductor_watch.py): when the instance last made progress,
    # whether the node took the task's cast, how often it was sent, the build attempts and the
    # hosts tried; the steps of each action (Nova's instance_actions_events).
    """
    ALTER TABLE instances ADD COLUMN progress_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN task_sent_at REAL;
    ALTER TABLE instances ADD COLUMN task_acked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN task_sends INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN build_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN tried_hosts TEXT NOT NULL DEFAULT '[]';
    UPDATE instances SET progress_at = CAST(strftime('%s', 'now') AS REAL);
    CREATE INDEX instances_task ON instances(deleted, task_state);
    CREATE TABLE instance_action_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, action_id INTEGER NOT NULL, event TEXT NOT NULL,
        host TEXT, time TEXT NOT NULL, result TEXT NOT NULL, details TEXT);
    CREATE INDEX instance_action_events_action ON instance_action_events(action_id);
    """,
    keypairs.MIGRATION,
    # 5: admins' all-projects pages walk every live instance newest first
    """
    CREATE INDEX instances_listing ON instances(deleted, created_at, uuid);
    """,
]

DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)

IMAGE_CHECK_TTL = 5.0
SCHEDULE_ATTEMPT_TIMEOUT = (
    5.0  # a claim takes milliseconds; a scheduler that died with the request never answers
)
ANY_TASK: Any = object()  # _update's "whatever the task_state is" (None is a task_state to expect)

# power_state values, as Nova numbers them
NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED = 0, 1, 3, 4, 6, 7

# libvirt VIR_DOMAIN_EVENT_* lifecycle event numbers
DEFINED, UNDEFINED, STARTED, EVENT_SUSPENDED, RESUMED, STOPPED, SHUTDOWN_EVENT, PMSUSPENDED, CRASHED_EVENT = (
    range(9)
)

# The API status of a (vm_state, task_state), as Nova shows it
_STATUS = {
    "building": "BUILD",
    "active": "ACTIVE",
    "stopped": "SHUTOFF",
    "paused": "PAUSED",
    "suspended": "SUSPENDED",
    "error": "ERROR",
    "deleted": "DELETED",
}
_TASK_STATUS = {"rebooting": "REBOOT", "rebooting_hard": "HARD_REBOOT"}

# Which vm_states an action may start from
_ALLOWED_FROM = {
    "stop": {"active", "paused", "suspended", "error"},
    "start": {"stopped"},
    "reboot": {"active"},
    "reboot_hard": {"active", "stopped", "paused", "suspended", "error"},
    "pause": {"active"},
    "unpause": {"paused"},
    "suspend": {"active"},
    "resume": {"suspended"},
}
# os-pause / os-suspend actions: (action, task_state while it runs); libvirt's events finish them:
# pause SUSPENDED -> paused, unpause RESUMED -> active, suspend (managed save) STOPPED -> suspended,
# resume (restore) STARTED -> active
POWER_ACTIONS = {
    "pause": "pausing",
    "unpause": "unpausing",
    "suspend": "suspending",
    "resume": "resuming",
}


MAX_LIMIT = 1000  # Nova's osapi_max_limit: a page never holds more


def _status_condition(status: str) -> str:
    """The SQL condition for instances Nova would show with ``status`` (no match: none)."""
    rebooting = {"REBOOT": "rebooting", "HARD_REBOOT": "rebooting_hard"}
    if status in rebooting:
        return f"(vm_state = 'active' AND task_state = '{rebooting[status]}')"
    if status == "ACTIVE":
        return "(vm_state = 'active' AND coalesce(task_state, '') NOT IN ('rebooting', 'rebooting_hard'))"
    states = [vm_state for vm_state, shown in _STATUS.items() if shown == status]
    return f"vm_state = '{states[0]}'" if states else "0"


def status_of(vm_state: str, task_state: str | None) -> str:
    if vm_state == "active" and task_state in _TASK_STATUS:
        return _TASK_STATUS[task_state]
    return _STATUS.get(vm_state, "UNKNOWN")


def view(row: dict[str, Any]) -> dict[str, Any]:
    """An instance as the API and events show it."""
    flavor = from_json(row["flavor"], {})
    return {
        "id": row["uuid"],
        "name": row["name"],
        "status": status_of(row["vm_state"], row["task_state"]),
        "vm_state": row["vm_state"],
        "task_state": row["task_state"],
        "power_state": row["power_state"],
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "host": row["host"],
        "flavor": flavor,
        "image_ref": row["image_ref"],
        "metadata": from_json(row["metadata"], {}),
        "key_name": row["key_name"],
        "addresses": from_json(row["addresses"], {}),
        "fault": from_json(row["fault"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "launched_at": row["launched_at"],
        "terminated_at": row["terminated_at"],
    }


class ConductorActor(TaskWatch, KeypairHandlers, Actor):
    name = "conductor"
    max_inflight = 256

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        schedule_timeout: float = 30.0,
        task_timeout: float = 60.0,
        ack_timeout: float = 5.0,
        max_build_attempts: int = 3,
    ) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("conductor"), MIGRATIONS)
        self.schedule_timeout = schedule_timeout
        self.task_timeout = task_timeout
        self.ack_timeout = ack_timeout
        self.max_build_attempts = max_build_attempts
        self._images_checked: dict[tuple[str, str | None], float] = {}
        self._building: set[str] = set()
        self._hosts_alive: dict[str, bool] = {}

    async def on_start(self) -> None:
        await self.store.open()
        async with self.store.transaction() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO flavors (id, name, vcpus, ram, disk) VALUES (?, ?, ?, ?, ?)",
                DEFAULT_FLAVORS,
            )
        for row in await self.store.fetchall(
            "SELECT * FROM instances WHERE deleted = 0 AND task_state = 'scheduling'"
        ):
            # a build task lives in memory: pick up what a previous conductor had not scheduled yet
            self._resume_scheduling(row)
        self.spawn(self._watch_tasks(), name="conductor-task-watch")

    async def on_stop(self) -> None:
        await self.store.close()

    # -- reading ------------------------------------------------------------------------

    async def _row(self, instance_uuid: str) -> dict[str, Any]:
        row = await self.store.fetchone(
            "SELECT * FROM instances WHERE uuid = ? AND deleted = 0", (str(instance_uuid),)
        )
        if row is None:
            raise NotFound(f"Instance {instance_uuid} could not be found.")
        check_visible("Instance", instance_uuid, row["project_id"])
        return row

    @handler(policy="compute:read")
    async def get_instance(self, instance_uuid: str) -> dict[str, Any]:
        """:raises NotFound: no such instance, or another project's."""
        row = await self._row(instance_uuid)
        await self._refresh_hosts()
        return self._shown(row)

    def _shown(self, row: dict[str, Any]) -> dict[str, Any]:
        """An instance as the API shows it: its view and whether its host is up."""
        return {**view(row), "host_status": self.host_status(row["host"])}

    @handler(policy="compute:read")
    async def list_instances(
        self,
        name: str | None = None,
        status: str | None = None,
        host: str | None = None,
        all_projects: bool = False,
        project_id: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``marker`` is the last id of the previous page.

        :raises InvalidRequest: unknown marker or a bad limit.
        """
        ctx = caller()
        clauses, params = ["deleted = 0"], []
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
            anchor = await self.store.fetchone(
                "SELECT created_at, uuid FROM instances WHERE uuid = ?", (marker,)
            )
            if anchor is None:
                raise InvalidRequest(f"marker [{marker}] not found")
            clauses.append("(created_at < ? OR (created_at = ? AND uuid < ?))")
            params += [anchor["created_at"], anchor["created_at"], anchor["uuid"]]
        if name:
            clauses.append("instr(name, ?) > 0")
            params.append(str(name))
        if status:
            clauses.append(_status_condition(str(status).upper()))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise InvalidRequest("limit must be a non-negative integer")
        params.append(MAX_LIMIT if limit is None else min(limit, MAX_LIMIT))
        sql = (
            f"SELECT * FROM instances WHERE {' AND '.join(clauses)}"
            " ORDER BY created_at DESC, uuid DESC LIMIT ?"
        )
        await self._refresh_hosts()
        return [self._shown(row) for row in await self.store.fetchall(sql, params)]

    @handler(policy="compute:read")
    async def project_usage(self) -> dict[str, int]:
        """What the caller's project uses now: instances, vCPUs, RAM (Nova's limits ``total*Used``)."""
        flavors = await self.store.fetchall(
            "SELECT flavor FROM instances WHERE project_id = ? AND deleted = 0",
            (require_caller().project_id,),
        )
        sizes = [from_json(row["flavor"], {}) for row in flavors]
        return {
            "instances": len(sizes),
            "cores": sum(size.get("vcpus", 0) for size in sizes),
            "ram": sum(size.get("ram", 0) for size in sizes),
        }

    @handler(policy="compute:read")
    async def list_flavors(self) -> list[dict[str, Any]]:
        return await self.store.fetchall("SELECT * FROM flavors ORDER BY ram, id")

    @handler(policy="compute:read")
    async def get_flavor(self, flavor_id: str) -> dict[str, Any]:
        """:raises NotFound: no flavor with that id or name."""
        flavor = await self.store.fetchone(
            "SELECT * FROM flavors WHERE id = ? OR name = ?", (str(flavor_id), str(flavor_id))
        )
        if flavor is None:
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return flavor

    @handler(policy="compute:read")
    async def list_actions(self, instance_uuid: str) -> list[dict[str, Any]]:
        await self._row(instance_uuid)
        return await self.store.fetchall(
            "SELECT * FROM instance_actions WHERE instance_uuid = ? ORDER BY id", (instance_uuid,)
        )

    @handler(policy="compute:read")
    async def list_action_events(self, instance_uuid: str) -> list[dict[str, Any]]:
        """The steps of the instance's actions, oldest first, each with its action's name."""
        await self._row(instance_uuid)
        return await self.store.fetchall(
            "SELECT a.action, e.event, e.host, e.time, e.result, e.details FROM instance_action_events e"
            " JOIN instance_actions a ON a.id = e.action_id WHERE a.instance_uuid = ? ORDER BY e.id",
            (instance_uuid,),
        )

    @handler
    async def list_host_instances(self, host: str) -> list[dict[str, Any]]:
        """Every live instance recorded on ``host`` (a node reconciles libvirt with these)."""
        rows = await self.store.fetchall("SELECT * FROM instances WHERE host = ? AND deleted = 0", (host,))
        return [view(row) for row in rows]

    # -- create and build -----------------------------------------------------------------

    @handler(policy="compute:write")
    async def create_instance(
        self,
        name: str,
        flavor_ref: str,
        image_ref: str,
        networks: Any = "auto",
        metadata: dict[str, str] | None = None,
        key_name: str | None = None,
        user_data: str | None = None,
        block_devices: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Record a new instance (BUILD/scheduling) and start building it; answers at once.

        ``block_devices``: existing volumes to attach at boot, ``[{"volume_id", "device"}]``.

        :raises InvalidRequest: bad name, unknown flavor, image, network or volume, bad networks,
            a volume that is not available.
        """
        ctx = require_caller()
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidRequest("Invalid input: 'name' must be a string of 1 to 255 characters")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise InvalidRequest("Invalid input: 'metadata' must map strings to strings")
        try:
            flavor = await self.get_flavor(str(flavor_ref))
        except NotFound:
            raise InvalidRequest(f"Flavor {flavor_ref} could not be found.") from None
        await self._check_image(image_ref)
        if key_name is not None and not await self.store.fetchone(
            "SELECT 1 FROM keypairs WHERE user_id = ? AND name = ?", (ctx.user_id, str(key_name))
        ):
            raise InvalidRequest("Invalid key_name provided.")
        requested = await self._check_networks(networks)
        volumes = await self._check_block_devices(block_devices)
        now = utcnow()
        row = {
            "uuid": new_uuid(),
            "name": name,
            "project_id": ctx.project_id,
            "user_id": ctx.user_id,
            "flavor": to_json(flavor),
            "image_ref": str(image_ref),
            "requested_networks": to_json(requested),
            "block_devices": to_json(volumes),
            "metadata": to_json(metadata or {}),
            "key_name": key_name,
            "user_data": user_data,
            "vm_state": "building",
            "task_state": "scheduling",
            "created_at": now,
            "updated_at": now,
            "progress_at": time.time(),
        }
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO instances (uuid, name, project_id, user_id, flavor, image_ref,"
                " requested_networks, block_devices, metadata, key_name, user_data, vm_state, task_state,"
                " created_at, updated_at, progress_at) VALUES"
                " (:uuid, :name, :project_id, :user_id, :flavor, :image_ref, :requested_networks,"
                " :block_devices, :metadata,"
                " :key_name, :user_data, :vm_state, :task_state, :created_at, :updated_at, :progress_at)",
                row,
            )
            await self._start_action(db, row["uuid"], "create")
        instance = view(
            {
                **row,
                "host": None,
                "power_state": NOSTATE,
                "addresses": "{}",
                "fault": None,
                "launched_at": None,
                "terminated_at": None,
            }
        )
        try:
            await publish_event(
                self.bus, "instance", row["uuid"], ctx.project_id, "instance.building", instance
            )
        except Exception as exc:  # the instance is recorded: it is built, and the caller told so, regardless
            log.warning("instance %s: its building event could not be stored: %s", row["uuid"], exc)
        self.spawn(self._schedule_and_build(row["uuid"], flavor), name=f"build-{row['uuid']}")
        return instance

    async def _check_image(self, image_ref: Any) -> None:
        """The image must exist, be active and visible to the caller (what nova-api checks).

        A positive answer is kept for ``IMAGE_CHECK_TTL`` seconds per (image, project): the
        node asks the image actor again before it builds (step 20), which stays the authority.
        """
        if not isinstance(image_ref, str) or not image_ref:
            raise InvalidRequest("Invalid input: 'imageRef' must be an image id")
        ctx = caller()
        key = (image_ref, ctx.project_id if ctx else None)
        if self._images_checked.get(key, 0.0) > time.monotonic():
            return
        try:
            image = await self.bus.call("image.get", {"image_id": image_ref})
        except NotFound:
            raise InvalidRequest(f"Image {image_ref} could not be found.") from None
        if image["status"] != "active":
            raise InvalidRequest(f"Image {image_ref} is not active.")
        if len(self._images_checked) > 10_000:
            self._images_checked.clear()
        self._images_checked[key] = time.monotonic() + IMAGE_CHECK_TTL

    async def _check_networks(self, networks: Any) -> Any:
        if networks in ("auto", "none", None):
            return networks or "auto"
        if not isinstance(networks, list) or not all(isinstance(n, dict) for n in networks):
            raise InvalidRequest("Invalid input: 'networks' must be 'auto', 'none' or a list of objects")
        requested = []
        for network in networks:
            if isinstance(network.get("port"), str):
                try:
                    await self.bus.call("net.get_port", {"port_id": network["port"]})
                except NotFound:
                    raise InvalidRequest(f"Port {network['port']} could not be found.") from None
                requested.append({"port": network["port"]})
            elif isinstance(network.get("uuid"), str):
                try:
                    await self.bus.call("net.get_network", {"network_id": network["uuid"]})
                except NotFound:
                    raise InvalidRequest(f"Network {network['uuid']} could not be found.") from None
                entry = {"uuid": network["uuid"]}
                if isinstance(network.get("fixed_ip"), str):
                    entry["fixed_ip"] = network["fixed_ip"]
                requested.append(entry)
            else:
                raise InvalidRequest("Invalid input: each network needs a 'uuid' or a 'port'")
        return requested

    async def _check_block_devices(self, block_devices: Any) -> list[dict[str, Any]]:
        if block_devices is None:
            return []
        if not isinstance(block_devices, list) or not all(
            isinstance(d, dict) and isinstance(d.get("volume_id"), str) for d in block_devices
        ):
            raise InvalidRequest("Invalid input: each block device needs a 'volume_id'")
        checked = []
        for device in block_devices:
            try:
                volume = await self.bus.call("volume.get", {"volume_id": device["volume_id"]})
            except NotFound:
                raise InvalidRequest(f"Volume {device['volume_id']} could not be found.") from None
            if volume["status"] != "available":
                raise InvalidRequest(f"Volume {device['volume_id']} is {volume['status']}, not available.")
            checked.append({"volume_id": device["volume_id"], "device": device.get("device")})
        return checked

    async def _schedule_and_build(
        self,
        instance_uuid: str,
        flavor: dict[str, Any],
        exclude_hosts: list[str] | None = None,
        previous_failure: str | None = None,
    ) -> None:
        """Steps 8-13: pick and claim a host (not one tried before), record it, hand the build to the node."""
        self._building.add(instance_uuid)
        try:
            host = await self._select_destination(instance_uuid, flavor, exclude_hosts or [])
            row = await self.store.fetchone(
                "UPDATE instances SET host = ?, task_state = 'spawning', build_attempts = build_attempts + 1,"
                " task_acked = 0, task_sends = 0, progress_at = ?, updated_at = ?"
                " WHERE uuid = ? AND deleted = 0 AND task_state = 'scheduling' RETURNING *",
                (host, time.time(), utcnow(), instance_uuid),
            )
            if row is None:
                await self.bus.call("scheduler.release", {"instance_uuid": instance_uuid})
                return
            await self._record_step(instance_uuid, "create", "schedule", host, "Success")
            await self._send_task(row)
        except AiostackError as exc:
            message = f"{type(exc).__name__}: {exc}"
            await self._fail_build(
                instance_uuid, f"{previous_failure}; then {message}" if previous_failure else message
            )
        except Exception as exc:
            log.exception("build of %s failed in the conductor", instance_uuid)
            await self._fail_build(instance_uuid, f"{type(exc).__name__}: {exc}")
        finally:
            self._building.discard(instance_uuid)

    async def _select_destination(
        self, instance_uuid: str, flavor: dict[str, Any], exclude_hosts: list[str]
    ) -> str:
        """Ask the scheduler for a claimed host; while it is away (restarting, or died holding the
        request), ask again until ``schedule_timeout`` has passed (claims are idempotent per instance)."""
        placed = await self.bus.call_patiently(
            "scheduler.select_destinations",
            {
                "instance_uuid": instance_uuid,
                "vcpus": flavor["vcpus"],
                "memory_mb": flavor["ram"],
                "disk_gb": flavor["disk"],
                "exclude_hosts": exclude_hosts,
            },
            within=self.schedule_timeout,
            attempt_timeout=SCHEDULE_ATTEMPT_TIMEOUT,
        )
        return placed["host"]

    @handler
    async def get_build_request(self, instance_uuid: str, host: str) -> dict[str, Any]:
        """Steps 14-19: what a node needs to build the instance (flavor, image, networks).

        :raises Conflict: the instance is not being built on ``host`` (e.g. deleted meanwhile).
        """
        row = await self._row(instance_uuid)
        if row["host"] != host or row["vm_state"] != "building" or row["task_state"] == "deleting":
            raise Conflict(f"Instance {instance_uuid} is not being built on {host}")
        if not row["task_acked"]:
            await self.task_progress(host, [instance_uuid])
            await self._record_step(instance_uuid, "create", "node_accepted", host, "Success")
        return {
            "instance": view(row),
            "requested_networks": from_json(row["requested_networks"], "auto"),
            "block_devices": from_json(row["block_devices"], []),
            "user_data": row["user_data"],
        }

    @handler
    async def instance_spawning(self, instance_uuid: str, host: str, addresses: dict[str, Any]) -> None:
        """The node has the image, ports and disks and is about to create the domain."""
        await self._update(instance_uuid, expect_host=host, addresses=to_json(addresses))

    @handler
    async def build_failed(self, instance_uuid: str, host: str, message: str) -> None:
        """The node could not build (and gave back what it took): another host is tried, up to
        ``max_build_attempts`` in all; then ERROR with the fault, the claim released."""
        row = await self._host_row(instance_uuid, host)
        if row is None or row["vm_state"] != "building" or row["task_state"] == "deleting":
            return
        await self._reschedule(row, f"build on {host} failed: {message}")

    async def _fail_build(self, instance_uuid: str, message: str, host: str | None = None) -> None:
        fault = {"code": 500, "message": message[:1000], "created": utcnow()}
        row = await self._update(
            instance_uuid,
            expect_host=host,
            unless_task="deleting",
            vm_state="error",
            task_state=None,
            fault=to_json(fault),
        )
        if row is None:
            return
        await self._finish_action(instance_uuid, "create", "Error", message)
        try:
            await self.bus.call("scheduler.release", {"instance_uuid": instance_uuid})
        except AiostackError as exc:
            log.error("instance %s is in ERROR but its claim could not be released: %s", instance_uuid, exc)
        await publish_event(
            self.bus, "instance", instance_uuid, row["project_id"], "instance.error", view(row)
        )

    # -- libvirt's word -----------------------------------------------------------------

    @handler
    async def domain_event(
        self, instance_uuid: str, host: str, event: int, detail: int
    ) -> dict[str, Any] | None:
        """Turn a libvirt lifecycle event from ``host`` into the instance's new state.

        Returns the instance as it now is (None when the event changed nothing).
        """
        row = await self._host_row(instance_uuid, host)
        if row is None:
            return None
        name = lifecycle_name(event)
        return await self._apply(
            row, self._transition(row, event), {"domain_event": name, "detail": detail, "host": host}
        )

    @handler
    async def sync_power_state(self, instance_uuid: str, host: str, running: bool) -> dict[str, Any] | None:
        """A node saw the domain's power state without an event (it did not change): settle the task."""
        row = await self._host_row(instance_uuid, host)
        if row is None or row["task_state"] == "deleting":
            return None
        if running:
            changes = {"vm_state": "active", "power_state": RUNNING, "task_state": None}
        else:
            changes = {"vm_state": "stopped", "power_state": SHUTDOWN, "task_state": None}
        return await self._apply(
            row, changes, {"domain_event": None, "detail": "power state sync", "host": host}
        )

    @handler
    async def domain_gone(self, instance_uuid: str, host: str) -> dict[str, Any] | None:
        """A node found no domain to undefine for an instance being deleted."""
        row = await self._host_row(instance_uuid, host)
        if row is None or row["task_state"] != "deleting":
            return None
        return await self._apply(
            row, {"deleted": True}, {"domain_event": None, "detail": "no domain", "host": host}
        )

    async def _host_row(self, instance_uuid: str, host: str) -> dict[str, Any] | None:
        row = await self.store.fetchone(
            "SELECT * FROM instances WHERE uuid = ? AND deleted = 0", (instance_uuid,)
        )
        return row if row is not None and row["host"] == host else None

    async def _apply(
        self, row: dict[str, Any], changes: dict[str, Any], cause: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Write ``changes`` and publish the instance event they make, with their cause."""
        if not changes:
            return None
        if changes.get("deleted"):
            return await self._finish_delete(row, cause)
        updated = await self._update(row["uuid"], expect_host=row["host"], **changes)
        if updated is None:
            return None
        if row["vm_state"] == "building" and updated["vm_state"] == "active":
            await self._finish_action(row["uuid"], "create", "Success")
        instance = {**view(updated), "cause": cause}
        if (updated["vm_state"], updated["task_state"]) != (row["vm_state"], row["task_state"]):
            event_type = f"instance.{status_of(updated['vm_state'], updated['task_state']).lower()}"
            await publish_event(self.bus, "instance", row["uuid"], row["project_id"], event_type, instance)
        return instance

    @staticmethod
    def _transition(row: dict[str, Any], event: int) -> dict[str, Any]:
        """The state machine: column changes for a lifecycle event in the current state."""
        task = row["task_state"]
        if event in (STARTED, RESUMED):
            if task == "deleting":
                return {"power_state": RUNNING}
            changes: dict[str, Any] = {"vm_state": "active", "power_state": RUNNING, "task_state": None}
            if row["vm_state"] == "building":
                changes["launched_at"] = utcnow()
            return changes
        if event == STOPPED:
            if task in ("deleting", "rebooting_hard", "rebooting") or row["vm_state"] == "building":
                return {"power_state": SHUTDOWN}
            if task == "suspending":
                return {"vm_state": "suspended", "power_state": SHUTDOWN, "task_state": None}
            return {"vm_state": "stopped", "power_state": SHUTDOWN, "task_state": None}
        if event == EVENT_SUSPENDED:
            return (
                {"vm_state": "paused", "power_state": PAUSED, "task_state": None}
                if task != "deleting"
                else {}
            )
        if event == CRASHED_EVENT:
            if task == "deleting":
                return {"power_state": CRASHED}
            return {"vm_state": "error", "power_state": CRASHED, "task_state": None}
        if event == UNDEFINED and task == "deleting":
            return {"deleted": True}
        return {}

    @handler
    async def task_done(self, instance_uuid: str, host: str) -> None:
        """A node finished a task that libvirt reports no event for (a soft reboot)."""
        row = await self._update(instance_uuid, expect_host=host, task_state=None)
        if row is not None:
            await publish_event(
                self.bus,
                "instance",
                instance_uuid,
                row["project_id"],
                f"instance.{status_of(row['vm_state'], None).lower()}",
                view(row),
            )

    # -- actions ------------------------------------------------------------------------

    async def _begin(self, instance_uuid: str, action: str, task_state: str) -> dict[str, Any]:
        """Set ``task_state`` if ``action`` may start now, and record the action.

        :raises Conflict: the instance's state does not allow the action.
        """
        row = await self._row(instance_uuid)
        if row["vm_state"] not in _ALLOWED_FROM[action] or row["task_state"] is not None:
            raise Conflict(
                f"Cannot '{action}' instance {instance_uuid} while it is in vm_state "
                f"{row['vm_state']}" + (f", task_state {row['task_state']}" if row["task_state"] else "")
            )
        updated = await self._update(instance_uuid, expect_task=None, task_state=task_state)
        if updated is None:
            raise Conflict(f"Instance {instance_uuid} changed state meanwhile; try again")
        async with self.store.transaction() as db:
            await self._start_action(db, instance_uuid, action)
        await publish_event(
            self.bus, "instance", instance_uuid, row["project_id"], f"instance.{task_state}", view(updated)
        )
        return updated

    @handler(policy="compute:write")
    async def stop_instance(self, instance_uuid: str) -> dict[str, Any]:
        """os-stop: SHUTOFF once libvirt reports the domain stopped.

        :raises Conflict: not in a state that can be stopped.
        """
        row = await self._begin(instance_uuid, "stop", "powering-off")
        await self._send_task(row)
        return view(row)

    @handler(policy="compute:write")
    async def start_instance(self, instance_uuid: str) -> dict[str, Any]:
        """os-start: ACTIVE once libvirt reports the domain started.

        :raises Conflict: not SHUTOFF.
        """
        row = await self._begin(instance_uuid, "start", "powering-on")
        await self._send_task(row)
        return view(row)

    @handler(policy="compute:write")
    async def change_power(self, instance_uuid: str, action: str) -> dict[str, Any]:
        """``pause``, ``unpause``, ``suspend`` (the guest saved to disk) or ``resume``.

        :raises InvalidRequest: another action.
        :raises Conflict: the instance is not in a state the action starts from.
        """
        if action not in POWER_ACTIONS:
            raise InvalidRequest(f"Invalid input: action must be one of {', '.join(POWER_ACTIONS)}")
        row = await self._begin(instance_uuid, action, POWER_ACTIONS[action])
        await self._send_task(row)
        return view(row)

    @handler(policy="compute:write")
    async def reboot_instance(self, instance_uuid: str, reboot_type: str = "SOFT") -> dict[str, Any]:
        """reboot SOFT or HARD (a hard one is destroy + create: STOPPED then STARTED events).

        :raises InvalidRequest: reboot_type is not SOFT or HARD.
        :raises Conflict: the instance cannot be rebooted now.
        """
        if reboot_type not in ("SOFT", "HARD"):
            raise InvalidRequest("Invalid input: reboot type must be SOFT or HARD")
        if reboot_type == "HARD":
            row = await self._begin(instance_uuid, "reboot_hard", "rebooting_hard")
        else:
            row = await self._begin(instance_uuid, "reboot", "rebooting")
        await self._send_task(row)
        return view(row)

    @handler(policy="compute:write")
    async def delete_instance(self, instance_uuid: str) -> None:
        """DELETED once the node has destroyed and undefined the domain and released its resources."""
        row = await self._row(instance_uuid)
        if row["task_state"] == "deleting":
            updated = row  # asked again: do the (idempotent) work again, something may have been lost
        else:
            updated = await self._update(instance_uuid, task_state="deleting")
            if updated is None:
                return
            async with self.store.transaction() as db:
                await self._start_action(db, instance_uuid, "delete")
            await publish_event(
                self.bus, "instance", instance_uuid, row["project_id"], "instance.deleting", view(updated)
            )
        if updated["host"] is None:
            await self._release_everywhere(instance_uuid)
            await self._finish_delete(updated, {"domain_event": None, "detail": None, "host": None})
            return
        await self._send_task(updated)

    async def _release_everywhere(self, instance_uuid: str) -> None:
        await self.bus.call("net.deallocate_for_instance", {"instance_uuid": instance_uuid})
        await self.bus.call("volume.detach_all", {"instance_uuid": instance_uuid})

    async def _finish_delete(self, row: dict[str, Any], cause: dict[str, Any]) -> dict[str, Any]:
        await self.bus.call("scheduler.release", {"instance_uuid": row["uuid"]})
        now = utcnow()
        await self.store.execute(
            "UPDATE instances SET deleted = 1, vm_state = 'deleted', task_state = NULL, power_state = ?,"
            " terminated_at = ?, updated_at = ? WHERE uuid = ?",
            (NOSTATE, now, now, row["uuid"]),
        )
        await self._finish_action(row["uuid"], "delete", "Success")
        instance = {
            **view(
                {
                    **row,
                    "vm_state": "deleted",
                    "task_state": None,
                    "power_state": NOSTATE,
                    "terminated_at": now,
                    "updated_at": now,
                }
            ),
            "cause": cause,
        }
        await publish_event(
            self.bus, "instance", row["uuid"], row["project_id"], "instance.deleted", instance
        )
        return instance

    # -- volumes ------------------------------------------------------------------------

    @handler(policy="compute:write")
    async def attach_volume(
        self, instance_uuid: str, volume_id: str, device: str | None = None
    ) -> dict[str, Any]:
        """Reserve the volume, have the node attach it live, then mark it in-use.

        :raises Conflict: the instance has no host or is busy, or the volume is not available.
        """
        row = await self._row(instance_uuid)
        if row["host"] is None or row["vm_state"] not in ("active", "stopped") or row["task_state"]:
            raise Conflict(
                f"Cannot attach a volume to instance {instance_uuid} in vm_state {row['vm_state']}"
            )
        reserved = await self.bus.call(
            "volume.reserve", {"volume_id": volume_id, "instance_uuid": instance_uuid}
        )
        async with self.store.transaction() as db:
            await self._start_action(db, instance_uuid, "attach_volume")
        await self._record_step(instance_uuid, "attach_volume", "reserve", None, "Success", volume_id)
        try:
            attached = await self.bus.call(
                f"node.{row['host']}.attach_volume",
                {
                    "instance_uuid": instance_uuid,
                    "volume_id": volume_id,
                    "connection": reserved["connection"],
                    "device": device,
                },
            )
        except BaseException as exc:
            await self._undo_attach(row, volume_id, reserved["connection"], exc)
            raise
        await self.bus.call(
            "volume.attach_complete",
            {
                "volume_id": volume_id,
                "instance_uuid": instance_uuid,
                "host": row["host"],
                "device": attached["device"],
            },
        )
        await self._record_step(
            instance_uuid, "attach_volume", "attached", row["host"], "Success", attached["device"]
        )
        await self._finish_action(instance_uuid, "attach_volume", "Success")
        return {
            "id": volume_id,
            "volumeId": volume_id,
            "serverId": instance_uuid,
            "device": attached["device"],
        }

    async def _undo_attach(
        self, row: dict[str, Any], volume_id: str, connection: dict[str, Any], error: BaseException
    ) -> None:
        """The node did not say it attached the volume. If its answer was lost (a timeout), the
        disk may be in the domain after all: have it taken out before the volume is free again."""
        uuid = row["uuid"]
        if isinstance(error, CallTimeout):
            try:
                await self.bus.call(
                    f"node.{row['host']}.detach_volume",
                    {"instance_uuid": uuid, "volume_id": volume_id, "connection": connection},
                )
            except NotFound:
                pass  # it never got there
            except AiostackError as exc:
                await self._record_step(uuid, "attach_volume", "undo", row["host"], "Error", str(exc))
                await self._finish_action(uuid, "attach_volume", "Error", f"attach state unknown: {exc}")
                log.error(
                    "instance %s: volume %s may be in the domain; it stays reserved: %s", uuid, volume_id, exc
                )
                return
        await self.bus.call("volume.unreserve", {"volume_id": volume_id})
        await self._record_step(
            uuid, "attach_volume", "unreserve", None, "Success", f"{type(error).__name__}: {error}"
        )
        await self._finish_action(uuid, "attach_volume", "Error", f"{type(error).__name__}: {error}")

    @handler(policy="compute:write")
    async def detach_volume(self, instance_uuid: str, volume_id: str) -> None:
        """:raises NotFound: the volume is not attached to this instance."""
        row = await self._row(instance_uuid)
        detaching = await self.bus.call(
            "volume.begin_detach", {"volume_id": volume_id, "instance_uuid": instance_uuid}
        )
        try:
            await self.bus.call(
                f"node.{row['host']}.detach_volume",
                {
                    "instance_uuid": instance_uuid,
                    "volume_id": volume_id,
                    "connection": detaching["connection"],
                },
            )
        except BaseException:
            await self.bus.call("volume.roll_detaching", {"volume_id": volume_id})
            raise
        await self.bus.call(
            "volume.detach_complete", {"volume_id": volume_id, "instance_uuid": instance_uuid}
        )
        async with self.store.transaction() as db:
            await self._start_action(db, instance_uuid, "detach_volume", finished=True)

    @handler(policy="compute:read")
    async def list_volume_attachments(self, instance_uuid: str) -> list[dict[str, Any]]:
        await self._row(instance_uuid)
        return [
            {
                "id": a["volume_id"],
                "volumeId": a["volume_id"],
                "serverId": instance_uuid,
                "device": a["device"],
            }
            for a in await self.bus.call("volume.list_attachments")
            if a["server_id"] == instance_uuid and a["attach_status"] == "attached"
        ]

    @handler(policy="compute:read")
    async def get_console_output(self, instance_uuid: str, length: int | None = None) -> dict[str, str]:
        """The guest's serial console log from its node, the last ``length`` lines (-1 or None: all).

        :raises InvalidRequest: a length that is not an integer >= -1.
        :raises Conflict: the instance has no host yet, or its driver keeps no console log.
        """
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < -1):
            raise InvalidRequest("length must be an integer >= -1")
        row = await self._row(instance_uuid)
        if not row["host"]:
            raise Conflict(f"Instance {instance_uuid} is not running on a host yet.")
        return await self.bus.call(
            f"node.{row['host']}.get_console_output",
            {"instance_uuid": instance_uuid, "length": None if length == -1 else length},
        )

    # -- store helpers --------------------------------------------------------------------

    async def _update(
        self,
        instance_uuid: str,
        *,
        expect_task: Any = ANY_TASK,
        expect_host: str | None = None,
        unless_task: str | None = None,
        **changes: Any,
    ) -> dict[str, Any] | None:
        """Apply ``changes`` if the row still matches the expectations; return the new row or None.

        One ``UPDATE ... RETURNING`` statement: atomic on its own, one hop to the store's thread.
        """
        clauses, params = ["uuid = ?", "deleted = 0"], [instance_uuid]
        if expect_task is not ANY_TASK:
            clauses.append("task_state IS ?")
            params.append(expect_task)
        if expect_host is not None:
            clauses.append("host = ?")
            params.append(expect_host)
        if unless_task is not None:
            clauses.append("task_state IS NOT ?")
            params.append(unless_task)
        changes["updated_at"] = utcnow()
        changes["progress_at"] = time.time()
        if "task_state" in changes:
            changes |= {"task_acked": 0, "task_sends": 0}
        assignments = ", ".join(f"{column} = ?" for column in changes)
        return await self.store.fetchone(
            f"UPDATE instances SET {assignments} WHERE {' AND '.join(clauses)} RETURNING *",
            [*changes.values(), *params],
        )

    async def _start_action(
        self, db: Any, instance_uuid: str, action: str, *, finished: bool = False
    ) -> None:
        ctx = caller()
        now = utcnow()
        await db.execute(
            "INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id,"
            " start_time, finish_time, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                instance_uuid,
                action,
                current_request_id(),
                ctx.user_id if ctx else None,
                ctx.project_id if ctx else None,
                now,
                now if finished else None,
                "Success" if finished else None,
            ),
        )

    async def _finish_action(
        self, instance_uuid: str, action: str, result: str, message: str | None = None
    ) -> None:
        await self.store.execute(
            "UPDATE instance_actions SET finish_time = ?, result = ?, message = ? WHERE id = ("
            "SELECT MAX(id) FROM instance_actions"
            " WHERE instance_uuid = ? AND action = ? AND finish_time IS NULL)",
            (utcnow(), result, message, instance_uuid, action),
        )

    async def _record_step(
        self,
        instance_uuid: str,
        action: str,
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
