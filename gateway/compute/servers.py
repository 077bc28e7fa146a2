"""Servers (Nova v2.1 ``/servers``): create, list (ids or in detail), show, update, delete.

A server is shown as Nova's API shows it at the request's microversion (2.1-2.21): 2.3 adds
the extended server attributes for admins, 2.9 ``locked``, 2.16 ``host_status`` (admins), 2.19
its ``description`` (given at create, update and rebuild from 2.19, refused before as Nova's
schemas refuse it; a server created before 2.19 is described by its name, as Nova's is).
Creating records the server and answers 202 at once; the build goes on in the conductor.
Deleting answers 204 once the conductor has taken the delete, as Nova does; the server shows
``task_state`` ``deleting`` until its node has removed it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import AdminPass, BlockDevice, Compute, HostStatus, KeypairName, Status
from api.conductor import Server as Instance
from api.volume import Volumes
from bus import InvalidRequest, NotFound
from gateway.compute.common import (
    BASE,
    ERRORS_OF_A_SERVER,
    SERVER_ID,
    GuestDevice,
    Reference,
    check_device,
    compute,
    link_base,
    links,
    links_at,
)
from gateway.compute.live_resources import LiveSize, live_size
from gateway.compute.server_security import group_names_by_server
from gateway.http import client, context_of, json_response, no_content
from gateway.routing import (
    MAX_AMOUNT,
    Body,
    Id,
    Link,
    Query,
    Reply,
    Request,
    Routes,
    Time,
    TimeParameter,
    given,
)
from gateway.versions import microversion
from runtime.states import PowerState, TaskState, VmState

# A server's name, as Nova's: printable characters (no control character: C0, DEL, C1), not all
# blanks. Blanks are Python's whitespace (``str.isspace``) spelled out, so that JSON Schema's regex
# dialect and Python's agree (their ``\s`` differ); the check is ``ServerCreate.__post_init__``'s,
# as a pattern ending in ``$`` would let a trailing newline through in Python.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\ufffe\\uffff"
_BLANK = "\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NAME_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_BLANK}][^{_CONTROL}]*$"
_PRINTABLE = re.compile(f"[^{_CONTROL}]*")
_NOT_BLANK = re.compile(f"[^{_CONTROL}{_BLANK}]")
ServerName = Annotated[str, Meta(min_length=1, max_length=255, extra_json_schema={"pattern": NAME_PATTERN})]
"""1 to 255 printable characters, not all blanks (``check_name``)."""


def check_name(name: str) -> None:
    """:raises ValueError: ``name`` is not a ``ServerName``."""
    if _PRINTABLE.fullmatch(name) is None or _NOT_BLANK.search(name) is None:
        raise ValueError("'name' must be printable characters (no control character), not all blanks")


DESCRIPTION_SINCE = (2, 19)
"""The microversion from which a server has a ``description``."""
Description = Annotated[str, Meta(max_length=255, extra_json_schema={"pattern": f"^[^{_CONTROL}]*$"})]
"""Up to 255 printable characters (``check_description``), empty too."""


def check_description(description: object) -> None:
    """:raises ValueError: ``description`` is a string that is not a ``Description``."""
    if isinstance(description, str) and _PRINTABLE.fullmatch(description) is None:
        raise ValueError("'description' must be printable characters (no control character)")


def check_description_allowed(request: web.Request, description: str | UnsetType | None, member: str) -> None:
    """:raises InvalidRequest: a request gives a ``description`` (null too) before 2.19, as Nova's
    schemas refuse it then."""
    if description is not UNSET and microversion(request) < DESCRIPTION_SINCE:
        raise InvalidRequest(
            f"Invalid input for field/attribute {member}."
            " Additional properties are not allowed ('description' was unexpected)"
        )


FlavorRef = Annotated[str, Meta(min_length=1, max_length=255)] | Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
Text = Annotated[str, Meta(max_length=255)]
PROGRESS_STATUSES = frozenset(("ACTIVE", "BUILD", "REBUILD"))
"""The statuses in which Nova shows a server's ``progress``."""
Progress = Annotated[int, Meta(ge=0, le=100, description="While ACTIVE, BUILD or REBUILD.")]
AccessIPv4 = Annotated[
    str, Meta(max_length=64, extra_json_schema={"anyOf": [{"maxLength": 0}, {"format": "ipv4"}]})
]
"""An IPv4 address, or empty (the conductor checks it)."""
AccessIPv6 = Annotated[
    str, Meta(max_length=64, extra_json_schema={"anyOf": [{"maxLength": 0}, {"format": "ipv6"}]})
]
"""An IPv6 address, or empty (the conductor checks it)."""
BASE64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
UserData = Annotated[str, Meta(max_length=65535, extra_json_schema={"pattern": BASE64})]
"""Base64 (checked in ``ServerCreate.__post_init__``: a pattern ending in ``$`` lets a trailing
newline through in Python)."""
MetadataKey = Annotated[str, Meta(min_length=1, max_length=255)]
Count = Annotated[int, Meta(ge=1, le=MAX_AMOUNT)]
BootIndex = (
    Annotated[int, Meta(ge=-1, le=MAX_AMOUNT)] | Annotated[str, Meta(pattern=r"^(-?[0-9]{1,9}|none)$")]
)
MAX_PAGE = 1000
"""Nova's ``osapi_max_limit``: the most servers one page holds."""
CREATE_TIMEOUT = 10.0
"""Recording a server takes milliseconds; a conductor that died holding the request never answers,
and the client should hear so soon (then ask again) rather than after 30 s."""
IMAGE_MAPPING: dict[str, Any] = {
    "properties": {
        "source_type": {"const": "image"},
        "destination_type": {"const": "local"},
        "boot_index": {"enum": [0, "0"]},
    },
    "required": ["source_type", "boot_index"],
}
VOLUME_MAPPING: dict[str, Any] = {
    "properties": {
        "source_type": {"const": "volume"},
        "destination_type": {"const": "volume"},
        "boot_index": {"anyOf": [{"type": "null"}, {"enum": [0, "0", -1, "-1", "none"]}]},
    },
    "required": ["source_type"],
}
BOOT_VOLUME_MAPPING: dict[str, Any] = {
    "properties": {
        "source_type": {"const": "volume"},
        "destination_type": {"const": "volume"},
        "boot_index": {"enum": [0, "0"]},
    },
    "required": ["source_type", "boot_index"],
}


# -- requests ---------------------------------------------------------------------------------


class NetworkRequest(Request):
    """A network to boot on (``uuid``, with ``fixed_ip`` to ask for that address), or a port the
    user made (``port``; it wins over ``uuid``). The network or port must exist."""

    uuid: Id | UnsetType = UNSET
    port: Id | UnsetType = UNSET
    fixed_ip: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": [{"required": ["uuid"]}, {"required": ["port"]}]}

    def __post_init__(self) -> None:
        if self.uuid is UNSET and self.port is UNSET:
            raise ValueError("each network needs a 'uuid' or a 'port'")


class BlockDeviceMapping(Request, kw_only=True):
    """One of Nova's ``block_device_mapping_v2``. Two kinds are built: an existing, available
    volume (source and destination ``volume``), attached at boot (``boot_index`` -1 or none) or
    the disk the server boots from (``boot_index`` 0: a bootable volume, then ``imageRef`` is
    empty or left out; ``delete_on_termination`` deletes it with the server), and the image the
    server boots from (source ``image``, destination ``local``, ``boot_index`` 0: how the
    openstack CLI spells ``imageRef``; it must be ``imageRef`` when that is given too). The other
    members are taken and ignored."""

    source_type: Literal["volume", "image"]
    destination_type: Literal["volume", "local"] | UnsetType = UNSET
    uuid: Id
    boot_index: BootIndex | UnsetType | None = UNSET
    device_name: GuestDevice | UnsetType | None = UNSET
    delete_on_termination: bool | UnsetType = UNSET
    guest_format: Text | UnsetType | None = UNSET
    device_type: Text | UnsetType | None = UNSET
    disk_bus: Text | UnsetType | None = UNSET
    volume_size: Count | UnsetType | None = UNSET
    volume_type: Text | UnsetType | None = UNSET
    tag: Text | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": [IMAGE_MAPPING, VOLUME_MAPPING]}

    @property
    def is_image(self) -> bool:
        """The image to boot from (else a volume)."""
        return self.source_type == "image"

    @property
    def boots(self) -> bool:
        """The server boots from it (``boot_index`` 0)."""
        return str(self.boot_index) == "0"

    def __post_init__(self) -> None:
        check_device(self.device_name)
        if self.is_image:
            if self.destination_type not in (UNSET, "local") or not self.boots:
                raise ValueError(
                    "an image mapping must have destination_type local and boot_index 0 (a volume"
                    " made from an image at boot is not built: create the volume from the image,"
                    " then boot from it)"
                )
        elif self.destination_type not in (UNSET, "volume") or self.boot_index not in (
            UNSET,
            None,
            0,
            "0",
            -1,
            "-1",
            "none",
        ):
            raise ValueError(
                "a volume mapping names an existing volume (destination_type volume) to boot from"
                " (boot_index 0) or to attach at boot (boot_index -1 or none)"
            )


class SecurityGroupRef(Request):
    name: Text


class ServerCreate(Request, kw_only=True):
    """A server to boot. ``imageRef`` (or a boot image or boot volume in ``block_device_mapping_v2``),
    ``flavorRef`` (an id or name), ``key_name``, the networks and volumes must name existing
    ones the caller may use (else 400). ``security_groups`` (names or ids of the project's groups,
    else 400) are those the server's new ports join (none given: ``default``). Nova's members
    aiostack does not act on are taken and ignored: ``availability_zone``, ``config_drive``,
    ``OS-DCF:diskConfig``, ``min_count``, ``max_count``. ``description`` (2.19 and later) is kept
    and shown from 2.19. ``accessIPv4``/``accessIPv6`` are kept and shown (an address of that
    version, else 400). ``adminPass`` (else one made here, answered once) and ``user_data``
    (base64, else 400) reach the guest in its config drive, as Nova's do."""

    name: ServerName
    imageRef: Annotated[str, Meta(max_length=255)] | UnsetType = UNSET
    flavorRef: FlavorRef
    networks: Literal["auto", "none"] | list[NetworkRequest] | UnsetType = UNSET
    metadata: dict[MetadataKey, Text] | UnsetType | None = UNSET
    key_name: KeypairName | UnsetType | None = UNSET
    user_data: UserData | UnsetType | None = UNSET
    adminPass: AdminPass | UnsetType = UNSET
    block_device_mapping_v2: list[BlockDeviceMapping] | UnsetType = UNSET
    availability_zone: Text | UnsetType = UNSET
    security_groups: list[SecurityGroupRef] | UnsetType = UNSET
    config_drive: bool | Text | UnsetType = UNSET
    disk_config: Literal["AUTO", "MANUAL"] | UnsetType = msgspec.field(
        default=UNSET, name="OS-DCF:diskConfig"
    )
    min_count: Count | UnsetType = UNSET
    max_count: Count | UnsetType = UNSET
    accessIPv4: AccessIPv4 | UnsetType = UNSET
    accessIPv6: AccessIPv6 | UnsetType = UNSET
    description: (
        Annotated[Description | None, Meta(description="2.19 and later (400 before).")] | UnsetType
    ) = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"required": ["imageRef"], "properties": {"imageRef": {"minLength": 1}}},
            {
                "required": ["block_device_mapping_v2"],
                "properties": {"block_device_mapping_v2": {"contains": IMAGE_MAPPING}},
            },
            {
                "required": ["block_device_mapping_v2"],
                "properties": {
                    "imageRef": {"maxLength": 0},
                    "block_device_mapping_v2": {"contains": BOOT_VOLUME_MAPPING},
                },
            },
        ]
    }

    @property
    def image(self) -> str:
        """The image to boot: ``imageRef``, the boot image of the block device mappings, or ""
        for a server booted from a volume."""
        if self.imageRef:
            return self.imageRef
        return next((m.uuid for m in self.block_device_mapping_v2 or () if m.is_image), "")

    def __post_init__(self) -> None:
        check_name(self.name)
        check_description(self.description)
        if isinstance(self.user_data, str) and re.fullmatch(BASE64, self.user_data) is None:
            raise ValueError("'user_data' must be base64")
        mappings = self.block_device_mapping_v2 or []
        boot_images = {m.uuid for m in mappings if m.is_image}
        boot_volumes = [m.uuid for m in mappings if m.boots and not m.is_image]
        if len(boot_volumes) > 1:
            raise ValueError("only one volume of block_device_mapping_v2 may have boot_index 0")
        if boot_volumes and (self.imageRef or boot_images):
            raise ValueError(
                "a server booted from a volume has no imageRef (leave it out or empty) and no image mapping"
            )
        if not self.imageRef and not boot_images and not boot_volumes:
            raise ValueError(
                "'imageRef' is a required property (or a boot image or volume in block_device_mapping_v2)"
            )
        if self.imageRef and boot_images - {self.imageRef}:
            raise ValueError("the image of block_device_mapping_v2 boot_index 0 is not imageRef")


class ServerCreateRequest(Request):
    server: ServerCreate
    scheduler_hints: dict[str, Any] | UnsetType = msgspec.field(default=UNSET, name="os:scheduler_hints")


DescriptionChange = (
    Annotated[Description | None, Meta(description="2.19 and later (400 before); null: none.")] | UnsetType
)


class ServerUpdate(Request):
    """What changes: the name, the access addresses (an address of that version, or empty), the
    description (2.19 and later)."""

    name: ServerName | UnsetType = UNSET
    accessIPv4: AccessIPv4 | UnsetType = UNSET
    accessIPv6: AccessIPv6 | UnsetType = UNSET
    description: DescriptionChange = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.name, str):
            check_name(self.name)
        check_description(self.description)


class ServerUpdateRequest(Request):
    server: ServerUpdate


class ServerQuery(Query):
    name: (
        Annotated[Text, Meta(description="Servers whose name matches this regular expression.")] | UnsetType
    ) = UNSET
    image: Annotated[Text, Meta(description="Servers booted from this image id.")] | UnsetType = UNSET
    flavor: Annotated[Text, Meta(description="Servers of this flavor id.")] | UnsetType = UNSET
    ip: (
        Annotated[Text, Meta(description="Servers with a fixed address matching this regular expression.")]
        | UnsetType
    ) = UNSET
    changes_since: (
        Annotated[TimeParameter, Meta(description="Servers changed since this time, deleted ones too.")]
        | UnsetType
    ) = msgspec.field(default=UNSET, name="changes-since")
    status: (
        Annotated[Text, Meta(description="Servers in this status (ACTIVE, SHUTOFF...; none for another).")]
        | UnsetType
    ) = UNSET
    marker: (
        Annotated[Id, Meta(description="The last server of the previous page (it must exist, else 400).")]
        | UnsetType
    ) = UNSET
    limit: (
        Annotated[int, Meta(ge=0, le=MAX_AMOUNT, description="At most this many servers (and 1000).")]
        | UnsetType
    ) = UNSET
    all_tenants: Annotated[bool, Meta(description="Admins: every project's servers.")] = False


# -- responses --------------------------------------------------------------------------------


class SecurityGroupName(Body):
    name: str


class Address(Body):
    addr: str
    version: Literal[4, 6]
    type: Literal["fixed", "floating"] = msgspec.field(name="OS-EXT-IPS:type")
    mac_addr: str = msgspec.field(name="OS-EXT-IPS-MAC:mac_addr")


class AttachedVolumeId(Body):
    id: str


class ServerFault(Body):
    """Why the server is in ERROR."""

    message: str
    code: int | UnsetType = UNSET
    created: Time | UnsetType = UNSET


Admin = Annotated[str, Meta(description="Admins.")]
AdminSince23 = Annotated[str, Meta(description="Admins, 2.3 and later.")]


class ServerSummary(Body):
    id: str
    name: str
    links: list[Link]


ShownDescription = Annotated[str | None, Meta(description="2.19 and later.")] | UnsetType


class Server(Body):
    """A server at the request's microversion (Nova 2.1-2.21)."""

    id: str
    name: str
    links: list[Link]
    status: Status
    tenant_id: str
    user_id: str
    metadata: dict[str, str]
    hostId: str
    image: Reference | Literal[""]
    flavor: Reference
    created: Time
    updated: Time
    addresses: dict[str, list[Address]]
    accessIPv4: str
    accessIPv6: str
    key_name: str | None
    config_drive: str
    disk_config: Literal["MANUAL", "AUTO"] = msgspec.field(name="OS-DCF:diskConfig")
    availability_zone: str = msgspec.field(name="OS-EXT-AZ:availability_zone")
    vm_state: VmState = msgspec.field(name="OS-EXT-STS:vm_state")
    task_state: TaskState | None = msgspec.field(name="OS-EXT-STS:task_state")
    power_state: PowerState = msgspec.field(name="OS-EXT-STS:power_state")
    launched_at: Time | None = msgspec.field(name="OS-SRV-USG:launched_at")
    terminated_at: Time | None = msgspec.field(name="OS-SRV-USG:terminated_at")
    volumes_attached: list[AttachedVolumeId] = msgspec.field(name="os-extended-volumes:volumes_attached")
    security_groups: (
        Annotated[list[SecurityGroupName], Meta(description="The groups of its ports; none without ports.")]
        | UnsetType
    ) = UNSET
    host: Annotated[str | None, Meta(description="Admins.")] | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:host"
    )
    hypervisor_hostname: Annotated[str | None, Meta(description="Admins.")] | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:hypervisor_hostname"
    )
    instance_name: Admin | UnsetType = msgspec.field(default=UNSET, name="OS-EXT-SRV-ATTR:instance_name")
    reservation_id: AdminSince23 | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:reservation_id"
    )
    launch_index: Annotated[int, Meta(description="Admins, 2.3 and later.")] | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:launch_index"
    )
    hostname: AdminSince23 | UnsetType = msgspec.field(default=UNSET, name="OS-EXT-SRV-ATTR:hostname")
    kernel_id: AdminSince23 | UnsetType = msgspec.field(default=UNSET, name="OS-EXT-SRV-ATTR:kernel_id")
    ramdisk_id: AdminSince23 | UnsetType = msgspec.field(default=UNSET, name="OS-EXT-SRV-ATTR:ramdisk_id")
    root_device_name: AdminSince23 | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:root_device_name"
    )
    user_data: Annotated[None, Meta(description="Admins, 2.3 and later.")] | UnsetType = msgspec.field(
        default=UNSET, name="OS-EXT-SRV-ATTR:user_data"
    )
    locked: Annotated[bool, Meta(description="2.9 and later.")] | UnsetType = UNSET
    host_status: Annotated[HostStatus, Meta(description="Admins, 2.16 and later.")] | UnsetType = UNSET
    description: ShownDescription = UNSET
    fault: ServerFault | UnsetType = UNSET
    progress: Progress | UnsetType = UNSET
    resources: LiveSize | UnsetType = msgspec.field(default=UNSET, name="aiostack:resources")


class ServerUpdated(Body):
    """A server as Nova's update (and rebuild) answers show it: without the extension attributes."""

    id: str
    name: str
    links: list[Link]
    status: Status
    tenant_id: str
    user_id: str
    metadata: dict[str, str]
    hostId: str
    image: Reference | Literal[""]
    flavor: Reference
    created: Time
    updated: Time
    addresses: dict[str, list[FixedAddress]]
    accessIPv4: str
    accessIPv6: str
    disk_config: Literal["MANUAL", "AUTO"] = msgspec.field(name="OS-DCF:diskConfig")
    progress: Progress | UnsetType = UNSET
    locked: Annotated[bool, Meta(description="2.9 and later.")] | UnsetType = UNSET
    description: ShownDescription = UNSET
    fault: ServerFault | UnsetType = UNSET


class ServerUpdatedBody(Body):
    server: ServerUpdated


class ServerRebuilt(ServerUpdated, kw_only=True):
    adminPass: str


class ServerRebuiltBody(Body):
    server: ServerRebuilt


class FixedAddress(Body):
    addr: str
    version: Literal[4, 6]


class ServerAddresses(Body):
    addresses: dict[str, list[FixedAddress]]


class ServerList(Body):
    servers: list[ServerSummary]
    servers_links: (
        Annotated[list[Link], Meta(description="A next link when the page is full.")] | UnsetType
    ) = UNSET


class ServerDetailList(Body):
    servers: list[Server]
    servers_links: (
        Annotated[list[Link], Meta(description="A next link when the page is full.")] | UnsetType
    ) = UNSET


class ServerShown(Body):
    server: Server


class ServerCreated(Body):
    """Nova's create answer: no name, the admin password once."""

    id: str
    links: list[Link]
    disk_config: Literal["MANUAL"] = msgspec.field(name="OS-DCF:diskConfig")
    security_groups: list[SecurityGroupName]
    adminPass: str


class ServerCreatedBody(Body):
    server: ServerCreated


# -- views ------------------------------------------------------------------------------------

DEFAULT_GROUP = "default"


def server_summary(request: web.Request, instance: Instance) -> ServerSummary:
    return ServerSummary(
        id=instance["id"], name=instance["name"], links=links(request, "servers", instance["id"])
    )


class ServerView:
    """How the servers of one answer are shown: the request's microversion, admin or not, and its
    links' base, read once; each flavor's and image's reference, each (project, host)'s ``hostId``
    and each list of security group names made once per answer (a page of 100 servers shares a
    few): the same object stands in each server that shows it, which the encoder does not mind."""

    def __init__(self, request: web.Request) -> None:
        self.admin = context_of(request).is_admin
        self.version = microversion(request)
        self.base = link_base(request)
        self._references: dict[tuple[str, str], Reference] = {}
        self._host_ids: dict[tuple[str, str], str] = {}
        self._group_names: dict[tuple[str, ...], list[SecurityGroupName]] = {}

    def reference(self, kind: str, resource_id: str) -> Reference:
        """A flavor's or image's id with its links."""
        made = self._references.get((kind, resource_id))
        if made is None:
            made = self._references[kind, resource_id] = Reference(
                id=resource_id, links=links_at(self.base, kind, resource_id)
            )
        return made

    def group_names(self, groups: list[str]) -> list[SecurityGroupName]:
        """The ``security_groups`` of a server whose ports are in the groups named ``groups``."""
        made = self._group_names.get(tuple(groups))
        if made is None:
            made = self._group_names[tuple(groups)] = [SecurityGroupName(name=name) for name in groups]
        return made

    def host_id(self, project_id: str, host: str | None) -> str:
        """Nova's ``hostId``: the host hashed with the project (the same host is another id to
        another project); "" with no host."""
        if not host:
            return ""
        made = self._host_ids.get((project_id, host))
        if made is None:
            made = self._host_ids[project_id, host] = hashlib.sha224((project_id + host).encode()).hexdigest()
        return made

    def detail(self, instance: Instance, volumes: list[AttachedVolumeId], groups: list[str]) -> Server:
        """A server as Nova's API shows it at the request's microversion (2.1-2.21), ``groups``
        the names of its ports' security groups."""
        version = self.version
        image_ref = instance["image_ref"]
        server = Server(
            id=instance["id"],
            name=instance["name"],
            links=links_at(self.base, "servers", instance["id"]),
            status=instance["status"],
            tenant_id=instance["project_id"],
            user_id=instance["user_id"],
            metadata=instance["metadata"],
            hostId=self.host_id(instance["project_id"], instance["host"]),
            image=self.reference("images", image_ref) if image_ref else "",
            flavor=self.reference("flavors", instance["flavor"]["id"]),
            created=instance["created_at"],
            updated=instance["updated_at"],
            addresses=instance["addresses"],  # type: ignore[arg-type]  # as the node saw its ports
            accessIPv4=instance["access_ip_v4"],
            accessIPv6=instance["access_ip_v6"],
            key_name=instance["key_name"],
            progress=0 if instance["status"] in PROGRESS_STATUSES else UNSET,
            config_drive="",
            disk_config="MANUAL",
            availability_zone="nova",
            vm_state=instance["vm_state"],
            task_state=instance["task_state"],
            power_state=instance["power_state"],
            launched_at=instance["launched_at"],
            terminated_at=instance["terminated_at"],
            security_groups=self.group_names(groups) if groups else UNSET,
            volumes_attached=volumes,
            locked=instance["locked"] if version >= (2, 9) else UNSET,
            description=instance["description"] if version >= DESCRIPTION_SINCE else UNSET,
            fault=ServerFault(**instance["fault"]) if instance["fault"] else UNSET,
            resources=live_size(version, instance),
        )
        if self.admin:
            server.host = server.hypervisor_hostname = instance["host"]
            server.instance_name = f"instance-{instance['id']}"
            if version >= (2, 3):
                server.reservation_id = server.kernel_id = server.ramdisk_id = ""
                server.launch_index = 0
                server.hostname = instance["name"]
                server.root_device_name = "/dev/vda"
                server.user_data = None
            if version >= (2, 16):
                server.host_status = instance.get("host_status", "")
        return server


def server_detail(
    request: web.Request, instance: Instance, volumes: list[AttachedVolumeId], groups: list[str]
) -> Server:
    """One server as ``ServerView.detail`` shows it."""
    return ServerView(request).detail(instance, volumes, groups)


def server_updated(request: web.Request, instance: Instance) -> ServerUpdated:
    """A server as Nova's update and rebuild answers show it: its addresses without the extended
    members."""
    detail = server_detail(request, instance, [], [])
    shown = {name: getattr(detail, name) for name in ServerUpdated.__struct_fields__ if name != "addresses"}
    return ServerUpdated(**shown, addresses=fixed_addresses(instance))


def fixed_addresses(instance: Instance) -> dict[str, list[FixedAddress]]:
    """A server's addresses by network name, each its address and IP version (Nova's ``/ips``)."""
    return {
        network: [FixedAddress(addr=a["addr"], version=a["version"]) for a in addresses]
        for network, addresses in instance["addresses"].items()
    }


async def _volumes_by_server(
    request: web.Request, server_ids: list[str]
) -> dict[str, list[AttachedVolumeId]]:
    """``os-extended-volumes:volumes_attached`` of these servers, in one call."""
    attached: dict[str, list[AttachedVolumeId]] = {}
    for attachment in await client(request, Volumes).list_attachments(server_ids=server_ids):
        if attachment["attach_status"] == "attached":
            attached.setdefault(attachment["server_id"], []).append(
                AttachedVolumeId(id=attachment["volume_id"])
            )
    return attached


async def _volumes_and_groups(
    request: web.Request, server_ids: list[str]
) -> tuple[dict[str, list[AttachedVolumeId]], dict[str, list[str]]]:
    """The attached volumes and the security group names of these servers, asked of the volume
    and net services at once (neither is asked for no server: an empty page)."""
    if not server_ids:
        return {}, {}
    return await asyncio.gather(
        _volumes_by_server(request, server_ids), group_names_by_server(request, server_ids)
    )


def _next_link(
    request: web.Request, query: ServerQuery, count: int, last_id: str | None
) -> list[Link] | UnsetType:
    """Nova's ``servers_links``: a next link when the page is full (``limit`` reached, or without
    one the 1,000 a page holds at most)."""
    if count and count == (query.limit or MAX_PAGE) and last_id is not None:
        return [Link(rel="next", href=str(request.url.update_query(marker=last_id)))]
    return UNSET


async def _instances(request: web.Request, query: ServerQuery) -> list[Instance]:
    return await compute(request).list_instances(
        name=query.name or None,
        status=query.status or None,
        marker=query.marker or None,
        limit=given(query.limit),
        all_projects=query.all_tenants,
        image=query.image or None,
        flavor=query.flavor or None,
        ip=query.ip or None,
        changes_since=given(query.changes_since),
    )


# -- routes -----------------------------------------------------------------------------------

routes = Routes()


@routes.post(
    f"{BASE}/servers",
    "Create a server",
    body=ServerCreateRequest,
    replies=[
        Reply(
            202,
            ServerCreatedBody,
            "Recorded; the build goes on (watch its status or the event socket).",
            headers={"Location": "The server's URL."},
        )
    ],
)
async def create_server(request: web.Request, body: ServerCreateRequest) -> web.Response:
    """Boot a server; 400 when the flavor, image, key pair, a network, port, volume or security
    group does not exist."""
    server = body.server
    check_description_allowed(request, server.description, "server")
    admin_pass = server.adminPass or secrets.token_urlsafe(9)
    block_devices = [
        BlockDevice(
            volume_id=m.uuid,
            device=m.device_name if isinstance(m.device_name, str) else None,
            boot_index=0 if m.boots else None,
            delete_on_termination=m.delete_on_termination is True,
        )
        for m in server.block_device_mapping_v2 or ()
        if not m.is_image
    ]
    instance = await client(request, Compute, timeout=CREATE_TIMEOUT).create_instance(
        name=server.name,
        flavor_ref=str(server.flavorRef),
        image_ref=server.image,
        networks="auto" if server.networks is UNSET else msgspec.to_builtins(server.networks),
        metadata=server.metadata or None,
        key_name=server.key_name or None,
        user_data=server.user_data or None,
        block_devices=block_devices if server.block_device_mapping_v2 is not UNSET else None,
        access_ip_v4=server.accessIPv4 or "",
        access_ip_v6=server.accessIPv6 or "",
        admin_pass=admin_pass,
        security_groups=None
        if server.security_groups is UNSET
        else [group.name for group in server.security_groups],
        description=given(server.description) if microversion(request) >= DESCRIPTION_SINCE else server.name,
    )
    asked = [DEFAULT_GROUP] if server.security_groups is UNSET else [g.name for g in server.security_groups]
    created = ServerCreated(
        id=instance["id"],
        links=links(request, "servers", instance["id"]),
        disk_config="MANUAL",
        security_groups=[SecurityGroupName(name=name) for name in dict.fromkeys(asked)],
        adminPass=admin_pass,
    )
    return json_response(
        ServerCreatedBody(server=created), status=202, headers={"Location": created.links[0].href}
    )


@routes.get(
    f"{BASE}/servers",
    "List servers",
    query=ServerQuery,
    replies=[Reply(200, ServerList, "The servers' ids and names, newest first.")],
)
async def list_servers(request: web.Request, query: ServerQuery) -> web.Response:
    """A page of the project's servers (every project's for an admin with ``all_tenants``);
    400 for a ``marker`` that is no server."""
    instances = await _instances(request, query)
    servers = [server_summary(request, i) for i in instances]
    last = servers[-1].id if servers else None
    return json_response(
        ServerList(servers=servers, servers_links=_next_link(request, query, len(servers), last))
    )


@routes.get(
    f"{BASE}/servers/detail",
    "List servers in detail",
    query=ServerQuery,
    replies=[Reply(200, ServerDetailList, "The servers, newest first.")],
)
async def list_servers_detail(request: web.Request, query: ServerQuery) -> web.Response:
    """A page of the project's servers, each in full; 400 for a ``marker`` that is no server."""
    instances = await _instances(request, query)
    volumes, groups = await _volumes_and_groups(request, [instance["id"] for instance in instances])
    view = ServerView(request)
    servers = [view.detail(i, volumes.get(i["id"], []), groups.get(i["id"], [])) for i in instances]
    last = servers[-1].id if servers else None
    return json_response(
        ServerDetailList(servers=servers, servers_links=_next_link(request, query, len(servers), last))
    )


@routes.get(
    f"{BASE}/servers/{{server_id}}",
    "Show a server",
    replies=[Reply(200, ServerShown, "The server.")],
    errors=ERRORS_OF_A_SERVER,
    path_types=SERVER_ID,
)
async def show_server(request: web.Request) -> web.Response:
    instance = await compute(request).get_instance(instance_uuid=request.match_info["server_id"])
    volumes, groups = await _volumes_and_groups(request, [instance["id"]])
    shown = server_detail(request, instance, volumes.get(instance["id"], []), groups.get(instance["id"], []))
    return json_response(ServerShown(server=shown))


@routes.put(
    f"{BASE}/servers/{{server_id}}",
    "Update a server",
    body=ServerUpdateRequest,
    replies=[Reply(200, ServerUpdatedBody, "The server as it now is.")],
    errors=ERRORS_OF_A_SERVER,
    path_types=SERVER_ID,
)
async def update_server(request: web.Request, body: ServerUpdateRequest) -> web.Response:
    """Rename a server, set its access addresses or (2.19) its description; 400 for an address
    not of its version."""
    changes = body.server
    check_description_allowed(request, changes.description, "server")
    instance = await compute(request).update_instance(
        instance_uuid=request.match_info["server_id"],
        name=given(changes.name),
        access_ip_v4=given(changes.accessIPv4),
        access_ip_v6=given(changes.accessIPv6),
        description=given(changes.description),
        forget_description=changes.description is None,
    )
    return json_response(ServerUpdatedBody(server=server_updated(request, instance)))


@routes.get(
    f"{BASE}/servers/{{server_id}}/ips",
    "List a server's addresses",
    replies=[Reply(200, ServerAddresses, "Its fixed addresses by network name.")],
    errors=ERRORS_OF_A_SERVER,
    path_types=SERVER_ID,
)
async def list_server_addresses(request: web.Request) -> web.Response:
    instance = await compute(request).get_instance(instance_uuid=request.match_info["server_id"])
    return json_response(ServerAddresses(addresses=fixed_addresses(instance)))


@routes.get(
    f"{BASE}/servers/{{server_id}}/ips/{{network}}",
    "List a server's addresses on one network",
    replies=[Reply(200, dict[str, list[FixedAddress]], "Its fixed addresses on the network, by its name.")],
    errors=ERRORS_OF_A_SERVER,
    path_types={**SERVER_ID, "network": Id},
)
async def list_server_addresses_on(request: web.Request) -> web.Response:
    """404: no such server, or it has no address on a network of that name."""
    network = request.match_info["network"]
    instance = await compute(request).get_instance(instance_uuid=request.match_info["server_id"])
    addresses = fixed_addresses(instance)
    if network not in addresses:
        raise NotFound(f"Instance is not a member of specified network {network}")
    return json_response({network: addresses[network]})


@routes.delete(
    f"{BASE}/servers/{{server_id}}",
    "Delete a server",
    replies=[
        Reply(
            204,
            None,
            "Accepted: the server shows task_state deleting until its node has removed it (its ports,"
            " volumes and claim freed), then it is gone (404).",
        )
    ],
    errors=(404, 409),
    path_types=SERVER_ID,
)
async def delete_server(request: web.Request) -> web.Response:
    """As Nova answers: once the conductor has taken the delete, not when it is done. Clients that
    need it gone poll the server until 404 (openstacksdk's ``wait_for_delete``, ``openstack server
    delete --wait``) or watch for ``instance.deleted`` on the event socket."""
    await compute(request).delete_instance(instance_uuid=request.match_info["server_id"])
    return no_content()
