"""Flavors (``/flavors``): the sizes a server may have, by id or name.

Lists take Nova's filters: ``minRam`` and ``minDisk`` (at least that much), and pages
(``limit``, ``marker``: a flavor id, 400 when it is none), with a ``flavors_links`` next link when
a page is full."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import Flavor
from bus import InvalidRequest
from gateway.compute.common import BASE, compute, links
from gateway.http import json_response
from gateway.routing import MAX_AMOUNT, Body, Id, Link, Query, Reply, Routes, id_other_than

Amount = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
NextLink = Annotated[list[Link], Meta(description="A next link when the page is full.")]


class FlavorSummary(Body):
    id: str
    name: str
    links: list[Link]


class FlavorDetail(Body):
    """A flavor: RAM and swap in MiB, disks in GiB."""

    id: str
    name: str
    links: list[Link]
    vcpus: int
    ram: int
    disk: int
    ephemeral: int = msgspec.field(name="OS-FLV-EXT-DATA:ephemeral")
    swap: int | Literal[""]
    """MiB, or "" for none."""
    rxtx_factor: float
    is_public: bool = msgspec.field(name="os-flavor-access:is_public")
    disabled: bool = msgspec.field(name="OS-FLV-DISABLED:disabled")


class FlavorList(Body):
    flavors: list[FlavorSummary]
    flavors_links: (
        Annotated[list[Link], Meta(description="A next link when the page is full.")] | UnsetType
    ) = UNSET


class FlavorDetailList(Body):
    flavors: list[FlavorDetail]
    flavors_links: (
        Annotated[list[Link], Meta(description="A next link when the page is full.")] | UnsetType
    ) = UNSET


class FlavorShown(Body):
    flavor: FlavorDetail


def flavor_summary(request: web.Request, flavor: Flavor) -> FlavorSummary:
    return FlavorSummary(id=flavor["id"], name=flavor["name"], links=links(request, "flavors", flavor["id"]))


def flavor_detail(request: web.Request, flavor: Flavor) -> FlavorDetail:
    return FlavorDetail(
        id=flavor["id"],
        name=flavor["name"],
        links=links(request, "flavors", flavor["id"]),
        vcpus=flavor["vcpus"],
        ram=flavor["ram"],
        disk=flavor["disk"],
        ephemeral=flavor["ephemeral"],
        swap=flavor["swap"] or "",
        rxtx_factor=1.0,
        is_public=bool(flavor["is_public"]),
        disabled=False,
    )


class FlavorQuery(Query):
    minRam: Annotated[Amount, Meta(description="Flavors with at least this much RAM (MB).")] | UnsetType = (
        UNSET
    )
    minDisk: Annotated[Amount, Meta(description="Flavors with at least this much disk (GB).")] | UnsetType = (
        UNSET
    )
    limit: Annotated[Amount, Meta(description="At most this many flavors.")] | UnsetType = UNSET
    marker: (
        Annotated[Id, Meta(description="The last flavor of the previous page (else 400).")] | UnsetType
    ) = UNSET


async def _flavors(request: web.Request, query: FlavorQuery) -> tuple[list[Flavor], list[Link] | UnsetType]:
    """The page of flavors the query asks for, and its next link when it is full."""
    flavors = [
        f
        for f in await compute(request).list_flavors()
        if f["ram"] >= (query.minRam or 0) and f["disk"] >= (query.minDisk or 0)
    ]
    if query.marker is not UNSET:
        ids = [f["id"] for f in flavors]
        if query.marker not in ids:
            raise InvalidRequest(f"marker [{query.marker}] not found")
        flavors = flavors[ids.index(query.marker) + 1 :]
    if query.limit is UNSET or len(flavors) <= query.limit:
        return flavors, UNSET
    page = flavors[: query.limit]
    return page, [
        Link(rel="next", href=str(request.url.update_query(marker=page[-1]["id"])))
    ] if page else UNSET


routes = Routes()


@routes.get(
    f"{BASE}/flavors",
    "List flavors",
    query=FlavorQuery,
    replies=[Reply(200, FlavorList, "The flavors, smallest RAM first.")],
)
async def list_flavors(request: web.Request, query: FlavorQuery) -> web.Response:
    """400: a marker that is no flavor of the list."""
    flavors, more = await _flavors(request, query)
    return json_response(
        FlavorList(flavors=[flavor_summary(request, f) for f in flavors], flavors_links=more)
    )


@routes.get(
    f"{BASE}/flavors/detail",
    "List flavors in detail",
    query=FlavorQuery,
    replies=[Reply(200, FlavorDetailList, "The flavors, smallest RAM first.")],
)
async def list_flavors_detail(request: web.Request, query: FlavorQuery) -> web.Response:
    """400: a marker that is no flavor of the list."""
    flavors, more = await _flavors(request, query)
    return json_response(
        FlavorDetailList(flavors=[flavor_detail(request, f) for f in flavors], flavors_links=more)
    )


@routes.get(
    f"{BASE}/flavors/{{flavor_id}}",
    "Show a flavor (by id or name)",
    replies=[Reply(200, FlavorShown, "The flavor.")],
    errors=(404,),
    path_types={"flavor_id": id_other_than("detail")},
)
async def show_flavor(request: web.Request) -> web.Response:
    flavor = await compute(request).get_flavor(flavor_id=request.match_info["flavor_id"])
    return json_response(FlavorShown(flavor=flavor_detail(request, flavor)))
