"""IP address management: a subnet's addresses checked (CIDR, gateway, pools, name servers), and
the addresses ports are given.

A port takes the lowest free address of a subnet: the start of its lowest range in ``ip_free``
(its pool addresses no port holds, kept by ``schema.TRIGGERS``), so it costs the same however
many addresses are taken. A port asking for an address gets it unless a port holds it. Either
is one ``INSERT ... RETURNING`` inside the caller's ``BEGIN IMMEDIATE`` transaction, with
``UNIQUE(subnet_id, ip_address)`` as the backstop.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise
from typing import Any

from actors.net.state import insert, invalid
from api.net import AllocationPool, FixedIpRequest, HostRoute
from bus import Conflict, InvalidRequest
from runtime.stamps import new_uuid
from runtime.store import Db, from_json, to_json

# Each answers the address given, or no row.
_TAKE_LOWEST = (
    "INSERT INTO ip_allocations (subnet_id, ip_address, ip_int, port_id)"
    " SELECT subnet_id,"
    "  (lo >> 24) || '.' || ((lo >> 16) & 255) || '.' || ((lo >> 8) & 255) || '.' || (lo & 255), lo, :port_id"
    " FROM ip_free WHERE subnet_id = :subnet_id ORDER BY lo LIMIT 1"
    " RETURNING ip_address"
)
_TAKE = (
    "INSERT INTO ip_allocations (subnet_id, ip_address, ip_int, port_id)"
    " SELECT :subnet_id, :ip_address, :ip_int, :port_id WHERE NOT EXISTS"
    "  (SELECT 1 FROM ip_allocations WHERE subnet_id = :subnet_id AND ip_address = :ip_address)"
    " RETURNING ip_address"
)


def ip(field: str, value: str) -> IPv4Address:
    """:raises InvalidRequest: ``value`` (of ``field``) is not an IPv4 address."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if not isinstance(address, IPv4Address):
        raise invalid(field, f"'{value:.60}' is not an IPv4 address")
    return address


def is_host(address: IPv4Address, net: IPv4Network) -> bool:
    return address in net and address not in (net.network_address, net.broadcast_address)


Range = tuple[IPv4Address, IPv4Address]
"""An allocation pool as its first and last address."""
MAX_DNS_NAMESERVERS = 5
MAX_HOST_ROUTES = 20
"""Neutron's default limits (``max_dns_nameservers``, ``max_subnet_host_routes``)."""


def subnet_row(
    *,
    network_id: str,
    project_id: str,
    name: str,
    cidr: str,
    gateway_ip: str | None,
    pools: list[AllocationPool] | None,
    ip_version: int,
) -> dict[str, Any]:
    """A new subnet's row (of a network of ``project_id``) with its checked addresses: the
    gateway defaults to the first host, the pool to the others.

    :raises InvalidRequest: bad CIDR, gateway outside it, pools outside it or overlapping
        each other or the gateway.
    """
    try:
        net = ipaddress.ip_network(cidr)
    except ValueError:
        raise invalid("cidr", f"'{cidr:.60}' is not a valid IP subnet") from None
    if ip_version != 4 or not isinstance(net, IPv4Network) or net.prefixlen > 30:
        raise invalid("cidr", f"{net} is not an IPv4 subnet with hosts")
    gateway, ranges = subnet_addresses(net, gateway_ip, pools)
    return {
        "id": new_uuid(),
        "name": name,
        "network_id": network_id,
        "project_id": project_id,
        "cidr": str(net),
        "ip_version": 4,
        "gateway_ip": str(gateway),
        "allocation_pools": pools_json(ranges),
    }


def subnet_addresses(
    net: IPv4Network, gateway_ip: str | None, pools: list[AllocationPool] | None
) -> tuple[IPv4Address, list[Range]]:
    """The gateway (None: the first host) and the pools (None: every other host address) of a
    subnet, checked against each other, pools sorted.

    :raises InvalidRequest: a gateway or a pool outside ``net``'s hosts, pools overlapping each
        other or holding the gateway.
    """
    first, last = net.network_address + 1, net.broadcast_address - 1
    gateway = first if gateway_ip is None else ip("gateway_ip", gateway_ip)
    if not is_host(gateway, net):
        raise invalid("gateway_ip", f"{gateway} is not a host address of {net}")
    if pools is None:
        return gateway, [
            (start, end) for start, end in ((first, gateway - 1), (gateway + 1, last)) if start <= end
        ]
    ranges = sorted(_pool(pool, net) for pool in pools)
    for (start, end), (next_start, next_end) in pairwise(ranges):
        if next_start <= end:
            raise InvalidRequest(
                f"Found overlapping allocation pools: {start}-{end} {next_start}-{next_end} for subnet {net}."
            )
    for start, end in ranges:
        if start <= gateway <= end:
            raise InvalidRequest(f"Gateway ip {gateway} conflicts with allocation pool {start}-{end}.")
    return gateway, ranges


def pools_json(ranges: list[Range]) -> str:
    """Pools as the ``allocation_pools`` column keeps them."""
    return to_json([{"start": str(start), "end": str(end)} for start, end in ranges])


def pool_ranges(pools: list[AllocationPool]) -> list[Range]:
    """A subnet's ``allocation_pools`` (as stored: valid) as ranges."""
    return [(IPv4Address(pool["start"]), IPv4Address(pool["end"])) for pool in pools]


def _pool(pool: AllocationPool, net: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    start, end = ip("allocation_pools", pool["start"]), ip("allocation_pools", pool["end"])
    if not (is_host(start, net) and is_host(end, net)):
        raise InvalidRequest(f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}.")
    if start > end:
        raise InvalidRequest(f"The allocation pool {start}-{end} is not valid.")
    return start, end


def nameservers(servers: list[str] | None) -> str:
    """``dns_nameservers`` (None: none) checked, as stored.

    :raises InvalidRequest: one is not an IPv4 address, or given twice; more than
        ``MAX_DNS_NAMESERVERS``.
    """
    checked = [str(ip("dns_nameservers", server)) for server in servers or []]
    if len(checked) > MAX_DNS_NAMESERVERS:
        raise InvalidRequest(f"Number of DNS nameservers exceeds the limit {MAX_DNS_NAMESERVERS}.")
    for server in checked:
        if checked.count(server) > 1:
            raise invalid("dns_nameservers", f"Duplicate nameserver '{server}'")
    return to_json(checked)


def host_routes(routes: list[HostRoute] | None) -> str:
    """``host_routes`` (None: none) checked, as stored: each destination an IPv4 network
    written as its network address and prefix, each nexthop an IPv4 address.

    :raises InvalidRequest: a bad destination or nexthop, a route given twice; more than
        ``MAX_HOST_ROUTES``.
    """
    checked: list[HostRoute] = []
    for route in routes or []:
        try:
            destination = ipaddress.ip_network(route["destination"])
        except ValueError:
            raise invalid("host_routes", f"'{route['destination']:.60}' is not a valid IP subnet") from None
        if not isinstance(destination, IPv4Network):
            raise invalid("host_routes", f"{destination} is not an IPv4 subnet")
        entry: HostRoute = {
            "destination": str(destination),
            "nexthop": str(ip("host_routes", route["nexthop"])),
        }
        if entry in checked:
            raise invalid(
                "host_routes", f"Duplicate hostroute '{entry['destination']} via {entry['nexthop']}'"
            )
        checked.append(entry)
    if len(checked) > MAX_HOST_ROUTES:
        raise InvalidRequest(f"Number of host routes exceeds the limit {MAX_HOST_ROUTES}.")
    return to_json(checked)


def requested_ip(
    entry: FixedIpRequest, subnets: list[dict[str, Any]], network_id: str
) -> tuple[dict[str, Any], IPv4Address | None]:
    """The subnet (of the network's ``subnets``), and the address if it names one, that a
    ``fixed_ips`` entry asks for.

    :raises InvalidRequest: an empty entry, no such subnet on the network, an address that is no
        host address (but the gateway) of the subnets it names.
    """
    if not entry:
        raise invalid("fixed_ips", "each entry takes a subnet_id and/or an ip_address")
    candidates = [subnet for subnet in subnets if entry.get("subnet_id") in (None, subnet["id"])]
    if not candidates:
        raise invalid("fixed_ips", f"no such subnet on network {network_id}")
    asked = entry.get("ip_address")
    if asked is None:
        return candidates[0], None
    address = ip("ip_address", asked)
    for subnet in candidates:
        if is_host(address, IPv4Network(subnet["cidr"])) and str(address) != subnet["gateway_ip"]:
            return subnet, address
    raise InvalidRequest(f"IP address {address} is not a valid IP for the subnets of network {network_id}.")


async def insert_subnet(db: Db, subnet: dict[str, Any]) -> None:
    """Insert a subnet row with its pools, all of them free."""
    await insert(db, "subnets", subnet)
    ranges = [(int(start), int(end)) for start, end in pool_ranges(from_json(subnet["allocation_pools"], []))]
    for table in ("ip_pools", "ip_free"):
        await _insert_ranges(db, table, subnet["id"], ranges)


async def replace_pools(db: Db, subnet_id: str, old: list[Range], new: list[Range]) -> None:
    """Make ``new`` a subnet's pools in place of ``old``: its free ranges become the new pools'
    addresses no port holds.

    :raises Conflict: a port holds an address of the old pools outside the new ones.
    """
    held = [
        IPv4Address(row["ip_int"])
        for row in await db.fetchall(
            "SELECT ip_int FROM ip_allocations WHERE subnet_id = ? ORDER BY ip_int", (subnet_id,)
        )
    ]
    for address in held:
        if _within(address, old) and not _within(address, new):
            raise Conflict(
                f"Unable to complete operation on subnet {subnet_id}: IP address {address} is allocated"
                " and would be outside the new allocation pools."
            )
    free: list[tuple[int, int]] = []
    for start, end in new:
        low = int(start)
        for address in (int(address) for address in held if start <= address <= end):
            if address > low:
                free.append((low, address - 1))
            low = address + 1
        if low <= int(end):
            free.append((low, int(end)))
    for table in ("ip_pools", "ip_free"):
        await db.execute(f"DELETE FROM {table} WHERE subnet_id = ?", (subnet_id,))
    await _insert_ranges(db, "ip_pools", subnet_id, [(int(start), int(end)) for start, end in new])
    await _insert_ranges(db, "ip_free", subnet_id, free)


def _within(address: IPv4Address, ranges: list[Range]) -> bool:
    return any(start <= address <= end for start, end in ranges)


async def _insert_ranges(db: Db, table: str, subnet_id: str, ranges: list[tuple[int, int]]) -> None:
    """Insert ``[lo, hi]`` ranges of a subnet into ``ip_pools`` or ``ip_free``."""
    if ranges:
        values = ", ".join(["(?, ?, ?)"] * len(ranges))
        await db.execute(
            f"INSERT INTO {table} (subnet_id, lo, hi) VALUES {values}",
            [value for lo, hi in ranges for value in (subnet_id, lo, hi)],
        )


async def allocate(db: Db, subnet_id: str, address: IPv4Address | None, port_id: str) -> str | None:
    """Give the port ``address`` of the subnet, or else its lowest free pool address; answer the
    address given, None when the pools are full. One statement: ``ip_free`` answers the lowest
    free address, and the transaction (and ``UNIQUE(subnet_id, ip_address)``) keeps it free.

    :raises Conflict: ``address`` is taken (Neutron's IpAddressAlreadyAllocated).
    """
    values = {"subnet_id": subnet_id, "port_id": port_id}
    if address is None:
        taken = await db.fetchall(_TAKE_LOWEST, values)
        return taken[0]["ip_address"] if taken else None
    if not await db.fetchall(_TAKE, {**values, "ip_address": str(address), "ip_int": int(address)}):
        raise Conflict(f"IP address {address} already allocated in subnet {subnet_id}.")
    return str(address)
