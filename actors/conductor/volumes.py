"""Volumes attached to a running or stopped instance: the conductor drives the attach protocol
(``api.volume``), the instance's node does the libvirt part. A shelved-offloaded instance has no
node: its volume is attached with no host (``attach_offloaded``), or detached, by the conductor
alone; its node attaches it when it is unshelved.

attach: ``reserve`` (available -> attaching), the node attaches, ``attach_complete`` (in-use);
if the node fails, ``unreserve``. detach: ``begin_detach`` (in-use -> detaching), the node
detaches, ``detach_complete`` (available); if the node fails, ``roll_detaching``. Each is an
instance action, an attach with its steps (``reserve``, ``attached``, ``unreserve``).
"""

from __future__ import annotations

import logging
from typing import Final

from actors.conductor.core import Core
from actors.conductor.schema import InstanceRow
from actors.conductor.states import Action
from api.conductor import ServerVolumes, VolumeAttachment, boot_volume
from api.volume import AttachStatus, Connection
from bus import AiostackError, CallTimeout, Conflict, InvalidRequest, NotFound
from runtime.states import VmState
from runtime.store import from_json

log = logging.getLogger(__name__)

ATTACHED: Final[AttachStatus] = "attached"


class Attachments(ServerVolumes):
    """Serves ``api.conductor.ServerVolumes``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def attach_volume(
        self, *, instance_uuid: str, volume_id: str, device: str | None = None
    ) -> VolumeAttachment:
        """Reserve the volume, have the node attach it live, then mark it in-use.

        :raises Conflict: the instance has no host or is busy, or the volume is not available.
        """
        row = await self.core.row(instance_uuid)
        self.core.check_lock(row)
        host = row["host"]
        offloaded = row["vm_state"] == VmState.SHELVED_OFFLOADED
        if (host is None and not offloaded) or self.core.decide(row, Action.ATTACH_VOLUME) is None:
            raise Conflict(
                f"Cannot attach a volume to instance {instance_uuid} in vm_state {row['vm_state']}"
            )
        reserved = await self.core.volumes.reserve(volume_id=volume_id, instance_uuid=instance_uuid)
        connection = reserved["connection"]
        await self.core.start_action(instance_uuid, Action.ATTACH_VOLUME)
        await self.core.record_step(
            instance_uuid, Action.ATTACH_VOLUME, "reserve", None, "Success", volume_id
        )
        if host is None:  # offloaded: its node attaches it when it is unshelved
            await self.core.volumes.attach_offloaded(volume_id=volume_id, instance_uuid=instance_uuid)
            await self.core.record_step(instance_uuid, Action.ATTACH_VOLUME, "attached", None, "Success")
            await self.core.finish_action(instance_uuid, Action.ATTACH_VOLUME, "Success")
            return {"id": volume_id, "volumeId": volume_id, "serverId": instance_uuid, "device": None}
        try:
            attached = await self.core.node(host).attach_volume(
                instance_uuid=instance_uuid, volume_id=volume_id, connection=connection, device=device
            )
        except BaseException as exc:
            await self._undo_attach(row, host, volume_id, connection, exc)
            raise
        await self.core.volumes.attach_complete(
            volume_id=volume_id, instance_uuid=instance_uuid, host=host, device=attached["device"]
        )
        await self.core.record_step(
            instance_uuid, Action.ATTACH_VOLUME, "attached", host, "Success", attached["device"]
        )
        await self.core.finish_action(instance_uuid, Action.ATTACH_VOLUME, "Success")
        return {
            "id": volume_id,
            "volumeId": volume_id,
            "serverId": instance_uuid,
            "device": attached["device"],
        }

    async def _undo_attach(
        self, row: InstanceRow, host: str, volume_id: str, connection: Connection, error: BaseException
    ) -> None:
        """The node did not say it attached the volume. If its answer was lost (a timeout), the
        disk may be in the domain after all: have it taken out before the volume is free again."""
        uuid = row["uuid"]
        if isinstance(error, CallTimeout):
            try:
                await self.core.node(host).detach_volume(
                    instance_uuid=uuid, volume_id=volume_id, connection=connection
                )
            except NotFound:
                pass  # it never got there
            except AiostackError as exc:
                await self.core.record_step(uuid, Action.ATTACH_VOLUME, "undo", host, "Error", str(exc))
                await self.core.finish_action(
                    uuid, Action.ATTACH_VOLUME, "Error", f"attach state unknown: {exc}"
                )
                log.error(
                    "instance %s: volume %s may be in the domain; it stays reserved: %s", uuid, volume_id, exc
                )
                return
        await self.core.volumes.unreserve(volume_id=volume_id)
        failure = f"{type(error).__name__}: {error}"
        await self.core.record_step(uuid, Action.ATTACH_VOLUME, "unreserve", None, "Success", failure)
        await self.core.finish_action(uuid, Action.ATTACH_VOLUME, "Error", failure)

    async def detach_volume(self, *, instance_uuid: str, volume_id: str) -> None:
        """:raises NotFound: the volume is not attached to this instance.
        :raises InvalidRequest: it is the disk the instance boots from (Nova's "Can't detach root
            device volume").
        """
        row = await self.core.row(instance_uuid)
        self.core.check_lock(row)
        self.core.require(row, Action.DETACH_VOLUME)
        boot = boot_volume(from_json(row["block_devices"], []))
        if boot is not None and boot["volume_id"] == volume_id:
            raise InvalidRequest(f"Volume {volume_id} is the root disk of instance {instance_uuid}.")
        detaching = await self.core.volumes.begin_detach(volume_id=volume_id, instance_uuid=instance_uuid)
        try:
            if row["host"] is None and row["vm_state"] != VmState.SHELVED_OFFLOADED:
                raise Conflict(f"Instance {instance_uuid} has no host to detach volume {volume_id} from")
            if row["host"] is not None:  # an offloaded instance's volume is in no domain
                await self.core.node(row["host"]).detach_volume(
                    instance_uuid=instance_uuid, volume_id=volume_id, connection=detaching["connection"]
                )
        except BaseException:
            await self.core.volumes.roll_detaching(volume_id=volume_id)
            raise
        await self.core.volumes.detach_complete(volume_id=volume_id, instance_uuid=instance_uuid)
        await self.core.start_action(instance_uuid, Action.DETACH_VOLUME, finished=True)

    async def list_volume_attachments(self, *, instance_uuid: str) -> list[VolumeAttachment]:
        await self.core.row(instance_uuid)
        return [
            {
                "id": attachment["volume_id"],
                "volumeId": attachment["volume_id"],
                "serverId": instance_uuid,
                "device": attachment["device"],
            }
            for attachment in await self.core.volumes.list_attachments()
            if attachment["server_id"] == instance_uuid and attachment["attach_status"] == ATTACHED
        ]
