"""The node actor (nova-compute + its libvirt driver): the domains of one compute host.

Served on ``<prefix>.rpc.node.<host>.<method>``; its API, events and version history are
``api/node.py``. Step 29 of the overview happens here, after the node has asked for what it
needs (steps 14-28): the conductor for the build request, the image actor for the image, the
net actor for ports, the volume actor for disks.

The actor composes one object per job and serves the ``Node`` facet by handing each call
to the one that does it:

* ``Hypervisor`` (``node/hypervisor.py``): the libvirt connection, its reconnect, calls off the loop;
* ``Records`` (``node/records.py``): the node's store of domains and the work in its hands;
* ``EventForwarder`` (``node/events.py``): libvirt's lifecycle events -> event stream -> conductor;
* ``Builder`` (``node/build.py``): build and delete; ``Power`` (``node/power.py``); ``Resizer``
  (``node/resize.py``): a domain given another flavor, and back; ``LiveResizer``
  (``node/live_resources.py``): a running domain's vCPUs and RAM changed live; ``LiveMigrator``
  (``node/migrate.py``): a live migration's source; ``Shelver`` (``node/shelve.py``): a domain
  powered off to be shelved, removed when offloaded (an unshelve is the evacuate's build);
  ``Volumes`` (``node/volumes.py``); ``Interfaces`` (``node/interfaces.py``: NIC hot-plug);
  ``Consoles`` (``node/console.py``, serving ``NodeConsole``: the guests'
  interactive serial consoles, for the gateway); ``Reconciler`` (``node/reconcile.py``): at start,
  after a reconnect, and the orphan sweep;
* ``SecurityGroups`` (``node/security.py``): on a host with real guests, its security groups as
  nftables tables (``node/firewall.py``), kept in line with the net actor's notices;
* ``RouterAgent`` (``node/routers.py``): on a host with real guests, the routers the net actor
  gives it, each a network namespace with SNAT and floating IPs (Neutron's L3 agent), made again
  on the host's ``ROUTERS_CHANGED`` notices, when a guest's networks are plugged, and every 60 s;
* and itself: the heartbeat (capacity on ``api.scheduler.HEARTBEAT``, and ``task_progress``
  for the instances in its hands), the aging of the image cache (every ``image_cache_interval``,
  ``ImageCache.age`` with the images its stored domains use), the console log, the list of
  domains and a crash dump's NMI (``node/crash_dump.py``).

On a QEMU host (``qemu:///system``, ``qemu:///embed?root=...``) guests are real: disks are
qcow2 overlays on cached images (``node/images.py``), NICs join a libvirt network per
aiostack network whose DHCP hands each port's MAC its fixed IP (``node/networks.py``) and whose
bridge serves the metadata service at 169.254.169.254 (``node/metadata.py``), the
serial console goes to a log, and the accelerator is KVM only where it really runs a guest
(``node/virt_type.py``). With ``overlay_ip`` (hosts of a cluster) networks are VXLAN segments
across hosts instead, with DHCP served on each host for its own guests (``node/overlay.py``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Coroutine
from typing import Any

import libvirt
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from api.conductor import ConductorForNodes
from api.net import ROUTERS_CHANGED, Port
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
from api.scheduler import HEARTBEAT, Capacity
from api.volume import Connection, Reattached
from bus import Actor, AiostackError, Bus, Conflict
from node.build import Builder
from node.console import Consoles
from node.crash_dump import inject_nmi
from node.events import EventForwarder
from node.hypervisor import Hypervisor
from node.images import ImageCache
from node.interfaces import Interfaces
from node.live_resources import LiveResizer
from node.metadata import GuestFinder, MetadataService
from node.migrate import TARGET_TIMEOUT, LiveMigrator
from node.networks import GuestNetworks, Networking, bridge_name
from node.overlay import OverlayNetworks
from node.overlay import bridge_for as overlay_bridge
from node.peers import Peers
from node.power import Power
from node.reconcile import Reconciler
from node.records import Records
from node.resize import Resizer
from node.routers import RouterAgent
from node.security import SecurityGroups
from node.shelve import Shelver
from node.snapshots import Snapshots
from node.volumes import Volumes
from runtime.auth import keep_service_token
from runtime.config import Config

log = logging.getLogger(__name__)


class NodeActor(Actor, Node):
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
        image_cache_interval: float = 600.0,
        image_cache_max_age: float = 86400.0,
        overlay_ip: str | None = None,
        build_delay: float = 0.0,
        migration_bandwidth: float = 0.0,
        migration_address: str | None = None,
    ) -> None:
        """``build_delay``: seconds each build waits before it gathers its image, ports and
        volumes (a test driver's slow build, for work that outlives the user's token);
        ``migration_bandwidth``: MB/s at which a test-driver node copies a live-migrating guest's
        memory (0: at once); ``migration_address``: where real guests live-migrating here are
        sent (default: ``overlay_ip``; none: this host takes none)."""
        if not host or any(c in host for c in " .*>"):
            raise ValueError(f"invalid host name {host!r}")
        super().__init__(bus, address=Node.address_for(host=host))
        self.host = host
        self.disk_gb = disk_gb
        self.report_interval = report_interval
        self.requested_virt_type = virt_type
        self.reserved_host_memory_mb = reserved_host_memory_mb
        self.image_cache_interval = image_cache_interval
        self.image_cache_max_age = image_cache_max_age
        """Nova's ``remove_unused_original_minimum_age_seconds``: how long a cached image no
        domain here uses is kept after its last use."""
        self.state_dir = config.data_dir / "nodes" / host
        self.records = Records(self.state_dir / "node.sqlite")
        self.store = self.records.store  # what tools and tests read
        peers = Peers.on(bus, host)
        self.service_tokens = peers.service_tokens
        self.conductor = peers.conductor
        self.events = EventForwarder(bus, host, self.records, peers.conductor)
        self.hypervisor = Hypervisor(
            libvirt_uri,
            host=host,
            on_lifecycle=self.events.on_lifecycle,
            on_reconnect=self._reconnected,
            spawn=self._spawn,
        )
        self.images = ImageCache(peers.image, self.state_dir)
        self.metadata = MetadataService(GuestFinder(peers.net, peers.conductor))
        self.networks: Networking = (
            OverlayNetworks(peers.net, self.state_dir, overlay_ip, metadata=self.metadata)
            if overlay_ip
            else GuestNetworks(
                self.hypervisor.virt,
                peers.net,
                metadata=self.metadata,
                connection=lambda: self.hypervisor.connection,
            )
        )
        self.security = SecurityGroups(
            bus, host, net=peers.patient_net, records=self.records, spawn=self._spawn
        )
        self.routers = RouterAgent(
            peers.net.routers_for_host, overlay_bridge if overlay_ip else bridge_name, self.state_dir
        )
        self._router_notices: Subscription | None = None
        self.builder = Builder(
            host,
            peers=peers,
            hypervisor=self.hypervisor,
            records=self.records,
            images=self.images,
            networks=self.networks,
            security=self.security,
            state_dir=self.state_dir,
            networks_plugged=self.routers.notice,
            build_delay=build_delay,
        )
        self.power = Power(
            host,
            peers=peers,
            hypervisor=self.hypervisor,
            records=self.records,
            events=self.events,
            shutdown_timeout=shutdown_timeout,
        )
        self.volumes = Volumes(hypervisor=self.hypervisor, records=self.records)
        self.interfaces = Interfaces(
            hypervisor=self.hypervisor,
            records=self.records,
            builder=self.builder,
            networks=self.networks,
            security=self.security,
        )
        self.live_resizer = LiveResizer(host, peers=peers, hypervisor=self.hypervisor, records=self.records)
        self.live_migrator = LiveMigrator(
            host,
            peers=peers,
            hypervisor=self.hypervisor,
            records=self.records,
            bandwidth_mb=migration_bandwidth,
            builder=self.builder,
            address=migration_address or overlay_ip,
            targets=ConductorForNodes.client(bus, host=host, timeout=TARGET_TIMEOUT),
        )
        self.resizer = Resizer(
            host,
            peers=peers,
            hypervisor=self.hypervisor,
            records=self.records,
            images=self.images,
            copy_disks=self.live_migrator.copy_stopped,
        )
        self.shelver = Shelver(self.power, self.builder)
        self.consoles = Consoles(host, hypervisor=self.hypervisor, records=self.records)
        self.serve(self.consoles)
        self.snapshots = Snapshots(
            host, peers=peers, hypervisor=self.hypervisor, records=self.records, images=self.images
        )
        self.reconciler = Reconciler(
            bus,
            host,
            peers=peers,
            hypervisor=self.hypervisor,
            records=self.records,
            events=self.events,
            builder=self.builder,
            power=self.power,
            spawn=self._spawn,
            orphan_sweep_interval=orphan_sweep_interval,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._spawn(keep_service_token(self.bus, self.service_tokens.issue_service_token), "service-token")
        await self.records.open()
        await self.hypervisor.open(self.requested_virt_type)
        await self.events.snapshot(self.hypervisor)
        self._spawn(self.events.forward_forever(), "events")
        self._spawn(self._report_forever(), "report")
        await self.networks.restore()
        if self.hypervisor.real_guests:
            await self.security.start()
            subject = self.bus.subject(ROUTERS_CHANGED.subject(host=self.host))
            self._router_notices = await self.bus.subscribe(subject, self._routers_changed)
            self._spawn(self.routers.run(), "routers")
        self._spawn(self._reconcile(), "reconcile")
        self._spawn(self._age_images_forever(), "image-cache")
        log.info(
            "node %s on %s (domain type %s)", self.host, self.hypervisor.uri, self.hypervisor.domain_type
        )

    async def on_stop(self) -> None:
        await self.security.stop()
        if self._router_notices is not None:
            await self._router_notices.unsubscribe()
        self.consoles.close_all()
        await self.metadata.close()
        await self.hypervisor.close()
        await self.records.close()

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Background work of a part of the node (``spawn``: if it fails, the actor crashes)."""
        return self.spawn(work, name=f"{self.address}-{name}")

    async def _reconcile(self) -> None:
        """The reconciler, once the guests it may start again are filtered."""
        await self.security.until_applied()
        await self.reconciler.reconcile()

    async def _routers_changed(self, _msg: Msg) -> None:
        """The host's ``ROUTERS_CHANGED``: the routers are made again (what changed is asked anew)."""
        self.routers.notice()

    async def _reconnected(self) -> None:
        await self.reconciler.catch_up()

    # -- heartbeat ------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        """The heartbeat, and the instances this node is working on (their tasks make progress).
        A failed heartbeat (the scheduler starting with the node, or away) is sent again sooner,
        after 0.5 s doubling up to ``report_interval``, so the node is not unknown for a whole one."""
        failures = 0
        while True:
            try:
                if self.hypervisor.conn is not None:
                    await self.report_capacity()
                failures = 0
            except (AiostackError, libvirt.libvirtError, ConnectionError) as exc:
                failures += 1
                log.warning("node %s: capacity report failed: %s", self.host, exc)
            try:
                if self.records.working:
                    await self.conductor.task_progress(instance_uuids=sorted(self.records.working))
            except AiostackError as exc:
                log.warning("node %s: progress report failed: %s", self.host, exc)
            await asyncio.sleep(
                min(self.report_interval, 0.5 * 2 ** (failures - 1)) if failures else self.report_interval
            )

    # -- image cache --------------------------------------------------------------------------

    async def _age_images_forever(self) -> None:
        """Nova's image cache manager: every ``image_cache_interval``, the cached images none of
        this node's stored domains uses go once unused for ``image_cache_max_age`` seconds."""
        while True:
            await asyncio.sleep(self.image_cache_interval)
            try:
                in_use = await self.images.used_by(row["xml"] for row in await self.records.rows())
                await self.images.age(in_use, self.image_cache_max_age)
            except (OSError, ET.ParseError) as exc:
                log.warning("node %s: image cache aging postponed: %s", self.host, exc)

    async def report_capacity(self) -> None:
        """The heartbeat: capacity on ``<prefix>.hb.<host>``, a subject only this node may publish to.

        :raises ConnectionError: libvirt is away.
        """
        conn = self.hypervisor.connection
        _model, memory_mb, cpus, *_ = await self.hypervisor.virt(conn.getInfo)
        disk_gb = self.disk_gb
        if self.hypervisor.real_guests:
            memory_mb = max(0, memory_mb - self.reserved_host_memory_mb)
            disk_gb = min(disk_gb, shutil.disk_usage(self.state_dir).total // 1024**3)
        capacity: Capacity = {
            "vcpus": cpus,
            "memory_mb": memory_mb,
            "disk_gb": disk_gb,
            "hypervisor_type": (await self.hypervisor.virt(conn.getType)).lower(),
        }
        await HEARTBEAT.request(self.bus, capacity, host=self.host, timeout=10)

    # -- the Node facet: each call to the part that does it ---------------------------------

    async def build_and_run_instance(self, *, instance_uuid: str) -> None:
        await self.builder.build_and_run_instance(instance_uuid)

    async def terminate_instance(self, *, instance_uuid: str) -> None:
        await self.builder.terminate_instance(instance_uuid)

    async def rebuild_instance(self, *, instance_uuid: str) -> None:
        await self.builder.rebuild_instance(instance_uuid)

    async def evacuate_instance(self, *, instance_uuid: str) -> None:
        await self.builder.evacuate_instance(instance_uuid)

    async def finish_migration(self, *, instance_uuid: str) -> None:
        await self.builder.evacuate_instance(instance_uuid)

    async def live_migration(self, *, instance_uuid: str, destination: str) -> None:
        await self.live_migrator.live_migration(instance_uuid, destination)

    async def prepare_live_migration(
        self, *, instance_uuid: str, ports: list[Port], volumes: list[Reattached] | None = None
    ) -> LiveMigrationTarget:
        return await self.live_migrator.prepare(instance_uuid, ports, volumes or [])

    async def drop_moved_instance(self, *, instance_uuid: str) -> None:
        await self.reconciler.remove_if_orphan(instance_uuid)

    async def remove_reverted_copy(self, *, instance_uuid: str) -> None:
        await self.reconciler.remove_reverted_copy(instance_uuid)

    async def shelve_instance(self, *, instance_uuid: str) -> None:
        await self.shelver.shelve_instance(instance_uuid)

    async def shelve_offload_instance(self, *, instance_uuid: str) -> None:
        await self.shelver.shelve_offload_instance(instance_uuid)

    async def unshelve_instance(self, *, instance_uuid: str) -> None:
        await self.builder.evacuate_instance(instance_uuid)

    async def snapshot_instance(self, *, instance_uuid: str, image_id: str) -> None:
        await self.snapshots.snapshot_instance(instance_uuid, image_id)

    async def resize_instance(
        self, *, instance_uuid: str, flavor: DomainFlavor, destination: str | None = None
    ) -> None:
        await self.resizer.resize_instance(instance_uuid, flavor, destination)

    async def finish_resize(self, *, instance_uuid: str, power_on: bool) -> None:
        await self.resizer.finish_resize(instance_uuid, power_on)

    async def revert_resize(self, *, instance_uuid: str, flavor: DomainFlavor, power_on: bool) -> None:
        await self.resizer.revert_resize(instance_uuid, flavor, power_on)

    async def confirm_resize(self, *, instance_uuid: str) -> None:
        await self.resizer.confirm_resize(instance_uuid)

    async def set_resources(self, *, instance_uuid: str, vcpus: int, memory_mb: int) -> None:
        await self.live_resizer.set_resources(instance_uuid, vcpus, memory_mb)

    async def stop_instance(self, *, instance_uuid: str) -> None:
        await self.power.stop_instance(instance_uuid)

    async def start_instance(self, *, instance_uuid: str) -> None:
        await self.power.start_instance(instance_uuid)

    async def change_power(self, *, instance_uuid: str, action: PowerAction) -> None:
        await self.power.change_power(instance_uuid, action)

    async def reboot_instance(self, *, instance_uuid: str, reboot_type: RebootType = "SOFT") -> None:
        await self.power.reboot_instance(instance_uuid, reboot_type)

    async def get_power_state(self, *, instance_uuid: str) -> PowerState:
        return await self.power.get_power_state(instance_uuid)

    async def trigger_crash_dump(self, *, instance_uuid: str) -> None:
        await inject_nmi(self.hypervisor, instance_uuid)

    async def attach_volume(
        self,
        *,
        instance_uuid: str,
        volume_id: str,
        connection: Connection,
        device: str | None = None,
    ) -> AttachedVolume:
        return await self.volumes.attach_volume(instance_uuid, volume_id, connection, device)

    async def detach_volume(self, *, instance_uuid: str, volume_id: str, connection: Connection) -> None:
        await self.volumes.detach_volume(instance_uuid, volume_id, connection)

    async def attach_interface(self, *, instance_uuid: str, port: Port) -> None:
        await self.interfaces.attach_interface(instance_uuid, port)

    async def detach_interface(self, *, instance_uuid: str, mac_address: str) -> None:
        await self.interfaces.detach_interface(instance_uuid, mac_address)

    async def list_interfaces(self, *, instance_uuid: str) -> list[str]:
        return await self.interfaces.list_interfaces(instance_uuid)

    async def get_console_output(self, *, instance_uuid: str, length: int | None = None) -> ConsoleOutput:
        """:raises NotFound: no domain. :raises Conflict: the driver keeps no console log."""
        await self.hypervisor.existing(instance_uuid)
        self.records.note_request(instance_uuid)
        if not self.hypervisor.real_guests:
            raise Conflict(f"the {self.hypervisor.domain_type} driver of {self.host} keeps no console log")
        return {"output": await self.images.console_output(instance_uuid, length)}

    async def list_domains(self) -> list[DomainView]:
        listed: list[DomainView] = []
        for domain in await self.hypervisor.domains():
            uuid = domain.UUIDString()
            _, _, memory_kib, vcpus, _ = await self.hypervisor.virt(domain.info)
            project_id = self.records.projects.get(uuid)
            listed.append(
                {
                    "uuid": uuid,
                    "name": domain.name(),
                    "state": await self.hypervisor.state(domain),
                    "project_id": project_id,
                    "vcpus": vcpus,
                    "memory_mb": memory_kib // 1024,
                    "macs": [] if project_id is None else await self.interfaces.domain_macs(domain),
                }
            )
        return listed
