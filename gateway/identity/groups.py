"""Groups (``/groups``, admins): list, create, show, update (PATCH), delete; their members
(``/groups/{group_id}/users/{user_id}``: PUT adds, DELETE removes, HEAD and GET check) and a
user's groups (``/users/{user_id}/groups``). A user's roles on a project are its own and its
groups'."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.identity import DomainId, IdentityAdmin, Label, Text
from api.identity import Group as Record
from bus import NotFound
from gateway.http import client, json_response, no_content
from gateway.identity.common import (
    ADMIN,
    ADMIN_READ,
    V3,
    CollectionLinks,
    Filter,
    ResourceLinks,
    collection_links,
    other_domain,
    self_link,
)
from gateway.identity.users import UserList, user_list
from gateway.routing import Body, OpenRequest, Query, Reply, Routes, given

GROUPS = f"{V3}/groups"
GROUP = f"{GROUPS}/{{group_id}}"
MEMBER = f"{GROUP}/users/{{user_id}}"


class GroupCreate(OpenRequest):
    name: Label
    description: Text | None = None
    domain_id: DomainId | UnsetType = UNSET


class GroupCreateRequest(OpenRequest):
    group: GroupCreate


class GroupUpdate(OpenRequest):
    """What may change (absent: unchanged; a null description clears it)."""

    name: Label | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    domain_id: Annotated[DomainId, Meta(description="A domain cannot be changed.")] | UnsetType = UNSET


class GroupUpdateRequest(OpenRequest):
    group: GroupUpdate


class GroupQuery(Query):
    name: Annotated[Filter, Meta(description="Groups of this name.")] | UnsetType = UNSET
    domain_id: Annotated[Filter, Meta(description="Groups of this domain (default).")] | UnsetType = UNSET


class Group(Body):
    id: str
    name: str
    description: str
    domain_id: str
    links: ResourceLinks


class GroupShown(Body):
    group: Group


class GroupList(Body):
    groups: list[Group]
    links: CollectionLinks


def group_view(request: web.Request, group: Record) -> Group:
    return Group(
        id=group["id"],
        name=group["name"],
        description=group["description"],
        domain_id=group["domain_id"],
        links=self_link(request, "groups", group["id"]),
    )


def group_list(request: web.Request, groups: list[Record]) -> GroupList:
    return GroupList(groups=[group_view(request, group) for group in groups], links=collection_links(request))


routes = Routes()


@routes.get(
    GROUPS,
    "List groups (admin or system reader)",
    policy=ADMIN_READ,
    query=GroupQuery,
    replies=[Reply(200, GroupList, "By name.")],
)
async def list_groups(request: web.Request, query: GroupQuery) -> web.Response:
    if other_domain(query.domain_id):
        return json_response(group_list(request, []))
    groups = await client(request, IdentityAdmin).list_groups(name=given(query.name))
    return json_response(group_list(request, groups))


@routes.post(
    GROUPS,
    "Create a group (admin)",
    policy=ADMIN,
    body=GroupCreateRequest,
    replies=[Reply(201, GroupShown, "The group.")],
    errors=(409,),
)
async def create_group(request: web.Request, body: GroupCreateRequest) -> web.Response:
    """409: a group of that name exists."""
    asked = body.group
    group = await client(request, IdentityAdmin).create_group(
        name=asked.name, description=asked.description or ""
    )
    return json_response(GroupShown(group=group_view(request, group)), status=201)


@routes.get(
    GROUP,
    "Show a group (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, GroupShown, "The group.")],
    errors=(404,),
)
async def get_group(request: web.Request) -> web.Response:
    group = await client(request, IdentityAdmin).get_group(group_id=request.match_info["group_id"])
    return json_response(GroupShown(group=group_view(request, group)))


@routes.patch(
    GROUP,
    "Update a group (admin)",
    policy=ADMIN,
    body=GroupUpdateRequest,
    replies=[Reply(200, GroupShown, "The group.")],
    errors=(404, 409),
)
async def update_group(request: web.Request, body: GroupUpdateRequest) -> web.Response:
    """409: the new name is taken."""
    asked = body.group
    group = await client(request, IdentityAdmin).update_group(
        group_id=request.match_info["group_id"],
        name=given(asked.name),
        description=None if asked.description is UNSET else asked.description or "",
    )
    return json_response(GroupShown(group=group_view(request, group)))


@routes.delete(
    GROUP,
    "Delete a group (admin)",
    policy=ADMIN,
    replies=[Reply(204, None, "Deleted, with its memberships and role assignments.")],
    errors=(404,),
)
async def delete_group(request: web.Request) -> web.Response:
    await client(request, IdentityAdmin).delete_group(group_id=request.match_info["group_id"])
    return no_content()


@routes.get(
    f"{GROUP}/users",
    "List a group's users (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, UserList, "Its members.")],
    errors=(404,),
)
async def list_group_users(request: web.Request) -> web.Response:
    users = await client(request, IdentityAdmin).list_group_users(group_id=request.match_info["group_id"])
    return json_response(user_list(request, users))


@routes.get(
    f"{V3}/users/{{user_id}}/groups",
    "List a user's groups (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, GroupList, "The groups it is a member of.")],
    errors=(404,),
)
async def list_user_groups(request: web.Request) -> web.Response:
    groups = await client(request, IdentityAdmin).list_user_groups(user_id=request.match_info["user_id"])
    return json_response(group_list(request, groups))


@routes.put(
    MEMBER,
    "Add a user to a group (admin)",
    policy=ADMIN,
    replies=[Reply(204, None, "A member.")],
    errors=(404,),
)
async def add_member(request: web.Request) -> web.Response:
    """404: no such group or user."""
    match = request.match_info
    await client(request, IdentityAdmin).add_user_to_group(
        group_id=match["group_id"], user_id=match["user_id"]
    )
    return no_content()


@routes.delete(
    MEMBER,
    "Remove a user from a group (admin)",
    policy=ADMIN,
    replies=[Reply(204, None, "No longer a member.")],
    errors=(404,),
)
async def remove_member(request: web.Request) -> web.Response:
    """404: no such group, user or membership."""
    match = request.match_info
    await client(request, IdentityAdmin).remove_user_from_group(
        group_id=match["group_id"], user_id=match["user_id"]
    )
    return no_content()


async def check_member(request: web.Request) -> web.Response:
    """204 when the user is a member of the group; 404 when not (or either does not exist)."""
    match = request.match_info
    group_id, user_id = match["group_id"], match["user_id"]
    if not await client(request, IdentityAdmin).check_user_in_group(group_id=group_id, user_id=user_id):
        raise NotFound(f"User {user_id} is not a member of group {group_id}.")
    return no_content()


for _method in ("HEAD", "GET"):
    routes.route(
        _method,
        MEMBER,
        "Check a user's membership of a group (admin or system reader)",
        policy=ADMIN_READ,
        replies=[Reply(204, None, "A member.")],
        errors=(404,),
    )(check_member)
