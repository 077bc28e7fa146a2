"""Block storage (Cinder v3) routes: volumes under ``/volume/v3/{project_id}/volumes``.

The project id in the path must be the token's (an admin may name any); a volume of
another project answers 404 like a missing one. Volumes are shown without the volume
host's internal fields (the file's path and format).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.volume import MetadataKey, Size, Text, Volumes, VolumeStatus
from api.volume import Volume as Record
from bus import Forbidden
from gateway.http import client, context_of, json_response, no_content
from gateway.routing import Body, Link, OpenRequest, Query, Reply, Request, Routes, Time, given, id_other_than

VOLUMES = "/volume/v3/{project_id}/volumes"
ERRORS_OF_A_VOLUME = (404,)
VOLUME_ID = {"volume_id": id_other_than("detail")}
"""``.../volumes/detail`` is the detailed list, never a volume."""


class VolumeCreate(OpenRequest):
    """A volume of ``size`` GiB. Its content from a source (``source_volid``, ``snapshot_id``,
    ``imageRef``, ``backup_id``) is not built: those may only be null (400 naming the member
    otherwise), never taken and ignored. Other members Cinder has that change nothing here
    (``availability_zone``, ``volume_type`` as null...) are taken and ignored."""

    size: Size
    name: Text | None = None
    description: Text | None = None
    metadata: dict[MetadataKey, Text] | None = None
    source_volid: None = None
    snapshot_id: None = None
    image_ref: None = msgspec.field(default=None, name="imageRef")
    backup_id: None = None


class VolumeCreateRequest(OpenRequest):
    volume: VolumeCreate


class VolumeUpdate(Request):
    """What may change: the name and the description (null or absent: unchanged)."""

    name: Text | UnsetType | None = UNSET
    description: Text | UnsetType | None = UNSET


class VolumeUpdateRequest(Request):
    volume: VolumeUpdate


class VolumeQuery(Query):
    name: Annotated[str, Meta(description="Volumes of this name.")] | UnsetType = UNSET
    status: Annotated[str, Meta(description="Volumes in this status.")] | UnsetType = UNSET
    all_tenants: Annotated[bool, Meta(description="Admins: every project's volumes.")] = False


class VolumeAttachment(Body):
    """An attachment of a volume (its ``id`` is the volume's, as in Cinder)."""

    id: str
    attachment_id: str
    volume_id: str
    server_id: str
    host_name: str | None
    device: str | None
    attached_at: Time | None


class Volume(Body):
    """A volume as Cinder shows it (plus ``fault`` when something went wrong with its file)."""

    id: str
    name: str
    description: str
    size: int
    """GiB."""
    status: VolumeStatus
    user_id: str | None
    availability_zone: str
    bootable: Literal["true", "false"]
    encrypted: bool
    multiattach: bool
    volume_type: str
    attachments: list[VolumeAttachment]
    metadata: dict[str, str]
    snapshot_id: str | None
    source_volid: str | None
    created_at: Time
    updated_at: Time
    links: list[Link]
    replication_status: None = None
    consistencygroup_id: None = None
    migration_status: None = None
    tenant_id: str | UnsetType | None = msgspec.field(default=UNSET, name="os-vol-tenant-attr:tenant_id")
    """Shown by show and list, as Cinder's tenant-attribute extension does; not by create or update."""
    fault: str | UnsetType = UNSET
    """What went wrong with the volume's file."""


class VolumeSummary(Body):
    id: str
    name: str
    links: list[Link]


class VolumeList(Body):
    volumes: list[VolumeSummary]


class VolumeDetailList(Body):
    volumes: list[Volume]


class VolumeShown(Body):
    volume: Volume


def _project(request: web.Request, action: str) -> str:
    """The path's project id. :raises Forbidden: another project's, and the caller is no admin."""
    project_id = request.match_info["project_id"]
    ctx = context_of(request)
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow volume:{action} to be performed.")
    return project_id


def _links(request: web.Request, project_id: str, volume_id: str) -> list[Link]:
    """The volume's self link, under the project id the client used."""
    href = f"{request.scheme}://{request.host}{VOLUMES.format(project_id=project_id)}/{volume_id}"
    return [Link(rel="self", href=href)]


def volume_view(request: web.Request, project_id: str, volume: Record, *, shown: bool = True) -> Volume:
    """The volume; ``shown``: as show and list answer it (with its project), else as create and update."""
    return Volume(
        id=volume["id"],
        name=volume["name"],
        description=volume["description"],
        size=volume["size"],
        status=volume["status"],
        user_id=volume["user_id"],
        availability_zone=volume["availability_zone"],
        bootable=volume["bootable"],  # type: ignore[arg-type]  # "true" or "false"
        encrypted=volume["encrypted"],
        multiattach=volume["multiattach"],
        volume_type=volume["volume_type"],
        attachments=volume["attachments"],  # type: ignore[arg-type]  # the same members
        metadata=volume["metadata"],
        snapshot_id=volume["snapshot_id"],
        source_volid=volume["source_volid"],
        created_at=volume["created_at"],
        updated_at=volume["updated_at"],
        tenant_id=volume["project_id"] if shown else UNSET,
        fault=volume["fault"] or UNSET,
        links=_links(request, project_id, volume["id"]),
    )


async def _list(request: web.Request, query: VolumeQuery) -> tuple[str, list[Record]]:
    """The path's project id and the volumes the query asks for."""
    project_id = _project(request, "get_all")
    volumes = await client(request, Volumes).list(
        name=query.name or None, status=query.status or None, all_tenants=query.all_tenants
    )
    return project_id, volumes


routes = Routes()


@routes.get(
    VOLUMES,
    "List volumes",
    query=VolumeQuery,
    replies=[Reply(200, VolumeList, "The volumes' ids and names, newest first.")],
)
async def list_volumes(request: web.Request, query: VolumeQuery) -> web.Response:
    """403: another project's path."""
    project_id, volumes = await _list(request, query)
    summaries = [
        VolumeSummary(id=volume["id"], name=volume["name"], links=_links(request, project_id, volume["id"]))
        for volume in volumes
    ]
    return json_response(VolumeList(volumes=summaries))


@routes.get(
    f"{VOLUMES}/detail",
    "List volumes in detail",
    query=VolumeQuery,
    replies=[Reply(200, VolumeDetailList, "The volumes, newest first.")],
)
async def list_volume_details(request: web.Request, query: VolumeQuery) -> web.Response:
    """403: another project's path."""
    project_id, volumes = await _list(request, query)
    return json_response(VolumeDetailList(volumes=[volume_view(request, project_id, v) for v in volumes]))


@routes.post(
    VOLUMES,
    "Create a volume",
    body=VolumeCreateRequest,
    replies=[Reply(202, VolumeShown, "The volume (available, or error with a fault).")],
)
async def create_volume(request: web.Request, body: VolumeCreateRequest) -> web.Response:
    """403: another project's path."""
    project_id = _project(request, "create")
    asked = body.volume
    volume = await client(request, Volumes).create(
        size=asked.size,
        name=asked.name or "",
        description=asked.description or "",
        metadata=asked.metadata,
    )
    return json_response(
        VolumeShown(volume=volume_view(request, project_id, volume, shown=False)), status=202
    )


@routes.get(
    f"{VOLUMES}/{{volume_id}}",
    "Show a volume",
    replies=[Reply(200, VolumeShown, "The volume.")],
    errors=ERRORS_OF_A_VOLUME,
    path_types=VOLUME_ID,
)
async def show_volume(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such volume, or another project's."""
    project_id = _project(request, "get")
    volume = await client(request, Volumes).get(volume_id=request.match_info["volume_id"])
    return json_response(VolumeShown(volume=volume_view(request, project_id, volume)))


@routes.put(
    f"{VOLUMES}/{{volume_id}}",
    "Update a volume",
    body=VolumeUpdateRequest,
    replies=[Reply(200, VolumeShown, "The volume.")],
    errors=ERRORS_OF_A_VOLUME,
    path_types=VOLUME_ID,
)
async def update_volume(request: web.Request, body: VolumeUpdateRequest) -> web.Response:
    """403: another project's path; 404: no such volume, or another project's."""
    project_id = _project(request, "update")
    asked = body.volume
    volume = await client(request, Volumes).update(
        volume_id=request.match_info["volume_id"],
        name=given(asked.name),
        description=given(asked.description),
    )
    return json_response(VolumeShown(volume=volume_view(request, project_id, volume, shown=False)))


@routes.delete(
    f"{VOLUMES}/{{volume_id}}",
    "Delete a volume",
    replies=[Reply(202, None, "Deleted, file and all.")],
    errors=(404, 409),
    path_types=VOLUME_ID,
)
async def delete_volume(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such volume; 409: it is attached (or attaching...)."""
    _project(request, "delete")
    await client(request, Volumes).delete(volume_id=request.match_info["volume_id"])
    return no_content(202)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
