"""Images through compute (Nova 2.1's ``/images`` proxy to Glance): list, show, delete.

Nova deprecated these in 2.36 for Glance's own API, but 2.1 clients (Tempest's createImage
tests among them) still wait on a server snapshot here. Each answer is Glance's record as Nova
shows it: status ``ACTIVE``, ``SAVING`` (queued or saving), ``DELETED`` or ``ERROR`` with a
progress, the properties as ``metadata``, and ``server`` for a snapshot (its ``instance_uuid``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.image import Image, Images
from gateway.compute.common import BASE, links
from gateway.http import client, json_response, no_content
from gateway.routing import Body, Id, Link, Query, Reply, Routes, Time, given, id_other_than

Status = Literal["ACTIVE", "SAVING", "DELETED", "ERROR", "UNKNOWN"]
STATUS: dict[str, Status] = {
    "active": "ACTIVE",
    "queued": "SAVING",
    "saving": "SAVING",
    "deleted": "DELETED",
    "pending_delete": "DELETED",
    "killed": "ERROR",
}
"""Nova's status of each Glance status (others: UNKNOWN)."""
PROGRESS = {"ACTIVE": 100, "SAVING": 25}


class ServerReference(Body):
    id: str
    links: list[Link]


class ComputeImage(Body):
    id: str
    name: str | None
    status: Status
    progress: int
    minDisk: int
    minRam: int
    metadata: dict[str, str]
    created: Time
    updated: Time
    links: list[Link]
    size: int | None = msgspec.field(name="OS-EXT-IMG-SIZE:size")
    server: ServerReference | UnsetType = UNSET


class ComputeImageSummary(Body):
    id: str
    name: str | None
    links: list[Link]


class ComputeImageShown(Body):
    image: ComputeImage


class ComputeImageList(Body):
    images: list[ComputeImageSummary]


class ComputeImageDetailList(Body):
    images: list[ComputeImage]


class ComputeImageQuery(Query):
    name: Annotated[str, Meta(max_length=255, description="Images of this name.")] | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=0, le=1000, description="At most this many images.")] | UnsetType = UNSET
    marker: Annotated[Id, Meta(description="The last image of the previous page.")] | UnsetType = UNSET


def compute_image(request: web.Request, image: Image) -> ComputeImage:
    status = STATUS.get(image["status"], "UNKNOWN")
    instance = image["properties"].get("instance_uuid")
    return ComputeImage(
        id=image["id"],
        name=image["name"],
        status=status,
        progress=PROGRESS.get(status, 0),
        minDisk=image["min_disk"],
        minRam=image["min_ram"],
        metadata=image["properties"],
        created=image["created_at"],
        updated=image["updated_at"],
        links=links(request, "images", image["id"]),
        size=image["size"],
        server=ServerReference(id=instance, links=links(request, "servers", instance)) if instance else UNSET,
    )


async def _images(request: web.Request, query: ComputeImageQuery) -> list[Image]:
    return await client(request, Images).list(
        name=given(query.name), limit=given(query.limit), marker=given(query.marker)
    )


routes = Routes()


@routes.get(
    f"{BASE}/images",
    "List images (Nova's proxy)",
    query=ComputeImageQuery,
    replies=[Reply(200, ComputeImageList, "The images the caller may see.")],
)
async def list_compute_images(request: web.Request, query: ComputeImageQuery) -> web.Response:
    """400: a marker that is no image the caller may see."""
    images = await _images(request, query)
    summaries = [ComputeImageSummary(i["id"], i["name"], links(request, "images", i["id"])) for i in images]
    return json_response(ComputeImageList(images=summaries))


@routes.get(
    f"{BASE}/images/detail",
    "List images in detail (Nova's proxy)",
    query=ComputeImageQuery,
    replies=[Reply(200, ComputeImageDetailList, "The images the caller may see.")],
)
async def list_compute_images_detail(request: web.Request, query: ComputeImageQuery) -> web.Response:
    """400: a marker that is no image the caller may see."""
    images = await _images(request, query)
    return json_response(ComputeImageDetailList(images=[compute_image(request, i) for i in images]))


@routes.get(
    f"{BASE}/images/{{image_id}}",
    "Show an image (Nova's proxy)",
    replies=[Reply(200, ComputeImageShown, "The image.")],
    errors=(404,),
    path_types={"image_id": id_other_than("detail")},
)
async def show_compute_image(request: web.Request) -> web.Response:
    image = await client(request, Images).get(image_id=request.match_info["image_id"])
    return json_response(ComputeImageShown(image=compute_image(request, image)))


@routes.delete(
    f"{BASE}/images/{{image_id}}",
    "Delete an image (Nova's proxy)",
    replies=[Reply(204, None, "Deleted.")],
    errors=(403, 404),
    path_types={"image_id": id_other_than("detail")},
)
async def delete_compute_image(request: web.Request) -> web.Response:
    """403: another project's image (and the caller no admin), or a protected one."""
    await client(request, Images).delete(image_id=request.match_info["image_id"])
    return no_content()
