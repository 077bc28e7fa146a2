"""The LXC node: a compute host whose instances are system containers (liblxc), not domains.

It serves the same ``api.node.Node`` as the libvirt node, on the same address, and reports its
capacity with ``hypervisor_type`` ``lxc``, so the scheduler sends it only the flavors that ask
for containers (their extra spec ``capabilities:hypervisor_type`` is ``lxc``, as Nova's
ComputeCapabilitiesFilter reads it). A build asks the conductor for the build request, the
image actor for the image (a root filesystem tar: ``node.lxc.rootfs``), the net actor for ports,
then defines and starts the container (``node.lxc.runtime``): liblxc's RUNNING makes the
instance ACTIVE as libvirt's STARTED does. Each state change from liblxc's monitor is
forwarded as the libvirt lifecycle event it stands for (``EventForwarder``): RUNNING as
STARTED (booted), STOPPED as STOPPED (shut down, or destroyed when the node killed it), and a
delete ends with UNDEFINED, which the node sends once the container is gone.

Stop asks the container's init to power off (killed after the shutdown timeout), start starts
it, a SOFT reboot asks init to reboot (liblxc starts it again; its states meanwhile are not
forwarded, and the node reports ``task_done`` once it runs), a HARD one kills and starts it
(STOPPED, then STARTED). The console log is what init wrote to ``/dev/console``.

Each port is a veth pair: the container's ``eth<N>`` with the port's MAC, and its host end, named
as a QEMU guest's tap is (``domain.tap_name``), on the network's bridge on this host, which
``node.overlay`` makes without VXLAN (a bridge, and dnsmasq in a namespace of its own serving each
port's MAC its fixed IP). The node stores each container's definition as libvirt's LXC driver
would have it (``<domain type='lxc'>`` with its bridged interfaces): what ``SecurityGroups`` reads
to filter the host ends with the same nftables tables as QEMU guests' taps, and what
``OverlayNetworks.release`` reads to drop the DHCP entries. The busybox image's init asks DHCP
for its address on ``eth0``.

A volume attached is a block device of the container, ``/dev/vdb`` and on, as a QEMU guest's
disk: ``node.lxc.volumes`` makes it a loop device of this host (on a FUSE export of the volume by a
qemu-storage-daemon of the node's), which the container gets at once when it runs (its node made
in its ``/dev``, its devices cgroup allowing it) and at each start (liblxc's configuration,
before its init runs). The stored definition holds the volume as a QEMU guest's disk (its
connection), from which a start, or the node's own start, makes the device again where it is
gone. A detach refuses a device the container has a filesystem of mounted (``Conflict``); a
delete removes the devices before the volumes are freed. Every container's devices cgroup
denies every device but the standard character devices and its volumes'. At its start the node
removes the devices of volumes no container here has (what a crash mid-attach left).

What a container cannot do, or this node does not do yet, is refused: a call with ``Conflict``
(NICs hot-plugged, a live migration's destination, a crash dump), a cast by reporting
the container's power state to the conductor at once (``sync_power_state``), which ends the
instance's task with nothing changed, and logging why. The conductor refuses live and cold
migrations of an ``lxc`` host's instances before they reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import libvirt

from api.conductor import BuildRequest, addresses_of
from api.net import Port
from api.node import (
    AttachedVolume,
    ConsoleOutput,
    DomainFlavor,
    DomainView,
    LiveMigrationTarget,
    Node,
    PowerAction,
    PowerState,
    RebootType,
)
from api.scheduler import CONTAINER_HYPERVISOR_TYPE, HEARTBEAT, Capacity
from api.volume import Connection, Reattached, VolumeFormat
from bus import TRANSIENT_ERRORS, Actor, AiostackError, Bus, Conflict, InvalidRequest, NotFound
from node.build import Cleanup
from node.domain import disk_element, disk_source, next_disk_target, tap_name
from node.events import EventForwarder
from node.images import ImageCache
from node.lxc.rootfs import check_formats, unpack
from node.lxc.runtime import BlockDevice, ContainerError, Containers, ContainerSpec, StateChange, Veth
from node.lxc.volumes import DeviceBusy, HostVolumes, VolumeDeviceError
from node.overlay import OverlayNetworks
from node.peers import Peers
from node.records import Records
from node.security import SecurityGroups
from node.volumes import volume_disk
from runtime.auth import keep_service_token
from runtime.config import Config

log = logging.getLogger(__name__)

HYPERVISOR_TYPE = CONTAINER_HYPERVISOR_TYPE
DOMAIN_RUNNING, DOMAIN_SHUTOFF = 1, 5
"""libvirt's ``VIR_DOMAIN_RUNNING`` and ``VIR_DOMAIN_SHUTOFF``, which ``DomainView.state`` speaks."""
VOLUME_DEVICE = re.compile(r"(vd|sd|xvd|hd)[a-z]{1,2}")
"""The names a volume's device may have in a container (none of its other devices')."""
ROOT_DEVICE = "vda"
"""Kept for the root, as a QEMU guest's: a container's first volume is ``/dev/vdb``."""


def _memory_mb() -> int:
    """The host's memory (``MemTotal``), MiB."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


class LxcNodeActor(Actor, Node):
    name = "node"
    max_inflight = 64

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        host: str,
        report_interval: float = 10.0,
        shutdown_timeout: float = 60.0,
        reserved_host_memory_mb: int = 512,
    ) -> None:
        if not host or any(c in host for c in " .*>"):
            raise ValueError(f"invalid host name {host!r}")
        super().__init__(bus, address=Node.address_for(host=host))
        self.host = host
        self.report_interval = report_interval
        self.shutdown_timeout = shutdown_timeout
        self.reserved_host_memory_mb = reserved_host_memory_mb
        self.state_dir = config.data_dir / "nodes" / host
        self.records = Records(self.state_dir / "node.sqlite")
        self.peers = Peers.on(bus, host)
        self.events = EventForwarder(bus, host, self.records, self.peers.conductor)
        self.images = ImageCache(self.peers.image, self.state_dir)
        self.containers = Containers(self.state_dir / "lxc", self._state_changed)
        self.volumes = HostVolumes(self.state_dir / "lxc-volumes")
        self.rootfs_dir = self.state_dir / "images" / "_rootfs"
        self.networks = OverlayNetworks(self.peers.net, self.state_dir, None)
        self.security = SecurityGroups(
            bus, host, net=self.peers.patient_net, records=self.records, spawn=self._spawn
        )
        self._killing: set[str] = set()
        """Containers the node is killing: their STOPPED is a destroy."""
        self._rebooting: dict[str, asyncio.Event] = {}
        """Containers in a SOFT reboot: their states are not forwarded; set once they run again."""
        self._unpacking: dict[str, asyncio.Lock] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._spawn(keep_service_token(self.bus, self.peers.service_tokens.issue_service_token), "token")
        await self.records.open()
        await self.containers.open()
        await self.networks.restore()
        self._spawn(self._restore_volumes(), "volumes")
        await self.security.start()
        self._spawn(self.events.forward_forever(), "events")
        self._spawn(self._report_forever(), "report")
        self._spawn(self._sync_power_states(), "sync")
        log.info("node %s: containers (liblxc) under %s", self.host, self.containers.lxcpath)

    async def on_stop(self) -> None:
        await self.security.stop()
        self.containers.close()
        await self.records.close()

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self.spawn(work, name=f"{self.address}-{name}")

    async def _sync_power_states(self) -> None:
        """At start: each container's power state to the conductor (it may have changed while the
        node was away, and liblxc's monitor keeps no history)."""
        for uuid in sorted(self.records.projects):
            if not self.containers.defined(uuid):
                continue
            try:
                await self.peers.patient_conductor.sync_power_state(
                    instance_uuid=uuid, running=await self.containers.running(uuid)
                )
            except AiostackError as exc:
                log.info("node %s: power state of %s not synced: %s", self.host, uuid, exc)

    # -- liblxc's monitor -> lifecycle events ----------------------------------------------

    def _state_changed(self, change: StateChange) -> None:
        """A container's state change, as the libvirt event it stands for (on the loop)."""
        uuid = change.name
        rebooting = self._rebooting.get(uuid)
        if rebooting is not None:
            if change.state == "RUNNING":
                rebooting.set()
            return
        if change.state == "RUNNING":
            if any(held == uuid for held, _ in self.volumes.connected()):
                self._spawn(self._give_devices(uuid), f"devices-{uuid}")
            self.events.queue(uuid, libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED)
        elif change.state == "STOPPED":
            detail = (
                libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED
                if uuid in self._killing
                else libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
            )
            self.events.queue(uuid, libvirt.VIR_DOMAIN_EVENT_STOPPED, detail)

    async def _kill(self, uuid: str) -> None:
        """Stop the container at once (its STOPPED is a destroy)."""
        self._killing.add(uuid)
        try:
            await self.containers.kill(uuid)
        finally:
            self._killing.discard(uuid)

    # -- heartbeat ------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self.report_capacity()
                failures = 0
            except AiostackError as exc:
                failures += 1
                log.warning("node %s: capacity report failed: %s", self.host, exc)
            try:
                if self.records.working:
                    await self.peers.conductor.task_progress(instance_uuids=sorted(self.records.working))
            except AiostackError as exc:
                log.warning("node %s: progress report failed: %s", self.host, exc)
            await asyncio.sleep(
                min(self.report_interval, 0.5 * 2 ** (failures - 1)) if failures else self.report_interval
            )

    async def report_capacity(self) -> None:
        """The heartbeat, as ``hypervisor_type`` ``lxc``: the host's CPUs, memory and disk."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        capacity: Capacity = {
            "vcpus": os.cpu_count() or 1,
            "memory_mb": max(0, _memory_mb() - self.reserved_host_memory_mb),
            "disk_gb": shutil.disk_usage(self.state_dir).total // 1024**3,
            "hypervisor_type": HYPERVISOR_TYPE,
        }
        await HEARTBEAT.request(self.bus, capacity, host=self.host, timeout=10)

    # -- build and delete ------------------------------------------------------------------

    async def build_and_run_instance(self, *, instance_uuid: str) -> None:
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            try:
                request = await self.peers.patient_conductor.get_build_request(instance_uuid=instance_uuid)
            except (Conflict, NotFound) as exc:
                log.info("node %s: not building %s: %s", self.host, instance_uuid, exc)
                return
            except TRANSIENT_ERRORS as exc:  # unacknowledged: the conductor sends it again
                log.info("node %s: conductor away, build of %s waits: %s", self.host, instance_uuid, exc)
                return
            self.records.note_request(instance_uuid)
            if self.containers.defined(instance_uuid):  # delivered again: never a second container
                if await self.containers.running(instance_uuid):
                    await self.peers.patient_conductor.sync_power_state(
                        instance_uuid=instance_uuid, running=True
                    )
                else:
                    await self._start(instance_uuid)
                return
            try:
                await self._build(instance_uuid, request)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.warning("node %s: build of %s failed: %s", self.host, instance_uuid, message)
                undo = Cleanup(f"node {self.host}: undo of the failed build of {instance_uuid}")
                await undo.step("removing the container", self._destroy(instance_uuid))
                await undo.step("releasing ports and volumes", self._release_elsewhere(instance_uuid))
                await self._release_here(instance_uuid, undo)
                await self.security.refresh_logged(f"the failed build of {instance_uuid}")
                try:
                    await self.peers.patient_conductor.build_failed(
                        instance_uuid=instance_uuid, message=message
                    )
                except AiostackError as report_exc:
                    log.error(
                        "node %s: build failure of %s not reported: %s", self.host, instance_uuid, report_exc
                    )

    async def _build(self, instance_uuid: str, request: BuildRequest) -> None:
        instance = request["instance"]
        if request["block_devices"]:
            raise Conflict(
                f"instance {instance_uuid} asks for volumes: {self.host} runs containers, without volumes"
            )
        image = await self.peers.patient_image.get(
            image_id=instance["image_ref"], instance_uuid=instance_uuid
        )
        check_formats(image.get("container_format"), image.get("disk_format"), image["id"])
        ports = await self.peers.patient_net.allocate_for_instance(
            instance_uuid=instance_uuid,
            requested_networks=request["requested_networks"],
            security_groups=request.get("security_groups"),
        )
        await self.peers.patient_conductor.instance_spawning(
            instance_uuid=instance_uuid, addresses=await self._addresses(ports, instance_uuid)
        )
        rootfs = await self._rootfs(image["id"], await self.images.base(image, instance_uuid))
        nics = [nic for port in ports if (nic := await self._plug(port, instance_uuid)) is not None]
        spec = ContainerSpec(
            name=instance_uuid,
            hostname=instance["name"] if _hostname_ok(instance["name"]) else f"instance-{instance_uuid[:8]}",
            rootfs=rootfs,
            console_log=self.images.console_log(instance_uuid),
            memory_mb=instance["flavor"]["ram"],
            nics=tuple(nics),
        )
        await self.records.save(instance_uuid, instance["project_id"], definition(instance_uuid, nics))
        await self.containers.define(spec)
        await self.security.refresh()  # its ports' chains, before its first frame
        await self.containers.start(instance_uuid)

    async def _plug(self, port: Port, instance_uuid: str) -> Veth | None:
        """The port on its network's bridge here, with its DHCP entry; its veth (None: the
        network has no IPv4 subnet to serve, and the port is bound as ``binding_failed``)."""
        subnet = None
        if port["fixed_ips"]:
            subnet = await self.peers.net.get_subnet(
                subnet_id=port["fixed_ips"][0]["subnet_id"], instance_uuid=instance_uuid
            )
        network = await self.peers.net.get_network(network_id=port["network_id"], instance_uuid=instance_uuid)
        attachment = await self.networks.attach(None, network, subnet, port, instance_uuid)
        if attachment.bridge is None:
            reason = attachment.fallback_reason or "no bridge"
            await self.peers.net.set_port_binding(
                port_id=port["id"], vif_type="binding_failed", vif_details={"reason": reason}
            )
            return None
        details = {**attachment.details, "port_filter": self.security.enforcing}
        await self.peers.net.set_port_binding(port_id=port["id"], vif_type="bridge", vif_details=details)
        return Veth(attachment.bridge, port["mac_address"], tap_name(port["id"]), attachment.mtu)

    async def _rootfs(self, image_id: str, archive: Path) -> Path:
        """The image's root filesystem, unpacked once on this node (containers overlay it)."""
        target = self.rootfs_dir / image_id
        async with self._unpacking.setdefault(image_id, asyncio.Lock()):
            if not target.exists():
                await asyncio.to_thread(unpack, archive, target)
        return target

    async def _addresses(self, ports: list[Port], instance_uuid: str) -> dict[str, list[dict[str, Any]]]:
        names = {
            port["network_id"]: (
                await self.peers.net.get_network(network_id=port["network_id"], instance_uuid=instance_uuid)
            )["name"]
            for port in ports
        }
        return addresses_of(ports, names)

    async def terminate_instance(self, *, instance_uuid: str) -> None:
        """Kill and remove the container, release its ports and files: UNDEFINED finishes the delete
        (``domain_gone`` when there was no container)."""
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            self.records.note_request(instance_uuid)
            existed = self.containers.defined(instance_uuid)
            await self._destroy(instance_uuid)
            try:
                await self._release_elsewhere(instance_uuid)
            except NotFound:
                log.info(
                    "node %s: %s is no longer recorded here: its ports and volumes are not this node's",
                    self.host,
                    instance_uuid,
                )
            await self._release_here(instance_uuid, Cleanup(f"node {self.host}: delete of {instance_uuid}"))
            await self.security.refresh_logged(f"the delete of {instance_uuid}")
            if existed:
                self.events.queue(
                    instance_uuid,
                    libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
                    libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED,
                )
            else:
                try:
                    await self.peers.conductor.domain_gone(instance_uuid=instance_uuid)
                except NotFound:
                    log.info("node %s: the delete of %s is done already", self.host, instance_uuid)
        self.records.forget_lock(instance_uuid)

    async def _destroy(self, uuid: str) -> None:
        self._killing.add(uuid)
        try:
            await self.containers.destroy(uuid)
        finally:
            self._killing.discard(uuid)

    async def _release_elsewhere(self, uuid: str) -> None:
        """Its ports and volumes' attachments; first, its volumes' block devices here (what the
        container wrote is in its volumes before they are freed)."""
        await self._disconnect_volumes(uuid)
        await self.peers.patient_net.deallocate_for_instance(instance_uuid=uuid)
        await self.peers.patient_volume.detach_all(instance_uuid=uuid)

    async def _disconnect_volumes(self, uuid: str) -> None:
        """What the container's volumes have on this host (its block devices), removed."""
        for held, name in self.volumes.connected():
            if held == uuid:
                await self.volumes.disconnect(uuid, name)

    async def _release_here(self, uuid: str, cleanup: Cleanup) -> None:
        """The container's DHCP entries (a network it was the last of leaves this host), volumes'
        block devices and files (its console log), then its record here if nothing failed."""
        xml = await cleanup.step("reading its definition", self.records.stored_xml(uuid))
        await cleanup.step("removing its volumes' block devices", self._disconnect_volumes(uuid))
        if xml is not None:
            await cleanup.step("releasing its DHCP entries", self.networks.release(None, xml))
        await cleanup.step("removing its files", asyncio.to_thread(self.images.remove_instance, uuid))
        if cleanup.ok:
            await cleanup.step("forgetting it", self.records.delete(uuid))

    # -- power -----------------------------------------------------------------------------

    async def _existing(self, uuid: str) -> None:
        """:raises NotFound: no container of this node for the instance."""
        if uuid not in self.records.projects or not self.containers.defined(uuid):
            raise NotFound(f"instance {uuid} has no container on {self.host}")

    async def stop_instance(self, *, instance_uuid: str) -> None:
        async with self.records.working_on(instance_uuid):
            await self._existing(instance_uuid)
            self.records.note_request(instance_uuid)
            await self.records.set_desired(instance_uuid, "shutoff")
            if not await self.containers.running(instance_uuid):
                await self.peers.patient_conductor.sync_power_state(
                    instance_uuid=instance_uuid, running=False
                )
                return
            await self.containers.stop(instance_uuid, self.shutdown_timeout)

    async def start_instance(self, *, instance_uuid: str) -> None:
        async with self.records.working_on(instance_uuid):
            await self._existing(instance_uuid)
            self.records.note_request(instance_uuid)
            await self.records.set_desired(instance_uuid, "running")
            if await self.containers.running(instance_uuid):
                await self._sync(instance_uuid, running=True)
                return
            await self._start(instance_uuid)

    async def reboot_instance(self, *, instance_uuid: str, reboot_type: RebootType = "SOFT") -> None:
        async with self.records.working_on(instance_uuid):
            await self._existing(instance_uuid)
            self.records.note_request(instance_uuid)
            if reboot_type == "HARD":
                await self._kill(instance_uuid)
                await self._start(instance_uuid)
                return
            if not await self.containers.running(instance_uuid):
                await self.peers.patient_conductor.sync_power_state(
                    instance_uuid=instance_uuid, running=False
                )
                return
            running_again = self._rebooting[instance_uuid] = asyncio.Event()
            try:
                if await self._disks(instance_uuid):  # started again as a stop and a start would
                    await self.containers.stop(instance_uuid, self.shutdown_timeout)
                    await self._start(instance_uuid)
                else:
                    await self.containers.reboot(instance_uuid)
                async with asyncio.timeout(self.shutdown_timeout):
                    await running_again.wait()
            except (TimeoutError, ContainerError, VolumeDeviceError) as exc:
                log.warning("node %s: soft reboot of %s failed: %s", self.host, instance_uuid, exc)
            finally:
                del self._rebooting[instance_uuid]
            if await self.containers.running(instance_uuid):
                await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)
            else:
                await self.peers.patient_conductor.sync_power_state(
                    instance_uuid=instance_uuid, running=False
                )

    async def _start(self, uuid: str) -> None:
        """Start the container with its volumes' block devices (made again where they are gone).
        One that cannot be made keeps it from starting, as a QEMU guest whose disk cannot be
        opened does not start: its power state (off) ends the task."""
        try:
            await self._connect_volumes(uuid)
        except VolumeDeviceError as exc:
            log.warning("node %s: %s not started, a volume is not there: %s", self.host, uuid, exc)
            await self._sync(uuid, running=False)
            return
        await self.containers.start(uuid)

    async def _sync(self, uuid: str, *, running: bool) -> None:
        """The container's power state to the conductor, when no event will say it."""
        await self.peers.patient_conductor.sync_power_state(instance_uuid=uuid, running=running)

    async def get_power_state(self, *, instance_uuid: str) -> PowerState:
        exists = instance_uuid in self.records.projects and self.containers.defined(instance_uuid)
        return {"exists": exists, "running": exists and await self.containers.running(instance_uuid)}

    async def get_console_output(self, *, instance_uuid: str, length: int | None = None) -> ConsoleOutput:
        await self._existing(instance_uuid)
        return {"output": await self.images.console_output(instance_uuid, length)}

    async def list_domains(self) -> list[DomainView]:
        listed: list[DomainView] = []
        for uuid in self.containers.names():
            project_id = self.records.projects.get(uuid)
            running = await self.containers.running(uuid)
            xml = await self.records.stored_xml(uuid)
            listed.append(
                {
                    "uuid": uuid,
                    "name": uuid,
                    "state": DOMAIN_RUNNING if running else DOMAIN_SHUTOFF,
                    "project_id": project_id,
                    "macs": macs_of(xml) if xml else [],
                }
            )
        return listed

    # -- volumes ---------------------------------------------------------------------------

    async def attach_volume(
        self, *, instance_uuid: str, volume_id: str, connection: Connection, device: str | None = None
    ) -> AttachedVolume:
        """The volume as a block device of this host, given to the container as ``device``
        (``/dev/vdb``, ``/dev/vdc``... by default): at once if it runs, and from each start.

        :raises NotFound: the instance has no container here.
        :raises InvalidRequest: ``device`` is no disk's name.
        :raises Conflict: the device name is taken, the volume is attached already, or it could
            not be made a block device here (nothing is left of the attempt).
        """
        async with self.records.lock(instance_uuid):
            await self._existing(instance_uuid)
            self.records.note_request(instance_uuid)
            xml = await self._definition(instance_uuid)
            disks = disks_of(xml)
            if volume_disk(connection, "", volume_id).path in map(disk_source, disks.values()):
                raise Conflict(f"volume {volume_id} is attached to instance {instance_uuid} already")
            name = (device or "").removeprefix("/dev/") or next_disk_target({ROOT_DEVICE, *disks})
            if not VOLUME_DEVICE.fullmatch(name):
                raise InvalidRequest(f"/dev/{name} is no disk's name (a container's volumes are /dev/vdb...)")
            if name in disks or name == ROOT_DEVICE:
                raise Conflict(f"device /dev/{name} is already in use on instance {instance_uuid}")
            try:
                block = await self.volumes.connect(instance_uuid, name, connection)
            except VolumeDeviceError as exc:
                raise Conflict(f"volume {volume_id}: {exc}") from None
            disk = disk_element(volume_disk(connection, name, volume_id))
            try:
                if await self.containers.running(instance_uuid):
                    await self.containers.add_device(instance_uuid, block)
                await self._keep_disks(instance_uuid, with_disk(xml, disk))
            except (ContainerError, VolumeDeviceError, OSError) as exc:
                await self._take_device(instance_uuid, block)
                with contextlib.suppress(VolumeDeviceError):
                    await self.volumes.disconnect(instance_uuid, name)
                raise Conflict(f"volume {volume_id} not given to the container: {exc}") from None
        return {"device": f"/dev/{name}"}

    async def detach_volume(self, *, instance_uuid: str, volume_id: str, connection: Connection) -> None:
        """Take the volume's block device from the container and remove it from this host.

        :raises NotFound: the instance has no container here, or the volume is not attached to it.
        :raises Conflict: the device is in use in the container (a filesystem on it is mounted):
            nothing changed.
        """
        async with self.records.lock(instance_uuid):
            await self._existing(instance_uuid)
            self.records.note_request(instance_uuid)
            xml = await self._definition(instance_uuid)
            source = volume_disk(connection, "", volume_id).path
            name = next((name for name, disk in disks_of(xml).items() if disk_source(disk) == source), None)
            if name is None:
                raise NotFound(f"volume {volume_id} is not attached to instance {instance_uuid}")
            busy = Conflict(
                f"device /dev/{name} of instance {instance_uuid} is in use: a filesystem on it is"
                " mounted in the container (unmount it first)"
            )
            if self.volumes.busy(instance_uuid, name):
                raise busy
            block = self.volumes.device(instance_uuid, name)
            await self._take_device(instance_uuid, block)
            try:
                await self.volumes.disconnect(instance_uuid, name)
            except DeviceBusy:  # mounted meanwhile: it keeps its device
                if block is not None and await self.containers.running(instance_uuid):
                    await self.containers.add_device(instance_uuid, block)
                raise busy from None
            except VolumeDeviceError as exc:
                raise Conflict(f"volume {volume_id} not detached: {exc}") from None
            await self._keep_disks(instance_uuid, without_disk(xml, name))

    async def _definition(self, uuid: str) -> str:
        return await self.records.stored_xml(uuid) or definition(uuid, [])

    async def _disks(self, uuid: str) -> dict[str, ET.Element]:
        """The container's volumes' disks, by device name."""
        xml = await self.records.stored_xml(uuid)
        return disks_of(xml) if xml else {}

    def _devices(self, uuid: str, disks: dict[str, ET.Element]) -> list[BlockDevice]:
        """The block devices of those of its volumes that are connected on this host."""
        devices = []
        for name, disk in sorted(disks.items()):
            device = self.volumes.device(uuid, name, readonly=disk.find("readonly") is not None)
            if device is not None:
                devices.append(device)
        return devices

    async def _keep_disks(self, uuid: str, xml: str) -> None:
        """The container's definition with its volumes, here and in liblxc's configuration."""
        self.containers.set_devices(uuid, self._devices(uuid, disks_of(xml)))
        await self.records.set_xml(uuid, xml)

    async def _take_device(self, uuid: str, block: BlockDevice | None) -> None:
        """The block device out of the running container (nothing if it runs not, or is gone)."""
        if block is not None and await self.containers.running(uuid):
            with contextlib.suppress(ContainerError, OSError):
                await self.containers.remove_device(uuid, block)

    async def _connect_volumes(self, uuid: str) -> None:
        """The container's volumes as block devices of this host (made again where they are gone:
        the host restarted), and its configuration giving them.

        :raises VolumeDeviceError: one could not be made.
        """
        disks = await self._disks(uuid)
        for name, disk in disks.items():
            await self.volumes.connect(uuid, name, connection_of(disk))
        if disks:
            self.containers.set_devices(uuid, self._devices(uuid, disks))

    async def _give_devices(self, uuid: str) -> None:
        """The running container's volumes' devices, given again (liblxc restarts a container
        rebooted from inside with the devices cgroup it first started with)."""
        async with self.records.lock(uuid):
            try:
                for device in self._devices(uuid, await self._disks(uuid)):
                    await self.containers.add_device(uuid, device)
            except (ContainerError, OSError) as exc:
                log.info("node %s: devices of %s not given again: %s", self.host, uuid, exc)

    async def _restore_volumes(self) -> None:
        """At start (this node may have crashed mid-attach): remove the block devices of volumes no
        container here has, and make those of the containers' volumes again where they are gone."""
        for uuid, name in self.volumes.connected():
            if not self.containers.defined(uuid) or name not in await self._disks(uuid):
                log.info("node %s: removing the orphan volume device %s of %s", self.host, name, uuid)
                try:
                    await self.volumes.disconnect(uuid, name)
                except VolumeDeviceError as exc:
                    log.warning("node %s: orphan device %s of %s stays: %s", self.host, name, uuid, exc)
        for uuid in sorted(self.records.projects):
            disks = await self._disks(uuid) if self.containers.defined(uuid) else {}
            if not disks:
                continue
            before = self._devices(uuid, disks)
            try:
                await self._connect_volumes(uuid)
                if await self.containers.running(uuid):
                    for device in set(before) - set(self._devices(uuid, disks)):  # made anew
                        await self.containers.remove_device(uuid, device)
                    await self._give_devices(uuid)
            except (VolumeDeviceError, ContainerError, OSError) as exc:
                log.warning("node %s: volumes of %s not connected: %s", self.host, uuid, exc)

    # -- what containers do not do (yet) ---------------------------------------------------

    async def _refuse_cast(self, instance_uuid: str, what: str) -> None:
        """A task this node cannot do: its instance's power state to the conductor, which ends the
        task with nothing changed."""
        log.warning(
            "node %s: %s of %s refused: containers (lxc) do not do it", self.host, what, instance_uuid
        )
        state = await self.get_power_state(instance_uuid=instance_uuid)
        try:
            await self._sync(instance_uuid, running=state["running"])
        except NotFound:
            log.info("node %s: %s is not recorded here", self.host, instance_uuid)

    def _refused(self, what: str) -> Conflict:
        return Conflict(f"{what} is not supported by {self.host}, which runs containers (lxc)")

    async def rebuild_instance(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "a rebuild")

    async def evacuate_instance(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "an evacuate")

    async def finish_migration(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "a cold migration")

    async def live_migration(self, *, instance_uuid: str, destination: str) -> None:
        await self._refuse_cast(instance_uuid, "a live migration")

    async def prepare_live_migration(
        self, *, instance_uuid: str, ports: list[Port], volumes: list[Reattached] | None = None
    ) -> LiveMigrationTarget:
        raise self._refused("a live migration")

    async def drop_moved_instance(self, *, instance_uuid: str) -> None:
        log.info("node %s: no moved instance to drop (containers do not move): %s", self.host, instance_uuid)

    async def remove_reverted_copy(self, *, instance_uuid: str) -> None:
        log.info("node %s: no migrated copy to remove (containers do not move): %s", self.host, instance_uuid)

    async def shelve_instance(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "a shelve")

    async def shelve_offload_instance(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "a shelve offload")

    async def unshelve_instance(self, *, instance_uuid: str) -> None:
        await self._refuse_cast(instance_uuid, "an unshelve")

    async def snapshot_instance(self, *, instance_uuid: str, image_id: str) -> None:
        await self._refuse_cast(instance_uuid, "a snapshot")

    async def resize_instance(
        self, *, instance_uuid: str, flavor: DomainFlavor, destination: str | None = None
    ) -> None:
        await self._refuse_cast(instance_uuid, "a resize")

    async def finish_resize(self, *, instance_uuid: str, power_on: bool) -> None:
        await self._refuse_cast(instance_uuid, "a resize")

    async def revert_resize(self, *, instance_uuid: str, flavor: DomainFlavor, power_on: bool) -> None:
        await self._refuse_cast(instance_uuid, "a resize revert")

    async def confirm_resize(self, *, instance_uuid: str) -> None:
        log.info("node %s: nothing to confirm for %s (containers are not resized)", self.host, instance_uuid)

    async def set_resources(self, *, instance_uuid: str, vcpus: int, memory_mb: int) -> None:
        await self._refuse_cast(instance_uuid, "a live change of vCPUs and RAM")

    async def change_power(self, *, instance_uuid: str, action: PowerAction) -> None:
        await self._refuse_cast(instance_uuid, f"a {action}")

    async def trigger_crash_dump(self, *, instance_uuid: str) -> None:
        raise self._refused("a crash dump (NMI)")

    async def attach_interface(self, *, instance_uuid: str, port: Port) -> None:
        raise self._refused("attaching an interface")

    async def detach_interface(self, *, instance_uuid: str, mac_address: str) -> None:
        raise self._refused("detaching an interface")

    async def list_interfaces(self, *, instance_uuid: str) -> list[str]:
        await self._existing(instance_uuid)
        xml = await self.records.stored_xml(instance_uuid)
        return macs_of(xml) if xml else []


def definition(uuid: str, nics: list[Veth]) -> str:
    """The container as libvirt's LXC driver would define it: its bridged interfaces (what the
    node's firewall and DHCP read of a guest)."""
    domain = ET.Element("domain", type="lxc")
    ET.SubElement(domain, "uuid").text = uuid
    devices = ET.SubElement(domain, "devices")
    for nic in nics:
        interface = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(interface, "mac", address=nic.mac)
        ET.SubElement(interface, "source", bridge=nic.bridge)
        ET.SubElement(interface, "target", dev=nic.host_end)
    return ET.tostring(domain, encoding="unicode")


def disks_of(xml: str) -> dict[str, ET.Element]:
    """A definition's volume disks, by device name."""
    disks = {}
    for disk in ET.fromstring(xml).iter("disk"):
        target = disk.find("target")
        if target is not None:
            disks[target.get("dev", "")] = disk
    return disks


def connection_of(disk: ET.Element) -> Connection:
    """How a volume disk of a definition reaches its volume (what ``volume_disk`` wrote)."""
    source, driver = disk.find("source"), disk.find("driver")
    host = source.find("host") if source is not None else None
    readonly = disk.find("readonly") is not None
    file = source.get("file", "") if source is not None else ""
    fmt: VolumeFormat = "qcow2" if driver is not None and driver.get("type") == "qcow2" else "raw"
    if host is None or source is None:
        return {
            "transport": "file",
            "path": file,
            "format": fmt,
            "host": "",
            "port": 0,
            "export": "",
            "readonly": readonly,
        }
    return {
        "transport": "nbd",
        "path": "",
        "format": "raw",
        "host": host.get("name", ""),
        "port": int(host.get("port", "0")),
        "export": source.get("name", ""),
        "readonly": readonly,
    }


def with_disk(xml: str, disk: ET.Element) -> str:
    domain = ET.fromstring(xml)
    devices = domain.find("devices")
    if devices is None:
        devices = ET.SubElement(domain, "devices")
    devices.append(disk)
    return ET.tostring(domain, encoding="unicode")


def without_disk(xml: str, name: str) -> str:
    domain = ET.fromstring(xml)
    for devices in domain.iter("devices"):
        for disk in devices.findall("disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == name:
                devices.remove(disk)
    return ET.tostring(domain, encoding="unicode")


def macs_of(xml: str) -> list[str]:
    return [mac.get("address", "") for mac in ET.fromstring(xml).iter("mac")]


def _hostname_ok(name: str) -> bool:
    """Whether an instance's name can be its container's hostname (a DNS label)."""
    return 0 < len(name) <= 63 and name.replace("-", "").isalnum() and name.isascii() and name[0] != "-"
