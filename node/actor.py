"""The node actor (nova-compute + its libvirt driver): the domains of one compute host.

Served on ``<prefix>.rpc.node.<host>.<method>``. Step 29 of the overview happens here,
after the node has asked for what it needs (steps 14-28): the conductor for the build
request, the image actor for the image, the net actor for ports, the volume actor for
disks. libvirt lifecycle events arrive through libvirtaio on the event loop; each is
published at once as a ``domain.lifecycle`` event and handed to the conductor, which turns
it into the instance's state. Every libvirt call that may block (all of them, on a remote or
QEMU driver) goes through ``_virt``: off the loop, except on the in-process test driver.

Handlers (version history: 1 - initial):
* build_and_run_instance(instance_uuid)       cast by the conductor
* stop_instance, start_instance, reboot_instance(reboot_type), terminate_instance   casts
* attach_volume(instance_uuid, volume_id, connection, device) -> {"device"}
* detach_volume(instance_uuid, volume_id, connection)
* list_domains() -> [{uuid, name, state, project_id}]
* get_console_output(instance_uuid, length=None) -> {"output"}   (real guests' serial console)

On a QEMU host (``qemu:///system``, ``qemu:///embed?root=...``) guests are real: disks are
qcow2 overlays on cached images (``node/images.py``), NICs join a libvirt network per
aiostack network whose DHCP hands each port's MAC its fixed IP (``node/networks.py``), the
serial console goes to a log, and the accelerator is KVM only where it really runs a guest
(``node/virt_type.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from bus import (
    TRANSIENT_ERRORS,
    Actor,
    AiostackError,
    Bus,
    Conflict,
    NotFound,
    current_request_id,
    handler,
    request_scope,
)
from node.domain import (
    Disk,
    DomainSpec,
    Nic,
    disk_bus,
    disk_targets,
    disk_xml,
    domain_xml,
    next_disk_target,
)
from node.images import ImageCache
from node.libvirt_conn import register_event_loop, silence_libvirt_stderr
from node.networks import GuestNetworks
from node.virt_type import choose_virt_type
from runtime.config import Config
from runtime.events import publish_event
from runtime.states import lifecycle_name
from runtime.store import Store

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE domains (
        uuid TEXT PRIMARY KEY, project_id TEXT NOT NULL, xml TEXT NOT NULL,
        desired_power TEXT NOT NULL DEFAULT 'running', created_at REAL NOT NULL);
    """,
]


CONSOLE_MAX_BYTES = 1024 * 1024
TRANSIENT_RETRY_FOR = 15.0


def _tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of a file (nothing if it does not exist yet)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            return f.read()
    except FileNotFoundError:
        return b""


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    instance_uuid: str
    event: int
    detail: int
    at: float


class NodeActor(Actor):
    name = "node"
    max_inflight = 64

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        host: str,
        libvirt_uri: str = "test:///default",
        disk_gb: int = 10240,
        report_interval: float = 10.0,
        shutdown_timeout: float = 60.0,
        virt_type: str = "auto",
        reserved_host_memory_mb: int = 512,
        orphan_sweep_interval: float = 60.0,
    ) -> None:
        if not host or any(c in host for c in " .*>"):
            raise ValueError(f"invalid host name {host!r}")
        super().__init__(bus, address=f"node.{host}")
        self.host = host
        self.libvirt_uri = libvirt_uri
        self.in_process_driver = libvirt_uri.startswith("test://")
        self.disk_gb = disk_gb
        self.report_interval = report_interval
        self.shutdown_timeout = shutdown_timeout
        self.requested_virt_type = virt_type
        self.reserved_host_memory_mb = reserved_host_memory_mb
        self.orphan_sweep_interval = orphan_sweep_interval
        self.domain_type = "test"
        self.state_dir = config.data_dir / "nodes" / host
        self.images = ImageCache(bus, self.state_dir)
        self.networks = GuestNetworks(self._virt)
        self.store = Store(self.state_dir / "node.sqlite", MIGRATIONS)
        self.conn: libvirt.virConnect | None = None
        self._events: asyncio.Queue[LifecycleEvent] = asyncio.Queue()
        self._projects: dict[str, str] = {}
        self._request_ids: dict[str, str] = {}
        self._stopped: dict[str, asyncio.Event] = {}
        self._callback_id: int | None = None
        self._last_running: dict[str, bool] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._network_names: dict[str, str] = {}
        self._working: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.store.open()
        for row in await self.store.fetchall("SELECT uuid, project_id FROM domains"):
            self._projects[row["uuid"]] = row["project_id"]
        register_event_loop()
        silence_libvirt_stderr()
        await self._connect()
        await self._choose_domain_type()
        self.spawn(self._forward_events(), name=f"{self.address}-events")
        self.spawn(self._report_forever(), name=f"{self.address}-report")
        self.spawn(self._reconcile(), name=f"{self.address}-reconcile")
        log.info("node %s on %s (domain type %s)", self.host, self.libvirt_uri, self.domain_type)

    @property
    def real_guests(self) -> bool:
        """QEMU runs this host's guests (else libvirt's test driver pretends to)."""
        return self.domain_type in ("qemu", "kvm")

    async def _choose_domain_type(self) -> None:
        assert self.conn is not None
        if (await self._virt(self.conn.getType)).lower() != "qemu":
            return
        local = "://" in self.libvirt_uri and self.libvirt_uri.split("://", 1)[1].startswith("/")
        choice = await choose_virt_type(self.requested_virt_type, local=local)
        self.domain_type = choice.domain_type
        log.info("node %s: guests run with type=%s: %s", self.host, choice.domain_type, choice.reason)

    async def _connect(self) -> None:
        """Open libvirt and register the lifecycle and close callbacks (again after a reconnect)."""
        conn = await asyncio.to_thread(libvirt.open, self.libvirt_uri)
        self._callback_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        conn.registerCloseCallback(self._on_close, None)
        self.conn = conn
        if not self._last_running:
            domains = await asyncio.to_thread(conn.listAllDomains, 0)
            self._last_running = {d.UUIDString(): bool(await asyncio.to_thread(d.isActive)) for d in domains}

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        """libvirt closed the connection (libvirtd restarted, or dropped us): reconnect and catch up."""
        log.warning("node %s: libvirt connection closed (reason %d); reconnecting", self.host, reason)
        self.conn = None
        self.spawn(self._reconnect(), name=f"{self.address}-reconnect")

    async def _reconnect(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._connect()
                break
            except libvirt.libvirtError as exc:
                log.info("node %s: libvirt not back yet (%s); again in %.1f s", self.host, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        log.info("node %s: libvirt connection is back; reconciling", self.host)
        await self._catch_up_after_reconnect()

    async def _catch_up_after_reconnect(self) -> None:
        """Publish what changed while the connection was down; bring back domains libvirt lost."""
        assert self.conn is not None
        for row in await self.store.fetchall("SELECT uuid, xml, desired_power FROM domains"):
            uuid, was_running = row["uuid"], self._last_running.get(row["uuid"])
            domain = await self._domain(uuid)
            if domain is None:
                domain = await self._virt(self.conn.defineXML, row["xml"])
                if row["desired_power"] == "running":
                    await self._virt(domain.create)
                continue
            running = await self._is_running(domain)
            if was_running is None or running == was_running:
                continue
            self._last_running[uuid] = running
            with request_scope():
                await publish_event(
                    self.bus,
                    "domain",
                    uuid,
                    self._projects.get(uuid),
                    "domain.reconciled",
                    {
                        "event": "STARTED" if running else "STOPPED",
                        "running": running,
                        "host": self.host,
                        "detail": "changed while the libvirt connection was down",
                    },
                )
                if not running:
                    await self._set_desired(uuid, "shutoff")
                await self._sync(uuid, running=running)

    async def on_stop(self) -> None:
        if self.conn is not None:
            if self._callback_id is not None:
                self.conn.domainEventDeregisterAny(self._callback_id)
            self.conn.unregisterCloseCallback()
            await asyncio.to_thread(self.conn.close)
            self.conn = None
        await self.store.close()

    async def _virt(self, function: Any, *args: Any) -> Any:
        """Run one libvirt call: off the event loop, except on the test driver.

        The test driver lives in this process's memory and never blocks, so a thread hop
        would only cost CPU; every real driver's call goes to a worker thread.
        """
        if self.in_process_driver:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    async def _domain(self, instance_uuid: str) -> libvirt.virDomain | None:
        if self.conn is None:
            raise ConnectionError(f"node {self.host} has no libvirt connection")
        try:
            return await self._virt(self.conn.lookupByUUIDString, instance_uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    async def _is_running(self, domain: libvirt.virDomain) -> bool:
        return bool(await self._virt(domain.isActive))

    # -- events: libvirt -> bus -> conductor -----------------------------------------------

    def _on_lifecycle(
        self, _conn: Any, domain: libvirt.virDomain, event: int, detail: int, _opaque: Any
    ) -> None:
        """libvirtaio runs this on the loop thread: only queue the event (of this node's domains:
        several nodes may share one libvirtd)."""
        uuid = domain.UUIDString()
        if uuid in self._projects:
            self._events.put_nowait(LifecycleEvent(uuid, event, detail, time.time()))

    async def _forward_events(self) -> None:
        """Publish each domain event at once, then let the conductor turn it into instance state."""
        while True:
            item = await self._events.get()
            if item.event in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED):
                self._last_running[item.instance_uuid] = True
            elif item.event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED):
                self._last_running[item.instance_uuid] = False
            if item.event == libvirt.VIR_DOMAIN_EVENT_STOPPED and item.instance_uuid in self._stopped:
                self._stopped[item.instance_uuid].set()
            project = self._projects.get(item.instance_uuid)
            with request_scope(self._request_ids.get(item.instance_uuid)):
                await self._publish_lifecycle(item, project)
                if project is not None and item.event != libvirt.VIR_DOMAIN_EVENT_DEFINED:
                    await self._tell_conductor(item)

    async def _publish_lifecycle(self, item: LifecycleEvent, project: str | None) -> None:
        """Store the raw event in the event stream, riding out a nats-server restart (bounded)."""
        body = {
            "event": lifecycle_name(item.event),
            "event_id": item.event,
            "detail": item.detail,
            "host": self.host,
            "libvirt_ts": item.at,
        }
        for attempt in range(8):
            try:
                await publish_event(self.bus, "domain", item.instance_uuid, project, "domain.lifecycle", body)
                return
            except Exception as exc:  # the bus's own errors, and nats-py's while it reconnects
                log.warning(
                    "node %s: event of %s not stored yet (%s); retrying", self.host, item.instance_uuid, exc
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 5))
        log.error("node %s: gave up storing event %s of %s", self.host, body["event"], item.instance_uuid)

    async def _tell_conductor(self, item: LifecycleEvent) -> None:
        """Hand the event to the conductor, retrying while it is away (bounded: about a minute)."""
        body = {
            "instance_uuid": item.instance_uuid,
            "host": self.host,
            "event": item.event,
            "detail": item.detail,
        }
        for attempt in range(12):
            try:
                await self.bus.call("conductor.domain_event", body, timeout=10)
                return
            except AiostackError as exc:
                log.warning(
                    "node %s: conductor did not take event %s of %s (%s); retrying",
                    self.host,
                    item.event,
                    item.instance_uuid,
                    exc,
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 10))
        log.error("node %s: gave up telling the conductor about %s", self.host, item.instance_uuid)

    # -- capacity and heartbeat -----------------------------------------------------------

    async def _report_forever(self) -> None:
        """The heartbeat, and the instances this node is working on (their tasks make progress)."""
        while True:
            try:
                if self.conn is not None:
                    await self.report_capacity()
            except (AiostackError, libvirt.libvirtError) as exc:
                log.warning("node %s: capacity report failed: %s", self.host, exc)
            try:
                if self._working:
                    await self.bus.call(
                        "conductor.task_progress",
                        {"host": self.host, "instance_uuids": sorted(self._working)},
                        timeout=10,
                    )
            except AiostackError as exc:
                log.warning("node %s: progress report failed: %s", self.host, exc)
            await asyncio.sleep(self.report_interval)

    async def report_capacity(self) -> None:
        """The heartbeat: capacity on ``<prefix>.hb.<host>``, a subject only this node may publish to."""
        assert self.conn is not None
        _model, memory_mb, cpus, *_ = await self._virt(self.conn.getInfo)
        disk_gb = self.disk_gb
        if self.real_guests:
            memory_mb = max(0, memory_mb - self.reserved_host_memory_mb)
            disk_gb = min(disk_gb, shutil.disk_usage(self.state_dir).total // 1024**3)
        await self.bus.request(
            f"hb.{self.host}",
            {
                "host": self.host,
                "vcpus": cpus,
                "memory_mb": memory_mb,
                "disk_gb": disk_gb,
                "hypervisor_type": (await self._virt(self.conn.getType)).lower(),
            },
            timeout=10,
        )

    # -- build (steps 14-29) ----------------------------------------------------------------

    @handler
    async def build_and_run_instance(self, instance_uuid: str) -> None:
        """Gather image, ports and disks, then define and start the domain (cast by the conductor).

        Builds and deletes of one instance never run at once on a node (``_instance_lock``).
        """
        async with self._instance_lock(instance_uuid), self._working_on(instance_uuid):
            try:
                request = await self._call(
                    "conductor.get_build_request", {"instance_uuid": instance_uuid, "host": self.host}
                )
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
            self._request_ids[instance_uuid] = current_request_id() or ""
            if await self._finish_earlier_build(instance_uuid):
                return
            try:
                await self._build(instance_uuid, request)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.warning("node %s: build of %s failed: %s", self.host, instance_uuid, message)
                try:
                    await self._undo_build(instance_uuid)
                finally:
                    await self._report_build_failure(instance_uuid, message)

    async def _finish_earlier_build(self, instance_uuid: str) -> bool:
        """A build cast delivered again (the first one's answer was lost, or this node restarted):
        never a second domain; start the one there is, or report it running."""
        domain = await self._domain(instance_uuid) if self.conn is not None else None
        if domain is None:
            return False
        log.info("node %s: build of %s delivered again; its domain exists", self.host, instance_uuid)
        if await self._is_running(domain):
            await self._sync(instance_uuid, running=True)
        else:
            await self._virt(domain.create)
        return True

    async def _build(self, instance_uuid: str, request: dict[str, Any]) -> None:
        instance = request["instance"]
        xml, volumes = await self._prepare(instance, request["requested_networks"], request["block_devices"])
        await self.store.execute(
            "INSERT OR REPLACE INTO domains (uuid, project_id, xml, desired_power, created_at)"
            " VALUES (?, ?, ?, 'running', ?)",
            (instance_uuid, instance["project_id"], xml, time.time()),
        )
        self._projects[instance_uuid] = instance["project_id"]
        if self.conn is None:
            raise ConnectionError(f"node {self.host} has no libvirt connection")
        domain = await self._virt(self.conn.defineXML, xml)
        for volume_id, device in volumes:
            await self.bus.call(
                "volume.attach_complete",
                {"volume_id": volume_id, "instance_uuid": instance_uuid, "host": self.host, "device": device},
            )
        await self._virt(domain.create)

    async def _report_build_failure(self, instance_uuid: str, message: str) -> None:
        try:
            await self._call(
                "conductor.build_failed",
                {"instance_uuid": instance_uuid, "host": self.host, "message": message},
            )
        except AiostackError as exc:
            log.error("node %s: could not report the failed build of %s: %s", self.host, instance_uuid, exc)

    @contextlib.asynccontextmanager
    async def _working_on(self, instance_uuid: str) -> AsyncIterator[None]:
        """The instance is in this node's hands: its heartbeat tells the conductor so."""
        self._working[instance_uuid] = self._working.get(instance_uuid, 0) + 1
        try:
            yield
        finally:
            self._working[instance_uuid] -= 1
            if not self._working[instance_uuid]:
                del self._working[instance_uuid]

    async def _take_task(self, instance_uuid: str) -> None:
        """Acknowledge the conductor's cast, so it does not send it again."""
        await self._call("conductor.task_progress", {"host": self.host, "instance_uuids": [instance_uuid]})

    def _instance_lock(self, instance_uuid: str) -> asyncio.Lock:
        lock = self._locks.get(instance_uuid)
        if lock is None:
            lock = self._locks[instance_uuid] = asyncio.Lock()
        return lock

    async def _prepare(
        self, instance: dict[str, Any], requested_networks: Any, block_devices: list[dict[str, Any]]
    ) -> tuple[str, list[tuple[str, str]]]:
        """Steps 20-28: the image (and its kernel and ramdisk), the ports, the volumes.

        Returns the domain XML and the reserved volumes with their devices.
        """
        image = await self._call("image.get", {"image_id": instance["image_ref"]})
        properties = image.get("properties") or {}
        boot_images = {
            key: await self._boot_image(image, key)
            for key in ("kernel_id", "ramdisk_id")
            if properties.get(key)
        }
        ports = await self._call(
            "net.allocate_for_instance",
            {
                "instance_uuid": instance["id"],
                "project_id": instance["project_id"],
                "requested_networks": requested_networks,
                "host": self.host,
            },
        )
        addresses = await self._addresses(ports)
        await self._call(
            "conductor.instance_spawning",
            {"instance_uuid": instance["id"], "host": self.host, "addresses": addresses},
        )
        flavor = instance["flavor"]
        if self.real_guests:
            root = Disk(
                str(await self.images.create_root_disk(instance["id"], image, flavor["disk"])),
                "vda",
                format="qcow2",
                bus=disk_bus(properties),
            )
            files = {key: str(await self.images.base(record)) for key, record in boot_images.items()}
            nics = [await self._guest_nic(port) for port in ports]
            console_log: str | None = str(self.images.console_log(instance["id"]))
        else:
            root = Disk(
                str(self.images.instance_dir(instance["id"]) / "disk"), "vda", bus=disk_bus(properties)
            )
            files = {
                key: str(self.state_dir / "images" / record["id"]) for key, record in boot_images.items()
            }
            nics = [Nic(port["mac_address"], port["id"]) for port in ports]
            console_log = None
        disks = [root]
        volumes = []
        for device in block_devices:
            reserved = await self.bus.call(
                "volume.reserve", {"volume_id": device["volume_id"], "instance_uuid": instance["id"]}
            )
            target = (device.get("device") or "").removeprefix("/dev/") or next_disk_target(
                {disk.target for disk in disks}
            )
            connection = reserved["connection"]
            disks.append(
                Disk(connection["path"], target, format=connection["format"], serial=device["volume_id"])
            )
            volumes.append((device["volume_id"], f"/dev/{target}"))
        spec = DomainSpec(
            uuid=instance["id"],
            name=instance["name"],
            project_id=instance["project_id"],
            flavor_name=flavor["name"],
            vcpus=flavor["vcpus"],
            memory_mb=flavor["ram"],
            domain_type=self.domain_type,
            disks=tuple(disks),
            nics=tuple(nics),
            kernel=files.get("kernel_id"),
            initrd=files.get("ramdisk_id"),
            cmdline=properties.get("os_command_line"),
            console_log=console_log,
        )
        return domain_xml(spec), volumes

    async def _call(self, address: str, body: dict[str, Any]) -> Any:
        """A call of the build path (all idempotent) that rides out an actor restarting."""
        return await self.bus.call_patiently(address, body, within=TRANSIENT_RETRY_FOR)

    async def _boot_image(self, image: dict[str, Any], key: str) -> dict[str, Any]:
        """The kernel (``kernel_id``) or ramdisk (``ramdisk_id``) image an image boots with."""
        try:
            return await self.bus.call("image.get", {"image_id": image["properties"][key]})
        except NotFound:
            raise NotFound(
                f"{key} image {image['properties'][key]} of image {image['id']} could not be found"
            ) from None

    async def _guest_nic(self, port: dict[str, Any]) -> Nic:
        """The port as a NIC of a real guest: on its network's bridge with a DHCP entry, or user-mode."""
        assert self.conn is not None
        subnet = None
        if port["fixed_ips"]:
            subnet = await self.bus.call("net.get_subnet", {"subnet_id": port["fixed_ips"][0]["subnet_id"]})
        attachment = await self.networks.attach(self.conn, port["network_id"], subnet, port)
        await self.bus.call(
            "net.set_port_binding",
            {
                "port_id": port["id"],
                "vif_type": attachment.vif_type,
                "vif_details": {
                    "libvirt_network": attachment.network,
                    "fallback_reason": attachment.fallback_reason,
                },
            },
        )
        return Nic(
            port["mac_address"], port["id"], network=attachment.network, user_mode=attachment.network is None
        )

    async def _addresses(self, ports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Nova's ``addresses``: network name -> fixed IPs with their MAC."""
        addresses: dict[str, list[dict[str, Any]]] = {}
        for port in ports:
            network_id = port["network_id"]
            if network_id not in self._network_names:
                network = await self.bus.call("net.get_network", {"network_id": network_id})
                self._network_names[network_id] = network["name"] or network_id
            for fixed in port["fixed_ips"]:
                addresses.setdefault(self._network_names[network_id], []).append(
                    {
                        "addr": fixed["ip_address"],
                        "version": 4,
                        "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                    }
                )
        return addresses

    async def _undo_build(self, instance_uuid: str) -> None:
        """Give back what a failed build took: the domain, its ports, its files, its record here."""
        domain = await self._domain(instance_uuid)
        xml = await self._definition(instance_uuid, domain)
        if domain is not None:
            if await self._is_running(domain):
                await self._virt(domain.destroy)
            await self._virt(domain.undefine)
        await self._call("net.deallocate_for_instance", {"instance_uuid": instance_uuid})
        await self._call("volume.detach_all", {"instance_uuid": instance_uuid})
        await self._release_guest(instance_uuid, xml)
        await self.store.execute("DELETE FROM domains WHERE uuid = ?", (instance_uuid,))

    async def _definition(self, instance_uuid: str, domain: libvirt.virDomain | None) -> str | None:
        """The domain's persistent XML: libvirt's, else the copy this node stored."""
        if domain is not None:
            return await self._virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        row = await self.store.fetchone("SELECT xml FROM domains WHERE uuid = ?", (instance_uuid,))
        return row["xml"] if row else None

    async def _release_guest(self, instance_uuid: str, xml: str | None) -> None:
        """What a real guest held on this host: its DHCP entries, its overlay and console log."""
        if xml is not None and self.conn is not None:
            await self.networks.release(self.conn, xml)
        await asyncio.to_thread(self.images.remove_instance, instance_uuid)

    # -- power ----------------------------------------------------------------------------

    async def _existing(self, instance_uuid: str) -> libvirt.virDomain:
        domain = await self._domain(instance_uuid)
        if domain is None:
            raise NotFound(f"no domain for instance {instance_uuid} on {self.host}")
        self._request_ids[instance_uuid] = current_request_id() or ""
        return domain

    async def _set_desired(self, instance_uuid: str, power: str) -> None:
        await self.store.execute(
            "UPDATE domains SET desired_power = ? WHERE uuid = ?", (power, instance_uuid)
        )

    async def _stop_instance(self, instance_uuid: str) -> None:
        """ACPI shutdown; destroy when the guest has not stopped within ``shutdown_timeout``."""
        domain = await self._existing(instance_uuid)
        await self._set_desired(instance_uuid, "shutoff")
        if not await self._is_running(domain):
            await self._sync(instance_uuid, running=False)
            return
        stopped = self._stopped.setdefault(instance_uuid, asyncio.Event())
        try:
            await self._virt(domain.shutdown)
            async with asyncio.timeout(self.shutdown_timeout):
                await stopped.wait()
        except TimeoutError:
            log.warning(
                "node %s: %s ignored ACPI shutdown for %.0f s; destroying it",
                self.host,
                instance_uuid,
                self.shutdown_timeout,
            )
            await self._virt(domain.destroy)
        finally:
            self._stopped.pop(instance_uuid, None)

    async def _start_instance(self, instance_uuid: str) -> None:
        domain = await self._existing(instance_uuid)
        await self._set_desired(instance_uuid, "running")
        if await self._is_running(domain):
            await self._sync(instance_uuid, running=True)
            return
        await self._virt(domain.create)

    async def _reboot_instance(self, instance_uuid: str, reboot_type: str = "SOFT") -> None:
        """SOFT: the guest reboots itself (no lifecycle event); HARD: destroy then create."""
        domain = await self._existing(instance_uuid)
        await self._set_desired(instance_uuid, "running")
        if reboot_type == "HARD":
            if await self._is_running(domain):
                await self._virt(domain.destroy)
            await self._virt(domain.create)
            return
        await self._virt(domain.reboot, 0)
        await self.bus.call("conductor.task_done", {"instance_uuid": instance_uuid, "host": self.host})

    @handler
    async def stop_instance(self, instance_uuid: str) -> None:
        await self._settling(instance_uuid, self._stop_instance)

    @handler
    async def start_instance(self, instance_uuid: str) -> None:
        await self._settling(instance_uuid, self._start_instance)

    @handler
    async def change_power(self, instance_uuid: str, action: str) -> None:
        """pause (libvirt suspend), unpause (resume), suspend (managed save), resume (restore)."""
        await self._settling(instance_uuid, lambda uuid: self._change_power(uuid, action))

    async def _change_power(self, instance_uuid: str, action: str) -> None:
        domain = await self._existing(instance_uuid)
        state = (await self._virt(domain.state))[0]
        if action == "pause" and state != libvirt.VIR_DOMAIN_PAUSED:
            await self._virt(domain.suspend)
        elif action == "unpause" and state == libvirt.VIR_DOMAIN_PAUSED:
            await self._virt(domain.resume)
        elif action == "suspend" and state != libvirt.VIR_DOMAIN_SHUTOFF:
            await self._set_desired(instance_uuid, "shutoff")
            await self._virt(domain.managedSave, 0)
        elif action == "resume" and state == libvirt.VIR_DOMAIN_SHUTOFF:
            await self._set_desired(instance_uuid, "running")
            await self._virt(domain.create)
        else:  # already there (a cast delivered again): say so as libvirt would have
            event = {
                libvirt.VIR_DOMAIN_PAUSED: libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
                libvirt.VIR_DOMAIN_SHUTOFF: libvirt.VIR_DOMAIN_EVENT_STOPPED,
            }.get(state, libvirt.VIR_DOMAIN_EVENT_RESUMED)
            await self._tell_conductor(LifecycleEvent(instance_uuid, event, 0, time.time()))

    @handler
    async def reboot_instance(self, instance_uuid: str, reboot_type: str = "SOFT") -> None:
        await self._settling(instance_uuid, lambda uuid: self._reboot_instance(uuid, reboot_type))

    async def _settling(self, instance_uuid: str, power_change: Any) -> None:
        """Take the task (tell the conductor), run the power change; if it fails, tell the
        conductor the state the domain is really in, so the instance never stays in a task state."""
        try:
            async with self._working_on(instance_uuid):
                await self._take_task(instance_uuid)
                await power_change(instance_uuid)
        except Exception:
            domain = await self._domain(instance_uuid) if self.conn is not None else None
            await self._sync(instance_uuid, running=domain is not None and await self._is_running(domain))
            raise

    async def _sync(self, instance_uuid: str, *, running: bool) -> None:
        """Tell the conductor a power state libvirt will send no event for (it did not change)."""
        await self._call(
            "conductor.sync_power_state",
            {"instance_uuid": instance_uuid, "host": self.host, "running": running},
        )

    @handler
    async def terminate_instance(self, instance_uuid: str) -> None:
        """Destroy, release ports and volumes, undefine: the UNDEFINED event finishes the delete."""
        async with self._instance_lock(instance_uuid), self._working_on(instance_uuid):
            await self._take_task(instance_uuid)
            await self._terminate(instance_uuid)
        self._locks.pop(instance_uuid, None)

    async def _terminate(self, instance_uuid: str) -> None:
        self._request_ids[instance_uuid] = current_request_id() or ""
        domain = await self._domain(instance_uuid)
        xml = await self._definition(instance_uuid, domain)
        if domain is not None and await self._is_running(domain):
            await self._virt(domain.destroy)
        await self._call("net.deallocate_for_instance", {"instance_uuid": instance_uuid})
        await self._call("volume.detach_all", {"instance_uuid": instance_uuid})
        await self._release_guest(instance_uuid, xml)
        await self.store.execute("DELETE FROM domains WHERE uuid = ?", (instance_uuid,))
        if domain is not None:
            await self._virt(domain.undefine)
        else:
            await self.bus.call("conductor.domain_gone", {"instance_uuid": instance_uuid, "host": self.host})
        self._request_ids.pop(instance_uuid, None)

    # -- volumes ----------------------------------------------------------------------------

    @handler
    async def attach_volume(
        self, instance_uuid: str, volume_id: str, connection: dict[str, Any], device: str | None = None
    ) -> dict[str, str]:
        """Attach live where the driver can, and always to the persistent definition."""
        domain = await self._existing(instance_uuid)
        used = set(disk_targets(await self._virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)))
        target = (device or "").removeprefix("/dev/") or next_disk_target(used)
        if target in used:
            raise Conflict(f"device /dev/{target} is already in use on instance {instance_uuid}")
        disk = Disk(connection["path"], target, format=connection["format"], serial=volume_id)
        await self._change_device(domain, disk_xml(disk), attach=True)
        await self._remember_xml(instance_uuid, domain)
        return {"device": f"/dev/{target}"}

    @handler
    async def detach_volume(self, instance_uuid: str, volume_id: str, connection: dict[str, Any]) -> None:
        domain = await self._existing(instance_uuid)
        targets = disk_targets(await self._virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))
        target = next((dev for dev, path in targets.items() if path == connection["path"]), None)
        if target is None:
            raise NotFound(f"volume {volume_id} is not attached to instance {instance_uuid}")
        disk = Disk(connection["path"], target, format=connection["format"], serial=volume_id)
        await self._change_device(domain, disk_xml(disk), attach=False)
        await self._remember_xml(instance_uuid, domain)

    async def _change_device(self, domain: libvirt.virDomain, device_xml: str, *, attach: bool) -> None:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if await self._is_running(domain):
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        change = domain.attachDeviceFlags if attach else domain.detachDeviceFlags
        try:
            await self._virt(change, device_xml, flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            await self._redefine_with_device(domain, device_xml, attach=attach)

    async def _redefine_with_device(
        self, domain: libvirt.virDomain, device_xml: str, *, attach: bool
    ) -> None:
        """For drivers without device hot-plug (the test driver): change the persistent definition."""
        root = ET.fromstring(await self._virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = root.find("devices")
        assert devices is not None
        device = ET.fromstring(device_xml)
        if attach:
            devices.append(device)
        else:
            source = device.find("source")
            path = source.get("file") if source is not None else None
            for disk in devices.findall("disk"):
                disk_source = disk.find("source")
                if disk_source is not None and disk_source.get("file") == path:
                    devices.remove(disk)
        assert self.conn is not None
        await self._virt(self.conn.defineXML, ET.tostring(root, encoding="unicode"))

    async def _remember_xml(self, instance_uuid: str, domain: libvirt.virDomain) -> None:
        xml = await self._virt(domain.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        await self.store.execute("UPDATE domains SET xml = ? WHERE uuid = ?", (xml, instance_uuid))

    @handler
    async def get_console_output(self, instance_uuid: str, length: int | None = None) -> dict[str, str]:
        """The guest's serial console log; its last ``length`` lines when given (``os-getConsoleOutput``)."""
        await self._existing(instance_uuid)
        if not self.real_guests:
            raise Conflict(f"the {self.domain_type} driver of {self.host} keeps no console log")
        path = self.images.console_log(instance_uuid)
        data = await asyncio.to_thread(_tail, path, CONSOLE_MAX_BYTES)
        lines = data.decode(errors="replace").replace("\r\n", "\n").splitlines(keepends=True)
        if length is not None:
            lines = lines[-length:] if length > 0 else []
        return {"output": "".join(lines)}

    @handler
    async def get_power_state(self, instance_uuid: str) -> dict[str, bool]:
        """Whether the instance has a domain here, and whether it runs (asked by the conductor)."""
        domain = await self._domain(instance_uuid)
        return {
            "exists": domain is not None,
            "running": domain is not None and await self._is_running(domain),
        }

    @handler
    async def list_domains(self) -> list[dict[str, Any]]:
        """Every domain libvirt has on this host, with its state (``VIR_DOMAIN_*``) and project."""
        if self.conn is None:
            raise ConnectionError(f"node {self.host} has no libvirt connection")
        listed = []
        for domain in await self._virt(self.conn.listAllDomains, 0):
            uuid = domain.UUIDString()
            state = (await self._virt(domain.state))[0]
            listed.append(
                {"uuid": uuid, "name": domain.name(), "state": state, "project_id": self._projects.get(uuid)}
            )
        return listed

    # -- restart: libvirt and the records agree again ----------------------------------------

    async def _reconcile(self) -> None:
        """Make libvirt match the conductor's records of this host (a restarted node or libvirt)."""
        records = await self._records_when_conductor_answers()
        stored = {row["uuid"]: row for row in await self.store.fetchall("SELECT * FROM domains")}
        assert self.conn is not None
        for instance in records:
            uuid = instance["id"]
            domain = await self._domain(uuid)
            if instance["task_state"] == "deleting":
                await self.terminate_instance(uuid)
                continue
            if domain is None and uuid not in stored:
                if instance["vm_state"] == "building":  # the node died before defining it: build it now
                    self.spawn(self.build_and_run_instance(uuid), name=f"{self.address}-resume-{uuid}")
                continue
            if domain is None:
                domain = await self._virt(self.conn.defineXML, stored[uuid]["xml"])
            want_running = (
                instance["vm_state"] in ("active", "building", "paused")
                and instance["task_state"] != "powering-off"
            )
            if instance["task_state"] == "powering-on":
                want_running = True
            running = await self._is_running(domain)
            if want_running and not running:
                await self._virt(domain.create)
            elif not want_running and running:
                await self._virt(domain.destroy)
            elif instance["vm_state"] != "error":  # an ERROR instance keeps its fault, running or not
                await self._sync(uuid, running=running)
        await self._remove_orphans()
        log.info("node %s reconciled %d instances", self.host, len(records))
        self.spawn(self._sweep_orphans_forever(), name=f"{self.address}-orphans")

    async def _sweep_orphans_forever(self) -> None:
        while True:
            await asyncio.sleep(self.orphan_sweep_interval)
            try:
                await self._remove_orphans()
            except (AiostackError, libvirt.libvirtError, ConnectionError) as exc:
                log.info("node %s: orphan sweep postponed: %s", self.host, exc)

    async def _remove_orphans(self) -> None:
        """Remove the domains of instances not (or no longer) recorded on this host: deleted
        while the node was away, or rebuilt on another host. Ports, volumes and claims are
        not theirs to release here: the instance's new host, or the owners' sweeps, see to them.
        Only this node's domains (stored here, or built here since it started) are looked at, and
        only those there were before the conductor was asked: a build finishing meanwhile is
        not in its answer, and is no orphan."""
        stored = {row["uuid"] for row in await self.store.fetchall("SELECT uuid FROM domains")}
        assert self.conn is not None
        in_libvirt = {
            domain.UUIDString()
            for domain in await self._virt(self.conn.listAllDomains, 0)
            if domain.name().startswith("instance-")
        }
        candidates = stored | (in_libvirt & set(self._projects))  # several nodes may share a libvirtd
        records = await self.bus.call("conductor.list_host_instances", {"host": self.host}, timeout=10)
        for uuid in candidates - {instance["id"] for instance in records}:
            if uuid in self._working:
                continue
            async with self._instance_lock(uuid):
                log.warning(
                    "node %s: domain %s has no live instance record here; removing it", self.host, uuid
                )
                await self._remove_orphan(uuid)

    async def _remove_orphan(self, instance_uuid: str) -> None:
        domain = await self._domain(instance_uuid)
        xml = await self._definition(instance_uuid, domain)
        if domain is not None:
            if await self._is_running(domain):
                await self._virt(domain.destroy)
            await self._virt(domain.undefine)
        await self._release_guest(instance_uuid, xml)
        await self.store.execute("DELETE FROM domains WHERE uuid = ?", (instance_uuid,))

    async def _records_when_conductor_answers(self) -> list[dict[str, Any]]:
        while True:
            try:
                return await self.bus.call("conductor.list_host_instances", {"host": self.host}, timeout=10)
            except AiostackError as exc:
                log.info("node %s: waiting for the conductor to reconcile (%s)", self.host, exc)
                await asyncio.sleep(1)
