"""Image (Glance v2) routes: image records, and image data streamed through the image actor in chunks.

Uploads and downloads never hold a whole image in gateway memory: each chunk (at most
``CHUNK`` bytes) is one ``Images.upload_chunk`` or ``Images.read_chunk`` call.

An image is shown as Glance shows it: its extra properties flattened to the top level (each a
string), plus ``self``, ``file`` and ``schema``. A create body is the same: the image's own
members, and any other member is an extra property (a read-only one is 403). A PATCH body is a
list of Glance's JSON-patch operations, in either of its dialects (``PATCH_V21``, ``PATCH_V20``),
each on one member: the request's schema lists which take what value.
"""

from __future__ import annotations

import contextlib
import logging
import typing
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlencode

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.fields import Amount
from api.image import (
    CHUNK_MAX,
    RESERVED,
    RESERVED_PREFIX,
    UPDATABLE,
    Change,
    ContainerFormat,
    DiskFormat,
    ImageName,
    Images,
    ImageStatus,
    PatchOp,
    PropertyName,
    PropertyValue,
    Sort,
    SortKey,
    Tag,
    Visibility,
)
from api.image import (
    READ_ONLY as READ_ONLY_FIELDS,
)
from api.image import Image as Record
from bus import AiostackError, Conflict, Forbidden, InvalidRequest, NotFound
from gateway.http import REQUEST_ID, client, json_response, no_content
from gateway.routing import (
    BODY,
    MAX_AMOUNT,
    OCTETS,
    Body,
    Id,
    Link,
    OpenRequest,
    Query,
    Reply,
    Request,
    Routes,
    Time,
    body_pieces,
    decode_json,
    given,
)

log = logging.getLogger(__name__)

CHUNK = CHUNK_MAX
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
IMAGES = "/image/v2/images"
READ_ONLY = (
    "status", "checksum", "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size",
    "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url", "properties",
)  # fmt: skip
"""Members a create body may not set (403): the image's computed fields, and ``properties``."""
EXTRA_PROPERTY = {"type": "string", "maxLength": 255}
REFUSALS = (Conflict, Forbidden, InvalidRequest, NotFound)
UUID = Annotated[
    str,
    Meta(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        max_length=36,
    ),
]


# -- images -----------------------------------------------------------------------------------


class ImageCreate(OpenRequest):
    """An image record to create, ``queued`` until its data is uploaded. Any member not named
    here is an extra property: a string of at most 255 characters (a read-only member is 403).
    A public image is for admins only (403)."""

    name: ImageName | UnsetType | None = UNSET
    id: UUID | UnsetType = UNSET
    disk_format: DiskFormat | UnsetType = UNSET
    container_format: ContainerFormat | UnsetType = UNSET
    visibility: Visibility | UnsetType = UNSET
    min_disk: Amount | UnsetType = UNSET
    min_ram: Amount | UnsetType = UNSET
    protected: bool | UnsetType = UNSET
    os_hidden: bool | UnsetType = UNSET
    tags: list[Tag] | UnsetType = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "additionalProperties": EXTRA_PROPERTY,
        "propertyNames": {"minLength": 1, "maxLength": 255, "not": {"enum": list(READ_ONLY)}},
    }


class Image(Body, forbid_unknown_fields=False):
    """An image as Glance v2 shows it; its extra properties are more members, each a string."""

    id: str
    name: str | None
    status: ImageStatus
    visibility: Visibility
    protected: bool
    os_hidden: bool
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    owner: str | None
    size: int | None
    virtual_size: int | None
    min_disk: int
    min_ram: int
    disk_format: DiskFormat
    container_format: ContainerFormat
    created_at: Time
    updated_at: Time
    tags: list[str]
    self_: str = msgspec.field(name="self")
    file: str
    schema: str
    __schema_extra__: ClassVar[dict[str, Any]] = {"additionalProperties": {"type": "string"}}


class ImageList(Body):
    images: list[Image]
    schema: str
    first: str
    next: Annotated[str, Meta(description="The next page, when this one is full.")] | UnsetType = UNSET


_ALL = (
    "Images of this visibility; all: every image the caller may see. Absent: all but other projects'"
    " community images (Glance's default list, where another project's community image never"
    " shadows a name)."
)
_LIMIT = "At most this many images (and at most 1000)."
_MARKER = "The id of the last image of the previous page (one the caller sees, else 400)."
_MEMBERS = (
    "Shared images of this membership status; aiostack keeps no image members, so a shared image"
    " is listed to its owner only, whatever this says."
)
_SORT_KEY = "(" + "|".join(typing.get_args(SortKey)) + ")"
_SORT_DIR = "(asc|desc)"
_SORT = (
    "Sort by these keys, each with its direction (default desc): key:dir,key2 (Glance's newer"
    " syntax; its keys come before any sort_key's)."
)
_SORT_KEYS = "Sort by these keys (repeatable, or a comma list), the first first; by created_at when absent."
_SORT_DIRS = (
    "The direction of each sort_key in order (repeatable, or a comma list); a key without one of its"
    " own takes the last one given (desc when none is), and one beyond the keys is left unused."
)
Size = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Flag = Literal["true", "false", "True", "False"]
"""A boolean filter as Glance takes it (openstacksdk sends Python's spelling)."""


class ImageQuery(Query):
    name: Annotated[str, Meta(description="Images of this name.")] | UnsetType = UNSET
    status: Annotated[ImageStatus, Meta(description="Images in this status.")] | UnsetType = UNSET
    visibility: Annotated[Visibility | Literal["all"], Meta(description=_ALL)] | UnsetType = UNSET
    member_status: Annotated[
        Literal["pending", "accepted", "rejected", "all"], Meta(description=_MEMBERS)
    ] = "accepted"
    owner: Annotated[str, Meta(description="Images of this project.")] | UnsetType = UNSET
    container_format: Annotated[ContainerFormat, Meta(description="Images of this container format.")] | (
        UnsetType
    ) = UNSET
    disk_format: Annotated[DiskFormat, Meta(description="Images of this disk format.")] | UnsetType = UNSET
    size: Annotated[Size, Meta(description="Images of this size in bytes.")] | UnsetType = UNSET
    size_min: Annotated[Size, Meta(description="Images of at least this size.")] | UnsetType = UNSET
    size_max: Annotated[Size, Meta(description="Images of at most this size.")] | UnsetType = UNSET
    tag: Annotated[list[Tag], Meta(description="Images with every one of these tags (repeatable).")] = []
    protected: Annotated[Flag, Meta(description="Protected images (true) or the others.")] | UnsetType = UNSET
    os_hidden: Annotated[Flag, Meta(description="Hidden images only (true), else none of them.")] = "false"
    sort: (
        Annotated[
            str,
            Meta(pattern=f"^{_SORT_KEY}(:{_SORT_DIR})?(,{_SORT_KEY}(:{_SORT_DIR})?)*$", description=_SORT),
        ]
        | UnsetType
    ) = UNSET
    sort_key: Annotated[
        list[Annotated[str, Meta(pattern=f"^{_SORT_KEY}(,{_SORT_KEY})*$")]], Meta(description=_SORT_KEYS)
    ] = []
    sort_dir: Annotated[
        list[Annotated[str, Meta(pattern=f"^{_SORT_DIR}(,{_SORT_DIR})*$")]], Meta(description=_SORT_DIRS)
    ] = []
    limit: Annotated[int, Meta(ge=0, le=MAX_AMOUNT, description=_LIMIT)] = DEFAULT_LIMIT
    marker: Annotated[Id, Meta(description=_MARKER)] | UnsetType = UNSET

    def order(self) -> list[Sort]:
        """The sort keys asked, each with its direction: ``sort``'s, then ``sort_key``'s."""
        order = []
        for item in self.sort.split(",") if self.sort is not UNSET else ():
            key, _, direction = item.partition(":")
            order.append({"key": key, "direction": direction or "desc"})
        keys = [key for value in self.sort_key for key in value.split(",")]
        directions = [direction for value in self.sort_dir for direction in value.split(",")]
        for index, key in enumerate(keys):
            direction = directions[min(index, len(directions) - 1)] if directions else "desc"
            order.append({"key": key, "direction": direction})
        return msgspec.convert(order, list[Sort])


def image_view(image: Record) -> dict[str, Any]:
    """An image as Glance v2 shows it: ``Image``'s members, and the extra properties flattened."""
    view = Image(
        id=image["id"],
        name=image["name"],
        status=image["status"],
        visibility=image["visibility"],
        protected=image["protected"],
        os_hidden=image["os_hidden"],
        checksum=image["checksum"],
        os_hash_algo=image["os_hash_algo"],
        os_hash_value=image["os_hash_value"],
        owner=image["owner"],
        size=image["size"],
        virtual_size=image["virtual_size"],
        min_disk=image["min_disk"],
        min_ram=image["min_ram"],
        disk_format=image["disk_format"],
        container_format=image["container_format"],
        created_at=image["created_at"],
        updated_at=image["updated_at"],
        tags=image["tags"],
        self_=f"/v2/images/{image['id']}",
        file=f"/v2/images/{image['id']}/file",
        schema="/v2/schemas/image",
    )
    shown: dict[str, Any] = msgspec.structs.asdict(view)
    shown["self"] = shown.pop("self_")
    return {**image["properties"], **shown}


def _properties(raw: bytes) -> dict[str, str]:
    """The extra properties of a create body (its members ``ImageCreate`` does not name).

    :raises Forbidden: a read-only member. :raises InvalidRequest: a property that is no string.
    """
    members = decode_json(raw, dict[str, Any])
    extra = {key: value for key, value in members.items() if key not in ImageCreate.__struct_encode_fields__}
    for key in extra:
        if key in READ_ONLY:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    try:
        return msgspec.convert(extra, dict[PropertyName, PropertyValue])
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid input for the request body: extra properties: {exc}") from None


routes = Routes()


class ImageVersion(Body):
    id: str
    status: str
    links: list[Link]


class ImageVersions(Body):
    versions: list[ImageVersion]


async def versions(request: web.Request) -> web.Response:
    """The image API's version document (where clients discover ``/v2``)."""
    base = f"{request.scheme}://{request.host}/image/v2/"
    version = ImageVersion(id="v2.9", status="CURRENT", links=[Link(rel="self", href=base)])
    return json_response(ImageVersions(versions=[version]), status=300)


for _path in ("/image", "/image/"):
    routes.get(
        _path,
        "Image API versions",
        public=True,
        replies=[Reply(300, ImageVersions, "The versions of the image API.")],
    )(versions)


@routes.get(IMAGES, "List images", query=ImageQuery, replies=[Reply(200, ImageList, "A page of images.")])
async def list_images(request: web.Request, query: ImageQuery) -> web.Response:
    """The images the project sees, filtered and sorted as Glance does (newest first by default);
    400 for a ``marker`` that is no image it sees."""
    limit = min(query.limit, MAX_LIMIT)
    images = await client(request, Images).list(
        name=given(query.name),
        status=given(query.status),
        visibility=given(query.visibility),
        owner=given(query.owner),
        container_format=given(query.container_format),
        disk_format=given(query.disk_format),
        size=given(query.size),
        size_min=given(query.size_min),
        size_max=given(query.size_max),
        tags=query.tag or None,
        protected=None if query.protected is UNSET else query.protected.lower() == "true",
        os_hidden=query.os_hidden.lower() == "true",
        sort=query.order() or None,
        limit=limit,
        marker=given(query.marker),
    )
    # each image a dict of Image's members and the extra properties (Image takes them, unchecked)
    shown: list[Any] = [image_view(image) for image in images]
    page = ImageList(images=shown, schema="/v2/schemas/images", first="/v2/images")
    if images and len(images) == limit:
        kept = [(key, value) for key, value in request.query.items() if key not in ("marker", "limit")]
        page.next = "/v2/images?" + urlencode([*kept, ("limit", str(limit)), ("marker", images[-1]["id"])])
    return json_response(page)


@routes.post(
    IMAGES,
    "Create an image record",
    body=ImageCreate,
    replies=[Reply(201, Image, "The image, queued.", headers={"Location": "The image's URL."})],
    errors=(409,),
)
async def create_image(request: web.Request, body: ImageCreate) -> web.Response:
    """403: a read-only member, or a public image asked by someone other than an admin;
    409: an image with this ``id`` exists (or existed)."""
    properties = _properties(request[BODY])
    arguments = {key: value for key, value in msgspec.structs.asdict(body).items() if value is not UNSET}
    image = await client(request, Images).create(**arguments, properties=properties)
    return json_response(image_view(image), status=201, headers={"Location": f"{IMAGES}/{image['id']}"})


@routes.get(
    f"{IMAGES}/{{image_id}}", "Show an image", replies=[Reply(200, Image, "The image.")], errors=(404,)
)
async def show_image(request: web.Request) -> web.Response:
    image = await client(request, Images).get(image_id=request.match_info["image_id"])
    return json_response(image_view(image))


@routes.delete(
    f"{IMAGES}/{{image_id}}",
    "Delete an image",
    replies=[Reply(204, None, "Deleted, data and all.")],
    errors=(404,),
)
async def delete_image(request: web.Request) -> web.Response:
    """403: another project's image (and the caller no admin), or a protected one."""
    await client(request, Images).delete(image_id=request.match_info["image_id"])
    return no_content()


# -- changes: Glance's JSON-patch dialects, and tags ---------------------------------------------

PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
"""Glance's two PATCH media types: ``{"op": "add", "path": "/x", "value": ...}`` (v2.1, RFC 6902's
shape), and ``{"add": "/x", "value": ...}`` (v2.0, where an add of what exists is 409)."""
POINTER = r"^/([^/~]|~[01]){1,255}$"
Pointer = Annotated[str, Meta(pattern=POINTER)]
"""A JSON pointer to one member of the image, of at most 255 characters (``~1`` is a ``/`` of the
member's name, ``~0`` a ``~``)."""
PROPERTY_POINTER = {
    "type": "string",
    "pattern": POINTER,
    "not": {
        "anyOf": [
            {"enum": [f"/{name}" for name in (*UPDATABLE, *READ_ONLY_FIELDS, *RESERVED)]},
            {"pattern": f"^/{RESERVED_PREFIX}"},
        ]
    },
}
"""A pointer to an extra property: no field of the image, read-only or reserved name (403)."""


def _form(**members: Any) -> dict[str, Any]:
    """One shape of a patch operation: these members, each required (``False``: absent)."""
    return {
        "properties": members,
        "required": [name for name, schema in members.items() if schema is not False],
    }


def _forms(op_member: str | None) -> list[dict[str, Any]]:
    """Every shape of a patch operation that may succeed: an add or replace of an ``UPDATABLE``
    field with a value of its type, or of an extra property with a string, or a removal of an
    extra property. ``op_member`` None: the v2.1 dialect (``op`` and ``path``); else v2.0's, where
    the path is the value of the member named for the operation (and the others are absent)."""
    targets = [
        *((f"/{name}", msgspec.json.schema(type_)) for name, type_ in UPDATABLE.items()),
        (PROPERTY_POINTER, EXTRA_PROPERTY),
    ]
    forms = []
    for op in typing.get_args(PatchOp):
        for path, value in targets if op != "remove" else [(PROPERTY_POINTER, None)]:
            pointer = {"const": path} if isinstance(path, str) else path
            shown = {} if value is None else {"value": value}
            if op_member is None:
                forms.append(_form(op={"const": op}, path=pointer, **shown))
            else:
                absent = {other: False for other in typing.get_args(PatchOp) if other != op}
                forms.append(_form(**{op: pointer}, **absent, **shown))
    return forms


def _change(op: PatchOp, pointer: str, value: Any) -> Change:
    """The change an operation asks, its pointer decoded.

    :raises InvalidRequest: an add or replace without a value.
    """
    change: Change = {"op": op, "name": pointer[1:].replace("~1", "/").replace("~0", "~")}
    if op != "remove":
        if value is UNSET:
            raise InvalidRequest(f'Operation "{op}" requires a member named "value".')
        change["value"] = value
    return change


class PatchOperation(Request):
    """One operation of Glance's v2.1 JSON-patch dialect (``PATCH_V21``)."""

    op: PatchOp
    path: Pointer
    value: Any = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": _forms(None)}

    def change(self) -> Change:
        return _change(self.op, self.path, self.value)


class PatchOperationV20(Request):
    """One operation of Glance's v2.0 JSON-patch dialect (``PATCH_V20``): the member named for the
    operation holds the pointer."""

    add: Pointer | UnsetType = UNSET
    remove: Pointer | UnsetType = UNSET
    replace: Pointer | UnsetType = UNSET
    value: Any = UNSET
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": _forms("op")}

    def change(self) -> Change:
        """:raises InvalidRequest: not exactly one of ``add``, ``remove`` and ``replace``."""
        asked = [
            (op, path) for op, path in (("add", self.add), ("remove", self.remove), ("replace", self.replace))
        ]
        named = [(op, path) for op, path in asked if path is not UNSET]
        if len(named) != 1:
            raise InvalidRequest(
                'Operation objects must contain exactly one member named "add", "remove", or "replace".'
            )
        op, path = named[0]
        return _change(op, path, self.value)


@routes.patch(
    f"{IMAGES}/{{image_id}}",
    "Update an image",
    body=list[PatchOperation],
    body_media_type=PATCH_V21,
    other_bodies={PATCH_V20: list[PatchOperationV20]},
    replies=[Reply(200, Image, "The image, changed.")],
    errors=(404, 409),
)
async def update_image(
    request: web.Request, body: list[PatchOperation] | list[PatchOperationV20]
) -> web.Response:
    """Apply the operations in order, all or none. 403: another project's image (and the caller no
    admin), a read-only member or a reserved name, the removal of one of the image's own members,
    ``owner`` or a public ``visibility`` asked by someone other than an admin, a format of an
    image that is not queued; 409: a replace or removal of an extra property the image lacks
    (v2.0: an add of one it has, or of one of its own members)."""
    image = await client(request, Images).update(
        image_id=request.match_info["image_id"],
        changes=[operation.change() for operation in body],
        strict_add=request.content_type == PATCH_V20,
    )
    return json_response(image_view(image))


TAG = f"{IMAGES}/{{image_id}}/tags/{{tag}}"


@routes.put(
    TAG, "Tag an image", path_types={"tag": Tag}, replies=[Reply(204, None, "Tagged.")], errors=(404,)
)
async def add_tag(request: web.Request) -> web.Response:
    """403: another project's image (and the caller no admin). A tag the image has stays once."""
    await client(request, Images).add_tag(
        image_id=request.match_info["image_id"], tag=request.match_info["tag"]
    )
    return no_content()


@routes.delete(
    TAG,
    "Take a tag off an image",
    path_types={"tag": Tag},
    replies=[Reply(204, None, "Untagged.")],
    errors=(404,),
)
async def remove_tag(request: web.Request) -> web.Response:
    """404: the image has no such tag; 403: another project's image (and the caller no admin)."""
    await client(request, Images).remove_tag(
        image_id=request.match_info["image_id"], tag=request.match_info["tag"]
    )
    return no_content()


@routes.post(
    f"{IMAGES}/{{image_id}}/actions/deactivate",
    "Deactivate an image",
    replies=[Reply(204, None, "Deactivated: only admins download it.")],
    errors=(404,),
)
async def deactivate_image(request: web.Request) -> web.Response:
    """403: another project's image (and the caller no admin), or one neither active nor deactivated."""
    await client(request, Images).deactivate(image_id=request.match_info["image_id"])
    return no_content()


@routes.post(
    f"{IMAGES}/{{image_id}}/actions/reactivate",
    "Reactivate an image",
    replies=[Reply(204, None, "Active again.")],
    errors=(404,),
)
async def reactivate_image(request: web.Request) -> web.Response:
    """403: another project's image (and the caller no admin), or one neither active nor deactivated."""
    await client(request, Images).reactivate(image_id=request.match_info["image_id"])
    return no_content()


async def _blocks(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """The body in blocks of ``size`` bytes (the last one shorter); one empty block when it is empty.
    It must arrive as fast as ``routing.body_pieces`` asks (else 408)."""
    buffer = bytearray()
    sent = False
    async with contextlib.aclosing(body_pieces(request)) as pieces:
        async for piece in pieces:
            buffer += piece
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
                sent = True
    if buffer or not sent:
        yield bytes(buffer)


@routes.put(
    f"{IMAGES}/{{image_id}}/file",
    "Upload an image's data",
    body=bytes,
    body_media_type=OCTETS,
    replies=[Reply(204, None, "Stored; the image is active.")],
    errors=(404, 409),
)
async def upload_file(request: web.Request) -> web.Response:
    """Stream the body to the image actor chunk by chunk, then make the image active.

    403: another project's image; 409: the image is not queued (its data is there, or another
    upload of it is under way). When the upload fails after a chunk of it may have been
    written (the client went away, a call timed out), the image goes back to ``queued`` so the
    upload can be retried; a first chunk the actor refused (another upload owns the image)
    leaves it alone.
    """
    image_id = request.match_info["image_id"]
    images = client(request, Images)
    offset = 0
    attempted = written = False
    try:
        async with contextlib.aclosing(_blocks(request, CHUNK)) as blocks:
            async for block in blocks:
                attempted = True
                reply = await images.upload_chunk(image_id=image_id, offset=offset, data=block)
                offset, written = reply["size"], True
        await images.finish_upload(image_id=image_id)
    except BaseException as exc:  # also the cancellation of a handler whose client went away
        if attempted and (written or not isinstance(exc, REFUSALS)):
            with contextlib.suppress(AiostackError):
                await images.abort_upload(image_id=image_id)
        raise
    return no_content()


@routes.get(
    f"{IMAGES}/{{image_id}}/file",
    "Download an image's data",
    replies=[
        Reply(
            200,
            bytes,
            "The data, streamed.",
            headers={"Content-MD5": "The data's MD5 (hex)."},
            media_type=OCTETS,
        ),
        Reply(204, None, "The image has no data yet."),
    ],
    errors=(404,),
)
async def download_file(request: web.Request) -> web.StreamResponse:
    """Stream an active image's bytes with ``Content-MD5``; 204 when it has no data yet; 403 for a
    deactivated one (but to an admin)."""
    image_id = request.match_info["image_id"]
    images = client(request, Images)
    image = await images.get(image_id=image_id)
    if image["status"] not in ("active", "deactivated") or image["checksum"] is None or image["size"] is None:
        return no_content()
    size = image["size"]
    data = await images.read_chunk(
        image_id=image_id, offset=0, length=CHUNK
    )  # refused before the status line
    response = web.StreamResponse(headers={"Content-Type": OCTETS, "Content-MD5": image["checksum"]})
    response.content_length = size
    await response.prepare(request)
    offset = 0
    try:
        while offset < size:
            if not data:
                raise NotFound(f"the data of image {image_id} ends at byte {offset} of {size}")
            await response.write(data)
            offset += len(data)
            if offset < size:
                data = await images.read_chunk(image_id=image_id, offset=offset, length=CHUNK)
    except AiostackError as exc:
        # the status line is out: breaking the connection is the only way left to say it failed
        log.warning(
            "download of image %s failed at byte %d rid=%s: %s", image_id, offset, request[REQUEST_ID], exc
        )
        raise ConnectionAbortedError(f"download of image {image_id} failed at byte {offset}") from exc
    await response.write_eof()
    return response


class ImportMethodList(Body):
    description: str
    type: Literal["array"]
    value: list[str]


class ImportInfo(Body):
    import_methods: ImportMethodList = msgspec.field(name="import-methods")


@routes.get(
    "/image/v2/info/import",
    "The image import methods",
    replies=[Reply(200, ImportInfo, "None: an image's data is uploaded with PUT .../file.")],
)
async def import_info(request: web.Request) -> web.Response:
    """Glance's interoperable import methods this cloud offers: none (its ``value`` is empty)."""
    methods = ImportMethodList(description="Import methods available.", type="array", value=[])
    return json_response(ImportInfo(import_methods=methods))


# -- Glance's own JSON schemas of an image, made from ``Image`` ------------------------------------

_READ_ONLY_SHOWN = frozenset(READ_ONLY) & set(Image.__struct_encode_fields__)


def _image_schema() -> dict[str, Any]:
    (reference,), components = msgspec.json.schema_components([Image], ref_template="{name}")
    properties = {
        name: {**schema, "readOnly": True} if name in _READ_ONLY_SHOWN else schema
        for name, schema in components[reference["$ref"]]["properties"].items()
    }
    return {
        "name": "image",
        "properties": properties,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


IMAGE_SCHEMA = _image_schema()
IMAGES_SCHEMA = {
    "name": "images",
    "properties": {
        "images": {"type": "array", "items": IMAGE_SCHEMA},
        "schema": {"type": "string"},
        "first": {"type": "string"},
        "next": {"type": "string"},
    },
    "links": [
        {"rel": "first", "href": "{first}"},
        {"rel": "next", "href": "{next}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}


@routes.get(
    "/image/v2/schemas/image",
    "Glance's JSON schema of an image",
    public=True,
    replies=[Reply(200, dict[str, Any], "The schema (clients that validate or build forms read it).")],
)
async def image_schema(request: web.Request) -> web.Response:
    return json_response(IMAGE_SCHEMA)


@routes.get(
    "/image/v2/schemas/images",
    "Glance's JSON schema of a page of images",
    public=True,
    replies=[Reply(200, dict[str, Any], "The schema.")],
)
async def images_schema(request: web.Request) -> web.Response:
    return json_response(IMAGES_SCHEMA)


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
