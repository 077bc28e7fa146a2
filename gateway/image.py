"""Image (Glance v2) routes: image records, and image data streamed through the image actor in chunks.

Uploads and downloads never hold a whole image in gateway memory: each chunk (at most
``CHUNK`` bytes) is one ``image.upload_chunk`` or ``image.read_chunk`` call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from aiohttp import StreamReader, web

from actors.image import CONTAINER_FORMATS, DISK_FORMATS, STATUSES, VISIBILITIES
from bus import AiostackError, Conflict, Forbidden, InvalidRequest, NotFound
from gateway.app import REQUEST_ID, call, json_body, json_response, public

log = logging.getLogger(__name__)

CHUNK = 512 * 1024
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
CREATE_FIELDS = frozenset(
    (
        "id", "name", "disk_format", "container_format", "visibility", "min_disk", "min_ram",
        "protected", "tags",
    )
)  # fmt: skip
READ_ONLY_FIELDS = frozenset(
    (
        "status", "checksum", "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size",
        "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url",
    )
)  # fmt: skip
FILTERS = ("name", "status", "visibility")
REFUSALS = (Conflict, Forbidden, InvalidRequest, NotFound)


def image_view(image: dict[str, Any]) -> dict[str, Any]:
    """An image as Glance v2 shows it: extra properties flattened to the top level, plus links."""
    core = {key: value for key, value in image.items() if key != "properties"}
    return {
        **image["properties"],
        **core,
        "self": f"/v2/images/{image['id']}",
        "file": f"/v2/images/{image['id']}/file",
        "schema": "/v2/schemas/image",
    }


@public
async def versions(request: web.Request) -> web.Response:
    """The image API's version document (where clients discover ``/v2``)."""
    base = f"{request.scheme}://{request.host}/image/v2/"
    return json_response(
        {"versions": [{"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": base}]}]},
        status=300,
    )


async def list_images(request: web.Request) -> web.Response:
    query = request.query
    filters = {key: query[key] for key in FILTERS if key in query}
    if filters.get("visibility") == "all":  # Glance's "everything I may see", the default here
        del filters["visibility"]
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise InvalidRequest("limit param must be an integer") from None
    if limit < 0:
        raise InvalidRequest("limit param must be positive")
    limit = min(limit, MAX_LIMIT)
    args: dict[str, Any] = {**filters, "limit": limit}
    if "marker" in query:
        args["marker"] = query["marker"]
    images = await call(request, "image.list", args)
    body: dict[str, Any] = {
        "images": [image_view(image) for image in images],
        "schema": "/v2/schemas/images",
        "first": "/v2/images",
    }
    if images and len(images) == limit:
        body["next"] = "/v2/images?" + urlencode({"marker": images[-1]["id"], "limit": limit, **filters})
    return json_response(body)


async def create_image(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("Malformed request body: expected a JSON object")
    args: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in body.items():
        if key in READ_ONLY_FIELDS:
            raise Forbidden(f"Attribute '{key}' is read-only.")
        (args if key in CREATE_FIELDS else properties)[key] = value
    if "name" not in args:
        raise InvalidRequest("name is required")
    if properties:
        args["properties"] = properties
    image = await call(request, "image.create", args)
    return json_response(
        image_view(image), status=201, headers={"Location": f"/image/v2/images/{image['id']}"}
    )


async def show_image(request: web.Request) -> web.Response:
    image = await call(request, "image.get", {"image_id": request.match_info["image_id"]})
    return json_response(image_view(image))


async def delete_image(request: web.Request) -> web.Response:
    await call(request, "image.delete", {"image_id": request.match_info["image_id"]})
    return web.Response(status=204)


async def _blocks(content: StreamReader, size: int) -> AsyncIterator[bytes]:
    """The body in blocks of ``size`` bytes (the last one shorter); one empty block when it is empty."""
    buffer = bytearray()
    sent = False
    async for piece in content.iter_chunked(size):
        buffer += piece
        if len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
            sent = True
    if buffer or not sent:
        yield bytes(buffer)


async def upload_file(request: web.Request) -> web.Response:
    """Stream the body to the image actor chunk by chunk, then make the image active.

    When the upload fails after a chunk of it may have been written (the client went away,
    a call timed out), the image goes back to ``queued`` so the upload can be retried; a
    first chunk the actor refused (another upload owns the image) leaves it alone.
    """
    image_id = request.match_info["image_id"]
    if request.content_type != "application/octet-stream":
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be application/octet-stream, not {request.content_type}"
        )
    offset = 0
    attempted = written = False
    try:
        async for block in _blocks(request.content, CHUNK):
            attempted = True
            reply = await call(
                request, "image.upload_chunk", {"image_id": image_id, "offset": offset, "data": block}
            )
            offset, written = reply["size"], True
        await call(request, "image.finish_upload", {"image_id": image_id})
    except BaseException as exc:  # also the cancellation of a handler whose client went away
        if attempted and (written or not isinstance(exc, REFUSALS)):
            with contextlib.suppress(AiostackError):
                await call(request, "image.abort_upload", {"image_id": image_id})
        raise
    return web.Response(status=204)


async def download_file(request: web.Request) -> web.StreamResponse:
    """Stream an active image's bytes with ``Content-MD5``; 204 when it has no data yet."""
    image_id = request.match_info["image_id"]
    image = await call(request, "image.get", {"image_id": image_id})
    if image["status"] != "active":
        return web.Response(status=204)
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Content-MD5": image["checksum"]}
    )
    response.content_length = image["size"]
    await response.prepare(request)
    offset = 0
    try:
        while offset < image["size"]:
            data = await call(
                request, "image.read_chunk", {"image_id": image_id, "offset": offset, "length": CHUNK}
            )
            if not data:
                raise NotFound(f"the data of image {image_id} ends at byte {offset} of {image['size']}")
            await response.write(data)
            offset += len(data)
    except AiostackError as exc:
        # the status line is out: breaking the connection is the only way left to say it failed
        log.warning(
            "download of image %s failed at byte %d rid=%s: %s", image_id, offset, request[REQUEST_ID], exc
        )
        raise ConnectionAbortedError(f"download of image {image_id} failed at byte {offset}") from exc
    await response.write_eof()
    return response


_NULLABLE_STRING = {"type": ["null", "string"]}
IMAGE_SCHEMA = {
    "name": "image",
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9a-fA-F-]{36}$",
            "description": "An identifier for the image",
        },
        "name": {**_NULLABLE_STRING, "maxLength": 255},
        "status": {"type": "string", "readOnly": True, "enum": list(STATUSES)},
        "visibility": {"type": "string", "enum": list(VISIBILITIES)},
        "protected": {"type": "boolean"},
        "checksum": {**_NULLABLE_STRING, "readOnly": True},
        "os_hash_algo": {**_NULLABLE_STRING, "readOnly": True},
        "os_hash_value": {**_NULLABLE_STRING, "readOnly": True},
        "owner": {**_NULLABLE_STRING, "readOnly": True},
        "size": {"type": ["null", "integer"], "readOnly": True},
        "virtual_size": {"type": ["null", "integer"], "readOnly": True},
        "min_disk": {"type": "integer"},
        "min_ram": {"type": "integer"},
        "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS]},
        "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS]},
        "created_at": {"type": "string", "readOnly": True},
        "updated_at": {"type": "string", "readOnly": True},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "self": {"type": "string", "readOnly": True},
        "file": {"type": "string", "readOnly": True},
        "schema": {"type": "string", "readOnly": True},
    },
    "additionalProperties": {"type": "string"},
    "links": [
        {"rel": "self", "href": "{self}"},
        {"rel": "enclosure", "href": "{file}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}


@public
async def image_schema(request: web.Request) -> web.Response:
    """Glance's JSON schema of an image (clients that validate or build forms read it)."""
    return json_response(IMAGE_SCHEMA)


@public
async def images_schema(request: web.Request) -> web.Response:
    return json_response(
        {
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
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/image/v2/schemas/image", image_schema)
    app.router.add_get("/image/v2/schemas/images", images_schema)
    app.router.add_get("/image", versions)
    app.router.add_get("/image/", versions)
    app.router.add_get("/image/v2/images", list_images)
    app.router.add_post("/image/v2/images", create_image)
    app.router.add_get("/image/v2/images/{image_id}", show_image)
    app.router.add_delete("/image/v2/images/{image_id}", delete_image)
    app.router.add_put("/image/v2/images/{image_id}/file", upload_file)
    app.router.add_get("/image/v2/images/{image_id}/file", download_file)
