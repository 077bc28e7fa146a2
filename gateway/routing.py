"""The gateway's route registry: each route says once what it takes and what it answers.

A service module makes one ``Routes`` and declares its routes on it::

    routes = Routes()

    @routes.post(
        "/compute/v2.1/servers",
        "Create a server",
        body=ServerCreateRequest,
        replies=[Reply(202, ServerCreated, "Recorded; the build goes on.", headers={"Location": "..."})],
        errors=(),
    )
    async def create_server(request: web.Request, body: ServerCreateRequest) -> web.Response: ...

The types are msgspec ``Struct``s defined beside the handler (see ``Body`` and ``Request``).
From that one declaration:

* **requests are checked** before the handler runs: path parameters (``Id`` unless the route
  says otherwise), query parameters (``query=``: a Struct, converted from the query string
  with ``strict=False``), header parameters (``headers=``: a Struct whose members are named
  for the headers, matched without regard to case) and the JSON body (``body=``: decoded with
  msgspec, a whole number written ``1.0`` taken as the integer JSON Schema says it is); a
  wrong one is ``InvalidRequest`` (400, in the service's error format) with msgspec's message,
  which names the member; a body that is not JSON (or nested too deeply to decode) is 400 too,
  another media type 415 (a JSON dialect, such as Glance's JSON-patch media types, is decoded as
  JSON; ``other_bodies`` names more media types a route takes, each with its body's type), one
  over 1 MiB 413, one that arrives too slowly 408 (``read_body``);
* the handler gets ``body=``, ``query=`` and ``headers=`` already typed, builds its answer
  from the reply Structs and returns it with ``json_response`` (or ``no_content``);
* **the policy** (``<service>:read`` for GET and HEAD, ``<service>:write`` otherwise, unless
  the route names one; ``NO_POLICY``: a valid token is enough, the actor checks the caller),
  whether the route is **public** and whether its token may come in the query
  (``token_in_query``: the event socket, as browsers' WebSockets set no headers) are read by
  the app's auth middleware;
* **``/openapi.json``** is assembled from the registry (``gateway.openapi``): operations,
  parameters, bodies, every reply and every error status the route can answer.

With ``AIOSTACK_CHECK_REPLIES=1`` (the test suite) a handler answering a status its route does
not declare, or a JSON body that is not of the declared type, fails the request (500), as
actors' replies are checked against their API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from aiohttp import hdrs, web
from msgspec import Meta

from bus import InvalidRequest
from gateway.http import JSON, LIMITS, Handler, service_of

OCTETS = "application/octet-stream"
MAX_AMOUNT = 2**31 - 1

ROUTES = web.AppKey("routes", list)
"""The app's registered routes, in the order they were added (``gateway.openapi`` reads them)."""
BODY = web.RequestKey("body", bytes)
"""A JSON body as the registry read it (``read_body``): a handler that wants the raw bytes finds
them here (``request.read()`` would find the stream already read)."""

Id = Annotated[str, Meta(min_length=1, max_length=255)]
"""The id (or name) of a resource in a path or a body: what the actors take as an id."""
Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
"""An ISO 8601 UTC time, as OpenStack APIs show them (``2026-01-01T00:00:00Z``)."""
DATE_PATTERN = (
    "([1-9][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    "|02-(0[1-9]|1[0-9]|2[0-8]))|[1-9][0-9](0[48]|[2468][048]|[13579][26])-02-29)"
)
_OFFSET = "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
TIME_PATTERN = f"^{DATE_PATTERN}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{{1,6}})?{_OFFSET}?$"
TimeParameter = Annotated[str, Meta(pattern=TIME_PATTERN, examples=["2026-01-01T00:00:00Z"])]
"""A time a request gives: ISO 8601, UTC when it has no offset (``moment`` reads it). A pattern, not
JSON Schema's ``format`` (an annotation only, which a generator may ignore): every date it lets
through is one, from the year 1000 (February 29th of the years that end in 04 to 96 and are leap
years; not of 2000, 2400...)."""


def moment(text: str) -> datetime:
    """A ``TimeParameter`` as an aware time (UTC when it names no offset)."""
    parsed: datetime = msgspec.convert(text, datetime, strict=False)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


T = typing.TypeVar("T")


def given(value: T | msgspec.UnsetType) -> T | None:
    """A member or parameter the request may leave out: its value, None when it is left out."""
    return None if value is msgspec.UNSET else value


@dataclass(frozen=True, slots=True)
class OtherThan:
    """Path parameter metadata: the words a sibling route has at its place (see ``id_other_than``)."""

    words: tuple[str, ...]


def id_other_than(*words: str) -> Any:
    """An ``Id`` path parameter the router never matches as one of ``words``: the names of sibling
    routes (``/servers/detail`` beside ``/servers/{server_id}``), as OpenAPI's concrete paths
    come before templated ones. So a method ``/servers/detail`` lacks is a 405 that names its own
    methods only, not those of a server."""
    return Annotated[str, Meta(min_length=1, max_length=255), OtherThan(words)]


def _router_path(route: Route) -> str:
    """The route's path for aiohttp's router: a parameter that is none of some words gets a regex."""
    path = route.path
    for name, type_ in route.path_types.items():
        for metadata in typing.get_args(type_)[1:] if typing.get_origin(type_) is Annotated else ():
            if isinstance(metadata, OtherThan):
                words = "|".join(re.escape(word) for word in metadata.words)
                path = path.replace(f"{{{name}}}", f"{{{name}:(?!(?:{words})$)[^/]+}}")
    return path


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A response body (or part of one): closed, so a member added or dropped shows in the document."""


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body (or part of one) that refuses unknown members, as Nova's schemas do."""


class OpenRequest(msgspec.Struct, kw_only=True):
    """A request body (or part of one) that ignores unknown members, as Cinder's do."""


class Query(msgspec.Struct, kw_only=True):
    """Query parameters (others are ignored, as most of OpenStack's services do; a subclass with
    ``forbid_unknown_fields=True`` refuses them, as Neutron refuses an unknown filter)."""


class Headers(msgspec.Struct, kw_only=True):
    """Header parameters, each member named for its header (``msgspec.field(name=...)``); the
    request's other headers are not looked at."""


class Link(Body):
    rel: str
    href: str


def schema_extra(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """What a Struct adds to its generated JSON schema (``__schema_extra__``: e.g. Glance's typed
    extra properties), applied by ``gateway.openapi`` to the Struct's component."""
    extra: dict[str, Any] = getattr(struct, "__schema_extra__", {})
    return extra


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer a route gives: its status, its body's type (None: no body) and its headers.

    ``body`` is a msgspec type (a ``Body`` Struct, usually) for JSON, or ``bytes`` for data
    (``media_type`` says which); ``headers`` names the response headers it always carries;
    ``alternatives``: other JSON bodies the same status may carry instead (the document gives
    them all as ``oneOf``, ``body`` first: Neutron's create answers one resource, or the list
    of a bulk create); ``or_empty``: the status may come with no body at all instead (Nova's
    server actions: a rebuild answers the server, the others nothing).
    """

    status: int
    body: Any = None
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str = JSON
    alternatives: tuple[Any, ...] = ()
    or_empty: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One registered route: what it takes, what it answers, who may call it."""

    method: str
    path: str
    handler: Handler
    summary: str
    description: str
    replies: tuple[Reply, ...]
    body: Any
    body_media_type: str
    query: type[Query] | None
    headers: type[Headers] | None
    path_types: Mapping[str, Any]
    public: bool
    policy: str | None
    token_in_query: bool
    errors: frozenset[int]
    service: str
    other_bodies: Mapping[str, Any] = field(default_factory=dict)
    """More media types the body may come in (each a JSON dialect), each with its type."""

    @property
    def statuses(self) -> frozenset[int]:
        """Every status the route's handler may return (errors are raised, not returned)."""
        return frozenset(reply.status for reply in self.replies)

    def path_parameters(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    def error_statuses(self, microversioned: bool) -> list[int]:
        """Every error status the route can answer, from what it declares and what it takes."""
        statuses = set(self.errors)
        if not self.public:
            statuses |= {401, 403}
        if self.body is not None:
            statuses |= {400, 408, 415} | ({413} if json_based(self.body_media_type) else set())
        if self.query is not None or self.headers is not None or self.path_types:
            statuses.add(400)
        if microversioned:
            statuses |= {400, 406}
        return sorted(statuses)


CHECK_REPLIES = os.environ.get("AIOSTACK_CHECK_REPLIES") == "1"
NO_POLICY = ""
"""A route's ``policy`` when a valid token is enough: the actor (or the handler) checks the caller
(a user's own token, its own application credentials; an unscoped token has no role)."""


class Routes:
    """The routes of one service module, declared with ``get``/``post``/``put``/``delete``."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def include(self, others: Iterable[Route]) -> None:
        """Take another module's routes (a package's modules into its ``routes``)."""
        self.routes.extend(others)

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        replies: Iterable[Reply],
        body: Any = None,
        body_media_type: str = JSON,
        query: type[Query] | None = None,
        headers: type[Headers] | None = None,
        path_types: Mapping[str, Any] | None = None,
        public: bool = False,
        policy: str | None = None,
        token_in_query: bool = False,
        errors: Iterable[int] = (),
        description: str | None = None,
        other_bodies: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a route; the decorated handler gets ``body=``, ``query=`` and ``headers=`` when
        they are declared.

        ``path_types`` types path parameters (each is ``Id`` otherwise); ``errors`` are the
        statuses of the errors of meaning the handler (or the actor it calls) raises: 404, 409...
        The ones that follow from the declaration (401 and 403 when not public, 400 for a body,
        a query, headers or a microversion, 413 and 415 for a body) are added by the document.
        """
        service = service_of(path)

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            types = {name: Id for name in re.findall(r"\{(\w+)\}", path)} | dict(path_types or {})
            route = Route(
                method=method,
                path=path,
                handler=_serve(handler, body, body_media_type, query, headers, types, other_bodies or {}),
                summary=summary,
                description=description or inspect.cleandoc(handler.__doc__ or ""),
                replies=tuple(replies),
                body=body,
                body_media_type=body_media_type,
                query=query,
                headers=headers,
                path_types=types,
                public=public,
                policy=None if public or policy == NO_POLICY else policy or _default_policy(service, method),
                token_in_query=token_in_query,
                errors=frozenset(errors),
                service=service,
                other_bodies=dict(other_bodies or {}),
            )
            setattr(route.handler, "aiostack_route", route)  # noqa: B010 (read by the auth middleware)
            self.routes.append(route)
            return handler

        return register

    def get(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("GET", path, summary, **kwargs)

    def head(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("HEAD", path, summary, **kwargs)

    def post(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("POST", path, summary, **kwargs)

    def put(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PUT", path, summary, **kwargs)

    def patch(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PATCH", path, summary, **kwargs)

    def delete(
        self, path: str, summary: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("DELETE", path, summary, **kwargs)

    def add_to(self, app: web.Application) -> None:
        """Serve the routes (no automatic HEAD: a method the document does not name is a 405)."""
        registered: list[Route] = app.setdefault(ROUTES, [])
        for route in self.routes:
            app.router.add_route(route.method, _router_path(route), route.handler)
            registered.append(route)

    def add_aliases_to(
        self,
        app: web.Application,
        prefix: str,
        alias: str,
        *,
        wrap: Callable[[Handler], Handler] | None = None,
    ) -> None:
        """Serve each route under ``prefix`` at ``alias`` too, by the same handler (``wrap``: behind
        what it adds; the registry, and so the OpenAPI document, names each route once: at ``prefix``)."""
        for route in self.routes:
            path = _router_path(route)
            if path.startswith(f"{prefix}/"):
                handler = route.handler if wrap is None else wrap(route.handler)
                app.router.add_route(route.method, alias + path.removeprefix(prefix), handler)


def route_of(handler: Any) -> Route | None:
    """The registered route a (possibly middleware-wrapped) handler serves, if any."""
    route: Route | None = getattr(handler, "aiostack_route", None)
    return route


def _default_policy(service: str, method: str) -> str:
    return f"{service}:{'read' if method in ('GET', 'HEAD') else 'write'}"


def _serve(
    handler: Callable[..., Any],
    body: Any,
    body_media_type: str,
    query: type[Query] | None,
    headers: type[Headers] | None,
    path_types: Mapping[str, Any],
    other_bodies: Mapping[str, Any],
) -> Handler:
    """The aiohttp handler: check the path, query, headers and body, call ``handler``, check its status."""
    path_struct = (
        msgspec.defstruct(f"{handler.__name__}_path", list(path_types.items())) if path_types else None
    )
    list_fields = frozenset(
        info.encode_name for info in msgspec.structs.fields(query or Query) if _is_list(info.type)
    )
    header_names = [info.encode_name for info in msgspec.structs.fields(headers or Headers)]

    async def serve(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if path_struct is not None:
            _convert(dict(request.match_info), path_struct, "path")
        if query is not None:
            values = {
                name: request.query.getall(name) if name in list_fields else request.query[name]
                for name in request.query
            }
            kwargs["query"] = _convert(values, query, "query")
        if headers is not None:
            sent = {
                name: ", ".join(request.headers.getall(name))
                for name in header_names
                if name in request.headers
            }
            kwargs["headers"] = _convert(sent, headers, "header")
        if body is not None:
            if hdrs.CONTENT_TYPE in request.headers and request.content_type in other_bodies:
                media_type, declared = request.content_type, other_bodies[request.content_type]
            else:
                _check_media_type(request, body_media_type, *other_bodies)
                media_type, declared = body_media_type, body
            if json_based(media_type):
                raw = request[BODY] = await read_body(request)
                kwargs["body"] = decode_json(raw, declared)
        response: web.StreamResponse = await handler(request, **kwargs)
        if CHECK_REPLIES:
            check_reply(route_of(serve), request, response)
        return response

    serve.__name__ = handler.__name__
    serve.__doc__ = handler.__doc__
    return serve


def check_reply(route: Route | None, request: web.Request, response: web.StreamResponse) -> None:
    """:raises RuntimeError: the answer's status is not one its route declares, or its JSON body is
    not of the declared type (``AIOSTACK_CHECK_REPLIES=1``: the test suite)."""
    assert route is not None
    declared = {reply.status: reply for reply in route.replies}.get(response.status)
    if declared is None:
        raise RuntimeError(f"{request.method} {request.path} answered {response.status}: not declared")
    if declared.body is None or declared.media_type != JSON:
        return
    if declared.or_empty and isinstance(response, web.Response) and not response.body:
        return
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise RuntimeError(f"{request.method} {request.path} answered {response.status} without a JSON body")
    for body in (*declared.alternatives, declared.body):
        try:
            msgspec.json.decode(response.body, type=body)
            return
        except msgspec.ValidationError as exc:
            error = exc
    raise RuntimeError(
        f"{request.method} {request.path} answered {response.status} with a body that is not "
        f"{getattr(declared.body, '__name__', declared.body)}: {error}"
    )


async def body_pieces(request: web.Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives, as fast as the gateway's ``Limits`` ask: it may take
    ``body_timeout`` seconds, and one more for every ``body_min_rate`` bytes received.

    :raises web.HTTPRequestTimeout: the body is slower than that (408; the connection is closed).
    :raises web.HTTPBadRequest: its framing is broken (a bad chunked encoding, a short body).
    """
    limits = request.app[LIMITS]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_timeout
    received = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                piece = await request.content.readany()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"The request body did not arrive in time ({received} bytes in"
                f" {limits.body_timeout + received / limits.body_min_rate:.0f} s); send it faster."
            ) from None
        except web.RequestPayloadError:
            raise web.HTTPBadRequest(text="The request body is malformed (its length or chunks).") from None
        if not piece:
            return
        received += len(piece)
        deadline += len(piece) / limits.body_min_rate
        yield piece


async def read_body(request: web.Request) -> bytes:
    """The whole request body (``body_pieces``), at most the app's ``client_max_size``.

    :raises web.HTTPRequestEntityTooLarge: it is longer (413).
    """
    limit = request.client_max_size  # what request.read() would allow: the app's MAX_BODY
    body = bytearray()
    async with contextlib.aclosing(body_pieces(request)) as pieces:
        async for piece in pieces:
            body += piece
            if len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


def _number(literal: str) -> int | float:
    """A JSON number with a fraction: an int when it is whole (``154.0`` is an integer to JSON
    Schema, and so to the gateway), else a float."""
    number = float(literal)
    return int(number) if number.is_integer() else number


_JSON = msgspec.json.Decoder(float_hook=_number)
NESTED_TOO_DEEPLY = "Malformed request body: its arrays and objects are nested too deeply."


def decode_json(raw: bytes, type_: Any) -> Any:
    """A JSON request body as ``type_``. :raises InvalidRequest: not JSON, or not of the type."""
    try:
        value = _JSON.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Malformed request body: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest(NESTED_TOO_DEEPLY) from None
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid input for the request body: {_naming_the_value(exc, value)}") from None
    except RecursionError:
        raise InvalidRequest(NESTED_TOO_DEEPLY) from None


def _convert(values: dict[str, Any], type_: Any, where: str) -> Any:
    try:
        return msgspec.convert(values, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid {where} parameter: {_naming_the_value(exc, values)}") from None


_AT = re.compile(r" - at `\$((?:\.[^.\[`]+|\[[0-9]+\])*)`$")
_STEP = re.compile(r"\.([^.\[`]+)|\[([0-9]+)\]")


def _naming_the_value(error: msgspec.ValidationError, document: Any) -> str:
    """msgspec's message, and the value it is about when that is a scalar (``... - at `$.subnet.cidr`:
    'not-a-cidr'``), as OpenStack's services name what they refuse."""
    message = str(error)
    at = _AT.search(message)
    if at is None:
        return message
    value = document
    for key, index in _STEP.findall(at.group(1)):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return message
    if isinstance(value, dict | list):
        return message
    shown = repr(value)
    return f"{message}: {shown if len(shown) <= 80 else shown[:77] + '...'}"


def json_based(media_type: str) -> bool:
    """Whether a body of this media type is JSON: ``application/json``, a ``+json`` type, or a
    JSON-patch dialect (Glance's ``application/openstack-images-v2.1-json-patch``)."""
    return media_type == JSON or media_type.endswith(("+json", "-json-patch"))


def _check_media_type(request: web.Request, expected: str, *others: str) -> None:
    """A body of another media type (than ``expected`` and ``others``) is 415; a JSON body may
    come without a Content-Type."""
    if hdrs.CONTENT_TYPE not in request.headers:
        if expected == JSON:
            return
    elif expected == JSON:
        if request.content_type == JSON or request.content_type.endswith("+json"):
            return
    elif request.content_type == expected:
        return
    raise web.HTTPUnsupportedMediaType(
        text=f"Content-Type must be {' or '.join((expected, *others))},"
        f" not {request.headers.get(hdrs.CONTENT_TYPE, 'missing')}"
    )


def _is_list(annotation: Any) -> bool:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) in (list, tuple, set, frozenset)
