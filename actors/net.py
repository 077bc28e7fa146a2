"""The net actor (Neutron): networks, subnets, ports and the IP addresses they hold.

A project sees its own networks, subnets and ports plus the shared networks (and their
subnets); anything else is ``NotFound``. An IP allocation reads, checks and writes in one
``BEGIN IMMEDIATE`` transaction, with ``UNIQUE(subnet_id, ip_address)`` as the backstop; the
lowest free address is the start of the subnet's lowest range in ``ip_free`` (its free pool
addresses, kept by triggers), so it costs the same however many addresses are taken.
Records carry Neutron's field names; the queries in ``NETWORK``, ``SUBNET`` and ``PORT``
shape them.

Handlers (version history: 1 - initial):
* create_network(name, shared, admin_state_up, mtu) -> network       shared: admin only
* list_networks(name, shared, project_id) -> [network]; get_network(network_id) -> network
* update_network(network_id, name, admin_state_up) -> network; delete_network(network_id)
* create_subnet(network_id, cidr, name, gateway_ip, allocation_pools, ip_version,
  enable_dhcp, dns_nameservers) -> subnet
* list_subnets(network_id) -> [subnet]; get_subnet(subnet_id) -> subnet
* delete_subnet(subnet_id)
* create_port(network_id, name, mac_address, fixed_ips, device_id, device_owner,
  admin_state_up) -> port
* list_ports(network_id, device_id, device_owner) -> [port]; get_port(port_id) -> port
* update_port(port_id, name, device_id, device_owner, binding_host, admin_state_up) -> port
* delete_port(port_id)
* allocate_for_instance(instance_uuid, project_id, requested_networks, host) -> [port]
* deallocate_for_instance(instance_uuid) -> {deleted, unbound}
* list_allocations() -> [{subnet_id, ip_address, port_id}]            admin only
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise
from typing import Any

import aiosqlite

from actors.orphans import ORPHAN_SWEEP_INTERVAL, sweep_orphans_forever
from bus import Actor, Bus, Conflict, Forbidden, InvalidRequest, NotFound, handler
from runtime.config import Config
from runtime.context import caller, sees_all
from runtime.events import publish_event
from runtime.stamps import new_uuid, utcnow
from runtime.store import Store, fetchall, fetchone, from_json, to_json

log = logging.getLogger(__name__)

Db = aiosqlite.Connection

MIGRATIONS = [
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL,
        shared INTEGER NOT NULL, admin_state_up INTEGER NOT NULL, mtu INTEGER NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX networks_project ON networks(project_id);
    CREATE TABLE subnets (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, network_id TEXT NOT NULL REFERENCES networks(id),
        project_id TEXT NOT NULL, cidr TEXT NOT NULL, ip_version INTEGER NOT NULL,
        gateway_ip TEXT NOT NULL, allocation_pools TEXT NOT NULL, enable_dhcp INTEGER NOT NULL,
        dns_nameservers TEXT NOT NULL, host_routes TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX subnets_network ON subnets(network_id);
    CREATE TABLE ports (
        id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
        network_id TEXT NOT NULL REFERENCES networks(id), project_id TEXT NOT NULL,
        mac_address TEXT NOT NULL UNIQUE, device_id TEXT NOT NULL DEFAULT '',
        device_owner TEXT NOT NULL DEFAULT '', admin_state_up INTEGER NOT NULL DEFAULT 1,
        binding_host TEXT NOT NULL DEFAULT '', created_for_instance INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX ports_network ON ports(network_id);
    CREATE INDEX ports_device ON ports(device_id);
    CREATE TABLE ip_allocations (
        subnet_id TEXT NOT NULL REFERENCES subnets(id), ip_address TEXT NOT NULL,
        port_id TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
        UNIQUE (subnet_id, ip_address));
    CREATE INDEX ip_allocations_port ON ip_allocations(port_id);
    """,
    # Addresses as integers; each subnet's pools, and its free ranges (the pool addresses no
    # port holds, as disjoint [lo, hi] ranges), filled from the rows there are. TRIGGERS keep
    # ip_free in step with ip_allocations from then on.
    """
    ALTER TABLE ip_allocations ADD COLUMN ip_int INTEGER;
    UPDATE ip_allocations SET ip_int = (
        SELECT sum(value << (24 - 8 * key)) FROM json_each('[' || replace(ip_address, '.', ',') || ']'));
    CREATE TABLE ip_pools (
        subnet_id TEXT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
        lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (subnet_id, lo)) WITHOUT ROWID;
    INSERT INTO ip_pools (subnet_id, lo, hi)
        SELECT s.id,
            (SELECT sum(value << (24 - 8 * key)) FROM json_each(
                '[' || replace(json_extract(p.value, '$.start'), '.', ',') || ']')),
            (SELECT sum(value << (24 - 8 * key)) FROM json_each(
                '[' || replace(json_extract(p.value, '$.end'), '.', ',') || ']'))
        FROM subnets s, json_each(s.allocation_pools) p;
    CREATE TABLE ip_free (
        subnet_id TEXT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
        lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (subnet_id, lo)) WITHOUT ROWID;
    INSERT INTO ip_free (subnet_id, lo, hi)
        WITH bounds (subnet_id, pool, v) AS (
            SELECT subnet_id, lo, lo - 1 FROM ip_pools
            UNION ALL SELECT subnet_id, lo, hi + 1 FROM ip_pools
            UNION ALL SELECT p.subnet_id, p.lo, a.ip_int FROM ip_pools p JOIN ip_allocations a
                ON a.subnet_id = p.subnet_id AND a.ip_int BETWEEN p.lo AND p.hi),
        gaps (subnet_id, v, next) AS (
            SELECT subnet_id, v, lead(v) OVER (PARTITION BY subnet_id, pool ORDER BY v) FROM bounds)
        SELECT subnet_id, v + 1, next - 1 FROM gaps WHERE next - v > 1;
    """,
    # 3: how the port reaches its guest (Neutron's binding:vif_type and binding:vif_details).
    """
    ALTER TABLE ports ADD COLUMN binding_vif_type TEXT NOT NULL DEFAULT 'unbound';
    ALTER TABLE ports ADD COLUMN binding_vif_details TEXT NOT NULL DEFAULT '{}';
    """,
    # 4: Neutron's standard attributes: a description and a revision number bumped by every update.
    """
    ALTER TABLE networks ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE networks ADD COLUMN revision_number INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE subnets ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE subnets ADD COLUMN revision_number INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE ports ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE ports ADD COLUMN revision_number INTEGER NOT NULL DEFAULT 1;
    """,
]

# Keep ip_free (see MIGRATIONS[1]) in step with ip_allocations, whatever changes it (an ON
# DELETE CASCADE from ports too). Created at start: a migration is split on ";", which a
# trigger's body holds. Taking x: a range starting at x shrinks (or goes); a range reaching over
# x from below splits. Releasing x, a pool address: it joins the range starting at x + 1 (or
# makes one of its own), then that one joins a range ending at x - 1.
_BELOW = (
    "(SELECT lo FROM ip_free WHERE subnet_id = {0}.subnet_id AND lo < {0}.ip_int ORDER BY lo DESC LIMIT 1)"
)
TRIGGERS = [
    f"""
    CREATE TRIGGER IF NOT EXISTS ip_allocations_take AFTER INSERT ON ip_allocations BEGIN
        INSERT INTO ip_free (subnet_id, lo, hi)
            SELECT subnet_id, NEW.ip_int + 1, hi FROM ip_free
            WHERE subnet_id = NEW.subnet_id AND lo = {_BELOW.format("NEW")} AND hi > NEW.ip_int;
        UPDATE ip_free SET hi = NEW.ip_int - 1
            WHERE subnet_id = NEW.subnet_id AND lo = {_BELOW.format("NEW")} AND hi >= NEW.ip_int;
        UPDATE ip_free SET lo = NEW.ip_int + 1
            WHERE subnet_id = NEW.subnet_id AND lo = NEW.ip_int AND hi > NEW.ip_int;
        DELETE FROM ip_free WHERE subnet_id = NEW.subnet_id AND lo = NEW.ip_int AND hi = NEW.ip_int;
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS ip_allocations_release AFTER DELETE ON ip_allocations
    WHEN EXISTS (
        SELECT 1 FROM ip_pools WHERE subnet_id = OLD.subnet_id AND lo <= OLD.ip_int AND hi >= OLD.ip_int)
    BEGIN
        UPDATE ip_free SET lo = OLD.ip_int WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int + 1;
        INSERT INTO ip_free (subnet_id, lo, hi) SELECT OLD.subnet_id, OLD.ip_int, OLD.ip_int
            WHERE NOT EXISTS (SELECT 1 FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int);
        UPDATE ip_free SET hi = (SELECT hi FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int)
            WHERE subnet_id = OLD.subnet_id AND lo = {_BELOW.format("OLD")} AND hi = OLD.ip_int - 1;
        DELETE FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int
            AND (SELECT hi FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = {_BELOW.format("OLD")})
                >= OLD.ip_int;
    END
    """,
]

# A port takes the lowest free address of a subnet (the start of its lowest free range); a
# requested one unless a port holds it. Each answers the address, or no row.
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

DEFAULT_NETWORK = "default"
DEFAULT_SUBNET = "default-subnet"
DEFAULT_CIDR = "10.20.0.0/16"
DEFAULT_GATEWAY = "10.20.0.1"
COMPUTE_OWNER = "compute:nova"
UNBOUND = {
    "device_id": "",
    "device_owner": "",
    "binding_host": "",
    "binding_vif_type": "unbound",
    "binding_vif_details": "{}",
}
# A port's columns but id, network_id, project_id, mac_address and the timestamps, as the
# schema defaults them.
_PORT_DEFAULTS = {
    "name": "",
    "device_id": "",
    "device_owner": "",
    "admin_state_up": True,
    "binding_host": "",
    "binding_vif_type": "unbound",
    "binding_vif_details": "{}",
    "created_for_instance": False,
    "description": "",
}
MTU_RANGE = range(68, 9001)
MAC_PREFIX = "fa:16:3e:"
MAC_ATTEMPTS = 16
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", list: "list"}
_BOOLEANS = frozenset(("shared", "admin_state_up", "router:external", "enable_dhcp"))
_JSON = frozenset(
    (
        "subnets", "allocation_pools", "dns_nameservers", "host_routes", "fixed_ips", "binding:vif_details",
        "security_groups", "binding:profile",
    )
)  # fmt: skip
VIF_TYPES = ("bridge", "user", "unbound", "binding_failed")


@dataclass(frozen=True, slots=True)
class Kind:
    """One resource kind: its name, the query (alias ``r``) giving its records, and the SQL
    condition under which every project sees a row."""

    title: str
    select: str
    shared: str


NETWORK = Kind(
    "Network",
    "SELECT r.*, r.project_id AS tenant_id, 'ACTIVE' AS status, 0 AS \"router:external\","
    " (SELECT json_group_array(s.id) FROM subnets s WHERE s.network_id = r.id) AS subnets FROM networks r",
    "r.shared",
)
SUBNET = Kind(
    "Subnet",
    "SELECT r.*, r.project_id AS tenant_id FROM subnets r JOIN networks n ON n.id = r.network_id",
    "n.shared",
)
PORT = Kind(
    "Port",
    "SELECT r.id, r.name, r.network_id, r.project_id, r.project_id AS tenant_id, r.mac_address,"
    " (SELECT json_group_array(json_object('subnet_id', a.subnet_id, 'ip_address', a.ip_address))"
    "  FROM ip_allocations a WHERE a.port_id = r.id) AS fixed_ips,"
    ' r.device_id, r.device_owner, r.admin_state_up, r.binding_host AS "binding:host_id",'
    ' r.binding_vif_type AS "binding:vif_type", r.binding_vif_details AS "binding:vif_details",'
    " r.description, r.revision_number, '[]' AS security_groups, 'normal' AS \"binding:vnic_type\","
    " '{}' AS \"binding:profile\","
    " CASE WHEN r.admin_state_up AND r.device_id != '' AND r.binding_host != '' THEN 'ACTIVE'"
    "  ELSE 'DOWN' END AS status, r.created_at, r.updated_at FROM ports r",
    "0",
)

# -- input, visibility, addresses --------------------------------------------------------


def _check(kind: type, *, optional: bool = False, **values: Any) -> None:
    """``InvalidRequest`` unless every value is a ``kind`` (or None when ``optional``); a bool is no int."""
    for field, value in values.items():
        if optional and value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _invalid(field, f"{value!r:.60} is not a {_TYPE_NAMES[kind]}")


def _invalid(field: str, reason: str) -> InvalidRequest:
    """Neutron's "Invalid input for <field>. Reason: <reason>." error."""
    return InvalidRequest(f"Invalid input for {field}. Reason: {reason}.")


def _scope() -> str | None:
    """The project the caller acts for; None when it sees every project (an admin, a service).

    :raises Forbidden: a member's token is scoped to no project.
    """
    ctx = caller()
    if sees_all(ctx):
        return None
    assert ctx is not None  # sees_all(None) is True
    if not ctx.project_id:
        raise Forbidden("This operation needs a project-scoped token.")
    return ctx.project_id


def _caller_project() -> str:
    """The project a new resource of the caller belongs to ('' for a service acting for none)."""
    ctx = caller()
    return _scope() or (ctx.project_id if ctx else None) or ""


def _where(conditions: dict[str, Any]) -> tuple[str, list[Any]]:
    """``column = ?`` conditions joined by AND, leaving out the None values."""
    used = {column: value for column, value in conditions.items() if value is not None}
    return " AND ".join([f"{column} = ?" for column in used] or ["1"]), list(used.values())


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A row of a ``Kind.select`` query with its booleans and JSON lists decoded (and Neutron's
    ``tags``, always empty: tagging is not built)."""
    record = {
        key: bool(value) if key in _BOOLEANS else from_json(value, []) if key in _JSON else value
        for key, value in row.items()
    }
    record["tags"] = []
    return record


def _ip(field: str, value: Any) -> IPv4Address:
    _check(str, **{field: value})
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if not isinstance(address, IPv4Address):
        raise _invalid(field, f"'{value:.60}' is not an IPv4 address")
    return address


def _is_host(address: IPv4Address, net: IPv4Network) -> bool:
    return address in net and address not in (net.network_address, net.broadcast_address)


def _subnet_row(
    network: dict[str, Any], name: Any, cidr: Any, gateway_ip: Any, pools: Any, ip_version: Any
) -> dict[str, Any]:
    """A subnet's checked addresses: the gateway defaults to the first host, the pool to the others.

    :raises InvalidRequest: bad CIDR, gateway outside it, pools outside it or overlapping
        each other or the gateway.
    """
    _check(str, name=name, cidr=cidr)
    _check(int, ip_version=ip_version)
    try:
        net = ipaddress.ip_network(cidr)
    except ValueError:
        raise _invalid("cidr", f"'{cidr:.60}' is not a valid IP subnet") from None
    if ip_version != 4 or not isinstance(net, IPv4Network) or net.prefixlen > 30:
        raise _invalid("cidr", f"{net} is not an IPv4 subnet with hosts")
    first, last = net.network_address + 1, net.broadcast_address - 1
    gateway = first if gateway_ip is None else _ip("gateway_ip", gateway_ip)
    if not _is_host(gateway, net):
        raise _invalid("gateway_ip", f"{gateway} is not a host address of {net}")
    if pools is None:
        ranges = [(start, end) for start, end in ((first, gateway - 1), (gateway + 1, last)) if start <= end]
    else:
        _check(list, allocation_pools=pools)
        ranges = sorted(_pool(pool, net) for pool in pools)
        for (start, end), (next_start, next_end) in pairwise(ranges):
            if next_start <= end:
                raise InvalidRequest(
                    f"Found overlapping allocation pools: {start}-{end} {next_start}-{next_end}"
                    f" for subnet {net}."
                )
        for start, end in ranges:
            if start <= gateway <= end:
                raise InvalidRequest(f"Gateway ip {gateway} conflicts with allocation pool {start}-{end}.")
    return {
        "id": new_uuid(),
        "name": name,
        "network_id": network["id"],
        "project_id": network["project_id"],
        "cidr": str(net),
        "ip_version": 4,
        "gateway_ip": str(gateway),
        "allocation_pools": to_json([{"start": str(start), "end": str(end)} for start, end in ranges]),
    }


def _pool(pool: Any, net: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    if not isinstance(pool, dict) or pool.keys() != {"start", "end"}:
        raise _invalid("allocation_pools", "each pool is a {start, end} object")
    start, end = _ip("allocation_pools", pool["start"]), _ip("allocation_pools", pool["end"])
    if not (_is_host(start, net) and _is_host(end, net)):
        raise InvalidRequest(f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}.")
    if start > end:
        raise InvalidRequest(f"The allocation pool {start}-{end} is not valid.")
    return start, end


def _nameservers(servers: Any) -> str:
    """``dns_nameservers`` (None: none) checked, as stored."""
    _check(list, optional=True, dns_nameservers=servers)
    return to_json([str(_ip("dns_nameservers", server)) for server in servers or []])


def _requested_ip(
    entry: Any, subnets: list[dict[str, Any]], network_id: str
) -> tuple[dict[str, Any], IPv4Address | None]:
    """The subnet, and the address if it names one, that a ``fixed_ips`` entry asks for."""
    if not isinstance(entry, dict) or not entry or not entry.keys() <= {"subnet_id", "ip_address"}:
        raise _invalid("fixed_ips", "each entry takes a subnet_id and/or an ip_address")
    candidates = [subnet for subnet in subnets if entry.get("subnet_id") in (None, subnet["id"])]
    if not candidates:
        raise _invalid("fixed_ips", f"no such subnet on network {network_id}")
    if entry.get("ip_address") is None:
        return candidates[0], None
    address = _ip("ip_address", entry["ip_address"])
    for subnet in candidates:
        if _is_host(address, ipaddress.ip_network(subnet["cidr"])) and str(address) != subnet["gateway_ip"]:
            return subnet, address
    raise InvalidRequest(f"IP address {address} is not a valid IP for the subnets of network {network_id}.")


def _port_record(row: dict[str, Any], fixed_ips: list[dict[str, str]]) -> dict[str, Any]:
    """The record ``PORT`` gives for a port ``row`` (every column) holding ``fixed_ips``."""
    up = bool(row["admin_state_up"])
    return {
        "id": row["id"],
        "name": row["name"],
        "network_id": row["network_id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "mac_address": row["mac_address"],
        "fixed_ips": fixed_ips,
        "device_id": row["device_id"],
        "device_owner": row["device_owner"],
        "admin_state_up": up,
        "binding:host_id": row["binding_host"],
        "binding:vif_type": row["binding_vif_type"],
        "binding:vif_details": from_json(row["binding_vif_details"], {}),
        "binding:vnic_type": "normal",
        "binding:profile": {},
        "security_groups": [],
        "description": row["description"],
        "revision_number": row.get("revision_number", 1),  # a new row has the column's default
        "tags": [],
        "status": "ACTIVE" if up and row["device_id"] and row["binding_host"] else "DOWN",
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# -- writes inside a transaction ---------------------------------------------------------------


async def _insert(
    db: Db, table: str, row: dict[str, Any], unless: str | None = None
) -> dict[str, Any] | None:
    """Insert ``row`` with its timestamps and answer it; with ``unless`` (a query on the row's
    named values), insert nothing and answer None when that query finds a row."""
    now = utcnow()
    row = {**row, "created_at": now, "updated_at": now}
    values = ", ".join(":" + column for column in row)
    condition = f" WHERE NOT EXISTS ({unless})" if unless else ""
    cursor = await db.execute(f"INSERT INTO {table} ({', '.join(row)}) SELECT {values}{condition}", row)
    return row if cursor.rowcount else None


async def _insert_subnet(db: Db, subnet: dict[str, Any]) -> None:
    """Insert a subnet row with its pools, all of them free."""
    await _insert(db, "subnets", subnet)
    pools = [
        (subnet["id"], int(IPv4Address(pool["start"])), int(IPv4Address(pool["end"])))
        for pool in from_json(subnet["allocation_pools"], [])
    ]
    if pools:
        values = ", ".join(["(?, ?, ?)"] * len(pools))
        for table in ("ip_pools", "ip_free"):
            await db.execute(
                f"INSERT INTO {table} (subnet_id, lo, hi) VALUES {values}",
                [value for pool in pools for value in pool],
            )


async def _update(db: Db, table: str, row_id: str, changes: dict[str, Any]) -> None:
    """Set the changes that are not None, and ``updated_at``."""
    used = {column: value for column, value in changes.items() if value is not None}
    assignments = ", ".join(
        [
            *(f"{column} = :{column}" for column in [*used, "updated_at"]),
            "revision_number = revision_number + 1",
        ]
    )
    await db.execute(
        f"UPDATE {table} SET {assignments} WHERE id = :id", {**used, "updated_at": utcnow(), "id": row_id}
    )


async def _insert_port(db: Db, row: dict[str, Any], requested_mac: Any) -> dict[str, Any]:
    """Insert a port ``row`` (every column but MAC and timestamps) with the requested MAC (checked,
    lower-cased) or a new random ``fa:16:3e:xx:xx:xx``, unused; answer the row inserted.

    :raises InvalidRequest: a bad MAC.
    :raises Conflict: the requested MAC is in use, or no random one was free.
    """
    _check(str, optional=True, mac_address=requested_mac)
    if requested_mac is not None and not _MAC.match(requested_mac.lower()):
        raise _invalid("mac_address", f"'{requested_mac:.60}' is not a MAC address")
    network_id = row["network_id"]
    for _ in range(MAC_ATTEMPTS):
        mac = requested_mac.lower() if requested_mac else MAC_PREFIX + secrets.token_bytes(3).hex(":", 1)
        inserted = await _insert(
            db,
            "ports",
            {**row, "mac_address": mac},
            unless="SELECT 1 FROM ports WHERE mac_address = :mac_address",
        )
        if inserted is not None:
            return inserted
        if requested_mac:
            raise Conflict(
                f"Unable to complete operation for network {network_id}. The mac address {mac} is in use."
            )
    raise Conflict(f"Unable to generate a unique mac address on network {network_id}.")


async def _allocate(db: Db, subnet_id: str, address: IPv4Address | None, port_id: str) -> str | None:
    """Give the port ``address`` of the subnet, or else its lowest free pool address; answer the
    address given, None when the pools are full. One statement: ``ip_free`` answers the lowest
    free address, and the transaction (and ``UNIQUE(subnet_id, ip_address)``) keeps it free.

    :raises Conflict: ``address`` is taken (Neutron's IpAddressAlreadyAllocated).
    """
    values = {"subnet_id": subnet_id, "port_id": port_id}
    if address is None:
        taken = await fetchall(db, _TAKE_LOWEST, values)
        return taken[0]["ip_address"] if taken else None
    if not await fetchall(db, _TAKE, {**values, "ip_address": str(address), "ip_int": int(address)}):
        raise Conflict(f"IP address {address} already allocated in subnet {subnet_id}.")
    return str(address)


class NetActor(Actor):
    name = "net"
    orphan_sweep_interval = ORPHAN_SWEEP_INTERVAL

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.store = Store(config.store_path("net"), MIGRATIONS)

    async def on_start(self) -> None:
        await self.store.open()
        await self._bootstrap()
        self.spawn(
            sweep_orphans_forever(
                self.bus,
                self._instances_with_ports,
                self.deallocate_for_instance,
                "ports",
                self.orphan_sweep_interval,
            ),
            name="net-orphans",
        )

    async def _instances_with_ports(self) -> list[str]:
        rows = await self.store.fetchall(
            "SELECT DISTINCT device_id FROM ports WHERE device_owner = ? AND device_id != ''",
            (COMPUTE_OWNER,),
        )
        return [row["device_id"] for row in rows]

    async def on_stop(self) -> None:
        await self.store.close()

    async def _bootstrap(self) -> None:
        """The ``TRIGGERS``; the shared network "default" (of no project) and its subnet, on first start."""
        async with self._writing() as db:
            for trigger in TRIGGERS:
                await db.execute(trigger)
            if await fetchone(db, "SELECT id FROM networks LIMIT 1"):
                return
            network = {"id": new_uuid(), "name": DEFAULT_NETWORK, "project_id": "", "shared": True}
            await _insert(db, "networks", {**network, "admin_state_up": True, "mtu": 1500})
            subnet = _subnet_row(network, DEFAULT_SUBNET, DEFAULT_CIDR, DEFAULT_GATEWAY, None, 4)
            await _insert_subnet(db, {**subnet, "enable_dhcp": True, "dns_nameservers": "[]"})
        log.info("first start: shared network %r with subnet %s", DEFAULT_NETWORK, DEFAULT_CIDR)

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[Db]:
        """A store transaction in which a constraint failure (the backstop) answers ``Conflict``."""
        try:
            async with self.store.transaction() as db:
                yield db
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"Conflicting concurrent change: {exc}") from None

    async def _load(
        self,
        kind: Kind,
        where: str,
        params: list[Any],
        db: Db | None = None,
        scope: str | None = None,
    ) -> list[dict[str, Any]]:
        """The records matching ``where``; with a ``scope``, only those that project sees."""
        if scope is not None:
            where, params = f"{where} AND (r.project_id = ? OR {kind.shared})", [*params, scope]
        sql = f"{kind.select} WHERE {where} ORDER BY r.rowid"
        rows = await fetchall(db, sql, params) if db is not None else await self.store.fetchall(sql, params)
        return [_record(row) for row in rows]

    async def _get(
        self,
        kind: Kind,
        row_id: Any,
        scope: str | None,
        db: Db | None = None,
        *,
        owned: bool = False,
    ) -> dict[str, Any]:
        """One record ``scope`` sees; ``owned``: one it may also change.

        :raises NotFound: none, or ``scope`` may not see it (no existence leak).
        :raises Forbidden: ``owned`` was asked of another project's shared network or its subnet.
        """
        _check(str, **{f"{kind.title.lower()}_id": row_id})
        found = await self._load(kind, "r.id = ?", [row_id], db, scope)
        if not found:
            raise NotFound(f"{kind.title} {row_id} could not be found.")
        if owned and scope is not None and found[0]["project_id"] != scope:
            raise Forbidden(
                f"{kind.title} {row_id} belongs to another project: only its owner may change it."
            )
        return found[0]

    # -- networks -----------------------------------------------------------------------------

    @handler(policy="network:write")
    async def create_network(
        self,
        name: str = "",
        shared: bool = False,
        admin_state_up: bool = True,
        mtu: int = 1500,
        description: str = "",
    ) -> dict[str, Any]:
        """A network of the caller's project.

        :raises InvalidRequest: a field of the wrong type, an MTU outside 68..9000.
        :raises Forbidden: a member asked for a shared network.
        """
        _check(str, name=name, description=description)
        _check(bool, shared=shared, admin_state_up=admin_state_up)
        _check(int, mtu=mtu)
        if mtu not in MTU_RANGE:
            raise _invalid("mtu", f"{mtu} is outside 68..9000")
        if shared and not sees_all(caller()):
            raise Forbidden("Only an admin may create a shared network.")
        network_id = new_uuid()
        async with self._writing() as db:
            network = {"id": network_id, "name": name, "project_id": _caller_project(), "shared": shared}
            row = {**network, "admin_state_up": admin_state_up, "mtu": mtu, "description": description}
            await _insert(db, "networks", row)
            return await self._get(NETWORK, network_id, None, db)

    @handler(policy="network:read")
    async def list_networks(
        self, name: str | None = None, shared: bool | None = None, project_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The networks the caller sees (its own and the shared ones), filtered.

        :raises InvalidRequest: a filter of the wrong type.
        """
        _check(str, optional=True, name=name, project_id=project_id)
        _check(bool, optional=True, shared=shared)
        where, params = _where({"r.name": name, "r.shared": shared, "r.project_id": project_id})
        return await self._load(NETWORK, where, params, scope=_scope())

    @handler(policy="network:read")
    async def get_network(self, network_id: str) -> dict[str, Any]:
        """One network.

        :raises NotFound: none, or the caller may not see it.
        """
        return await self._get(NETWORK, network_id, _scope())

    @handler(policy="network:write")
    async def update_network(
        self,
        network_id: str,
        name: str | None = None,
        admin_state_up: bool | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Rename a network or set its admin state.

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared network.
        :raises InvalidRequest: a field of the wrong type.
        """
        _check(str, optional=True, name=name, description=description)
        _check(bool, optional=True, admin_state_up=admin_state_up)
        scope = _scope()
        async with self._writing() as db:
            await self._get(NETWORK, network_id, scope, db, owned=True)
            changes = {"name": name, "admin_state_up": admin_state_up, "description": description}
            await _update(db, "networks", network_id, changes)
            return await self._get(NETWORK, network_id, None, db)

    @handler(policy="network:write")
    async def delete_network(self, network_id: str) -> None:
        """Delete a network, its subnets and its unbound ports (``port.deleted`` for each).

        :raises NotFound: none the caller sees.
        :raises Forbidden: another project's shared network.
        :raises Conflict: a port of it is bound to an instance (Neutron's NetworkInUse).
        """
        scope = _scope()
        async with self._writing() as db:
            await self._get(NETWORK, network_id, scope, db, owned=True)
            ports = await self._load(PORT, "r.network_id = ?", [network_id], db)
            if any(port["device_id"] for port in ports):
                raise Conflict(
                    f"Unable to complete operation on network {network_id}."
                    " There are one or more ports still in use on the network."
                )
            for table, column in (("ports", "network_id"), ("subnets", "network_id"), ("networks", "id")):
                await db.execute(f"DELETE FROM {table} WHERE {column} = ?", (network_id,))
        for port in ports:
            await publish_event(self.bus, "port", port["id"], port["project_id"], "port.deleted", port)

    # -- subnets ------------------------------------------------------------------------------

    @handler(policy="network:write")
    async def create_subnet(
        self,
        network_id: str,
        cidr: str,
        name: str = "",
        gateway_ip: str | None = None,
        allocation_pools: list[dict[str, str]] | None = None,
        ip_version: int = 4,
        enable_dhcp: bool = True,
        dns_nameservers: list[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """A subnet of a network of the caller's project.

        :raises InvalidRequest: a bad CIDR, gateway or pool; it overlaps another subnet of the network.
        :raises NotFound: no such network the caller sees.
        :raises Forbidden: another project's shared network.
        """
        _check(bool, enable_dhcp=enable_dhcp)
        _check(str, description=description)
        dns = _nameservers(dns_nameservers)
        scope = _scope()
        async with self._writing() as db:
            network = await self._get(NETWORK, network_id, scope, db, owned=True)
            subnet = _subnet_row(network, name, cidr, gateway_ip, allocation_pools, ip_version)
            for other in await fetchall(db, "SELECT cidr FROM subnets WHERE network_id = ?", (network_id,)):
                if ipaddress.ip_network(other["cidr"]).overlaps(ipaddress.ip_network(subnet["cidr"])):
                    raise InvalidRequest(
                        f"Invalid input for operation: Requested subnet with cidr: {subnet['cidr']} for"
                        f" network: {network_id} overlaps with another subnet."
                    )
            extra = {"enable_dhcp": enable_dhcp, "dns_nameservers": dns, "description": description}
            await _insert_subnet(db, {**subnet, **extra})
            return await self._get(SUBNET, subnet["id"], None, db)

    @handler(policy="network:read")
    async def list_subnets(self, network_id: str | None = None) -> list[dict[str, Any]]:
        """The subnets the caller sees (its own and those of shared networks).

        :raises InvalidRequest: a filter of the wrong type.
        """
        _check(str, optional=True, network_id=network_id)
        where, params = _where({"r.network_id": network_id})
        return await self._load(SUBNET, where, params, scope=_scope())

    @handler(policy="network:read")
    async def get_subnet(self, subnet_id: str) -> dict[str, Any]:
        """One subnet.

        :raises NotFound: none, or the caller may not see it.
        """
        return await self._get(SUBNET, subnet_id, _scope())

    @handler(policy="network:write")
    async def delete_subnet(self, subnet_id: str) -> None:
        """Delete a subnet none of whose addresses is allocated.

        :raises NotFound: none the caller sees.
        :raises Forbidden: a subnet of another project's shared network.
        :raises Conflict: a port holds an address of it (Neutron's SubnetInUse).
        """
        scope = _scope()
        async with self._writing() as db:
            await self._get(SUBNET, subnet_id, scope, db, owned=True)
            if await fetchone(db, "SELECT 1 FROM ip_allocations WHERE subnet_id = ? LIMIT 1", (subnet_id,)):
                raise Conflict(
                    f"Unable to complete operation on subnet {subnet_id}:"
                    " One or more ports have an IP allocation from this subnet."
                )
            await db.execute("DELETE FROM subnets WHERE id = ?", (subnet_id,))

    # -- ports --------------------------------------------------------------------------------

    async def _new_port(
        self, db: Db, network_id: Any, scope: str | None, fixed_ips: Any, port: dict[str, Any]
    ) -> dict[str, Any]:
        """Insert ``port`` (some columns of ``_PORT_DEFAULTS``, and ``mac_address``) on a network
        ``scope`` sees, with its addresses: the lowest free one of the first subnet that has one,
        or those ``fixed_ips`` asks for; answer its record.

        :raises NotFound: no such network ``scope`` sees.
        :raises InvalidRequest: a bad network id, MAC or ``fixed_ips`` entry.
        :raises Conflict: no free address, or the MAC or an asked address is taken.
        """
        _check(str, network_id=network_id)
        visible = "" if scope is None else " AND (n.project_id = :scope OR n.shared)"
        subnets = await fetchall(  # the network's subnets, or one row of NULLs when it has none
            db,
            "SELECT s.id, s.cidr, s.gateway_ip FROM networks n LEFT JOIN subnets s ON s.network_id = n.id"
            f" WHERE n.id = :network_id{visible} ORDER BY s.rowid",
            {"network_id": network_id, "scope": scope},
        )
        if not subnets:
            raise NotFound(f"{NETWORK.title} {network_id} could not be found.")
        subnets = [subnet for subnet in subnets if subnet["id"] is not None]
        _check(list, optional=True, fixed_ips=fixed_ips)
        requested_mac = port.pop("mac_address", None)
        row = {**_PORT_DEFAULTS, **port, "id": new_uuid(), "network_id": network_id}
        row = await _insert_port(db, row, requested_mac)
        given: list[dict[str, str]] = []
        if fixed_ips is None and subnets:
            for subnet in subnets:
                if (address := await _allocate(db, subnet["id"], None, row["id"])) is not None:
                    given.append({"subnet_id": subnet["id"], "ip_address": address})
                    break
            else:
                raise Conflict(f"No more IP addresses available on network {network_id}.")
        for entry in fixed_ips or []:
            subnet, requested = _requested_ip(entry, subnets, network_id)
            if (address := await _allocate(db, subnet["id"], requested, row["id"])) is None:
                raise Conflict(f"No more IP addresses available on subnet {subnet['id']}.")
            given.append({"subnet_id": subnet["id"], "ip_address": address})
        return _port_record(row, given)

    @handler(policy="network:write")
    async def create_port(
        self,
        network_id: str,
        name: str = "",
        mac_address: str | None = None,
        fixed_ips: list[dict[str, str]] | None = None,
        device_id: str = "",
        device_owner: str = "",
        admin_state_up: bool = True,
        description: str = "",
    ) -> dict[str, Any]:
        """A port of the caller's project on a network it sees, with the lowest free address of the
        network unless ``fixed_ips`` (``[{subnet_id?, ip_address?}]``) asks for others.

        :raises NotFound: no such network the caller sees.
        :raises InvalidRequest: a field of the wrong type, a bad MAC, an address not on the network.
        :raises Conflict: no free address, or the MAC or an asked address is taken.
        """
        _check(str, name=name, device_id=device_id, device_owner=device_owner, description=description)
        _check(bool, admin_state_up=admin_state_up)
        scope = _scope()
        port = {
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "description": description,
        }
        port |= {
            "project_id": _caller_project(),
            "mac_address": mac_address,
            "admin_state_up": admin_state_up,
        }
        async with self._writing() as db:
            return await self._new_port(db, network_id, scope, fixed_ips, port)

    @handler(policy="network:read")
    async def list_ports(
        self, network_id: str | None = None, device_id: str | None = None, device_owner: str | None = None
    ) -> list[dict[str, Any]]:
        """The caller's ports, filtered.

        :raises InvalidRequest: a filter of the wrong type.
        """
        _check(str, optional=True, network_id=network_id, device_id=device_id, device_owner=device_owner)
        filters = {"r.network_id": network_id, "r.device_id": device_id, "r.device_owner": device_owner}
        return await self._load(PORT, *_where(filters), scope=_scope())

    @handler(policy="network:read")
    async def get_port(self, port_id: str) -> dict[str, Any]:
        """One port.

        :raises NotFound: none, or another project's.
        """
        return await self._get(PORT, port_id, _scope())

    @handler(policy="network:write")
    async def update_port(
        self,
        port_id: str,
        name: str | None = None,
        device_id: str | None = None,
        device_owner: str | None = None,
        binding_host: str | None = None,
        admin_state_up: bool | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Change a port's name, device, binding host, admin state or description; a port is ACTIVE
        while it is up with a device and a binding host, else DOWN.

        :raises NotFound: none, or another project's.
        :raises InvalidRequest: a field of the wrong type.
        """
        changes = {
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "binding_host": binding_host,
            "description": description,
        }
        _check(str, optional=True, **changes)
        _check(bool, optional=True, admin_state_up=admin_state_up)
        scope = _scope()
        async with self._writing() as db:
            await self._get(PORT, port_id, scope, db)
            await _update(db, "ports", port_id, {**changes, "admin_state_up": admin_state_up})
            return await self._get(PORT, port_id, None, db)

    @handler(policy="network:write")
    async def delete_port(self, port_id: str) -> None:
        """Delete a port, releasing its addresses; publishes ``port.deleted``.

        :raises NotFound: none, or another project's.
        """
        scope = _scope()
        async with self._writing() as db:
            port = await self._get(PORT, port_id, scope, db)
            await db.execute("DELETE FROM ports WHERE id = ?", (port_id,))
        await publish_event(self.bus, "port", port_id, port["project_id"], "port.deleted", port)

    @handler
    async def set_port_binding(
        self, port_id: str, vif_type: str, vif_details: dict[str, Any]
    ) -> dict[str, Any]:
        """How a node plugged a bound port in (``binding:vif_type``: bridge, or user-mode
        networking where no bridge could be made, with the reason in ``binding:vif_details``).

        :raises InvalidRequest: an unknown vif type or details that are not a map.
        :raises NotFound: no such port.
        """
        _check(str, port_id=port_id, vif_type=vif_type)
        if vif_type not in VIF_TYPES:
            raise _invalid("vif_type", f"{vif_type!r:.40} is not one of {', '.join(VIF_TYPES)}")
        if not isinstance(vif_details, dict):
            raise _invalid("vif_details", "must be a map")
        async with self._writing() as db:
            await self._get(PORT, port_id, None, db)
            changes = {"binding_vif_type": vif_type, "binding_vif_details": to_json(vif_details)}
            await _update(db, "ports", port_id, changes)
            port = await self._get(PORT, port_id, None, db)
        await publish_event(self.bus, "port", port_id, port["project_id"], "port.plugged", port)
        return port

    # -- instances ----------------------------------------------------------------------------

    @handler
    async def allocate_for_instance(
        self,
        instance_uuid: str,
        project_id: str,
        requested_networks: list[dict[str, str]] | str | None,
        host: str,
    ) -> list[dict[str, Any]]:
        """The ports of an instance on ``host``, acting for ``project_id``; idempotent per instance.

        ``requested_networks``: a list of ``{"uuid": network_id[, "fixed_ip": ip]}`` and
        ``{"port": port_id}``; "auto", None or [] (the project's network if it has exactly one,
        else the shared default network); "none" (no port). A new port (device_owner
        compute:nova) is deleted by ``deallocate_for_instance``, a given one only unbound.
        Publishes ``port.bound`` for each; when the instance has ports, returns them instead.

        :raises InvalidRequest: a malformed argument.
        :raises Forbidden: a member acting for another project.
        :raises NotFound: a network or port the project does not see; no default network.
        :raises Conflict: a given port is bound to another instance; no (or not that) address is free.
        """
        _check_instance(instance_uuid)
        _check(str, project_id=project_id, host=host)
        requests = _network_requests(requested_networks)
        scope = _scope()
        if scope is not None and scope != project_id:
            raise Forbidden(f"A member of project {scope} cannot act for project {project_id}.")
        async with self._writing() as db:
            existing = await self._load(
                PORT, "r.device_id = ? AND r.project_id = ?", [instance_uuid, project_id], db
            )
            if existing:  # asked again (a build delivered twice, or rebuilt on another host)
                for port in existing:
                    if port["binding:host_id"] != host:
                        await _update(db, "ports", port["id"], {"binding_host": host})
                        port["binding:host_id"] = host
                return existing
            if requests is None:
                requests = [{"uuid": await _auto_network(db, project_id)}]
            ports = []
            for request in requests:
                if "port" in request:
                    ports.append(await self._bind(db, request["port"], project_id, instance_uuid, host))
                    continue
                fixed_ips = [{"ip_address": request["fixed_ip"]}] if "fixed_ip" in request else None
                port = {"project_id": project_id, "device_id": instance_uuid, "binding_host": host}
                port |= {"device_owner": COMPUTE_OWNER, "created_for_instance": True}
                ports.append(await self._new_port(db, request["uuid"], project_id, fixed_ips, port))
        for port in ports:
            await publish_event(self.bus, "port", port["id"], project_id, "port.bound", port)
        return ports

    async def _bind(
        self, db: Db, port_id: str, project_id: str, instance_uuid: str, host: str
    ) -> dict[str, Any]:
        """Bind a port of ``project_id`` that no instance holds to ``instance_uuid`` on ``host``;
        answer its record."""
        port = await self._get(PORT, port_id, project_id, db)
        if port["device_id"]:
            raise Conflict(
                f"Unable to complete operation on port {port_id} for network {port['network_id']}."
                f" Port already has an attached device {port['device_id']}."
            )
        changes = {"device_id": instance_uuid, "device_owner": COMPUTE_OWNER, "binding_host": host}
        await _update(db, "ports", port_id, changes)
        return await self._get(PORT, port_id, None, db)

    @handler
    async def deallocate_for_instance(self, instance_uuid: str) -> dict[str, int]:
        """Delete the instance's ports ``allocate_for_instance`` created (releasing their
        addresses) and unbind those it was given; idempotent. Publishes ``port.deleted`` and
        ``port.unbound``.

        :raises InvalidRequest: an empty or non-string ``instance_uuid``.
        """
        _check_instance(instance_uuid)
        where, params = _where({"device_id": instance_uuid, "project_id": _scope()})
        events = []
        async with self._writing() as db:
            for row in await fetchall(
                db, f"SELECT id, created_for_instance FROM ports WHERE {where}", params
            ):
                port = await self._get(PORT, row["id"], None, db)
                if row["created_for_instance"]:
                    await db.execute("DELETE FROM ports WHERE id = ?", (row["id"],))
                    events.append(("port.deleted", port))
                    continue
                await _update(db, "ports", row["id"], UNBOUND)
                events.append(("port.unbound", await self._get(PORT, row["id"], None, db)))
        for event, port in events:
            await publish_event(self.bus, "port", port["id"], port["project_id"], event, port)
        deleted = sum(event == "port.deleted" for event, _ in events)
        return {"deleted": deleted, "unbound": len(events) - deleted}

    @handler
    async def list_allocations(self) -> list[dict[str, str]]:
        """Every IP allocation, for an audit.

        :raises Forbidden: a member asked.
        """
        if not sees_all(caller()):
            raise Forbidden("Only an admin may list IP allocations.")
        return await self.store.fetchall(
            "SELECT subnet_id, ip_address, port_id FROM ip_allocations ORDER BY subnet_id, rowid"
        )


def _check_instance(instance_uuid: Any) -> None:
    _check(str, instance_uuid=instance_uuid)
    if not instance_uuid:
        raise _invalid("instance_uuid", "it is empty")


def _network_requests(requested: Any) -> list[dict[str, str]] | None:
    """The checked ``requested_networks``: its list, [] for "none", None for "auto"."""
    if requested in (None, "auto", []):
        return None
    if requested == "none":
        return []
    _check(list, requested_networks=requested)
    ports: set[str] = set()
    for request in requested:
        if (
            not isinstance(request, dict)
            or not request.keys() <= {"uuid", "port", "fixed_ip"}
            or ("uuid" in request) == ("port" in request)
            or ("port" in request and "fixed_ip" in request)
        ):
            raise _invalid("requested_networks", "each entry is {uuid[, fixed_ip]} or {port}")
        _check(str, **{f"requested_networks.{key}": value for key, value in request.items()})
        if request.get("port") in ports:
            raise _invalid("requested_networks", f"port {request['port']} is repeated")
        ports.add(request.get("port", ""))
    return requested


async def _auto_network(db: Db, project_id: str) -> str:
    """The project's network if it has exactly one, else the shared default network.

    :raises NotFound: there is no default network.
    """
    rows = await fetchall(
        db,
        "SELECT id, project_id = :project AS own,"
        " shared = 1 AND project_id = '' AND name = :default AS is_default"
        " FROM networks WHERE project_id = :project OR (shared = 1 AND project_id = '' AND name = :default)"
        " ORDER BY rowid",
        {"project": project_id, "default": DEFAULT_NETWORK},
    )
    own = [row["id"] for row in rows if row["own"]]
    if len(own) == 1:
        return own[0]
    default = next((row["id"] for row in rows if row["is_default"]), None)
    if default is None:
        raise NotFound(f"Network {DEFAULT_NETWORK} could not be found.")
    return default
