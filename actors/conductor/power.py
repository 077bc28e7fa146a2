"""What a user does to an instance: stop, start, reboot, pause, unpause, suspend, resume, rebuild, delete.

Each action is allowed or refused by ``states.transition``, recorded (``instance_actions``),
published as ``instance.<task_state>``, and handed to the instance's node as a task (a cast
recorded on the row first, so a lost one is sent again). libvirt's word finishes it
(``lifecycle.py``). A delete of an instance with no host is finished here.
"""

from __future__ import annotations

from typing import Any

from actors.conductor.build import Builder
from actors.conductor.core import Core
from actors.conductor.details import given_details
from actors.conductor.flavors import is_container_flavor
from actors.conductor.quotas import check_count
from actors.conductor.schema import InstanceRow, task_state_of, view
from actors.conductor.states import Action, Report
from api.conductor import Instance, ServerActions
from api.image import Image, ImageReader, Images
from api.node import PowerAction, RebootType
from bus import AiostackError, Conflict, NotFound
from runtime.store import from_json, to_json

BOOT_PROPERTIES = frozenset(
    ("kernel_id", "ramdisk_id", "os_command_line", "hw_disk_bus", "hw_machine_type", "os_type", "os_distro")
)
"""The properties of an instance's image that its snapshot keeps: what it boots with."""


async def new_snapshot_image(
    reader: ImageReader,
    images: Images,
    row: InstanceRow,
    name: str,
    metadata: dict[str, str] | None = None,
    image_id: str | None = None,
) -> Image:
    """A queued image of the caller's project for a snapshot of the instance's disk (its node may
    upload only into it), with the boot properties of the instance's image and ``metadata``.

    :raises Conflict: ``image_id`` is an image that exists (or existed).
    """
    try:
        base = await reader.get(image_id=row["image_ref"])
    except NotFound:
        base = None
    properties = {
        key: value for key, value in (base["properties"] if base else {}).items() if key in BOOT_PROPERTIES
    }
    properties |= {"image_type": "snapshot", "base_image_ref": row["image_ref"]}
    properties["user_id"] = row["user_id"]
    properties |= dict(metadata or {})  # the user's words win, as in Nova
    properties["instance_uuid"] = row["uuid"]  # but this one: the node may upload only into it
    return await images.create(
        name=name,
        disk_format=base["disk_format"] if base and base["disk_format"] else "qcow2",
        container_format="bare",
        min_disk=from_json(row["flavor"], {}).get("disk", 0),
        min_ram=base["min_ram"] if base else 0,
        properties=properties,
        id=image_id,
    )


class PowerActions(ServerActions):
    """Serves ``api.conductor.ServerActions``."""

    def __init__(self, core: Core, builder: Builder) -> None:
        self.core = core
        self.builder = builder
        self.images = Images.client(core.bus)

    async def stop_instance(self, *, instance_uuid: str) -> Instance:
        """os-stop: SHUTOFF once libvirt reports the domain stopped."""
        return await self._run(instance_uuid, Action.STOP)

    async def start_instance(self, *, instance_uuid: str) -> Instance:
        """os-start: ACTIVE once libvirt reports the domain started."""
        return await self._run(instance_uuid, Action.START)

    async def reboot_instance(self, *, instance_uuid: str, reboot_type: RebootType = "SOFT") -> Instance:
        """SOFT: finished by the node's ``task_done``; HARD: destroy + create (STOPPED, STARTED)."""
        return await self._run(instance_uuid, Action.REBOOT_HARD if reboot_type == "HARD" else Action.REBOOT)

    async def change_power(self, *, instance_uuid: str, action: PowerAction) -> Instance:
        """pause, unpause, suspend (the guest saved to disk) or resume."""
        return await self._run(instance_uuid, Action(action))

    async def rebuild_instance(
        self,
        *,
        instance_uuid: str,
        image_ref: str,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        admin_pass: str | None = None,
        access_ip_v4: str | None = None,
        access_ip_v6: str | None = None,
        description: str | None = None,
        forget_description: bool = False,
    ) -> Instance:
        """REBUILD: the node makes the disk again from ``image_ref``; what else is given changes with it."""
        row = await self.core.row(instance_uuid)
        if from_json(row["block_devices"], []):
            raise Conflict(f"Instance {instance_uuid} has volumes attached at boot: it cannot be rebuilt")
        containers = is_container_flavor(from_json(row["flavor"]))
        await self.builder.check_image(image_ref, containers=containers)
        columns: dict[str, Any] = {"image_ref": image_ref, "admin_pass": admin_pass}
        columns |= given_details(name, access_ip_v4, access_ip_v6, description, forget_description)
        if metadata is not None:
            await check_count(self.core.store, row["project_id"], "metadata_items", len(metadata))
            columns["metadata"] = to_json(metadata)
        row, _ = await self.core.begin(instance_uuid, Action.REBUILD, columns)
        if task_state_of(row) is not None:
            await self.core.send_task(row)
        return view(row)

    async def create_image(
        self, *, instance_uuid: str, name: str, metadata: dict[str, str] | None = None
    ) -> str:
        """A queued snapshot image of the caller's project; the node uploads the disk into it."""
        row = await self.core.row(instance_uuid)
        self.core.check_lock(row)
        self.core.require(row, Action.CREATE_IMAGE)
        if not row["image_ref"]:
            raise Conflict(
                f"Instance {instance_uuid} boots from a volume: snapshot the volume instead"
                " (a volume-backed server's image is not built)"
            )
        image = await new_snapshot_image(self.core.images, self.images, row, name, metadata)
        try:
            moved, _ = await self.core.begin(
                instance_uuid, Action.CREATE_IMAGE, {"snapshot_image": image["id"]}
            )
        except AiostackError:
            await self.images.delete(image_id=image["id"])
            raise
        if task_state_of(moved) is not None:
            await self.core.send_task(moved)
        return str(moved["snapshot_image"])

    async def _run(self, instance_uuid: str, action: Action) -> Instance:
        """Start ``action`` and hand its task to the node.

        :raises Conflict: the instance's states do not allow it.
        """
        row, _ = await self.core.begin(instance_uuid, action)
        if task_state_of(row) is not None:  # the same request asked again after its task ended: none
            await self.core.send_task(row)
        return view(row)

    async def delete_instance(self, *, instance_uuid: str) -> None:
        """DELETED once the node has destroyed and undefined the domain and released its resources.

        Asked again while it runs, the (idempotent) work is done again: something may have been lost.
        """
        row, _ = await self.core.begin(instance_uuid, Action.DELETE)
        if row["host"] is not None:
            if task_state_of(row) is not None:
                await self.core.send_task(row)
            return
        await self.core.release_everywhere(instance_uuid)
        await self.core.finish_delete(
            row, Report.DELETED_HERE, {"domain_event": None, "detail": None, "host": None}
        )
