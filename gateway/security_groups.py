"""Security groups (Neutron's ``security-group`` extension) under ``/network/v2.0``:
``security-groups`` (GET, POST, and GET, PUT, DELETE one) and ``security-group-rules`` (GET, POST,
and GET, DELETE one), through the net actor's ``SecurityGroups`` API.

Listing a project's groups makes its default group first when it has none (as Neutron does). A
rule Neutron refuses (an unknown protocol, ports out of range or order, a bad CIDR or one of the
other ethertype, both a CIDR and a remote group) is a 400 with Neutron's message; a rule for the
same traffic as one the group has is a 409 ``SecurityGroupRuleExists``; a group or remote group the
project does not see is a 404 ``SecurityGroupNotFound``. Lists filter, trim, sort and page as the
network service's others do (``gateway.network``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id
from api.net import Cidr, Direction, EtherType, Net, PortNumber, Text
from api.net import SecurityGroup as SecurityGroupRecord
from api.net import SecurityGroupRule as SecurityGroupRuleRecord
from gateway.http import client, json_response, no_content
from gateway.network import (
    BASE,
    SORT_KEY,
    ListQuery,
    Numbers,
    ShowQuery,
    Texts,
    changes_of,
    listed,
    partial,
    sort_keys,
    trimmed,
)
from gateway.routing import Body, Link, OpenRequest, Reply, Request, Routes, Time

GROUPS = f"{BASE}/security-groups"
GROUP = f"{GROUPS}/{{security_group_id}}"
RULES = f"{BASE}/security-group-rules"
RULE = f"{RULES}/{{security_group_rule_id}}"

ProtocolAsked = Annotated[
    str | int | None,
    Meta(
        description="A name (tcp, udp, icmp, icmpv6, any...) or a number 0-255 (as text or a number); "
        "null or any: every protocol. Another is a 400."
    ),
]


# -- security groups --------------------------------------------------------------------------


class SecurityGroupCreate(Request):
    """A group of the caller's project, with Neutron's two egress rules (IPv4 and IPv6, anywhere).
    ``default`` is every project's own group's name: asking for it is a 409."""

    name: Text = ""
    description: Text = ""


class SecurityGroupCreateRequest(OpenRequest):
    security_group: SecurityGroupCreate


class SecurityGroupUpdate(Request):
    """What may change (absent: unchanged); a default group keeps its name (409)."""

    name: Text | UnsetType = UNSET
    description: Text | UnsetType = UNSET


class SecurityGroupUpdateRequest(OpenRequest):
    security_group: SecurityGroupUpdate


class SecurityGroupRule(Body):
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
    created_at: Time
    updated_at: Time


class SecurityGroup(Body):
    id: str
    name: str
    project_id: str
    tenant_id: str
    description: str
    security_group_rules: list[SecurityGroupRule]
    revision_number: int
    tags: list[str]
    created_at: Time
    updated_at: Time


class SecurityGroupQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    name: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    sort_key: Annotated[list[sort_keys(SecurityGroup)], SORT_KEY] = []


class SecurityGroupShown(Body):
    security_group: SecurityGroup


SecurityGroupFields = partial(SecurityGroup, "SecurityGroupFields")


class SecurityGroupTrimmed(Body):
    security_group: SecurityGroupFields  # as shown with ``fields``


class SecurityGroupList(Body):
    security_groups: list[SecurityGroupFields]  # made by partial: ``fields`` may trim it
    security_groups_links: list[Link] | UnsetType = UNSET


def rule_view(rule: SecurityGroupRuleRecord) -> SecurityGroupRule:
    return msgspec.convert(rule, SecurityGroupRule)


def group_view(group: SecurityGroupRecord) -> SecurityGroup:
    return msgspec.convert(group, SecurityGroup)


# -- rules --------------------------------------------------------------------------------------


class SecurityGroupRuleCreate(Request):
    """A rule of a group of the caller's project. Ports (ICMP: ``port_range_min`` the type,
    ``port_range_max`` the code) only with a protocol that has them; a remote CIDR (host bits are
    kept, ``normalized_cidr`` shows its network) of the rule's ethertype, or a remote group, not
    both."""

    security_group_id: Id
    direction: Direction
    ethertype: EtherType = "IPv4"
    protocol: ProtocolAsked = None
    port_range_min: PortNumber | None = None
    port_range_max: PortNumber | None = None
    remote_ip_prefix: Cidr | None = None
    remote_group_id: Id | None = None
    description: Text = ""


class SecurityGroupRuleCreateRequest(OpenRequest):
    security_group_rule: SecurityGroupRuleCreate


class SecurityGroupRuleQuery(ListQuery, forbid_unknown_fields=True):
    id: Texts = []
    project_id: Texts = []
    tenant_id: Texts = []
    description: Texts = []
    created_at: Texts = []
    updated_at: Texts = []
    revision_number: Numbers = []
    security_group_id: Texts = []
    direction: Texts = []
    ethertype: Texts = []
    protocol: Texts = []
    port_range_min: Numbers = []
    port_range_max: Numbers = []
    remote_ip_prefix: Texts = []
    remote_group_id: Texts = []
    sort_key: Annotated[list[sort_keys(SecurityGroupRule)], SORT_KEY] = []


class SecurityGroupRuleShown(Body):
    security_group_rule: SecurityGroupRule


SecurityGroupRuleFields = partial(SecurityGroupRule, "SecurityGroupRuleFields")


class SecurityGroupRuleTrimmed(Body):
    security_group_rule: SecurityGroupRuleFields


class SecurityGroupRuleList(Body):
    security_group_rules: list[SecurityGroupRuleFields]
    security_group_rules_links: list[Link] | UnsetType = UNSET


# -- routes -----------------------------------------------------------------------------------

routes = Routes()


@routes.get(
    GROUPS,
    "List security groups",
    query=SecurityGroupQuery,
    replies=[Reply(200, SecurityGroupList, "The project's security groups (its default one first made).")],
    errors=(404,),
)
async def list_security_groups(request: web.Request, query: SecurityGroupQuery) -> web.Response:
    name = query.name[0] if len(query.name) == 1 else None
    groups = await client(request, Net).list_security_groups(name=name)
    return json_response(listed(request, [group_view(g) for g in groups], query, "security_groups"))


@routes.post(
    GROUPS,
    "Create a security group",
    body=SecurityGroupCreateRequest,
    replies=[Reply(201, SecurityGroupShown, "The security group, with its two egress rules.")],
    errors=(409,),
)
async def create_security_group(request: web.Request, body: SecurityGroupCreateRequest) -> web.Response:
    """409: the name ``default``."""
    group = await client(request, Net).create_security_group(**msgspec.to_builtins(body.security_group))
    return json_response(SecurityGroupShown(security_group=group_view(group)), status=201)


@routes.get(
    GROUP,
    "Show a security group",
    query=ShowQuery,
    replies=[Reply(200, SecurityGroupTrimmed, "The security group (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_security_group(request: web.Request, query: ShowQuery) -> web.Response:
    group = await client(request, Net).get_security_group(
        security_group_id=request.match_info["security_group_id"]
    )
    return json_response({"security_group": trimmed(group_view(group), query)})


@routes.put(
    GROUP,
    "Update a security group",
    body=SecurityGroupUpdateRequest,
    replies=[Reply(200, SecurityGroupShown, "The security group.")],
    errors=(404, 409),
)
async def update_security_group(request: web.Request, body: SecurityGroupUpdateRequest) -> web.Response:
    """409: renaming a default group, or naming another ``default``."""
    group = await client(request, Net).update_security_group(
        security_group_id=request.match_info["security_group_id"], **changes_of(body.security_group)
    )
    return json_response(SecurityGroupShown(security_group=group_view(group)))


@routes.delete(
    GROUP,
    "Delete a security group",
    replies=[Reply(204, None, "Deleted, with its rules.")],
    errors=(404, 409),
)
async def delete_security_group(request: web.Request) -> web.Response:
    """409: a port is in it, or a member deletes its project's default group."""
    await client(request, Net).delete_security_group(
        security_group_id=request.match_info["security_group_id"]
    )
    return no_content()


@routes.get(
    RULES,
    "List security group rules",
    query=SecurityGroupRuleQuery,
    replies=[Reply(200, SecurityGroupRuleList, "The rules of the project's security groups, oldest first.")],
    errors=(404,),
)
async def list_security_group_rules(request: web.Request, query: SecurityGroupRuleQuery) -> web.Response:
    group = query.security_group_id[0] if len(query.security_group_id) == 1 else None
    rules = await client(request, Net).list_security_group_rules(security_group_id=group)
    return json_response(listed(request, [rule_view(r) for r in rules], query, "security_group_rules"))


@routes.post(
    RULES,
    "Create a security group rule",
    body=SecurityGroupRuleCreateRequest,
    replies=[Reply(201, SecurityGroupRuleShown, "The rule.")],
    errors=(400, 404, 409),
)
async def create_security_group_rule(
    request: web.Request, body: SecurityGroupRuleCreateRequest
) -> web.Response:
    """400: a rule Neutron refuses (see the body); 404: no such group or remote group the project
    sees; 409: the group has a rule for the same traffic."""
    asked: dict[str, Any] = msgspec.to_builtins(body.security_group_rule)
    rule = await client(request, Net).create_security_group_rule(**asked)
    return json_response(SecurityGroupRuleShown(security_group_rule=rule_view(rule)), status=201)


@routes.get(
    RULE,
    "Show a security group rule",
    query=ShowQuery,
    replies=[Reply(200, SecurityGroupRuleTrimmed, "The rule (its ``fields`` only, when given).")],
    errors=(404,),
)
async def show_security_group_rule(request: web.Request, query: ShowQuery) -> web.Response:
    rule = await client(request, Net).get_security_group_rule(
        security_group_rule_id=request.match_info["security_group_rule_id"]
    )
    return json_response({"security_group_rule": trimmed(rule_view(rule), query)})


@routes.delete(RULE, "Delete a security group rule", replies=[Reply(204, None, "Deleted.")], errors=(404,))
async def delete_security_group_rule(request: web.Request) -> web.Response:
    await client(request, Net).delete_security_group_rule(
        security_group_rule_id=request.match_info["security_group_rule_id"]
    )
    return no_content()


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
