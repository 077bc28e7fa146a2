"""The net service's API (Neutron): networks, subnets, ports and the IP addresses they hold.

A project sees its own networks, subnets and ports plus the shared networks (and their
subnets); anything else is ``NotFound``. Admins and services (a call acting for no user)
see every project's. Records carry Neutron's attribute names (``tenant_id``,
``binding:host_id``...), so the gateway passes them through as they are.

Facets, by caller (each process's NATS permissions follow from the facets it uses):

* ``NetForNodes``: what compute nodes call, each as its own host (``net.host.<host>``):
  ``allocate_for_instance``, ``deallocate_for_instance``, ``set_port_binding``,
  ``get_network``, ``get_subnet``, for the instances placed on that host only, acting for
  their projects; ``dhcp_port``, ``release_dhcp_port``: the host's own DHCP port on a
  network its instances use; ``routers_for_host``: the routers the host serves;
* ``Net``: the whole API, as users reach it through the gateway (and as the conductor, the
  audit and the tests use it): ``InstancePorts`` (the same calls for a service that names
  the project and host itself), the CRUD of networks, subnets and ports, and
  ``list_allocations``.

``Net`` is assembled from facets by job (``NetworkReader`` + ``Networks``, ``SubnetReader``
+ ``Subnets``, ``SubnetPools``, ``Ports``, ``InstancePorts``, ``Allocations``, ``NetworkQuotas``,
``SecurityGroups``, ``Routers``, ``FloatingIps``), the parts the net actor's servants implement.

Quotas (Neutron's): each project may have at most its limit of networks, subnets, ports and subnet
pools (its own, set by an admin, else ``DEFAULT_QUOTAS``; -1: unlimited). Usage is counted from the
rows, in the store transaction that makes a new one (the store's only writer), so concurrent creates
never go past a limit; a create past it is ``OverQuota``, and a bulk create past it makes none.
Ports ``allocate_for_instance`` makes count as the user's do; DHCP ports count in the usage of the
network's project but are never refused. A limit below what a project uses is allowed: it only
refuses new ones. Resources of no project (the shared default network) count against nothing.

Version history: 1 - initial; 2 - ``NetForNodes`` is served per calling host and takes the
project and host from the conductor's records and the subject (its ``get_network`` and
``get_subnet`` name the instance they read for); 3 - networks carry their VXLAN segment
(``provider:network_type``, ``provider:segmentation_id``), and ``NetForNodes`` gives each
host a DHCP port per network (``dhcp_port``, ``release_dhcp_port``); 4 - subnets take
``host_routes`` and are updated (``update_subnet``), networks, subnets and ports are made in bulk
(``create_networks``, ``create_subnets``, ``create_ports``: all or none), ``update_port`` takes
``fixed_ips``; 5 - subnet pools (``SubnetPools``), and ``create_subnet`` takes a
``subnetpool_id`` (and ``prefixlen``) in place of a ``cidr``, the subnet showing its pool; 6 - quotas
(``NetworkQuotas``): a project's limits of networks, subnets, ports and subnet pools, enforced in the
transaction that makes one (``OverQuota``); 7 - ``NetForNodes.instance_ports_at``: the ports of the
instance holding an address on a network (what a node's metadata service asks of a request); 8 - security
groups and their rules (``SecurityGroups``, quotas of both), ports' ``security_groups`` and
``port_security_enabled``, ``NetForNodes.security_for_host``; 9 - external networks
(``router_external``: admins make and list them, every project sees them), routers (``Routers``: gateway,
interfaces, extra routes), floating IPs (``FloatingIps``), their quotas, and
``NetForNodes.routers_for_host`` with ``ROUTERS_CHANGED``; 10 - ``InstancePorts.attach_port`` and
``detach_port``: one port of an instance made or bound, and given back (interface hot-plug); 11 -
``InstancePorts.unbind_instance_ports`` (a shelved instance offloaded: its ports kept, bound to no host);
12 - ``NetForNodes.security_for_host`` takes ``arriving``: the ports of instances a live migration
copies to the host are filtered there before their binding moves;
13 - ``group_names_by_device`` (the names of the groups of these devices' ports: a page of
servers reads its own).

Events (kind ``port``, project the port's, with the port as ``get_port`` shows it):
``port.bound`` (``allocate_for_instance``, one per port; ``attach_port``; ``dhcp_port`` when it
makes one), ``port.plugged``
(``set_port_binding``), ``port.unbound`` (``deallocate_for_instance`` gave a port the user
made back, or ``unbind_instance_ports`` unbound one from its host) and ``port.deleted``
(``delete_port``, ``delete_network`` for each of its ports, ``deallocate_for_instance`` for those it
made, ``release_dhcp_port``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required, TypedDict

from msgspec import Meta

from api.fields import HostName, Id
from bus import Conflict, InvalidRequest, NotFound
from bus.api import ServiceAPI, Topic, call

COMPUTE_OWNER = "compute:nova"
"""The ``device_owner`` of the ports ``allocate_for_instance`` makes or binds."""
DHCP_OWNER = "network:dhcp"
"""The ``device_owner`` of a host's DHCP port on a network (its ``device_id``: ``dhcp-<host>``)."""
ROUTER_INTERFACE_OWNER = "network:router_interface"
"""The ``device_owner`` of a router's port on a tenant subnet (its ``device_id``: the router)."""
ROUTER_GATEWAY_OWNER = "network:router_gateway"
"""The ``device_owner`` of a router's port on its external network (of no project, as Neutron's)."""
FLOATINGIP_OWNER = "network:floatingip"
"""The ``device_owner`` of the port holding a floating IP's address (its ``device_id``: the floating IP)."""
ROUTER_OWNERS = (ROUTER_INTERFACE_OWNER, ROUTER_GATEWAY_OWNER)
NETWORK_TYPE = "vxlan"
"""Every network is a VXLAN segment (its VNI: ``provider:segmentation_id``) on hosts that run an overlay."""

QuotaResource = Literal[
    "network", "subnet", "port", "subnetpool", "security_group", "security_group_rule", "router", "floatingip"
]
"""What net quotas limit: a project's networks, subnets, ports, subnet pools, security groups and
their rules, routers and floating IPs."""
DEFAULT_QUOTAS: dict[QuotaResource, int] = {
    "network": 100,
    "subnet": 100,
    "port": -1,
    "subnetpool": -1,
    "security_group": 10,
    "security_group_rule": 100,
    "router": 10,
    "floatingip": 50,
}
"""The limits of a project with none of its own: Neutron's (security groups 10, rules 100: a
project's default group and its four rules count, but are made whatever the limits; routers 10,
floating IPs 50), but ports
are open (Neutron's default is 500) as compute leaves instances open until an admin sets a
project's limits: every instance holds a port, and a one-machine cloud's benchmarks boot a
thousand at once."""
QuotaLimit = Annotated[int, Meta(ge=-1, le=2**31 - 1)]
"""A limit; -1: unlimited."""


class OverQuota(Conflict):
    """Neutron's OverQuota (409): a create would take a project past its limit of a resource;
    nothing was made."""

    code = "over_quota"


Text = Annotated[str, Meta(max_length=255)]
"""A name, description, device id or owner, host or project: at most 255 characters (Neutron's
limit), maybe empty."""
IpAddress = Annotated[str, Meta(max_length=64)]
"""An IP address as text (whether it parses, and is IPv4, the handler checks)."""
Cidr = Annotated[str, Meta(max_length=64)]
"""A subnet as ``address/prefix`` (whether it parses, and has hosts, the handler checks)."""
MacAddress = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")]
"""Six colon-separated hex bytes (stored lower-cased)."""
Mtu = Annotated[int, Meta(ge=68, le=9000)]
PrefixLength = Annotated[int, Meta(ge=0, le=32)]
"""The length of an IPv4 prefix."""
IpVersion = Literal[4, 6]
"""Neutron's IP versions; only 4 is built (6 is refused by the handler)."""
VifType = Literal["bridge", "user", "unbound", "binding_failed"]
"""How a bound port reaches its guest: a bridge, or user-mode networking where none could be made."""
PortStatus = Literal["ACTIVE", "DOWN"]


class FixedIp(TypedDict):
    """An address a port holds."""

    subnet_id: str
    ip_address: str


class FixedIpRequest(TypedDict, total=False):
    """An address ``create_port`` asks for: on a subnet, that address, or both (null: any)."""

    subnet_id: str | None
    ip_address: IpAddress | None


class AllocationPool(TypedDict):
    """A range of a subnet's addresses ports are given from, both ends included."""

    start: IpAddress
    end: IpAddress


class HostRoute(TypedDict):
    """A route a subnet's hosts are given (over DHCP where aiostack serves it): to
    ``destination`` (a CIDR) through ``nexthop`` (an address)."""

    destination: Cidr
    nexthop: IpAddress


class NetworkRequest(TypedDict, total=False):
    """One network ``create_networks`` makes: ``create_network``'s arguments (absent: its defaults)."""

    name: Text
    shared: bool
    admin_state_up: bool
    mtu: Mtu
    description: Text
    router_external: bool


class SubnetRequest(TypedDict, total=False):
    """One subnet ``create_subnets`` makes: ``create_subnet``'s arguments (absent: its defaults)."""

    network_id: Required[Id]
    cidr: Cidr | None
    subnetpool_id: Id | None
    prefixlen: PrefixLength | None
    name: Text
    gateway_ip: IpAddress | None
    allocation_pools: list[AllocationPool] | None
    ip_version: IpVersion
    enable_dhcp: bool
    dns_nameservers: list[IpAddress] | None
    host_routes: list[HostRoute] | None
    description: Text


class PortRequest(TypedDict, total=False):
    """One port ``create_ports`` makes: ``create_port``'s arguments (absent: its defaults)."""

    network_id: Required[Id]
    name: Text
    mac_address: MacAddress | None
    fixed_ips: list[FixedIpRequest] | None
    device_id: Text
    device_owner: Text
    admin_state_up: bool
    description: Text
    security_groups: list[Id] | None
    port_security_enabled: bool


class RequestedNetwork(TypedDict, total=False):
    """One entry of ``allocate_for_instance``'s ``requested_networks``: a new port on a network
    (``uuid``, with ``fixed_ip`` if it asks for that address), or a port the user made (``port``)."""

    uuid: Id
    port: Id
    fixed_ip: IpAddress


# A network (Neutron's attribute names, ``router:external`` among them: hence the functional form).
Network = TypedDict(
    "Network",
    {
        "id": str,
        "name": str,
        "project_id": str,
        "tenant_id": str,
        "shared": bool,
        "admin_state_up": bool,
        "mtu": int,
        "status": Literal["ACTIVE"],
        "router:external": bool,
        "provider:network_type": str,
        "provider:segmentation_id": int,
        "subnets": list[str],
        "description": str,
        "revision_number": int,
        "tags": list[str],
        "created_at": str,
        "updated_at": str,
    },
)


class Subnet(TypedDict):
    """A subnet of a network: its range, gateway and the pools ports are given addresses from."""

    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str
    cidr: str
    ip_version: int
    gateway_ip: str
    allocation_pools: list[AllocationPool]
    enable_dhcp: bool
    dns_nameservers: list[str]
    host_routes: list[HostRoute]
    subnetpool_id: str | None
    description: str
    revision_number: int
    tags: list[str]
    created_at: str
    updated_at: str


class SubnetPool(TypedDict):
    """A pool of IPv4 prefixes subnets are given theirs from (Neutron's subnet allocation): its
    prefixes (merged), and the lengths a subnet of it may have."""

    id: str
    name: str
    project_id: str
    tenant_id: str
    prefixes: list[str]
    default_prefixlen: int
    min_prefixlen: int
    max_prefixlen: int
    ip_version: int
    shared: bool
    is_default: bool
    description: str
    revision_number: int
    tags: list[str]
    created_at: str
    updated_at: str


# A port: ACTIVE while it is up with a device and a binding host, else DOWN. ``binding:vif_details``
# is what the node that plugged it says (``libvirt_network``, ``fallback_reason``).
Port = TypedDict(
    "Port",
    {
        "id": str,
        "name": str,
        "network_id": str,
        "project_id": str,
        "tenant_id": str,
        "mac_address": str,
        "fixed_ips": list[FixedIp],
        "device_id": str,
        "device_owner": str,
        "admin_state_up": bool,
        "status": PortStatus,
        "binding:host_id": str,
        "binding:vif_type": VifType,
        "binding:vif_details": dict[str, Any],
        "binding:vnic_type": Literal["normal"],
        "binding:profile": dict[str, Any],
        "security_groups": list[str],
        "port_security_enabled": bool,
        "description": str,
        "revision_number": int,
        "tags": list[str],
        "created_at": str,
        "updated_at": str,
    },
)


Direction = Literal["ingress", "egress"]
EtherType = Literal["IPv4", "IPv6"]
PortNumber = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
"""A rule's port (or ICMP type or code); whether it fits its protocol, the handler checks (Neutron's
own messages: "Invalid value for port -16")."""
Protocol = Annotated[str, Meta(max_length=32)] | Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
"""A protocol's name (``tcp``, ``udp``, ``icmp``... or ``any``) or number (0-255), checked by the handler."""
DEFAULT_GROUP = "default"
"""The name of each project's default security group, made on its first use."""


class SecurityGroupRule(TypedDict):
    """A rule of a security group: what traffic of one direction and ethertype it lets through
    (a protocol, a port range or ICMP type and code, a remote CIDR or the members of a remote
    group; null: any). ``protocol`` is as it was asked (a name, or a number as text)."""

    id: str
    security_group_id: str
    project_id: str
    tenant_id: str
    direction: Direction
    ethertype: EtherType
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    normalized_cidr: str | None
    description: str
    revision_number: int
    created_at: str
    updated_at: str


class SecurityGroup(TypedDict):
    """A project's security group and its rules (every project has one named ``default``)."""

    id: str
    name: str
    project_id: str
    tenant_id: str
    description: str
    security_group_rules: list[SecurityGroupRule]
    revision_number: int
    tags: list[str]
    created_at: str
    updated_at: str


class SecurityGroupRuleRequest(TypedDict, total=False):
    """One rule ``create_security_group_rules`` makes: ``create_security_group_rule``'s arguments."""

    security_group_id: Required[Id]
    direction: Required[Direction]
    ethertype: EtherType
    protocol: Protocol | None
    port_range_min: PortNumber | None
    port_range_max: PortNumber | None
    remote_ip_prefix: Cidr | None
    remote_group_id: Id | None
    description: Text


class EnforcedRule(TypedDict):
    """A rule as a node enforces it (``node.firewall.Rule``): the protocol as a number (None: any),
    the remote CIDR as its network (None: anywhere) or the remote group."""

    direction: Direction
    ethertype: EtherType
    protocol: int | None
    port_range_min: int | None
    port_range_max: int | None
    remote_cidr: str | None
    remote_group_id: str | None


class PortSecurity(TypedDict):
    """What a node enforces for one port bound to it: its addresses and its groups' rules."""

    port_id: str
    network_id: str
    mac_address: str
    fixed_ips: list[str]
    port_security_enabled: bool
    rules: list[EnforcedRule]


class HostSecurity(TypedDict):
    """What a node enforces: its ports, and the members' fixed IPs of each remote group their rules name."""

    ports: list[PortSecurity]
    members: dict[str, list[str]]


class SecurityChanged(TypedDict):
    """Which security groups changed: their rules, or their members' addresses."""

    groups: list[str]


SECURITY_CHANGED = Topic("net.secgroups.{host}", SecurityChanged)
"""Told to each host with an instance port that a changed group filters, or whose groups' rules name
a changed group as their remote group; the host then asks ``NetForNodes.security_for_host``."""


class RouterPort(TypedDict):
    """One of a router's ports as the host serving it plugs it in: a ``qr-`` interface on a tenant
    subnet (its address is usually the subnet's gateway) or the ``qg-`` external gateway."""

    port_id: str
    network_id: str
    subnet_id: str
    mac_address: str
    ip_address: str
    cidr: str
    """The subnet's CIDR: the port's address is ``ip_address/<its prefix length>``."""
    gateway_ip: str | None
    """The subnet's gateway (on the external gateway port: the next hop of the router's default route)."""
    mtu: int


class FloatingIpPlan(TypedDict):
    """A floating IP associated with a port: DNAT to the fixed IP, SNAT of that fixed IP back to it."""

    floatingip_id: str
    floating_ip_address: str
    fixed_ip_address: str
    port_id: str


class RouterPlan(TypedDict):
    """What one router is on the host serving it (Neutron's L3 agent's router info): a namespace
    ``qrouter-<router id>`` with its interfaces, its external gateway (None: none set) with SNAT
    when ``enable_snat``, and the floating IPs reached through it."""

    router_id: str
    admin_state_up: bool
    gateway: RouterPort | None
    enable_snat: bool
    interfaces: list[RouterPort]
    floating_ips: list[FloatingIpPlan]


class HostRouters(TypedDict):
    """The routers the calling host serves (all of them, each time)."""

    routers: list[RouterPlan]


class RoutersChanged(TypedDict):
    """Which routers changed (their interfaces, gateway, floating IPs, or were deleted)."""

    routers: list[str]


ROUTERS_CHANGED = Topic("net.routers.{host}", RoutersChanged)
"""Told to the host serving a router when it changes; the host then asks ``NetForNodes.routers_for_host``."""


class ExternalGatewayInfo(TypedDict):
    """A router's external gateway: its network, whether it SNATs, the addresses its port holds."""

    network_id: str
    enable_snat: bool
    external_fixed_ips: list[FixedIp]


class ExternalGatewayRequest(TypedDict, total=False):
    """The gateway ``create_router``/``update_router`` set: on an external network (none: clear it),
    SNAT on unless asked off, addresses of its subnets (default: one of the first with a free one)."""

    network_id: Id
    enable_snat: bool
    external_fixed_ips: list[FixedIpRequest]


class Router(TypedDict):
    """A project's router: its external gateway (None: none) and extra routes (Neutron's
    ``extraroute``); its interfaces are its ports (``ROUTER_INTERFACE_OWNER``, ``device_id`` the router)."""

    id: str
    name: str
    project_id: str
    tenant_id: str
    description: str
    admin_state_up: bool
    status: Literal["ACTIVE"]
    external_gateway_info: ExternalGatewayInfo | None
    routes: list[HostRoute]
    revision_number: int
    tags: list[str]
    created_at: str
    updated_at: str


class RouterInterface(TypedDict):
    """What ``add_router_interface`` and ``remove_router_interface`` answer (Neutron's body)."""

    id: str
    """The router's."""
    project_id: str
    tenant_id: str
    port_id: str
    network_id: str
    subnet_id: str
    subnet_ids: list[str]


class FloatingIp(TypedDict):
    """A floating IP: an address of an external network, DNATed to a port's fixed IP when associated
    (``status`` ACTIVE, through ``router_id``), else DOWN."""

    id: str
    project_id: str
    tenant_id: str
    floating_network_id: str
    floating_ip_address: str
    port_id: str | None
    fixed_ip_address: str | None
    router_id: str | None
    status: Literal["ACTIVE", "DOWN"]
    description: str
    revision_number: int
    tags: list[str]
    created_at: str
    updated_at: str


class BadRequest(InvalidRequest):
    """Neutron's BadRequest (400): "Bad <resource> request: <reason>"."""

    code = "bad_request"


class RouterNotFound(NotFound):
    """Neutron's RouterNotFound (404)."""

    code = "router_not_found"


class FloatingIPNotFound(NotFound):
    """Neutron's FloatingIPNotFound (404)."""

    code = "floatingip_not_found"


class RouterInterfaceNotFoundForSubnet(NotFound):
    """Neutron's RouterInterfaceNotFoundForSubnet (404)."""

    code = "router_interface_not_found_for_subnet"


class RouterInterfaceNotFound(NotFound):
    """Neutron's RouterInterfaceNotFound (404): the port is no interface of the router."""

    code = "router_interface_not_found"


class ExternalGatewayForFloatingIPNotFound(NotFound):
    """Neutron's ExternalGatewayForFloatingIPNotFound (404): no router joins the port's subnet to
    the floating IP's external network."""

    code = "external_gateway_for_floatingip_not_found"


class RouterInUse(Conflict):
    """Neutron's RouterInUse (409): the router still has interfaces."""

    code = "router_in_use"


class RouterInterfaceInUseByFloatingIP(Conflict):
    """Neutron's RouterInterfaceInUseByFloatingIP (409): a floating IP reaches a port through it."""

    code = "router_interface_in_use_by_floatingip"


class InvalidRoutes(InvalidRequest):
    """Neutron's InvalidRoutes (400)."""

    code = "invalid_routes"


class RouterInterfaceInUseByRoute(Conflict):
    """Neutron's RouterInterfaceInUseByRoute (409): an extra route's nexthop is on its subnet."""

    code = "router_interface_in_use_by_route"


class RouterExternalGatewayInUseByFloatingIp(Conflict):
    """Neutron's RouterExternalGatewayInUseByFloatingIp (409): clearing a gateway floating IPs use."""

    code = "router_external_gateway_in_use_by_floatingip"


class ExternalNetworkInUse(Conflict):
    """Neutron's ExternalNetworkInUse (409): making a network with gateway ports non-external."""

    code = "external_network_in_use"


class PortInUse(Conflict):
    """Neutron's PortInUse (409): the port already has a device."""

    code = "port_in_use"


class ServicePortInUse(Conflict):
    """Neutron's ServicePortInUse (409): a router's or floating IP's port deleted through the port API."""

    code = "service_port_in_use"


class FloatingIPPortAlreadyAssociated(Conflict):
    """Neutron's FloatingIPPortAlreadyAssociated (409): another floating IP has that fixed IP."""

    code = "floatingip_port_already_associated"


class IpAddressAlreadyAllocated(Conflict):
    """Neutron's IpAddressAlreadyAllocated (409)."""

    code = "ip_address_already_allocated"


class SecurityGroupNotFound(NotFound):
    """Neutron's SecurityGroupNotFound (404)."""

    code = "security_group_not_found"


class SecurityGroupRuleNotFound(NotFound):
    """Neutron's SecurityGroupRuleNotFound (404)."""

    code = "security_group_rule_not_found"


class SecurityGroupRuleExists(Conflict):
    """Neutron's SecurityGroupRuleExists (409): the group has a rule that matches the same traffic."""

    code = "security_group_rule_exists"


class SecurityGroupDefaultAlreadyExists(Conflict):
    """Neutron's SecurityGroupDefaultAlreadyExists (409): a second group named ``default``."""

    code = "security_group_default_exists"


class SecurityGroupCannotRemoveDefault(Conflict):
    """Neutron's SecurityGroupCannotRemoveDefault (409): a member deleting its default group."""

    code = "security_group_cannot_remove_default"


class SecurityGroupCannotUpdateDefault(Conflict):
    """Neutron's SecurityGroupCannotUpdateDefault (409): renaming the default group."""

    code = "security_group_cannot_update_default"


class SecurityGroupInUse(Conflict):
    """Neutron's SecurityGroupInUse (409): a port is in the group."""

    code = "security_group_in_use"


class PortSecurityPortHasSecurityGroup(Conflict):
    """Neutron's PortSecurityPortHasSecurityGroup (409): disabling port security on a port in groups."""

    code = "port_security_port_has_security_group"


class Deallocated(TypedDict):
    """What ``deallocate_for_instance`` did: ports deleted, and ports given back unbound."""

    deleted: int
    unbound: int


class IpAllocation(TypedDict):
    subnet_id: str
    ip_address: str
    port_id: str


class Quotas(TypedDict):
    """A project's limits (-1: unlimited), by resource."""

    network: int
    subnet: int
    port: int
    subnetpool: int
    security_group: int
    security_group_rule: int
    router: int
    floatingip: int


class ProjectQuotas(Quotas):
    """The limits of a project that has some of its own."""

    project_id: str


class QuotaUsage(TypedDict):
    limit: int
    used: int
    reserved: int
    """Always 0: a create counts and inserts in one transaction, nothing is held in between."""


class QuotaDetails(TypedDict):
    """A project's limits and what it uses, by resource."""

    network: QuotaUsage
    subnet: QuotaUsage
    port: QuotaUsage
    subnetpool: QuotaUsage
    security_group: QuotaUsage
    security_group_rule: QuotaUsage
    router: QuotaUsage
    floatingip: QuotaUsage


class NetworkReader(ServiceAPI, address="net"):
    """What the conductor and users read of networks."""

    @call(policy="network:read", idempotent=True)
    async def get_network(self, *, network_id: Id) -> Network:
        """One network.

        :raises NotFound: none, or the caller may not see it.
        """
        ...


class SubnetReader(ServiceAPI, address="net"):
    """What users read of subnets."""

    @call(policy="network:read", idempotent=True)
    async def get_subnet(self, *, subnet_id: Id) -> Subnet:
        """One subnet.

        :raises NotFound: none, or the caller may not see it.
        """
        ...


class InstancePorts(ServiceAPI, address="net"):
    """An instance's ports, as services acting for no user call them (the conductor releases them;
    nodes go through ``NetForNodes``): made or bound for a build on a host, plugged, given back."""

    @call(idempotent=True)
    async def allocate_for_instance(
        self,
        *,
        instance_uuid: Id,
        project_id: Text,
        requested_networks: list[RequestedNetwork] | Literal["auto", "none"] | None,
        host: HostName,
        security_groups: list[Id] | None = None,
    ) -> list[Port]:
        """The ports of an instance on ``host``, acting for ``project_id``; idempotent per instance.

        ``requested_networks``: a list of ``{"uuid": network_id[, "fixed_ip": ip]}`` and
        ``{"port": port_id}``; "auto", None or [] (the project's network if it has exactly one,
        else the shared default network); "none" (no port). A new port (device_owner
        ``COMPUTE_OWNER``) is deleted by ``deallocate_for_instance``, a given one only unbound.
        New ports join ``security_groups`` (None: the project's default group); a given one keeps
        its groups. Publishes ``port.bound`` for each; when the instance has ports, returns them instead
        (bound to ``host`` now).

        :raises InvalidRequest: an entry with both or neither of uuid and port, a port with a
            fixed_ip, a port named twice, a fixed_ip that is no address of the network.
        :raises Forbidden: a member acting for another project.
        :raises NotFound: a network or port the project does not see; no default network; a
            security group not of the project.
        :raises Conflict: a given port is bound to another instance; no (or not that) address is free.
        :raises OverQuota: the new ports would take the project past its port limit (none is made).
        """
        ...

    @call(idempotent=True)
    async def deallocate_for_instance(self, *, instance_uuid: Id) -> Deallocated:
        """Delete the instance's ports ``allocate_for_instance`` created (releasing their
        addresses) and unbind those it was given; idempotent. Publishes ``port.deleted`` and
        ``port.unbound``."""
        ...

    @call(idempotent=True)
    async def unbind_instance_ports(self, *, instance_uuid: Id) -> list[Port]:
        """Unbind the instance's ports from their host (a shelved instance offloaded): their
        ``binding:host_id`` cleared, ``binding:vif_type`` ``unbound``; they stay the instance's,
        with their addresses. ``allocate_for_instance`` binds them to a host again. Publishes
        ``port.unbound``; idempotent."""
        ...

    @call(idempotent=True)
    async def set_port_binding(self, *, port_id: Id, vif_type: VifType, vif_details: dict[str, Any]) -> Port:
        """How a node plugged a bound port in (``binding:vif_type``: bridge, or user-mode
        networking where no bridge could be made, with the reason in ``binding:vif_details``).
        Publishes ``port.plugged``.

        :raises NotFound: no such port.
        """
        ...

    @call
    async def attach_port(
        self,
        *,
        instance_uuid: Id,
        project_id: Text,
        host: HostName,
        network_id: Id | None = None,
        port_id: Id | None = None,
        fixed_ip: IpAddress | None = None,
    ) -> Port:
        """One more port of an instance on ``host`` (Nova's interface attach), acting for
        ``project_id``: a new port on ``network_id`` (with ``fixed_ip`` if given; in the project's
        default security group; deleted by ``detach_port`` or ``deallocate_for_instance``), or the
        project's port ``port_id``, bound; neither: a new port on the network a build's "auto"
        picks. Publishes ``port.bound``.

        :raises InvalidRequest: both network_id and port_id, a port with a fixed_ip, a fixed_ip
            that is no address of the network.
        :raises NotFound: a network or port the project does not see; no default network.
        :raises PortInUse: the port has a device.
        :raises Conflict: the address is taken, or none is free.
        :raises OverQuota: the project has as many ports as its limit.
        """
        ...

    @call(idempotent=True)
    async def detach_port(self, *, instance_uuid: Id, port_id: Id) -> Port | None:
        """Give back one port of the instance: deleted if ``allocate_for_instance`` or
        ``attach_port`` made it (publishes ``port.deleted``), else unbound and kept
        (``port.unbound``); the port as it was. None: the port is not the instance's (any more)."""
        ...


class NetForNodes(ServiceAPI, address="net.host.{host}", caller="host"):
    """What compute nodes call, each as its own host (``net.host.<host>``, the host from the
    subject): the ports of an instance placed on that host, acting for the instance's project,
    and the networks and subnets they are on. An instance not on the calling host is
    ``NotFound``, and nothing changes (where an instance is and whose, the net actor asks the
    conductor: ``ConductorForOwners.placement``)."""

    @call(idempotent=True)
    async def allocate_for_instance(
        self,
        *,
        instance_uuid: Id,
        requested_networks: list[RequestedNetwork] | Literal["auto", "none"] | None,
        security_groups: list[Id] | None = None,
    ) -> list[Port]:
        """``InstancePorts.allocate_for_instance`` for an instance on the calling host, acting for
        its project, bound to that host.

        :raises NotFound: no such instance on the calling host; a network or port its project
            does not see; no default network.
        :raises InvalidRequest: as ``InstancePorts.allocate_for_instance``.
        :raises Conflict: as ``InstancePorts.allocate_for_instance``.
        """
        ...

    @call(idempotent=True)
    async def deallocate_for_instance(self, *, instance_uuid: Id) -> Deallocated:
        """``InstancePorts.deallocate_for_instance`` for an instance on the calling host.

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call(idempotent=True)
    async def set_port_binding(self, *, port_id: Id, vif_type: VifType, vif_details: dict[str, Any]) -> Port:
        """How the node plugged in a port of an instance on the calling host (as
        ``InstancePorts.set_port_binding``).

        :raises NotFound: no such port, or its instance is not on the calling host.
        """
        ...

    @call(idempotent=True)
    async def get_network(self, *, network_id: Id, instance_uuid: Id) -> Network:
        """A network the instance (on the calling host) has a port on, or a shared one, as the
        instance's project sees it.

        :raises NotFound: no such instance on the calling host, or no such network it may read.
        """
        ...

    @call(idempotent=True)
    async def get_subnet(self, *, subnet_id: Id, instance_uuid: Id) -> Subnet:
        """A subnet of a network ``get_network`` would answer.

        :raises NotFound: no such instance on the calling host, or no such subnet it may read.
        """
        ...

    @call(idempotent=True)
    async def instance_ports_at(self, *, network_id: Id, ip_address: IpAddress) -> list[Port]:
        """The ports of the instance (on the calling host) whose port on the network holds the
        fixed IP ``ip_address``, that port first (Neutron's metadata agent finds the instance a
        request comes from so).

        :raises NotFound: no port of an instance on the calling host holds that address there.
        """
        ...

    @call(idempotent=True)
    async def dhcp_port(self, *, network_id: Id, instance_uuid: Id) -> Port:
        """The calling host's DHCP port on a network ``get_network`` would answer (Neutron's
        ``network:dhcp`` port of a DHCP agent, ``device_id`` ``dhcp-<host>``, in the network's
        project): made with an address of each subnet on first use, the same port after.

        :raises NotFound: as ``get_network``.
        :raises Conflict: no free address on the network.
        """
        ...

    @call(idempotent=True)
    async def release_dhcp_port(self, *, network_id: Id) -> bool:
        """Delete the calling host's DHCP port on a network (no guest of that host uses the
        network any more); False when it had none."""
        ...

    @call(idempotent=True)
    async def security_for_host(self, *, arriving: list[Id] | None = None) -> HostSecurity:
        """What the calling host enforces: every
        instance port bound to it, with its groups' rules, and the members of the remote groups
        those rules name (their ports on any host); with ``arriving``, also the ports of those
        instances, which live migrations are copying to it (still bound to their source: the
        guest may resume here before its binding moves, and must be filtered from its first frame);
        one that is neither on the calling host nor arriving there is left out."""
        ...

    @call(idempotent=True)
    async def routers_for_host(self) -> HostRouters:
        """The routers the calling host serves, as it plugs them in. Calling it makes the host one
        that serves routers (Neutron's L3 agent reporting in): routers served by no host yet are
        given to it, and new routers go to the serving host with the fewest."""
        ...


class Networks(NetworkReader, address="net"):
    """Networks, as users reach them through the gateway."""

    @call(policy="network:write")
    async def create_network(
        self,
        *,
        name: Text = "",
        shared: bool = False,
        admin_state_up: bool = True,
        mtu: Mtu = 1500,
        description: Text = "",
        router_external: bool = False,
    ) -> Network:
        """A network of the caller's project; ``router_external`` (admins): an external network,
        which every project sees (not its subnets) and routers' gateways and floating IPs are on.

        :raises Forbidden: a member asked for a shared or external network.
        :raises OverQuota: the project has as many networks as its limit.
        """
        ...

    @call(policy="network:write")
    async def create_networks(self, *, networks: list[NetworkRequest]) -> list[Network]:
        """Several networks at once (Neutron's bulk create), in one transaction: all or none.

        :raises Forbidden: a member asked for a shared network (none is made).
        :raises OverQuota: they would take the project past its network limit (none is made).
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_networks(
        self,
        *,
        name: Text | None = None,
        shared: bool | None = None,
        project_id: Text | None = None,
        router_external: bool | None = None,
    ) -> list[Network]:
        """The networks the caller sees (its own, the shared and the external ones), filtered,
        oldest first."""
        ...

    @call(policy="network:write")
    async def update_network(
        self,
        *,
        network_id: Id,
        name: Text | None = None,
        admin_state_up: bool | None = None,
        description: Text | None = None,
        router_external: bool | None = None,
    ) -> Network:
        """Rename a network, set its admin state, description or (admins) whether it is external
        (None: unchanged).

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared or external network; a member setting
            ``router_external``.
        :raises ExternalNetworkInUse: making a network with router gateway or floating IP ports
            non-external.
        """
        ...

    @call(policy="network:write")
    async def delete_network(self, *, network_id: Id) -> None:
        """Delete a network, its subnets and its unbound ports (``port.deleted`` for each).

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared network.
        :raises Conflict: a port of it is bound to an instance (Neutron's NetworkInUse).
        """
        ...


class Subnets(SubnetReader, address="net"):
    """Subnets, as users reach them through the gateway."""

    @call(policy="network:write")
    async def create_subnet(
        self,
        *,
        network_id: Id,
        cidr: Cidr | None = None,
        name: Text = "",
        gateway_ip: IpAddress | None = None,
        allocation_pools: list[AllocationPool] | None = None,
        ip_version: IpVersion = 4,
        enable_dhcp: bool = True,
        dns_nameservers: list[IpAddress] | None = None,
        description: Text = "",
        host_routes: list[HostRoute] | None = None,
        subnetpool_id: Id | None = None,
        prefixlen: PrefixLength | None = None,
    ) -> Subnet:
        """A subnet of a network of the caller's project. The gateway defaults to the first host
        address, the pool to the other host addresses. With a ``subnetpool_id``, its CIDR is one
        of the pool's: ``cidr`` if it is free in the pool, else the lowest free prefix of
        ``prefixlen`` (default: the pool's ``default_prefixlen``; unused with a ``cidr``).

        :raises InvalidRequest: a CIDR that does not parse, is not IPv4 or has no hosts; a gateway,
            pool or name server that is no address, or outside the subnet; pools overlapping each
            other or the gateway; a CIDR overlapping another subnet of the network; a host route
            whose destination is no CIDR or whose nexthop is no address, or a route given twice;
            neither a cidr nor a subnetpool_id; a cidr outside the pool's prefixes, or a length
            outside its bounds.
        :raises NotFound: no such network or subnet pool the caller sees.
        :raises Forbidden: another project's shared network.
        :raises Conflict: the pool has no free prefix of that length, or the cidr overlaps one
            of its subnets.
        :raises OverQuota: the network's project has as many subnets as its limit.
        """
        ...

    @call(policy="network:write")
    async def create_subnets(self, *, subnets: list[SubnetRequest]) -> list[Subnet]:
        """Several subnets at once (Neutron's bulk create), in one transaction: all or none (one
        overlapping another of the same request is refused too).

        :raises InvalidRequest: as ``create_subnet``, for any of them.
        :raises NotFound: as ``create_subnet``, for any of them.
        :raises Forbidden: as ``create_subnet``, for any of them.
        :raises OverQuota: they would take a project past its subnet limit (none is made).
        """
        ...

    @call(policy="network:write")
    async def update_subnet(
        self,
        *,
        subnet_id: Id,
        name: Text | None = None,
        description: Text | None = None,
        gateway_ip: IpAddress | None = None,
        enable_dhcp: bool | None = None,
        dns_nameservers: list[IpAddress] | None = None,
        host_routes: list[HostRoute] | None = None,
        allocation_pools: list[AllocationPool] | None = None,
    ) -> Subnet:
        """Change a subnet (None: unchanged; a list replaces the one there was). The gateway and
        the pools are checked as ``create_subnet`` checks them, against each other as they will be.

        :raises NotFound: none the caller sees.
        :raises Forbidden: a subnet of another project's shared network.
        :raises InvalidRequest: as ``create_subnet``.
        :raises Conflict: the new gateway is a port's address (Neutron's GatewayIpInUse), or an
            address a port holds from the pools would be outside the new ones.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_subnets(self, *, network_id: Text | None = None) -> list[Subnet]:
        """The subnets the caller sees (its own and those of shared networks), oldest first."""
        ...

    @call(policy="network:write")
    async def delete_subnet(self, *, subnet_id: Id) -> None:
        """Delete a subnet none of whose addresses is allocated.

        :raises NotFound: none the caller sees.
        :raises Forbidden: a subnet of another project's shared network.
        :raises Conflict: a port holds an address of it (Neutron's SubnetInUse).
        """
        ...


class SubnetPools(ServiceAPI, address="net"):
    """Subnet pools, as users reach them through the gateway."""

    @call(policy="network:write")
    async def create_subnetpool(
        self,
        *,
        prefixes: Annotated[list[Cidr], Meta(min_length=1, max_length=64)],
        name: Text = "",
        default_prefixlen: PrefixLength | None = None,
        min_prefixlen: PrefixLength | None = None,
        max_prefixlen: PrefixLength | None = None,
        shared: bool = False,
        description: Text = "",
    ) -> SubnetPool:
        """A subnet pool of the caller's project. ``min_prefixlen`` defaults to 8,
        ``max_prefixlen`` to 32, ``default_prefixlen`` to ``min_prefixlen``.

        :raises InvalidRequest: a prefix that is no IPv4 network (host bits set); lengths not
            ordered min <= default <= max.
        :raises Forbidden: a member asked for a shared pool.
        :raises OverQuota: the project has as many subnet pools as its limit.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_subnetpools(self) -> list[SubnetPool]:
        """The pools the caller sees (its own and the shared ones), oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_subnetpool(self, *, subnetpool_id: Id) -> SubnetPool:
        """One subnet pool.

        :raises NotFound: none, or the caller may not see it.
        """
        ...

    @call(policy="network:write")
    async def update_subnetpool(
        self,
        *,
        subnetpool_id: Id,
        name: Text | None = None,
        description: Text | None = None,
        prefixes: Annotated[list[Cidr], Meta(min_length=1, max_length=64)] | None = None,
        default_prefixlen: PrefixLength | None = None,
        min_prefixlen: PrefixLength | None = None,
        max_prefixlen: PrefixLength | None = None,
    ) -> SubnetPool:
        """Change a pool (None: unchanged). Prefixes may only grow (each old one within the new).

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared pool.
        :raises InvalidRequest: as ``create_subnetpool``; new prefixes leaving out an old one.
        """
        ...

    @call(policy="network:write")
    async def delete_subnetpool(self, *, subnetpool_id: Id) -> None:
        """Delete a pool no subnet was given a prefix from.

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared pool.
        :raises Conflict: a subnet of it exists.
        """
        ...


class Ports(ServiceAPI, address="net"):
    """Ports, as users reach them through the gateway (and the conductor checks one exists)."""

    @call(policy="network:write")
    async def create_port(
        self,
        *,
        network_id: Id,
        name: Text = "",
        mac_address: MacAddress | None = None,
        fixed_ips: list[FixedIpRequest] | None = None,
        device_id: Text = "",
        device_owner: Text = "",
        admin_state_up: bool = True,
        description: Text = "",
        security_groups: list[Id] | None = None,
        port_security_enabled: bool = True,
    ) -> Port:
        """A port of the caller's project on a network it sees, with the lowest free address of the
        network (of its first subnet that has one) unless ``fixed_ips`` asks for others; a random
        ``fa:16:3e:xx:xx:xx`` MAC unless ``mac_address`` gives one; in ``security_groups``, or
        its project's default group when None (no group: with port security disabled, or a
        ``network:`` port, Neutron's own).

        :raises NotFound: no such network the caller sees.
        :raises InvalidRequest: an empty ``fixed_ips`` entry, or one naming a subnet or an address
            that is not on the network.
        :raises Conflict: no free address, or the MAC or an asked address is taken.
        :raises OverQuota: the project has as many ports as its limit.
        :raises SecurityGroupNotFound: a group the caller does not see.
        :raises InvalidRequest: groups asked with port security disabled.
        """
        ...

    @call(policy="network:write")
    async def create_ports(self, *, ports: list[PortRequest]) -> list[Port]:
        """Several ports at once (Neutron's bulk create), in one transaction: all or none.

        :raises NotFound: as ``create_port``, for any of them.
        :raises InvalidRequest: as ``create_port``, for any of them.
        :raises Conflict: as ``create_port``, for any of them (two asking for one MAC or address too).
        :raises OverQuota: they would take the project past its port limit (none is made).
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_ports(
        self,
        *,
        network_id: Text | None = None,
        device_id: Text | None = None,
        device_owner: Text | None = None,
    ) -> list[Port]:
        """The ports the caller sees (its project's), filtered, oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_port(self, *, port_id: Id) -> Port:
        """One port.

        :raises NotFound: none, or another project's.
        """
        ...

    @call(policy="network:write")
    async def update_port(
        self,
        *,
        port_id: Id,
        name: Text | None = None,
        device_id: Text | None = None,
        device_owner: Text | None = None,
        binding_host: Text | None = None,
        admin_state_up: bool | None = None,
        description: Text | None = None,
        fixed_ips: list[FixedIpRequest] | None = None,
        security_groups: list[Id] | None = None,
        port_security_enabled: bool | None = None,
    ) -> Port:
        """Change a port's name, device, binding host, admin state, description, groups (a list
        replaces them) or port security (None: unchanged).
        ``fixed_ips`` replaces the addresses it holds, in one transaction: an address it keeps (an
        entry naming it) stays, one no entry names is released, the others are taken as
        ``create_port`` takes them.

        :raises NotFound: none, or another project's.
        :raises InvalidRequest: a ``fixed_ips`` entry as ``create_port`` refuses it.
        :raises Conflict: an asked address another port holds, or no free address on a subnet.
        :raises SecurityGroupNotFound: a group the caller does not see.
        :raises InvalidRequest: groups asked with port security disabled.
        :raises PortSecurityPortHasSecurityGroup: port security disabled on a port left in groups.
        """
        ...

    @call(policy="network:write")
    async def delete_port(self, *, port_id: Id) -> None:
        """Delete a port, releasing its addresses; publishes ``port.deleted``.

        :raises NotFound: none, or another project's.
        """
        ...


class Allocations(ServiceAPI, address="net"):
    """The IP allocations, for an audit."""

    @call(idempotent=True)
    async def list_allocations(self) -> list[IpAllocation]:
        """Every IP allocation, by subnet, oldest first.

        :raises Forbidden: a member asked.
        """
        ...


class NetworkQuotas(ServiceAPI, address="net"):
    """Neutron's quotas: how many networks, subnets, ports and subnet pools a project may have.
    Members read their own project's; admins read and set any project's."""

    @call(policy="network:read", idempotent=True)
    async def list_quotas(self) -> list[ProjectQuotas]:
        """The limits of every project that has some of its own (admins).

        :raises Forbidden: the caller is no admin.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def get_quotas(self, *, project_id: Id) -> Quotas:
        """The project's limits (the defaults where it has none of its own).

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def get_default_quotas(self, *, project_id: Id) -> Quotas:
        """The limits of a project with none of its own.

        :raises Forbidden: asked for another project, and the caller is no admin.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def get_quota_details(self, *, project_id: Id) -> QuotaDetails:
        """The project's limits and what it uses now (counted from its rows).

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="network:write", idempotent=True)
    async def set_quotas(
        self, *, project_id: Id, limits: dict[QuotaResource, QuotaLimit], check_limit: bool = False
    ) -> Quotas:
        """Set some of the project's limits (admins); one below what it uses only refuses new
        creates, unless ``check_limit`` (Neutron's quota-check-limit) refuses it. Answers all its
        limits.

        :raises Forbidden: the caller is no admin.
        :raises Conflict: ``check_limit``, and a limit below what the project uses (none is set).
        """
        ...

    @call(policy="network:write")
    async def delete_quotas(self, *, project_id: Id) -> None:
        """Back to the defaults (admins).

        :raises Forbidden: the caller is no admin.
        :raises NotFound: the project has no limits of its own.
        """
        ...


class SecurityGroups(ServiceAPI, address="net"):
    """Neutron's security groups and their rules, as users reach them through the gateway. A project's
    group ``default`` (Neutron's four rules: egress anywhere and ingress from its own members, IPv4
    and IPv6) is made on its first use: listing groups, making one, or a port without groups. A new
    group gets Neutron's two egress rules."""

    @call(policy="network:write")
    async def create_security_group(self, *, name: Text = "", description: Text = "") -> SecurityGroup:
        """A group of the caller's project, with an egress rule for IPv4 and one for IPv6.

        :raises SecurityGroupDefaultAlreadyExists: ``name`` is ``default``.
        :raises OverQuota: the project has as many security groups as its limit.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_security_groups(self, *, name: Text | None = None) -> list[SecurityGroup]:
        """The groups the caller sees (its project's, its default group made first if it has none;
        every project's for an admin), oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def group_names_by_device(self, *, device_ids: list[Id]) -> dict[str, list[str]]:
        """The names of the groups the caller sees of these devices' ports it sees, by device id, in
        the order of their ports (oldest first) and ids, each once; a device with none is left out."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_security_group(self, *, security_group_id: Id) -> SecurityGroup:
        """One group, with its rules.

        :raises SecurityGroupNotFound: none the caller sees.
        """
        ...

    @call(policy="network:write")
    async def update_security_group(
        self, *, security_group_id: Id, name: Text | None = None, description: Text | None = None
    ) -> SecurityGroup:
        """Rename or redescribe a group (None: unchanged).

        :raises SecurityGroupNotFound: none the caller sees.
        :raises SecurityGroupCannotUpdateDefault: renaming a default group.
        :raises SecurityGroupDefaultAlreadyExists: naming another group ``default``.
        """
        ...

    @call(policy="network:write")
    async def delete_security_group(self, *, security_group_id: Id) -> None:
        """Delete a group no port is in, with its rules and the rules naming it as their remote group.

        :raises SecurityGroupNotFound: none the caller sees.
        :raises SecurityGroupCannotRemoveDefault: a member deleting its project's default group.
        :raises SecurityGroupInUse: a port is in it.
        """
        ...

    @call(policy="network:write")
    async def create_security_group_rule(
        self,
        *,
        security_group_id: Id,
        direction: Direction,
        ethertype: EtherType = "IPv4",
        protocol: Protocol | None = None,
        port_range_min: PortNumber | None = None,
        port_range_max: PortNumber | None = None,
        remote_ip_prefix: Cidr | None = None,
        remote_group_id: Id | None = None,
        description: Text = "",
    ) -> SecurityGroupRule:
        """A rule of a group of the caller's project, checked as Neutron checks one.

        :raises InvalidRequest: an unknown protocol, ports out of range or out of order (or given
            without a protocol, or for one without ports), an ICMP type or code past 255 or a code
            without a type, a remote CIDR that does not parse or is of the other ethertype, both a
            remote CIDR and a remote group.
        :raises SecurityGroupNotFound: the group or the remote group is none the caller sees.
        :raises SecurityGroupRuleExists: the group has a rule for the same traffic.
        :raises OverQuota: the project has as many rules as its limit.
        """
        ...

    @call(policy="network:write")
    async def create_security_group_rules(
        self, *, rules: list[SecurityGroupRuleRequest]
    ) -> list[SecurityGroupRule]:
        """Several rules at once (Neutron's bulk create), in one transaction: all or none (two of
        the same request for the same traffic are a ``SecurityGroupRuleExists`` too).

        :raises InvalidRequest: as ``create_security_group_rule``, for any of them.
        :raises SecurityGroupNotFound: as ``create_security_group_rule``, for any of them.
        :raises SecurityGroupRuleExists: as ``create_security_group_rule``, for any of them.
        :raises OverQuota: they would take the project past its rule limit.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_security_group_rules(
        self, *, security_group_id: Text | None = None
    ) -> list[SecurityGroupRule]:
        """The rules of the groups the caller sees, oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_security_group_rule(self, *, security_group_rule_id: Id) -> SecurityGroupRule:
        """One rule.

        :raises SecurityGroupRuleNotFound: none the caller sees.
        """
        ...

    @call(policy="network:write")
    async def delete_security_group_rule(self, *, security_group_rule_id: Id) -> None:
        """Delete a rule.

        :raises SecurityGroupRuleNotFound: none the caller sees.
        """
        ...


class Routers(ServiceAPI, address="net"):
    """Neutron's routers (``router``, ``ext-gw-mode``, ``extraroute``), as users reach them through
    the gateway: a project's routers, their external gateway (a ``ROUTER_GATEWAY_OWNER`` port of no
    project on an external network) and their interfaces on its subnets (``ROUTER_INTERFACE_OWNER``
    ports of the router's project). Each change is told to the host serving the router
    (``ROUTERS_CHANGED``)."""

    @call(policy="network:write")
    async def create_router(
        self,
        *,
        name: Text = "",
        description: Text = "",
        admin_state_up: bool = True,
        external_gateway_info: ExternalGatewayRequest | None = None,
    ) -> Router:
        """A router of the caller's project (its gateway as ``update_router`` sets one), given to
        the serving host with the fewest routers.

        :raises OverQuota: the project has as many routers as its limit.
        :raises NotFound: no such gateway network the caller sees.
        :raises BadRequest: the gateway network is not external; an external fixed IP not on it.
        :raises Conflict: no free address on the external network, or the one asked is taken.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_routers(self) -> list[Router]:
        """The caller's project's routers (every project's for an admin), oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_router(self, *, router_id: Id) -> Router:
        """One router.

        :raises RouterNotFound: none the caller sees.
        """
        ...

    @call(policy="network:write")
    async def update_router(
        self,
        *,
        router_id: Id,
        name: Text | None = None,
        description: Text | None = None,
        admin_state_up: bool | None = None,
        external_gateway_info: ExternalGatewayRequest | None = None,
        routes: list[HostRoute] | None = None,
    ) -> Router:
        """Change a router (None: unchanged). ``external_gateway_info`` replaces the gateway (a new
        port when its network or addresses change; ``{}``: none); ``routes`` replaces the extra
        routes ([]: none), each nexthop on a subnet of its interfaces.

        :raises RouterNotFound: none the caller sees.
        :raises NotFound: no such gateway network the caller sees.
        :raises BadRequest: the gateway network is not external, or an external fixed IP not on it.
        :raises InvalidRoutes: a nexthop on no interface's subnet, a destination no CIDR, a route twice.
        :raises RouterExternalGatewayInUseByFloatingIp: clearing or moving a gateway floating IPs use.
        :raises Conflict: no free address on the external network, or the one asked is taken.
        """
        ...

    @call(policy="network:write")
    async def delete_router(self, *, router_id: Id) -> None:
        """Delete a router with no interface, and its gateway port.

        :raises RouterNotFound: none the caller sees.
        :raises RouterInUse: it has interfaces.
        """
        ...

    @call(policy="network:write")
    async def add_router_interface(
        self, *, router_id: Id, subnet_id: Id | None = None, port_id: Id | None = None
    ) -> RouterInterface:
        """Join a subnet to the router: by ``subnet_id`` a new port holding the subnet's gateway IP,
        or by ``port_id`` a port of the project with one fixed IP and no device; either becomes a
        ``ROUTER_INTERFACE_OWNER`` port of the router.

        :raises RouterNotFound: none the caller sees.
        :raises NotFound: no such subnet or port the caller sees.
        :raises BadRequest: both or neither of subnet_id and port_id; a subnet with no gateway IP;
            a port with no or several fixed IPs; a subnet overlapping one the router is on.
        :raises PortInUse: the port has a device.
        :raises Conflict: the gateway IP is another port's.
        """
        ...

    @call(policy="network:write")
    async def remove_router_interface(
        self, *, router_id: Id, subnet_id: Id | None = None, port_id: Id | None = None
    ) -> RouterInterface:
        """Take a subnet off the router, deleting its interface port.

        :raises RouterNotFound: none the caller sees.
        :raises RouterInterfaceNotFoundForSubnet: the router has no interface on that subnet.
        :raises RouterInterfaceNotFound: the port is no interface of the router.
        :raises RouterInterfaceInUseByFloatingIP: a floating IP reaches a port of the subnet through it.
        :raises RouterInterfaceInUseByRoute: an extra route's nexthop is on the subnet.
        :raises BadRequest: neither subnet_id nor port_id.
        """
        ...


class FloatingIps(ServiceAPI, address="net"):
    """Neutron's floating IPs, as users reach them through the gateway: an address of an external
    network (held by a ``FLOATINGIP_OWNER`` port of no project), associated with a port's fixed IP
    behind a router whose gateway is on that network. Each change is told to that router's host."""

    @call(policy="network:write")
    async def create_floatingip(
        self,
        *,
        floating_network_id: Id,
        floating_ip_address: IpAddress | None = None,
        port_id: Id | None = None,
        fixed_ip_address: IpAddress | None = None,
        description: Text = "",
    ) -> FloatingIp:
        """A floating IP of the caller's project on an external network (the address asked, else
        the lowest free one), associated with ``port_id`` when given (its ``fixed_ip_address``, or
        its only IPv4 address).

        :raises NotFound: no such network or port the caller sees.
        :raises BadRequest: the network is not external; the address is not on it; a fixed IP the
            port does not hold, or none given for a port with several.
        :raises ExternalGatewayForFloatingIPNotFound: no router joins the port's subnet to the network.
        :raises IpAddressAlreadyAllocated: the address is taken.
        :raises Conflict: no free address on the network.
        :raises FloatingIPPortAlreadyAssociated: another floating IP has that fixed IP.
        :raises OverQuota: the project has as many floating IPs as its limit.
        """
        ...

    @call(policy="network:read", idempotent=True)
    async def list_floatingips(self) -> list[FloatingIp]:
        """The caller's project's floating IPs (every project's for an admin), oldest first."""
        ...

    @call(policy="network:read", idempotent=True)
    async def get_floatingip(self, *, floatingip_id: Id) -> FloatingIp:
        """One floating IP.

        :raises FloatingIPNotFound: none the caller sees.
        """
        ...

    @call(policy="network:write")
    async def update_floatingip(
        self,
        *,
        floatingip_id: Id,
        port_id: Text | None = None,
        fixed_ip_address: IpAddress | None = None,
        description: Text | None = None,
    ) -> FloatingIp:
        """Associate the floating IP with a port (as ``create_floatingip``), disassociate it
        (``port_id`` ''), or change its description (None: unchanged).

        :raises FloatingIPNotFound: none the caller sees.
        :raises NotFound: no such port the caller sees.
        :raises BadRequest: as ``create_floatingip``.
        :raises ExternalGatewayForFloatingIPNotFound: as ``create_floatingip``.
        :raises FloatingIPPortAlreadyAssociated: as ``create_floatingip``.
        """
        ...

    @call(policy="network:write")
    async def delete_floatingip(self, *, floatingip_id: Id) -> None:
        """Delete a floating IP and its port, giving back its address.

        :raises FloatingIPNotFound: none the caller sees.
        """
        ...


class Net(
    InstancePorts,
    Networks,
    Subnets,
    SubnetPools,
    Ports,
    Allocations,
    NetworkQuotas,
    SecurityGroups,
    Routers,
    FloatingIps,
    address="net",
):
    """The whole net API, as users reach it through the gateway; the conductor uses it too
    (``get_port``, ``get_network``, ``deallocate_for_instance``)."""
