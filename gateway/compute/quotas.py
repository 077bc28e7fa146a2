"""Quota sets (``/os-quota-sets/{project_id}``): a project's compute limits, as Nova 2.1 shows them.

Five are enforced by the conductor, each where its resource is made (``actors/conductor/quotas.py``):
``instances``, ``cores``, ``ram`` (a project's live instances), ``metadata_items`` (of one
instance) and ``key_pairs`` (of one user). Nova 2.1's other members (network proxies, server
groups, injected files) are shown -1, unlimited, because nothing here limits them: aiostack has no
server groups or file injection, and Neutron's own quotas are the network's. Setting one of those
is refused (400). Members read their own project's; admins read and set any. A project with no
limits of its own has the defaults (``api.conductor.DEFAULT_QUOTAS``: instances, cores and RAM
open until an admin sets them).
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import QuotaLimit, Quotas, QuotaUsage
from gateway.compute.common import BASE, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Id, Query, Reply, Request, Routes, given, id_other_than

QUOTA_SETS = f"{BASE}/os-quota-sets/{{project_id}}"
QUOTA_PROJECT = {"project_id": id_other_than("defaults", "detail")}
"""A project id is none of the sibling routes' words (``/os-quota-sets/detail`` is no project's)."""
UNLIMITED = -1


class QuotaSet(Body):
    instances: int
    cores: int
    ram: int
    metadata_items: int
    key_pairs: int
    floating_ips: int
    fixed_ips: int
    security_groups: int
    security_group_rules: int
    server_groups: int
    server_group_members: int
    injected_files: int
    injected_file_content_bytes: int
    injected_file_path_bytes: int


class ProjectQuotaSet(QuotaSet):
    id: str


class ProjectQuotas(Body):
    quota_set: ProjectQuotaSet


class UpdatedQuotas(Body):
    quota_set: QuotaSet


class Usage(Body):
    limit: int
    in_use: int
    reserved: int


class QuotaDetail(Body):
    id: str
    instances: Usage
    cores: Usage
    ram: Usage
    metadata_items: Usage
    key_pairs: Usage


class QuotaDetailBody(Body):
    quota_set: QuotaDetail


class QuotaChanges(Request):
    """The limits to set (-1: unlimited); ``force`` sets one below what the project uses."""

    instances: QuotaLimit | UnsetType = UNSET
    cores: QuotaLimit | UnsetType = UNSET
    ram: QuotaLimit | UnsetType = UNSET
    metadata_items: QuotaLimit | UnsetType = UNSET
    key_pairs: QuotaLimit | UnsetType = UNSET
    force: bool = False


class QuotaUpdate(Request):
    quota_set: QuotaChanges


class QuotaQuery(Query):
    user_id: (
        Annotated[Id, Meta(description="Whose key pairs count (the caller's by default).")] | UnsetType
    ) = UNSET


def _quota_set(limits: Quotas) -> QuotaSet:
    return QuotaSet(
        instances=limits["instances"],
        cores=limits["cores"],
        ram=limits["ram"],
        metadata_items=limits["metadata_items"],
        key_pairs=limits["key_pairs"],
        floating_ips=UNLIMITED,
        fixed_ips=UNLIMITED,
        security_groups=UNLIMITED,
        security_group_rules=UNLIMITED,
        server_groups=UNLIMITED,
        server_group_members=UNLIMITED,
        injected_files=UNLIMITED,
        injected_file_content_bytes=UNLIMITED,
        injected_file_path_bytes=UNLIMITED,
    )


def _with_id(project_id: str, limits: Quotas) -> ProjectQuotas:
    shown = _quota_set(limits)
    return ProjectQuotas(
        quota_set=ProjectQuotaSet(id=project_id, **{f: getattr(shown, f) for f in QuotaSet.__struct_fields__})
    )


def _usage(usage: QuotaUsage) -> Usage:
    return Usage(limit=usage["limit"], in_use=usage["in_use"], reserved=usage["reserved"])


routes = Routes()


@routes.get(
    QUOTA_SETS,
    "Show a project's quotas",
    path_types=QUOTA_PROJECT,
    query=QuotaQuery,
    replies=[Reply(200, ProjectQuotas, "Its limits (-1: unlimited).")],
    errors=(403, 404),
)
async def show_quotas(request: web.Request, query: QuotaQuery) -> web.Response:
    """403: another project's, and the caller is no admin."""
    project_id = request.match_info["project_id"]
    return json_response(_with_id(project_id, await compute(request).get_quotas(project_id=project_id)))


@routes.get(
    f"{QUOTA_SETS}/defaults",
    "Show the default quotas",
    replies=[Reply(200, ProjectQuotas, "The limits of a project with none of its own.")],
    errors=(404,),
)
async def show_default_quotas(request: web.Request) -> web.Response:
    return json_response(
        _with_id(request.match_info["project_id"], await compute(request).get_default_quotas())
    )


@routes.get(
    f"{QUOTA_SETS}/detail",
    "Show a project's quotas and usage",
    query=QuotaQuery,
    replies=[Reply(200, QuotaDetailBody, "Each enforced limit with what is in use.")],
    errors=(403, 404),
)
async def show_quota_detail(request: web.Request, query: QuotaQuery) -> web.Response:
    """403: another project's, and the caller is no admin."""
    project_id = request.match_info["project_id"]
    usage = await compute(request).get_quota_usage(project_id=project_id, user_id=given(query.user_id))
    detail = QuotaDetail(
        id=project_id,
        instances=_usage(usage["instances"]),
        cores=_usage(usage["cores"]),
        ram=_usage(usage["ram"]),
        metadata_items=_usage(usage["metadata_items"]),
        key_pairs=_usage(usage["key_pairs"]),
    )
    return json_response(QuotaDetailBody(quota_set=detail))


@routes.put(
    QUOTA_SETS,
    "Set a project's quotas",
    path_types=QUOTA_PROJECT,
    body=QuotaUpdate,
    replies=[Reply(200, UpdatedQuotas, "Its limits now.")],
    errors=(403, 404, 409),
)
async def update_quotas(request: web.Request, body: QuotaUpdate) -> web.Response:
    """Admins; 409 for a limit below what the project uses (unless ``force``)."""
    changes = body.quota_set
    limits = {
        resource: value
        for resource in ("instances", "cores", "ram", "metadata_items", "key_pairs")
        if (value := getattr(changes, resource)) is not UNSET
    }
    updated = await compute(request).set_quotas(
        project_id=request.match_info["project_id"], limits=limits, force=changes.force
    )
    return json_response(UpdatedQuotas(quota_set=_quota_set(updated)))


@routes.delete(
    QUOTA_SETS,
    "Revert a project's quotas to the defaults",
    path_types=QUOTA_PROJECT,
    replies=[Reply(202, None, "Its limits are the defaults again.")],
    errors=(403, 404),
)
async def delete_quotas(request: web.Request) -> web.Response:
    """Admins."""
    await compute(request).delete_quotas(project_id=request.match_info["project_id"])
    return no_content(202)
