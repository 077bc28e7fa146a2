"""Flavors (``/flavors``): the sizes a server may have, by id or name."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from api.conductor import Flavor
from gateway.compute.common import BASE, compute, links
from gateway.http import json_response
from gateway.routing import Body, Link, Reply, Routes, id_other_than


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


class FlavorDetailList(Body):
    flavors: list[FlavorDetail]


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


routes = Routes()


@routes.get(
    f"{BASE}/flavors", "List flavors", replies=[Reply(200, FlavorList, "Every flavor, smallest RAM first.")]
)
async def list_flavors(request: web.Request) -> web.Response:
    flavors = await compute(request).list_flavors()
    return json_response(FlavorList(flavors=[flavor_summary(request, f) for f in flavors]))


@routes.get(
    f"{BASE}/flavors/detail",
    "List flavors in detail",
    replies=[Reply(200, FlavorDetailList, "Every flavor, smallest RAM first.")],
)
async def list_flavors_detail(request: web.Request) -> web.Response:
    flavors = await compute(request).list_flavors()
    return json_response(FlavorDetailList(flavors=[flavor_detail(request, f) for f in flavors]))


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
