"""Volumes attached and detached after boot: live (``AFFECT_LIVE | CONFIG``) as virtio disks.

The conductor reserves the volume and calls the node with its connection (the file's path and
format, or the NBD export of the attachment on the volume host: a network disk); the node
changes the domain and keeps the new persistent XML in its store. Drivers without device
hot-plug (libvirt's test driver) get the volume in the persistent definition. Volumes asked for
at boot are disks of the domain from the start (``node/build.py``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from api.node import AttachedVolume
from api.volume import Connection, Reattached
from bus import Conflict, NotFound
from node.devices import change_device
from node.domain import Disk, disk_source, disk_targets, disk_xml, next_disk_target
from node.hypervisor import Hypervisor
from node.records import Records


class Volumes:
    """Attach and detach of this node's domains' volumes (see the module's docstring)."""

    def __init__(self, *, hypervisor: Hypervisor, records: Records) -> None:
        self.hypervisor = hypervisor
        self.records = records

    async def attach_volume(
        self, instance_uuid: str, volume_id: str, connection: Connection, device: str | None = None
    ) -> AttachedVolume:
        """Attach live where the driver can, and always to the persistent definition.

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the device is in use.
        """
        domain = await self._existing(instance_uuid)
        used = set(disk_targets(await self.hypervisor.persistent_xml(domain)))
        target = (device or "").removeprefix("/dev/") or next_disk_target(used)
        if target in used:
            raise Conflict(f"device /dev/{target} is already in use on instance {instance_uuid}")
        disk = volume_disk(connection, target, volume_id)
        await self._change_device(domain, disk_xml(disk), attach=True)
        await self._remember_xml(instance_uuid, domain)
        return {"device": f"/dev/{target}"}

    async def detach_volume(self, instance_uuid: str, volume_id: str, connection: Connection) -> None:
        """:raises NotFound: the instance has no domain here, or the volume is not attached to it."""
        domain = await self._existing(instance_uuid)
        targets = disk_targets(await self.hypervisor.persistent_xml(domain))
        source = volume_disk(connection, "", volume_id).path
        target = next((dev for dev, path in targets.items() if path == source), None)
        if target is None:
            raise NotFound(f"volume {volume_id} is not attached to instance {instance_uuid}")
        disk = volume_disk(connection, target, volume_id)
        await self._change_device(domain, disk_xml(disk), attach=False)
        await self._remember_xml(instance_uuid, domain)

    async def _existing(self, instance_uuid: str) -> libvirt.virDomain:
        domain = await self.hypervisor.existing(instance_uuid)
        self.records.note_request(instance_uuid)
        return domain

    async def _change_device(self, domain: libvirt.virDomain, device_xml: str, *, attach: bool) -> None:
        await change_device(
            self.hypervisor,
            domain,
            device_xml,
            attach=attach,
            same=lambda disk, device: disk_source(disk) == disk_source(device),
        )

    async def _remember_xml(self, instance_uuid: str, domain: libvirt.virDomain) -> None:
        await self.records.set_xml(instance_uuid, await self.hypervisor.persistent_xml(domain))


def volume_disk(connection: Connection, target: str, volume_id: str) -> Disk:
    """The disk of a volume's connection: its file, or its NBD export on the volume host."""
    readonly = connection.get("readonly", False)
    if connection["transport"] == "nbd":
        return Disk(
            connection["export"],
            target,
            serial=volume_id,
            nbd_host=connection["host"],
            nbd_port=connection["port"],
            readonly=readonly,
        )
    return Disk(connection["path"], target, format=connection["format"], serial=volume_id, readonly=readonly)


def with_connections(xml: str, attached: list[Reattached]) -> str:
    """A domain definition whose volume disks (matched by device) are reached through these
    connections: each disk's type, driver and source replaced, the rest (bus, serial) kept."""
    domain = ET.fromstring(xml)
    by_target = {volume["device"].removeprefix("/dev/"): volume for volume in attached}
    for disk in domain.iter("disk"):
        target = disk.find("target")
        volume = by_target.get(target.get("dev", "") if target is not None else "")
        if volume is None:
            continue
        dev = volume["device"].removeprefix("/dev/")
        fresh = ET.fromstring(disk_xml(volume_disk(volume["connection"], dev, volume["volume"]["id"])))
        disk.set("type", fresh.get("type", "file"))
        for tag in ("driver", "source"):
            for old in disk.findall(tag):
                disk.remove(old)
            for index, new in enumerate(fresh.findall(tag)):
                disk.insert(index, new)
    return ET.tostring(domain, encoding="unicode")
