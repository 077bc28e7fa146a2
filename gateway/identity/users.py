"""Users (``/users``, admins): list, create, show, update (PATCH), delete; and for the user itself
too, its projects (``/users/{id}/projects``) and its password change (``/users/{id}/password``,
no token needed: the original password is the proof, checked and throttled as a login is).

A user is never shown with its password. Disabling a user, changing its password or deleting
it revokes its tokens at once (the identity actor does).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.identity import DomainId, IdentityAdmin, Label, LoginThrottled, Secret, Text, Tokens
from api.identity import User as Record
from gateway.http import client, json_response, no_content
from gateway.identity.common import (
    ADMIN,
    ADMIN_READ,
    V3,
    CollectionLinks,
    Filter,
    Flag,
    ResourceLinks,
    collection_links,
    is_set,
    other_domain,
    self_link,
)
from gateway.identity.projects import ProjectList, project_list
from gateway.identity.tokens import HELD, REFUSAL_HOLD, too_many_requests
from gateway.routing import NO_POLICY, Body, OpenRequest, Query, Reply, Routes, given

USERS = f"{V3}/users"
USER = f"{USERS}/{{user_id}}"
ProjectRef = Annotated[str, Meta(max_length=255, description="A project's id or name; empty: none.")]


class UserCreate(OpenRequest):
    """A user in the default domain; without a password it cannot log in with one. Keystone's
    other members (``options``, ``federated``...) are taken and ignored."""

    name: Label
    password: Secret | None = None
    description: Text | None = None
    enabled: bool = True
    default_project_id: ProjectRef | None = None
    domain_id: DomainId | UnsetType = UNSET


class UserCreateRequest(OpenRequest):
    user: UserCreate


class UserUpdate(OpenRequest):
    """What may change (absent: unchanged; a null description or default project clears it).
    Disabling the user or changing its password revokes its tokens."""

    name: Label | UnsetType = UNSET
    password: Secret | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    default_project_id: ProjectRef | UnsetType | None = UNSET
    domain_id: Annotated[DomainId, Meta(description="A domain cannot be changed.")] | UnsetType = UNSET


class UserUpdateRequest(OpenRequest):
    user: UserUpdate


class UserQuery(Query):
    name: Annotated[Filter, Meta(description="Users of this name.")] | UnsetType = UNSET
    enabled: Flag | UnsetType = UNSET
    domain_id: Annotated[Filter, Meta(description="Users of this domain (default).")] | UnsetType = UNSET


class User(Body):
    """A user (never its password)."""

    id: str
    name: str
    description: str
    domain_id: str
    enabled: bool
    password_expires_at: None
    options: dict[str, Any]
    links: ResourceLinks
    default_project_id: str | UnsetType = UNSET


class UserShown(Body):
    user: User


class UserList(Body):
    users: list[User]
    links: CollectionLinks


def user_view(request: web.Request, user: Record) -> User:
    return User(
        id=user["id"],
        name=user["name"],
        description=user["description"],
        domain_id=user["domain_id"],
        enabled=bool(user["enabled"]),
        password_expires_at=None,
        options={},
        links=self_link(request, "users", user["id"]),
        default_project_id=user["default_project_id"] or UNSET,
    )


def user_list(request: web.Request, users: list[Record]) -> UserList:
    return UserList(users=[user_view(request, user) for user in users], links=collection_links(request))


routes = Routes()


@routes.get(
    USERS,
    "List users (admin or system reader)",
    policy=ADMIN_READ,
    query=UserQuery,
    replies=[Reply(200, UserList, "By name.")],
)
async def list_users(request: web.Request, query: UserQuery) -> web.Response:
    if other_domain(query.domain_id):
        return json_response(user_list(request, []))
    users = await client(request, IdentityAdmin).list_users(
        name=given(query.name),
        enabled=None if query.enabled is UNSET else is_set(query.enabled),
    )
    return json_response(user_list(request, users))


@routes.post(
    USERS,
    "Create a user (admin)",
    policy=ADMIN,
    body=UserCreateRequest,
    replies=[Reply(201, UserShown, "The user.")],
    errors=(404, 409),
)
async def create_user(request: web.Request, body: UserCreateRequest) -> web.Response:
    """404: no such default project; 409: a user of that name exists."""
    asked = body.user
    user = await client(request, IdentityAdmin).create_user(
        name=asked.name,
        password=asked.password,
        default_project=asked.default_project_id or None,
        enabled=asked.enabled,
        description=asked.description or "",
    )
    return json_response(UserShown(user=user_view(request, user)), status=201)


@routes.get(
    USER,
    "Show a user (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, UserShown, "The user.")],
    errors=(404,),
)
async def get_user(request: web.Request) -> web.Response:
    user = await client(request, IdentityAdmin).get_user(user_id=request.match_info["user_id"])
    return json_response(UserShown(user=user_view(request, user)))


@routes.patch(
    USER,
    "Update a user (admin)",
    policy=ADMIN,
    body=UserUpdateRequest,
    replies=[Reply(200, UserShown, "The user.")],
    errors=(404, 409),
)
async def update_user(request: web.Request, body: UserUpdateRequest) -> web.Response:
    """404: no such user or default project; 409: the new name is taken."""
    asked = body.user
    user = await client(request, IdentityAdmin).update_user(
        user_id=request.match_info["user_id"],
        name=given(asked.name),
        password=given(asked.password),
        enabled=given(asked.enabled),
        description=None if asked.description is UNSET else asked.description or "",
        default_project=None if asked.default_project_id is UNSET else asked.default_project_id or "",
    )
    return json_response(UserShown(user=user_view(request, user)))


@routes.delete(
    USER,
    "Delete a user (admin)",
    policy=ADMIN,
    replies=[
        Reply(204, None, "Deleted, with its role assignments, memberships and application credentials.")
    ],
    errors=(404,),
)
async def delete_user(request: web.Request) -> web.Response:
    await client(request, IdentityAdmin).delete_user(user_id=request.match_info["user_id"])
    return no_content()


@routes.get(
    f"{USER}/projects",
    "List a user's projects (the user itself, an admin or a system reader)",
    policy=NO_POLICY,
    replies=[Reply(200, ProjectList, "The projects it has a role on, itself or through a group.")],
    errors=(404,),
)
async def list_user_projects(request: web.Request) -> web.Response:
    """403: the caller is none of them (asking of another user or of none); 404: no such user
    (asked by an admin or a system reader)."""
    projects = await client(request, IdentityAdmin).list_user_projects(user_id=request.match_info["user_id"])
    return json_response(project_list(request, projects))


class PasswordChange(OpenRequest):
    password: Annotated[Secret, Meta(description="The new password.")]
    original_password: Annotated[str, Meta(max_length=4096)]


class PasswordChangeRequest(OpenRequest):
    user: PasswordChange


@routes.post(
    f"{USER}/password",
    "Change one's own password",
    public=True,
    body=PasswordChangeRequest,
    replies=[Reply(204, None, "Changed: every token the user had is revoked.")],
    errors=(401, 429, 503),
)
async def change_password(request: web.Request, body: PasswordChangeRequest) -> web.Response:
    """No token needed: the original password is the proof. 401 for an unknown or disabled user or
    a wrong original password (one answer); 429 (with Retry-After) and 503 as for a login."""
    try:
        await client(request, Tokens).change_password(
            user_id=request.match_info["user_id"],
            original_password=body.user.original_password,
            password=body.user.password,
            source=request.remote,
        )
    except LoginThrottled as refusal:
        await request.app[HELD].hold(min(REFUSAL_HOLD, refusal.retry_after))
        raise too_many_requests(refusal) from None
    return no_content()
