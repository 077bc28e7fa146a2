"""Security groups on a node (applied by ``node.security``): the node's nftables tables, rendered
whole from its ports and applied in one nft transaction (in this process: ``node.nftables``), so
a change takes effect at once and a packet never sees half a ruleset.

Two tables per node, both named ``table_name(host)``:

* ``inet``, stateful: bridged IPv4/IPv6 traffic reaches the inet hooks through br_netfilter
  (``net.bridge.bridge-nf-call-iptables`` and ``-ip6tables`` = 1, as Neutron's iptables driver
  needs). The forward and output hooks send what goes to a port (its network's bridge and its fixed
  IP, so overlapping subnets of two networks stay apart) to ``to_<n>``; forward and input send what
  comes from one to ``from_<n>``. Each accepts the replies of allowed flows (conntrack), IPv6
  neighbour discovery and DHCP, the metadata service (``169.254.169.254:80``, whatever address
  the host holds on the bridge), then what one of the port's rules allows (a remote group is a
  named set of its members' addresses), and drops the rest: ingress is denied but for the rules
  (Neutron's default group allows its own members), egress is as the rules say (Neutron's groups
  allow it all). Each bridge's flows are tracked in a conntrack zone of its own
  (``conntrack_zone``, set at priority raw, before conntrack), so two networks with the same
  addresses never share a flow's state.
* ``bridge``, stateless anti-spoofing per tap (the guest's NIC on the bridge): a frame from the tap
  must carry the port's MAC and, for IP and ARP, one of its fixed IPs (DHCP's 0.0.0.0 excepted).
  The kernel here has no bridge conntrack (``NF_CONNTRACK_BRIDGE``), hence the split.

A port without port security gets nothing: everything passes.

libvirt's own iptables rules for an isolated network (``LIBVIRT_INP``/``OUT``: accept DNS and
DHCP to and from the bridge; ``LIBVIRT_FWX``: accept what enters and leaves by the same bridge,
which bridged traffic through br_netfilter does; ``FWI``/``FWO``: reject what is routed in or out)
neither drop what these tables allow nor accept past their drops: nft and iptables-nft base chains
are separate, a drop in any one is final.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

from api.net import HostSecurity
from node import nftables
from node.metadata import METADATA_ADDRESS

ICMP_PROTOCOLS = {1: "icmp", 58: "icmpv6"}
"""nft's names of ICMP and ICMPv6 (their headers' keywords too)."""
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}
"""The protocols a rule may give a port range, by number: nft's header keyword."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A security group rule as the node enforces it: the protocol as a number (None: any), the
    remote network (None: anywhere) or remote group."""

    direction: str
    ethertype: str
    protocol: int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_cidr: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True, slots=True)
class PortFilter:
    """What the node filters for one port: its bridge and tap, MAC and fixed IPs, its groups' rules."""

    bridge: str
    tap: str
    mac: str
    addresses: tuple[str, ...]
    rules: tuple[Rule, ...]
    port_security_enabled: bool = True


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A node's ports and the members (fixed IPs) of every group their rules name as remote."""

    ports: tuple[PortFilter, ...]
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)


def ruleset_of(security: HostSecurity, nics: Mapping[str, tuple[str, str]]) -> Ruleset:
    """The ruleset of what the net actor says the host enforces (``NetForNodes.security_for_host``)
    for the ports plugged here (``nics``: port id -> its bridge and tap); others are left out."""
    ports = []
    for port in security["ports"]:
        if port["port_id"] in nics:
            bridge, tap = nics[port["port_id"]]
            rules = tuple(Rule(**rule) for rule in port["rules"])
            addresses = tuple(port["fixed_ips"])
            enabled = port["port_security_enabled"]
            ports.append(PortFilter(bridge, tap, port["mac_address"], addresses, rules, enabled))
    members = {group: tuple(addresses) for group, addresses in security["members"].items()}
    return Ruleset(ports=tuple(ports), members=members)


def table_name(host: str) -> str:
    """The node's nftables table (one per node: several may share a machine)."""
    return "aiostack_sg_" + re.sub(r"[^A-Za-z0-9_]", "_", host)


def set_name(group_id: str, version: int) -> str:
    """The set of a remote group's member addresses of one IP version."""
    return f"g_{group_id.replace('-', '')}_{version}"


def _family(ethertype: str) -> tuple[str, int]:
    return ("ip", 4) if ethertype == "IPv4" else ("ip6", 6)


def _match(rule: Rule) -> str:
    """The nft match of one rule (its addresses as the remote end: the source for ingress)."""
    family, version = _family(rule.ethertype)
    side = "saddr" if rule.direction == "ingress" else "daddr"
    parts = [f"meta nfproto ipv{version}"]
    if rule.remote_cidr is not None:
        parts.append(f"{family} {side} {ip_network(rule.remote_cidr, strict=False)}")
    elif rule.remote_group_id is not None:
        parts.append(f"{family} {side} @{set_name(rule.remote_group_id, version)}")
    protocol = "ip protocol" if version == 4 else "ip6 nexthdr"
    if rule.protocol in PORT_PROTOCOLS:
        keyword = PORT_PROTOCOLS[rule.protocol]
        parts.append(f"{protocol} {keyword}")
        if rule.port_range_min is not None and rule.port_range_max is not None:
            parts.append(f"{keyword} dport {rule.port_range_min}-{rule.port_range_max}")
    elif rule.protocol in ICMP_PROTOCOLS:
        keyword = ICMP_PROTOCOLS[rule.protocol]
        parts.append(f"{protocol} {keyword}")
        if rule.port_range_min is not None:
            parts.append(f"{keyword} type {rule.port_range_min}")
        if rule.port_range_max is not None:
            parts.append(f"{keyword} code {rule.port_range_max}")
    elif rule.protocol is not None:
        parts.append(f"{protocol} {rule.protocol}")
    return " ".join(parts)


def _to_port(port: PortFilter) -> list[str]:
    """The chain of what reaches the guest behind ``port``."""
    return [
        "ct state established,related accept",
        "ct state invalid drop",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
        "udp sport 67 udp dport 68 accept",
        *(f"{_match(rule)} accept" for rule in port.rules if rule.direction == "ingress"),
        "drop",
    ]


def _from_port(port: PortFilter) -> list[str]:
    """The chain of what the guest behind ``port`` sends."""
    return [
        "ct state established,related accept",
        "ct state invalid drop",
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "udp sport 68 udp dport 67 accept",
        f"ip daddr {METADATA_ADDRESS} tcp dport 80 accept",
        *(f"{_match(rule)} accept" for rule in port.rules if rule.direction == "egress"),
        "drop",
    ]


def _anti_spoofing(port: PortFilter) -> list[str]:
    """The bridge table's statements for what comes in from ``port``'s tap."""
    v4 = ", ".join(sorted(a for a in port.addresses if ip_address(a).version == 4))
    v6 = ", ".join(sorted(a for a in port.addresses if ip_address(a).version == 6))
    tap = f'iifname "{port.tap}"'
    return [
        f"{tap} ether saddr != {port.mac} drop",
        f"{tap} ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
        f"{tap} ip saddr != {{ {v4} }} drop" if v4 else f"{tap} ether type ip drop",
        f"{tap} arp saddr ip != {{ {v4} }} drop" if v4 else f"{tap} ether type arp drop",
        f"{tap} ip6 saddr != {{ fe80::/10, {v6} }} drop" if v6 else f"{tap} ip6 saddr != fe80::/10 drop",
    ]


def _sets(ruleset: Ruleset) -> list[str]:
    """The named sets of the remote groups' member addresses."""
    lines = []
    for group_id, members in sorted(ruleset.members.items()):
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            own = sorted(m for m in members if ip_address(m).version == version)
            elements = f" elements = {{ {', '.join(own)} }};" if own else ""
            lines.append(f"  set {set_name(group_id, version)} {{ type {kind};{elements} }}")
    return lines


def conntrack_zone(bridge: str) -> int:
    """The conntrack zone of a bridge's flows (1-65535, from its name: the same at every apply)."""
    return zlib.crc32(bridge.encode()) % 65535 + 1


def _zones(ports: list[PortFilter]) -> list[str]:
    """The chains putting each bridge's flows in its own conntrack zone, before conntrack sees them
    (priority raw): by the bridge a packet comes in on or, sent by the host, goes out on."""
    bridges = sorted({port.bridge for port in ports})
    lines = []
    for name, hook, device in (("zone_in", "prerouting", "iifname"), ("zone_out", "output", "oifname")):
        lines.append(f"  chain {name} {{ type filter hook {hook} priority raw; policy accept;")
        lines += [f'    {device} "{bridge}" ct zone set {conntrack_zone(bridge)}' for bridge in bridges]
        lines.append("  }")
    return lines


def _dispatch(ports: list[PortFilter], side: str, direction: str) -> list[str]:
    """The statements sending each port's packets to its chain: by the bridge (``oifname`` or
    ``iifname``) and the port's address (``daddr`` or ``saddr``)."""
    device, address = ("oifname", "daddr") if side == "to" else ("iifname", "saddr")
    lines = []
    for number, port in enumerate(ports):
        for fixed in sorted(port.addresses):
            family = "ip" if ip_address(fixed).version == 4 else "ip6"
            lines.append(f'    {device} "{port.bridge}" {family} {address} {fixed} jump {side}_{number}')
    return lines


def render(host: str, ruleset: Ruleset) -> str:
    """The ``nft -f`` script that makes the node's two tables exactly ``ruleset``, in one transaction."""
    table = table_name(host)
    ports = [port for port in ruleset.ports if port.port_security_enabled]
    lines = []
    for family in ("inet", "bridge"):
        lines += [f"table {family} {table}", f"delete table {family} {table}"]
    lines += [f"table inet {table} {{", *_sets(ruleset), *_zones(ports)]
    for hook, sides in (("forward", ("to", "from")), ("output", ("to",)), ("input", ("from",))):
        lines.append(f"  chain {hook} {{ type filter hook {hook} priority filter; policy accept;")
        for side in sides:
            lines += _dispatch(ports, side, hook)
        lines.append("  }")
    for number, port in enumerate(ports):
        for name, statements in ((f"to_{number}", _to_port(port)), (f"from_{number}", _from_port(port))):
            lines += [f"  chain {name} {{", *(f"    {statement}" for statement in statements), "  }"]
    lines += ["}", f"table bridge {table} {{"]
    lines.append("  chain prerouting { type filter hook prerouting priority filter; policy accept;")
    lines += [f"    {statement}" for port in ports for statement in _anti_spoofing(port)]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


class FirewallError(Exception):
    """nft refused a script (its message says why); the table is as it was."""


async def _nft(script: str, namespace: str | None) -> None:
    try:
        await nftables.run(script, namespace)
    except nftables.NftError as exc:
        raise FirewallError(str(exc)) from exc


ISOLATION_TABLE = "aiostack_isolation"


def render_isolation(bridges: Iterable[str]) -> str:
    """The ``nft -f`` script that isolates each of ``bridges`` (the libvirt networks' bridges of
    ``node.networks``), in one transaction: nothing is routed into or out of one, what stays on a
    bridge (bridged, which br_netfilter shows the forward hook with the bridge as both its
    interfaces) passes on to the security groups' tables. This is what libvirt's iptables rules
    for an isolated network did (``LIBVIRT_FWI``/``FWO``/``FWX``): its networks are ``open`` now,
    for which libvirt writes no rules, so that adding a DHCP host no longer rewrites them all.
    No bridges: no table."""
    lines = [f"table inet {ISOLATION_TABLE}", f"delete table inet {ISOLATION_TABLE}"]
    names = sorted(set(bridges))
    if names:
        lines += [
            f"table inet {ISOLATION_TABLE} {{",
            "  chain forward { type filter hook forward priority filter; policy accept;",
        ]
        for bridge in names:
            lines.append(f'    iifname "{bridge}" oifname != "{bridge}" reject')
            lines.append(f'    oifname "{bridge}" iifname != "{bridge}" reject')
        lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


async def isolate(bridges: Iterable[str], namespace: str | None = None) -> None:
    """Make the isolation table hold exactly ``bridges`` (see ``render_isolation``; ``namespace``
    as for ``apply``).

    :raises FirewallError: nft refused.
    """
    await _nft(render_isolation(bridges), namespace)


async def apply(host: str, ruleset: Ruleset, namespace: str | None = None) -> None:
    """Make the node's table ``ruleset`` (in the named network namespace, else this process's)."""
    await _nft(render(host, ruleset), namespace)


async def remove(host: str, namespace: str | None = None) -> None:
    """Remove the node's tables (nothing if it has none)."""
    table = table_name(host)
    script = "".join(
        f"table {family} {table}\ndelete table {family} {table}\n" for family in ("inet", "bridge")
    )
    await _nft(script, namespace)
