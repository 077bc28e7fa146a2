"""Network (Neutron v2.0) routes: networks, subnets and ports under ``/network/v2.0``, and the
extensions list (the quotas' routes are ``gateway.network_quotas``, served with these).

Each collection answers GET (list), POST (create, 201: one resource, or several at once with
the plural key, all made or none) and GET, PUT and DELETE (204) on one resource, through the
net actor's ``Net`` API. ``/extensions`` lists the Neutron API extensions aiostack really
implements (``EXTENSIONS``), which clients ask about before they use one (``openstack port
create`` does). A list is filtered by any scalar attribute of its resources (repeat a parameter
for any of several values; an unknown one is a 400, as Neutron's filter validation answers),
ports by ``fixed_ips`` too; ``fields`` picks the attributes shown, ``sort_key``/``sort_dir``
order it, and ``limit``/``marker``/``page_reverse`` page it with ``<resources>_links``.
A body member the resource does not take is a 400 naming it. A create past the project's quota
is a 409 ``OverQuota`` (a bulk create makes none). Errors come out as
``{"NeutronError": {type, message, detail}}`` (``gateway.http.error_body``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id
from api.net import MacAddress, Mtu, Net, PortStatus, Text, VifType
from api.net import Network as NetworkRecord
from api.net import Port as PortRecord
from api.net import Subnet as SubnetRecord
from api.net import SubnetPool as SubnetPoolRecord
from bus import NotFound
from gateway import network_quotas
from gateway.http import client, context_of, json_response, no_content
from gateway.routing import Body, Link, OpenRequest, Query, Reply, Request, Routes, Time

T = TypeVar("T")
BASE = "/network/v2.0"
NETWORKS = f"{BASE}/networks"
NETWORK = f"{NETWORKS}/{{network_id}}"
SUBNETS = f"{BASE}/subnets"
SUBNET = f"{SUBNETS}/{{subnet_id}}"
SUBNETPOOLS = f"{BASE}/subnetpools"
SUBNETPOOL = f"{SUBNETPOOLS}/{{subnetpool_id}}"
PORTS = f"{BASE}/ports"
PORT = f"{PORTS}/{{port_id}}"

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
Ipv4Address = Annotated[str, Meta(pattern=f"^{_IPV4}$", examples=["10.0.0.1"])]
"""An IPv4 address, dotted (the only version built)."""
Ipv4Cidr = Annotated[
    str,
    Meta(
        pattern=rf"^{_IPV4}/([0-9]|[12][0-9]|30)$",
        examples=["10.0.0.0/24"],
        description="An IPv4 network with hosts (a prefix of at most 30), as its network address and "
        "prefix; one that overlaps another subnet of the network, or has host bits set, is a 400.",
    ),
]
Ipv4Prefix = Annotated[
    str,
    Meta(
        pattern=rf"^{_IPV4}/([0-9]|[12][0-9]|3[0-2])$",
        examples=["10.50.0.0/16"],
        description="An IPv4 network as its network address and prefix (host bits set: a 400).",
    ),
]
Value = Annotated[str, Meta(max_length=255)]
"""A filter's value (a longer one matches nothing Neutron keeps)."""


Fields = Annotated[list[Value], Meta(description="Show only these attributes (repeatable).")]
Texts = list[Value]
Numbers = list[int]
Booleans = list[bool]
MAX_LIMIT = 2**31 - 1


SORT_KEY = Meta(
    description="Sort by these attributes (repeatable, the first first); by creation when absent."
)


def sort_keys(kind: type[Body]) -> Any:
    """The attributes of ``kind`` a listing sorts on (those every resource has, of one scalar
    type), as the ``Literal`` a query's ``sort_key`` takes."""
    scalar = (
        msgspec.inspect.StrType,
        msgspec.inspect.IntType,
        msgspec.inspect.BoolType,
        msgspec.inspect.LiteralType,
    )
    keys = []
    for info in msgspec.structs.fields(kind):
        described = msgspec.inspect.type_info(info.type)
        while isinstance(described, msgspec.inspect.Metadata):
            described = described.type
        if info.required and isinstance(described, scalar):
            keys.append(info.encode_name)
    return Literal[tuple(keys)]


class ListQuery(Query):
    """What every listing takes besides its filters: the attributes shown, the order (each query's
    ``sort_key``), the page."""

    sort_key: list[str] = []
    """Each listing's query narrows it to the attributes its resources sort on (``sort_keys``)."""

    fields: Fields = []
    sort_dir: Annotated[
        list[Literal["asc", "desc"]],
        Meta(
            description="The direction of each ``sort_key``, in order (absent: asc; past the keys: unused)."
        ),
    ] = []
    limit: (
        Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="At most this many; then a next link.")] | None
    ) = None
    marker: Annotated[Value | None, Meta(description="Start after the resource of this id (404: none).")] = (
        None
    )
    page_reverse: Annotated[bool, Meta(description="Page backwards from ``marker`` (with ``limit``).")] = (
        False
    )


# -- networks ---------------------------------------------------------------------------------


EXTERNAL = Meta(
    description="An external network (admins only, else 403): every project sees it (not its subnets), "
    "routers' gateways and floating IPs take its addresses."
)


class NetworkCreate(Request):
    name: Text = ""
    shared: Annotated[bool, Meta(description="Admins only (else 403).")] = False
    admin_state_up: bool = True
    mtu: Mtu = 1500
    description: Text = ""
    router_external: Annotated[bool, EXTERNAL] = msgspec.field(default=False, name="router:external")


class NetworkCreateRequest(OpenRequest):
    """One network (``network``), or several at once (``networks``: all made, or none)."""

    network: NetworkCreate | UnsetType = UNSET
    networks: Annotated[list[NetworkCreate], Meta(min_length=1)] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["network"]}, {"required": ["networks"]}]
    }

    def __post_init__(self) -> None:
        _one_or_many(self.network, self.networks, "network")


class NetworkUpdate(Request):
    """What may change (absent: unchanged)."""

    name: Text | UnsetType = UNSET
    admin_state_up: bool | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    router_external: Annotated[bool, EXTERNAL] | UnsetType = msgspec.field(
        default=UNSET, name="router:external"
    )


class NetworkUpdateRequest(OpenRequest):
    network: NetworkUpdate


class Network(Body):
    id: str
    name: str
    project_id: str
    tenant_id: str
    shared: bool
    admin_state_up: bool
    mtu: int
    status: Literal["ACTIVE"]
    router_external: bool = msgspec.field(name="router:external")
    subnets: list[str]
    description: str
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time
    provider_network_type: str | UnsetType = msgspec.field(default=UNSET, name="provider:network_type")
    """Neutron's provider extension, shown to admins only: ``vxlan``; its VNI; no physical network."""
    provider_segmentation_id: int | UnsetType = msgspec.field(default=UNSET, name="provider:segmentation_id")
    provider_physical_network: UnsetType | None = msgspec.field(
        default=UNSET, name="provider:physical_network"
    )


class NetworkQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    shared: Booleans = []
    admin_state_up: Booleans = []
    router_external: Booleans = msgspec.field(default_factory=list, name="router:external")
    status: Texts = []
    mtu: Numbers = []
    sort_key: Annotated[list[sort_keys(Network)], SORT_KEY] = []


class NetworkShown(Body):
    network: Network


class NetworksShown(Body):
    """The networks of a bulk create."""

    networks: list[Network]


def network_view(request: web.Request, network: NetworkRecord) -> Network:
    provider = (
        {
            "provider_network_type": network["provider:network_type"],
            "provider_segmentation_id": network["provider:segmentation_id"],
            "provider_physical_network": None,
        }
        if context_of(request).is_admin
        else {}
    )
    return Network(
        **provider,
        id=network["id"],
        name=network["name"],
        project_id=network["project_id"],
        tenant_id=network["tenant_id"],
        shared=network["shared"],
        admin_state_up=network["admin_state_up"],
        mtu=network["mtu"],
        status=network["status"],
        router_external=network["router:external"],
        subnets=network["subnets"],
        description=network["description"],
        revision_number=network["revision_number"],
        tags=network["tags"],
        created_at=network["created_at"],
        updated_at=network["updated_at"],
    )


# -- subnets ----------------------------------------------------------------------------------


class AllocationPoolRequest(Request):
    """A range of the subnet's host addresses, both ends included."""

    start: Ipv4Address
    end: Ipv4Address


class HostRouteRequest(Request):
    """A route the subnet's hosts are given over DHCP: to ``destination`` through ``nexthop``."""

    destination: Ipv4Prefix
    nexthop: Ipv4Address


UNIQUE = {"uniqueItems": True}
Nameservers = Annotated[list[Ipv4Address], Meta(max_length=5, extra_json_schema=UNIQUE)]
"""At most 5 (Neutron's ``max_dns_nameservers``), none twice (else a 400)."""
HostRoutes = Annotated[list[HostRouteRequest], Meta(max_length=20, extra_json_schema=UNIQUE)]
"""At most 20 (Neutron's ``max_subnet_host_routes``), none twice (else a 400)."""


PrefixLength = Annotated[int, Meta(ge=0, le=32)]


class SubnetCreate(Request):
    """A subnet of a network of the caller's project, of ``cidr`` or of a prefix of the subnet pool
    ``subnetpool_id`` (``cidr`` if it is in the pool and free there, 409 if taken; else the lowest
    free prefix of ``prefixlen``, by default the pool's ``default_prefixlen``: 400 outside the
    pool's bounds, 409 when none is free). ``gateway_ip`` (absent or null: the first host address)
    and the pools (absent: the other host addresses) must be host addresses of the CIDR and not
    overlap; name servers (at most 5) and host routes (at most 20) must not repeat (each a 400
    otherwise)."""

    network_id: Id
    cidr: Ipv4Cidr | UnsetType = UNSET
    subnetpool_id: Id | UnsetType = UNSET
    prefixlen: (
        Annotated[PrefixLength, Meta(description="Used with a subnetpool_id and no cidr.")] | UnsetType
    ) = UNSET
    name: Text = ""
    gateway_ip: Ipv4Address | None = None
    allocation_pools: list[AllocationPoolRequest] | None = None
    ip_version: Annotated[Literal[4], Meta(description="Only IPv4 is built.")] = 4
    enable_dhcp: bool = True
    dns_nameservers: Nameservers | None = None
    host_routes: HostRoutes | None = None
    description: Text = ""
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["cidr"]}, {"required": ["subnetpool_id"]}]
    }

    def __post_init__(self) -> None:
        if self.cidr is UNSET and self.subnetpool_id is UNSET:
            raise ValueError("a subnet takes a cidr and/or a subnetpool_id")


class SubnetCreateRequest(OpenRequest):
    """One subnet (``subnet``), or several at once (``subnets``: all made, or none)."""

    subnet: SubnetCreate | UnsetType = UNSET
    subnets: Annotated[list[SubnetCreate], Meta(min_length=1)] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["subnet"]}, {"required": ["subnets"]}]
    }

    def __post_init__(self) -> None:
        _one_or_many(self.subnet, self.subnets, "subnet")


class SubnetUpdate(Request):
    """What may change (absent: unchanged; a list replaces the one there was). The gateway and the
    pools are checked against the CIDR and each other as on create (400); a gateway a port holds,
    or pools leaving out an address a port holds from the old pools, is a 409."""

    name: Text | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    gateway_ip: Ipv4Address | UnsetType = UNSET
    enable_dhcp: bool | UnsetType = UNSET
    dns_nameservers: Nameservers | UnsetType = UNSET
    host_routes: HostRoutes | UnsetType = UNSET
    allocation_pools: list[AllocationPoolRequest] | UnsetType = UNSET


class SubnetUpdateRequest(OpenRequest):
    subnet: SubnetUpdate


class AllocationPool(Body):
    start: str
    end: str


class HostRoute(Body):
    destination: str
    nexthop: str


class Subnet(Body):
    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str
    cidr: str
    ip_version: Literal[4]
    gateway_ip: str
    allocation_pools: list[AllocationPool]
    enable_dhcp: bool
    dns_nameservers: list[str]
    host_routes: list[HostRoute]
    subnetpool_id: str | None
    description: str
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


class SubnetQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    network_id: Texts = []
    cidr: Texts = []
    ip_version: Numbers = []
    gateway_ip: Texts = []
    enable_dhcp: Booleans = []
    subnetpool_id: Texts = []
    sort_key: Annotated[list[sort_keys(Subnet)], SORT_KEY] = []


class SubnetShown(Body):
    subnet: Subnet


class SubnetsShown(Body):
    """The subnets of a bulk create."""

    subnets: list[Subnet]


def subnet_view(subnet: SubnetRecord) -> Subnet:
    return Subnet(
        id=subnet["id"],
        name=subnet["name"],
        network_id=subnet["network_id"],
        project_id=subnet["project_id"],
        tenant_id=subnet["tenant_id"],
        cidr=subnet["cidr"],
        ip_version=4,
        gateway_ip=subnet["gateway_ip"],
        allocation_pools=[AllocationPool(start=p["start"], end=p["end"]) for p in subnet["allocation_pools"]],
        enable_dhcp=subnet["enable_dhcp"],
        dns_nameservers=subnet["dns_nameservers"],
        host_routes=[
            HostRoute(destination=r["destination"], nexthop=r["nexthop"]) for r in subnet["host_routes"]
        ],
        subnetpool_id=subnet["subnetpool_id"],
        description=subnet["description"],
        revision_number=subnet["revision_number"],
        tags=subnet["tags"],
        created_at=subnet["created_at"],
        updated_at=subnet["updated_at"],
    )


# -- subnet pools -----------------------------------------------------------------------------

Prefixes = Annotated[list[Ipv4Prefix], Meta(min_length=1, max_length=64)]


class SubnetPoolCreate(Request):
    """A subnet pool of the caller's project (``shared``: admins only, else 403). Its prefixes are
    kept merged; ``min_prefixlen`` defaults to 8, ``max_prefixlen`` to 32, ``default_prefixlen`` to
    ``min_prefixlen``, and they must be ordered min <= default <= max (else 400)."""

    prefixes: Prefixes
    name: Text = ""
    default_prefixlen: PrefixLength | None = None
    min_prefixlen: PrefixLength | None = None
    max_prefixlen: PrefixLength | None = None
    shared: bool = False
    description: Text = ""


class SubnetPoolCreateRequest(OpenRequest):
    subnetpool: SubnetPoolCreate


class SubnetPoolUpdate(Request):
    """What may change (absent: unchanged). New prefixes must hold every old one (else 400); the
    lengths stay ordered min <= default <= max (else 400)."""

    name: Text | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    prefixes: Prefixes | UnsetType = UNSET
    default_prefixlen: PrefixLength | UnsetType = UNSET
    min_prefixlen: PrefixLength | UnsetType = UNSET
    max_prefixlen: PrefixLength | UnsetType = UNSET


class SubnetPoolUpdateRequest(OpenRequest):
    subnetpool: SubnetPoolUpdate


class SubnetPool(Body):
    id: str
    name: str
    project_id: str
    tenant_id: str
    prefixes: list[str]
    default_prefixlen: int
    min_prefixlen: int
    max_prefixlen: int
    ip_version: Literal[4]
    shared: bool
    is_default: bool
    description: str
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


class SubnetPoolQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    default_prefixlen: Numbers = []
    min_prefixlen: Numbers = []
    max_prefixlen: Numbers = []
    ip_version: Numbers = []
    shared: Booleans = []
    is_default: Booleans = []
    sort_key: Annotated[list[sort_keys(SubnetPool)], SORT_KEY] = []


class SubnetPoolShown(Body):
    subnetpool: SubnetPool


def subnetpool_view(pool: SubnetPoolRecord) -> SubnetPool:
    return SubnetPool(
        id=pool["id"],
        name=pool["name"],
        project_id=pool["project_id"],
        tenant_id=pool["tenant_id"],
        prefixes=pool["prefixes"],
        default_prefixlen=pool["default_prefixlen"],
        min_prefixlen=pool["min_prefixlen"],
        max_prefixlen=pool["max_prefixlen"],
        ip_version=4,
        shared=pool["shared"],
        is_default=pool["is_default"],
        description=pool["description"],
        revision_number=pool["revision_number"],
        tags=pool["tags"],
        created_at=pool["created_at"],
        updated_at=pool["updated_at"],
    )


# -- ports ------------------------------------------------------------------------------------


class FixedIpRequest(Request):
    """An address to take: on a subnet (the lowest free one), that address, or both."""

    subnet_id: Id | UnsetType = UNSET
    ip_address: Ipv4Address | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["subnet_id"]}, {"required": ["ip_address"]}]
    }

    def __post_init__(self) -> None:
        if self.subnet_id is UNSET and self.ip_address is UNSET:
            raise ValueError("each fixed IP takes a subnet_id and/or an ip_address")


class PortCreate(Request):
    """A port of the caller's project on a network it sees: with the lowest free address of the
    network unless ``fixed_ips`` asks for others (on the network's subnets, else 400), and a random
    ``fa:16:3e:..`` MAC unless one is given (taken: 409)."""

    network_id: Id
    name: Text = ""
    mac_address: MacAddress | None = None
    fixed_ips: list[FixedIpRequest] | None = None
    device_id: Text = ""
    device_owner: Text = ""
    admin_state_up: bool = True
    description: Text = ""
    security_groups: (
        Annotated[list[Id], Meta(description="Absent or null: the project's default group.")] | None
    ) = None
    port_security_enabled: Annotated[
        bool, Meta(description="False: no security group filters the port (none may be given).")
    ] = True


class PortCreateRequest(OpenRequest):
    """One port (``port``), or several at once (``ports``: all made, or none)."""

    port: PortCreate | UnsetType = UNSET
    ports: Annotated[list[PortCreate], Meta(min_length=1)] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"oneOf": [{"required": ["port"]}, {"required": ["ports"]}]}

    def __post_init__(self) -> None:
        _one_or_many(self.port, self.ports, "port")


class PortUpdate(Request):
    """What may change (absent: unchanged); a device and a binding host make the port ACTIVE.
    ``fixed_ips`` replaces the port's addresses: an entry naming one it holds keeps it, the others
    are taken as on create (an address another port holds: 409), and those no entry names are
    released, all at once or not at all."""

    name: Text | UnsetType = UNSET
    device_id: Text | UnsetType = UNSET
    device_owner: Text | UnsetType = UNSET
    binding_host_id: Text | UnsetType = msgspec.field(default=UNSET, name="binding:host_id")
    admin_state_up: bool | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    fixed_ips: list[FixedIpRequest] | UnsetType = UNSET
    security_groups: list[Id] | UnsetType = UNSET
    port_security_enabled: bool | UnsetType = UNSET


class PortUpdateRequest(OpenRequest):
    port: PortUpdate


class FixedIp(Body):
    subnet_id: str
    ip_address: str


class Port(Body):
    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    device_id: str
    device_owner: str
    admin_state_up: bool
    status: PortStatus
    binding_host_id: str = msgspec.field(name="binding:host_id")
    binding_vif_type: VifType = msgspec.field(name="binding:vif_type")
    binding_vif_details: dict[str, Any] = msgspec.field(name="binding:vif_details")
    binding_vnic_type: Literal["normal"] = msgspec.field(name="binding:vnic_type")
    binding_profile: dict[str, Any] = msgspec.field(name="binding:profile")
    security_groups: list[str]
    port_security_enabled: bool
    description: str
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


FixedIpFilter = Annotated[
    str,
    Meta(
        pattern=r"^(ip_address|subnet_id|ip_address_substr)=.{1,255}$",
        examples=["ip_address=10.0.0.5"],
        description="``ip_address=A``, ``subnet_id=S`` or ``ip_address_substr=PART`` (repeatable): the "
        "ports holding an address that is one of the addresses given, on one of the subnets given, "
        "and holds one of the parts given.",
    ),
]


class PortQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    network_id: Texts = []
    mac_address: Texts = []
    device_id: Texts = []
    device_owner: Texts = []
    status: Texts = []
    admin_state_up: Booleans = []
    binding_host_id: Texts = msgspec.field(default_factory=list, name="binding:host_id")
    binding_vif_type: Texts = msgspec.field(default_factory=list, name="binding:vif_type")
    fixed_ips: list[FixedIpFilter] = []
    sort_key: Annotated[list[sort_keys(Port)], SORT_KEY] = []


class PortShown(Body):
    port: Port


class PortsShown(Body):
    """The ports of a bulk create."""

    ports: list[Port]


def port_view(port: PortRecord) -> Port:
    return Port(
        id=port["id"],
        name=port["name"],
        network_id=port["network_id"],
        project_id=port["project_id"],
        tenant_id=port["tenant_id"],
        mac_address=port["mac_address"],
        fixed_ips=[
            FixedIp(subnet_id=ip["subnet_id"], ip_address=ip["ip_address"]) for ip in port["fixed_ips"]
        ],
        device_id=port["device_id"],
        device_owner=port["device_owner"],
        admin_state_up=port["admin_state_up"],
        status=port["status"],
        binding_host_id=port["binding:host_id"],
        binding_vif_type=port["binding:vif_type"],
        binding_vif_details=port["binding:vif_details"],
        binding_vnic_type=port["binding:vnic_type"],
        binding_profile=port["binding:profile"],
        security_groups=port["security_groups"],
        port_security_enabled=port["port_security_enabled"],
        description=port["description"],
        revision_number=port["revision_number"],
        tags=port["tags"],
        created_at=port["created_at"],
        updated_at=port["updated_at"],
    )


# -- listings ---------------------------------------------------------------------------------


def partial(shown: type[Body], name: str) -> Any:
    """``shown`` with every member optional: an item of a listing, which ``fields`` may trim."""
    members = [
        (info.name, info.type | UnsetType, msgspec.field(default=UNSET, name=info.encode_name))
        for info in msgspec.structs.fields(shown)
    ]
    return msgspec.defstruct(name, members, bases=(Body,), module=__name__)


NetworkFields = partial(Network, "NetworkFields")
SubnetFields = partial(Subnet, "SubnetFields")
PortFields = partial(Port, "PortFields")
SubnetPoolFields = partial(SubnetPool, "SubnetPoolFields")


class NetworkList(Body):
    networks: list[NetworkFields]  # made by partial: ``fields`` may trim it
    networks_links: list[Link] | UnsetType = UNSET
    """The next page, when a ``limit`` left some out."""


class ShowQuery(Query):
    """What showing one resource takes: ``fields`` (others are ignored)."""

    fields: Fields = []


class NetworkTrimmed(Body):
    network: NetworkFields  # as shown with ``fields``


class SubnetTrimmed(Body):
    subnet: SubnetFields


class PortTrimmed(Body):
    port: PortFields


class SubnetPoolTrimmed(Body):
    subnetpool: SubnetPoolFields


def trimmed(shown: Body, query: ShowQuery) -> Any:
    """One resource, trimmed to ``fields`` when given."""
    item = msgspec.to_builtins(shown)
    return {key: item[key] for key in query.fields if key in item} if query.fields else item


class SubnetList(Body):
    subnets: list[SubnetFields]
    subnets_links: list[Link] | UnsetType = UNSET


class PortList(Body):
    ports: list[PortFields]
    ports_links: list[Link] | UnsetType = UNSET


class SubnetPoolList(Body):
    subnetpools: list[SubnetPoolFields]
    subnetpools_links: list[Link] | UnsetType = UNSET


_PAGING = frozenset(info.name for info in msgspec.structs.fields(ListQuery))


def _wanted(query: ListQuery) -> dict[str, list[Any]]:
    """The filters a query sets, by attribute (each a list of the values any of which will do);
    ``fixed_ips`` is left to ``_holds``."""
    return {
        info.encode_name: values
        for info in msgspec.structs.fields(query)
        if info.name not in _PAGING and info.name != "fixed_ips" and (values := getattr(query, info.name))
    }


def given_once(query: Query, attribute: str) -> Any:
    """The value of a filter given once (for the actor to filter on), else None."""
    values = getattr(query, attribute)
    return values[0] if len(values) == 1 else None


def _holds(port: dict[str, Any], filters: Sequence[str]) -> bool:
    """Whether a port holds an address matching every kind of ``fixed_ips`` filter given (Neutron:
    ``ip_address`` one of those given, ``subnet_id`` one of those given, ``ip_address_substr`` one
    of the parts given, all in the same address)."""
    asked: dict[str, set[str]] = {}
    for entry in filters:
        key, _, value = entry.partition("=")
        asked.setdefault(key, set()).add(value)
    return any(
        fixed["ip_address"] in asked.get("ip_address", {fixed["ip_address"]})
        and fixed["subnet_id"] in asked.get("subnet_id", {fixed["subnet_id"]})
        and any(part in fixed["ip_address"] for part in asked.get("ip_address_substr", {""}))
        for fixed in port["fixed_ips"]
    )


def listed(request: web.Request, shown: Sequence[Body], query: ListQuery, plural: str) -> dict[str, Any]:
    """The listing's body: the resources that match every filter, sorted, paged (with a next link
    when a ``limit`` left some out), trimmed to ``fields`` when it is given.

    :raises NotFound: a ``marker`` that is none of the resources listed.
    """
    wanted = _wanted(query)
    items = [msgspec.to_builtins(item) for item in shown]
    items = [item for item in items if all(item.get(key) in values for key, values in wanted.items())]
    if isinstance(query, PortQuery) and query.fixed_ips:
        items = [item for item in items if _holds(item, query.fixed_ips)]
    items = _sorted(items, query)
    if query.page_reverse:
        items.reverse()
    if query.marker is not None:
        after = next((n for n, item in enumerate(items) if item["id"] == query.marker), None)
        if after is None:
            raise NotFound(f"Marker {query.marker} could not be found.")
        items = items[after + 1 :]
    body: dict[str, Any] = {}
    if query.limit is not None:
        more, items = len(items) > query.limit, items[: query.limit]
        body[f"{plural}_links"] = _page_links(request, query, items, more)
    if query.page_reverse:
        items.reverse()
    if query.fields:
        items = [{key: item[key] for key in query.fields if key in item} for item in items]
    return {plural: items, **body}


def _page_links(request: web.Request, query: ListQuery, page: list[dict[str, Any]], more: bool) -> list[Link]:
    """A page's links, as Neutron gives them: ``next`` when resources follow it, ``previous`` when
    it started after a marker (with ``page_reverse``, which walks backwards, the two swap)."""
    onward, back = ("previous", "next") if query.page_reverse else ("next", "previous")
    links = []
    if more and page:
        links.append(_page_link(request, onward, page[-1]["id"], query.page_reverse))
    if query.marker is not None and page:
        links.append(_page_link(request, back, page[0]["id"], not query.page_reverse))
    return links


def _page_link(request: web.Request, rel: str, marker: str, reverse: bool) -> Link:
    url = request.rel_url.update_query(marker=marker, page_reverse=str(reverse))
    return Link(rel=rel, href=f"{request.scheme}://{request.host}{url}")


def _sorted(items: list[dict[str, Any]], query: ListQuery) -> list[dict[str, Any]]:
    """``items`` in the order of ``sort_key``/``sort_dir`` (stable: creation order within ties)."""
    directions = [*query.sort_dir, *["asc"] * len(query.sort_key)]
    for key, direction in reversed(list(zip(query.sort_key, directions, strict=False))):
        items = sorted(items, key=lambda item: item[key], reverse=direction == "desc")
    return items


def _one_or_many(one: Any, many: Any, key: str) -> None:
    """:raises ValueError: a create body gives both or neither of ``key`` and its plural."""
    if (one is UNSET) == (many is UNSET):
        raise ValueError(f"the body takes either `{key}` (one) or `{key}s` (several)")


def _asked(one: T | UnsetType, many: list[T] | UnsetType) -> list[T]:
    """What a create body asks for, as a list (one resource, or the several of a bulk create)."""
    if not isinstance(one, UnsetType):
        return [one]
    assert not isinstance(many, UnsetType)  # the body's __post_init__ (_one_or_many) saw one of them
    return many


def _created(key: str, one: Any, made: list[Any]) -> dict[str, Any]:
    """A create's answer: the one resource under ``key``, or the bulk's under its plural."""
    return {key: made[0]} if one is not UNSET else {f"{key}s": made}


def changes_of(update: msgspec.Struct, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The members an update sets, as the actor's arguments (renamed by ``names``)."""
    names = names or {}
    return {
        names.get(info.name, info.name): value
        for info in msgspec.structs.fields(update)
        if (value := getattr(update, info.name)) is not UNSET
    }


# -- extensions -------------------------------------------------------------------------------


class Extension(Body):
    """A Neutron API extension, as Neutron describes it."""

    name: str
    alias: str
    description: str
    updated: str
    links: list[Link]


class ExtensionList(Body):
    extensions: list[Extension]


class ExtensionShown(Body):
    extension: Extension


EXTENSIONS = {
    extension.alias: extension
    for extension in (
        Extension(
            name="Neutron external network",
            alias="external-net",
            description="Adds external network attribute to network resource.",
            updated="2013-01-14T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Neutron L3 Configurable external gateway mode",
            alias="ext-gw-mode",
            description="Extension of the router abstraction for specifying whether SNAT should occur on"
            " the external gateway",
            updated="2013-03-28T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Neutron Extra Route",
            alias="extraroute",
            description="Extra routes configuration for L3 router",
            updated="2013-02-01T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Filter parameters validation",
            alias="filter-validation",
            description="Provides validation on filter parameters.",
            updated="2018-07-04T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="IP address substring filtering",
            alias="ip-substring-filtering",
            description="Provides IP address substring filtering when listing ports",
            updated="2017-11-28T09:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Network MTU",
            alias="net-mtu",
            description="Provides MTU attribute for a network resource.",
            updated="2015-03-25T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Pagination support",
            alias="pagination",
            description="Extension that indicates that pagination is enabled.",
            updated="2016-06-12T00:00:00-00:00",
            links=[],
        ),
        Extension(
            name="project_id field enabled",
            alias="project-id",
            description="Extension that indicates that project_id field is enabled.",
            updated="2016-09-09T09:09:09-09:09",
            links=[],
        ),
        Extension(
            name="Subnet Allocation",
            alias="subnet_allocation",
            description="Enables allocation of subnets from a subnet pool",
            updated="2015-03-30T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Quota management support",
            alias="quotas",
            description="Expose functions for quotas management per project",
            updated="2012-07-29T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Quota details management support",
            alias="quota_details",
            description="Expose functions for quotas usage statistics per project",
            updated="2017-02-10T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Port Security",
            alias="port-security",
            description="Provides port security",
            updated="2012-07-23T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Neutron L3 Router",
            alias="router",
            description="Router abstraction for basic L3 forwarding between L2 Neutron networks and access"
            " to external networks via a NAT gateway.",
            updated="2012-07-20T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="security-group",
            alias="security-group",
            description="The security groups extension.",
            updated="2012-10-05T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Sorting support",
            alias="sorting",
            description="Extension that indicates that sorting is enabled.",
            updated="2016-06-12T00:00:00-00:00",
            links=[],
        ),
        Extension(
            name="standard-attr-description",
            alias="standard-attr-description",
            description="Extension to add descriptions to standard attributes",
            updated="2016-02-10T10:00:00-00:00",
            links=[],
        ),
        Extension(
            name="Resource revision numbers",
            alias="standard-attr-revisions",
            description="This extension will display the revision number of neutron resources.",
            updated="2016-04-11T10:00:00-00:00",
            links=[],
        ),
    )
}
"""The Neutron extensions aiostack implements, by alias: those whose attributes and behaviour its
networks, subnets and ports have. Not listed, because not built whole: port binding (ports show
its attributes, but ``binding:host_id`` is taken on update only, and ``binding:vnic_type`` and
``binding:profile`` not at all), tags (``tags`` is always empty), timestamps (no ``changed_since``
filter), address scopes and default subnet pools. External networks, routers (with SNAT on or off:
``gateway.routers``) and floating IPs (``gateway.floating_ips``) are listed, and nodes with real
guests plumb them (``node.routers``; extra routes are accepted by the API but not plumbed). Security
groups and port security are listed (``gateway.security_groups``, ports' ``security_groups`` and
``port_security_enabled``) and enforced by those nodes (``node.security``)."""

# -- routes -----------------------------------------------------------------------------------

routes = Routes()


@routes.get(
    f"{BASE}/extensions",
    "List extensions",
    replies=[Reply(200, ExtensionList, "The Neutron API extensions this network service implements.")],
)
async def list_extensions(request: web.Request) -> web.Response:
    return json_response(ExtensionList(extensions=list(EXTENSIONS.values())))


@routes.get(
    f"{BASE}/extensions/{{alias}}",
    "Show an extension",
    replies=[Reply(200, ExtensionShown, "The extension.")],
    errors=(404,),
)
async def show_extension(request: web.Request) -> web.Response:
    """404: no extension of that alias is implemented."""
    alias = request.match_info["alias"]
    if alias not in EXTENSIONS:
        raise NotFound(f"Extension with alias {alias} does not exist")
    return json_response(ExtensionShown(extension=EXTENSIONS[alias]))


class NetworkVersion(Body):
    id: str
    status: str
    links: list[Link]


class NetworkVersions(Body):
    versions: list[NetworkVersion]


async def versions(request: web.Request) -> web.Response:
    """The network API's version document (where clients discover ``/v2.0``)."""
    href = f"{request.scheme}://{request.host}{BASE}/"
    version = NetworkVersion(id="v2.0", status="CURRENT", links=[Link(rel="self", href=href)])
    return json_response(NetworkVersions(versions=[version]))


for _path in ("/network", "/network/"):
    routes.get(
        _path,
        "Network API versions",
        public=True,
        replies=[Reply(200, NetworkVersions, "The versions of the network API.")],
    )(versions)


@routes.get(
    NETWORKS,
    "List networks",
    query=NetworkQuery,
    replies=[
        Reply(200, NetworkList, "The networks the project sees (its own and the shared ones), oldest first.")
    ],
    errors=(404,),
)
async def list_networks(request: web.Request, query: NetworkQuery) -> web.Response:
    networks = await client(request, Net).list_networks(
        name=given_once(query, "name"),
        shared=given_once(query, "shared"),
        project_id=given_once(query, "project_id"),
        router_external=given_once(query, "router_external"),
    )
    shown = [network_view(request, network) for network in networks]
    return json_response(listed(request, shown, query, "networks"))


@routes.post(
    NETWORKS,
    "Create a network",
    body=NetworkCreateRequest,
    replies=[
        Reply(
            201, NetworkShown, "The network, or the networks of a bulk create.", alternatives=(NetworksShown,)
        )
    ],
    errors=(409,),
)
async def create_network(request: web.Request, body: NetworkCreateRequest) -> web.Response:
    """403: a shared or external network asked by someone other than an admin; 409: past the
    project's network quota (OverQuota). In a bulk create, either makes none."""
    asked = [msgspec.structs.asdict(network) for network in _asked(body.network, body.networks)]
    networks = await client(request, Net).create_networks(networks=asked)
    made = [network_view(request, network) for network in networks]
    return json_response(_created("network", body.network, made), status=201)


@routes.get(
    NETWORK,
    "Show a network",
    query=ShowQuery,
    replies=[Reply(200, NetworkTrimmed, "The network (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_network(request: web.Request, query: ShowQuery) -> web.Response:
    network = await client(request, Net).get_network(network_id=request.match_info["network_id"])
    return json_response({"network": trimmed(network_view(request, network), query)})


@routes.put(
    NETWORK,
    "Update a network",
    body=NetworkUpdateRequest,
    replies=[Reply(200, NetworkShown, "The network.")],
    errors=(404, 409),
)
async def update_network(request: web.Request, body: NetworkUpdateRequest) -> web.Response:
    """403: another project's shared or external network, or ``router:external`` set by someone
    other than an admin; 409: a network with router gateway or floating IP ports made non-external
    (ExternalNetworkInUse)."""
    network = await client(request, Net).update_network(
        network_id=request.match_info["network_id"], **changes_of(body.network)
    )
    return json_response(NetworkShown(network=network_view(request, network)))


@routes.delete(
    NETWORK,
    "Delete a network",
    replies=[Reply(204, None, "Deleted, with its subnets and unbound ports.")],
    errors=(404, 409),
)
async def delete_network(request: web.Request) -> web.Response:
    """403: another project's shared network; 409: a port of it is bound to a server."""
    await client(request, Net).delete_network(network_id=request.match_info["network_id"])
    return no_content()


@routes.get(
    SUBNETS,
    "List subnets",
    query=SubnetQuery,
    replies=[Reply(200, SubnetList, "The subnets the project sees, oldest first.")],
    errors=(404,),
)
async def list_subnets(request: web.Request, query: SubnetQuery) -> web.Response:
    subnets = await client(request, Net).list_subnets(network_id=given_once(query, "network_id"))
    return json_response(listed(request, [subnet_view(s) for s in subnets], query, "subnets"))


@routes.post(
    SUBNETS,
    "Create a subnet",
    body=SubnetCreateRequest,
    replies=[
        Reply(201, SubnetShown, "The subnet, or the subnets of a bulk create.", alternatives=(SubnetsShown,))
    ],
    errors=(404, 409),
)
async def create_subnet(request: web.Request, body: SubnetCreateRequest) -> web.Response:
    """404: no such network or subnet pool the project sees; 403: another project's shared
    network; 400: a gateway, pool, route or CIDR that does not fit (see the body); 409: the subnet
    pool has no free prefix of that length, or the cidr asked of it is taken, or past the network's
    project's subnet quota (OverQuota). In a bulk create, any of these makes none."""
    asked = [msgspec.to_builtins(subnet) for subnet in _asked(body.subnet, body.subnets)]
    subnets = await client(request, Net).create_subnets(subnets=asked)
    return json_response(_created("subnet", body.subnet, [subnet_view(s) for s in subnets]), status=201)


@routes.get(
    SUBNET,
    "Show a subnet",
    query=ShowQuery,
    replies=[Reply(200, SubnetTrimmed, "The subnet (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_subnet(request: web.Request, query: ShowQuery) -> web.Response:
    subnet = await client(request, Net).get_subnet(subnet_id=request.match_info["subnet_id"])
    return json_response({"subnet": trimmed(subnet_view(subnet), query)})


@routes.put(
    SUBNET,
    "Update a subnet",
    body=SubnetUpdateRequest,
    replies=[Reply(200, SubnetShown, "The subnet.")],
    errors=(404, 409),
)
async def update_subnet(request: web.Request, body: SubnetUpdateRequest) -> web.Response:
    """403: a subnet of another project's shared network; 400: a gateway, pool or route that does
    not fit; 409: the gateway is a port's address, or the pools leave out an address a port holds."""
    changes = msgspec.to_builtins(body.subnet)
    subnet = await client(request, Net).update_subnet(subnet_id=request.match_info["subnet_id"], **changes)
    return json_response(SubnetShown(subnet=subnet_view(subnet)))


@routes.delete(
    SUBNET,
    "Delete a subnet",
    replies=[Reply(204, None, "Deleted.")],
    errors=(404, 409),
)
async def delete_subnet(request: web.Request) -> web.Response:
    """403: a subnet of another project's shared network; 409: a port holds an address of it."""
    await client(request, Net).delete_subnet(subnet_id=request.match_info["subnet_id"])
    return no_content()


@routes.get(
    SUBNETPOOLS,
    "List subnet pools",
    query=SubnetPoolQuery,
    replies=[Reply(200, SubnetPoolList, "The subnet pools the project sees (its own and the shared ones).")],
    errors=(404,),
)
async def list_subnetpools(request: web.Request, query: SubnetPoolQuery) -> web.Response:
    pools = await client(request, Net).list_subnetpools()
    return json_response(listed(request, [subnetpool_view(p) for p in pools], query, "subnetpools"))


@routes.post(
    SUBNETPOOLS,
    "Create a subnet pool",
    body=SubnetPoolCreateRequest,
    replies=[Reply(201, SubnetPoolShown, "The subnet pool.")],
    errors=(409,),
)
async def create_subnetpool(request: web.Request, body: SubnetPoolCreateRequest) -> web.Response:
    """403: a shared pool asked by someone other than an admin; 400: a prefix with host bits set,
    lengths out of order; 409: past the project's subnet pool quota (OverQuota)."""
    pool = await client(request, Net).create_subnetpool(**msgspec.to_builtins(body.subnetpool))
    return json_response(SubnetPoolShown(subnetpool=subnetpool_view(pool)), status=201)


@routes.get(
    SUBNETPOOL,
    "Show a subnet pool",
    query=ShowQuery,
    replies=[Reply(200, SubnetPoolTrimmed, "The subnet pool (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_subnetpool(request: web.Request, query: ShowQuery) -> web.Response:
    pool = await client(request, Net).get_subnetpool(subnetpool_id=request.match_info["subnetpool_id"])
    return json_response({"subnetpool": trimmed(subnetpool_view(pool), query)})


@routes.put(
    SUBNETPOOL,
    "Update a subnet pool",
    body=SubnetPoolUpdateRequest,
    replies=[Reply(200, SubnetPoolShown, "The subnet pool.")],
    errors=(404,),
)
async def update_subnetpool(request: web.Request, body: SubnetPoolUpdateRequest) -> web.Response:
    """403: another project's shared pool; 400: prefixes leaving out an old one, lengths out of order."""
    pool = await client(request, Net).update_subnetpool(
        subnetpool_id=request.match_info["subnetpool_id"], **msgspec.to_builtins(body.subnetpool)
    )
    return json_response(SubnetPoolShown(subnetpool=subnetpool_view(pool)))


@routes.delete(SUBNETPOOL, "Delete a subnet pool", replies=[Reply(204, None, "Deleted.")], errors=(404, 409))
async def delete_subnetpool(request: web.Request) -> web.Response:
    """403: another project's shared pool; 409: a subnet has a prefix of it."""
    await client(request, Net).delete_subnetpool(subnetpool_id=request.match_info["subnetpool_id"])
    return no_content()


@routes.get(
    PORTS,
    "List ports",
    query=PortQuery,
    replies=[Reply(200, PortList, "The project's ports, oldest first.")],
    errors=(404,),
)
async def list_ports(request: web.Request, query: PortQuery) -> web.Response:
    ports = await client(request, Net).list_ports(
        network_id=given_once(query, "network_id"),
        device_id=given_once(query, "device_id"),
        device_owner=given_once(query, "device_owner"),
    )
    return json_response(listed(request, [port_view(p) for p in ports], query, "ports"))


@routes.post(
    PORTS,
    "Create a port",
    body=PortCreateRequest,
    replies=[Reply(201, PortShown, "The port, or the ports of a bulk create.", alternatives=(PortsShown,))],
    errors=(400, 404, 409),
)
async def create_port(request: web.Request, body: PortCreateRequest) -> web.Response:
    """404: no such network the project sees; 409: no free address, or the MAC or an address
    asked for is taken, or past the project's port quota (OverQuota); 400: a fixed IP that is not
    on the network, or security groups with port security disabled; 404: a security group the
    project does not have. In a bulk create, any of these makes none."""
    asked = [msgspec.to_builtins(port) for port in _asked(body.port, body.ports)]
    ports = await client(request, Net).create_ports(ports=asked)
    return json_response(_created("port", body.port, [port_view(p) for p in ports]), status=201)


@routes.get(
    PORT,
    "Show a port",
    query=ShowQuery,
    replies=[Reply(200, PortTrimmed, "The port (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_port(request: web.Request, query: ShowQuery) -> web.Response:
    port = await client(request, Net).get_port(port_id=request.match_info["port_id"])
    return json_response({"port": trimmed(port_view(port), query)})


@routes.put(
    PORT,
    "Update a port",
    body=PortUpdateRequest,
    replies=[Reply(200, PortShown, "The port.")],
    errors=(400, 404, 409),
)
async def update_port(request: web.Request, body: PortUpdateRequest) -> web.Response:
    """409: a fixed IP asked for is another port's, or its subnet has no free address, or port
    security disabled on a port left in security groups; 400: a fixed IP that is not on the port's
    network, or security groups with port security disabled; 404: a security group the project
    does not have."""
    changes = changes_of(body.port, {"binding_host_id": "binding_host"})
    if "fixed_ips" in changes:
        changes["fixed_ips"] = msgspec.to_builtins(changes["fixed_ips"])
    port = await client(request, Net).update_port(port_id=request.match_info["port_id"], **changes)
    return json_response(PortShown(port=port_view(port)))


@routes.delete(
    PORT, "Delete a port", replies=[Reply(204, None, "Deleted, its addresses freed.")], errors=(404,)
)
async def delete_port(request: web.Request) -> web.Response:
    await client(request, Net).delete_port(port_id=request.match_info["port_id"])
    return no_content()


routes.include(network_quotas.routes)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
