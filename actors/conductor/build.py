"""Creating and building instances (steps 6-19 of the overview): records, scheduling, the node's
build request, rescheduling.

``create_instance`` checks what the boot names (flavor, image or boot volume, key pair, networks,
volumes), records the instance ``CREATED`` (BUILD) with its create action, and answers at once; a build
task asks the scheduler for a host (which claims the resources), records it (``SCHEDULED``)
and casts the node ``build_and_run_instance``. The node asks back for what it needs
(``get_build_request``, which acknowledges the cast). A build that fails on a node, or stalls,
is ``RESCHEDULED`` on another host up to ``max_build_attempts`` in all; then ``BUILD_FAILED``
(ERROR, with every reason in the fault).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.conductor.core import MIGRATION_TASKS, Core, action_of
from actors.conductor.details import access_address
from actors.conductor.flavors import find_flavor, is_container_flavor
from actors.conductor.keypairs import has_keypair, public_key
from actors.conductor.quotas import check_instance_quota
from actors.conductor.schema import (
    InstanceRow,
    booted_image,
    host_claim,
    recorded_claim,
    states_of,
    task_state_of,
    unshelving,
    view,
)
from actors.conductor.states import BUILDING_ON_HOST, CREATED, Action, Report
from api.conductor import (
    BlockDevice,
    BuildRequest,
    Fault,
    Flavor,
    Instance,
    InstanceMetadata,
    Networks,
    NodeBuilds,
    ServerCreation,
    boot_volume,
)
from api.image import ROOTFS_FORMATS
from api.net import RequestedNetwork
from api.scheduler import CONTAINER_HYPERVISOR_TYPE, Scheduler
from bus import TRANSIENT_ERRORS, AiostackError, Conflict, InvalidRequest, NotFound, Unauthorized
from runtime.context import caller, require_caller
from runtime.stamps import new_uuid, utcnow
from runtime.states import PowerState, TaskState
from runtime.store import from_json, to_json

log = logging.getLogger(__name__)

LIVE_NODE_STEPS = ("switch", "rollback")
"""A live migration's steps whose node defines (or takes back) the domain from the build request."""

IMAGE_CHECK_TTL = 5.0
SCHEDULE_ATTEMPT_TIMEOUT = 5.0
"""A claim takes milliseconds; a scheduler that died with the request never answers."""
ACTIVE_IMAGE = "active"
AVAILABLE_VOLUME = "available"


class Builder(ServerCreation, NodeBuilds):
    """Serves ``api.conductor.ServerCreation`` and ``NodeBuilds``; runs the build tasks."""

    def __init__(self, core: Core, *, schedule_timeout: float, max_build_attempts: int) -> None:
        self.core = core
        self.max_build_attempts = max_build_attempts
        self.scheduler = Scheduler.client(
            core.bus, timeout=SCHEDULE_ATTEMPT_TIMEOUT, patience=schedule_timeout
        )
        """Asks again while the scheduler is away (restarting, or died holding the request) until
        ``schedule_timeout`` has passed: claims are idempotent per instance."""
        self._images_checked: dict[tuple[str, str | None, bool], float] = {}
        self._building: set[str] = set()
        """Instances whose build task runs in this process."""
        self.evacuate_failed: Callable[[InstanceRow, str], Awaitable[None]] | None = None
        """Ends an evacuate whose destination's node could not build it (``evacuate.Evacuations``)."""
        self.migration_failed: Callable[[InstanceRow, TaskState, str], Awaitable[None]] | None = None
        """Ends a cold migration whose node could not define its domain (``resize.Resizes``), or rolls
        back a live one (``live.LiveMigrations``)."""
        self.unshelve_failed: Callable[[InstanceRow, str], Awaitable[None]] | None = None
        """Offloads again an instance its unshelving host's node could not build (``shelve.Shelves``)."""

    # -- create ---------------------------------------------------------------------------

    async def create_instance(
        self,
        *,
        name: str,
        flavor_ref: str,
        image_ref: str,
        networks: Networks | None = "auto",
        metadata: dict[str, str] | None = None,
        key_name: str | None = None,
        user_data: str | None = None,
        block_devices: list[BlockDevice] | None = None,
        access_ip_v4: str = "",
        access_ip_v6: str = "",
        admin_pass: str | None = None,
        security_groups: list[str] | None = None,
        description: str | None = None,
    ) -> Instance:
        """Record a new instance (BUILD) and start building it; answers at once. The same request
        asked again (its reply lost, ``api.conductor``'s resend) answers the instance it made.

        :raises InvalidRequest: an unknown flavor, image, key pair, network, port or volume, an
            image not active, a volume not available, a network entry with no uuid or port, an
            access address that is not one of its version, a security group the project does not have.
        """
        ctx = require_caller()
        if ctx.project_id is None:
            raise Unauthorized("creating an instance needs a project-scoped token")
        access_ip_v4, access_ip_v6 = access_address(access_ip_v4, 4), access_address(access_ip_v6, 6)
        flavor = await find_flavor(self.core.store, flavor_ref)
        if flavor is None:
            raise InvalidRequest(f"Flavor {flavor_ref} could not be found.")
        volumes = await self._check_block_devices(block_devices or [])
        boots_from_volume = boot_volume(volumes) is not None
        if image_ref and boots_from_volume:
            raise InvalidRequest("An instance boots from an image or from a volume, not both.")
        containers = is_container_flavor(flavor)
        if containers and volumes:
            raise InvalidRequest(
                f"Flavor {flavor['name']} makes containers (capabilities:hypervisor_type"
                f" {CONTAINER_HYPERVISOR_TYPE}), which boot from an image and take no volumes."
            )
        if image_ref:
            await self.check_image(image_ref, containers=containers)
        elif not boots_from_volume:
            raise InvalidRequest("An image or a volume to boot from is needed (imageRef is empty).")
        if key_name is not None and not await has_keypair(self.core.store, ctx.user_id, key_name):
            raise InvalidRequest("Invalid key_name provided.")
        requested = await self._check_networks(networks)
        group_ids = (
            None if security_groups is None else await self._group_ids(security_groups, ctx.project_id)
        )
        now = utcnow()
        vm_state, task_state = CREATED
        row: InstanceRow = {
            "uuid": new_uuid(),
            "name": name,
            "project_id": ctx.project_id,
            "user_id": str(ctx.user_id),
            "flavor": to_json(flavor),
            "image_ref": image_ref,
            "requested_networks": to_json(requested),
            "metadata": to_json(metadata or {}),
            "key_name": key_name,
            "user_data": user_data,
            "host": None,
            "vm_state": vm_state,
            "task_state": task_state,
            "power_state": PowerState.NOSTATE,
            "addresses": "{}",
            "fault": None,
            "created_at": now,
            "updated_at": now,
            "launched_at": None,
            "terminated_at": None,
            "deleted": 0,
            "block_devices": to_json(volumes),
            "progress_at": time.time(),
            "task_sent_at": None,
            "task_acked": 0,
            "task_sends": 0,
            "build_attempts": 0,
            "tried_hosts": "[]",
            "version": 1,
            "announced_version": 0,
            "access_ip_v4": access_ip_v4,
            "access_ip_v6": access_ip_v6,
            "locked_by": None,
            "locked_reason": None,
            "admin_pass": admin_pass,
            "snapshot_image": None,
            "security_groups": None if group_ids is None else to_json(group_ids),
            "description": description,
        }
        async with self.core.store.transaction() as db:
            asked = await self.core.asked_already(Action.CREATE, db=db)
            if asked is not None:  # this request, sent again: its reply was lost
                return view(asked)
            await check_instance_quota(db, ctx.project_id, flavor)
            columns = ", ".join(row)
            await db.execute(
                f"INSERT INTO instances ({columns}) VALUES ({', '.join(':' + key for key in row)})", row
            )
            await self.core.start_action(row["uuid"], Action.CREATE, db=db)
        # the caller is answered while the stream stores the building event and the scheduler
        # claims a host; every later event of the instance waits for that one
        building = self.core.spawn(self._announce(row, "instance.building"), name=f"building-{row['uuid']}")
        self.core.spawn(
            self._schedule_and_build(row["uuid"], host_claim(flavor, volumes), announced=building),
            name=f"build-{row['uuid']}",
        )
        return view(row)

    async def check_image(self, image_ref: str, *, containers: bool = False) -> None:
        """The image must exist, be active and visible to the caller (what nova-api checks), and
        be a root filesystem tar (``ROOTFS_FORMATS``) for a container (``containers``), anything
        else for a virtual machine.

        A positive answer is kept for ``IMAGE_CHECK_TTL`` seconds per (image, project, kind): the
        node asks the image actor again before it builds (step 20), which stays the authority.
        """
        ctx = caller()
        key = (image_ref, ctx.project_id if ctx else None, containers)
        if self._images_checked.get(key, 0.0) > time.monotonic():
            return
        try:
            image = await self.core.images.get(image_id=image_ref)
        except NotFound:
            raise InvalidRequest(f"Image {image_ref} could not be found.") from None
        if image["status"] != ACTIVE_IMAGE:
            raise InvalidRequest(f"Image {image_ref} is not active.")
        formats = (image["container_format"], image["disk_format"])
        if containers and formats != ROOTFS_FORMATS:
            raise InvalidRequest(
                f"Image {image_ref} is {'/'.join(formats)}: a container boots from a root filesystem"
                f" tar (container_format {ROOTFS_FORMATS[0]}, disk_format {ROOTFS_FORMATS[1]})."
            )
        if not containers and formats == ROOTFS_FORMATS:
            raise InvalidRequest(
                f"Image {image_ref} is a container's root filesystem ({'/'.join(formats)}): it boots"
                f" with a container flavor (capabilities:hypervisor_type {CONTAINER_HYPERVISOR_TYPE})."
            )
        if len(self._images_checked) > 10_000:
            self._images_checked.clear()
        self._images_checked[key] = time.monotonic() + IMAGE_CHECK_TTL

    async def _check_networks(self, networks: Networks | None) -> Networks:
        """The networks and ports named must exist and be the caller's to use."""
        if networks is None or isinstance(networks, str):
            return networks or "auto"
        requested: list[RequestedNetwork] = []
        for network in networks:
            if "port" in network:
                try:
                    await self.core.net.get_port(port_id=network["port"])
                except NotFound:
                    raise InvalidRequest(f"Port {network['port']} could not be found.") from None
                requested.append({"port": network["port"]})
            elif "uuid" in network:
                try:
                    await self.core.net.get_network(network_id=network["uuid"])
                except NotFound:
                    raise InvalidRequest(f"Network {network['uuid']} could not be found.") from None
                entry: RequestedNetwork = {"uuid": network["uuid"]}
                if "fixed_ip" in network:
                    entry["fixed_ip"] = network["fixed_ip"]
                requested.append(entry)
            else:
                raise InvalidRequest("Invalid input: each network needs a 'uuid' or a 'port'")
        return requested

    async def _group_ids(self, asked: list[str], project_id: str) -> list[str]:
        """The ids of the project's security groups ``asked`` names, each by name or else by id
        (as Nova matches them), in order and once each.

        :raises InvalidRequest: a group the project does not have, a name several of its groups have.
        """
        groups = [
            group
            for group in await self.core.net.list_security_groups()
            if group["project_id"] == project_id  # an admin sees every project's
        ]
        ids: list[str] = []
        for ref in asked:
            named = [group["id"] for group in groups if group["name"] == ref]
            if len(named) > 1:
                raise InvalidRequest(
                    f"Multiple security groups found matching '{ref}'. Use an ID to be more specific."
                )
            found = named or [group["id"] for group in groups if group["id"] == ref]
            if not found:
                raise InvalidRequest(f"Security group {ref} not found for project {project_id}.")
            ids.append(found[0])
        return list(dict.fromkeys(ids))

    async def _check_block_devices(self, block_devices: list[BlockDevice]) -> list[BlockDevice]:
        """The volumes to attach at boot must exist, be available and named once; the one to boot
        from (one at most) bootable. Each is recorded with the image it was made from."""
        checked: list[BlockDevice] = []
        if len({device["volume_id"] for device in block_devices}) < len(block_devices):
            raise InvalidRequest("A volume is named more than once in the block device mapping.")
        if sum(device.get("boot_index") == 0 for device in block_devices) > 1:
            raise InvalidRequest("Only one block device may have boot_index 0.")
        for device in block_devices:
            volume_id = device["volume_id"]
            try:
                volume = await self.core.volumes.get(volume_id=volume_id)
            except NotFound:
                raise InvalidRequest(f"Volume {volume_id} could not be found.") from None
            if volume["status"] != AVAILABLE_VOLUME:
                raise InvalidRequest(f"Volume {volume_id} is {volume['status']}, not available.")
            boots = device.get("boot_index") == 0
            if boots and volume["bootable"] != "true":
                raise InvalidRequest(f"Block Device {volume_id} is not bootable.")
            checked.append(
                {
                    "volume_id": volume_id,
                    "device": "/dev/vda" if boots else device.get("device"),
                    "boot_index": 0 if boots else None,
                    "delete_on_termination": device.get("delete_on_termination", False),
                    "image_id": (volume["image_metadata"] or {}).get("image_id"),
                }
            )
        return checked

    # -- scheduling -----------------------------------------------------------------------

    def resume_scheduling(self, row: InstanceRow) -> None:
        """Schedule an instance whose build task is not running here (a previous conductor's, or one
        whose scheduling stalled)."""
        if row["uuid"] in self._building:
            return
        self.core.spawn(
            self._schedule_and_build(
                row["uuid"],
                recorded_claim(row),
                from_json(row["tried_hosts"], []),
            ),
            name=f"build-{row['uuid']}",
        )

    async def _schedule_and_build(
        self,
        instance_uuid: str,
        claim: Flavor,
        exclude_hosts: list[str] | None = None,
        previous_failure: str | None = None,
        announced: Awaitable[None] | None = None,
    ) -> None:
        """Steps 8-13: pick a host (not one tried before) and claim ``claim`` on it (``host_claim``),
        record it, hand the build to the node. ``announced``: the publishing of the instance's
        building event, which the claim need not wait for but its next event does."""
        self._building.add(instance_uuid)
        try:
            try:
                placed = await self.scheduler.select_destinations(
                    instance_uuid=instance_uuid,
                    vcpus=claim["vcpus"],
                    memory_mb=claim["ram"],
                    disk_gb=claim["disk"],
                    exclude_hosts=exclude_hosts or [],
                    hypervisor_type=claim.get("hypervisor_type"),
                )
            finally:
                if announced is not None:
                    await announced
            host = placed["host"]
            row = await self.core.fresh(instance_uuid)
            moved = None
            if row is not None:
                moved = await self.core.transit(
                    row, Report.SCHEDULED, {"host": host, "build_attempts": row["build_attempts"] + 1}
                )
            if moved is None:  # deleted meanwhile
                await self.core.scheduler.release(instance_uuid=instance_uuid)
                return
            await self.core.record_step(instance_uuid, Action.CREATE, "schedule", host, "Success")
            # the event leaves before the build: its task is ready before the node can ask for
            # the build request, and the node's own events come after that answer
            spawning = asyncio.ensure_future(self._announce(moved.row, f"instance.{TaskState.SPAWNING}"))
            await self.core.send_task(moved.row)
            await spawning
        except TRANSIENT_ERRORS as exc:  # the conductor's own trouble, not the build's: ask again later
            log.warning("build of %s: %s; the watch takes it up again", instance_uuid, exc)
        except AiostackError as exc:
            message = f"{type(exc).__name__}: {exc}"
            await self.fail_build(
                instance_uuid, f"{previous_failure}; then {message}" if previous_failure else message
            )
        except Exception as exc:
            log.exception("build of %s failed in the conductor", instance_uuid)
            await self.fail_build(instance_uuid, f"{type(exc).__name__}: {exc}")
        finally:
            self._building.discard(instance_uuid)

    async def _announce(self, row: InstanceRow, event_type: str) -> None:
        """Publish the instance's state as ``event_type`` (``instance.building``: it is recorded;
        ``instance.spawning``: its host is chosen). The stream's trouble does not stop the build: a
        change without its event is announced later (``Core.announce_missed``)."""
        try:
            await self.core.publish(row, event_type)
        except Exception as exc:
            log.warning("instance %s: %s not published: %s", row["uuid"], event_type, exc)

    async def fail_build(self, instance_uuid: str, message: str, host: str | None = None) -> None:
        """The build gives up: ERROR with ``message`` as its fault, the claim released."""
        row = await self.core.fresh(instance_uuid)
        if row is None or (host is not None and row["host"] != host):
            return
        fault: Fault = {"code": 500, "message": message[:1000], "created": utcnow()}
        moved = await self.core.transit(row, Report.BUILD_FAILED, {"fault": to_json(fault)})
        if moved is None:
            return
        await self.core.finish_action(instance_uuid, Action.CREATE, "Error", message)
        try:
            await self.core.scheduler.release(instance_uuid=instance_uuid)
        except AiostackError as exc:
            log.error("instance %s is in ERROR but its claim could not be released: %s", instance_uuid, exc)
        await self.core.publish(moved.row)

    async def reschedule(self, row: InstanceRow, reason: str) -> None:
        """Release what the attempt on ``row['host']`` took and build on another host, or give up."""
        uuid, host = row["uuid"], row["host"]
        tried: list[str] = from_json(row["tried_hosts"], [])
        if host and host not in tried:
            tried = [*tried, host]
        if row["build_attempts"] >= self.max_build_attempts:
            await self.fail_build(
                uuid,
                f"{reason} (gave up after {row['build_attempts']} attempts: {', '.join(tried)})",
                host=host,
            )
            return
        moved = await self.core.transit(
            row, Report.RESCHEDULED, {"host": None, "tried_hosts": to_json(tried), "addresses": "{}"}
        )
        if moved is None:
            return
        await self._release_attempt(uuid)
        await self.core.record_step(uuid, Action.CREATE, "reschedule", host, "Error", reason)
        log.warning("instance %s: rescheduling away from %s: %s", uuid, host, reason)
        await self.core.publish(moved.row, fault={"message": reason})
        self.core.spawn(
            self._schedule_and_build(uuid, recorded_claim(row), tried, reason), name=f"build-{uuid}"
        )

    async def _release_attempt(self, instance_uuid: str) -> None:
        """Ports, volumes and claim of an attempt (idempotent: the node may have given them back)."""
        releases = (
            ("ports", self.core.net.deallocate_for_instance),
            ("volume attachments", self.core.volumes.detach_all),
            ("claim", self.core.scheduler.release),
        )
        for what, release in releases:
            try:
                await release(instance_uuid=instance_uuid)
            except AiostackError as exc:
                log.error(
                    "instance %s: releasing its %s failed (%s); the owner's orphan sweep will retry",
                    instance_uuid,
                    what,
                    exc,
                )

    # -- the node's side ------------------------------------------------------------------

    async def get_build_request(self, *, instance_uuid: str, host: str) -> BuildRequest:
        """Steps 14-19: what the node of ``host`` needs to build the instance; asking acknowledges
        the build.

        :raises NotFound: no such instance on ``host`` (deleted, rescheduled, another host's).
        :raises Conflict: the instance is not being built any more.
        """
        row = await self.core.placed(instance_uuid, host, arriving=True)
        task = task_state_of(row)
        live_step = row["migration_step"] if task is TaskState.MIGRATING else None
        if row["host"] != host:  # a live migration's destination, preparing: no task of its own
            return await self._request(row)
        migrating = (
            row["migrate_from"] is not None and task in MIGRATION_TASKS
        ) or live_step in LIVE_NODE_STEPS
        rebuilding = (
            task in (TaskState.REBUILDING, TaskState.REBUILD_SPAWNING) or migrating or unshelving(row)
        )
        if states_of(row) != BUILDING_ON_HOST and not rebuilding:
            raise Conflict(f"Instance {instance_uuid} is not being built on {host}")
        if not row["task_acked"]:
            await self.core.store.execute(
                "UPDATE instances SET task_acked = 1, progress_at = ? WHERE uuid = ? AND host = ?",
                (time.time(), instance_uuid, host),
            )
            action = action_of(row, task) if task is not None and rebuilding else Action.CREATE
            await self.core.record_step(instance_uuid, action, "node_accepted", host, "Success")
        request = await self._request(row)
        if migrating:
            request["power_on"] = bool(row["resize_power_on"]) or live_step is not None
            request["rebind"] = True  # a domain already there (copied, or left) takes its ports and volumes
        return request

    async def _request(self, row: InstanceRow) -> BuildRequest:
        """The instance, its networks, volumes and what its config drive holds."""
        return {
            "instance": {**view(row), "image_ref": booted_image(row)},
            "requested_networks": from_json(row["requested_networks"], "auto"),
            "block_devices": from_json(row["block_devices"], []),
            "user_data": row["user_data"],
            "admin_pass": row["admin_pass"],
            "public_keys": await self._public_keys(row),
            "security_groups": from_json(row["security_groups"]),
        }

    async def get_instance_metadata(self, *, instance_uuid: str, host: str) -> InstanceMetadata:
        """What the metadata service of ``host``'s node tells the instance of itself: its config
        drive's contents but the administrator password. Acknowledges no task.

        :raises NotFound: no such live instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        return {
            "instance": view(row),
            "user_data": row["user_data"],
            "public_keys": await self._public_keys(row),
        }

    async def _public_keys(self, row: InstanceRow) -> dict[str, str]:
        """The instance's key pair's public key by its name (none without one, or once deleted)."""
        if row["key_name"] is None:
            return {}
        key = await public_key(self.core.store, row["user_id"], row["key_name"])
        return {} if key is None else {row["key_name"]: key}

    async def instance_spawning(
        self, *, instance_uuid: str, addresses: dict[str, list[dict[str, Any]]], host: str
    ) -> None:
        """The node of ``host`` has the image, ports and disks and is about to create the domain.

        :raises NotFound: no such instance on ``host``.
        """
        changed = await self.core.store.execute(
            "UPDATE instances SET addresses = ?, updated_at = ?, progress_at = ?"
            " WHERE uuid = ? AND deleted = 0 AND host = ?",
            (to_json(addresses), utcnow(), time.time(), instance_uuid, host),
        )
        if not changed:
            raise NotFound(f"Instance {instance_uuid} could not be found on host {host}.")

    async def build_failed(self, *, instance_uuid: str, message: str, host: str) -> None:
        """The node of ``host`` could not build (and gave back what it took): another host is
        tried, up to ``max_build_attempts`` in all; then ERROR with the fault, the claim released.

        :raises NotFound: no such instance on ``host``.
        """
        row = await self.core.placed(instance_uuid, host)
        task = task_state_of(row)
        if task is TaskState.REBUILD_SPAWNING and self.evacuate_failed is not None:
            await self.evacuate_failed(row, f"evacuate to {host} failed: {message}")
            return
        moving = task in MIGRATION_TASKS or (
            task is TaskState.MIGRATING and row["migration_step"] in ("copy", "switch")
        )
        if moving and row["migrate_from"] is not None and self.migration_failed is not None:
            await self.migration_failed(row, task, f"migration to {host} failed: {message}")
            return
        if unshelving(row) and self.unshelve_failed is not None:
            await self.unshelve_failed(row, f"unshelve on {host} failed: {message}")
            return
        if states_of(row) != BUILDING_ON_HOST:
            return
        await self.reschedule(row, f"build on {host} failed: {message}")
