"""The compute node's API (nova-compute + its libvirt driver): the domains of one host.

Each node is served on its own address, ``node.<host>`` (``Node.client(bus, host="node-1")``).
The conductor casts it the node's part of an instance's tasks (build, stop, start, pause and
the like, reboot, delete) and records each before the cast, so a lost one is sent again: every
cast is idempotent. It calls it for volume attaches, the console log and the real power state
of a domain; ``aiostack audit`` and the tests list its domains. The gateway alone (its bus
user is the only one allowed ``NodeConsole``'s subjects) opens a guest's interactive serial
console and relays its bytes (``NodeConsole``).

Version history: 1 - initial; 2 - ``NodeConsole``; 3 - ``resize_instance``, ``finish_resize``,
``revert_resize``; 4 - ``evacuate_instance``; 5 - ``set_resources`` (a live change of vCPUs and
RAM), ``DomainFlavor``'s ``max_vcpus`` and ``max_memory_mb``, ``DomainView``'s size; 6 - ``attach_interface``,
``detach_interface``, ``list_interfaces`` (NIC hot-plug), ``DomainView.macs``; 7 - ``trigger_crash_dump``; 8 -
``finish_migration``, ``drop_moved_instance`` (cold migration), ``live_migration``; 9 - ``shelve_instance``,
``shelve_offload_instance``, ``unshelve_instance``; 10 - ``prepare_live_migration`` (a real guest's
live migration: the destination's part before the guest arrives), ``LiveMigrationTarget``; 11 -
``prepare_live_migration``'s ``volumes`` (a real guest with volumes migrates live: the
destination's own attachments), ``resize_instance``'s ``destination`` (a real guest's cold
migration copies its disks there); 12 - ``remove_reverted_copy`` (a cold migration's revert
removes the destination's guest before its source starts it again).

Events (kind ``domain``): ``domain.lifecycle`` (each libvirt lifecycle event of this host's
domains, as ``{event, event_id, detail, host, libvirt_ts}``) and ``domain.reconciled`` (a
change libvirt sent no event for while the node's connection was down). The node's heartbeat
is ``api.scheduler.HEARTBEAT``.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, TypedDict

from msgspec import Meta

from api.fields import Amount, HostName, Id, Name, PositiveAmount
from api.net import MacAddress, Port
from api.volume import Connection, Reattached
from bus.api import ServiceAPI, call, cast

RebootType = Literal["SOFT", "HARD"]
"""SOFT: the guest reboots itself; HARD: the domain is destroyed and created again."""
PowerAction = Literal["pause", "unpause", "suspend", "resume"]
"""pause and unpause (libvirt suspend and resume), suspend and resume (managed save and restore)."""
DeviceName = Annotated[str, Meta(max_length=64, pattern=r"^(/dev/)?[a-z0-9]*$")]
"""A guest disk device (``/dev/vdb`` or ``vdb``); empty: the next free one."""
ConsoleSession = Annotated[str, Meta(min_length=22, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
"""An open serial console, named by a random id only its opener knows."""
CONSOLE_CHUNK = 64 * 1024
ConsoleBytes = Annotated[bytes, Meta(max_length=CONSOLE_CHUNK)]
"""Bytes for the guest's serial port, at most ``CONSOLE_CHUNK`` a call."""
CONSOLE_IDLE = 60.0
"""Seconds a console nobody reads or writes stays open."""
ConsoleWait = Annotated[float, Meta(ge=0, le=20)]
"""How long a console read waits for the guest to say something, in seconds."""


class AttachedVolume(TypedDict):
    device: str
    """Where the guest sees the volume: ``/dev/vdb``."""


class ConsoleOutput(TypedDict):
    output: str


class LiveMigrationTarget(TypedDict):
    """Where a real guest's live migration sends it: the destination prepared for it."""

    xml: str
    """The domain definition with the destination's paths (libvirt's ``DEST_XML`` and ``PERSIST_XML``)."""
    libvirt_uri: str
    """The destination's libvirtd, which the source's opens itself (peer to peer)."""
    migrate_uri: str
    """Where QEMU sends the guest's memory and disks: ``tcp://<destination address>``."""


class OpenedConsole(TypedDict):
    session: str
    """The id that reads, writes and closes this console (``ConsoleSession``)."""


class ConsoleRead(TypedDict):
    data: bytes
    """What the guest wrote since the last read (at most ``CONSOLE_CHUNK``); empty: the wait ended first."""
    closed: bool
    """The console is gone (the guest stopped, another opener took it over, the session expired)."""


class PowerState(TypedDict):
    exists: bool
    """The instance has a domain on this host."""
    running: bool


class DomainFlavor(TypedDict):
    """The size a resize gives a domain."""

    name: Name
    vcpus: PositiveAmount
    memory_mb: PositiveAmount
    disk_gb: Amount
    """The root disk (0: the instance boots from a volume, or the flavor has none); a bigger one
    than the disk has grows it, a smaller one leaves it."""
    max_vcpus: NotRequired[PositiveAmount]
    """The vCPUs a live change may give it (the flavor's ``aiostack:max_vcpus``); none: ``vcpus``."""
    max_memory_mb: NotRequired[PositiveAmount]
    """The RAM a live change may give it (the flavor's ``aiostack:max_ram_mb``); none: ``memory_mb``."""


class DomainView(TypedDict):
    """A domain libvirt has on the host (several nodes may share one libvirtd: not all are this node's)."""

    uuid: str
    name: str
    state: int
    """libvirt's ``VIR_DOMAIN_*`` state: 1 running, 3 paused, 5 shut off."""
    project_id: str | None
    """None: not one of this node's domains."""
    vcpus: NotRequired[int]
    """The vCPUs it has now (a running guest's online ones; else its definition's)."""
    memory_mb: NotRequired[int]
    """The memory it has now (a running guest's balloon; else its definition's), MiB."""
    macs: list[str]
    """The MAC addresses of its NICs (its definition); none for a domain not this node's."""


class Node(ServiceAPI, address="node.{host}"):
    """One compute host: what the conductor casts and calls it, and what the audit reads."""

    @cast
    async def build_and_run_instance(self, *, instance_uuid: Id) -> None:
        """Steps 14-29 of a boot: ask the conductor for the build request, gather the image, ports
        and volumes, define and start the domain; libvirt's STARTED event makes it ACTIVE.

        Delivered again, it never makes a second domain (the instance uuid is the domain's). A
        build that fails gives back what it took and is reported with ``build_failed``.
        """
        ...

    @cast
    async def stop_instance(self, *, instance_uuid: Id) -> None:
        """ACPI shutdown; the domain is destroyed if the guest has not stopped within the node's
        shutdown timeout. The STOPPED event makes the instance SHUTOFF."""
        ...

    @cast
    async def start_instance(self, *, instance_uuid: Id) -> None:
        """Start a stopped domain (a running one is reported running)."""
        ...

    @cast
    async def change_power(self, *, instance_uuid: Id, action: PowerAction) -> None:
        """pause, unpause, suspend (managed save) or resume a domain; one already there is
        reported as libvirt would have reported the change."""
        ...

    @cast
    async def reboot_instance(self, *, instance_uuid: Id, reboot_type: RebootType = "SOFT") -> None:
        """SOFT: the guest reboots itself and the node reports ``task_done`` (libvirt sends no
        event); HARD: destroy then create (STOPPED then STARTED)."""
        ...

    @cast
    async def rebuild_instance(self, *, instance_uuid: Id) -> None:
        """Ask the conductor for the instance's build request (its new image), destroy the domain,
        make its disk (and config drive) again from the image and define it again; start it, or,
        for a stopped instance, report ``task_done``. Ports and addresses stay."""
        ...

    @cast
    async def snapshot_instance(self, *, instance_uuid: Id, image_id: Id) -> None:
        """Upload a copy of the instance's disk (flattened: its image's bytes and what the guest
        wrote) as the queued image ``image_id``, then report ``task_done``; a failed upload
        discards the image."""
        ...

    @cast
    async def resize_instance(
        self, *, instance_uuid: Id, flavor: DomainFlavor, destination: HostName | None = None
    ) -> None:
        """A resize's first step on the node: power the domain off, grow its disk if the flavor's
        is bigger (keeping the old disk until the resize is confirmed or reverted), define it
        again with the flavor's vCPUs and RAM, then report ``task_done``. With ``destination``
        (a cold migration) a real guest's local disks are then copied there (its node prepared
        first, as for a live migration: ``ConductorForNodes.live_migration_target``): the guest
        started paused here, never run, migrated by libvirt (not live, the local disks copied),
        stopped there; the domain stays here, shut off, until the migration is confirmed
        (reverted: it starts here again as it left)."""
        ...

    @cast
    async def set_resources(
        self, *, instance_uuid: Id, vcpus: PositiveAmount, memory_mb: PositiveAmount
    ) -> None:
        """A live change of vCPUs and RAM: once the conductor has the task (``task_progress``
        answers it), give the domain's definition and, if it runs, the running guest ``vcpus``
        (hot-plugged) and ``memory_mb`` (its balloon), then report ``task_done``. A task the
        conductor no longer has is left undone."""
        ...

    @cast
    async def evacuate_instance(self, *, instance_uuid: Id) -> None:
        """An evacuate's destination: build the instance's domain here again (its disk from its
        image, or its boot volume), with its ports (their binding moved here) and the volumes
        attached to it (their attachments made again for this host); start it unless it was
        stopped, then report its power state (``sync_power_state``). A failure gives back what
        this node made (its ports and volumes stay the instance's) and reports ``build_failed``."""
        ...

    @cast
    async def finish_migration(self, *, instance_uuid: Id) -> None:
        """A cold migration's destination (or, reverting, its source): define the instance's
        domain here from its build request, as ``evacuate_instance`` does (its ports' binding and
        its volumes' attachments moved here), start it if the instance ran, then report its power
        state (``sync_power_state``); a failure reports ``build_failed``."""
        ...

    @cast
    async def live_migration(self, *, instance_uuid: Id, destination: HostName) -> None:
        """A live migration's source: copy the running guest to ``destination`` (on the test
        driver, its memory at the node's ``migration_bandwidth``), reporting its progress
        (``migration_progress``: it stops when told to), then ``task_done``; the domain keeps
        running here until the instance runs on the destination."""
        ...

    @call
    async def prepare_live_migration(
        self, *, instance_uuid: Id, ports: list[Port], volumes: list[Reattached] | None = None
    ) -> LiveMigrationTarget:
        """A real guest's live migration, on its destination before the guest arrives (Nova's
        ``pre_live_migration``): its disk (an overlay on the same image, which the migration fills),
        config drive and boot files made here, ``ports`` plugged in here (their networks' segments
        and DHCP entries, their security groups' chains ready for their taps; the ports stay bound
        to the source until the switch), ``volumes`` as this host reaches them (its arriving
        attachments: ``VolumeAttachments.attach_arriving``), the definition stored. A migration
        that does not happen leaves them to ``drop_moved_instance``.

        :raises Conflict: this host cannot take a live-migrating guest (no libvirtd of its own
            to receive it, or no address for the guest's stream).
        :raises NotFound: the instance is not arriving here.
        """
        ...

    @cast
    async def drop_moved_instance(self, *, instance_uuid: Id) -> None:
        """The instance moved to another host (a cold or live migration finished or was undone, or
        it was deleted mid-migration): remove its domain and files here if it is no longer recorded
        on this host (the orphan sweep, now)."""
        ...

    @call(idempotent=True)
    async def remove_reverted_copy(self, *, instance_uuid: Id) -> None:
        """A cold migration's revert, on its destination before the source starts the guest again:
        destroy and undefine the instance's domain here and remove its files and DHCP entries (its
        ports and volumes are the source's to take back). Nothing here: nothing to do."""
        ...

    @cast
    async def shelve_instance(self, *, instance_uuid: Id) -> None:
        """A shelve's first step: power the domain off (an ACPI shutdown, ``destroy`` after the
        shutdown timeout; a suspended guest's saved memory dropped), then report ``task_done``.
        Its disk is uploaded next by ``snapshot_instance``."""
        ...

    @cast
    async def shelve_offload_instance(self, *, instance_uuid: Id) -> None:
        """Offload a shelved instance: destroy and undefine its domain and remove its files and
        DHCP entries here (its ports and volumes stay the instance's), then report ``task_done``."""
        ...

    @cast
    async def unshelve_instance(self, *, instance_uuid: Id) -> None:
        """Build an offloaded instance here from its shelved image (or its boot volume), with its
        ports and volumes, as ``evacuate_instance`` builds one: start it and report its power
        state; a failure gives back what this node made and reports ``build_failed``."""
        ...

    @cast
    async def finish_resize(self, *, instance_uuid: Id, power_on: bool) -> None:
        """A resize's last step: start the resized domain if the instance ran (``power_on``), then
        report its power state (``sync_power_state``)."""
        ...

    @cast
    async def revert_resize(self, *, instance_uuid: Id, flavor: DomainFlavor, power_on: bool) -> None:
        """Give the domain its old ``flavor`` back (and its old disk), starting it if ``power_on``;
        then report the domain's power state (``sync_power_state``)."""
        ...

    @cast
    async def confirm_resize(self, *, instance_uuid: Id) -> None:
        """The resize is kept: drop what was kept to revert it (the old disk)."""
        ...

    @cast
    async def terminate_instance(self, *, instance_uuid: Id) -> None:
        """Destroy the domain, release its ports, volumes and files, undefine it: the UNDEFINED
        event (or ``domain_gone`` when there was no domain) finishes the delete."""
        ...

    @call
    async def attach_volume(
        self,
        *,
        instance_uuid: Id,
        volume_id: Id,
        connection: Connection,
        device: DeviceName | None = None,
    ) -> AttachedVolume:
        """Attach the volume live where the driver can, and always to the persistent definition.
        ``connection`` is what the volume service's ``reserve`` answered.

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the device is already in use on the instance.
        """
        ...

    @call
    async def detach_volume(self, *, instance_uuid: Id, volume_id: Id, connection: Connection) -> None:
        """Detach the volume live where the driver can, and from the persistent definition.

        :raises NotFound: the instance has no domain here, or the volume is not attached to it.
        """
        ...

    @call(timeout=90)
    async def attach_interface(self, *, instance_uuid: Id, port: Port) -> None:
        """Plug a port bound to the instance on this host into its domain (live where it runs, and
        in its definition), with a real guest's bridge, DHCP entry and security groups as a build
        gives them; nothing if the domain has the port's MAC already.

        :raises NotFound: the instance has no domain here.
        """
        ...

    @call(idempotent=True, timeout=90)
    async def detach_interface(self, *, instance_uuid: Id, mac_address: MacAddress) -> None:
        """Take the NIC with this MAC out of the domain (waiting for a running guest to release
        it), and its DHCP entry and filter; nothing if the domain has no such NIC.

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the guest did not release the NIC in time (it is gone from the definition).
        """
        ...

    @call(idempotent=True)
    async def list_interfaces(self, *, instance_uuid: Id) -> list[str]:
        """The MAC addresses of the domain's NICs (its definition).

        :raises NotFound: the instance has no domain here.
        """
        ...

    @call(idempotent=True)
    async def get_console_output(self, *, instance_uuid: Id, length: Amount | None = None) -> ConsoleOutput:
        """The guest's serial console log (its last MiB); its last ``length`` lines when given.

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the host's driver keeps no console log (libvirt's test driver).
        """
        ...

    @call
    async def trigger_crash_dump(self, *, instance_uuid: Id) -> None:
        """Inject an NMI into the running guest (libvirt's ``injectNMI``).

        :raises NotFound: the instance has no domain here.
        :raises Conflict: the domain is not running.
        :raises InvalidRequest: the driver cannot inject an NMI ("Triggering crash dump is not supported").
        """
        ...

    @call(idempotent=True)
    async def get_power_state(self, *, instance_uuid: Id) -> PowerState:
        """Whether the instance has a domain here, and whether it runs."""
        ...

    @call(idempotent=True)
    async def list_domains(self) -> list[DomainView]:
        """Every domain libvirt has on this host, with its state and, for this node's, its project."""
        ...


class NodeConsole(ServiceAPI, address="node.{host}"):
    """A guest's interactive serial console (libvirt's ``virDomainOpenConsole``), relayed by the gateway.

    Only the gateway's bus user may send these. A console is opened for an instance of this node
    the caller's project may see, and lives until it is closed, the guest's console ends, another
    opener takes it over, or nobody has read or written it for ``CONSOLE_IDLE`` seconds.
    """

    @call(idempotent=True)
    async def check_console(self, *, instance_uuid: Id) -> None:
        """Whether ``open_console`` would open the instance's console now (it opens nothing).

        :raises NotFound: the instance is not one of this node's, or not the caller's project's.
        :raises Conflict: the guest is not running, or the host's driver has no serial console.
        """
        ...

    @call
    async def open_console(self, *, instance_uuid: Id) -> OpenedConsole:
        """Open the running guest's serial console (taking it over from a previous opener).

        :raises NotFound: the instance is not one of this node's, or not the caller's project's.
        :raises Conflict: the guest is not running, the host's driver has no serial console
            (libvirt's test driver), or the node has as many consoles open as it keeps.
        """
        ...

    @call(timeout=30.0)
    async def read_console(self, *, session: ConsoleSession, wait: ConsoleWait = 10.0) -> ConsoleRead:
        """What the guest wrote since the last read, waiting up to ``wait`` seconds for something.

        :raises NotFound: no such console (closed, expired, or never opened).
        """
        ...

    @call
    async def write_console(self, *, session: ConsoleSession, data: ConsoleBytes) -> None:
        """Send ``data`` to the guest's serial port.

        :raises NotFound: no such console.
        :raises Conflict: the console is closed.
        """
        ...

    @call(idempotent=True)
    async def close_console(self, *, session: ConsoleSession) -> None:
        """Close the console (nothing if it is gone)."""
        ...
