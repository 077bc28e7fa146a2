"""What every gateway module shares: the app's keys, the caller, typed clients, JSON in and out,
and error bodies in each service's format.

Service modules import this (and ``gateway.routing``), never ``gateway.app``: only the app
imports the service modules, so the gateway has no import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgspec
from aiohttp import web

from bus import Bus, Context
from bus.api import ServiceAPI
from runtime.auth import TokenValidator

Facet = TypeVar("Facet", bound=ServiceAPI)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CALL_TIMEOUT = 30.0
"""How long the gateway waits for an actor by default."""
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of the gateway: sockets, and time to send a request.

    ``Limits.from_environment()`` reads them from ``AIOSTACK_GATEWAY_SOCKETS_PER_USER``,
    ``AIOSTACK_GATEWAY_HEADER_TIMEOUT``, ``AIOSTACK_GATEWAY_BODY_TIMEOUT`` and
    ``AIOSTACK_GATEWAY_BODY_MIN_RATE`` (``aiostack up`` passes its environment to the gateway).
    """

    sockets_per_user: int = 32
    """Event sockets one user may hold open at once; one more is refused (429)."""
    header_timeout: float = 20.0
    """Seconds a connection may wait for the head of its next request (idle time included, from its
    opening or its last answer) before it is closed: a client that sends its headers slowly holds a
    connection this long at most. Above aiohttp clients' own 15 s keep-alive, so they never reuse a
    connection the gateway is closing."""
    body_timeout: float = 20.0
    """Seconds a request body may take, plus one second for every ``body_min_rate`` bytes received
    (Apache's ``mod_reqtimeout``): a body slower than that is answered 408 and its connection closed."""
    body_min_rate: int = 500
    """Bytes per second a body must average beyond ``body_timeout``."""

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "sockets_per_user": "AIOSTACK_GATEWAY_SOCKETS_PER_USER",
        "header_timeout": "AIOSTACK_GATEWAY_HEADER_TIMEOUT",
        "body_timeout": "AIOSTACK_GATEWAY_BODY_TIMEOUT",
        "body_min_rate": "AIOSTACK_GATEWAY_BODY_MIN_RATE",
    }

    def __post_init__(self) -> None:
        for name in self.ENVIRONMENT:
            if not getattr(self, name) > 0:
                raise ValueError(f"gateway limit {name} must be above 0, not {getattr(self, name)!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        """The defaults, but for the limits the environment sets.

        :raises ValueError: a variable that is not a positive number (an integer for counts).
        """
        given: dict[str, Any] = {}
        for name, variable in cls.ENVIRONMENT.items():
            if environ.get(variable):
                whole = name in ("sockets_per_user", "body_min_rate")
                try:
                    given[name] = int(environ[variable]) if whole else float(environ[variable])
                except ValueError:
                    kind = "whole number" if whole else "number"
                    given_value = environ[variable]
                    raise ValueError(f"{variable} must be a {kind} above 0, not {given_value!r}") from None
        return cls(**given)


BUS = web.AppKey("bus", Bus)
CLIENTS = web.AppKey("clients", dict)
TOKENS = web.AppKey("tokens", TokenValidator)
LIMITS = web.AppKey("limits", Limits)
REQUEST_ID = web.RequestKey("request_id", str)
CONTEXT = web.RequestKey("context", Context)
MICROVERSION = web.RequestKey("microversion", tuple)

ERROR_NAMES = {
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
    502: "badGateway",
    503: "serviceUnavailable",
    504: "gatewayTimeout",
}
"""Nova's (and Cinder's) name of the one member of an error body, by status."""

_encode = msgspec.json.Encoder().encode


def service_of(path: str) -> str:
    """The service a path belongs to: its first segment (``compute``, ``image``, ...)."""
    return path.strip("/").split("/", 1)[0] or "root"


def error_format(service: str) -> str:
    """How the service spells an error: ``neutron``, ``keystone`` (identity, image) or ``nova``."""
    if service == "network":
        return "neutron"
    if service in ("identity", "image"):
        return "keystone"
    return "nova"


class ErrorDetail(msgspec.Struct, forbid_unknown_fields=True):
    """What went wrong (Nova's and Cinder's error member)."""

    code: int
    message: str


def _nova_error(member: str) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        member[0].upper() + member[1:], [(member, ErrorDetail)], forbid_unknown_fields=True
    )


NOVA_ERRORS = {member: _nova_error(member) for member in dict.fromkeys(ERROR_NAMES.values())}
"""Nova's (and Cinder's) error bodies, one member named for the status: ``{"itemNotFound": {...}}``."""


class KeystoneErrorDetail(msgspec.Struct, forbid_unknown_fields=True):
    code: int
    title: str
    message: str


class KeystoneError(msgspec.Struct, forbid_unknown_fields=True):
    """Keystone's error body (Glance's too, here)."""

    error: KeystoneErrorDetail


class NeutronErrorDetail(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    message: str
    detail: str


class NeutronError(msgspec.Struct, forbid_unknown_fields=True):
    """Neutron's error body."""

    NeutronError: NeutronErrorDetail


def error_type(service: str, status: int) -> type[msgspec.Struct]:
    """The type of the error body the service answers with ``status``."""
    spelled = error_format(service)
    if spelled == "neutron":
        return NeutronError
    if spelled == "keystone":
        return KeystoneError
    return NOVA_ERRORS[ERROR_NAMES.get(status, "computeFault")]


def error_body(service: str, status: int, message: str, error_type_name: str | None = None) -> dict[str, Any]:
    """An error in the format of the service the path belongs to (``error_type`` documents it)."""
    spelled = error_format(service)
    body: msgspec.Struct
    if spelled == "neutron":
        body = NeutronError(
            NeutronErrorDetail(type=error_type_name or "HTTPError", message=message, detail="")
        )
    elif spelled == "keystone":
        title = error_type_name or ERROR_NAMES.get(status, "error")
        body = KeystoneError(KeystoneErrorDetail(code=status, title=title, message=message))
    else:
        body = error_type(service, status)(ErrorDetail(code=status, message=message))
    built: dict[str, Any] = msgspec.to_builtins(body)
    return built


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer: a response Struct (or plain data) encoded with msgspec."""
    return web.Response(body=_encode(data), status=status, headers=headers, content_type=JSON)


def no_content(status: int = 204, headers: dict[str, str] | None = None) -> web.Response:
    """An answer without a body (no Content-Type either)."""
    return web.Response(status=status, headers=headers)


EVENTS_PROTOCOL = "aiostack.events"
"""The WebSocket subprotocol the event socket answers with when a client offers it."""
TOKEN_PROTOCOL = "aiostack.token."
"""A WebSocket subprotocol ``aiostack.token.<token>`` carries the caller's token: a browser's
WebSocket sets no header but this one, and a URL (``?token=``) may end up in a history or a log."""


def token_of_protocols(request: web.Request) -> str | None:
    """The token a WebSocket handshake offers as the subprotocol ``aiostack.token.<token>``."""
    for header in request.headers.getall("Sec-WebSocket-Protocol", []):
        for offered in header.split(","):
            offered = offered.strip()
            if offered.startswith(TOKEN_PROTOCOL):
                return offered[len(TOKEN_PROTOCOL) :]
    return None


def context_of(request: web.Request) -> Context:
    """The caller of an authenticated request."""
    return request[CONTEXT]


def client(request: web.Request, facet: type[Facet], *, timeout: float = CALL_TIMEOUT) -> Facet:
    """The gateway's client of an actor's API facet (its calls carry the request's scope), one per
    facet and timeout per app."""
    clients: dict[tuple[type[ServiceAPI], float], ServiceAPI] = request.app[CLIENTS]
    made = clients.get((facet, timeout))
    if not isinstance(made, facet):
        made = clients[facet, timeout] = facet.client(request.app[BUS], timeout=timeout)
    return made
