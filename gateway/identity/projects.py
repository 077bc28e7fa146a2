"""Projects (``/projects``, admins): list, create, show, update (PATCH), delete.

Disabling or deleting a project revokes its tokens at once (the identity actor does).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.identity import DomainId, IdentityAdmin, Label, Text
from api.identity import Project as Record
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
from gateway.routing import Body, OpenRequest, Query, Reply, Routes, given

PROJECTS = f"{V3}/projects"
PROJECT = f"{PROJECTS}/{{project_id}}"


class ProjectCreate(OpenRequest):
    """A project in the default domain. Keystone's other members (``parent_id``, ``is_domain``,
    ``tags``, ``options``) are taken and ignored."""

    name: Label
    description: Text | None = None
    enabled: bool = True
    domain_id: DomainId | UnsetType = UNSET


class ProjectCreateRequest(OpenRequest):
    project: ProjectCreate


class ProjectUpdate(OpenRequest):
    """What may change (absent: unchanged; a null description clears it). Disabling revokes the
    project's tokens."""

    name: Label | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    domain_id: Annotated[DomainId, Meta(description="A domain cannot be changed.")] | UnsetType = UNSET


class ProjectUpdateRequest(OpenRequest):
    project: ProjectUpdate


class ProjectQuery(Query):
    name: Annotated[Filter, Meta(description="Projects of this name.")] | UnsetType = UNSET
    enabled: Flag | UnsetType = UNSET
    domain_id: Annotated[Filter, Meta(description="Projects of this domain (default).")] | UnsetType = UNSET


class Project(Body):
    id: str
    name: str
    description: str
    domain_id: str
    enabled: bool
    parent_id: str
    is_domain: bool
    tags: list[str]
    options: dict[str, Any]
    links: ResourceLinks


class ProjectShown(Body):
    project: Project


class ProjectList(Body):
    projects: list[Project]
    links: CollectionLinks


def project_view(request: web.Request, project: Record) -> Project:
    return Project(
        id=project["id"],
        name=project["name"],
        description=project["description"],
        domain_id=project["domain_id"],
        enabled=bool(project["enabled"]),
        parent_id=project["domain_id"],
        is_domain=False,
        tags=[],
        options={},
        links=self_link(request, "projects", project["id"]),
    )


def project_list(request: web.Request, projects: list[Record]) -> ProjectList:
    return ProjectList(
        projects=[project_view(request, project) for project in projects], links=collection_links(request)
    )


routes = Routes()


@routes.get(
    PROJECTS,
    "List projects (admin or system reader)",
    policy=ADMIN_READ,
    query=ProjectQuery,
    replies=[Reply(200, ProjectList, "By name.")],
)
async def list_projects(request: web.Request, query: ProjectQuery) -> web.Response:
    if other_domain(query.domain_id):
        return json_response(project_list(request, []))
    projects = await client(request, IdentityAdmin).list_projects(
        name=given(query.name),
        enabled=None if query.enabled is UNSET else is_set(query.enabled),
    )
    return json_response(project_list(request, projects))


@routes.post(
    PROJECTS,
    "Create a project (admin)",
    policy=ADMIN,
    body=ProjectCreateRequest,
    replies=[Reply(201, ProjectShown, "The project.")],
    errors=(409,),
)
async def create_project(request: web.Request, body: ProjectCreateRequest) -> web.Response:
    """409: a project of that name exists."""
    asked = body.project
    project = await client(request, IdentityAdmin).create_project(
        name=asked.name, description=asked.description or "", enabled=asked.enabled
    )
    return json_response(ProjectShown(project=project_view(request, project)), status=201)


@routes.get(
    PROJECT,
    "Show a project (admin or system reader)",
    policy=ADMIN_READ,
    replies=[Reply(200, ProjectShown, "The project.")],
    errors=(404,),
)
async def get_project(request: web.Request) -> web.Response:
    project = await client(request, IdentityAdmin).get_project(project_id=request.match_info["project_id"])
    return json_response(ProjectShown(project=project_view(request, project)))


@routes.patch(
    PROJECT,
    "Update a project (admin)",
    policy=ADMIN,
    body=ProjectUpdateRequest,
    replies=[Reply(200, ProjectShown, "The project.")],
    errors=(404, 409),
)
async def update_project(request: web.Request, body: ProjectUpdateRequest) -> web.Response:
    """409: the new name is taken."""
    asked = body.project
    project = await client(request, IdentityAdmin).update_project(
        project_id=request.match_info["project_id"],
        name=given(asked.name),
        description=None if asked.description is UNSET else asked.description or "",
        enabled=given(asked.enabled),
    )
    return json_response(ProjectShown(project=project_view(request, project)))


@routes.delete(
    PROJECT,
    "Delete a project (admin)",
    policy=ADMIN,
    replies=[Reply(204, None, "Deleted, with its role assignments and application credentials.")],
    errors=(404,),
)
async def delete_project(request: web.Request) -> web.Response:
    await client(request, IdentityAdmin).delete_project(project_id=request.match_info["project_id"])
    return no_content()
