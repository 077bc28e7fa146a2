"""Build and delete: an instance's domain, and everything it holds on this host and elsewhere.

A build (steps 14-29 of the overview) asks the conductor for the build request (which also
acknowledges the cast), then the image actor for the image (and the kernel and ramdisk it
names), the net actor for ports, the volume actor for the volumes asked for at boot; then it
defines and starts the domain. libvirt's STARTED event makes the instance ACTIVE. A build that
fails gives back what it took (domain, ports, volume attachments, files) and reports it, so
the conductor reschedules. The calls of the build path are idempotent and ride out an actor
restarting (``node.peers``); a build delivered twice never makes a second domain.

A delete destroys the domain, releases its ports and volumes and its files here, and
undefines it (with a suspended guest's managed-save image: ``Hypervisor.undefine``): the
UNDEFINED event (or ``domain_gone``) finishes it at the conductor.

Teardowns (a failed build's undo, what a guest held on this host, an orphan's removal) run
every step even when one fails (``Cleanup``): the failure is logged, never raised into the
actor, and the node's record of the guest stays until everything of it here is gone, so the
orphan sweep tries again once the instance is no longer recorded on this host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import libvirt

from api.conductor import BuildRequest, addresses_of, boot_volume
from api.image import Image
from api.net import Network, Port
from api.volume import Reattached
from bus import TRANSIENT_ERRORS, AiostackError, Conflict, NotFound
from node.configdrive import TARGET, write_config_drive
from node.domain import Disk, DomainSpec, Nic, disk_bus, domain_xml, next_disk_target
from node.hypervisor import Hypervisor
from node.images import ImageCache
from node.networks import Attachment, Networking
from node.peers import Peers
from node.power import start_if_asked
from node.records import Records
from node.security import SecurityGroups
from node.volumes import volume_disk, with_connections
from runtime.states import VmState

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _all_finished(*work: Awaitable[Any]) -> list[Any]:
    """Run ``work`` at once and wait for all of it, then raise the first failure if there is one:
    unlike ``asyncio.gather``'s, nothing is still running when it is raised (undoing a build must
    find every port or disk it made)."""
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


class Prepared(NamedTuple):
    """What a build gathered (``Builder._prepare``)."""

    xml: str
    volumes: list[tuple[str, str]]
    """The volumes it reserved, each with its device."""
    ports: list[Port]


class Cleanup:
    """The steps of one teardown: each runs even when an earlier one failed; a failure is logged
    with its traceback and remembered, never raised (``ok`` is False once a step failed)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failed: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.failed

    async def step(self, name: str, work: Awaitable[T]) -> T | None:
        """``await work``; None if it raised."""
        try:
            return await work
        except Exception:
            log.exception("%s: %s failed", self.what, name)
            self.failed.append(name)
            return None


class Builder:
    """Builds and deletes this node's domains (see the module's docstring)."""

    def __init__(
        self,
        host: str,
        *,
        peers: Peers,
        hypervisor: Hypervisor,
        records: Records,
        images: ImageCache,
        networks: Networking,
        security: SecurityGroups,
        state_dir: Path,
        networks_plugged: Callable[[], None] = lambda: None,
        build_delay: float = 0.0,
    ) -> None:
        """``networks_plugged``: told when a guest's networks are on this host (the routers
        plug into a tenant network's bridge once it exists); ``build_delay``: seconds a build
        waits before it gathers its image, ports and volumes (a slow build, for tests)."""
        self.host = host
        self.peers = peers
        self.hypervisor = hypervisor
        self.records = records
        self.images = images
        self.networks = networks
        self.security = security
        self.state_dir = state_dir
        self.networks_plugged = networks_plugged
        self.build_delay = build_delay
        self._networks: dict[str, Network] = {}

    # -- build --------------------------------------------------------------------------------

    async def build_and_run_instance(self, instance_uuid: str) -> None:
        """Gather image, ports and disks, then define and start the domain (cast by the conductor).

        Builds and deletes of one instance never run at once on a node (``Records.lock``).
        """
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            try:
                request = await self.peers.patient_conductor.get_build_request(instance_uuid=instance_uuid)
            except (Conflict, NotFound) as exc:
                log.info("node %s: not building %s: %s", self.host, instance_uuid, exc)
                return
            except TRANSIENT_ERRORS as exc:  # unacknowledged: the conductor sends it again
                log.info(
                    "node %s: conductor away, build of %s waits for its redelivery: %s",
                    self.host,
                    instance_uuid,
                    exc,
                )
                return
            except AiostackError as exc:
                await self._report_build_failure(instance_uuid, f"{type(exc).__name__}: {exc}")
                return
            self.records.note_request(instance_uuid)
            if await self._finish_earlier_build(instance_uuid):
                return
            try:
                await self._build(instance_uuid, request)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.warning("node %s: build of %s failed: %s", self.host, instance_uuid, message)
                await self._undo_build(instance_uuid)
                await self._report_build_failure(instance_uuid, message)

    async def _finish_earlier_build(self, instance_uuid: str) -> bool:
        """A build cast delivered again (the first one's answer was lost, or this node restarted):
        never a second domain; start the one there is, or report it running."""
        domain = await self.hypervisor.domain(instance_uuid) if self.hypervisor.conn is not None else None
        if domain is None:
            return False
        log.info("node %s: build of %s delivered again; its domain exists", self.host, instance_uuid)
        if await self.hypervisor.is_running(domain):
            await self.peers.patient_conductor.sync_power_state(instance_uuid=instance_uuid, running=True)
        else:
            await self.hypervisor.virt(domain.create)
        return True

    async def _build(self, instance_uuid: str, request: BuildRequest) -> None:
        instance = request["instance"]
        if self.build_delay:
            await asyncio.sleep(self.build_delay)
        prepared = await self._prepare(request)
        await self.records.save(instance_uuid, instance["project_id"], prepared.xml)
        # its ports' chains, from the record just saved, before the guest's first frame
        defined = asyncio.ensure_future(self.hypervisor.define(prepared.xml))
        await _all_finished(defined, self.security.refresh(), self._spawning(instance_uuid, prepared.ports))
        domain = defined.result()
        for volume_id, device in prepared.volumes:
            await self.peers.volume.attach_complete(
                volume_id=volume_id, instance_uuid=instance_uuid, device=device
            )
        self.networks_plugged()
        await self.hypervisor.virt(domain.create)

    async def prepare_incoming(self, instance_uuid: str, ports: list[Port], volumes: list[Reattached]) -> str:
        """A real guest's live migration is bringing it here (``Node.prepare_live_migration``): its
        disk, config drive and boot files, its ``ports`` plugged in (still bound to the source:
        their binding moves at the switch), its ``volumes`` reached through this host's own
        attachments, its definition stored and its security groups' chains made for its taps.
        Returns the definition; ``remove_domain`` undoes it (never the attachments: the
        conductor's).

        :raises NotFound: the instance is not arriving here.
        """
        async with self.records.lock(instance_uuid):
            request = await self.peers.patient_conductor.get_build_request(instance_uuid=instance_uuid)
            self.records.arriving.add(instance_uuid)
            try:
                xml = (await self._prepare(request, volumes, incoming=ports)).xml
                await self.records.save(instance_uuid, request["instance"]["project_id"], xml)
                await self.security.refresh()
            except Exception:
                await self.remove_domain(instance_uuid)
                raise
            self.networks_plugged()
            return xml

    async def _report_build_failure(self, instance_uuid: str, message: str) -> None:
        try:
            await self.peers.patient_conductor.build_failed(instance_uuid=instance_uuid, message=message)
        except AiostackError as exc:
            log.error("node %s: could not report the failed build of %s: %s", self.host, instance_uuid, exc)

    async def _prepare(
        self,
        request: BuildRequest,
        attached: list[Reattached] | None = None,
        incoming: list[Port] | None = None,
    ) -> Prepared:
        """Steps 20-28: the image (and its kernel and ramdisk) or the volume to boot from, the
        ports, the other volumes; for a real guest its config drive too. ``attached``: the
        volumes an evacuated instance has attached (their attachments this host's already), in
        place of reserving those it boots with; ``incoming``: a live migration's destination
        preparing, the instance's ports as they are (bound to its source).

        Returns the domain XML, the reserved volumes with their devices and the ports.
        """
        instance = request["instance"]
        uuid = instance["id"]
        disks: list[Disk] = []
        volumes: list[tuple[str, str]] = []
        boot = boot_volume(request["block_devices"])
        image: Image | None = None
        kept = {reattached["volume"]["id"]: reattached for reattached in attached or []}
        flavor = instance["flavor"]
        ports_had = asyncio.ensure_future(self._ports(request, incoming))  # while the image is read
        root_disk: asyncio.Future[Path] | None = None
        try:
            if boot is None:
                image = await self.peers.patient_image.get(image_id=instance["image_ref"], instance_uuid=uuid)
                properties = image["properties"]
            else:  # its root disk: the volume, which shows what the image it was made from boots with
                if attached is not None:  # attached already, this host's attachment
                    reserved = kept.pop(boot["volume_id"])
                else:
                    reserved = await self.peers.volume.reserve(
                        volume_id=boot["volume_id"], instance_uuid=uuid
                    )
                    volumes.append((boot["volume_id"], "/dev/vda"))
                properties = reserved["volume"]["image_metadata"] or {}
                root_volume = volume_disk(reserved["connection"], "vda", boot["volume_id"])
                disks.append(replace(root_volume, bus=disk_bus(properties)))
            if self.hypervisor.real_guests and image is not None:  # qemu-img: a process of its own
                root_disk = asyncio.ensure_future(self.images.create_root_disk(uuid, image, flavor["disk"]))
            keys = [key for key in ("kernel_id", "ramdisk_id") if properties.get(key)]
            outcomes = await _all_finished(
                ports_had, *(self._boot_image(properties[key], key, uuid) for key in keys)
            )
        except BaseException:  # all finished, so that undoing the build finds every port and disk made
            begun = [work for work in (ports_had, root_disk) if work is not None]
            await asyncio.gather(*begun, return_exceptions=True)
            raise
        ports: list[Port] = outcomes[0]
        boot_images: dict[str, Image] = dict(zip(keys, outcomes[1:], strict=True))
        if self.hypervisor.real_guests:
            if root_disk is not None:
                root = await root_disk
                disks.append(Disk(str(root), "vda", format="qcow2", bus=disk_bus(properties)))
            else:  # its console log and config drive, besides the volume it boots from
                self.images.instance_dir(uuid).mkdir(parents=True, exist_ok=True)
            files = {key: str(await self.images.base(record, uuid)) for key, record in boot_images.items()}
            nics = [await self.guest_nic(port, uuid, bind=incoming is None) for port in ports]
            console_log: str | None = str(self.images.console_log(instance["id"]))
            config_drive = await write_config_drive(
                self.images.instance_dir(uuid), request, ports, {nic.port_id: nic.mtu for nic in nics}
            )
            extra_disks = [Disk(str(config_drive), TARGET, bus="ide", device="cdrom", readonly=True)]
        else:
            if image is not None:
                disk = self.images.instance_dir(instance["id"]) / "disk"
                disks.append(Disk(str(disk), "vda", bus=disk_bus(properties)))
            files = {
                key: str(self.state_dir / "images" / record["id"]) for key, record in boot_images.items()
            }
            nics = [Nic(port["mac_address"], port["id"]) for port in ports]
            console_log = None
            extra_disks = []
        for volume_id, reattached in kept.items():  # an evacuated instance's other volumes
            target = reattached["device"].removeprefix("/dev/") or next_disk_target(
                {disk.target for disk in disks}
            )
            disks.append(volume_disk(reattached["connection"], target, volume_id))
        for device in request["block_devices"]:
            if device is boot or attached is not None:
                continue
            reserved = await self.peers.volume.reserve(
                volume_id=device["volume_id"], instance_uuid=instance["id"]
            )
            target = (device.get("device") or "").removeprefix("/dev/") or next_disk_target(
                {disk.target for disk in disks}
            )
            connection = reserved["connection"]
            disks.append(volume_disk(connection, target, device["volume_id"]))
            volumes.append((device["volume_id"], f"/dev/{target}"))
        spec = DomainSpec(
            uuid=instance["id"],
            name=instance["name"],
            project_id=instance["project_id"],
            flavor_name=flavor["name"],
            vcpus=flavor["vcpus"],
            memory_mb=flavor["ram"],
            max_vcpus=flavor.get("max_vcpus"),
            max_memory_mb=flavor.get("max_ram"),
            domain_type=self.hypervisor.domain_type,
            disks=(*disks, *extra_disks),
            nics=tuple(nics),
            kernel=files.get("kernel_id"),
            initrd=files.get("ramdisk_id"),
            cmdline=properties.get("os_command_line"),
            console_log=console_log,
        )
        return Prepared(domain_xml(spec), volumes, ports)

    async def _ports(self, request: BuildRequest, incoming: list[Port] | None) -> list[Port]:
        """The instance's ports, allocated (``incoming``: a live migration's, as they are)."""
        if incoming is not None:
            return incoming
        return await self.peers.patient_net.allocate_for_instance(
            instance_uuid=request["instance"]["id"],
            requested_networks=request["requested_networks"],
            security_groups=request.get("security_groups"),
        )

    async def _spawning(self, instance_uuid: str, ports: list[Port]) -> None:
        """Tell the conductor the instance has what it needs to be created here, and its addresses.

        :raises NotFound: it is no longer this host's (deleted, rescheduled).
        """
        addresses = await self._addresses(ports, instance_uuid)
        await self.peers.patient_conductor.instance_spawning(instance_uuid=instance_uuid, addresses=addresses)

    async def _boot_image(self, image_id: str, key: str, instance_uuid: str) -> Image:
        """The kernel (``kernel_id``) or ramdisk (``ramdisk_id``) image an instance boots with."""
        try:
            return await self.peers.image.get(image_id=image_id, instance_uuid=instance_uuid)
        except NotFound:
            raise NotFound(f"{key} image {image_id} of instance {instance_uuid} could not be found") from None

    async def guest_nic(self, port: Port, instance_uuid: str, *, bind: bool = True) -> Nic:
        """The port as a NIC of a real guest: on its network's bridge with a DHCP entry, or
        user-mode; ``bind``: its binding says how (a port bound to this host)."""
        subnet = None
        if port["fixed_ips"]:
            subnet = await self.peers.net.get_subnet(
                subnet_id=port["fixed_ips"][0]["subnet_id"], instance_uuid=instance_uuid
            )
        network = await self._network(port["network_id"], instance_uuid)
        attachment = await self.networks.attach(
            self.hypervisor.connection, network, subnet, port, instance_uuid
        )
        if bind:
            await self.peers.net.set_port_binding(
                port_id=port["id"], vif_type=attachment.vif_type, vif_details=self._vif_details(attachment)
            )
        return Nic(
            port["mac_address"],
            port["id"],
            network=attachment.network,
            bridge=attachment.bridge,
            user_mode=attachment.vif_type == "user",
            mtu=attachment.mtu,
        )

    def _vif_details(self, attachment: Attachment) -> dict[str, Any]:
        """The binding's ``vif_details``, with Neutron's ``port_filter``: whether this host enforces
        the port's security groups (a user-mode NIC has no tap on a bridge to filter)."""
        if attachment.vif_type == "user":
            reason = "user-mode networking: no tap on a bridge, security groups are not enforced"
            return {**attachment.details, "port_filter": False, "port_filter_reason": reason}
        return {**attachment.details, "port_filter": self.security.enforcing}

    async def _network(self, network_id: str, instance_uuid: str) -> Network:
        """A network an instance of this host is on (kept: what the node reads of it never changes)."""
        if network_id not in self._networks:
            self._networks[network_id] = await self.peers.net.get_network(
                network_id=network_id, instance_uuid=instance_uuid
            )
        return self._networks[network_id]

    async def _addresses(self, ports: list[Port], instance_uuid: str) -> dict[str, list[dict[str, Any]]]:
        """Nova's ``addresses``: network name -> fixed IPs with their MAC."""
        names = {
            port["network_id"]: (await self._network(port["network_id"], instance_uuid))["name"]
            for port in ports
        }
        return addresses_of(ports, names)

    async def _undo_build(self, instance_uuid: str) -> None:
        """Give back what a failed build took: the domain, its ports and volume attachments, its
        DHCP entries and files, its record here. Never raises (``Cleanup``): the failure must
        still be reported, and the node live on."""
        undo = Cleanup(f"node {self.host}: undo of the failed build of {instance_uuid}")
        xml = await undo.step("removing the domain", self._remove_from_libvirt(instance_uuid))
        await undo.step("releasing ports and volumes", self._release_elsewhere(instance_uuid))
        await self._release_here(instance_uuid, xml, undo)
        await self.security.refresh_logged(f"the failed build of {instance_uuid}")

    # -- delete -------------------------------------------------------------------------------

    async def rebuild_instance(self, instance_uuid: str) -> None:
        """Make the instance's disk again from its (new) image and define its domain again; start
        it, or for a stopped instance report ``task_done``. A failure reports the domain's power
        state (the conductor ends the task with it), never leaving the instance REBUILD."""
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            try:
                request = await self.peers.patient_conductor.get_build_request(instance_uuid=instance_uuid)
            except (Conflict, NotFound) as exc:
                log.info("node %s: not rebuilding %s: %s", self.host, instance_uuid, exc)
                return
            self.records.note_request(instance_uuid)
            try:
                await self._rebuild(instance_uuid, request)
            except Exception as exc:
                log.warning("node %s: rebuild of %s failed: %r", self.host, instance_uuid, exc)
                domain = await self.hypervisor.domain(instance_uuid)
                running = domain is not None and await self.hypervisor.is_running(domain)
                await self.peers.patient_conductor.sync_power_state(
                    instance_uuid=instance_uuid, running=running
                )

    async def _rebuild(self, instance_uuid: str, request: BuildRequest) -> None:
        domain = await self.hypervisor.existing(instance_uuid)
        if await self.hypervisor.is_running(domain):
            await self.hypervisor.virt(domain.destroy)
        self.images.remove_disks(instance_uuid)
        prepared = await self._prepare(request)
        await self._spawning(instance_uuid, prepared.ports)
        await self.records.save(instance_uuid, request["instance"]["project_id"], prepared.xml)
        domain = await self.hypervisor.define(prepared.xml)
        await self.security.refresh()
        if request["instance"]["vm_state"] == VmState.STOPPED:
            await self.peers.patient_conductor.task_done(instance_uuid=instance_uuid)
        else:
            await self.hypervisor.virt(domain.create)

    async def evacuate_instance(self, instance_uuid: str) -> None:
        """An evacuate's destination, or an offloaded instance's unshelve: build the instance's
        domain here again (its ports and volumes kept, moved to this host; its disk from the image
        the build request names), start it unless it was stopped, report its power state. A
        failure gives back what this node made (never the ports and volumes, the instance's) and
        reports ``build_failed``, which ends the evacuate in ERROR (offloads the unshelved one again)."""
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            try:
                request = await self.peers.patient_conductor.get_build_request(instance_uuid=instance_uuid)
            except (Conflict, NotFound) as exc:
                log.info("node %s: not evacuating %s here: %s", self.host, instance_uuid, exc)
                return
            except TRANSIENT_ERRORS as exc:  # unacknowledged: the conductor sends it again
                log.info("node %s: conductor away, evacuate of %s waits: %s", self.host, instance_uuid, exc)
                return
            self.records.note_request(instance_uuid)
            try:
                running = await self._evacuate(instance_uuid, request)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.warning("node %s: evacuate of %s failed: %s", self.host, instance_uuid, message)
                undo = Cleanup(f"node {self.host}: undo of the failed evacuate of {instance_uuid}")
                xml = await undo.step("removing the domain", self._remove_from_libvirt(instance_uuid))
                await self._release_here(instance_uuid, xml, undo)
                await self._report_build_failure(instance_uuid, message)
                return
            if running and await self._arrived_paused(instance_uuid):
                # a paused guest live-migrated here: paused it stays, as libvirt would have said
                await self.peers.patient_conductor.domain_event(
                    instance_uuid=instance_uuid, event=libvirt.VIR_DOMAIN_EVENT_SUSPENDED, detail=0
                )
                return
            await self.peers.patient_conductor.sync_power_state(instance_uuid=instance_uuid, running=running)

    async def _arrived_paused(self, instance_uuid: str) -> bool:
        domain = await self.hypervisor.domain(instance_uuid)
        return domain is not None and await self.hypervisor.state(domain) == libvirt.VIR_DOMAIN_PAUSED

    async def _evacuate(self, instance_uuid: str, request: BuildRequest) -> bool:
        """Define (and start, unless it was stopped) the evacuated instance's domain; whether it runs.
        Delivered again, the domain there is kept."""
        instance = request["instance"]
        power_on = request.get("power_on", instance["vm_state"] != VmState.STOPPED)
        domain = await self.hypervisor.domain(instance_uuid)
        if domain is not None and request.get("rebind"):
            # a live migration rolled back to this host, a real guest's arrived here with it, or
            # a cold migration's copy (or its source's domain, reverted to)
            reattached = await self.peers.patient_volume.reattach_all(instance_uuid=instance_uuid)
            if reattached and not await self.hypervisor.is_running(domain):  # its volumes' exports now
                xml = with_connections(await self.hypervisor.persistent_xml(domain), reattached)
                await self.records.set_xml(instance_uuid, xml)
                domain = await self.hypervisor.define(xml)
            await self.peers.patient_net.allocate_for_instance(
                instance_uuid=instance_uuid,
                requested_networks=request["requested_networks"],
                security_groups=request.get("security_groups"),
            )
            self.records.arriving.discard(instance_uuid)
            await self.security.refresh()
        if domain is None:
            attached = await self.peers.patient_volume.reattach_all(instance_uuid=instance_uuid)
            prepared = await self._prepare(request, attached)
            await self._spawning(instance_uuid, prepared.ports)
            await self.records.save(instance_uuid, instance["project_id"], prepared.xml)
            if not power_on:
                await self.records.set_desired(instance_uuid, "shutoff")
            domain = await self.hypervisor.define(prepared.xml)
            await self.security.refresh()  # its ports' chains, before the guest's first frame
            self.networks_plugged()
        return await start_if_asked(self.hypervisor, self.records, instance_uuid, domain, power_on)

    async def terminate_instance(self, instance_uuid: str) -> None:
        """Destroy, release ports and volumes, undefine: the UNDEFINED event finishes the delete."""
        async with self.records.lock(instance_uuid), self.records.working_on(instance_uuid):
            await self.peers.patient_conductor.task_progress(instance_uuids=[instance_uuid])
            await self._terminate(instance_uuid)
        self.records.forget_lock(instance_uuid)
        await self.security.refresh_logged(f"the delete of {instance_uuid}")

    async def _terminate(self, instance_uuid: str) -> None:
        self.records.note_request(instance_uuid)
        domain = await self.hypervisor.domain(instance_uuid)
        xml = await self._definition(instance_uuid, domain)
        if domain is not None and await self.hypervisor.is_running(domain):
            await self.hypervisor.virt(domain.destroy)
        await self._release_elsewhere(instance_uuid)
        await self._release_here(instance_uuid, xml, Cleanup(f"node {self.host}: delete of {instance_uuid}"))
        if domain is not None:
            await self.hypervisor.undefine(domain)
        else:
            await self.tell_domain_gone(instance_uuid)
        self.records.request_ids.pop(instance_uuid, None)

    async def remove_domain(self, instance_uuid: str) -> None:
        """The domain, its files and its record here, and nothing else: what an orphan (an
        instance deleted while this node was away, or rebuilt elsewhere) leaves on this host.
        Never raises (``Cleanup``): what failed is left for the next orphan sweep."""
        self.records.arriving.discard(instance_uuid)
        removal = Cleanup(f"node {self.host}: removal of orphan {instance_uuid}")
        xml = await removal.step("removing the domain", self._remove_from_libvirt(instance_uuid))
        await self._release_here(instance_uuid, xml, removal)
        await self.security.refresh_logged(f"the removal of orphan {instance_uuid}")

    async def _remove_from_libvirt(self, instance_uuid: str) -> str | None:
        """Destroy and undefine the instance's domain if libvirt has one; the definition it had
        (else the copy stored here), for what it held on this host."""
        domain = await self.hypervisor.domain(instance_uuid)
        xml = await self._definition(instance_uuid, domain)
        if domain is not None:
            if await self.hypervisor.is_running(domain):
                await self.hypervisor.virt(domain.destroy)
            await self.hypervisor.undefine(domain)
        return xml

    async def tell_domain_gone(self, instance_uuid: str) -> None:
        """Tell the conductor the instance being deleted had no domain here (which finishes the delete)."""
        try:
            await self.peers.conductor.domain_gone(instance_uuid=instance_uuid)
        except NotFound:  # finished meanwhile (the conductor did it without this node), or moved away
            log.info("node %s: %s is no longer recorded here; its delete is done", self.host, instance_uuid)

    async def _release_elsewhere(self, instance_uuid: str) -> None:
        """The instance's ports and volume attachments (idempotent). Their owners give a node only
        what instances recorded on its host hold: an instance recorded elsewhere (rescheduled) or
        nowhere (deleted meanwhile, its resources released by the conductor) holds nothing for
        this node to release."""
        try:
            await self.peers.patient_net.deallocate_for_instance(instance_uuid=instance_uuid)
            await self.peers.patient_volume.detach_all(instance_uuid=instance_uuid)
        except NotFound:
            log.info(
                "node %s: %s is no longer recorded here: its ports and volumes are not this node's",
                self.host,
                instance_uuid,
            )

    async def _release_here(self, instance_uuid: str, xml: str | None, cleanup: Cleanup) -> None:
        """What a guest held on this host: its DHCP entries, its overlay and console log, then its
        record, as steps of ``cleanup``. The record goes only if every step so far succeeded: it is
        how this node remembers there is something left to remove (the orphan sweep tries again)."""
        if xml is None:
            xml = await cleanup.step("reading its stored definition", self.records.stored_xml(instance_uuid))
        if xml is not None and self.hypervisor.conn is not None:
            await cleanup.step("releasing its DHCP entries", self.networks.release(self.hypervisor.conn, xml))
        await cleanup.step(
            "removing its files", asyncio.to_thread(self.images.remove_instance, instance_uuid)
        )
        if not cleanup.ok:
            log.warning(
                "%s: keeping its record here for the orphan sweep (%s failed)",
                cleanup.what,
                ", ".join(cleanup.failed),
            )
            return
        await cleanup.step("forgetting it", self.records.delete(instance_uuid))

    async def _definition(self, instance_uuid: str, domain: libvirt.virDomain | None) -> str | None:
        """The domain's persistent XML: libvirt's, else the copy this node stored."""
        if domain is not None:
            return await self.hypervisor.persistent_xml(domain)
        return await self.records.stored_xml(instance_uuid)
