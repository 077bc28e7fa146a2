"""Roles (``/roles``) and role assignments, admins only (their reads for readers on the system
too): list, create, show, update (PATCH) and delete roles (with their assignments); grant (PUT),
revoke (DELETE) and check (HEAD, GET) a user's or a group's role on a project or on the system
(``/system/users/...``, ``/system/groups/...``); list the roles a user or group has on a project
or on the system, and every assignment (``/role_assignments``, the system's with
``scope.system``).

A role in a path may be named by its id or its name. With ``effective`` a group's assignments
are listed once per member user (with the group in ``links.membership``); with ``include_names``
each assignment's role, project, user and group carry their names, and the project, user and
group their domain (``openstack role assignment list --names``), as Keystone's do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id
from api.identity import IdentityAdmin, Label, RoleAssignment, Text
from api.identity import Role as Record
from bus import NotFound
from gateway.http import client, json_response, no_content
from gateway.identity.common import (
    ADMIN,
    ADMIN_READ,
    DOMAIN_ID,
    DOMAIN_NAME,
    V3,
    CollectionLinks,
    Filter,
    Flag,
    ResourceLinks,
    collection_links,
    is_set,
    self_link,
    url,
)
from gateway.routing import Body, OpenRequest, Query, Reply, Routes, given
from runtime.policy import SYSTEM_ROLE_PREFIX

ROLES = f"{V3}/roles"
USER_ROLES = f"{V3}/projects/{{project_id}}/users/{{user_id}}/roles"
GROUP_ROLES = f"{V3}/projects/{{project_id}}/groups/{{group_id}}/roles"
SYSTEM_USER_ROLES = f"{V3}/system/users/{{user_id}}/roles"
SYSTEM_GROUP_ROLES = f"{V3}/system/groups/{{group_id}}/roles"
RoleName = Annotated[
    Label,
    Meta(
        description=f"Not starting with {SYSTEM_ROLE_PREFIX!r} (what a role held on the system is called).",
        extra_json_schema={"not": {"pattern": f"^{SYSTEM_ROLE_PREFIX}"}},
    ),
]


class RoleCreate(OpenRequest):
    name: RoleName
    description: Text | None = None


class RoleCreateRequest(OpenRequest):
    role: RoleCreate


class RoleUpdate(OpenRequest):
    """What may change (absent: unchanged; a null description clears it)."""

    name: RoleName | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET


class RoleUpdateRequest(OpenRequest):
    role: RoleUpdate


class RoleQuery(Query):
    name: Annotated[Filter, Meta(description="Roles of this name.")] | UnsetType = UNSET


class Role(Body):
    id: str
    name: str
    description: str
    domain_id: None
    options: dict[str, Any]
    links: ResourceLinks


class RoleShown(Body):
    role: Role


class RoleList(Body):
    roles: list[Role]
    links: CollectionLinks


def role_view(request: web.Request, role_id: str, name: str, description: str = "") -> Role:
    return Role(
        id=role_id,
        name=name,
        description=description,
        domain_id=None,
        options={},
        links=self_link(request, "roles", role_id),
    )


def _shown(request: web.Request, role: Record) -> Role:
    return role_view(request, role["id"], role["name"], role["description"])


routes = Routes()


@routes.get(
    ROLES,
    "List roles (admin or system reader)",
    policy=ADMIN_READ,
    query=RoleQuery,
    replies=[Reply(200, RoleList, "By name.")],
)
async def list_roles(request: web.Request, query: RoleQuery) -> web.Response:
    roles = await client(request, IdentityAdmin).list_roles(name=given(query.name))
    return json_response(
        RoleList(roles=[_shown(request, role) for role in roles], links=collection_links(request))
    )


@routes.post(
    ROLES,
    "Create a role (admin)",
    policy=ADMIN,
    body=RoleCreateRequest,
    replies=[Reply(201, RoleShown, "The role.")],
    errors=(409,),
)
async def create_role(request: web.Request, body: RoleCreateRequest) -> web.Response:
    """409: a role of that name exists."""
    role = await client(request, IdentityAdmin).create_role(
        name=body.role.name, description=body.role.description or ""
    )
    return json_response(RoleShown(role=_shown(request, role)), status=201)


@routes.get(
    f"{ROLES}/{{role_id}}",
    "Show a role (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, RoleShown, "The role.")],
    errors=(404,),
)
async def get_role(request: web.Request) -> web.Response:
    role = await client(request, IdentityAdmin).get_role(role_id=request.match_info["role_id"])
    return json_response(RoleShown(role=_shown(request, role)))


@routes.patch(
    f"{ROLES}/{{role_id}}",
    "Update a role (admin)",
    policy=ADMIN,
    body=RoleUpdateRequest,
    replies=[Reply(200, RoleShown, "The role.")],
    errors=(404, 409),
)
async def update_role(request: web.Request, body: RoleUpdateRequest) -> web.Response:
    """409: the new name is taken."""
    asked = body.role
    role = await client(request, IdentityAdmin).update_role(
        role_id=request.match_info["role_id"],
        name=given(asked.name),
        description=None if asked.description is UNSET else asked.description or "",
    )
    return json_response(RoleShown(role=_shown(request, role)))


@routes.delete(
    f"{ROLES}/{{role_id}}",
    "Delete a role (admin)",
    policy=ADMIN,
    replies=[Reply(204, None, "Deleted, with its assignments on projects and on the system.")],
    errors=(404,),
)
async def delete_role(request: web.Request) -> web.Response:
    await client(request, IdentityAdmin).delete_role(role_id=request.match_info["role_id"])
    return no_content()


# -- assignments ------------------------------------------------------------------------------


class AssignedRole(Body):
    id: str
    name: Annotated[str, Meta(description="With include_names.")] | UnsetType = UNSET


class AssignedDomain(Body):
    id: str
    name: str


class AssignedEntity(Body):
    """A project, user or group: its id, and with include_names its name and domain."""

    id: str
    name: Annotated[str, Meta(description="With include_names.")] | UnsetType = UNSET
    domain: Annotated[AssignedDomain, Meta(description="With include_names.")] | UnsetType = UNSET


class AssignedSystem(Body):
    all: Literal[True]


class AssignmentScope(Body):
    """A project, or the system."""

    project: AssignedEntity | UnsetType = UNSET
    system: AssignedSystem | UnsetType = UNSET


class AssignmentLinks(Body):
    assignment: str
    membership: Annotated[str, Meta(description="An effective assignment through a group.")] | UnsetType = (
        UNSET
    )


class Assignment(Body):
    """A role on a project, of a user or of a group."""

    role: AssignedRole
    scope: AssignmentScope
    links: AssignmentLinks
    user: AssignedEntity | UnsetType = UNSET
    group: AssignedEntity | UnsetType = UNSET


class AssignmentList(Body):
    role_assignments: list[Assignment]
    links: CollectionLinks


class AssignmentQuery(Query):
    user_id: (
        Annotated[Filter, Meta(description="A user's (with effective: its groups' too).")] | UnsetType
    ) = msgspec.field(default=UNSET, name="user.id")
    group_id: Annotated[Filter, Meta(description="A group's (with effective: through it).")] | UnsetType = (
        msgspec.field(default=UNSET, name="group.id")
    )
    project_id: Annotated[Filter, Meta(description="On this project.")] | UnsetType = msgspec.field(
        default=UNSET, name="scope.project.id"
    )
    role_id: Annotated[Id, Meta(description="Of this role (its id or name).")] | UnsetType = msgspec.field(
        default=UNSET, name="role.id"
    )
    system: Annotated[Literal["all"], Meta(description="On the system.")] | UnsetType = msgspec.field(
        default=UNSET, name="scope.system"
    )
    effective: Flag | UnsetType = UNSET
    include_names: Flag | UnsetType = UNSET


_DOMAIN = AssignedDomain(id=DOMAIN_ID, name=DOMAIN_NAME)


def _named(entity_id: str, name: str | None, include_names: bool) -> AssignedEntity:
    if not include_names:
        return AssignedEntity(id=entity_id)
    return AssignedEntity(id=entity_id, name=name or "", domain=_DOMAIN)


def assignment_view(request: web.Request, item: RoleAssignment, include_names: bool) -> Assignment:
    """Keystone's view of an assignment: its role, project (or the system), user or group (with
    ``include_names`` their names, and the project's, user's and group's domain; a role has none:
    roles are global), and links to it."""
    user_id, group_id, via_group = item["user_id"], item["group_id"], item["via_group"]
    if user_id:
        actor = _named(user_id, item["user_name"], include_names)
    else:
        actor = _named(group_id or "", item["group_name"], include_names)
    if via_group:
        link_kind, link_id = "groups", via_group
    else:
        link_kind, link_id = ("users", user_id) if user_id else ("groups", group_id)
    project_id = item["project_id"]
    target: tuple[str, ...] = ("projects", project_id) if project_id else ("system",)
    if project_id:
        scope = AssignmentScope(project=_named(project_id, item["project_name"], include_names))
    else:
        scope = AssignmentScope(system=AssignedSystem(all=True))
    return Assignment(
        role=AssignedRole(id=item["role_id"], name=item["role_name"] if include_names else UNSET),
        scope=scope,
        links=AssignmentLinks(
            assignment=url(request, *target, link_kind, link_id or "", "roles", item["role_id"]),
            membership=url(request, "groups", via_group, "users", actor.id) if via_group else UNSET,
        ),
        user=actor if user_id else UNSET,
        group=UNSET if user_id else actor,
    )


@routes.get(
    f"{V3}/role_assignments",
    "List role assignments (admin or system reader)",
    policy=ADMIN_READ,
    query=AssignmentQuery,
    replies=[Reply(200, AssignmentList, "By project, role, user and group.")],
    errors=(404,),
)
async def list_role_assignments(request: web.Request, query: AssignmentQuery) -> web.Response:
    """404: ``role.id`` names no role. ``scope.system`` and ``scope.project.id`` together match
    nothing (an assignment is on one or the other)."""
    if query.system is not UNSET and query.project_id is not UNSET:
        found = []
    else:
        found = await client(request, IdentityAdmin).list_role_assignments(
            user_id=given(query.user_id),
            group_id=given(query.group_id),
            project_id=given(query.project_id),
            role_id=given(query.role_id),
            effective=is_set(query.effective),
            scope=None if query.system is UNSET else "system",
        )
    names = is_set(query.include_names)
    return json_response(
        AssignmentList(
            role_assignments=[assignment_view(request, item, names) for item in found],
            links=collection_links(request),
        )
    )


async def _assigned(request: web.Request, role_id: str | None = None) -> list[RoleAssignment]:
    """The direct assignments of the path's user or group on its project (of one role).

    :raises NotFound: no such project, user or group (or role).
    """
    match, admin = request.match_info, client(request, IdentityAdmin)
    project = (await admin.get_project(project_id=match["project_id"]))["id"]
    if "user_id" in match:
        who = {"user_id": (await admin.get_user(user_id=match["user_id"]))["id"]}
    else:
        who = {"group_id": (await admin.get_group(group_id=match["group_id"]))["id"]}
    return await admin.list_role_assignments(**who, project_id=project, role_id=role_id)


async def list_assigned_roles(request: web.Request) -> web.Response:
    """The roles of the user's (or group's) own assignments on the project; 404: no such project,
    user or group."""
    roles = [role_view(request, item["role_id"], item["role_name"]) for item in await _assigned(request)]
    return json_response(RoleList(roles=roles, links=collection_links(request)))


async def grant(request: web.Request) -> web.Response:
    """404: no such user (or group), project or role."""
    match, admin = request.match_info, client(request, IdentityAdmin)
    if "user_id" in match:
        await admin.grant_role(user=match["user_id"], project=match["project_id"], role=match["role_id"])
    else:
        await admin.grant_group_role(
            group=match["group_id"], project=match["project_id"], role=match["role_id"]
        )
    return no_content()


async def revoke(request: web.Request) -> web.Response:
    """404: no such user (or group), project, role or assignment. A user's tokens lose the role at once."""
    match, admin = request.match_info, client(request, IdentityAdmin)
    if "user_id" in match:
        await admin.revoke_role(user=match["user_id"], project=match["project_id"], role=match["role_id"])
    else:
        await admin.revoke_group_role(
            group=match["group_id"], project=match["project_id"], role=match["role_id"]
        )
    return no_content()


async def check(request: web.Request) -> web.Response:
    """204 when the user (or group) has the role on the project itself; 404 when not."""
    match = request.match_info
    if not await _assigned(request, match["role_id"]):
        raise NotFound(f"Could not find role assignment of {match['role_id']} on {match['project_id']}.")
    return no_content()


for _path, _whose in ((USER_ROLES, "a user"), (GROUP_ROLES, "a group")):
    routes.get(
        _path,
        f"List the roles {_whose} has on a project (admin or system reader)",
        policy=ADMIN_READ,
        replies=[Reply(200, RoleList, "Its direct assignments' roles.")],
        errors=(404,),
    )(list_assigned_roles)
    _role = f"{_path}/{{role_id}}"
    routes.put(
        _role,
        f"Grant {_whose} a role on a project (admin)",
        policy=ADMIN,
        replies=[Reply(204, None, "Granted.")],
        errors=(404,),
    )(grant)
    routes.delete(
        _role,
        f"Revoke {_whose}'s role on a project (admin)",
        policy=ADMIN,
        replies=[Reply(204, None, "Revoked.")],
        errors=(404,),
    )(revoke)
    for _method in ("HEAD", "GET"):
        routes.route(
            _method,
            _role,
            f"Check {_whose}'s role on a project (admin or system reader)",
            policy=ADMIN_READ,
            replies=[Reply(204, None, "Assigned.")],
            errors=(404,),
        )(check)


# -- roles on the system ----------------------------------------------------------------------


async def _system_assigned(request: web.Request, role_id: str | None = None) -> list[RoleAssignment]:
    """The direct assignments on the system of the path's user or group (of one role).

    :raises NotFound: no such user or group (or role).
    """
    match, admin = request.match_info, client(request, IdentityAdmin)
    if "user_id" in match:
        user = (await admin.get_user(user_id=match["user_id"]))["id"]
        return await admin.list_role_assignments(user_id=user, role_id=role_id, scope="system")
    group = (await admin.get_group(group_id=match["group_id"]))["id"]
    return await admin.list_role_assignments(group_id=group, role_id=role_id, scope="system")


async def list_system_roles(request: web.Request) -> web.Response:
    """The roles of the user's (or group's) own assignments on the system; 404: no such user or group."""
    found = await _system_assigned(request)
    roles = [role_view(request, item["role_id"], item["role_name"]) for item in found]
    return json_response(RoleList(roles=roles, links=collection_links(request)))


async def grant_system(request: web.Request) -> web.Response:
    """404: no such user (or group) or role."""
    match, admin = request.match_info, client(request, IdentityAdmin)
    if "user_id" in match:
        await admin.grant_system_role(user=match["user_id"], role=match["role_id"])
    else:
        await admin.grant_group_system_role(group=match["group_id"], role=match["role_id"])
    return no_content()


async def revoke_system(request: web.Request) -> web.Response:
    """404: no such user (or group), role or assignment. The user's system-scoped tokens lose the
    role at once (and end with the last one)."""
    match, admin = request.match_info, client(request, IdentityAdmin)
    if "user_id" in match:
        await admin.revoke_system_role(user=match["user_id"], role=match["role_id"])
    else:
        await admin.revoke_group_system_role(group=match["group_id"], role=match["role_id"])
    return no_content()


async def check_system(request: web.Request) -> web.Response:
    """204 when the user (or group) has the role on the system itself; 404 when not."""
    if not await _system_assigned(request, request.match_info["role_id"]):
        raise NotFound(f"Could not find role assignment of {request.match_info['role_id']} on the system.")
    return no_content()


for _path, _whose in ((SYSTEM_USER_ROLES, "a user"), (SYSTEM_GROUP_ROLES, "a group")):
    routes.get(
        _path,
        f"List the roles {_whose} has on the system (admin or system reader)",
        policy=ADMIN_READ,
        replies=[Reply(200, RoleList, "Its direct assignments' roles.")],
        errors=(404,),
    )(list_system_roles)
    _role = f"{_path}/{{role_id}}"
    routes.put(
        _role,
        f"Grant {_whose} a role on the system (admin)",
        policy=ADMIN,
        replies=[Reply(204, None, "Granted.")],
        errors=(404,),
    )(grant_system)
    routes.delete(
        _role,
        f"Revoke {_whose}'s role on the system (admin)",
        policy=ADMIN,
        replies=[Reply(204, None, "Revoked.")],
        errors=(404,),
    )(revoke_system)
    for _method in ("HEAD", "GET"):
        routes.route(
            _method,
            _role,
            f"Check {_whose}'s role on the system (admin or system reader)",
            policy=ADMIN_READ,
            replies=[Reply(204, None, "Assigned.")],
            errors=(404,),
        )(check_system)
