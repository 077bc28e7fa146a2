"""Block storage (Cinder v3) routes under ``/volume/v3/{project_id}``: volumes (their metadata and
actions), snapshots (and theirs), volume types, the availability zone and the extensions served;
quota sets in ``gateway.volume_quotas`` (whose 413 the creates and the extend answer past a quota).

The project id in the path must be the token's (an admin may name any); a volume of
another project answers 404 like a missing one. Volumes are shown without the volume
host's internal fields (the file's path and format); a volume's ``readonly`` flag, once set, is
shown in its ``metadata`` as Cinder does (not by ``/metadata``, which is the user's own).
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Id, Name
from api.volume import (
    COPY_TIMEOUT,
    DEFAULT_TYPE,
    MAX_PAGE,
    SNAPSHOT_SORT_KEYS,
    Metadata,
    MetadataKey,
    Offset,
    PageSize,
    Size,
    SnapshotStatus,
    Sort,
    SortDirection,
    SortKey,
    Text,
    Volumes,
    VolumeStatus,
)
from api.volume import Snapshot as SnapshotRecord
from api.volume import Volume as Record
from api.volume import VolumeType as TypeRecord
from bus import Forbidden, InvalidRequest, NotFound
from gateway.http import client, context_of, json_response, no_content
from gateway.routing import Body, Link, OpenRequest, Query, Reply, Request, Routes, Time, given, id_other_than
from gateway.volume_quotas import cinder_quota
from gateway.volume_quotas import routes as quota_routes

BASE = "/volume/v3/{project_id}"
VOLUMES = f"{BASE}/volumes"
SNAPSHOTS = f"{BASE}/snapshots"
TYPES = f"{BASE}/types"
ERRORS_OF_A_VOLUME = (404,)
VOLUME_ID = {"volume_id": id_other_than("detail")}
"""``.../volumes/detail`` is the detailed list, never a volume."""
SNAPSHOT_ID = {"snapshot_id": id_other_than("detail")}
METADATA_KEY = {"key": MetadataKey}

_QUOTED = r"""('[^'\\\n\r\x00]*'|"[^"\\\n\r\x00]*")"""
_ITEM = f" *{_QUOTED} *: *{_QUOTED} *"
MetadataFilter = Annotated[
    str,
    Meta(
        pattern=f"^\\{{({_ITEM}(,{_ITEM})*)?\\}}$",
        description="Volumes that have each of these metadata items: a dict of strings, as Python or"
        """ JSON writes it ({'Type': 'work'}, {"Type": "work"}).""",
    ),
]
SORTED_BY = "Keys to sort by, each ascending or descending (key:dir,key:dir; desc by default)."


def _sort_pattern(keys: Sequence[str]) -> str:
    """A ``sort`` parameter's pattern: these keys (and ``display_name``, Cinder's ``name``)."""
    one = f"({'|'.join((*keys, 'display_name'))})(:(asc|desc))?"
    return f"^{one}(,{one})*$"


SortParameter = Annotated[str, Meta(pattern=_sort_pattern(typing.get_args(SortKey)), description=SORTED_BY)]
SnapshotSortParameter = Annotated[str, Meta(pattern=_sort_pattern(SNAPSHOT_SORT_KEYS), description=SORTED_BY)]
SnapshotSortKeyParameter = Literal["id", "name", "display_name", "status", "size", "created_at", "updated_at"]
SortKeyParameter = Literal[
    "id",
    "name",
    "display_name",
    "status",
    "size",
    "created_at",
    "updated_at",
    "availability_zone",
    "bootable",
]
Flag = bool | Literal["true", "false", "True", "False"]
"""A boolean, or its word (as Cinder takes them)."""


class VolumeCreate(OpenRequest):
    """A volume of ``size`` GiB: empty; a copy of a snapshot (``snapshot_id``) or an available
    volume (``source_volid``) made on its storage host, at least as big (409 if smaller; ``size``
    is asked for even then, where Cinder would take the source's: Tempest always gives it); or an
    active image (``imageRef``) converted to a volume, bootable (409 when its ``min_disk`` is
    bigger; the volume ends in error when the image's disk is). One source at most. Made from a
    backup (``backup_id``) is not built: it may only be null (400 naming the member otherwise),
    never taken and ignored. Other members Cinder has that change nothing here
    (``availability_zone``...) are taken and ignored."""

    size: Size
    name: Text | None = None
    description: Text | None = None
    metadata: Metadata | None = None
    volume_type: Name | None = None
    """A volume type's name or id (404 if there is none; null: the default, ``__DEFAULT__``)."""
    source_volid: Id | None = None
    snapshot_id: Id | None = None
    image_ref: Id | None = msgspec.field(default=None, name="imageRef")
    backup_id: None = None
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "not": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {first: {"type": "string"}, second: {"type": "string"}},
                    "required": [first, second],
                }
                for first, second in (
                    ("snapshot_id", "source_volid"),
                    ("snapshot_id", "imageRef"),
                    ("source_volid", "imageRef"),
                )
            ]
        }
    }
    """One source at most (400 otherwise, as Cinder)."""


class VolumeCreateRequest(OpenRequest):
    volume: VolumeCreate


class VolumeUpdate(Request):
    """What may change: the name, the description, the metadata (replaced; null or absent: unchanged)."""

    name: Text | UnsetType | None = UNSET
    description: Text | UnsetType | None = UNSET
    metadata: Metadata | UnsetType | None = UNSET


class VolumeUpdateRequest(Request):
    volume: VolumeUpdate


class VolumeQuery(Query):
    name: Annotated[str, Meta(description="Volumes of this name.")] | UnsetType = UNSET
    status: Annotated[str, Meta(description="Volumes in this status.")] | UnsetType = UNSET
    metadata: MetadataFilter | UnsetType = UNSET
    bootable: Annotated[bool, Meta(description="BootableFlag volumes, or not.")] | UnsetType = UNSET
    availability_zone: Annotated[str, Meta(description="Volumes of this zone.")] | UnsetType = UNSET
    all_tenants: Annotated[bool, Meta(description="Admins: every project's volumes.")] = False
    limit: (
        Annotated[PageSize, Meta(description="At most this many (a full page links the next).")] | UnsetType
    ) = UNSET
    marker: Annotated[Id, Meta(description="From the volume after this one.")] | UnsetType = UNSET
    offset: Annotated[Offset, Meta(description="From the offset-th volume.")] | UnsetType = UNSET
    sort: SortParameter | UnsetType = UNSET
    sort_key: SortKeyParameter | UnsetType = UNSET
    sort_dir: SortDirection | UnsetType = UNSET


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
    volume_image_metadata: dict[str, str] | UnsetType = UNSET
    """What a volume made from an image shows of it (its id, name, checksum, formats, sizes), by
    show and list only, as Cinder's volume-image-metadata extension does."""
    fault: str | UnsetType = UNSET
    """What went wrong with the volume's file."""


class VolumeSummary(Body):
    id: str
    name: str
    links: list[Link]


class VolumeList(Body):
    volumes: list[VolumeSummary]
    volumes_links: list[Link] | UnsetType = UNSET
    """The next page's link, when the page is full."""


class VolumeDetailList(Body):
    volumes: list[Volume]
    volumes_links: list[Link] | UnsetType = UNSET
    """The next page's link, when the page is full."""


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
        metadata=_shown_metadata(volume),
        snapshot_id=volume["snapshot_id"],
        source_volid=volume["source_volid"],
        created_at=volume["created_at"],
        updated_at=volume["updated_at"],
        tenant_id=volume["project_id"] if shown else UNSET,
        volume_image_metadata=volume["image_metadata"] if shown and volume["image_metadata"] else UNSET,
        fault=volume["fault"] or UNSET,
        links=_links(request, project_id, volume["id"]),
    )


def _shown_metadata(volume: Record) -> dict[str, str]:
    """The volume's metadata, with its ``readonly`` flag once set (``"True"``/``"False"``, as Cinder)."""
    if volume["readonly"] is None:
        return volume["metadata"]
    return {**volume["metadata"], "readonly": str(volume["readonly"])}


def _next_page(
    request: web.Request, items: Sequence[Mapping[str, Any]], limit: int | None
) -> list[Link] | UnsetType:
    """The next page's link when this one is full (``limit``, at most ``MAX_PAGE``, items): this
    request's URL from the one after its last item."""
    if not items or len(items) < min(MAX_PAGE if limit is None else limit, MAX_PAGE):
        return UNSET
    href = str(request.url.update_query(marker=items[-1]["id"]).without_query_params("offset"))
    return [Link(rel="next", href=href)]


def _sort(query: VolumeQuery | SnapshotQuery) -> list[Sort]:
    """The query's order: ``sort`` (key:dir,...), else ``sort_key`` and ``sort_dir`` (desc by
    default, as Cinder's); ``display_name`` is ``name``. The patterns let only known keys through."""
    if isinstance(query.sort, str):
        parts = [part.partition(":") for part in query.sort.split(",")]
        pairs = [(key, direction or "desc") for key, _, direction in parts]
    elif isinstance(query.sort_key, str) or isinstance(query.sort_dir, str):
        pairs = [(given(query.sort_key) or "created_at", given(query.sort_dir) or "desc")]
    else:
        return []
    orders = [{"key": "name" if key == "display_name" else key, "direction": way} for key, way in pairs]
    return msgspec.convert(orders, list[Sort])


def _metadata_filter(text: str) -> dict[str, str]:
    """The ``metadata`` filter's items (its pattern let only a dict of strings through)."""
    items = ast.literal_eval(text)
    assert isinstance(items, dict)
    return items


async def _list(request: web.Request, query: VolumeQuery) -> tuple[str, list[Record], list[Link] | UnsetType]:
    """The path's project id, the volumes the query asks for and the next page's link (the page full)."""
    project_id = _project(request, "get_all")
    volumes = await client(request, Volumes).list(
        name=query.name or None,
        status=query.status or None,
        metadata=_metadata_filter(query.metadata) if isinstance(query.metadata, str) else None,
        bootable=given(query.bootable),
        availability_zone=given(query.availability_zone),
        all_tenants=query.all_tenants,
        sort=_sort(query),
        limit=given(query.limit),
        marker=given(query.marker),
        offset=given(query.offset) or 0,
    )
    return project_id, volumes, _next_page(request, volumes, given(query.limit))


routes = Routes()


@routes.get(
    VOLUMES,
    "List volumes",
    query=VolumeQuery,
    replies=[Reply(200, VolumeList, "The volumes' ids and names, newest first.")],
    errors=(404,),
)
async def list_volumes(request: web.Request, query: VolumeQuery) -> web.Response:
    """403: another project's path; 404: the marker is no volume of the list."""
    project_id, volumes, links = await _list(request, query)
    summaries = [
        VolumeSummary(id=volume["id"], name=volume["name"], links=_links(request, project_id, volume["id"]))
        for volume in volumes
    ]
    return json_response(VolumeList(volumes=summaries, volumes_links=links))


@routes.get(
    f"{VOLUMES}/detail",
    "List volumes in detail",
    query=VolumeQuery,
    replies=[Reply(200, VolumeDetailList, "The volumes, newest first.")],
    errors=(404,),
)
async def list_volume_details(request: web.Request, query: VolumeQuery) -> web.Response:
    """403: another project's path; 404: the marker is no volume of the list."""
    project_id, volumes, links = await _list(request, query)
    views = [volume_view(request, project_id, volume) for volume in volumes]
    return json_response(VolumeDetailList(volumes=views, volumes_links=links))


@routes.post(
    VOLUMES,
    "Create a volume",
    body=VolumeCreateRequest,
    replies=[Reply(202, VolumeShown, "The volume (available, or error with a fault).")],
    errors=(404, 409, 413),
)
async def create_volume(request: web.Request, body: VolumeCreateRequest) -> web.Response:
    """400: two sources; 403: another project's path; 404: no such volume type, snapshot, source
    volume or image; 409: the source is not available (an image: active), or bigger than ``size``;
    413: past the project's volumes, gigabytes or per_volume_gigabytes quota (Cinder's message)."""
    project_id = _project(request, "create")
    asked = body.volume
    with cinder_quota():
        volume = await client(request, Volumes, timeout=COPY_TIMEOUT).create(
            size=asked.size,
            name=asked.name or "",
            description=asked.description or "",
            metadata=asked.metadata,
            volume_type=asked.volume_type,
            snapshot_id=asked.snapshot_id,
            source_volid=asked.source_volid,
            image_id=asked.image_ref,
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
        metadata=given(asked.metadata),
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
    """403: another project's path; 404: no such volume; 409: it is attached (or attaching...), or
    it has snapshots (Cinder's 400)."""
    _project(request, "delete")
    await client(request, Volumes).delete(volume_id=request.match_info["volume_id"])
    return no_content(202)


# -- a volume's metadata --------------------------------------------------------------------


class ItemsRequest(OpenRequest):
    metadata: Metadata


class ItemRequest(OpenRequest):
    """One metadata item, its key the path's."""

    meta: Annotated[Metadata, Meta(min_length=1, max_length=1)]


class ItemsShown(Body):
    metadata: dict[str, str]


class ItemShown(Body):
    meta: dict[str, str]


def _one_item(request: web.Request, body: ItemRequest) -> tuple[str, str]:
    """The item of a ``meta`` body. :raises InvalidRequest: its key is not the path's."""
    key = request.match_info["key"]
    [(given_key, value)] = body.meta.items()
    if given_key != key:
        raise InvalidRequest("Request body and URI mismatch")
    return key, value


def _item(metadata: dict[str, str], key: str, what: str) -> ItemShown:
    """One item of some metadata. :raises NotFound: there is none of that key."""
    if key not in metadata:
        raise NotFound(f"{what} has no metadata with key {key}.")
    return ItemShown(meta={key: metadata[key]})


@routes.get(
    f"{VOLUMES}/{{volume_id}}/metadata",
    "Show a volume's metadata",
    replies=[Reply(200, ItemsShown, "The volume's own metadata.")],
    errors=ERRORS_OF_A_VOLUME,
)
async def show_volume_metadata(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such volume."""
    _project(request, "get")
    volume = await client(request, Volumes).get(volume_id=request.match_info["volume_id"])
    return json_response(ItemsShown(metadata=volume["metadata"]))


@routes.post(
    f"{VOLUMES}/{{volume_id}}/metadata",
    "Add to a volume's metadata",
    body=ItemsRequest,
    replies=[Reply(200, ItemsShown, "The volume's metadata, these items merged in.")],
    errors=ERRORS_OF_A_VOLUME,
)
async def add_volume_metadata(request: web.Request, body: ItemsRequest) -> web.Response:
    """403: another project's path; 404: no such volume."""
    _project(request, "update_volume_metadata")
    volume_id = request.match_info["volume_id"]
    metadata = await client(request, Volumes).set_metadata(volume_id=volume_id, metadata=body.metadata)
    return json_response(ItemsShown(metadata=metadata))


@routes.put(
    f"{VOLUMES}/{{volume_id}}/metadata",
    "Replace a volume's metadata",
    body=ItemsRequest,
    replies=[Reply(200, ItemsShown, "The volume's metadata: these items.")],
    errors=ERRORS_OF_A_VOLUME,
)
async def replace_volume_metadata(request: web.Request, body: ItemsRequest) -> web.Response:
    """403: another project's path; 404: no such volume."""
    _project(request, "update_volume_metadata")
    volume_id = request.match_info["volume_id"]
    metadata = await client(request, Volumes).set_metadata(
        volume_id=volume_id, metadata=body.metadata, replace=True
    )
    return json_response(ItemsShown(metadata=metadata))


@routes.get(
    f"{VOLUMES}/{{volume_id}}/metadata/{{key}}",
    "Show a volume's metadata item",
    replies=[Reply(200, ItemShown, "The item.")],
    errors=ERRORS_OF_A_VOLUME,
    path_types=METADATA_KEY,
)
async def show_volume_metadata_item(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such volume, or no such item."""
    _project(request, "get")
    volume = await client(request, Volumes).get(volume_id=request.match_info["volume_id"])
    return json_response(_item(volume["metadata"], request.match_info["key"], f"Volume {volume['id']}"))


@routes.put(
    f"{VOLUMES}/{{volume_id}}/metadata/{{key}}",
    "Set a volume's metadata item",
    body=ItemRequest,
    replies=[Reply(200, ItemShown, "The item.")],
    errors=ERRORS_OF_A_VOLUME,
    path_types=METADATA_KEY,
)
async def set_volume_metadata_item(request: web.Request, body: ItemRequest) -> web.Response:
    """400: the body's key is not the path's; 403: another project's path; 404: no such volume."""
    _project(request, "update_volume_metadata")
    volumes = client(request, Volumes)
    volume_id = (await volumes.get(volume_id=request.match_info["volume_id"]))["id"]  # 404 first
    key, value = _one_item(request, body)
    await volumes.set_metadata(volume_id=volume_id, metadata={key: value})
    return json_response(ItemShown(meta={key: value}))


@routes.delete(
    f"{VOLUMES}/{{volume_id}}/metadata/{{key}}",
    "Delete a volume's metadata item",
    replies=[Reply(200, None, "Deleted.")],
    errors=ERRORS_OF_A_VOLUME,
    path_types=METADATA_KEY,
)
async def delete_volume_metadata_item(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such volume, or no such item."""
    _project(request, "delete_volume_metadata")
    volume_id, key = request.match_info["volume_id"], request.match_info["key"]
    await client(request, Volumes).delete_metadata(volume_id=volume_id, key=key)
    return no_content(200)


# -- volume actions -------------------------------------------------------------------------


class BootableFlag(OpenRequest):
    bootable: Flag


class ReadonlyFlag(OpenRequest):
    readonly: Flag


class ExtendSize(OpenRequest):
    new_size: Size


class VolumeAction(Request):
    """Exactly one action (an unknown one is 400); the values of those that take none are not read."""

    set_bootable: BootableFlag | UnsetType = msgspec.field(default=UNSET, name="os-set_bootable")
    update_readonly_flag: ReadonlyFlag | UnsetType = msgspec.field(
        default=UNSET, name="os-update_readonly_flag"
    )
    extend: ExtendSize | UnsetType = msgspec.field(default=UNSET, name="os-extend")
    reserve: Any = msgspec.field(default=UNSET, name="os-reserve")
    unreserve: Any = msgspec.field(default=UNSET, name="os-unreserve")
    begin_detaching: Any = msgspec.field(default=UNSET, name="os-begin_detaching")
    roll_detaching: Any = msgspec.field(default=UNSET, name="os-roll_detaching")
    __schema_extra__: ClassVar[dict[str, Any]] = {"minProperties": 1, "maxProperties": 1}

    def __post_init__(self) -> None:
        given_actions = [name for name in self.__struct_fields__ if getattr(self, name) is not UNSET]
        if len(given_actions) != 1:
            raise ValueError(f"exactly one action is expected, not {len(given_actions)}")


def _flag(value: Flag) -> bool:
    return value if isinstance(value, bool) else value.lower() == "true"


@routes.post(
    f"{VOLUMES}/{{volume_id}}/action",
    "Act on a volume",
    body=VolumeAction,
    replies=[
        Reply(200, None, "Done (os-set_bootable)."),
        Reply(
            202,
            None,
            "Done (os-update_readonly_flag, os-extend, os-reserve, os-unreserve, os-begin_detaching,"
            " os-roll_detaching).",
        ),
    ],
    errors=(404, 409, 413),
)
async def volume_action(request: web.Request, body: VolumeAction) -> web.Response:
    """403: another project's path; 404: no such volume; 409: the volume's status does not allow
    the action (os-extend: not available, or not bigger; the storage host could not grow the file).
    Cinder answers 400 where the status refuses an action: 409 here, as for every request its
    resource's state refuses. 413 (os-extend): past the project's gigabytes or
    per_volume_gigabytes quota."""
    _project(request, "update")
    volume_id = request.match_info["volume_id"]
    volumes = client(request, Volumes)
    if isinstance(body.set_bootable, BootableFlag):
        await volumes.set_bootable(volume_id=volume_id, bootable=_flag(body.set_bootable.bootable))
        return no_content(200)
    if isinstance(body.update_readonly_flag, ReadonlyFlag):
        await volumes.set_readonly(volume_id=volume_id, readonly=_flag(body.update_readonly_flag.readonly))
    elif isinstance(body.extend, ExtendSize):
        with cinder_quota():
            await volumes.extend(volume_id=volume_id, new_size=body.extend.new_size)
    elif body.reserve is not UNSET:
        await volumes.reserve_volume(volume_id=volume_id)
    elif body.unreserve is not UNSET:
        await volumes.unreserve(volume_id=volume_id)
    elif body.begin_detaching is not UNSET:
        await volumes.begin_detaching(volume_id=volume_id)
    else:
        await volumes.roll_detaching(volume_id=volume_id)
    return no_content(202)


# -- availability zones, extensions ---------------------------------------------------------


class VolumeZoneState(Body):
    available: bool


class VolumeZone(Body):
    zone_name: str = msgspec.field(name="zoneName")
    zone_state: VolumeZoneState = msgspec.field(name="zoneState")


class VolumeZones(Body):
    availability_zone_info: list[VolumeZone] = msgspec.field(name="availabilityZoneInfo")


@routes.get(
    f"{BASE}/os-availability-zone",
    "List availability zones",
    replies=[Reply(200, VolumeZones, "The one zone, nova: every storage host's.")],
    errors=(404,),
)
async def list_availability_zones(request: web.Request) -> web.Response:
    """403: another project's path."""
    _project(request, "availability_zone_list")
    return json_response(
        VolumeZones(
            availability_zone_info=[VolumeZone(zone_name="nova", zone_state=VolumeZoneState(available=True))]
        )
    )


class VolumeExtension(Body):
    name: str
    alias: str
    description: str
    updated: Time
    links: list[Link]


class VolumeExtensions(Body):
    extensions: list[VolumeExtension]


EXTENSIONS = (
    ("AvailabilityZones", "os-availability-zone", "Describe Availability VolumeZones."),
    ("ExtendedSnapshotAttributes", "os-extended-snapshot-attributes", "Extended attributes for snapshots."),
    (
        "VolumeTenantAttribute",
        "os-vol-tenant-attr",
        "Expose the internal project_id as an attribute of a volume.",
    ),
    ("VolumeActions", "os-volume-actions", "Enable volume actions."),
    ("VolumeImageMetadata", "os-vol-image-meta", "Show image metadata associated with the volume."),
    ("Types_manage", "os-types-manage", "Types manage support."),
    ("Quotas", "os-quota-sets", "Quota management support."),
)
"""The Cinder extensions this API serves (the routes and members they name)."""


@routes.get(
    f"{BASE}/extensions",
    "List the extensions",
    replies=[Reply(200, VolumeExtensions, "The Cinder extensions served.")],
    errors=(404,),
)
async def list_extensions(request: web.Request) -> web.Response:
    """403: another project's path."""
    _project(request, "extensions")
    return json_response(
        VolumeExtensions(
            extensions=[
                VolumeExtension(
                    name=name, alias=alias, description=text, updated="2013-01-01T00:00:00Z", links=[]
                )
                for name, alias, text in EXTENSIONS
            ]
        )
    )


# -- volume types ---------------------------------------------------------------------------


class VolumeTypeView(Body):
    id: str
    name: str
    description: str | None
    is_public: bool
    access_is_public: bool = msgspec.field(name="os-volume-type-access:is_public")
    extra_specs: dict[str, str]


class VolumeTypeShown(Body):
    volume_type: VolumeTypeView


class VolumeTypeList(Body):
    volume_types: list[VolumeTypeView]


class VolumeTypeCreate(OpenRequest):
    name: Name
    description: Text | None = None
    is_public: bool = msgspec.field(default=True, name="os-volume-type-access:is_public")
    extra_specs: Metadata | None = None


class VolumeTypeCreateRequest(OpenRequest):
    volume_type: VolumeTypeCreate


def _type_view(volume_type: TypeRecord) -> VolumeTypeView:
    return VolumeTypeView(
        id=volume_type["id"],
        name=volume_type["name"],
        description=volume_type["description"],
        is_public=volume_type["is_public"],
        access_is_public=volume_type["is_public"],
        extra_specs=volume_type["extra_specs"],
    )


@routes.get(
    TYPES,
    "List volume types",
    replies=[Reply(200, VolumeTypeList, f"The types, {DEFAULT_TYPE} first.")],
    errors=(404,),
)
async def list_volume_types(request: web.Request) -> web.Response:
    """403: another project's path."""
    _project(request, "type_get_all")
    types = await client(request, Volumes).list_types()
    return json_response(VolumeTypeList(volume_types=[_type_view(volume_type) for volume_type in types]))


@routes.get(
    f"{TYPES}/{{type_id}}",
    "Show a volume type",
    replies=[Reply(200, VolumeTypeShown, "The type.")],
    errors=(404,),
)
async def show_volume_type(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such type (by id or name)."""
    _project(request, "type_get")
    volume_type = await client(request, Volumes).get_type(type_id=request.match_info["type_id"])
    return json_response(VolumeTypeShown(volume_type=_type_view(volume_type)))


@routes.post(
    TYPES,
    "Create a volume type",
    body=VolumeTypeCreateRequest,
    replies=[Reply(200, VolumeTypeShown, "The type.")],
    errors=(404, 409),
)
async def create_volume_type(request: web.Request, body: VolumeTypeCreateRequest) -> web.Response:
    """403: another project's path, or the caller is no admin; 409: a type of that name exists."""
    _project(request, "type_create")
    asked = body.volume_type
    volume_type = await client(request, Volumes).create_type(
        name=asked.name,
        description=asked.description,
        is_public=asked.is_public,
        extra_specs=asked.extra_specs,
    )
    return json_response(VolumeTypeShown(volume_type=_type_view(volume_type)))


@routes.delete(
    f"{TYPES}/{{type_id}}",
    "Delete a volume type",
    replies=[Reply(202, None, "Deleted.")],
    errors=(404, 409),
)
async def delete_volume_type(request: web.Request) -> web.Response:
    """403: another project's path, or no admin; 404: no such type; 409: the default type, or
    volumes are of it (Cinder answers 400: the request is right, the types' state refuses it)."""
    _project(request, "type_delete")
    await client(request, Volumes).delete_type(type_id=request.match_info["type_id"])
    return no_content(202)


# -- snapshots ------------------------------------------------------------------------------


class SnapshotView(Body):
    """A snapshot as create and update answer it."""

    id: str
    volume_id: str
    name: str
    description: str
    size: int
    """GiB."""
    status: SnapshotStatus
    metadata: dict[str, str]
    created_at: Time
    updated_at: Time


class SnapshotDetail(SnapshotView):
    """A snapshot as show and the detailed list answer it."""

    progress: str = msgspec.field(name="os-extended-snapshot-attributes:progress")
    project_id: str | None = msgspec.field(name="os-extended-snapshot-attributes:project_id")
    fault: str | UnsetType = UNSET
    """What went wrong with the snapshot's file."""


class SnapshotShown(Body):
    snapshot: SnapshotView


class SnapshotDetailShown(Body):
    snapshot: SnapshotDetail


class SnapshotList(Body):
    snapshots: list[SnapshotView]
    snapshots_links: list[Link] | UnsetType = UNSET
    """The next page's link, when the page is full."""


class SnapshotDetailList(Body):
    snapshots: list[SnapshotDetail]
    snapshots_links: list[Link] | UnsetType = UNSET
    """The next page's link, when the page is full."""


class SnapshotCreate(OpenRequest):
    """A copy of an available volume's file (``force``, which Cinder takes for in-use volumes, is
    not: an in-use volume is refused whatever it says). A null ``volume_id`` names no volume: 404,
    as Cinder answers."""

    volume_id: Id | None
    name: Text | None = None
    description: Text | None = None
    metadata: Metadata | None = None


class SnapshotCreateRequest(OpenRequest):
    snapshot: SnapshotCreate


class SnapshotUpdate(OpenRequest):
    name: Text | None = None
    description: Text | None = None


class SnapshotUpdateRequest(OpenRequest):
    snapshot: SnapshotUpdate


class SnapshotQuery(Query):
    name: Annotated[str, Meta(description="Snapshots of this name.")] | UnsetType = UNSET
    status: Annotated[str, Meta(description="Snapshots in this status.")] | UnsetType = UNSET
    volume_id: Annotated[str, Meta(description="Snapshots of this volume.")] | UnsetType = UNSET
    all_tenants: Annotated[bool, Meta(description="Admins: every project's snapshots.")] = False
    limit: (
        Annotated[PageSize, Meta(description="At most this many (a full page links the next).")] | UnsetType
    ) = UNSET
    marker: Annotated[Id, Meta(description="From the snapshot after this one.")] | UnsetType = UNSET
    offset: Annotated[Offset, Meta(description="From the offset-th snapshot.")] | UnsetType = UNSET
    sort: SnapshotSortParameter | UnsetType = UNSET
    sort_key: SnapshotSortKeyParameter | UnsetType = UNSET
    sort_dir: SortDirection | UnsetType = UNSET


def _snapshot_view(snapshot: SnapshotRecord) -> SnapshotView:
    return SnapshotView(
        id=snapshot["id"],
        volume_id=snapshot["volume_id"],
        name=snapshot["name"],
        description=snapshot["description"],
        size=snapshot["size"],
        status=snapshot["status"],
        metadata=snapshot["metadata"],
        created_at=snapshot["created_at"],
        updated_at=snapshot["updated_at"],
    )


def _snapshot_detail(snapshot: SnapshotRecord) -> SnapshotDetail:
    return SnapshotDetail(
        **msgspec.structs.asdict(_snapshot_view(snapshot)),
        progress="100%" if snapshot["status"] == "available" else "0%",
        project_id=snapshot["project_id"],
        fault=snapshot["fault"] or UNSET,
    )


async def _snapshots(request: web.Request, query: SnapshotQuery) -> list[SnapshotRecord]:
    _project(request, "get_all_snapshots")
    return await client(request, Volumes).list_snapshots(
        name=query.name or None,
        status=query.status or None,
        volume_id=query.volume_id or None,
        all_tenants=query.all_tenants,
        sort=_sort(query),
        limit=given(query.limit),
        marker=given(query.marker),
        offset=given(query.offset) or 0,
    )


@routes.get(
    SNAPSHOTS,
    "List snapshots",
    query=SnapshotQuery,
    replies=[Reply(200, SnapshotList, "Newest first, or as sorted.")],
    errors=(404,),
)
async def list_snapshots(request: web.Request, query: SnapshotQuery) -> web.Response:
    """403: another project's path; 404: the marker is no snapshot of the list."""
    snapshots = await _snapshots(request, query)
    views = [_snapshot_view(snapshot) for snapshot in snapshots]
    return json_response(
        SnapshotList(snapshots=views, snapshots_links=_next_page(request, snapshots, given(query.limit)))
    )


@routes.get(
    f"{SNAPSHOTS}/detail",
    "List snapshots in detail",
    query=SnapshotQuery,
    replies=[Reply(200, SnapshotDetailList, "Newest first, or as sorted.")],
    errors=(404,),
)
async def list_snapshot_details(request: web.Request, query: SnapshotQuery) -> web.Response:
    """403: another project's path; 404: the marker is no snapshot of the list."""
    snapshots = await _snapshots(request, query)
    details = [_snapshot_detail(snapshot) for snapshot in snapshots]
    links = _next_page(request, snapshots, given(query.limit))
    return json_response(SnapshotDetailList(snapshots=details, snapshots_links=links))


@routes.post(
    SNAPSHOTS,
    "Create a snapshot",
    body=SnapshotCreateRequest,
    replies=[Reply(202, SnapshotShown, "The snapshot (available, or error with a fault).")],
    errors=(404, 409, 413),
)
async def create_snapshot(request: web.Request, body: SnapshotCreateRequest) -> web.Response:
    """403: another project's path; 404: no such volume; 409: the volume is not available; 413:
    past the project's snapshots or gigabytes quota."""
    _project(request, "create_snapshot")
    asked = body.snapshot
    if asked.volume_id is None:
        raise NotFound("Volume None could not be found.")
    with cinder_quota():
        snapshot = await client(request, Volumes, timeout=COPY_TIMEOUT).create_snapshot(
            volume_id=asked.volume_id,
            name=asked.name or "",
            description=asked.description or "",
            metadata=asked.metadata,
        )
    return json_response(SnapshotShown(snapshot=_snapshot_view(snapshot)), status=202)


@routes.get(
    f"{SNAPSHOTS}/{{snapshot_id}}",
    "Show a snapshot",
    replies=[Reply(200, SnapshotDetailShown, "The snapshot.")],
    errors=(404,),
    path_types=SNAPSHOT_ID,
)
async def show_snapshot(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such snapshot."""
    _project(request, "get_snapshot")
    snapshot = await client(request, Volumes).get_snapshot(snapshot_id=request.match_info["snapshot_id"])
    return json_response(SnapshotDetailShown(snapshot=_snapshot_detail(snapshot)))


@routes.put(
    f"{SNAPSHOTS}/{{snapshot_id}}",
    "Update a snapshot",
    body=SnapshotUpdateRequest,
    replies=[Reply(200, SnapshotShown, "The snapshot.")],
    errors=(404,),
    path_types=SNAPSHOT_ID,
)
async def update_snapshot(request: web.Request, body: SnapshotUpdateRequest) -> web.Response:
    """403: another project's path; 404: no such snapshot."""
    _project(request, "update_snapshot")
    snapshot = await client(request, Volumes).update_snapshot(
        snapshot_id=request.match_info["snapshot_id"],
        name=body.snapshot.name,
        description=body.snapshot.description,
    )
    return json_response(SnapshotShown(snapshot=_snapshot_view(snapshot)))


@routes.delete(
    f"{SNAPSHOTS}/{{snapshot_id}}",
    "Delete a snapshot",
    replies=[Reply(202, None, "Deleted, file and all.")],
    errors=(404, 409),
    path_types=SNAPSHOT_ID,
)
async def delete_snapshot(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such snapshot; 409: it is creating or deleting."""
    _project(request, "delete_snapshot")
    await client(request, Volumes).delete_snapshot(snapshot_id=request.match_info["snapshot_id"])
    return no_content(202)


@routes.get(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata",
    "Show a snapshot's metadata",
    replies=[Reply(200, ItemsShown, "The metadata.")],
    errors=(404,),
)
async def show_snapshot_metadata(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such snapshot."""
    _project(request, "get_snapshot_metadata")
    snapshot = await client(request, Volumes).get_snapshot(snapshot_id=request.match_info["snapshot_id"])
    return json_response(ItemsShown(metadata=snapshot["metadata"]))


async def _set_snapshot_metadata(
    request: web.Request, metadata: dict[str, str], *, replace: bool
) -> dict[str, str]:
    """Merge (or ``replace``) the path's snapshot's metadata; the metadata after."""
    snapshot = await client(request, Volumes).update_snapshot(
        snapshot_id=request.match_info["snapshot_id"], metadata=metadata, replace_metadata=replace
    )
    return snapshot["metadata"]


@routes.post(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata",
    "Add to a snapshot's metadata",
    body=ItemsRequest,
    replies=[Reply(200, ItemsShown, "The snapshot's metadata, these items merged in.")],
    errors=(404,),
)
async def add_snapshot_metadata(request: web.Request, body: ItemsRequest) -> web.Response:
    """403: another project's path; 404: no such snapshot."""
    _project(request, "update_snapshot_metadata")
    return json_response(
        ItemsShown(metadata=await _set_snapshot_metadata(request, body.metadata, replace=False))
    )


@routes.put(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata",
    "Replace a snapshot's metadata",
    body=ItemsRequest,
    replies=[Reply(200, ItemsShown, "The snapshot's metadata: these items.")],
    errors=(404,),
)
async def replace_snapshot_metadata(request: web.Request, body: ItemsRequest) -> web.Response:
    """403: another project's path; 404: no such snapshot."""
    _project(request, "update_snapshot_metadata")
    return json_response(
        ItemsShown(metadata=await _set_snapshot_metadata(request, body.metadata, replace=True))
    )


@routes.get(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata/{{key}}",
    "Show a snapshot's metadata item",
    replies=[Reply(200, ItemShown, "The item.")],
    errors=(404,),
    path_types=METADATA_KEY,
)
async def show_snapshot_metadata_item(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such snapshot, or no such item."""
    _project(request, "get_snapshot_metadata")
    snapshot = await client(request, Volumes).get_snapshot(snapshot_id=request.match_info["snapshot_id"])
    return json_response(_item(snapshot["metadata"], request.match_info["key"], f"Snapshot {snapshot['id']}"))


@routes.put(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata/{{key}}",
    "Set a snapshot's metadata item",
    body=ItemRequest,
    replies=[Reply(200, ItemShown, "The item.")],
    errors=(404,),
    path_types=METADATA_KEY,
)
async def set_snapshot_metadata_item(request: web.Request, body: ItemRequest) -> web.Response:
    """400: the body's key is not the path's; 403: another project's path; 404: no such snapshot."""
    _project(request, "update_snapshot_metadata")
    await client(request, Volumes).get_snapshot(snapshot_id=request.match_info["snapshot_id"])  # 404 first
    key, value = _one_item(request, body)
    await _set_snapshot_metadata(request, {key: value}, replace=False)
    return json_response(ItemShown(meta={key: value}))


@routes.delete(
    f"{SNAPSHOTS}/{{snapshot_id}}/metadata/{{key}}",
    "Delete a snapshot's metadata item",
    replies=[Reply(200, None, "Deleted.")],
    errors=(404,),
    path_types=METADATA_KEY,
)
async def delete_snapshot_metadata_item(request: web.Request) -> web.Response:
    """403: another project's path; 404: no such snapshot, or no such item."""
    _project(request, "delete_snapshot_metadata")
    snapshot_id, key = request.match_info["snapshot_id"], request.match_info["key"]
    await client(request, Volumes).delete_snapshot_metadata(snapshot_id=snapshot_id, key=key)
    return no_content(200)


routes.include(quota_routes)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
