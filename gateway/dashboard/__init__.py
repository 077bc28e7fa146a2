"""The web dashboard, served by the gateway itself: one page, its ES modules and its style sheet.

A browser asking for ``/`` (``Accept`` names ``text/html`` and prefers it to JSON) gets the page;
every other client gets what it got before (``page_middleware`` passes it on: no route answers
``/``, so 401 without a token and 404 with one, as the API's clients and
``deploy.cluster.wait_for_gateways`` read it). The page's modules and style are
``/dashboard/<name>.js`` and ``/dashboard/<name>.css``, public routes of the registry, read from
this package's ``static`` folder (package data: an installed wheel has them); nothing is fetched
from elsewhere, nothing is built.

Every answer carries a strict Content-Security-Policy (``CSP``): scripts, styles and connections
from the gateway's own origin only, no inline script or style, no frames. The page keeps the
token in ``sessionStorage`` and sends it in ``X-Auth-Token``; its event socket carries it in the
WebSocket handshake's ``Sec-WebSocket-Protocol`` (``gateway.websocket``), never in a URL.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated

from aiohttp import web
from msgspec import Meta

from gateway.http import Handler
from gateway.routing import Reply, Routes

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
AssetName = Annotated[str, Meta(pattern="^[a-z][a-z0-9-]{0,63}$")]


@functools.cache
def asset(file_name: str) -> bytes | None:
    """A file of the ``static`` folder (None: there is none of that name)."""
    path = resources.files(__package__).joinpath("static", file_name)
    return path.read_bytes() if path.is_file() else None


def asset_response(file_name: str) -> web.Response:
    """A static file with its media type and the dashboard's headers. :raises web.HTTPNotFound:"""
    body = asset(file_name)
    if body is None:
        raise web.HTTPNotFound(text=f"The dashboard has no file {file_name}.")
    media_type = MEDIA_TYPES[file_name[file_name.rindex(".") :]]
    return web.Response(body=body, content_type=media_type, charset="utf-8", headers=HEADERS)


def wants_page(request: web.Request) -> bool:
    """Whether a request for ``/`` is a browser's: its ``Accept`` names HTML at least as highly as JSON."""
    quality: dict[str, float] = {}
    for item in request.headers.get("Accept", "").split(","):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        value = 1.0
        for parameter in parameters:
            name, _, number = parameter.partition("=")
            if name.strip() == "q":
                try:
                    value = float(number)
                except ValueError:
                    value = 0.0
        quality[media_type.lower()] = value
    html = quality.get("text/html", 0.0)
    return html > 0 and html >= quality.get("application/json", 0.0)


@web.middleware
async def page_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``GET /`` from a browser: the dashboard's page; anything else goes on as before."""
    if request.path == "/" and request.method in ("GET", "HEAD") and wants_page(request):
        response = asset_response("index.html")
        response.headers["Vary"] = "Accept"
        return response
    return await handler(request)


routes = Routes()


@routes.get(
    "/dashboard/{name}.js",
    "A module of the web dashboard",
    public=True,
    path_types={"name": AssetName},
    replies=[
        Reply(
            200,
            bytes,
            "An ES module.",
            headers={"Content-Security-Policy": CSP},
            media_type="text/javascript",
        )
    ],
    errors=(404,),
)
async def dashboard_module(request: web.Request) -> web.Response:
    return asset_response(f"{request.match_info['name']}.js")


@routes.get(
    "/dashboard/{name}.css",
    "A style sheet of the web dashboard",
    public=True,
    path_types={"name": AssetName},
    replies=[
        Reply(200, bytes, "A style sheet.", headers={"Content-Security-Policy": CSP}, media_type="text/css")
    ],
    errors=(404,),
)
async def dashboard_style(request: web.Request) -> web.Response:
    return asset_response(f"{request.match_info['name']}.css")


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
