"""The conductor's API (nova-conductor, and nova-api's database writes): instances, flavors, key pairs.

The conductor is the only writer of compute state. ``create_instance`` records an instance
(BUILD: ``building``/``scheduling``) and answers at once; the conductor then asks the
scheduler for a host and casts the node its build. The node asks back for what it needs
(``get_build_request``) and reports libvirt's lifecycle events (``domain_event``): ACTIVE,
SHUTOFF, DELETED come from those events, never from assuming that a libvirt call worked.
Which state an action may start from and where it leads: ``actors/conductor/states.py``;
the states themselves: ``runtime.states``.

Facets, by caller (each made of the parts the conductor's servants implement, by job):

* ``Compute``: the user-facing compute API, as the gateway reaches it: ``Servers`` (reads),
  ``ServerCreation``, ``ServerActions`` (power changes, reboot, delete), ``ServerResizes``,
  ``ServerEvacuations``, ``ServerMigrations`` (migration records, cold and live migration),
  ``ServerShelves``, ``ServerDetails``
  (name, access addresses, metadata, lock), ``ServerVolumes``, ``ServerInterfaces``,
  ``ServerHistory`` (the actions
  of an instance and their steps), ``ComputeQuotas``, ``ComputeUsage`` (usage over a period),
  ``Flavors`` and ``Keypairs``;
* ``ConductorForNodes``: what compute nodes call, each as its own host
  (``conductor.host.<host>``): ``NodeBuilds`` (the build request, its addresses, its
  failure), ``NodeReports`` (libvirt's word on a domain) and ``NodeTasks`` (progress of the
  tasks in hand, the instances recorded on the host);
* ``ConductorForOwners``: what the owners of per-instance resources (image, net, scheduler,
  volume) ask: which instances are gone (orphan sweeps), where one is and whose (``placement``,
  against which they check a node's calls);
* ``ConductorOperator``: ``aiostack audit``'s and the operator's reads: every live instance
  with its progress, and ``ServerHistory``.

Version history: 1 - initial; 2 - ``create_instance`` takes ``block_devices`` (volumes
attached at boot); 3 - the node-facing facets are served per calling host
(``conductor.host.<host>``: the host comes from the subject, no longer from the body, and a
node reaches only the instances recorded on it); ``ConductorForOwners.placement``; 4 -
``ServerDetails`` (rename, access addresses, metadata, lock), ``ServerHistory`` (the actions, now
also in ``Compute``), ``ComputeQuotas``, ``Servers.list_compute_hosts``, ``Instance`` shows
``access_ip_v4``/``access_ip_v6`` and ``locked``/``locked_reason``, ``create_instance`` takes the
access addresses, ``list_instances`` filters by image, flavor, address and change time and takes
``name`` as a regular expression, ``create_keypair`` takes ``key_type`` (x509 certificates),
``create_instance`` takes ``admin_pass``, ``ServerActions.rebuild_instance`` and
``create_image``, and ``BuildRequest``
carries the password and the key pair's public key (a node writes both to the config drive); 5 -
``create_instance`` boots from a volume (a ``BlockDevice`` with ``boot_index`` 0, ``image_ref``
empty) and deletes the volumes marked ``delete_on_termination`` with the instance;
``Placement.image_ref`` is then the image the boot volume was made from; 6 -
``NodeBuilds.get_instance_metadata`` (what a node's metadata service tells a guest of itself); 7 -
``ComputeServices`` (the hosts' state and usage, enabling and disabling one: admins only); 8 -
``ServerResizes`` (resize, confirm, revert: the RESIZED vm_state, VERIFY_RESIZE); 9 -
``ComputeUsage`` (what each project's instances used over a period: Nova's simple tenant usage); 10 -
``ServerEvacuations`` (an instance of a down host built again on another: admins only),
``NodeBuilds.get_build_request`` answers an evacuate's destination too, and ``build_failed`` ends
an evacuate in ERROR; 11 - ``FlavorExtraSpecs`` (Nova's flavor extra specs), ``Flavor.max_vcpus``
and ``max_ram`` (its ``aiostack:max_vcpus`` and ``aiostack:max_ram_mb``), and
``ServerLiveResources`` (a running instance's vCPUs and RAM changed live, within those maxima),
``NodeReports.task_refused``; ``AuditedInstance`` has the size its record says (``vcpus``,
``memory_mb``); 12 - ``ServerInterfaces`` (NIC hot-plug: Nova's os-interface); 13 -
``ServerCrashDumps`` (an NMI injected into the guest, Nova 2.17), an instance's ``description``
(``create_instance``, ``update_instance``, ``rebuild_instance``; Nova 2.19), ``ServerHistory`` reads
a deleted instance's actions when asked (Nova 2.21); 14 - ``ServerMigrations`` (migration records;
cold and live migration), ``AuditedInstance.other_host``, ``get_build_request`` answers a cold or
live migration's destination (and its source, reverting or rolling back),
``NodeTasks.migration_progress``; 15 - ``ServerShelves`` (shelve, shelve offload, unshelve: the
SHELVED and SHELVED_OFFLOADED vm_states), ``NodeBuilds.get_build_request`` answers an unshelve's
host too (the shelved image as ``image_ref``); 16 - ``NodeTasks.live_migration_target`` (a real
guest's live migration: its destination prepared), ``Placement.arriving`` (the destination of a
live migration that is copying the instance: it may read what the instance uses), and
``get_build_request`` answers that destination too (preparing);
17 - ``ConductorForOwners.deleted_since`` (the
instances deleted since a time: the owners' periodic orphan sweeps read the deletions alone),
``NodeTasks.recorded_here`` (which of its domains' instances are recorded on the calling host:
a node's orphan sweep sends and gets ids, not every instance of the host). 18 -
``recorded_here`` also answers the instances a migration in progress has the calling host as
its other end of (a cold migration's source keeps its domain until confirmed or reverted);
``live_migration_target`` answers a real guest's cold migration's source too (the copy of its
disks), ``Placement.arriving`` and ``get_build_request`` that migration's destination meanwhile.
19 - ``Flavor.hypervisor_type`` (its ``capabilities:hypervisor_type`` extra spec: ``lxc`` boots containers).

Events (kind ``instance``, on ``evt.instance.<project>.<id>``, with the instance as ``Instance``
shows it): ``instance.building`` (recorded), ``instance.spawning`` (a host was chosen: the
build goes to its node), ``instance.<task_state>`` when an action starts
(``instance.powering-off``, ``instance.deleting``, ...), ``instance.<status>`` when the state
changes (``instance.active``, ``instance.shutoff``, ``instance.error``, ...; with ``cause``
when libvirt's word changed it), ``instance.interface_attached`` / ``instance.interface_detached``
(a NIC hot-plugged or taken out: the instance with its new ``addresses``), ``instance.deleted`` last.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from msgspec import Meta

from api.fields import HostName, Id, Name, PositiveAmount
from api.net import IpAddress, Port, RequestedNetwork
from api.node import DeviceName, LiveMigrationTarget, PowerAction, RebootType
from api.scheduler import Reason as DisabledReason
from bus.api import ServiceAPI, call
from runtime.states import PowerState, TaskState, VmState

Status = Literal[
    "BUILD",
    "ACTIVE",
    "SHUTOFF",
    "PAUSED",
    "SUSPENDED",
    "ERROR",
    "DELETED",
    "REBOOT",
    "HARD_REBOOT",
    "REBUILD",
    "RESIZE",
    "VERIFY_RESIZE",
    "REVERT_RESIZE",
    "MIGRATING",
    "SHELVED",
    "SHELVED_OFFLOADED",
    "UNKNOWN",
]
"""An instance's status as Nova's API shows it (made of its vm_state and task_state)."""
HostStatus = Literal["UP", "DOWN", "UNKNOWN", ""]
"""Nova's ``host_status``: its host's liveness as the scheduler last said (UNKNOWN: no word
yet; empty: no host)."""

ServerName = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"\S")]
"""An instance's name: 1 to 255 characters, not all blanks."""
AccessAddress = Annotated[str, Meta(max_length=64)]
"""An IP address of the version the member names, or empty for none."""
ImageName = Annotated[str, Meta(min_length=1, max_length=255)]
SecurityGroupRef = Annotated[str, Meta(min_length=1, max_length=255)]
"""A security group's name or id."""
AdminPass = Annotated[str, Meta(min_length=1, max_length=255)]
"""The password the guest's administrator account gets (Nova's ``adminPass``)."""
TargetHost = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9-._]*$")]
"""A compute host an operator names (Nova's ``hostname`` parameter type)."""
KeypairName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9 _.@-]{1,255}$")]
"""A key pair's name: 1 to 255 letters, digits, spaces, ``_``, ``.``, ``@`` or ``-``."""
PublicKey = Annotated[str, Meta(max_length=16384)]
"""An OpenSSH public key line, or a PEM certificate (whether it is one, the handler checks)."""
KeypairType = Literal["ssh", "x509"]
"""An SSH key pair, or (Nova 2.2) an x509 certificate for WinRM."""
Networks = Literal["auto", "none"] | list[RequestedNetwork]
"""The networks of a boot: ``auto`` (the project's, or the shared default), ``none``, or a
list of networks (``uuid``, ``fixed_ip``) and ports (``port``)."""
PageLimit = Annotated[int, Meta(ge=0)]
"""The most instances a page holds (past 1000, Nova's ``osapi_max_limit``, 1000)."""
ConsoleLength = Annotated[int, Meta(ge=-1)]
"""How many lines of the console log, from its end; -1: all of it."""
MetadataKey = Annotated[str, Meta(min_length=1, max_length=255)]
MetadataValue = Annotated[str, Meta(max_length=255)]
QuotaResource = Literal["instances", "cores", "ram", "metadata_items", "key_pairs"]
"""What compute quotas limit: a project's live instances, their vCPUs and RAM (MB), the metadata
items of one instance, the key pairs of one user."""
DEFAULT_QUOTAS: dict[str, int] = {
    "instances": -1,
    "cores": -1,
    "ram": -1,
    "metadata_items": 128,
    "key_pairs": 100,
}
"""The limits of a project with none of its own. Instances, cores and RAM are open (Nova's defaults
are 10, 20 and 51200) until an admin sets a project's: the hosts' capacity bounds them meanwhile,
and a one-machine cloud's benchmarks boot a thousand at once. Metadata items and key pairs are
Nova's."""
QuotaLimit = Annotated[int, Meta(ge=-1, le=2**31 - 1)]
"""A limit; -1: unlimited."""
LockReason = Annotated[str, Meta(max_length=255)]
Description = Annotated[str, Meta(max_length=255)]
"""What the user says an instance is for (Nova's server ``description``, 2.19)."""


# -- reply types ----------------------------------------------------------------------------


class Flavor(TypedDict):
    """A flavor: an instance's size (RAM in MB, disks in GB)."""

    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    ephemeral: int
    swap: int
    is_public: int
    """1 or 0."""
    max_vcpus: NotRequired[int]
    """The vCPUs a live change may give its instances (extra spec ``aiostack:max_vcpus``)."""
    max_ram: NotRequired[int]
    """The RAM (MB) a live change may give its instances (extra spec ``aiostack:max_ram_mb``)."""
    hypervisor_type: NotRequired[str]
    """The kind of host its instances run on (extra spec ``capabilities:hypervisor_type``, as Nova's
    ComputeCapabilitiesFilter reads it): ``lxc`` for containers; none: a virtual machine."""


class Fault(TypedDict):
    """Why an instance is in ERROR (or why its build is being rescheduled)."""

    message: str
    code: NotRequired[int]
    created: NotRequired[str]


class Instance(TypedDict):
    """An instance as every answer and event shows it."""

    id: str
    name: str
    description: str | None
    status: Status
    vm_state: VmState
    task_state: TaskState | None
    power_state: PowerState
    project_id: str
    user_id: str
    host: str | None
    flavor: Flavor
    """The flavor as it was when the instance was created."""
    image_ref: str
    metadata: dict[str, str]
    key_name: str | None
    access_ip_v4: str
    """The address the user says reaches the instance (Nova's ``accessIPv4``; empty: none)."""
    access_ip_v6: str
    locked: bool
    locked_reason: str | None
    addresses: dict[str, list[dict[str, Any]]]
    """By network name, each address as the node saw its port (``addr``, ``version``, MAC...)."""
    fault: Fault | None
    created_at: str
    updated_at: str
    launched_at: str | None
    terminated_at: str | None


class Server(Instance):
    """An instance as ``get_instance`` and ``list_instances`` show it: with its host's liveness."""

    host_status: HostStatus


class Cause(TypedDict):
    """What changed an instance's state: a libvirt lifecycle event on a host, or what else."""

    domain_event: str | None
    """libvirt's lifecycle event (``STARTED``, ``STOPPED``, ...), None when none."""
    detail: int | str | None
    """The event's detail number, or words (``power state sync``, ``no domain``, a reason)."""
    host: str | None


class InstanceChange(Instance):
    """An instance after a change a node reported, with its cause."""

    cause: Cause


class Quotas(TypedDict):
    """A project's compute limits (-1: unlimited), by resource."""

    instances: int
    cores: int
    ram: int
    metadata_items: int
    key_pairs: int


class QuotaUsage(TypedDict):
    limit: int
    in_use: int
    reserved: int
    """Always 0: a create counts in one transaction, nothing is held in between."""


class ComputeHost(TypedDict):
    host: str
    alive: bool
    last_seen: str | None
    """When its node last said it was alive (ISO 8601), None if never."""


class ComputeService(TypedDict):
    """A compute host as an operator sees it (Nova's os-services and os-hypervisors): whether it
    is up and enabled, its totals and what its instances use."""

    host: str
    hypervisor_type: str
    enabled: bool
    disabled_reason: str | None
    alive: bool
    last_seen: str | None
    instances: int
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    disk_gb: int
    disk_gb_used: int


class ProjectUsage(TypedDict):
    """What a project's live instances use (Nova's limits ``total*Used``)."""

    instances: int
    cores: int
    ram: int


class ServerUsage(TypedDict):
    """What one instance used of a period (Nova's ``server_usages`` item)."""

    instance_id: str
    name: str
    tenant_id: str
    flavor: str
    """The flavor's name."""
    vcpus: int
    memory_mb: int
    local_gb: int
    """Root and ephemeral disk."""
    hours: float
    """How long it lived within the period."""
    started_at: str
    """When it first ran (``launched_at``)."""
    ended_at: str | None
    """When it was deleted (``terminated_at``), None while it lives."""
    state: str
    """Its vm_state, ``terminated`` once deleted."""
    uptime: int
    """Seconds from its start to its end (or to now)."""


class TenantUsage(TypedDict):
    """What one project's instances used of a period: the sums of ``hours`` and of hours times
    each instance's vCPUs, RAM and disk (Nova's tenant usage)."""

    tenant_id: str
    total_hours: float
    total_vcpus_usage: float
    total_memory_mb_usage: float
    total_local_gb_usage: float
    server_usages: list[ServerUsage]
    """Oldest first."""


class InstanceAction(TypedDict):
    """One action on an instance (Nova's instance action): who started it, and how it ended."""

    id: int
    instance_uuid: str
    action: str
    request_id: str | None
    user_id: str | None
    project_id: str | None
    start_time: str
    finish_time: str | None
    result: str | None
    """``Success``, ``Error``, or None while the action runs."""
    message: str | None


class InstanceActionEvent(TypedDict):
    """One step of an action (Nova's instance action event): ``schedule``, ``<node method>:sent``,
    ``node_accepted``, ``reschedule``, ``stalled``, ``reserve``/``attached``/``unreserve``..."""

    action_id: int
    """The ``id`` of its ``InstanceAction``."""
    action: str
    event: str
    host: str | None
    time: str
    result: str
    details: str | None


class VolumeAttachment(TypedDict):
    """A volume attached to an instance, with Nova's field names."""

    id: str
    volumeId: str
    serverId: str
    device: str | None


class InterfaceFixedIp(TypedDict):
    subnet_id: str
    ip_address: str


class InterfaceAttachment(TypedDict):
    """A port of an instance, as Nova's os-interface shows it."""

    port_id: str
    net_id: str
    mac_addr: str
    port_state: str
    fixed_ips: list[InterfaceFixedIp]


class ConsoleOutput(TypedDict):
    output: str


ImageRef = Annotated[str, Meta(max_length=255)]
"""An image id, or "" for an instance booted from a volume."""


class BlockDevice(TypedDict):
    """An existing volume to attach at boot, and the device the guest should see it as."""

    volume_id: Id
    device: NotRequired[DeviceName | None]
    boot_index: NotRequired[Literal[0] | None]
    """0: the instance boots from it (its root disk, ``vda``); else attached besides."""
    delete_on_termination: NotRequired[bool]
    """Deleted when the instance is (else left available)."""
    image_id: NotRequired[str | None]
    """The image the volume was made from (``volume_image_metadata``), as the conductor recorded it."""


def boot_volume(block_devices: list[BlockDevice]) -> BlockDevice | None:
    """The volume an instance boots from (``boot_index`` 0), if it boots from one."""
    return next((device for device in block_devices if device.get("boot_index") == 0), None)


def addresses_of(ports: list[Port], network_names: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Nova's ``addresses`` of an instance with these ports: network name -> fixed IPs with their MAC
    (``network_names``: network id -> name, for those that have one)."""
    addresses: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        for fixed in port["fixed_ips"]:
            addresses.setdefault(network_names.get(port["network_id"]) or port["network_id"], []).append(
                {
                    "addr": fixed["ip_address"],
                    "version": 4,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
    return addresses


class BuildRequest(TypedDict):
    """What a node needs to build an instance: the instance, its networks, volumes and user data,
    and what its config drive tells the guest besides."""

    instance: Instance
    requested_networks: Networks
    block_devices: list[BlockDevice]
    user_data: str | None
    """Base64, as the API took it."""
    admin_pass: NotRequired[str | None]
    """The administrator password asked for (kept only until the build ends)."""
    public_keys: NotRequired[dict[str, str]]
    """The key pair's public key by its name (none without ``key_name``)."""
    security_groups: NotRequired[list[str] | None]
    """The ids of the security groups the ports made for it join (None: its project's default)."""
    power_on: NotRequired[bool]
    """A cold migration's host: whether the domain defined there is started (it ran before)."""
    rebind: NotRequired[bool]
    """A live migration rolled back (the domain runs on this host still) or switched here (a real
    guest's domain arrived with the migration): its ports and volumes are taken (back) here."""


class InstanceMetadata(TypedDict):
    """What a node's metadata service tells a guest of itself: its config drive's contents
    (``BuildRequest``) but the administrator password."""

    instance: Instance
    user_data: str | None
    """Base64, as the API took it."""
    public_keys: dict[str, str]
    """The key pair's public key by its name (none without ``key_name``)."""


class Keypair(TypedDict):
    """One of a user's key pairs."""

    user_id: str
    name: str
    public_key: str
    fingerprint: str
    """Nova's: the MD5 of the key blob (SHA-1 of an x509 certificate), as colon-separated hex."""
    type: KeypairType
    created_at: str


class NewKeypair(Keypair):
    """A key pair just made: with its private key when the conductor generated it (never stored)."""

    private_key: NotRequired[str]


class Placement(TypedDict):
    """Where an instance is and whose it is (``ConductorForOwners.placement``)."""

    instance_uuid: str
    host: str | None
    """The host it is recorded on; None while it is being scheduled."""
    project_id: str
    image_ref: str
    volumes: list[str]
    """The volumes attached to it at boot (``block_devices``)."""
    arriving: NotRequired[str | None]
    """The destination of a live migration copying the instance now: its node prepares to take
    the guest, reading what the instance uses (its image, networks and subnets, DHCP ports)."""


class AuditedInstance(TypedDict):
    """A live instance as the audit reads it: where it is, its states, and how long it has been idle."""

    uuid: str
    name: str
    project_id: str
    host: str | None
    vm_state: VmState
    task_state: TaskState | None
    fault: Fault | None
    idle_s: float
    """Seconds since the instance last made progress."""
    vcpus: NotRequired[int]
    """The vCPUs its record says it has (and its claim must hold)."""
    memory_mb: NotRequired[int]
    """The RAM (MB) its record says it has (and its claim must hold)."""
    other_host: NotRequired[str | None]
    """During a cold or live migration: the host of its other claim (the one it leaves or goes to)."""


MigrationType = Literal["migration", "resize", "live-migration", "evacuation"]
"""Nova's ``migration_type``."""
MigrationStatus = Literal[
    "queued",
    "preparing",
    "running",
    "accepted",
    "pre-migrating",
    "migrating",
    "post-migrating",
    "finished",
    "confirming",
    "reverting",
    "confirmed",
    "reverted",
    "error",
    "failed",
    "done",
    "completed",
    "cancelled",
]
"""Nova's migration statuses: a resize or cold migration's (pre-migrating ... finished, then
confirmed or reverted), a live migration's (queued, preparing, running, then completed, failed
or cancelled), an evacuate's (accepted, pre-migrating, then done or failed); error for any."""


ByteCount = Annotated[int, Meta(ge=0, le=2**53)]
CopyVerdict = Literal["go_on", "stop", "finish_now"]
"""What the source of a live migration is told as it copies: go on, stop, or finish now."""


class MigrationRecord(TypedDict):
    """A resize, cold or live migration or evacuate of an instance (Nova's ``migrations`` row)."""

    id: int
    uuid: str
    instance_uuid: str
    project_id: str
    user_id: str
    migration_type: MigrationType
    status: MigrationStatus
    source_compute: str | None
    dest_compute: str | None
    """None until its destination is chosen."""
    old_instance_type_id: str
    new_instance_type_id: str
    memory_total_bytes: int | None
    """A live migration's progress (None before it runs, and for the others)."""
    memory_processed_bytes: int | None
    memory_remaining_bytes: int | None
    disk_total_bytes: int | None
    disk_processed_bytes: int | None
    disk_remaining_bytes: int | None
    created_at: str
    updated_at: str | None


class Audit(TypedDict):
    task_timeout: float
    """How long a task may go without progress before the conductor resolves it."""
    instances: list[AuditedInstance]


# -- the user-facing compute API, by job ------------------------------------------------------


class Servers(ServiceAPI, address="conductor"):
    """Reading instances: one, a page of them, the project's usage, a console log."""

    @call(policy="compute:read", idempotent=True)
    async def get_instance(self, *, instance_uuid: Id) -> Server:
        """One instance.

        :raises NotFound: no such instance, or another project's.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def list_instances(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        host: str | None = None,
        all_projects: bool = False,
        project_id: str | None = None,
        limit: PageLimit | None = None,
        marker: str | None = None,
        image: str | None = None,
        flavor: str | None = None,
        ip: str | None = None,
        changes_since: str | None = None,
    ) -> list[Server]:
        """The caller's project's live instances (every project's for admins asking ``all_projects``,
        or ``project_id``'s), newest first; ``name`` is a regular expression searched in the name
        (Python's ``re.search``, as Nova), ``status`` one of Nova's (no match for an unknown one);
        ``image`` and ``flavor`` ids; ``ip`` a regular expression searched in the fixed
        addresses (either, when it is no regular expression, is searched as the text it is);
        ``changes_since`` an ISO 8601 time: only those changed since, deleted ones included
        (status DELETED); ``marker`` is the last id of the previous page.

        :raises InvalidRequest: an unknown marker, or a time that is not one.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def list_compute_hosts(self) -> list[ComputeHost]:
        """Every compute host and whether it is up, as the scheduler last said (the members of the
        one availability zone)."""
        ...

    @call(policy="compute:read", idempotent=True)
    async def project_usage(self) -> ProjectUsage:
        """What the caller's project uses now: instances, vCPUs, RAM."""
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_console_output(
        self, *, instance_uuid: Id, length: ConsoleLength | None = None
    ) -> ConsoleOutput:
        """The guest's serial console log from its node, its last ``length`` lines (-1 or None: all).

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: the instance has no host yet, or its driver keeps no console log.
        """
        ...


class ServerCreation(ServiceAPI, address="conductor"):
    """Booting an instance."""

    @call(policy="compute:write", idempotent=True)
    async def create_instance(
        self,
        *,
        name: ServerName,
        flavor_ref: Id,
        image_ref: ImageRef,
        networks: Networks | None = "auto",
        metadata: dict[str, str] | None = None,
        key_name: Name | None = None,
        user_data: str | None = None,
        block_devices: list[BlockDevice] | None = None,
        access_ip_v4: AccessAddress = "",
        access_ip_v6: AccessAddress = "",
        admin_pass: AdminPass | None = None,
        security_groups: list[SecurityGroupRef] | None = None,
        description: Description | None = None,
    ) -> Instance:
        """Record a new instance (BUILD: building/scheduling) and start building it; answers at once.
        ``admin_pass`` goes to the guest in its config drive (real guests), and is forgotten once
        the build ends.

        The build goes on in the conductor: a host is claimed, the node builds; libvirt's
        STARTED event makes the instance ACTIVE, a failure ERROR with a fault.

        A ``block_devices`` entry with ``boot_index`` 0 is the instance's root disk: then
        ``image_ref`` is "" (the flavor's disk is not claimed), the volume must be bootable, and
        the image it was made from gives the node its properties (kernel, ramdisk, disk bus).

        ``security_groups``: names (or ids) of the project's security groups the ports made for
        the instance join, resolved to ids now (None: the project's default group).

        :raises InvalidRequest: an unknown flavor, image (or one not active), key pair, network,
            port or volume; a volume that is not available (or, to boot from, not bootable); no
            image and no volume to boot from; a network entry with neither ``uuid`` nor ``port``;
            an access address that is not one of its version; a security group the project does
            not have (or a name several of its groups have).
        :raises QuotaExceeded: the project would have more instances, vCPUs or RAM than its quota.
        """
        ...


class ServerDetails(ServiceAPI, address="conductor"):
    """What a user changes of an instance besides its power: its name and access addresses, its
    metadata, its lock. A locked instance refuses every action but by an admin (Nova's lock)."""

    @call(policy="compute:write", idempotent=True)
    async def update_instance(
        self,
        *,
        instance_uuid: Id,
        name: ServerName | None = None,
        access_ip_v4: AccessAddress | None = None,
        access_ip_v6: AccessAddress | None = None,
        description: Description | None = None,
        forget_description: bool = False,
    ) -> Server:
        """Rename the instance, set its access addresses (None: unchanged; empty: none) or its
        description (None: unchanged; ``forget_description``: none, as Nova's null).

        :raises NotFound: no such instance, or another project's.
        :raises InvalidRequest: an access address that is not one of its version.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def set_metadata(
        self, *, instance_uuid: Id, metadata: dict[MetadataKey, MetadataValue], replace: bool = False
    ) -> dict[str, str]:
        """Merge ``metadata`` into the instance's (``replace``: make it exactly that); the result.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: the instance is locked.
        :raises QuotaExceeded: more items than the project's ``metadata_items`` quota would result.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def delete_metadata_item(self, *, instance_uuid: Id, key: MetadataKey) -> None:
        """:raises NotFound: no such instance (or another project's), or no such key.
        :raises Conflict: the instance is locked."""
        ...

    @call(policy="compute:write", idempotent=True)
    async def lock_instance(self, *, instance_uuid: Id, reason: LockReason | None = None) -> Server:
        """Lock the instance (by its owner, or by an admin, whose lock only an admin lifts).

        :raises NotFound: no such instance, or another project's.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def unlock_instance(self, *, instance_uuid: Id) -> Server:
        """:raises NotFound: no such instance, or another project's.
        :raises Forbidden: an admin locked it and the caller is not one."""
        ...


class ServerActions(ServiceAPI, address="conductor"):
    """What a user does to an instance: power changes, reboot, delete. Each action is recorded
    and its task handed to the instance's node; libvirt's word finishes it."""

    @call(policy="compute:write", idempotent=True)
    async def stop_instance(self, *, instance_uuid: Id) -> Instance:
        """os-stop: SHUTOFF once libvirt reports the domain stopped.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not in a state that can be stopped.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def start_instance(self, *, instance_uuid: Id) -> Instance:
        """os-start: ACTIVE once libvirt reports the domain started.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not SHUTOFF.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def reboot_instance(self, *, instance_uuid: Id, reboot_type: RebootType = "SOFT") -> Instance:
        """Reboot SOFT (the guest reboots itself) or HARD (destroy and create: STOPPED then STARTED).

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: the instance cannot be rebooted now.
        """
        ...

    @call(policy="compute:write")
    async def change_power(self, *, instance_uuid: Id, action: PowerAction) -> Instance:
        """``pause``, ``unpause``, ``suspend`` (the guest saved to disk) or ``resume``.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: the instance is not in a state the action starts from.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def rebuild_instance(
        self,
        *,
        instance_uuid: Id,
        image_ref: Id,
        name: ServerName | None = None,
        metadata: dict[MetadataKey, MetadataValue] | None = None,
        admin_pass: AdminPass | None = None,
        access_ip_v4: AccessAddress | None = None,
        access_ip_v6: AccessAddress | None = None,
        description: Description | None = None,
        forget_description: bool = False,
    ) -> Instance:
        """Rebuild from ``image_ref`` (REBUILD): the node makes the disk again and starts the
        domain (a stopped instance stays stopped). ``name``, ``metadata`` (all of it), the
        access addresses and the description (``forget_description``: none) change with it when
        given; ``admin_pass`` goes to the new config drive.

        :raises NotFound: no such instance, or another project's.
        :raises InvalidRequest: an unknown or inactive image, or a bad access address.
        :raises Conflict: not active, stopped or in error, locked, or with volumes attached at boot.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def create_image(
        self, *, instance_uuid: Id, name: ImageName, metadata: dict[MetadataKey, MetadataValue] | None = None
    ) -> str:
        """createImage: a queued image of the caller's project (a ``snapshot`` of the instance,
        booting as its image does: its kernel, ramdisk and command line), which the instance's
        node fills with a copy of the instance's disk; its id. The instance stays as it is,
        task ``image_snapshot`` until the upload ends.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not active, stopped, paused or suspended with no task, or locked.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def delete_instance(self, *, instance_uuid: Id) -> None:
        """DELETED once the node has destroyed and undefined the domain and released its resources
        (at once when it has no host). Asked again, the work is done again.

        :raises NotFound: no such instance, or another project's.
        """
        ...


class ServerVolumes(ServiceAPI, address="conductor"):
    """Volumes attached to a running or stopped instance."""

    @call(policy="compute:write", timeout=120)
    async def attach_volume(
        self, *, instance_uuid: Id, volume_id: Id, device: DeviceName | None = None
    ) -> VolumeAttachment:
        """Reserve the volume, have the node attach it, then mark it in-use.

        :raises NotFound: no such instance or volume, or another project's.
        :raises Conflict: the instance has no host or is busy, the volume is not available,
            or the device is in use.
        """
        ...

    @call(policy="compute:write", timeout=120)
    async def detach_volume(self, *, instance_uuid: Id, volume_id: Id) -> None:
        """Have the node detach the volume, then make it available.

        :raises NotFound: the volume is not attached to this instance.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def list_volume_attachments(self, *, instance_uuid: Id) -> list[VolumeAttachment]:
        """The volumes attached to the instance.

        :raises NotFound: no such instance, or another project's.
        """
        ...


class ServerInterfaces(ServiceAPI, address="conductor"):
    """Ports of an instance, hot-plugged into its domain and out (Nova's os-interface)."""

    @call(policy="compute:read", idempotent=True)
    async def list_interfaces(self, *, instance_uuid: Id) -> list[InterfaceAttachment]:
        """The instance's ports.

        :raises NotFound: no such instance, or another project's.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_interface(self, *, instance_uuid: Id, port_id: Id) -> InterfaceAttachment:
        """One port of the instance.

        :raises NotFound: no such instance or port, or the port is not the instance's.
        """
        ...

    @call(policy="compute:write", timeout=180)
    async def attach_interface(
        self,
        *,
        instance_uuid: Id,
        port_id: Id | None = None,
        network_id: Id | None = None,
        fixed_ip: IpAddress | None = None,
    ) -> InterfaceAttachment:
        """Bind the project's unbound port ``port_id``, or a new port on ``network_id`` (with
        ``fixed_ip``; neither: the network a build would pick), to the instance on its host, then
        have its node plug it in.

        :raises NotFound: no such instance, network or port, or another project's.
        :raises InvalidRequest: both port_id and network_id, or fixed_ip without network_id.
        :raises Conflict: the instance is locked, or not active, paused or stopped with no task;
            the port is in use (``PortInUse``); the address is taken.
        """
        ...

    @call(policy="compute:write", timeout=180)
    async def detach_interface(self, *, instance_uuid: Id, port_id: Id) -> None:
        """Have the node unplug the port, then give it back: deleted if it was made for the
        instance, else unbound and kept.

        :raises NotFound: no such instance, or the port is not the instance's.
        :raises Conflict: the instance is locked, or not active, paused or stopped with no task.
        """
        ...


class Flavors(ServiceAPI, address="conductor"):
    """The sizes an instance may have."""

    @call(policy="compute:read", idempotent=True)
    async def list_flavors(self) -> list[Flavor]:
        """Every flavor, smallest RAM first."""
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_flavor(self, *, flavor_id: Id) -> Flavor:
        """One flavor, by id or name.

        :raises NotFound: no flavor with that id or name.
        """
        ...


class Keypairs(ServiceAPI, address="conductor"):
    """Nova's key pairs (``os-keypairs``): each user's named SSH public keys."""

    @call(policy="compute:write")
    async def create_keypair(
        self, *, name: KeypairName, public_key: PublicKey | None = None, key_type: KeypairType = "ssh"
    ) -> NewKeypair:
        """Import ``public_key``, or generate a pair and return its ``private_key`` (once).

        :raises InvalidRequest: the key is not an OpenSSH public key (``ssh``) or a PEM
            certificate (``x509``).
        :raises QuotaExceeded: the user has as many key pairs as the project's quota allows.
        :raises Conflict: the user has a key pair of that name.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def list_keypairs(self) -> list[Keypair]:
        """The caller's key pairs, by name."""
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_keypair(self, *, name: Name) -> Keypair:
        """:raises NotFound: the user has no key pair of that name."""
        ...

    @call(policy="compute:write")
    async def delete_keypair(self, *, name: Name) -> None:
        """:raises NotFound: the user has no key pair of that name."""
        ...


class ComputeQuotas(ServiceAPI, address="conductor"):
    """Nova's quota sets: how many instances, vCPUs, MB of RAM a project may have live, how many
    metadata items an instance and key pairs a user. Enforced where each is made, in the same
    store transaction that records it: concurrent creates never exceed a limit."""

    @call(policy="compute:read", idempotent=True)
    async def get_quotas(self, *, project_id: Id) -> Quotas:
        """The project's limits (the defaults where it has none of its own).

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_default_quotas(self) -> Quotas:
        """The limits of a project with none of its own."""
        ...

    @call(policy="compute:read", idempotent=True)
    async def get_quota_usage(self, *, project_id: Id, user_id: Id | None = None) -> dict[str, QuotaUsage]:
        """The project's limits and what it uses now (key pairs: the user's, the caller by default).

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def set_quotas(
        self, *, project_id: Id, limits: dict[QuotaResource, QuotaLimit], force: bool = False
    ) -> Quotas:
        """Set some of the project's limits (admins). A limit below what the project uses is
        refused unless ``force``.

        :raises Forbidden: the caller is no admin.
        :raises Conflict: a limit below the project's usage, without ``force``.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def delete_quotas(self, *, project_id: Id) -> None:
        """Back to the defaults (admins). :raises Forbidden: the caller is no admin."""
        ...


class ServerHistory(ServiceAPI, address="conductor"):
    """What was done to an instance: its actions (Nova's instance actions) and their steps."""

    @call(policy="compute:read", idempotent=True)
    async def list_actions(self, *, instance_uuid: Id, deleted_too: bool = False) -> list[InstanceAction]:
        """The instance's actions, oldest first; ``deleted_too``: a deleted instance's as well.

        :raises NotFound: no such (live, without ``deleted_too``) instance, or another project's.
        """
        ...

    @call(policy="compute:read", idempotent=True)
    async def list_action_events(
        self, *, instance_uuid: Id, deleted_too: bool = False
    ) -> list[InstanceActionEvent]:
        """The steps of the instance's actions, oldest first, each with its action's name;
        ``deleted_too``: a deleted instance's as well.

        :raises NotFound: no such (live, without ``deleted_too``) instance, or another project's.
        """
        ...


UsageTime = Annotated[str, Meta(min_length=1, max_length=64)]
"""An ISO 8601 time (without an offset: UTC)."""


class ComputeUsage(ServiceAPI, address="conductor"):
    """What instances used over a period (Nova's ``os-simple-tenant-usage``), from their records:
    a deleted instance counts for the time it lived."""

    @call(policy="compute:read", idempotent=True)
    async def usage(
        self, *, start: UsageTime, end: UsageTime, project_id: Id | None = None
    ) -> list[TenantUsage]:
        """Each project's usage over [``start``, ``end``): every instance that ran in it, for the
        hours it lived in it; ``project_id``: that project's only (its members or admins), else
        every project's (admins only). A project none of whose instances ran is left out.

        :raises InvalidRequest: a time that is not ISO 8601, or ``end`` before ``start``.
        :raises Forbidden: every project's usage, or another project's, asked by no admin.
        """
        ...


class ComputeServices(ServiceAPI, address="conductor"):
    """What an operator asks of the compute hosts: their state and usage, and taking one out of
    scheduling (admins only)."""

    @call(policy="compute:admin", idempotent=True)
    async def list_compute_services(self) -> list[ComputeService]:
        """Every compute host, by name."""
        ...

    @call(policy="compute:admin", idempotent=True)
    async def set_compute_service(
        self, *, host: HostName, enabled: bool, disabled_reason: DisabledReason | None = None
    ) -> ComputeService:
        """Enable a host, or disable it with why: the scheduler gives a disabled host no new
        instances; those it runs stay.

        :raises NotFound: no such host.
        """
        ...


class ServerResizes(ServiceAPI, address="conductor"):
    """A resize to another flavor (on the instance's host): VERIFY_RESIZE, then confirmed or reverted."""

    @call(policy="compute:write", idempotent=True)
    async def resize_instance(self, *, instance_uuid: Id, flavor_ref: Id) -> Instance:
        """Resize to ``flavor_ref``: its claim is taken beside the old one, the node gives the
        domain the new size, and the instance is RESIZED (VERIFY_RESIZE) showing the new flavor.

        :raises NotFound: no such instance, or another project's.
        :raises InvalidRequest: an unknown flavor, the instance's own, or one with a smaller disk.
        :raises Conflict: not active or stopped with no task, or locked; or its host has no room
            for the new flavor (the instance stays as it was).
        :raises QuotaExceeded: the project's cores or RAM would go past its limit.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def confirm_resize(self, *, instance_uuid: Id) -> Instance:
        """Keep the new flavor: the old claim is given back; active (or stopped, as it was) again.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not RESIZED (VERIFY_RESIZE), or locked.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def revert_resize(self, *, instance_uuid: Id) -> Instance:
        """Go back to the old flavor (REVERT_RESIZE): the node gives the domain its old size, then
        the new claim is given back; active (or stopped, as it was) again.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not RESIZED (VERIFY_RESIZE), or locked.
        """
        ...


class ServerEvacuations(ServiceAPI, address="conductor"):
    """An instance of a host that is down built again on another host (Nova's evacuate)."""

    @call(policy="compute:admin", idempotent=True)
    async def evacuate_instance(
        self, *, instance_uuid: Id, host: TargetHost | None = None, admin_pass: AdminPass | None = None
    ) -> Instance:
        """Evacuate the instance from its host, which must be down: its claim moves to ``host``
        (forced; None: the scheduler's choice, never its own host) in one transaction, the node
        there builds its domain again from its image with its ports and volumes (REBUILD:
        rebuilding, rebuild_spawning), and it ends active, or stopped if it was stopped.

        :raises NotFound: no such instance; ``host`` is no compute host ("Compute host ... not found.").
        :raises InvalidRequest: ``host`` is the instance's own, or is down; the instance's host
            is up ("Compute service of ... is still in use."); no host has room for it.
        :raises Conflict: not active, stopped or error with no task, or it has no host.
        """
        ...


RefusalReason = Annotated[str, Meta(max_length=1000)]
"""Why libvirt refused a node a task (its error)."""
ExtraSpecKey = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[\w.:-]+$")]
ExtraSpecValue = Annotated[str, Meta(max_length=255)]


class FlavorExtraSpecs(ServiceAPI, address="conductor"):
    """Nova's flavor extra specs: key-value pairs an admin sets on a flavor. aiostack reads
    ``aiostack:max_vcpus`` and ``aiostack:max_ram_mb`` (the most a live change may give an
    instance of the flavor); the others are kept and shown."""

    @call(policy="compute:read", idempotent=True)
    async def get_extra_specs(self, *, flavor_id: Id) -> dict[str, str]:
        """The flavor's extra specs.

        :raises NotFound: no such flavor.
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def set_extra_specs(
        self, *, flavor_id: Id, extra_specs: dict[ExtraSpecKey, ExtraSpecValue]
    ) -> dict[str, str]:
        """Add or change these keys; the flavor's extra specs as they now are. Instances booted
        before keep the maxima they were booted with.

        :raises NotFound: no such flavor.
        :raises InvalidRequest: an aiostack maximum that is no whole number, or is below the
            flavor's own vCPUs or RAM.
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def delete_extra_spec(self, *, flavor_id: Id, key: ExtraSpecKey) -> None:
        """Delete one key of the flavor's extra specs.

        :raises NotFound: no such flavor, or it has no such key.
        """
        ...


class ServerLiveResources(ServiceAPI, address="conductor"):
    """A running instance's vCPUs and RAM changed live, within its flavor's maxima (aiostack's
    ``setResources``: vCPU hot-plug and the memory balloon)."""

    @call(policy="compute:write", idempotent=True)
    async def set_resources(
        self, *, instance_uuid: Id, vcpus: PositiveAmount | None = None, ram: PositiveAmount | None = None
    ) -> Instance:
        """Give the running instance ``vcpus`` and ``ram`` MB (None: as it has): its claim is set
        to cover both sizes, its node changes the running domain, then the claim is the new size.
        Its flavor shows the current size.

        :raises NotFound: no such instance, or another project's.
        :raises InvalidRequest: its flavor sets no maximum for what is asked, or a size outside
            the flavor's own and its maximum.
        :raises Conflict: not active with no task, or locked; or its host has no room for the
            growth (the instance stays as it was).
        :raises QuotaExceeded: the project's cores or RAM would go past its limit.
        """
        ...


class ServerCrashDumps(ServiceAPI, address="conductor"):
    """A crash dump triggered in the guest (Nova's ``trigger_crash_dump``): its node injects an NMI."""

    @call(policy="compute:write")
    async def trigger_crash_dump(self, *, instance_uuid: Id) -> None:
        """Inject an NMI into the guest (a kernel configured for it dumps its memory and reboots);
        the instance's states do not change. Recorded as the action ``trigger_crash_dump``.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not active, paused, resized or in error with no task (or never
            launched), locked, with no host, or its domain is not running.
        :raises InvalidRequest: the host's driver cannot inject an NMI.
        """
        ...


class ServerMigrations(ServiceAPI, address="conductor"):
    """Migration records, cold and live migration (admins only, as Nova's default policy)."""

    @call(policy="compute:admin", idempotent=True)
    async def list_migrations(
        self,
        *,
        host: HostName | None = None,
        status: Name | None = None,
        instance_uuid: Id | None = None,
        migration_type: MigrationType | None = None,
    ) -> list[MigrationRecord]:
        """Every resize, migration, live migration and evacuate matching the filters given,
        newest first (``host``: its source or its destination)."""
        ...

    @call(policy="compute:admin", idempotent=True)
    async def get_server_migration(
        self, *, instance_uuid: Id, migration_id: PositiveAmount
    ) -> MigrationRecord:
        """A live migration of the instance in progress (queued, preparing, running, post-migrating).

        :raises NotFound: no such instance, or no such live migration of it in progress.
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def live_migrate_instance(
        self, *, instance_uuid: Id, host: TargetHost | None = None, block_migration: bool = False
    ) -> Instance:
        """Live-migrate the instance (MIGRATING, ``migrating`` throughout) to ``host`` (forced,
        disabled or not; None: the scheduler's choice, never its own host): its claim is taken
        there beside its own, its host's node copies the guest while it runs, the destination's
        node defines and starts it with its ports and volumes, and the source's claim and domain
        go. A destination that fails rolls it back (it keeps running on its host).

        :raises NotFound: no such instance.
        :raises InvalidRequest: ``host`` is unknown, down, or the instance's own; no host has
            room; the instance's host runs real guests (not migrated live between hosts).
        :raises Conflict: not active with no task, or locked.
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def abort_migration(self, *, instance_uuid: Id, migration_id: PositiveAmount) -> None:
        """Abort a running live migration: it is rolled back (``cancelled``), the instance stays on
        its host.

        :raises NotFound: no such instance, or no such migration of it.
        :raises Conflict: the instance is not migrating.
        :raises InvalidRequest: the migration is not running (or is no live migration).
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def force_complete_migration(self, *, instance_uuid: Id, migration_id: PositiveAmount) -> None:
        """Have a running live migration finish its copy now (Nova pauses the guest for it).

        :raises NotFound: no such instance, or no such migration of it.
        :raises Conflict: the instance is not migrating.
        :raises InvalidRequest: the migration is not running (or is no live migration).
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def migrate_instance(self, *, instance_uuid: Id) -> Instance:
        """Cold-migrate the instance (a resize to its own flavor on another host): the scheduler
        claims another host beside the instance's (never its own), its domain moves there
        (RESIZE), and it is RESIZED (VERIFY_RESIZE) until ``confirm_resize`` (the source's claim
        given back) or ``revert_resize`` (moved back).

        :raises NotFound: no such instance.
        :raises InvalidRequest: no other host has room ("No valid host was found.").
        :raises Conflict: not active or stopped with no task, or locked; its host runs real
            guests (their disks are not copied between hosts).
        """
        ...


class ServerShelves(ServiceAPI, address="conductor"):
    """Shelve (the disk saved as an image, the domain shut off), offload (host resources freed),
    unshelve (on the same host, or any host once offloaded)."""

    @call(policy="compute:write", idempotent=True)
    async def shelve_instance(self, *, instance_uuid: Id) -> Instance:
        """Shelve: the node powers the domain off and uploads its disk as the image
        ``<name>-shelved`` (none for a volume-backed server); SHELVED, then offloaded at once
        when the conductor's ``shelved_offload_time`` is 0.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not active, stopped, paused or suspended with no task, or locked.
        """
        ...

    @call(policy="compute:admin", idempotent=True)
    async def shelve_offload_instance(self, *, instance_uuid: Id) -> Instance:
        """Offload a SHELVED instance: its domain and files removed, its claim given back, its
        ports unbound and volume attachments released from the host (both kept):
        SHELVED_OFFLOADED, on no host.

        :raises NotFound: no such instance.
        :raises Conflict: not SHELVED with no task, or locked.
        """
        ...

    @call(policy="compute:write", idempotent=True)
    async def unshelve_instance(self, *, instance_uuid: Id) -> Instance:
        """Unshelve: a SHELVED instance's domain is started again; an offloaded one is built on
        the host the scheduler claims, from its shelved image, with its ports and volumes. ACTIVE
        after; the shelved image is deleted.

        :raises NotFound: no such instance, or another project's.
        :raises Conflict: not SHELVED or SHELVED_OFFLOADED with no task, or locked.
        """
        ...


class Compute(
    Servers,
    ServerMigrations,
    ServerCreation,
    ServerActions,
    ServerCrashDumps,
    ServerResizes,
    ServerEvacuations,
    ServerLiveResources,
    ServerShelves,
    ServerDetails,
    ServerVolumes,
    ServerInterfaces,
    ServerHistory,
    ComputeQuotas,
    ComputeUsage,
    Flavors,
    FlavorExtraSpecs,
    Keypairs,
    ComputeServices,
    address="conductor",
):
    """The user-facing compute API, as the gateway reaches it."""


# -- what compute nodes call ------------------------------------------------------------------
#
# Served on ``conductor.host.<host>.<method>``: the calling host is the subject's (only that
# node's NATS user may publish there), never the body's. A node acts only on the instances the
# conductor records on its host: any other instance is answered ``NotFound``, as if it did not
# exist (a node learns nothing of other hosts' instances), and nothing changes.


class NodeBuilds(ServiceAPI, address="conductor.host.{host}", caller="host"):
    """A node building an instance: what it needs, the addresses it got, its failure."""

    @call(idempotent=True)
    async def get_build_request(self, *, instance_uuid: Id) -> BuildRequest:
        """What the calling node needs to build (steps 14-19) or rebuild the instance; asking
        acknowledges the task. A live migration's destination asks it too while the guest is
        copied there (``Placement.arriving``): its answer acknowledges nothing.

        :raises NotFound: no such instance on the calling host (deleted, rescheduled, another host's).
        :raises Conflict: the instance is not being built any more.
        """
        ...

    @call(idempotent=True)
    async def get_instance_metadata(self, *, instance_uuid: Id) -> InstanceMetadata:
        """What the calling node's metadata service tells the instance of itself (never its
        administrator password); asking acknowledges nothing.

        :raises NotFound: no such live instance on the calling host.
        """
        ...

    @call
    async def instance_spawning(
        self, *, instance_uuid: Id, addresses: dict[str, list[dict[str, Any]]]
    ) -> None:
        """The node has the image, ports and disks and is about to create the domain.

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call
    async def build_failed(self, *, instance_uuid: Id, message: str) -> None:
        """The node could not build (and gave back what it took): another host is tried, up to
        the conductor's ``max_build_attempts`` in all; then ERROR with the fault. An evacuate's
        destination that could not build the instance ends the evacuate in ERROR.

        :raises NotFound: no such instance on the calling host.
        """
        ...


class NodeReports(ServiceAPI, address="conductor.host.{host}", caller="host"):
    """libvirt's word on a domain: what makes an instance ACTIVE, SHUTOFF, DELETED..."""

    @call
    async def domain_event(self, *, instance_uuid: Id, event: int, detail: int) -> InstanceChange | None:
        """A libvirt lifecycle event (``runtime.states.Lifecycle``) of the instance's domain on the
        calling host; the instance as it now is, None when the event changed nothing.

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call
    async def sync_power_state(self, *, instance_uuid: Id, running: bool) -> InstanceChange | None:
        """The node saw the domain's power state without an event (it did not change): settle the
        task (None: nothing to settle).

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call
    async def domain_gone(self, *, instance_uuid: Id) -> InstanceChange | None:
        """The node found no domain to undefine for an instance being deleted: it is DELETED.

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call
    async def task_done(self, *, instance_uuid: Id) -> None:
        """The node finished a task libvirt reports no event for (a soft reboot).

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call
    async def task_refused(self, *, instance_uuid: Id, reason: RefusalReason) -> None:
        """libvirt refused the node a live change of vCPUs and RAM, and the domain has its old
        size again: the change ends, the instance as it was.

        :raises NotFound: no such instance on the calling host.
        """
        ...


class NodeTasks(ServiceAPI, address="conductor.host.{host}", caller="host"):
    """The tasks a node has in hand, and the instances recorded on it."""

    @call
    async def task_progress(self, *, instance_uuids: list[Id]) -> int:
        """The node took these instances' tasks, or is still working on them: they make progress.
        Only the calling host's instances count (the others are left as they are); returns how
        many it had."""
        ...

    @call(idempotent=True)
    async def list_host_instances(self) -> list[Instance]:
        """Every live instance recorded on the calling host (a node reconciles libvirt with these)."""
        ...

    @call(idempotent=True)
    async def recorded_here(self, *, instance_uuids: list[Id]) -> list[str]:
        """Which of these instances are live and recorded on the calling host, but those being
        evacuated away from it, or have the host as the other end of a migration in progress (a
        node's orphan sweep removes the domains of the others)."""
        ...

    @call(idempotent=True)
    async def migration_progress(
        self,
        *,
        instance_uuid: Id,
        memory_total_bytes: ByteCount,
        memory_processed_bytes: ByteCount,
        memory_remaining_bytes: ByteCount,
    ) -> CopyVerdict:
        """The source of a live migration has copied this much of the guest's memory: the record
        shows it (``running``). Answers whether to go on, stop (the migration was aborted, or
        ended otherwise) or finish now (forced to complete).

        :raises NotFound: no such live instance on the calling host.
        """
        ...

    @call
    async def live_migration_target(self, *, instance_uuid: Id) -> LiveMigrationTarget:
        """The source of a real guest's live migration (or of a cold migration's copy of its
        disks) asks for its destination, which the conductor has prepare for the guest
        (``Node.prepare_live_migration``, with the instance's ports and the destination's own
        volume attachments, ``VolumeAttachments.attach_arriving``): the destination's domain
        definition and where to send the guest.

        :raises NotFound: no such live instance on the calling host.
        :raises Conflict: the instance is not copied by a migration now, its volumes are files
            of one host, or its destination cannot take it.
        """
        ...


class ConductorForNodes(NodeBuilds, NodeReports, NodeTasks, address="conductor.host.{host}", caller="host"):
    """What compute nodes call (and nothing else: their NATS permissions come from it), each node
    as its own host (``ConductorForNodes.client(bus, host="node-1")``)."""


# -- what the other actors and the operator call ----------------------------------------------


Stamp = Annotated[str, Meta(max_length=64)]
"""A time as the conductor stamps its records (ISO 8601, UTC, ``Z``)."""


class Deletions(TypedDict):
    """The instances deleted since a time, and the time to ask from next (a little before the
    answer: a delete being written then, or stamped by a replica whose clock is behind, is in the
    next answer too)."""

    instance_uuids: list[str]
    until: Stamp


class ConductorForOwners(ServiceAPI, address="conductor"):
    """What the owners of per-instance resources (image, net, scheduler, volume) ask: which
    instances are gone (their orphan sweeps), and where one is and whose (their checks of a
    node's calls)."""

    @call(idempotent=True)
    async def live_instances(self, *, instance_uuids: list[Id]) -> list[str]:
        """Which of these instances still exist (not deleted): the rest hold nothing any more."""
        ...

    @call(idempotent=True)
    async def deleted_since(self, *, since: Stamp | None) -> Deletions:
        """The instances deleted at or after ``since`` (an ``until`` this call answered; None:
        none, only ``until``), however many instances live."""
        ...

    @call(idempotent=True)
    async def placement(self, *, instance_uuid: Id) -> Placement:
        """Where a live instance is placed, whose it is, and the image and volumes it uses: what a
        node asking for the instance's image bytes, networks or volumes may be given.

        :raises NotFound: no such live instance.
        """
        ...


class ConductorOperator(ServerHistory, address="conductor"):
    """The operator's reads: ``aiostack audit``, and what each action did."""

    @call(idempotent=True)
    async def audit_instances(self) -> Audit:
        """Every live instance with its host, states and seconds since its last progress."""
        ...
