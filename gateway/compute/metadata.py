"""Server metadata (``/servers/{server_id}/metadata``): a server's key-value pairs, as Nova keeps them.

POST merges items into the metadata, PUT replaces all of it; one item is read, set or deleted
under ``/metadata/{key}``. Each answer is the metadata (or the item) as it now is. A locked
server refuses changes (409) but by an admin; past the project's ``metadata_items`` quota
(128 by default) is 403.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta

from api.conductor import MetadataKey, MetadataValue
from bus import InvalidRequest, NotFound
from gateway.compute.common import BASE, SERVER_ID, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Reply, Request, Routes

METADATA = f"{BASE}/servers/{{server_id}}/metadata"
ITEM = f"{METADATA}/{{key}}"
ITEM_PATH = {**SERVER_ID, "key": MetadataKey}


class ServerMetadataBody(Request):
    metadata: dict[MetadataKey, MetadataValue]


class ServerMetadataItemBody(Request):
    """Exactly one item, whose key is the path's."""

    meta: Annotated[dict[MetadataKey, MetadataValue], Meta(min_length=1, max_length=1)]


class ServerMetadata(Body):
    metadata: dict[str, str]


class ServerMetadataItem(Body):
    meta: dict[str, str]


routes = Routes()


@routes.get(
    METADATA,
    "Show a server's metadata",
    replies=[Reply(200, ServerMetadata, "The metadata.")],
    errors=(404,),
    path_types=SERVER_ID,
)
async def show_metadata(request: web.Request) -> web.Response:
    instance = await compute(request).get_instance(instance_uuid=request.match_info["server_id"])
    return json_response(ServerMetadata(metadata=instance["metadata"]))


async def _set(request: web.Request, body: ServerMetadataBody, *, replace: bool) -> web.Response:
    metadata = await compute(request).set_metadata(
        instance_uuid=request.match_info["server_id"], metadata=body.metadata, replace=replace
    )
    return json_response(ServerMetadata(metadata=metadata))


@routes.post(
    METADATA,
    "Add to a server's metadata",
    body=ServerMetadataBody,
    replies=[Reply(200, ServerMetadata, "The metadata, merged.")],
    errors=(403, 404, 409),
    path_types=SERVER_ID,
)
async def update_metadata(request: web.Request, body: ServerMetadataBody) -> web.Response:
    """Items given are set, the others kept; 403 past the metadata_items quota; 409: the server is locked."""
    return await _set(request, body, replace=False)


@routes.put(
    METADATA,
    "Replace a server's metadata",
    body=ServerMetadataBody,
    replies=[Reply(200, ServerMetadata, "The metadata, exactly as given.")],
    errors=(403, 404, 409),
    path_types=SERVER_ID,
)
async def replace_metadata(request: web.Request, body: ServerMetadataBody) -> web.Response:
    """403 past the metadata_items quota; 409: the server is locked."""
    return await _set(request, body, replace=True)


@routes.get(
    ITEM,
    "Show a server's metadata item",
    replies=[Reply(200, ServerMetadataItem, "The item.")],
    errors=(404,),
    path_types=ITEM_PATH,
)
async def show_item(request: web.Request) -> web.Response:
    """404: no such server, or no such key."""
    key = request.match_info["key"]
    instance = await compute(request).get_instance(instance_uuid=request.match_info["server_id"])
    if key not in instance["metadata"]:
        raise NotFound(f"Metadata item was not found: {key}")
    return json_response(ServerMetadataItem(meta={key: instance["metadata"][key]}))


@routes.put(
    ITEM,
    "Set a server's metadata item",
    body=ServerMetadataItemBody,
    replies=[Reply(200, ServerMetadataItem, "The item.")],
    errors=(403, 404, 409),
    path_types=ITEM_PATH,
)
async def set_item(request: web.Request, body: ServerMetadataItemBody) -> web.Response:
    """400: the body's key is not the path's; 403 past the metadata_items quota; 409: the server is locked."""
    key = request.match_info["key"]
    if key not in body.meta:
        raise InvalidRequest("Request body and URI mismatch: the item's key must be the path's")
    await compute(request).set_metadata(instance_uuid=request.match_info["server_id"], metadata=body.meta)
    return json_response(ServerMetadataItem(meta=body.meta))


@routes.delete(
    ITEM,
    "Delete a server's metadata item",
    replies=[Reply(204, None, "Deleted.")],
    errors=(404, 409),
    path_types=ITEM_PATH,
)
async def delete_item(request: web.Request) -> web.Response:
    """404: no such server, or no such key; 409: the server is locked."""
    await compute(request).delete_metadata_item(
        instance_uuid=request.match_info["server_id"], key=request.match_info["key"]
    )
    return no_content()
