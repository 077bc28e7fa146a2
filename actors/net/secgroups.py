"""Security groups (Neutron's): a project's groups and their rules, checked as Neutron checks
them, the default group each project gets on first use, and the groups a port is in.

A rule is kept as it was asked (its protocol a name or a number as text, its remote CIDR with any
host bits); what makes two rules the same (``_traffic``) is the traffic they match: the protocol's
number, the ports, the remote CIDR's network or the remote group. A group's creation, change,
rules added or deleted and deletion are published as ``security_group.<change>`` events whose state
is the group with its rules (its last, when deleted); a project's default group, made on first use,
has none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from ipaddress import ip_network
from typing import Any

from actors.net.quotas import check_quota
from actors.net.schema import SECURITY_GROUP, SECURITY_GROUP_RULE
from actors.net.state import Db, NetState, caller_project, insert, scope, update
from api.net import (
    COMPUTE_OWNER,
    DEFAULT_GROUP,
    SECURITY_CHANGED,
    Direction,
    EnforcedRule,
    EtherType,
    HostSecurity,
    PortSecurity,
    PortSecurityPortHasSecurityGroup,
    SecurityGroup,
    SecurityGroupCannotRemoveDefault,
    SecurityGroupCannotUpdateDefault,
    SecurityGroupDefaultAlreadyExists,
    SecurityGroupInUse,
    SecurityGroupNotFound,
    SecurityGroupRule,
    SecurityGroupRuleExists,
    SecurityGroupRuleNotFound,
    SecurityGroupRuleRequest,
    SecurityGroups,
)
from bus import Bus, InvalidRequest
from runtime.stamps import new_uuid, utcnow

PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58, "igmp": 2,
    "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17,
    "udplite": 136, "vrrp": 112,
}  # fmt: skip
"""Neutron's protocol names and their numbers; ``any`` (or 0) is every protocol."""
WITH_PORTS = frozenset({6, 17, 33, 132, 136})
"""The protocols whose rules take a port range: TCP, UDP, DCCP, SCTP, UDP-Lite."""
ICMP = frozenset({1, 58})
"""ICMP and ICMPv6, whose rules take a type (``port_range_min``) and a code (``port_range_max``)."""
IPV6_ONLY = frozenset({43, 44, 58, 59, 60})
"""Protocols no IPv4 rule may name."""
DEFAULT_RULES: list[tuple[Direction, EtherType, bool]] = [
    ("egress", "IPv4", False),
    ("egress", "IPv6", False),
    ("ingress", "IPv4", True),
    ("ingress", "IPv6", True),
]
"""Neutron's rules of a default group: (direction, ethertype, from the group's own members)."""


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message)


def _group_missing(group_id: str) -> SecurityGroupNotFound:
    return SecurityGroupNotFound(f"Security group {group_id} does not exist")


def protocol_of(asked: str | int | None) -> tuple[str | None, int | None]:
    """A rule's protocol as kept (a lower-case name, a number as text; None: any) and its number.

    :raises InvalidRequest: an unknown name, or a number outside 0-255.
    """
    if asked is None or str(asked).lower() == "any":
        return None, None
    text = str(asked).lower()
    if text.lstrip("-").isdigit():
        number = int(text)
        if 0 <= number <= 255:
            return (None, None) if number == 0 else (str(number), number)
    elif text in PROTOCOLS:
        return text, PROTOCOLS[text]
    raise _invalid(
        f"Security group rule protocol {asked} not supported. Only protocol values"
        f" {[None, 'any', *PROTOCOLS]} and integer representations [0 to 255] are supported."
    )


def check_ports(protocol: str | None, number: int | None, low: int | None, high: int | None) -> None:
    """Neutron's checks of a rule's port range (an ICMP type and code for ICMP).

    :raises InvalidRequest: a port outside 0-65535, ports without a protocol, a range out of order
        (or half given, or 0) for a protocol with ports, an ICMP type or code past 255 or a code
        without a type, a range for another protocol.
    """
    for port in (low, high):
        if port is not None and not 0 <= port <= 65535:
            raise _invalid(f"Invalid value for port {port}")
    if low is None and high is None:
        return
    if number is None:
        raise _invalid("Must also specify protocol if port range is given.")
    if number in WITH_PORTS:
        if 0 in (low, high):
            raise _invalid("Invalid value for port 0")
        if low is None or high is None or low > high:
            raise _invalid("For TCP/UDP protocols, port_range_min must be <= port_range_max")
    elif number in ICMP:
        for value, field, attribute in ((low, "type", "port_range_min"), (high, "code", "port_range_max")):
            if value is not None and not 0 <= value <= 255:
                raise _invalid(f"Invalid value for ICMP {field} ({attribute}) {value}. It must be 0 to 255.")
        if low is None:
            raise _invalid(
                f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) is missing."
            )
    elif low != high:
        raise _invalid(
            f"Invalid protocol {protocol} for port range, only supported for TCP, UDP, UDPLITE, SCTP"
            " and DCCP."
        )


def check_remote(ethertype: EtherType, prefix: str | None, remote_group_id: str | None) -> str | None:
    """The network of a rule's remote CIDR (None when it has none).

    :raises InvalidRequest: both a CIDR and a group, a CIDR that does not parse, or one of the
        other IP version than ``ethertype``.
    """
    if prefix is not None and remote_group_id is not None:
        raise _invalid("Only remote_ip_prefix or remote_group_id may be provided.")
    if prefix is None:
        return None
    try:
        network = ip_network(prefix, strict=False)
    except ValueError:
        raise _invalid(f"Invalid CIDR {prefix} given as IP prefix.") from None
    if f"IPv{network.version}" != ethertype:
        raise _invalid(f"Conflicting value ethertype {ethertype} for CIDR {prefix}")
    return str(network)


def _traffic(rule: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two rules of a group the same: the traffic they match."""
    prefix = rule["remote_ip_prefix"]
    return (
        rule["direction"],
        rule["ethertype"],
        protocol_of(rule["protocol"])[1],
        rule["port_range_min"],
        rule["port_range_max"],
        str(ip_network(prefix, strict=False)) if prefix else None,
        rule["remote_group_id"],
    )


async def _insert_rule(db: Db, rule: dict[str, Any]) -> SecurityGroupRule:
    """Insert a checked rule (every column but id and timestamps); answer its record.

    :raises SecurityGroupRuleExists: its group has a rule for the same traffic.
    """
    existing = await db.fetchall(
        "SELECT * FROM security_group_rules WHERE security_group_id = ?", (rule["security_group_id"],)
    )
    for other in existing:
        if _traffic(other) == _traffic(rule):
            raise SecurityGroupRuleExists(f"Security group rule already exists. Rule id is {other['id']}.")
    row = await insert(db, "security_group_rules", {**rule, "id": new_uuid(), "revision_number": 1})
    assert row is not None  # no ``unless``: always inserted
    return SECURITY_GROUP_RULE.view(row)


async def _insert_group(db: Db, project: str, name: str, description: str, default: bool) -> str:
    """Insert a group with Neutron's rules (a default group's four, another's two egress); its id."""
    group_id = new_uuid()
    row = {"id": group_id, "name": name, "project_id": project, "description": description}
    await insert(db, "security_groups", {**row, "is_default": default})
    for direction, ethertype, from_members in DEFAULT_RULES:
        if default or not from_members:
            rule = {"security_group_id": group_id, "project_id": project, "direction": direction}
            rule |= {"ethertype": ethertype, "protocol": None, "port_range_min": None, "port_range_max": None}
            rule |= {"remote_ip_prefix": None, "description": ""}
            await _insert_rule(db, {**rule, "remote_group_id": group_id if from_members else None})
    return group_id


async def default_group(db: Db, project: str) -> str:
    """The id of the project's default group, made now (with its four rules) if it has none."""
    found = await db.fetchone(
        "SELECT id FROM security_groups WHERE project_id = ? AND is_default = 1", (project,)
    )
    if found:
        return str(found["id"])
    return await _insert_group(db, project, DEFAULT_GROUP, "Default security group", True)


async def join_groups(db: Db, port: Mapping[str, Any], asked: list[str] | None) -> list[str]:
    """Put a new port in the ``asked`` groups or, when None, in its project's default group (in
    none: a port without port security, a ``network:`` port, a port of no project); the groups.

    :raises SecurityGroupNotFound: a group not of the port's project.
    :raises InvalidRequest: groups asked with port security disabled.
    """
    if asked is None:
        own = port["port_security_enabled"] and port["project_id"]
        own = own and not str(port["device_owner"]).startswith("network:")
        asked = [await default_group(db, port["project_id"])] if own else []
    await set_groups(db, port, asked)
    return asked


async def set_groups(db: Db, port: Mapping[str, Any], groups: list[str]) -> None:
    """Make ``groups`` the port's (a port of no project may be in any group).

    :raises SecurityGroupNotFound: a group not of the port's project.
    :raises InvalidRequest: groups, and the port has port security disabled.
    """
    if groups and not port["port_security_enabled"]:
        raise _invalid(
            "Port security must be enabled and port must have an IP address in order to use security groups."
        )
    for group_id in groups:
        found = await db.fetchone("SELECT project_id FROM security_groups WHERE id = ?", (group_id,))
        if found is None or (port["project_id"] and found["project_id"] != port["project_id"]):
            raise _group_missing(group_id)
    await db.execute("DELETE FROM port_security_groups WHERE port_id = ?", (port["id"],))
    for group_id in dict.fromkeys(groups):
        await db.execute(
            "INSERT INTO port_security_groups (port_id, security_group_id) VALUES (?, ?)",
            (port["id"], group_id),
        )


async def change_port_security(
    db: Db, port: Mapping[str, Any], groups: list[str] | None, enabled: bool | None
) -> None:
    """Apply an update's ``security_groups`` (None: unchanged), checked against its
    ``port_security_enabled`` (None: unchanged; the caller writes that column).

    :raises SecurityGroupNotFound: a group not of the port's project.
    :raises InvalidRequest: groups asked with port security disabled.
    :raises PortSecurityPortHasSecurityGroup: port security disabled on a port left in groups.
    """
    now = {**port, "port_security_enabled": port["port_security_enabled"] if enabled is None else enabled}
    if groups is not None:
        await set_groups(db, now, groups)
    elif enabled is False and port["security_groups"]:
        raise PortSecurityPortHasSecurityGroup(
            "Port has security group associated. Cannot disable port security or ip address until"
            " security group is removed"
        )


Change = tuple[set[str], set[str]]
"""The groups a change touched and the hosts to tell of it."""


async def hosts_filtering(db: Db, groups: Collection[str]) -> set[str]:
    """The hosts enforcing security groups (``filtering_hosts``) that have ports in ``groups`` or
    in groups with a rule naming one of them as remote: one indexed look per such host, however
    many ports the groups have."""
    if not groups:
        return set()
    marks = ", ".join("?" * len(groups))
    rows = await db.fetchall(
        "SELECT f.host FROM filtering_hosts f WHERE EXISTS (SELECT 1 FROM ports p"
        " JOIN port_security_groups g ON g.port_id = p.id WHERE p.binding_host = f.host"
        f" AND (g.security_group_id IN ({marks}) OR g.security_group_id IN"
        f" (SELECT security_group_id FROM security_group_rules WHERE remote_group_id IN ({marks}))))",
        [*groups, *groups],
    )
    return {row["host"] for row in rows}


async def filtering(db: Db, hosts: Collection[str]) -> set[str]:
    """Those of ``hosts`` that enforce security groups."""
    if not hosts:
        return set()
    marks = ", ".join("?" * len(hosts))
    rows = await db.fetchall(f"SELECT host FROM filtering_hosts WHERE host IN ({marks})", list(hosts))
    return {row["host"] for row in rows}


async def ports_changed(db: Db, ports: Iterable[Mapping[str, Any]]) -> Change:
    """The groups of ``ports`` (records, as they were or are) and the hosts to tell: those
    ``hosts_filtering`` them, and the ports' own if they enforce security groups."""
    ports = list(ports)
    groups = {group for port in ports for group in port["security_groups"]}
    own = {port["binding:host_id"] for port in ports} - {""}
    return groups, await hosts_filtering(db, groups) | await filtering(db, own)


async def tell(bus: Bus, *changes: Change) -> None:
    """Publish ``SECURITY_CHANGED`` to each host of ``changes`` (after their transaction)."""
    groups = sorted({group for touched, _ in changes for group in touched})
    for host in sorted({host for _, hosts in changes for host in hosts}):
        await SECURITY_CHANGED.publish(bus, {"groups": groups}, host=host)


async def filters_from_now_on(state: NetState, host: str) -> None:
    """``host`` enforces security groups: from now on it is told of the changes that concern it
    (``filtering_hosts``; a read when it is already, a write the first time)."""
    if await state.store.fetchone("SELECT 1 FROM filtering_hosts WHERE host = ?", (host,)) is None:
        async with state.writing() as db:
            await db.execute(
                "INSERT INTO filtering_hosts (host, created_at) VALUES (?, ?) ON CONFLICT (host) DO NOTHING",
                (host, utcnow()),
            )


async def host_security(db: Db, host: str, arriving: Sequence[str] = ()) -> HostSecurity:
    """What ``host`` enforces (``api.net.NetForNodes.security_for_host``): its instance ports and
    those of the ``arriving`` instances, their groups' rules, and the members of the remote groups
    those name."""
    devices = ", ".join("?" * len(arriving))
    ports = await db.fetchall(
        "SELECT id, network_id, mac_address, port_security_enabled FROM ports"
        f" WHERE (binding_host = ?{f' OR device_id IN ({devices})' if arriving else ''})"
        " AND device_owner = ? ORDER BY rowid",
        (host, *arriving, COMPUTE_OWNER),
    )
    shown: list[PortSecurity] = []
    remote: set[str] = set()
    for port in ports:
        rules = await db.fetchall(
            "SELECT r.* FROM security_group_rules r JOIN port_security_groups g"
            " ON g.security_group_id = r.security_group_id WHERE g.port_id = ? ORDER BY r.rowid",
            (port["id"],),
        )
        enforced = [_enforced(rule) for rule in rules]
        remote |= {rule["remote_group_id"] for rule in enforced if rule["remote_group_id"]}
        shown.append(
            {
                "port_id": port["id"],
                "network_id": port["network_id"],
                "mac_address": port["mac_address"],
                "fixed_ips": await _port_addresses(db, port["id"]),
                "port_security_enabled": bool(port["port_security_enabled"]),
                "rules": enforced,
            }
        )
    members = {group: await _member_addresses(db, group) for group in sorted(remote)}
    return {"ports": shown, "members": members}


async def _port_addresses(db: Db, port_id: str) -> list[str]:
    """The fixed IPs of a port."""
    rows = await db.fetchall(
        "SELECT ip_address FROM ip_allocations WHERE port_id = ? ORDER BY ip_address", (port_id,)
    )
    return [row["ip_address"] for row in rows]


async def _member_addresses(db: Db, group_id: str) -> list[str]:
    """The fixed IPs of the ports in a group."""
    rows = await db.fetchall(
        "SELECT DISTINCT a.ip_address FROM ip_allocations a JOIN port_security_groups g"
        " ON g.port_id = a.port_id WHERE g.security_group_id = ? ORDER BY a.ip_address",
        (group_id,),
    )
    return [row["ip_address"] for row in rows]


def _enforced(rule: Mapping[str, Any]) -> EnforcedRule:
    """A rule row as a node enforces it."""
    prefix = rule["remote_ip_prefix"]
    return {
        "direction": rule["direction"],
        "ethertype": rule["ethertype"],
        "protocol": protocol_of(rule["protocol"])[1],
        "port_range_min": rule["port_range_min"],
        "port_range_max": rule["port_range_max"],
        "remote_cidr": str(ip_network(prefix, strict=False)) if prefix else None,
        "remote_group_id": rule["remote_group_id"],
    }


def group_names_query(devices: int, *, scoped: bool) -> str:
    """The security group names of ``devices`` devices' ports (``scoped``: of a project's ports and
    groups alone). The devices' index leads: the projects' indexes of ports and of groups are kept
    out of the choice (``|| ''``), since sqlite, which keeps no statistics, would rather read every
    port of the project (or of its default group) than a page's hundred devices'."""
    seen = " AND p.project_id || '' = ? AND g.project_id || '' = ?" if scoped else ""
    return (
        "SELECT p.device_id, g.name FROM ports p"
        " JOIN port_security_groups pg ON pg.port_id = p.id"
        " JOIN security_groups g ON g.id = pg.security_group_id"
        f" WHERE p.device_id IN ({', '.join('?' * devices) or 'NULL'}){seen}"
        " ORDER BY p.rowid, g.id"
    )


class SecurityGroupServant(SecurityGroups):
    """Serves ``api.net.SecurityGroups``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_security_group(self, *, name: str = "", description: str = "") -> SecurityGroup:
        if name == DEFAULT_GROUP:
            raise SecurityGroupDefaultAlreadyExists("Default security group already exists.")
        project = caller_project()
        async with self.state.writing() as db:
            if project:
                await default_group(db, project)
            await check_quota(db, "security_group", project)
            group_id = await _insert_group(db, project, name, description, False)
            made = await self._group(db, group_id, None)
        await self.state.announce("security_group.created", made)
        return made

    async def list_security_groups(self, *, name: str | None = None) -> list[SecurityGroup]:
        project, own = scope(), caller_project()  # an admin sees every project's, and has its own
        if own and not await self.state.store.fetchone(
            "SELECT 1 FROM security_groups WHERE project_id = ? AND is_default = 1", (own,)
        ):
            async with self.state.writing() as db:
                await default_group(db, own)
        where, params = ("r.name = ?", [name]) if name is not None else ("1 = 1", [])
        groups = await self.state.load(SECURITY_GROUP, where, params, scope=project)
        rules = await self.state.load(SECURITY_GROUP_RULE, "1 = 1", [], scope=project)
        return [_with_rules(group, rules) for group in groups]

    async def group_names_by_device(self, *, device_ids: list[str]) -> dict[str, list[str]]:
        project = scope()
        rows = await self.state.store.fetchall(
            group_names_query(len(device_ids), scoped=project is not None),
            [*device_ids, *([project] * 2 if project is not None else [])],
        )
        names: dict[str, list[str]] = {}
        for row in rows:
            device = names.setdefault(row["device_id"], [])
            if row["name"] not in device:
                device.append(row["name"])
        return names

    async def get_security_group(self, *, security_group_id: str) -> SecurityGroup:
        return await self._group(self.state.store, security_group_id, scope())

    async def update_security_group(
        self, *, security_group_id: str, name: str | None = None, description: str | None = None
    ) -> SecurityGroup:
        project = scope()
        async with self.state.writing() as db:
            row = await self._row(db, security_group_id, project)
            if name is not None and name != row["name"]:
                if row["is_default"]:
                    raise SecurityGroupCannotUpdateDefault("Updating default security group not allowed.")
                if name == DEFAULT_GROUP:
                    raise SecurityGroupDefaultAlreadyExists("Default security group already exists.")
            await update(db, "security_groups", security_group_id, {"name": name, "description": description})
            changed = await self._group(db, security_group_id, None)
        await self.state.announce("security_group.updated", changed)
        return changed

    async def delete_security_group(self, *, security_group_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            row = await self._row(db, security_group_id, project)
            if row["is_default"] and project is not None:
                raise SecurityGroupCannotRemoveDefault(
                    "Insufficient rights for removing default security group."
                )
            if await db.fetchone(
                "SELECT 1 FROM port_security_groups WHERE security_group_id = ? LIMIT 1", (security_group_id,)
            ):
                raise SecurityGroupInUse(f"Security Group {security_group_id} in use.")
            hosts = await hosts_filtering(db, [security_group_id])
            last = await self._group(db, security_group_id, None)
            await db.execute("DELETE FROM security_groups WHERE id = ?", (security_group_id,))
        await tell(self.state.bus, ({security_group_id}, hosts))
        await self.state.announce("security_group.deleted", last)

    async def create_security_group_rule(
        self,
        *,
        security_group_id: str,
        direction: Direction,
        ethertype: EtherType = "IPv4",
        protocol: str | int | None = None,
        port_range_min: int | None = None,
        port_range_max: int | None = None,
        remote_ip_prefix: str | None = None,
        remote_group_id: str | None = None,
        description: str = "",
    ) -> SecurityGroupRule:
        asked: SecurityGroupRuleRequest = {"security_group_id": security_group_id, "direction": direction}
        asked |= {"ethertype": ethertype, "protocol": protocol, "description": description}
        asked |= {"port_range_min": port_range_min, "port_range_max": port_range_max}
        asked |= {"remote_ip_prefix": remote_ip_prefix, "remote_group_id": remote_group_id}
        return (await self.create_security_group_rules(rules=[asked]))[0]

    async def create_security_group_rules(
        self, *, rules: list[SecurityGroupRuleRequest]
    ) -> list[SecurityGroupRule]:
        project = scope()
        async with self.state.writing() as db:
            made = []
            for asked in rules:
                checked = await self._checked(db, asked, project)
                await check_quota(db, "security_group_rule", checked["project_id"])
                made.append(await _insert_rule(db, checked))
            groups = {rule["security_group_id"] for rule in made}
            hosts = await hosts_filtering(db, groups)
            changed = [await self._group(db, group, None) for group in sorted(groups)]
        await tell(self.state.bus, (groups, hosts))
        for group in changed:
            await self.state.announce("security_group.rule_added", group)
        return made

    async def list_security_group_rules(
        self, *, security_group_id: str | None = None
    ) -> list[SecurityGroupRule]:
        where, params = (
            ("1 = 1", []) if security_group_id is None else ("r.security_group_id = ?", [security_group_id])
        )
        return await self.state.load(SECURITY_GROUP_RULE, where, params, scope=scope())

    async def get_security_group_rule(self, *, security_group_rule_id: str) -> SecurityGroupRule:
        rule_id = security_group_rule_id
        found = await self.state.load(SECURITY_GROUP_RULE, "r.id = ?", [rule_id], scope=scope())
        if not found:
            raise SecurityGroupRuleNotFound(f"Security group rule {rule_id} does not exist")
        return found[0]

    async def delete_security_group_rule(self, *, security_group_rule_id: str) -> None:
        rule = await self.get_security_group_rule(security_group_rule_id=security_group_rule_id)
        group = rule["security_group_id"]
        async with self.state.writing() as db:
            await db.execute("DELETE FROM security_group_rules WHERE id = ?", (rule["id"],))
            hosts = await hosts_filtering(db, [group])
            changed = await self._group(db, group, None)
        await tell(self.state.bus, ({group}, hosts))
        await self.state.announce("security_group.rule_deleted", changed)

    async def _checked(self, db: Db, asked: SecurityGroupRuleRequest, project: str | None) -> dict[str, Any]:
        """The columns of the rule ``asked`` (of a group ``project`` sees), checked as Neutron does.

        :raises InvalidRequest: as ``create_security_group_rule``.
        :raises SecurityGroupNotFound: the group or the remote group is none ``project`` sees.
        """
        group = await self._row(db, asked["security_group_id"], project)
        ethertype = asked.get("ethertype", "IPv4")
        protocol, number = protocol_of(asked.get("protocol"))
        if number in IPV6_ONLY and ethertype == "IPv4":
            raise _invalid(f"Invalid ethertype {ethertype} for protocol {protocol}.")
        low, high = asked.get("port_range_min"), asked.get("port_range_max")
        check_ports(protocol, number, low, high)
        remote_group_id = asked.get("remote_group_id")
        check_remote(ethertype, asked.get("remote_ip_prefix"), remote_group_id)
        if remote_group_id is not None:
            await self._row(db, remote_group_id, project)
        return {
            "security_group_id": group["id"],
            "project_id": group["project_id"],
            "direction": asked["direction"],
            "ethertype": ethertype,
            "protocol": protocol,
            "port_range_min": low,
            "port_range_max": high,
            "remote_ip_prefix": asked.get("remote_ip_prefix"),
            "remote_group_id": remote_group_id,
            "description": asked.get("description", ""),
        }

    async def _row(self, db: Db, group_id: str, project: str | None) -> dict[str, Any]:
        """A group's row ``project`` sees (None: any).

        :raises SecurityGroupNotFound: none.
        """
        visible = "" if project is None else " AND project_id = ?"
        params = (group_id,) if project is None else (group_id, project)
        row = await db.fetchone(f"SELECT * FROM security_groups WHERE id = ?{visible}", params)
        if row is None:
            raise _group_missing(group_id)
        return dict(row)

    async def _group(self, db: Db, group_id: str, project: str | None) -> SecurityGroup:
        """One group ``project`` sees, with its rules.

        :raises SecurityGroupNotFound: none.
        """
        found = await self.state.load(SECURITY_GROUP, "r.id = ?", [group_id], db, project)
        if not found:
            raise _group_missing(group_id)
        rules = await self.state.load(SECURITY_GROUP_RULE, "r.security_group_id = ?", [group_id], db)
        return _with_rules(found[0], rules)


def _with_rules(group: SecurityGroup, rules: list[SecurityGroupRule]) -> SecurityGroup:
    """``group`` with those of ``rules`` that are its own."""
    own = [rule for rule in rules if rule["security_group_id"] == group["id"]]
    return {**group, "security_group_rules": own}
