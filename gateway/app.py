"""The gateway's aiohttp application: request ids, authentication, errors, and the service routes.

Each service's routes live in their own module (``identity``, ``compute``, ``image``,
``network``, ``volume``, ``websocket``) with an ``add_routes(app)`` function. A handler
gets the caller with ``context_of(request)`` and calls actors through typed clients,
``await client(request, Images).get(image_id=...)``: every handler runs in the request's
scope (``bus.request_scope``), so each call carries the request id and the caller's context
(token included) on every hop.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from bus import AiostackError, Bus, Context, InvalidRequest, Unauthorized, request_scope
from bus.api import ServiceAPI
from runtime.auth import TokenValidator
from runtime.policy import enforce

log = logging.getLogger(__name__)

Facet = TypeVar("Facet", bound=ServiceAPI)
CALL_TIMEOUT = 30.0
"""How long the gateway waits for an actor by default."""

BUS = web.AppKey("bus", Bus)
CLIENTS = web.AppKey("clients", dict)
TOKENS = web.AppKey("tokens", TokenValidator)
REQUEST_ID = web.RequestKey("request_id", str)
CONTEXT = web.RequestKey("context", Context)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    500: "computeFault",
    501: "notImplemented",
    503: "serviceUnavailable",
    504: "gatewayTimeout",
}


def public(handler: Handler) -> Handler:
    """Mark a route that needs no X-Auth-Token (token issue, version documents)."""
    handler.aiostack_public = True  # type: ignore[attr-defined]
    return handler


def error_body(service: str, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """An error in the format of the service the path belongs to."""
    if service == "network":
        return {"NeutronError": {"type": error_type or "HTTPError", "message": message, "detail": ""}}
    if service in ("identity", "image"):
        return {
            "error": {
                "code": status,
                "title": error_type or _ERROR_NAMES.get(status, "error"),
                "message": message,
            }
        }
    return {_ERROR_NAMES.get(status, "computeFault"): {"code": status, "message": message}}


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer, encoded with orjson (with the standard json module, encoding a page of
    servers was the largest share of a listing's CPU)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def service_of(path: str) -> str:
    return path.strip("/").split("/", 1)[0] or "root"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = f"req-{uuid.uuid4()}"
    return await handler(request)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names its request id, streamed ones (downloads, websockets) too."""
    if REQUEST_ID in request:
        response.headers["x-openstack-request-id"] = request[REQUEST_ID]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = service_of(request.path)
    try:
        return await handler(request)
    except AiostackError as exc:
        status = exc.http_status
        if status >= 500:
            log.warning(
                "%s %s rid=%s: %s: %s", request.method, request.path, request.get(REQUEST_ID), exc.code, exc
            )
        return json_response(error_body(service, status, str(exc), type(exc).__name__), status=status)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return json_response(
            error_body(service, exc.status, message),
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        log.exception("%s %s rid=%s failed", request.method, request.path, request.get(REQUEST_ID))
        message = f"Unexpected error; the request id is {request.get(REQUEST_ID)}."
        return json_response(error_body(service, 500, message), status=500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if getattr(handler, "aiostack_public", False) or request.method == "OPTIONS":
        with request_scope(request[REQUEST_ID]):
            return await handler(request)
    token = request.headers.get("X-Auth-Token")
    if not token and request.path == "/ws":  # browsers' WebSockets cannot set headers
        token = request.query.get("token")
    if not token:
        raise Unauthorized("The request you have made requires authentication (X-Auth-Token missing).")
    ctx = (await request.app[TOKENS].validate(token)).context
    request[CONTEXT] = ctx
    operation = route_operation(request)
    if operation is not None:
        enforce(operation, ctx)
    with request_scope(request[REQUEST_ID], ctx):
        return await handler(request)


def route_operation(request: web.Request) -> str | None:
    """The policy operation of a request: ``<service>:read`` for GET/HEAD, else ``<service>:write``.

    Identity routes check their own (finer) operations; the event socket is ``events:read``.
    """
    service = service_of(request.path)
    if service == "ws":
        return "events:read"
    if service not in ("compute", "image", "network", "volume"):
        return None
    return f"{service}:{'read' if request.method in ('GET', 'HEAD') else 'write'}"


def client(request: web.Request, facet: type[Facet]) -> Facet:
    """The gateway's client of an actor's API facet (its calls carry the request's scope)."""
    clients: dict[type[ServiceAPI], ServiceAPI] = request.app[CLIENTS]
    made = clients.get(facet)
    if not isinstance(made, facet):
        made = clients[facet] = facet.client(request.app[BUS], timeout=CALL_TIMEOUT)
    return made


async def call(request: web.Request, address: str, body: Any = None, *, timeout: float = 30.0) -> Any:
    """Call an actor for this request: same request id and the caller's context."""
    with request_scope(request[REQUEST_ID], request.get(CONTEXT)):
        return await request.app[BUS].call(address, body, timeout=timeout)


async def json_body(request: web.Request, key: str | None = None) -> Any:
    """The request's JSON body (or its ``key`` member); ``InvalidRequest`` when it is not JSON."""
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Malformed request body: not valid JSON") from None
    if key is None:
        return body
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise InvalidRequest(f"Malformed request body: expected an object with a {key!r} member")
    return body[key]


def context_of(request: web.Request) -> Context:
    return request[CONTEXT]


async def _listen_for_revocations(app: web.Application) -> AsyncIterator[None]:
    await app[TOKENS].start()
    yield


def create_app(bus: Bus) -> web.Application:
    """The whole gateway on one bus connection."""
    from gateway import compute, identity, image, network, openapi, versions, volume, websocket

    app = web.Application(
        middlewares=[
            request_id_middleware,
            error_middleware,
            auth_middleware,
            versions.microversion_middleware,
        ],
    )
    app[BUS] = bus
    app[CLIENTS] = {}
    app[TOKENS] = TokenValidator(bus)
    app.cleanup_ctx.append(_listen_for_revocations)
    app.on_response_prepare.append(_add_request_id)
    for module in (versions, identity, compute, image, network, volume, websocket, openapi):
        module.add_routes(app)
    return app
