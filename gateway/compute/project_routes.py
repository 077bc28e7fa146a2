"""Compute routes with the project id in the URL (``/compute/v2.1/{project_id}/servers``), as Nova
serves them beside the routes without one; its microversion 2.18 made the project id optional.

Every v2.1 route (and its legacy v2.0 twin) is served with the project id after the version too,
at every microversion, by the same handler: the id must be the token's project, else 400
"Malformed request URL", as Nova answers. It is hex and dashes (Nova's pattern), so no word of a
route (``servers``, ``flavors``, ``os-...``) is taken for one. The OpenAPI document names each
route once, without it; answers' links never carry it.
"""

from __future__ import annotations

from aiohttp import web

from bus import InvalidRequest
from gateway.compute.common import BASE
from gateway.http import Handler, context_of
from gateway.routing import Routes
from gateway.versions import LEGACY_BASE

PROJECT_IN_URL = "project_id_in_url"
"""The path parameter of the project id (named apart from routes' own ``project_id``)."""
PROJECT_SEGMENT = f"{{{PROJECT_IN_URL}:[0-9a-f-]+}}"


def checking_project(handler: Handler) -> Handler:
    """``handler`` behind the check that the URL's project id is the caller's."""

    async def serve(request: web.Request) -> web.StreamResponse:
        asked, own = request.match_info[PROJECT_IN_URL], context_of(request).project_id
        if asked != own:
            mismatch = f"URL's project_id '{asked}' doesn't match Context's project_id '{own}'"
            raise InvalidRequest(f"Malformed request URL: {mismatch}")
        return await handler(request)

    serve.aiostack_route = handler.aiostack_route  # type: ignore[attr-defined]  # the auth middleware's
    return serve


def add_project_routes(app: web.Application, routes: Routes) -> None:
    """Serve the compute routes with the project id, under v2.1 and the legacy v2.0."""
    for base in (BASE, LEGACY_BASE):
        routes.add_aliases_to(app, BASE, f"{base}/{PROJECT_SEGMENT}", wrap=checking_project)
