"""The net actor's store: its migrations (quotas among them), the triggers that keep the free
ranges, and how its rows read as Neutron records (``Kind``: ``NETWORK``, ``SUBNET``,
``SUBNETPOOL``, ``PORT``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, Generic, TypeVar

from api.net import (
    NETWORK_TYPE,
    ROUTER_GATEWAY_OWNER,
    ROUTER_OWNERS,
    FixedIp,
    FloatingIp,
    Network,
    Port,
    QuotaResource,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    SubnetPool,
)
from runtime.store import Migration, Step, from_json

_ADDRESSES_AS_INTEGERS = """
    ALTER TABLE ip_allocations ADD COLUMN ip_int INTEGER;
    {ip_int}
    CREATE TABLE ip_pools (
        subnet_id TEXT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
        lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (subnet_id, lo)) WITHOUT ROWID;
    {pools}
    CREATE TABLE ip_free (
        subnet_id TEXT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
        lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (subnet_id, lo)) WITHOUT ROWID;
    {free}
"""
_CONVERT_ADDRESSES = {
    "ip_int": """UPDATE ip_allocations SET ip_int = (
        SELECT sum(value << (24 - 8 * key)) FROM json_each('[' || replace(ip_address, '.', ',') || ']'));""",
    "pools": """INSERT INTO ip_pools (subnet_id, lo, hi)
        SELECT s.id,
            (SELECT sum(value << (24 - 8 * key)) FROM json_each(
                '[' || replace(json_extract(p.value, '$.start'), '.', ',') || ']')),
            (SELECT sum(value << (24 - 8 * key)) FROM json_each(
                '[' || replace(json_extract(p.value, '$.end'), '.', ',') || ']'))
        FROM subnets s, json_each(s.allocation_pools) p;""",
    "free": """INSERT INTO ip_free (subnet_id, lo, hi)
        WITH bounds (subnet_id, pool, v) AS (
            SELECT subnet_id, lo, lo - 1 FROM ip_pools
            UNION ALL SELECT subnet_id, lo, hi + 1 FROM ip_pools
            UNION ALL SELECT p.subnet_id, p.lo, a.ip_int FROM ip_pools p JOIN ip_allocations a
                ON a.subnet_id = p.subnet_id AND a.ip_int BETWEEN p.lo AND p.hi),
        gaps (subnet_id, v, next) AS (
            SELECT subnet_id, v, lead(v) OVER (PARTITION BY subnet_id, pool ORDER BY v) FROM bounds)
        SELECT subnet_id, v + 1, next - 1 FROM gaps WHERE next - v > 1;""",
}
"""Migration 2's conversion of the rows of schema 1 (sqlite only: JSON and json_each)."""

COUNTED: dict[QuotaResource, str] = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "subnetpool": "subnetpools",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
    "router": "routers",
    "floatingip": "floatingips",
}
"""The table whose rows of a project (by ``project_id``) are its usage of each quota resource,
counted in ``project_counts``."""

MIGRATIONS: list[Step] = [
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
    # port holds, as disjoint [lo, hi] ranges), filled from the rows there are (on sqlite: a
    # PostgreSQL store is new at this step, with no rows to convert). TRIGGERS keep ip_free in
    # step with ip_allocations from then on.
    Migration(
        sqlite=_ADDRESSES_AS_INTEGERS.format(**_CONVERT_ADDRESSES),
        postgresql=_ADDRESSES_AS_INTEGERS.format(**dict.fromkeys(_CONVERT_ADDRESSES, "")),
    ),
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
    # 5: each network's VXLAN segment (VNI), unique; the networks of earlier versions get theirs
    # at start (``NetActor._bootstrap``).
    """
    ALTER TABLE networks ADD COLUMN segmentation_id INTEGER;
    CREATE UNIQUE INDEX networks_segmentation ON networks(segmentation_id);
    """,
    # 6: subnet pools, and the pool a subnet's CIDR was given from.
    """
    CREATE TABLE subnetpools (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL, prefixes TEXT NOT NULL,
        default_prefixlen INTEGER NOT NULL, min_prefixlen INTEGER NOT NULL, max_prefixlen INTEGER NOT NULL,
        shared INTEGER NOT NULL, description TEXT NOT NULL DEFAULT '',
        revision_number INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX subnetpools_project ON subnetpools(project_id);
    ALTER TABLE subnets ADD COLUMN subnetpool_id TEXT REFERENCES subnetpools(id);
    CREATE INDEX subnets_subnetpool ON subnets(subnetpool_id);
    """,
    # 7: quotas, each project's own limits (``actors.net.quotas``); usage is counted from the rows
    # by project, so the subnets and ports are indexed by it.
    """
    CREATE TABLE quotas (
        project_id TEXT NOT NULL, resource TEXT NOT NULL, hard_limit INTEGER NOT NULL,
        PRIMARY KEY (project_id, resource));
    CREATE INDEX subnets_project ON subnets(project_id);
    CREATE INDEX ports_project ON ports(project_id);
    """,
    # 8: security groups, their rules, the groups of each port, and port security; one default
    # group per project (a partial unique index).
    """
    CREATE TABLE security_groups (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '', is_default INTEGER NOT NULL DEFAULT 0,
        revision_number INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX security_groups_project ON security_groups(project_id);
    CREATE UNIQUE INDEX security_groups_default ON security_groups(project_id) WHERE is_default = 1;
    CREATE TABLE security_group_rules (
        id TEXT PRIMARY KEY,
        security_group_id TEXT NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
        project_id TEXT NOT NULL, direction TEXT NOT NULL, ethertype TEXT NOT NULL, protocol TEXT,
        port_range_min INTEGER, port_range_max INTEGER, remote_ip_prefix TEXT,
        remote_group_id TEXT REFERENCES security_groups(id) ON DELETE CASCADE,
        description TEXT NOT NULL DEFAULT '', revision_number INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX security_group_rules_group ON security_group_rules(security_group_id);
    CREATE INDEX security_group_rules_project ON security_group_rules(project_id);
    CREATE INDEX security_group_rules_remote ON security_group_rules(remote_group_id);
    CREATE TABLE port_security_groups (
        port_id TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
        security_group_id TEXT NOT NULL REFERENCES security_groups(id),
        PRIMARY KEY (port_id, security_group_id));
    CREATE INDEX port_security_groups_group ON port_security_groups(security_group_id);
    ALTER TABLE ports ADD COLUMN port_security_enabled INTEGER NOT NULL DEFAULT 1;
    """,
    # 9: external networks, routers (their ports are the ports whose device is the router), the
    # hosts serving routers, floating IPs.
    """
    ALTER TABLE networks ADD COLUMN router_external INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE router_hosts (host TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    CREATE TABLE routers (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, project_id TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '', admin_state_up INTEGER NOT NULL,
        enable_snat INTEGER NOT NULL DEFAULT 1, routes TEXT NOT NULL DEFAULT '[]',
        host TEXT REFERENCES router_hosts(host), revision_number INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX routers_project ON routers(project_id);
    CREATE INDEX routers_host ON routers(host);
    CREATE TABLE floatingips (
        id TEXT PRIMARY KEY, project_id TEXT NOT NULL,
        floating_network_id TEXT NOT NULL REFERENCES networks(id),
        floating_port_id TEXT NOT NULL REFERENCES ports(id),
        floating_ip_address TEXT NOT NULL,
        port_id TEXT REFERENCES ports(id) ON DELETE SET NULL, fixed_ip_address TEXT,
        router_id TEXT REFERENCES routers(id), description TEXT NOT NULL DEFAULT '',
        revision_number INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX floatingips_project ON floatingips(project_id);
    CREATE INDEX floatingips_port ON floatingips(port_id);
    CREATE INDEX floatingips_router ON floatingips(router_id);
    """,
    # 10: the hosts that enforce security groups (from their first ``security_for_host`` on): only
    # they are told of changes (a test-driver host filters nothing and is never told)
    """
    CREATE TABLE filtering_hosts (host TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    CREATE INDEX ports_binding_host ON ports(binding_host);
    """,
    # 11: an instance's ports in its project are read by the instance however many ports the
    # project has (sqlite, which keeps no statistics, walked the project's index instead)
    """
    DROP INDEX ports_device;
    CREATE INDEX ports_device ON ports(device_id, project_id);
    """,
    # 12: how many of each resource each project has, kept by TRIGGERS (a quota check reads
    # one row, however many ports a project of 10,000 instances has)
    """
    CREATE TABLE project_counts (
        project_id TEXT NOT NULL, resource TEXT NOT NULL, n BIGINT NOT NULL,
        PRIMARY KEY (project_id, resource));
    """
    + "".join(
        f"INSERT INTO project_counts (project_id, resource, n)"
        f" SELECT project_id, '{resource}', COUNT(*) FROM {table} GROUP BY project_id;\n"
        for resource, table in COUNTED.items()
    ),
]

# networks.shared, admin_state_up; subnets.enable_dhcp; ports.admin_state_up,
# created_for_instance: 0 or 1. subnets.allocation_pools, dns_nameservers, host_routes and
# ports.binding_vif_details, subnetpools.prefixes (merged, sorted): JSON. subnets.subnetpool_id:
# the pool its CIDR was given from, or NULL. ports.created_for_instance: allocate_for_instance made the
# port (deallocate_for_instance deletes it; a port the user made is only unbound).
# ip_pools: a subnet's allocation_pools as integer ranges; ip_free: the addresses of those no
# port holds, as disjoint ranges, kept by TRIGGERS. quotas: a project's limit of a resource
# (network, subnet, port, subnetpool; -1: unlimited) where it is not the default.
# security_groups.is_default: 1 for the project's group "default" (one per project).
# security_group_rules.protocol: as asked (a name, or a number as text; NULL: any);
# remote_ip_prefix as asked (host bits kept; ``normalized_cidr`` shows the network).
# port_security_groups: the groups a port is in; ports.port_security_enabled: 0 or 1.
# networks.router_external: 0 or 1. routers.enable_snat: the gateway's SNAT (0 or 1, kept while it
# has none); routes: its extra routes (JSON); host: the router host serving it (NULL: none yet).
# A router's gateway and interfaces are its ports (device_id the router; ROUTER_GATEWAY_OWNER,
# ROUTER_INTERFACE_OWNER). floatingips.floating_port_id: the port (FLOATINGIP_OWNER, of no project)
# holding its address; port_id, fixed_ip_address, router_id: its association (port_id NULL: none;
# the others are then stale and never shown).

# Keep ip_free (see MIGRATIONS[1]) in step with ip_allocations, whatever changes it (an ON
# DELETE CASCADE from ports too). Made at start (by dialect): a migration is split on ";", which
# a trigger's body holds. Taking x: a range starting at x shrinks (or goes); a range reaching over
# x from below splits. Releasing x, a pool address: it joins the range starting at x + 1 (or
# makes one of its own), then that one joins a range ending at x - 1.
_BELOW = (
    "(SELECT lo FROM ip_free WHERE subnet_id = {0}.subnet_id AND lo < {0}.ip_int ORDER BY lo DESC LIMIT 1)"
)
_TAKE = f"""
        INSERT INTO ip_free (subnet_id, lo, hi)
            SELECT subnet_id, NEW.ip_int + 1, hi FROM ip_free
            WHERE subnet_id = NEW.subnet_id AND lo = {_BELOW.format("NEW")} AND hi > NEW.ip_int;
        UPDATE ip_free SET hi = NEW.ip_int - 1
            WHERE subnet_id = NEW.subnet_id AND lo = {_BELOW.format("NEW")} AND hi >= NEW.ip_int;
        UPDATE ip_free SET lo = NEW.ip_int + 1
            WHERE subnet_id = NEW.subnet_id AND lo = NEW.ip_int AND hi > NEW.ip_int;
        DELETE FROM ip_free WHERE subnet_id = NEW.subnet_id AND lo = NEW.ip_int AND hi = NEW.ip_int;
"""
_IN_POOL = (
    "EXISTS (SELECT 1 FROM ip_pools"
    " WHERE subnet_id = OLD.subnet_id AND lo <= OLD.ip_int AND hi >= OLD.ip_int)"
)
_RELEASE = f"""
        UPDATE ip_free SET lo = OLD.ip_int WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int + 1;
        INSERT INTO ip_free (subnet_id, lo, hi) SELECT OLD.subnet_id, OLD.ip_int, OLD.ip_int
            WHERE NOT EXISTS (SELECT 1 FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int);
        UPDATE ip_free SET hi = (SELECT hi FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int)
            WHERE subnet_id = OLD.subnet_id AND lo = {_BELOW.format("OLD")} AND hi = OLD.ip_int - 1;
        DELETE FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = OLD.ip_int
            AND (SELECT hi FROM ip_free WHERE subnet_id = OLD.subnet_id AND lo = {_BELOW.format("OLD")})
                >= OLD.ip_int;
"""


# Keep project_counts (MIGRATIONS[12]) in step with each counted table, whatever changes it (an
# ON DELETE CASCADE too): a row counts for its project from its insert to its delete.
def _counting(resource: str) -> tuple[str, str]:
    """The statements counting the NEW row in, and the OLD row out, of its project's count of
    ``resource`` (an SQL expression)."""
    count_in = (
        f"INSERT INTO project_counts (project_id, resource, n) VALUES (NEW.project_id, {resource}, 1)"
        " ON CONFLICT (project_id, resource) DO UPDATE SET n = project_counts.n + 1;"
    )
    count_out = (
        f"UPDATE project_counts SET n = n - 1 WHERE project_id = OLD.project_id AND resource = {resource};"
    )
    return count_in, count_out


def _sqlite_counting(resource: str, table: str) -> list[str]:
    count_in, count_out = _counting(f"'{resource}'")
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_counted AFTER INSERT ON {table} BEGIN {count_in} END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_uncounted AFTER DELETE ON {table} BEGIN {count_out} END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_recounted AFTER UPDATE OF project_id ON {table}"
        f" BEGIN {count_out} {count_in} END",
    ]


_COUNT_ARGUMENT_IN, _COUNT_ARGUMENT_OUT = _counting("TG_ARGV[0]")
_POSTGRESQL_COUNTING = [
    "CREATE OR REPLACE FUNCTION project_counts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    f" IF TG_OP <> 'INSERT' THEN {_COUNT_ARGUMENT_OUT} END IF;"
    f" IF TG_OP <> 'DELETE' THEN {_COUNT_ARGUMENT_IN} END IF;"
    " RETURN NULL; END $$",
    *(
        f"CREATE OR REPLACE TRIGGER {table}_counted AFTER INSERT OR DELETE OR UPDATE OF project_id"
        f" ON {table} FOR EACH ROW EXECUTE FUNCTION project_counts('{resource}')"
        for resource, table in COUNTED.items()
    ),
]
TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS ip_allocations_take AFTER INSERT ON ip_allocations BEGIN {_TAKE} END",
        f"CREATE TRIGGER IF NOT EXISTS ip_allocations_release AFTER DELETE ON ip_allocations"
        f" WHEN {_IN_POOL} BEGIN {_RELEASE} END",
        *(
            statement
            for resource, table in COUNTED.items()
            for statement in _sqlite_counting(resource, table)
        ),
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION ip_allocations_take() RETURNS trigger LANGUAGE plpgsql"
        f" AS $$ BEGIN {_TAKE} RETURN NULL; END $$",
        "CREATE OR REPLACE TRIGGER ip_allocations_take AFTER INSERT ON ip_allocations"
        " FOR EACH ROW EXECUTE FUNCTION ip_allocations_take()",
        "CREATE OR REPLACE FUNCTION ip_allocations_release() RETURNS trigger LANGUAGE plpgsql"
        f" AS $$ BEGIN IF {_IN_POOL} THEN {_RELEASE} END IF; RETURN NULL; END $$",
        "CREATE OR REPLACE TRIGGER ip_allocations_release AFTER DELETE ON ip_allocations"
        " FOR EACH ROW EXECUTE FUNCTION ip_allocations_release()",
        *_POSTGRESQL_COUNTING,
    ],
}
"""The statements that make the triggers, by the store's dialect."""

NEXT_SEGMENT = "SELECT COALESCE(MAX(segmentation_id), 0) + 1 AS vni FROM networks"
"""The VNI a new network gets (inside the store's write lock: no two networks get one)."""

DEFAULT_NETWORK = "default"
"""The shared network of no project made at the first start; an instance asking for "auto"
goes there unless its project has exactly one network of its own."""
DEFAULT_SUBNET = "default-subnet"
DEFAULT_CIDR = "10.20.0.0/16"
DEFAULT_GATEWAY = "10.20.0.1"

UNBOUND = {
    "device_id": "",
    "device_owner": "",
    "binding_host": "",
    "binding_vif_type": "unbound",
    "binding_vif_details": "{}",
}
"""The columns of a port no instance holds."""
PORT_DEFAULTS: dict[str, Any] = {
    "name": "",
    "device_id": "",
    "device_owner": "",
    "admin_state_up": True,
    "binding_host": "",
    "binding_vif_type": "unbound",
    "binding_vif_details": "{}",
    "created_for_instance": False,
    "description": "",
    "revision_number": 1,
    "port_security_enabled": True,
}
"""A port's columns but id, network_id, project_id, mac_address and the timestamps, as the
schema defaults them."""

V = TypeVar("V", bound=Mapping[str, object])


@dataclass(frozen=True, slots=True)
class Kind(Generic[V]):
    """One resource kind: its name, the query (alias ``r``) giving its rows, the SQL condition
    under which every project sees a row, and the record a row of the query makes."""

    title: str
    select: str
    shared: str
    view: Callable[[dict[str, Any]], V]


def network_view(row: dict[str, Any]) -> Network:
    """A ``networks`` row, with ``subnets`` (a JSON list of ids), as Neutron shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "shared": bool(row["shared"]),
        "admin_state_up": bool(row["admin_state_up"]),
        "mtu": row["mtu"],
        "status": "ACTIVE",
        "router:external": bool(row["router_external"]),
        "provider:network_type": NETWORK_TYPE,
        "provider:segmentation_id": row["segmentation_id"],
        "subnets": from_json(row["subnets"], []),
        "description": row["description"],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def subnet_view(row: dict[str, Any]) -> Subnet:
    """A ``subnets`` row as Neutron shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "network_id": row["network_id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "cidr": row["cidr"],
        "ip_version": row["ip_version"],
        "gateway_ip": row["gateway_ip"],
        "allocation_pools": from_json(row["allocation_pools"], []),
        "enable_dhcp": bool(row["enable_dhcp"]),
        "dns_nameservers": from_json(row["dns_nameservers"], []),
        "host_routes": from_json(row["host_routes"], []),
        "subnetpool_id": row["subnetpool_id"],
        "description": row["description"],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def subnetpool_view(row: dict[str, Any]) -> SubnetPool:
    """A ``subnetpools`` row as Neutron shows it (no address scopes, quotas nor default pools)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "prefixes": from_json(row["prefixes"], []),
        "default_prefixlen": row["default_prefixlen"],
        "min_prefixlen": row["min_prefixlen"],
        "max_prefixlen": row["max_prefixlen"],
        "ip_version": 4,
        "shared": bool(row["shared"]),
        "is_default": False,
        "description": row["description"],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def port_view(row: dict[str, Any], fixed_ips: list[FixedIp], security_groups: list[str]) -> Port:
    """A ``ports`` row (every column) holding ``fixed_ips``, in ``security_groups``, as Neutron
    shows it (tagging and binding profiles are not built: always empty). A router's port is ACTIVE
    while up: no host reports it plugged (Neutron's L3 agent does), the net actor answers its plan."""
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
        "status": "ACTIVE"
        if up and row["device_id"] and (row["binding_host"] or row["device_owner"] in ROUTER_OWNERS)
        else "DOWN",
        "binding:host_id": row["binding_host"],
        "binding:vif_type": row["binding_vif_type"],
        "binding:vif_details": from_json(row["binding_vif_details"], {}),
        "binding:vnic_type": "normal",
        "binding:profile": {},
        "security_groups": sorted(security_groups),
        "port_security_enabled": bool(row["port_security_enabled"]),
        "description": row["description"],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


NETWORK = Kind(
    "Network",
    "SELECT r.*, (SELECT json_group_array(s.id) FROM subnets s WHERE s.network_id = r.id) AS subnets"
    " FROM networks r",
    "(r.shared = 1 OR r.router_external = 1)",
    network_view,
)
SUBNET = Kind(
    "Subnet", "SELECT r.* FROM subnets r JOIN networks n ON n.id = r.network_id", "n.shared = 1", subnet_view
)
SUBNETPOOL = Kind("Subnet pool", "SELECT r.* FROM subnetpools r", "r.shared = 1", subnetpool_view)
PORT = Kind(
    "Port",
    "SELECT r.*, (SELECT json_group_array(json_object('subnet_id', a.subnet_id, 'ip_address', a.ip_address))"
    "  FROM ip_allocations a WHERE a.port_id = r.id) AS fixed_ips,"
    " (SELECT json_group_array(g.security_group_id) FROM port_security_groups g WHERE g.port_id = r.id)"
    "  AS security_groups FROM ports r",
    "1 = 0",
    lambda row: port_view(row, from_json(row["fixed_ips"], []), from_json(row["security_groups"], [])),
)


def rule_view(row: dict[str, Any]) -> SecurityGroupRule:
    """A ``security_group_rules`` row as Neutron shows it."""
    prefix = row["remote_ip_prefix"]
    return {
        "id": row["id"],
        "security_group_id": row["security_group_id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "direction": row["direction"],
        "ethertype": row["ethertype"],
        "protocol": row["protocol"],
        "port_range_min": row["port_range_min"],
        "port_range_max": row["port_range_max"],
        "remote_ip_prefix": prefix,
        "remote_group_id": row["remote_group_id"],
        "normalized_cidr": str(ip_network(prefix, strict=False)) if prefix else None,
        "description": row["description"],
        "revision_number": row["revision_number"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def security_group_view(row: dict[str, Any]) -> SecurityGroup:
    """A ``security_groups`` row as Neutron shows it, its rules left for the caller to add."""
    return {
        "id": row["id"],
        "name": row["name"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "description": row["description"],
        "security_group_rules": [],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


SECURITY_GROUP = Kind("Security group", "SELECT r.* FROM security_groups r", "1 = 0", security_group_view)
"""A group's rules are read apart (``actors.net.secgroups``): PostgreSQL's ``json_object`` here
takes two pairs."""
SECURITY_GROUP_RULE = Kind(
    "Security group rule", "SELECT r.* FROM security_group_rules r", "1 = 0", rule_view
)


def router_view(row: dict[str, Any]) -> Router:
    """A ``routers`` row, with its gateway port's ``gateway_network_id`` and ``gateway_ips`` (a JSON
    list of fixed IPs; NULLs: no gateway), as Neutron shows it."""
    gateway = None
    if row["gateway_network_id"] is not None:
        gateway = {
            "network_id": row["gateway_network_id"],
            "enable_snat": bool(row["enable_snat"]),
            "external_fixed_ips": from_json(row["gateway_ips"], []),
        }
    return {
        "id": row["id"],
        "name": row["name"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "description": row["description"],
        "admin_state_up": bool(row["admin_state_up"]),
        "status": "ACTIVE",
        "external_gateway_info": gateway,
        "routes": from_json(row["routes"], []),
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def floatingip_view(row: dict[str, Any]) -> FloatingIp:
    """A ``floatingips`` row as Neutron shows it: associated (ACTIVE) while it has a port."""
    associated = row["port_id"] is not None
    return {
        "id": row["id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "floating_network_id": row["floating_network_id"],
        "floating_ip_address": row["floating_ip_address"],
        "port_id": row["port_id"],
        "fixed_ip_address": row["fixed_ip_address"] if associated else None,
        "router_id": row["router_id"] if associated else None,
        "status": "ACTIVE" if associated else "DOWN",
        "description": row["description"],
        "revision_number": row["revision_number"],
        "tags": [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


ROUTER = Kind(
    "Router",
    "SELECT r.*, g.network_id AS gateway_network_id,"
    " (SELECT json_group_array(json_object('subnet_id', a.subnet_id, 'ip_address', a.ip_address))"
    "  FROM ip_allocations a WHERE a.port_id = g.id) AS gateway_ips"
    f" FROM routers r LEFT JOIN ports g ON g.device_id = r.id AND g.device_owner = '{ROUTER_GATEWAY_OWNER}'",
    "1 = 0",
    router_view,
)
FLOATINGIP = Kind("Floating IP", "SELECT r.* FROM floatingips r", "1 = 0", floatingip_view)
