"""The SDK's typed layer: errors, resources as frozen dataclasses, and the managers that make them.

``aiostack.client.Client`` carries one manager per resource: ``client.servers``,
``client.images``, ``client.networks``, ``client.volumes``, ``client.flavors``. An
operation with ``wait=True`` sends its request on the client's websocket and returns when
the event that ends it arrives on that same socket (docs/EVENTS.md): no polling. Such an
operation on a server takes ``on_event``, called with each of the server's events as it arrives
(the CLI's ``--wait`` prints each state the server goes through).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode

COMPUTE = "/compute/v2.1"
OnEvent = Callable[["Event"], None]
"""Called with each event of the resource an operation waits on, as it arrives."""
IMAGES = "/image/v2/images"
NETWORKS = "/network/v2.0/networks"
CONSOLE_MICROVERSION = {"OpenStack-API-Version": "compute 2.6"}
"""The first compute microversion with remote consoles."""
RESIZE_ENDS = frozenset({"instance.active", "instance.shutoff"})
"""The events a confirmed or reverted resize ends with (a stopped server stays stopped)."""
SERVER_MICROVERSION = {"OpenStack-API-Version": "compute 2.19"}
"""The compute microversion servers are created, changed and read at: the first with their description."""
CRASH_DUMP_MICROVERSION = {"OpenStack-API-Version": "compute 2.17"}
"""The first compute microversion with ``trigger_crash_dump``."""
EVACUATE_MICROVERSION = {"OpenStack-API-Version": "compute 2.14"}
"""The first compute microversion whose evacuate takes no ``onSharedStorage`` (and answers no password)."""
LIVE_RESOURCES_MICROVERSION = {"OpenStack-API-Version": "compute 2.16"}
"""aiostack's live change of vCPUs and RAM is served from compute 2.16, and a server shows the size
it has now (``aiostack:resources``) from it."""
LIVE_CHANGE_UNDONE = frozenset({"instance.shutoff", "instance.paused"})
"""The events of a live change its guest ended (it stopped or was paused)."""
LIVE_MIGRATION_MICROVERSION = {"OpenStack-API-Version": "compute 2.25"}
"""The first compute microversion whose live migration takes ``block_migration: auto``."""
SHELVE_UNDONE = frozenset({"instance.active", "instance.shutoff", "instance.paused", "instance.suspended"})
"""The events of a shelve that ended where it began (its node never took it)."""
UNSHELVE_UNDONE = frozenset({"instance.shelved", "instance.shelved_offloaded"})
"""The events of an unshelve that ended shelved again (no host, or its node failed)."""
RESIZE_UNDONE = frozenset({*RESIZE_ENDS, "instance.paused"})
"""The events of a resize that ended before VERIFY_RESIZE: undone (no room on the host), or
abandoned (its guest paused)."""


# -- errors ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """The gateway answered an error: its ``status``, ``message`` and ``request_id`` (for its logs)."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id


class BadRequest(ApiError):
    """400: the request is malformed or asks for something invalid."""


class Unauthorized(ApiError):
    """401: no token, or an expired or revoked one."""


class Forbidden(ApiError):
    """403: the policy does not allow it."""


class NotFound(ApiError):
    """404: no such resource (or none the caller may see)."""


class Conflict(ApiError):
    """409: the resource is not in a state that allows it."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def api_error(status: int, message: str, request_id: str | None = None) -> ApiError:
    """The ``ApiError`` subclass for ``status``."""
    return _BY_STATUS.get(status, ApiError)(status, message, request_id)


def error_message(body: Any) -> str:
    """The message of an OpenStack error body (``{"itemNotFound": {"message": ...}}`` and kin)."""
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(body)


class ResourceFailed(ApiError):
    """A server or volume ended in error while we waited for it: ``resource``, and its ``fault``."""

    def __init__(self, resource: Server | Volume, message: str, request_id: str | None = None) -> None:
        fault = resource.fault if isinstance(resource.fault, dict) else {}
        super().__init__(int(fault.get("code", 500)), message, request_id)
        self.resource = resource
        self.fault = resource.fault

    def __str__(self) -> str:
        kind = type(self.resource).__name__.lower()
        return f"{kind} {self.resource.name or self.resource.id} ({self.resource.id}) failed: {self.message}"


class BuildFailed(ResourceFailed):
    """A server's build ended in ERROR; ``fault["message"]`` says why."""


# -- resources ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A server as ``GET /compute/v2.1/servers/{id}`` shows it; ``raw`` is that whole body."""

    id: str
    name: str
    status: str
    addresses: dict[str, list[dict[str, Any]]]
    flavor_id: str
    image_id: str
    fault: dict[str, Any] | None
    task_state: str | None
    power_state: int | None
    project_id: str
    metadata: dict[str, str]
    volume_ids: tuple[str, ...]
    host: str | None  # admins only
    host_status: str | None  # admins only, microversion 2.16
    vcpus: int | None  # the vCPUs and RAM (MB) it has now, read at 2.16 or later
    ram: int | None
    description: str | None
    created: str
    updated: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Server:
        image = body.get("image")
        return cls(
            id=body["id"],
            name=body["name"],
            status=body["status"],
            addresses=body.get("addresses", {}),
            flavor_id=body["flavor"]["id"],
            image_id=image["id"] if isinstance(image, dict) else "",
            fault=body.get("fault"),
            task_state=body.get("OS-EXT-STS:task_state"),
            power_state=body.get("OS-EXT-STS:power_state"),
            project_id=body["tenant_id"],
            metadata=body.get("metadata", {}),
            volume_ids=tuple(v["id"] for v in body.get("os-extended-volumes:volumes_attached", [])),
            host=body.get("OS-EXT-SRV-ATTR:host"),
            host_status=body.get("host_status"),
            vcpus=body.get("aiostack:resources", {}).get("vcpus"),
            ram=body.get("aiostack:resources", {}).get("ram"),
            description=body.get("description"),
            created=body["created"],
            updated=body["updated"],
            raw=dict(body),
        )

    @property
    def ips(self) -> list[str]:
        """Every fixed IP of every network, in order."""
        return [address["addr"] for addresses in self.addresses.values() for address in addresses]


# the fields of an image that are no extra property
_IMAGE_FIELDS = frozenset(
    (
        "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo", "os_hash_value",
        "owner", "size", "virtual_size", "min_disk", "min_ram", "disk_format", "container_format",
        "created_at", "updated_at", "tags", "self", "file", "schema", "os_hidden",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Image:
    """A Glance v2 image; ``properties`` are its extra properties (``hw_disk_bus``, ``kernel_id``...)."""

    id: str
    name: str
    status: str
    visibility: str
    disk_format: str | None
    container_format: str | None
    size: int | None
    checksum: str | None
    owner: str | None
    min_disk: int
    min_ram: int
    properties: dict[str, Any]
    created_at: str
    updated_at: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Image:
        return cls(
            id=body["id"],
            name=body["name"],
            status=body["status"],
            visibility=body["visibility"],
            disk_format=body.get("disk_format"),
            container_format=body.get("container_format"),
            size=body.get("size"),
            checksum=body.get("checksum"),
            owner=body.get("owner"),
            min_disk=body.get("min_disk") or 0,
            min_ram=body.get("min_ram") or 0,
            properties={key: value for key, value in body.items() if key not in _IMAGE_FIELDS},
            created_at=body["created_at"],
            updated_at=body["updated_at"],
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Network:
    """A Neutron network and the ids of its subnets."""

    id: str
    name: str
    status: str
    shared: bool
    project_id: str | None
    mtu: int | None
    subnet_ids: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Network:
        return cls(
            id=body["id"],
            name=body["name"],
            status=body.get("status", "ACTIVE"),
            shared=bool(body.get("shared")),
            project_id=body.get("project_id"),
            mtu=body.get("mtu"),
            subnet_ids=tuple(body.get("subnets") or ()),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class InterfaceAttachment:
    """A port of a server (Nova's os-interface): its network, MAC, state and addresses."""

    port_id: str
    net_id: str
    mac_addr: str
    port_state: str
    ip_addresses: tuple[str, ...]

    @classmethod
    def from_nova(cls, body: Mapping[str, Any]) -> InterfaceAttachment:
        """From Nova's ``interfaceAttachment``."""
        return cls(
            body["port_id"],
            body["net_id"],
            body["mac_addr"],
            body["port_state"],
            tuple(fixed["ip_address"] for fixed in body["fixed_ips"]),
        )


@dataclass(frozen=True, slots=True)
class VolumeAttachment:
    """A volume attached to a server, at ``device``."""

    server_id: str
    volume_id: str
    device: str | None

    @classmethod
    def from_nova(cls, body: Mapping[str, Any]) -> VolumeAttachment:
        """From Nova's ``volumeAttachment``."""
        return cls(body["serverId"], body["volumeId"], body.get("device"))

    @classmethod
    def from_cinder(cls, body: Mapping[str, Any]) -> VolumeAttachment:
        """From an item of a Cinder volume's ``attachments``."""
        return cls(body["server_id"], body["volume_id"], body.get("device"))


@dataclass(frozen=True, slots=True)
class Volume:
    """A Cinder volume; ``fault`` says what went wrong with its file, when something did."""

    id: str
    name: str
    status: str
    size: int
    description: str | None
    attachments: tuple[VolumeAttachment, ...]
    metadata: dict[str, str]
    fault: str | None
    created_at: str
    updated_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Volume:
        return cls(
            id=body["id"],
            name=body.get("name") or "",
            status=body["status"],
            size=body["size"],
            description=body.get("description"),
            attachments=tuple(VolumeAttachment.from_cinder(a) for a in body.get("attachments", [])),
            metadata=body.get("metadata") or {},
            fault=body.get("fault"),
            created_at=body["created_at"],
            updated_at=body.get("updated_at"),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Flavor:
    """A Nova flavor: ``ram`` in MiB, ``disk`` in GiB."""

    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    ephemeral: int
    is_public: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Flavor:
        return cls(
            id=str(body["id"]),
            name=body["name"],
            vcpus=body["vcpus"],
            ram=body["ram"],
            disk=body["disk"],
            ephemeral=body.get("OS-FLV-EXT-DATA:ephemeral", 0),
            is_public=body.get("os-flavor-access:is_public", True),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Keypair:
    """A Nova key pair: ``private_key`` only in the answer of the create that generated it."""

    name: str
    type: str
    fingerprint: str
    public_key: str
    private_key: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        """A key pair's name is its id."""
        return self.name

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Keypair:
        return cls(
            name=body["name"],
            type=body.get("type", "ssh"),
            fingerprint=body.get("fingerprint", ""),
            public_key=body.get("public_key", ""),
            private_key=body.get("private_key"),
            raw=dict(body),
        )


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One state change, as docs/EVENTS.md describes it; ``seq`` is its place in the event stream."""

    seq: int
    kind: str
    id: str
    project: str
    type: str
    ts: float
    request_id: str | None
    state: dict[str, Any]

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Event:
        event = frame["event"]
        return cls(
            frame["seq"],
            event["kind"],
            event["id"],
            event["project"],
            event["type"],
            event["ts"],
            event.get("request_id"),
            event["state"],
        )


class EventsExpired(Exception):
    """The stream no longer keeps the events after the requested resume point."""

    def __init__(self, requested_seq: int, first_seq: int) -> None:
        super().__init__(f"events after {requested_seq} are gone: the stream now starts at {first_seq}")
        self.requested_seq = requested_seq
        self.first_seq = first_seq


class Watch:
    """The socket's events from the moment the watch was opened, to wait on or iterate."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()

    def put(self, item: Event | BaseException) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def until(
        self,
        resource_id: str,
        types: Collection[str],
        timeout: float | None = None,
        on_event: OnEvent | None = None,
    ) -> Event:
        """The first event of one of ``types`` for ``resource_id``; ``on_event`` is called with each
        of its events until then, that one included. :raises TimeoutError:"""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await anext(self)
                    if event.id != resource_id:
                        continue
                    if on_event is not None:
                        on_event(event)
                    if event.type in types:
                        return event
        except TimeoutError:
            wanted = " or ".join(sorted(types))
            raise TimeoutError(f"no {wanted} event for {resource_id} within {timeout} s") from None


class Transport(Protocol):
    """What the managers ask of the client that carries them (``aiostack.client.Client``)."""

    project_id: str | None
    images: ImageManager
    flavors: FlavorManager
    networks: NetworkManager
    volumes: VolumeManager

    async def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any: ...

    async def ws_request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any: ...

    async def upload(self, path: str, data: AsyncIterator[bytes]) -> None: ...

    def watch(self) -> AbstractAsyncContextManager[Watch]: ...

    def connect_console(self, url: str) -> AbstractAsyncContextManager[SerialConsole]: ...


class SerialConsole(Protocol):
    """A server's live serial console (``client.servers.serial_console``): bytes both ways."""

    async def read(self) -> bytes:
        """The next bytes the guest wrote; ``b""`` once the console is closed."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the guest's serial port (keystrokes: ``b"ls\r"``)."""
        ...


# -- managers -------------------------------------------------------------------------------------

R = TypeVar("R", Server, Image, Network, Volume, Flavor)


class _Manager(Generic[R]):
    """What every manager does: find a resource's id from its name or id."""

    kind: ClassVar[str]

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _summaries_path(self) -> str:
        raise NotImplementedError

    async def find_id(self, ref: R | str) -> str:
        """The id of a resource given as itself, its id or its (unique) name.

        :raises NotFound: none has that id or name. :raises Conflict: several have that name.
        """
        if not isinstance(ref, str):
            return ref.id
        items = (await self._client.request("GET", self._summaries_path()))[f"{self.kind}s"]
        named = []
        for item in items:
            if str(item["id"]) == ref:
                return ref
            if item.get("name") == ref:
                named.append(str(item["id"]))
        if not named:
            raise NotFound(404, f"no {self.kind} named {ref!r}")
        if len(named) > 1:
            raise Conflict(409, f"{len(named)} {self.kind}s are named {ref!r}: use an id")
        return named[0]


def _query(path: str, filters: Mapping[str, Any]) -> str:
    return f"{path}?{urlencode(filters)}" if filters else path


class ServerManager(_Manager[Server]):
    """``client.servers``: servers, their power actions, console and volumes."""

    kind = "server"

    def _summaries_path(self) -> str:
        return f"{COMPUTE}/servers"

    async def __call__(self) -> builtins.list[dict[str, Any]]:
        """``await client.servers()``, as before the managers: every server as the REST API shows it."""
        return [server.raw for server in await self.list()]

    async def list(self, **filters: Any) -> builtins.list[Server]:
        """The caller's servers (``name``, ``status``, ``all_tenants`` filter as in Nova)."""
        path = _query(f"{COMPUTE}/servers/detail", filters)
        body = await self._client.request("GET", path, headers=SERVER_MICROVERSION)
        return [Server.from_api(server) for server in body["servers"]]

    async def get(self, server: Server | str) -> Server:
        """One server, fresh. :raises NotFound:"""
        server_id = await self.find_id(server)
        path = f"{COMPUTE}/servers/{server_id}"
        shown = await self._client.request("GET", path, headers=SERVER_MICROVERSION)
        return Server.from_api(shown["server"])

    async def create(
        self,
        name: str,
        *,
        image: Image | str | None = None,
        flavor: Flavor | str,
        network: Network | str | None = None,
        metadata: dict[str, str] | None = None,
        boot_volume: Volume | str | None = None,
        delete_volume_on_termination: bool = False,
        key_name: Keypair | str | None = None,
        user_data: bytes | str | None = None,
        security_groups: builtins.list[str] | None = None,
        description: str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Boot a server from ``image``, or from the bootable volume ``boot_volume`` (deleted with the
        server when ``delete_volume_on_termination``), on ``network``, else the project's default;
        ``key_name``: the key pair root logs in with; ``user_data``: what the guest runs at its first
        boot (a script, cloud-config); ``security_groups``: the names (or ids) of the project's
        security groups its ports join (None: ``default``); ``description``: what it is for (up to
        255 characters); with ``wait``, return once its
        ``instance.active`` event arrives (``on_event`` called with each of its events meanwhile).

        :raises ValueError: neither or both of ``image`` and ``boot_volume``.
        :raises BuildFailed: it went to ERROR instead (``fault`` says why).
        :raises TimeoutError: neither happened within ``timeout`` seconds.
        """
        if (image is None) == (boot_volume is None):
            raise ValueError("give an image or a boot volume (one of them)")
        client = self._client
        body: dict[str, Any] = {
            "name": name,
            "flavorRef": await client.flavors.find_id(flavor),
            "networks": [{"uuid": await client.networks.find_id(network)}] if network else "auto",
        }
        if image is not None:
            body["imageRef"] = await client.images.find_id(image)
        elif boot_volume is not None:
            mapping = {
                "uuid": await client.volumes.find_id(boot_volume),
                "source_type": "volume",
                "destination_type": "volume",
                "boot_index": 0,
                "delete_on_termination": delete_volume_on_termination,
            }
            body["block_device_mapping_v2"] = [mapping]
        if metadata:
            body["metadata"] = metadata
        if key_name is not None:
            body["key_name"] = key_name if isinstance(key_name, str) else key_name.name
        if user_data is not None:
            data = user_data.encode() if isinstance(user_data, str) else user_data
            body["user_data"] = base64.b64encode(data).decode()
        if security_groups is not None:
            body["security_groups"] = [{"name": group} for group in security_groups]
        if description is not None:
            body["description"] = description
        path = f"{COMPUTE}/servers"
        if not wait:
            answer = await client.request("POST", path, {"server": body}, SERVER_MICROVERSION)
            return await self.get(answer["server"]["id"])
        async with client.watch() as watch:
            answer = await client.ws_request("POST", path, {"server": body}, SERVER_MICROVERSION)
            server_id = answer["server"]["id"]
            await self._until(watch, server_id, "instance.active", timeout, BuildFailed, on_event)
        return await self.get(answer["server"]["id"])

    async def delete(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> None:
        """Delete a server; with ``wait``, return once its ``instance.deleted`` event arrives."""
        server_id = await self.find_id(server)
        path = f"{COMPUTE}/servers/{server_id}"
        if not wait:
            await self._client.request("DELETE", path)
            return
        async with self._client.watch() as watch:
            await self._client.ws_request("DELETE", path)
            await self._until(watch, server_id, "instance.deleted", timeout, ResourceFailed, on_event)

    async def stop(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Power a server off; with ``wait``, return it once SHUTOFF."""
        return await self._action(server, {"os-stop": None}, "instance.shutoff", wait, timeout, on_event)

    async def start(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Power a server on; with ``wait``, return it once ACTIVE."""
        return await self._action(server, {"os-start": None}, "instance.active", wait, timeout, on_event)

    async def reboot(
        self,
        server: Server | str,
        *,
        hard: bool = False,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Reboot a server (soft: ACPI; ``hard``: power cycle); with ``wait``, return it once ACTIVE."""
        action = {"reboot": {"type": "HARD" if hard else "SOFT"}}
        return await self._action(server, action, "instance.active", wait, timeout, on_event)

    async def resize(
        self, server: Server | str, flavor: Flavor | str, *, wait: bool = True, timeout: float = 300.0
    ) -> Server:
        """Resize a server to ``flavor``; with ``wait``, return it once VERIFY_RESIZE (then
        ``confirm_resize`` or ``revert_resize``). :raises ResourceFailed: it went to ERROR, or
        the resize ended without reaching VERIFY_RESIZE."""
        action = {"resize": {"flavorRef": await self._client.flavors.find_id(flavor)}}
        verify = "instance.verify_resize"
        return await self._action(server, action, verify, wait, timeout, undone=RESIZE_UNDONE)

    async def evacuate(
        self,
        server: Server | str,
        host: str | None = None,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Evacuate a server whose host is down (admins): built again on ``host`` (None: the
        scheduler's choice); with ``wait``, return it once ACTIVE (or SHUTOFF, as it was).
        :raises ResourceFailed: it went to ERROR."""
        action: dict[str, Any] = {"evacuate": {} if host is None else {"host": host}}
        return await self._action(
            server, action, RESIZE_ENDS, wait, timeout, on_event, headers=EVACUATE_MICROVERSION
        )

    async def set_resources(
        self,
        server: Server | str,
        *,
        vcpus: int | None = None,
        ram: int | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> Server:
        """Change a running server's vCPUs and RAM (MB) live, within its flavor's maxima (what is
        None stays); with ``wait``, return it once the change is done (``vcpus`` and ``ram`` show
        its size). :raises ResourceFailed: it went to ERROR, its guest stopped meanwhile, or its
        hypervisor refused the change (the server keeps the size it had)."""
        size = {name: value for name, value in (("vcpus", vcpus), ("ram", ram)) if value is not None}
        action = {"aiostack:setResources": size}
        await self._action(
            server,
            action,
            "instance.active",
            wait,
            timeout,
            headers=LIVE_RESOURCES_MICROVERSION,
            undone=LIVE_CHANGE_UNDONE,
        )
        changed = await self.sized(server)
        if wait and any(getattr(changed, name) != value for name, value in size.items()):
            raise ResourceFailed(
                changed, f"the change was refused: it has {changed.vcpus} vCPUs, {changed.ram} MB"
            )
        return changed

    async def sized(self, server: Server | str) -> Server:
        """One server, fresh, with the vCPUs and RAM it has now (``vcpus``, ``ram``)."""
        server_id = await self.find_id(server)
        path = f"{COMPUTE}/servers/{server_id}"
        return Server.from_api(
            (await self._client.request("GET", path, None, LIVE_RESOURCES_MICROVERSION))["server"]
        )

    async def set_description(self, server: Server | str, description: str | None) -> Server:
        """Describe a server (up to 255 characters; None: no description); the server as it now is."""
        path = f"{COMPUTE}/servers/{await self.find_id(server)}"
        body = {"server": {"description": description}}
        return Server.from_api((await self._client.request("PUT", path, body, SERVER_MICROVERSION))["server"])

    async def trigger_crash_dump(self, server: Server | str) -> None:
        """Inject an NMI into the guest (a kernel set up for it dumps its memory and reboots).
        :raises Conflict: the server is not active, paused, resized or in error, or is locked.
        :raises BadRequest: its host cannot inject an NMI."""
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/action"
        await self._client.request("POST", path, {"trigger_crash_dump": None}, CRASH_DUMP_MICROVERSION)

    async def migrate(self, server: Server | str, *, wait: bool = True, timeout: float = 300.0) -> Server:
        """Cold-migrate a server to another host (admins; the scheduler's choice); with ``wait``,
        return it once VERIFY_RESIZE (then ``confirm_resize`` or ``revert_resize``).
        :raises ResourceFailed: it went to ERROR, or the migration ended before VERIFY_RESIZE."""
        verify = "instance.verify_resize"
        return await self._action(server, {"migrate": None}, verify, wait, timeout, undone=RESIZE_UNDONE)

    async def live_migrate(
        self,
        server: Server | str,
        host: str | None = None,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Live-migrate a server (admins) to ``host`` (None: the scheduler's choice); with
        ``wait``, return it once ACTIVE again (on its new host, or on its own if it was rolled
        back). :raises ResourceFailed: it went to ERROR."""
        action = {"os-migrateLive": {"host": host, "block_migration": "auto"}}
        return await self._action(
            server, action, "instance.active", wait, timeout, on_event, headers=LIVE_MIGRATION_MICROVERSION
        )

    async def shelve(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Shelve a server (its disk saved as the image ``<name>-shelved``); with ``wait``, return
        it once SHELVED, or SHELVED_OFFLOADED when the cloud offloads it at once.
        :raises ResourceFailed: it went to ERROR, or the shelve ended where it began."""
        server_id = await self.find_id(server)
        if not wait:
            return await self._action(server_id, {"shelve": None}, "instance.shelved", wait, timeout)
        async with self._client.watch() as watch:
            await self._client.ws_request("POST", f"{COMPUTE}/servers/{server_id}/action", {"shelve": None})
            shelved = frozenset({"instance.shelved", "instance.shelved_offloaded"})
            await self._until(
                watch, server_id, shelved, timeout, ResourceFailed, on_event, undone=SHELVE_UNDONE
            )
            shown = await self.get(server_id)
            if shown.task_state == "shelving_offloading":  # recorded before instance.shelved was published
                offloaded = "instance.shelved_offloaded"
                await self._until(watch, server_id, offloaded, timeout, ResourceFailed, on_event)
        return await self.get(server_id)

    async def shelve_offload(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Offload a SHELVED server (admins): its host's resources freed; with ``wait``, return it
        once SHELVED_OFFLOADED. :raises ResourceFailed: the offload ended SHELVED."""
        offloaded = "instance.shelved_offloaded"
        undone = frozenset({"instance.shelved"})
        return await self._action(
            server, {"shelveOffload": None}, offloaded, wait, timeout, on_event, undone=undone
        )

    async def unshelve(
        self,
        server: Server | str,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        on_event: OnEvent | None = None,
    ) -> Server:
        """Unshelve a SHELVED or SHELVED_OFFLOADED server (on any host once offloaded); with
        ``wait``, return it once ACTIVE. :raises ResourceFailed: it ended shelved again, or ERROR."""
        return await self._action(
            server, {"unshelve": None}, "instance.active", wait, timeout, on_event, undone=UNSHELVE_UNDONE
        )

    async def confirm_resize(self, server: Server | str) -> Server:
        """Keep a resize (VERIFY_RESIZE): the server is ACTIVE (or SHUTOFF) again when this returns."""
        server_id = await self.find_id(server)
        await self._client.request("POST", f"{COMPUTE}/servers/{server_id}/action", {"confirmResize": None})
        return await self.get(server_id)

    async def revert_resize(
        self, server: Server | str, *, wait: bool = True, timeout: float = 300.0
    ) -> Server:
        """Undo a resize (VERIFY_RESIZE): the old flavor again; with ``wait``, return the server once
        ACTIVE (or SHUTOFF, as it was)."""
        return await self._action(server, {"revertResize": None}, RESIZE_ENDS, wait, timeout)

    async def console_output(self, server: Server | str, lines: int | None = None) -> str:
        """The server's serial console log (its last ``lines`` lines when given)."""
        argument = {} if lines is None else {"length": lines}
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/action"
        answer = await self._client.request("POST", path, {"os-getConsoleOutput": argument})
        return str(answer["output"])

    async def console_url(self, server: Server | str) -> str:
        """A URL of the server's serial console websocket, with a one-time token (Nova 2.6's
        remote-consoles). :raises Conflict: the server is not ACTIVE, or its host has no serial console."""
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/remote-consoles"
        body = {"remote_console": {"protocol": "serial", "type": "serial"}}
        answer = await self._client.request("POST", path, body, headers=CONSOLE_MICROVERSION)
        return str(answer["remote_console"]["url"])

    def serial_console(self, server: Server | str) -> AbstractAsyncContextManager[SerialConsole]:
        """``async with client.servers.serial_console(server) as console:`` the server's live serial
        console (``await console.read()``, ``await console.write(b"...")``), closed with the block.
        :raises Conflict: the server is not ACTIVE, or its host has no serial console."""
        return _opened_console(self, server)

    async def attach_volume(
        self, server: Server | str, volume: Volume | str, device: str | None = None
    ) -> VolumeAttachment:
        """Attach an available volume; it is in-use when this returns."""
        body: dict[str, Any] = {"volumeId": await self._client.volumes.find_id(volume)}
        if device:
            body["device"] = device
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/os-volume_attachments"
        answer = await self._client.request("POST", path, {"volumeAttachment": body})
        return VolumeAttachment.from_nova(answer["volumeAttachment"])

    async def detach_volume(self, server: Server | str, volume: Volume | str) -> None:
        """Detach a volume; it is available again when this returns."""
        volume_id = await self._client.volumes.find_id(volume)
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/os-volume_attachments/{volume_id}"
        await self._client.request("DELETE", path)

    async def interfaces(self, server: Server | str) -> builtins.list[InterfaceAttachment]:
        """The server's ports."""
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/os-interface"
        answer = await self._client.request("GET", path)
        return [InterfaceAttachment.from_nova(body) for body in answer["interfaceAttachments"]]

    async def attach_interface(
        self,
        server: Server | str,
        *,
        port: str | None = None,
        network: str | None = None,
        fixed_ip: str | None = None,
    ) -> InterfaceAttachment:
        """Hot-plug a port (an unbound one of the project, by id), or a new port on ``network`` (name
        or id; at ``fixed_ip`` if given) into the server; it is plugged when this returns."""
        body: dict[str, Any] = {}
        if port is not None:
            body["port_id"] = port
        if network is not None:
            body["net_id"] = await self._client.networks.find_id(network)
        if fixed_ip is not None:
            body["fixed_ips"] = [{"ip_address": fixed_ip}]
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/os-interface"
        answer = await self._client.request("POST", path, {"interfaceAttachment": body})
        return InterfaceAttachment.from_nova(answer["interfaceAttachment"])

    async def detach_interface(self, server: Server | str, port: str) -> None:
        """Take a port out of the server: deleted if it was made for it, else unbound and kept."""
        path = f"{COMPUTE}/servers/{await self.find_id(server)}/os-interface/{port}"
        await self._client.request("DELETE", path)

    async def _action(
        self,
        server: Server | str,
        action: dict[str, Any],
        done: str | frozenset[str],
        wait: bool,
        timeout: float,
        on_event: OnEvent | None = None,
        headers: dict[str, str] | None = None,
        *,
        undone: frozenset[str] = frozenset(),
    ) -> Server:
        server_id = await self.find_id(server)
        path = f"{COMPUTE}/servers/{server_id}/action"
        if not wait:
            await self._client.request("POST", path, action, headers)
        else:
            async with self._client.watch() as watch:
                await self._client.ws_request("POST", path, action, headers)
                await self._until(watch, server_id, done, timeout, ResourceFailed, on_event, undone=undone)
        return await self.get(server_id)

    async def _until(
        self,
        watch: Watch,
        server_id: str,
        done: str | frozenset[str],
        timeout: float,
        failure: type[ResourceFailed],
        on_event: OnEvent | None = None,
        *,
        undone: frozenset[str] = frozenset(),
    ) -> None:
        """Wait for the server's ``done`` event (one of them; ``on_event`` called with each of its events).

        :raises failure: it went to ERROR instead, or an ``undone`` event came (the change
            ended without its end). :raises NotFound: it was deleted instead.

        An ``undone`` event of a server still in a task is no end: the conductor publishes the
        state of a change whose event was missed as ``instance.<status>``, and a server's status
        may be its vm_state's while a task runs (ACTIVE while it is shelving).
        """
        wanted = {done} if isinstance(done, str) else set(done)
        ends = {*wanted, *undone, "instance.error", "instance.deleted"}
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            event = await watch.until(server_id, ends, left, on_event)
            if event.type not in undone:
                break
            server = await self.get(server_id)
            if server.task_state is None:
                raise failure(server, f"it ended {server.status} instead ({event.type})", event.request_id)
        if event.type in wanted:
            return
        if event.type == "instance.deleted":
            raise NotFound(404, f"server {server_id} was deleted", event.request_id)
        server = await self.get(server_id)
        fault = server.fault or event.state.get("fault") or {}
        raise failure(server, str(fault.get("message", "the server is in ERROR")), event.request_id)


@asynccontextmanager
async def _opened_console(servers: ServerManager, server: Server | str) -> AsyncIterator[SerialConsole]:
    async with servers._client.connect_console(await servers.console_url(server)) as console:
        yield console


class ImageManager(_Manager[Image]):
    """``client.images``: Glance images, and uploading their data."""

    kind = "image"

    def _summaries_path(self) -> str:
        return f"{IMAGES}?limit=1000"

    async def list(self, **filters: Any) -> builtins.list[Image]:
        """Every image the caller may see (``name``, ``status``, ``visibility`` filter), page after page."""
        images: builtins.list[Image] = []
        path: str | None = _query(IMAGES, {"limit": 1000, **filters})
        while path is not None:
            body = await self._client.request("GET", path)
            images += [Image.from_api(image) for image in body["images"]]
            path = "/image" + body["next"] if body.get("next") else None
        return images

    async def get(self, image: Image | str) -> Image:
        """One image. :raises NotFound:"""
        return Image.from_api(await self._client.request("GET", f"{IMAGES}/{await self.find_id(image)}"))

    async def upload(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        disk_format: str = "raw",
        container_format: str = "bare",
        visibility: str = "private",
        properties: dict[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Image:
        """Create an image (Glance extra ``properties`` too) and stream the file's data into it: active.

        ``progress`` is called with the bytes sent so far after each chunk.
        """
        body = {
            "name": name,
            "disk_format": disk_format,
            "container_format": container_format,
            "visibility": visibility,
            **(properties or {}),
        }
        image = await self._client.request("POST", IMAGES, body)
        await self._client.upload(f"{IMAGES}/{image['id']}/file", _file_chunks(path, progress))
        return await self.get(image["id"])

    async def delete(self, image: Image | str) -> None:
        await self._client.request("DELETE", f"{IMAGES}/{await self.find_id(image)}")


async def _file_chunks(
    path: str | os.PathLike[str], progress: Callable[[int], None] | None = None, size: int = 1024 * 1024
) -> AsyncIterator[bytes]:
    """A file's data, read off the event loop; ``progress`` hears the bytes read so far."""
    file = await asyncio.to_thread(open, path, "rb")
    sent = 0
    try:
        while chunk := await asyncio.to_thread(file.read, size):
            sent += len(chunk)
            if progress is not None:
                progress(sent)
            yield chunk
    finally:
        file.close()


class NetworkManager(_Manager[Network]):
    """``client.networks``: Neutron networks (a subnet is made with the network when given a ``cidr``)."""

    kind = "network"

    def _summaries_path(self) -> str:
        return NETWORKS

    async def list(self, **filters: Any) -> builtins.list[Network]:
        """The networks the caller may see (``name``, ``shared``... filter as in Neutron)."""
        body = await self._client.request("GET", _query(NETWORKS, filters))
        return [Network.from_api(network) for network in body["networks"]]

    async def get(self, network: Network | str) -> Network:
        """One network. :raises NotFound:"""
        body = await self._client.request("GET", f"{NETWORKS}/{await self.find_id(network)}")
        return Network.from_api(body["network"])

    async def create(self, name: str, *, cidr: str | None = None, shared: bool = False) -> Network:
        """A network, and an IPv4 subnet of ``cidr`` on it when given (servers need one to boot on it)."""
        body = {"network": {"name": name, "shared": shared}}
        network = (await self._client.request("POST", NETWORKS, body))["network"]
        if cidr is not None:
            subnet = {"subnet": {"network_id": network["id"], "cidr": cidr, "ip_version": 4, "name": name}}
            await self._client.request("POST", "/network/v2.0/subnets", subnet)
        return await self.get(network["id"])

    async def delete(self, network: Network | str) -> None:
        await self._client.request("DELETE", f"{NETWORKS}/{await self.find_id(network)}")


class VolumeManager(_Manager[Volume]):
    """``client.volumes``: Cinder volumes of the client's project."""

    kind = "volume"

    def _summaries_path(self) -> str:
        return f"/volume/v3/{self._client.project_id}/volumes"

    async def list(self, **filters: Any) -> builtins.list[Volume]:
        """The project's volumes (``name``, ``status`` filter)."""
        body = await self._client.request("GET", _query(f"{self._summaries_path()}/detail", filters))
        return [Volume.from_api(volume) for volume in body["volumes"]]

    async def get(self, volume: Volume | str) -> Volume:
        """One volume. :raises NotFound:"""
        path = f"{self._summaries_path()}/{await self.find_id(volume)}"
        return Volume.from_api((await self._client.request("GET", path))["volume"])

    async def create(
        self,
        size: int,
        name: str = "",
        *,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        image: Image | str | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> Volume:
        """A volume of ``size`` GiB (a bootable copy of ``image`` when given); with ``wait``,
        returned once its ``volume.available`` event arrives.

        :raises ResourceFailed: it went to ``error`` instead.
        """
        body: dict[str, Any] = {"size": size, "name": name}
        if image is not None:
            body["imageRef"] = await self._client.images.find_id(image)
        if description is not None:
            body["description"] = description
        if metadata:
            body["metadata"] = metadata
        if not wait:
            answer = await self._client.request("POST", self._summaries_path(), {"volume": body})
            return Volume.from_api(answer["volume"])
        async with self._client.watch() as watch:
            answer = await self._client.ws_request("POST", self._summaries_path(), {"volume": body})
            volume_id = answer["volume"]["id"]
            event = await watch.until(volume_id, {"volume.available", "volume.error"}, timeout)
        volume = await self.get(volume_id)
        if event.type == "volume.error":
            raise ResourceFailed(volume, volume.fault or "the volume is in error", event.request_id)
        return volume

    async def delete(self, volume: Volume | str, *, wait: bool = True, timeout: float = 300.0) -> None:
        """Delete a volume; with ``wait``, return once its ``volume.deleted`` event arrives.

        :raises ResourceFailed: its file could not be removed (``error_deleting``).
        """
        volume_id = await self.find_id(volume)
        path = f"{self._summaries_path()}/{volume_id}"
        if not wait:
            await self._client.request("DELETE", path)
            return
        async with self._client.watch() as watch:
            await self._client.ws_request("DELETE", path)
            event = await watch.until(volume_id, {"volume.deleted", "volume.error_deleting"}, timeout)
        if event.type == "volume.error_deleting":
            failed = await self.get(volume_id)
            raise ResourceFailed(failed, failed.fault or "the volume could not be deleted", event.request_id)


class KeypairManager:
    """``client.keypairs``: Nova key pairs (a user's own; a key pair's name is its id)."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    async def list(self) -> builtins.list[Keypair]:
        body = await self._client.request("GET", f"{COMPUTE}/os-keypairs")
        return [Keypair.from_api(item["keypair"]) for item in body["keypairs"]]

    async def get(self, name: str) -> Keypair:
        """:raises NotFound:"""
        body = await self._client.request("GET", f"{COMPUTE}/os-keypairs/{quote(name, safe='')}")
        return Keypair.from_api(body["keypair"])

    async def create(self, name: str, *, public_key: str | None = None) -> Keypair:
        """Import ``public_key`` (OpenSSH format), or have one generated: then the answer, and only
        it, holds the ``private_key``.

        :raises BadRequest: a bad name or key. :raises Conflict: the name is taken.
        """
        body: dict[str, Any] = {"name": name}
        if public_key is not None:
            body["public_key"] = public_key
        answer = await self._client.request("POST", f"{COMPUTE}/os-keypairs", {"keypair": body})
        return Keypair.from_api(answer["keypair"])

    async def delete(self, name: str) -> None:
        """:raises NotFound:"""
        await self._client.request("DELETE", f"{COMPUTE}/os-keypairs/{quote(name, safe='')}")


class FlavorManager(_Manager[Flavor]):
    """``client.flavors``: Nova flavors."""

    kind = "flavor"

    def _summaries_path(self) -> str:
        return f"{COMPUTE}/flavors"

    async def list(self) -> builtins.list[Flavor]:
        body = await self._client.request("GET", f"{COMPUTE}/flavors/detail")
        return [Flavor.from_api(flavor) for flavor in body["flavors"]]

    async def get(self, flavor: Flavor | str) -> Flavor:
        """One flavor, by id or name. :raises NotFound:"""
        body = await self._client.request("GET", f"{COMPUTE}/flavors/{await self.find_id(flavor)}")
        return Flavor.from_api(body["flavor"])
