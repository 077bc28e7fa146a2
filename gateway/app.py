"""The gateway's aiohttp application: request ids, authentication, errors, and the service routes.

Each service's routes live in their own module (``versions``, ``identity``, ``compute``,
``image``, ``network``, ``security_groups``, ``routers``, ``floating_ips``, ``volume``, ``websocket``,
``metrics``, ``openapi``, ``dashboard``) with an ``add_routes(app)``
function, and every route is declared on a ``gateway.routing.Routes`` registry, which checks
requests against their types, names each route's policy, and from which ``/openapi.json`` is
assembled. A handler gets the caller with ``context_of(request)`` and calls actors through
typed clients, ``await client(request, Images).get(image_id=...)``: every handler runs in the
request's scope (``bus.request_scope``), so each call carries the request id and the caller's
context (token included) on every hop.

Only this module imports the service modules; they import ``gateway.http`` (shared helpers)
and ``gateway.routing``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bus import (
    ActorStopped,
    AiostackError,
    BadMessage,
    Bus,
    BusClosed,
    CallTimeout,
    DeadlineExpired,
    NoResponders,
    NoSuchMethod,
    Overloaded,
    RemoteError,
    StoreUnavailable,
    Unauthorized,
    request_scope,
)
from gateway.http import (
    BUS,
    CLIENTS,
    CONTEXT,
    LIMITS,
    REQUEST_ID,
    TOKENS,
    Handler,
    Limits,
    error_body,
    json_response,
    service_of,
    token_of_protocols,
)
from gateway.metrics import count_error, metrics_middleware
from gateway.routing import route_of
from runtime.auth import TokenValidator
from runtime.policy import enforce

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""The largest request body (413 past it)."""
MAX_TOKEN = 8192
"""The longest token taken (Fernet tokens are a few hundred characters of printable ASCII)."""
MAX_REQUEST_LINE = 1 << 20
"""The longest request line, its query included: as long as a body may be. A listing filtered by
many values (Neutron's filters repeat) is a long query; aiohttp's default (8 KiB) would refuse it
with a bare text answer, before any route (and its error format) sees it."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = f"req-{uuid.uuid4()}"
    return await handler(request)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names its request id, streamed ones (downloads, websockets) too; compute's
    under Nova's own name as well (``x-compute-request-id``)."""
    if REQUEST_ID in request:
        response.headers["x-openstack-request-id"] = request[REQUEST_ID]
        if service_of(request.path) == "compute":
            response.headers["x-compute-request-id"] = request[REQUEST_ID]


INSIDE: tuple[tuple[type[AiostackError] | tuple[type[AiostackError], ...], str], ...] = (
    (BadMessage, "The request holds a value the service cannot take (too large, or not representable)."),
    (NoSuchMethod, "The service cannot do this at the moment (it is being upgraded); request id {rid}."),
    ((CallTimeout, DeadlineExpired), "A service did not answer in time; the request id is {rid}."),
    (Overloaded, "The service is busy; try again in a moment (the request id is {rid})."),
    (
        (NoResponders, ActorStopped, BusClosed, StoreUnavailable),
        "A service is not available; try again later (request {rid}).",
    ),
    (RemoteError, "Unexpected error; the request id is {rid}."),
)
"""What a client is told of an error about aiostack's inside (its bus, its actors), not about its
request: the message itself (subjects, envelopes, msgpack, exception names) goes to the log only."""
SHOWN_HEADERS = frozenset(("allow", "retry-after"))
"""The headers of an aiohttp HTTP error that its JSON answer keeps."""


def public_message(exc: AiostackError, request_id: str | None) -> str | None:
    """The message a client gets for an error about the inside of aiostack; None for an error of
    meaning (not found, conflict, forbidden, invalid...), whose own message is for the client."""
    for kinds, message in INSIDE:
        if isinstance(exc, kinds):
            return message.format(rid=request_id)
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = service_of(request.path)
    try:
        return await handler(request)
    except AiostackError as exc:
        count_error(handler, type(exc))
        status = exc.http_status
        message = public_message(exc, request.get(REQUEST_ID))
        if status >= 500 or message is not None:
            log.warning(
                "%s %s rid=%s: %s: %s", request.method, request.path, request.get(REQUEST_ID), exc.code, exc
            )
        return json_response(
            error_body(service, status, message or str(exc), type(exc).__name__), status=status
        )
    except web.HTTPException as exc:
        if exc.status >= 400:
            count_error(handler, type(exc))
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        response = json_response(
            error_body(service, exc.status, message),
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() in SHOWN_HEADERS},
        )
        if exc.status == 408:  # the body is still coming, slowly: do not read the rest
            response.force_close()
        return response
    except Exception as exc:
        count_error(handler, type(exc))
        log.exception("%s %s rid=%s failed", request.method, request.path, request.get(REQUEST_ID))
        message = f"Unexpected error; the request id is {request.get(REQUEST_ID)}."
        return json_response(error_body(service, 500, message), status=500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The caller of a route that is not public (its X-Auth-Token, or where the route takes one
    ``?token=`` or the WebSocket subprotocol ``aiostack.token.<token>``), checked against the
    route's policy. A request no route matches (404, 405) needs a token too, and no policy: the
    router answers it."""
    route = route_of(handler)
    if (route is not None and route.public) or request.method == "OPTIONS":
        with request_scope(request[REQUEST_ID]):
            return await handler(request)
    token = request.headers.get("X-Auth-Token")
    if not token and route is not None and route.token_in_query:
        token = request.query.get("token") or token_of_protocols(request)
    if not token:
        raise Unauthorized("The request you have made requires authentication (X-Auth-Token missing).")
    if len(token) > MAX_TOKEN or not (token.isascii() and token.isprintable()):
        raise Unauthorized("The request you have made requires authentication (the token is malformed).")
    ctx = (await request.app[TOKENS].validate(token)).context
    request[CONTEXT] = ctx
    if route is not None and route.policy is not None:
        enforce(route.policy, ctx)
    with request_scope(request[REQUEST_ID], ctx):
        return await handler(request)


async def _listen_for_revocations(app: web.Application) -> AsyncIterator[None]:
    await app[TOKENS].start()
    yield


def handler_args(limits: Limits) -> dict[str, Any]:
    """How aiohttp's request handler of each connection is made: the longest request line, and
    ``keepalive_timeout`` as the deadline for a request's head. aiohttp arms that timer when a
    connection opens and after each answer, and closes a connection that is still waiting for a
    complete request head when it fires: so a client sending its headers a byte at a time holds a
    connection ``header_timeout`` seconds at most, as an idle one does."""
    return {"max_line_size": MAX_REQUEST_LINE, "keepalive_timeout": limits.header_timeout}


def create_app(bus: Bus, limits: Limits | None = None) -> web.Application:
    """The whole gateway on one bus connection (``limits``: the defaults when None)."""
    from gateway import (
        compute,
        dashboard,
        floating_ips,
        identity,
        image,
        metrics,
        network,
        openapi,
        routers,
        security_groups,
        versions,
        volume,
        websocket,
    )

    limits = limits or Limits()
    app = web.Application(
        middlewares=[
            metrics_middleware,
            request_id_middleware,
            error_middleware,
            dashboard.page_middleware,
            auth_middleware,
            versions.microversion_middleware,
        ],
        client_max_size=MAX_BODY,
        handler_args=handler_args(limits),
    )
    app[LIMITS] = limits
    app[BUS] = bus
    app[CLIENTS] = {}
    app[TOKENS] = TokenValidator(bus)
    app.cleanup_ctx.append(_listen_for_revocations)
    app.on_response_prepare.append(_add_request_id)
    modules = (versions, identity, compute, image, network, security_groups, routers, floating_ips, volume)
    for module in (*modules, websocket, metrics, openapi, dashboard):
        module.add_routes(app)
    return app
