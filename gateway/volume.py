"""Block storage (Cinder v3) routes: volumes under ``/volume/v3/{project_id}/volumes``.

The project id in the path must be the token's (an admin may name any); a volume of
another project answers 404 like a missing one. Volumes are shown without the volume
host's internal fields (the file's path and format).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bus import Forbidden
from gateway.app import call, context_of, json_body, json_response

VOLUMES = "/volume/v3/{project_id}/volumes"
SHOWN = (
    "id",
    "name",
    "description",
    "size",
    "status",
    "user_id",
    "availability_zone",
    "bootable",
    "encrypted",
    "multiattach",
    "volume_type",
    "attachments",
    "metadata",
    "snapshot_id",
    "source_volid",
    "created_at",
    "updated_at",
)
TRUE_WORDS = ("1", "true", "yes", "on")


def _project(request: web.Request, action: str) -> str:
    """The path's project id. :raises Forbidden: another project's, and the caller is no admin."""
    project_id = request.match_info["project_id"]
    ctx = context_of(request)
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow volume:{action} to be performed.")
    return project_id


def _links(request: web.Request, project_id: str, volume_id: str) -> list[dict[str, str]]:
    """The volume's self link, under the project id the client used."""
    href = f"{request.scheme}://{request.host}{VOLUMES.format(project_id=project_id)}/{volume_id}"
    return [{"rel": "self", "href": href}]


def _view(request: web.Request, project_id: str, volume: dict[str, Any]) -> dict[str, Any]:
    """A volume as Cinder shows it (plus ``fault`` when something went wrong with its file)."""
    view = {key: volume[key] for key in SHOWN}
    view["os-vol-tenant-attr:tenant_id"] = volume["project_id"]
    if volume.get("fault"):
        view["fault"] = volume["fault"]
    view["links"] = _links(request, project_id, volume["id"])
    return view


async def _list(request: web.Request) -> tuple[str, list[dict[str, Any]]]:
    """The path's project id and the volumes the query asks for (name, status, all_tenants)."""
    project_id = _project(request, "get_all")
    query = request.query
    filters: dict[str, Any] = {key: query[key] for key in ("name", "status") if key in query}
    filters["all_tenants"] = query.get("all_tenants", "").lower() in TRUE_WORDS
    return project_id, await call(request, "volume.list", filters)


async def list_volumes(request: web.Request) -> web.Response:
    """GET .../volumes: id, name and links of each volume."""
    project_id, volumes = await _list(request)
    summaries = [
        {"id": volume["id"], "name": volume["name"], "links": _links(request, project_id, volume["id"])}
        for volume in volumes
    ]
    return json_response({"volumes": summaries})


async def list_volume_details(request: web.Request) -> web.Response:
    """GET .../volumes/detail: the full volumes."""
    project_id, volumes = await _list(request)
    return json_response({"volumes": [_view(request, project_id, volume) for volume in volumes]})


async def create_volume(request: web.Request) -> web.Response:
    """POST .../volumes ``{"volume": {"size", "name", "description", "metadata"}}``: 202."""
    project_id = _project(request, "create")
    body = await json_body(request, "volume")
    arguments = {"size": body.get("size")}
    arguments.update(
        {key: body[key] for key in ("name", "description", "metadata") if body.get(key) is not None}
    )
    volume = await call(request, "volume.create", arguments)
    return json_response({"volume": _view(request, project_id, volume)}, status=202)


async def show_volume(request: web.Request) -> web.Response:
    """GET .../volumes/{volume_id}."""
    project_id = _project(request, "get")
    volume = await call(request, "volume.get", {"volume_id": request.match_info["volume_id"]})
    return json_response({"volume": _view(request, project_id, volume)})


async def update_volume(request: web.Request) -> web.Response:
    """PUT .../volumes/{volume_id} ``{"volume": {"name", "description"}}``."""
    project_id = _project(request, "update")
    body = await json_body(request, "volume")
    arguments = {key: body[key] for key in ("name", "description") if body.get(key) is not None}
    volume = await call(request, "volume.update", {"volume_id": request.match_info["volume_id"], **arguments})
    return json_response({"volume": _view(request, project_id, volume)})


async def delete_volume(request: web.Request) -> web.Response:
    """DELETE .../volumes/{volume_id}: 202 with no body."""
    _project(request, "delete")
    await call(request, "volume.delete", {"volume_id": request.match_info["volume_id"]})
    return web.Response(status=202)


def add_routes(app: web.Application) -> None:
    """The Cinder v3 volume routes (``detail`` before ``{volume_id}``, which would match it)."""
    app.router.add_get(VOLUMES, list_volumes)
    app.router.add_get(f"{VOLUMES}/detail", list_volume_details)
    app.router.add_post(VOLUMES, create_volume)
    app.router.add_get(f"{VOLUMES}/{{volume_id}}", show_volume)
    app.router.add_put(f"{VOLUMES}/{{volume_id}}", update_volume)
    app.router.add_delete(f"{VOLUMES}/{{volume_id}}", delete_volume)
