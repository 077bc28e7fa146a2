"""A running server's vCPUs and RAM changed live (aiostack's ``aiostack:setResources`` server
action), and Nova's flavor extra specs (``/flavors/{flavor_id}/os-extra_specs``), where an admin
sets the maxima such a change may reach (``aiostack:max_vcpus``, ``aiostack:max_ram_mb``).

The action is aiostack's, not Nova's: it is served from ``SET_RESOURCES_FROM``, the newest compute
microversion the gateway served when it was added, and below it answered as Nova answers an
action it does not know (400). From that microversion a server also shows the size it has now
(``aiostack:resources``: its flavor's, or what a live change gave it).

Extra specs: anyone reads them (GET, as Nova's default policy), admins set (POST: merged) and
delete one (DELETE ``/{key}``); an ``aiostack:`` maximum must be a whole number no smaller than
the flavor's own vCPUs or RAM (400).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import ExtraSpecKey, ExtraSpecValue, Instance
from bus import InvalidRequest, NotFound
from gateway.compute.common import BASE, compute
from gateway.http import json_response, no_content
from gateway.routing import MAX_AMOUNT, Body, Id, Reply, Request, Routes
from gateway.versions import microversion

SET_RESOURCES = "aiostack:setResources"
SET_RESOURCES_FROM = (2, 16)
"""The compute microversion the live change is served from: the newest one the gateway served when
it was added, fixed so that a microversion keeps meaning what it meant."""
Size = Annotated[int, Meta(ge=1, le=MAX_AMOUNT)]


class SetResources(Request):
    """The size the server should have now (at least one of them; what is left out stays)."""

    vcpus: Size | UnsetType = UNSET
    ram: Annotated[Size, Meta(description="MiB")] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.vcpus is UNSET and self.ram is UNSET:
            raise ValueError("give vcpus, ram or both")


class LiveSize(Body):
    """The vCPUs and RAM (MiB) a server has now."""

    vcpus: int
    ram: int


def live_size(version: tuple[int, int], instance: Instance) -> LiveSize | UnsetType:
    """What a server shows as ``aiostack:resources`` at microversion ``version``."""
    if version < SET_RESOURCES_FROM:
        return UNSET
    return LiveSize(vcpus=instance["flavor"]["vcpus"], ram=instance["flavor"]["ram"])


async def set_resources(request: web.Request, server_id: str, asked: SetResources) -> None:
    """The ``aiostack:setResources`` action, at the request's microversion."""
    if microversion(request) < SET_RESOURCES_FROM:
        raise InvalidRequest(f"There is no such action: {SET_RESOURCES}")
    await compute(request).set_resources(
        instance_uuid=server_id,
        vcpus=None if isinstance(asked.vcpus, UnsetType) else asked.vcpus,
        ram=None if isinstance(asked.ram, UnsetType) else asked.ram,
    )


# -- flavor extra specs ------------------------------------------------------------------------

EXTRA_SPECS = f"{BASE}/flavors/{{flavor_id}}/os-extra_specs"
FLAVOR_ID = {"flavor_id": Id}


class ExtraSpecsBody(Request):
    extra_specs: dict[ExtraSpecKey, ExtraSpecValue]


class ExtraSpecs(Body):
    extra_specs: dict[str, str]


routes = Routes()


@routes.get(
    EXTRA_SPECS,
    "List a flavor's extra specs",
    replies=[Reply(200, ExtraSpecs, "The extra specs.")],
    errors=(404,),
    path_types=FLAVOR_ID,
)
async def list_extra_specs(request: web.Request) -> web.Response:
    specs = await compute(request).get_extra_specs(flavor_id=request.match_info["flavor_id"])
    return json_response(ExtraSpecs(extra_specs=specs))


@routes.post(
    EXTRA_SPECS,
    "Set a flavor's extra specs",
    body=ExtraSpecsBody,
    replies=[Reply(200, ExtraSpecs, "The extra specs given (the others are kept).")],
    errors=(403, 404),
    path_types=FLAVOR_ID,
)
async def set_extra_specs(request: web.Request, body: ExtraSpecsBody) -> web.Response:
    """Admins. 400: an aiostack maximum that is no whole number or below the flavor's own size."""
    await compute(request).set_extra_specs(
        flavor_id=request.match_info["flavor_id"], extra_specs=body.extra_specs
    )
    return json_response(ExtraSpecs(extra_specs=dict(body.extra_specs)))


@routes.get(
    f"{EXTRA_SPECS}/{{key}}",
    "Show a flavor's extra spec",
    replies=[Reply(200, dict[str, str], "The key and its value.")],
    errors=(404,),
    path_types={**FLAVOR_ID, "key": ExtraSpecKey},
)
async def show_extra_spec(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    specs = await compute(request).get_extra_specs(flavor_id=request.match_info["flavor_id"])
    if key not in specs:
        raise NotFound(f"Flavor {request.match_info['flavor_id']} has no extra specs with key {key}.")
    body: dict[str, Any] = {key: specs[key]}
    return json_response(body)


@routes.delete(
    f"{EXTRA_SPECS}/{{key}}",
    "Delete a flavor's extra spec",
    replies=[Reply(200, None, "Deleted.")],
    errors=(403, 404),
    path_types={**FLAVOR_ID, "key": ExtraSpecKey},
)
async def delete_extra_spec(request: web.Request) -> web.Response:
    """Admins."""
    await compute(request).delete_extra_spec(
        flavor_id=request.match_info["flavor_id"], key=request.match_info["key"]
    )
    return no_content(200)
