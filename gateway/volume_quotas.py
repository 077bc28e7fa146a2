"""Cinder's quota sets (``/volume/v3/{project_id}/os-quota-sets/{target_project_id}``): a project's
volume limits, shown (with ``?usage=True``: each with what is in use), set and deleted.

Four are enforced by the volume actor where each resource is recorded (``actors/volume_quotas.py``):
``volumes``, ``gigabytes`` (volumes' and snapshots' GiB), ``snapshots`` and ``per_volume_gigabytes``.
Cinder's others (``backups``, ``backup_gigabytes``, ``groups``) are shown -1, unlimited, because
nothing here makes backups or groups: a body may only give them -1 (anything else is 400, naming
the member). Cinder's per-type limits (``volumes_<type>``...) are not shown: a type limits nothing
here. Members read their own project's; admins read, set and delete any. A refusal by a quota is
Cinder's 413 (``OverLimit``: the bus's ``QuotaExceeded`` is Nova's 403), wherever it comes from
(``gateway.volume``'s creates and extend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Literal

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.volume import QuotaLimit, VolumeQuotaSet, VolumeQuotaUsage, Volumes
from bus import Forbidden, QuotaExceeded
from gateway.http import client, context_of, json_response, no_content
from gateway.routing import Body, Query, Reply, Request, Routes, id_other_than

QUOTA_SETS = "/volume/v3/{project_id}/os-quota-sets/{target_project_id}"
TARGET_PROJECT = {"target_project_id": id_other_than("defaults")}
"""A project id is not the sibling route's word (``/os-quota-sets/defaults`` is no project's)."""
UNLIMITED = -1
NOT_LIMITED = ("backups", "backup_gigabytes", "groups")
"""Cinder's quotas that nothing here limits (no backups, no groups): always -1."""

Unlimited = Annotated[
    Literal[-1], Meta(description="Not limited here (nothing makes these): -1, unlimited, only.")
]


class OverLimit(QuotaExceeded):
    """A quota refusal as Cinder answers it: 413 (``overLimit``), where Nova answers 403."""

    http_status = 413


@contextlib.contextmanager
def cinder_quota() -> Iterator[None]:
    """Answer a ``QuotaExceeded`` raised inside as Cinder does (413)."""
    try:
        yield
    except QuotaExceeded as exc:
        raise OverLimit(exc.message, request_id=exc.request_id) from None


class VolumeQuotaSetView(Body):
    volumes: int
    gigabytes: int
    snapshots: int
    per_volume_gigabytes: int
    backups: int
    backup_gigabytes: int
    groups: int


class ProjectVolumeQuotaSet(VolumeQuotaSetView):
    id: str


class ProjectVolumeQuotas(Body):
    quota_set: ProjectVolumeQuotaSet


class UpdatedVolumeQuotas(Body):
    quota_set: VolumeQuotaSetView


class VolumeQuotaUsageView(Body):
    limit: int
    in_use: int
    reserved: int
    """GiB that extends under way will add (``gigabytes``); 0 for the others."""
    allocated: int
    """Always 0: no project here hands quota to child projects."""


class ProjectVolumeQuotaUsage(Body):
    id: str
    volumes: VolumeQuotaUsageView
    gigabytes: VolumeQuotaUsageView
    snapshots: VolumeQuotaUsageView
    per_volume_gigabytes: VolumeQuotaUsageView
    backups: VolumeQuotaUsageView
    backup_gigabytes: VolumeQuotaUsageView
    groups: VolumeQuotaUsageView


class ProjectVolumeQuotaUsages(Body):
    quota_set: ProjectVolumeQuotaUsage


class VolumeQuotaChanges(Request):
    """The limits to set (-1: unlimited); left out: unchanged."""

    volumes: QuotaLimit | UnsetType = UNSET
    gigabytes: QuotaLimit | UnsetType = UNSET
    snapshots: QuotaLimit | UnsetType = UNSET
    per_volume_gigabytes: QuotaLimit | UnsetType = UNSET
    backups: Unlimited | UnsetType = UNSET
    backup_gigabytes: Unlimited | UnsetType = UNSET
    groups: Unlimited | UnsetType = UNSET
    tenant_id: str | UnsetType = UNSET
    """Sent by cinderclient (the project's id), not read: the path names the project."""
    id: str | UnsetType = UNSET
    """Not read, as ``tenant_id`` (Cinder skips both)."""


class VolumeQuotaUpdate(Request):
    quota_set: VolumeQuotaChanges


class VolumeQuotaQuery(Query):
    usage: Annotated[bool, Meta(description="Each limit with what is in use and reserved.")] = False


def _target(request: web.Request, action: str) -> str:
    """The path's target project; the caller is checked against the path's own project, as on
    every volume route. :raises Forbidden: that is another's, and the caller is no admin."""
    ctx = context_of(request)
    if request.match_info["project_id"] != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow volume_extension:quotas:{action} to be performed.")
    return request.match_info["target_project_id"]


def _limits(limits: VolumeQuotaSet) -> dict[str, int]:
    """The limits as Cinder shows them: the four enforced, and -1 for those nothing limits."""
    return {**limits, **dict.fromkeys(NOT_LIMITED, UNLIMITED)}


def _shown(project_id: str, limits: VolumeQuotaSet) -> ProjectVolumeQuotas:
    """A project's limits as show and defaults answer them, with its id."""
    return ProjectVolumeQuotas(quota_set=ProjectVolumeQuotaSet(id=project_id, **_limits(limits)))


def _usage(usage: VolumeQuotaUsage) -> VolumeQuotaUsageView:
    return VolumeQuotaUsageView(
        limit=usage["limit"], in_use=usage["in_use"], reserved=usage["reserved"], allocated=0
    )


routes = Routes()


@routes.get(
    QUOTA_SETS,
    "Show a project's volume quotas",
    path_types=TARGET_PROJECT,
    query=VolumeQuotaQuery,
    replies=[
        Reply(
            200,
            ProjectVolumeQuotas,
            "Its limits (-1: unlimited); with usage=True, each with what is in use.",
            alternatives=(ProjectVolumeQuotaUsages,),
        )
    ],
    errors=(404,),
)
async def show_volume_quotas(request: web.Request, query: VolumeQuotaQuery) -> web.Response:
    """403: another project's, and the caller is no admin."""
    target = _target(request, "show")
    volumes = client(request, Volumes)
    if not query.usage:
        return json_response(_shown(target, await volumes.get_quotas(project_id=target)))
    usage = await volumes.get_quota_usage(project_id=target)
    unused = VolumeQuotaUsageView(limit=UNLIMITED, in_use=0, reserved=0, allocated=0)
    shown = ProjectVolumeQuotaUsage(
        id=target,
        volumes=_usage(usage["volumes"]),
        gigabytes=_usage(usage["gigabytes"]),
        snapshots=_usage(usage["snapshots"]),
        per_volume_gigabytes=_usage(usage["per_volume_gigabytes"]),
        **dict.fromkeys(NOT_LIMITED, unused),
    )
    return json_response(ProjectVolumeQuotaUsages(quota_set=shown))


@routes.get(
    f"{QUOTA_SETS}/defaults",
    "Show the default volume quotas",
    replies=[Reply(200, ProjectVolumeQuotas, "The limits of a project with none of its own.")],
    errors=(404,),
)
async def show_default_volume_quotas(request: web.Request) -> web.Response:
    """403: another project's, and the caller is no admin (as Cinder's policy reads it)."""
    target = _target(request, "show")
    ctx = context_of(request)
    if target != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow volume_extension:quotas:show to be performed on {target}.")
    return json_response(_shown(target, await client(request, Volumes).get_default_quotas()))


@routes.put(
    QUOTA_SETS,
    "Set a project's volume quotas",
    path_types=TARGET_PROJECT,
    body=VolumeQuotaUpdate,
    replies=[Reply(200, UpdatedVolumeQuotas, "Its limits now.")],
    errors=(404, 409),
)
async def update_volume_quotas(request: web.Request, body: VolumeQuotaUpdate) -> web.Response:
    """Admins (403 otherwise); 409: a limit below what the project holds (Cinder's 400: the request
    is right, the project's state refuses it), and nothing is changed."""
    changes = body.quota_set
    limits = {
        resource: value
        for resource in ("volumes", "gigabytes", "snapshots", "per_volume_gigabytes")
        if isinstance(value := getattr(changes, resource), int)
    }
    updated = await client(request, Volumes).set_quotas(project_id=_target(request, "update"), limits=limits)
    return json_response(UpdatedVolumeQuotas(quota_set=VolumeQuotaSetView(**_limits(updated))))


@routes.delete(
    QUOTA_SETS,
    "Revert a project's volume quotas to the defaults",
    path_types=TARGET_PROJECT,
    replies=[Reply(200, None, "Its limits are the defaults again.")],
    errors=(404,),
)
async def delete_volume_quotas(request: web.Request) -> web.Response:
    """Admins (403 otherwise)."""
    await client(request, Volumes).delete_quotas(project_id=_target(request, "delete"))
    return no_content(200)
