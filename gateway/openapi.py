"""The gateway's OpenAPI 3.1 document, served at ``GET /openapi.json`` (no token needed).

It is assembled from the route registry (``gateway.routing``), which holds every route the
gateway serves: each route's path, method, summary, parameters (path, query, header, the
microversion headers of compute and volume), request body and replies come from its
declaration, and the schemas are its msgspec types (``msgspec.json.schema_components``), so
what the document says is what the gateway checks and builds. Every error status a route can
answer is documented with the body of its service's format (Nova's ``{"itemNotFound": {...}}``,
Neutron's ``NeutronError``, Keystone's and Glance's ``error``). Nothing in it is written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from http import HTTPStatus
from importlib.metadata import version
from typing import Any

import msgspec
from aiohttp import web

from gateway.http import JSON, error_format, error_type, json_response
from gateway.routing import (
    ROUTES,
    Body,
    Headers,
    OpenRequest,
    Query,
    Reply,
    Request,
    Route,
    Routes,
    json_based,
    schema_extra,
)
from gateway.versions import RANGES, header_values, is_legacy, versions_of

Schema = dict[str, Any]
PATH = "/openapi.json"
REF = "#/components/schemas/{name}"
ERROR_RESPONSES = {
    "nova": "Nova's (and Cinder's) error: one member named for the status (itemNotFound, badRequest, ...).",
    "neutron": "Neutron's error.",
    "keystone": "Keystone's error (Glance's too, here).",
}
STRING: Schema = {"type": "string"}

EMPTY_TOO = "x-aiostack-or-empty"
"""Marks a response whose documented body may also be absent (``Reply.or_empty``)."""


def _header(description: str, schema: Schema = STRING) -> Schema:
    return {"description": description, "required": True, "schema": schema}


REQUEST_ID = {"$ref": "#/components/headers/RequestId"}


def _struct_classes() -> Iterator[type[msgspec.Struct]]:
    stack: list[type[msgspec.Struct]] = [Body, Request, OpenRequest, Query, Headers]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())


def _microversion_headers(service: str) -> tuple[list[Schema], dict[str, Schema]]:
    """The request headers naming a compute or volume microversion, and the response headers echoing it."""
    low, high, legacy = RANGES[service]
    span = f"{low[0]}.{low[1]} to {high[0]}.{high[1]}"
    parameters = [
        {
            "name": "OpenStack-API-Version",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": header_values(service)},
            "description": f'"{service} X.Y" ({span}) or "{service} latest"; the lowest by default, '
            "406 for another version, 400 for anything else.",
        }
    ]
    headers = {
        "OpenStack-API-Version": _header(f'The microversion used, "{service} X.Y".'),
        "Vary": _header("The microversion headers."),
    }
    if legacy:
        parameters.append(
            {
                "name": legacy,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "enum": versions_of(service)},
                "description": "X.Y or latest (legacy; OpenStack-API-Version wins when both are given).",
            }
        )
        headers[legacy] = _header("The microversion used, X.Y (legacy).")
    return parameters, headers


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path)
    return "_".join((method.lower(), *words)) + ("_index" if path.endswith("/") and words else "")


class _Schemas:
    """The components of every type the routes use, made in one ``schema_components`` call."""

    def __init__(self, routes: list[Route]) -> None:
        types: dict[Any, None] = {}
        for route in routes:
            if route.body is not None and json_based(route.body_media_type):
                types[route.body] = None
            types |= dict.fromkeys(route.other_bodies.values())
            if route.query is not None:
                types[route.query] = None
            if route.headers is not None:
                types[route.headers] = None
            for reply in route.replies:
                if reply.body is not None and reply.media_type == JSON:
                    types |= dict.fromkeys((reply.body, *reply.alternatives))
            for status in route.error_statuses(route.service in RANGES):
                types[error_type(route.service, status)] = None
        schemas, components = msgspec.json.schema_components(list(types), ref_template=REF)
        self.of = dict(zip(types, schemas, strict=True))
        extras = {cls.__name__: schema_extra(cls) for cls in _struct_classes()}
        self.components = {
            name: {**component, **extras.get(name, {})} for name, component in sorted(components.items())
        }
        self.parameter_types = {
            kind.__name__ for route in routes for kind in (route.query, route.headers) if kind is not None
        }

    def parameters(self, struct: type[Query] | type[Headers], where: str) -> list[Schema]:
        """One parameter (``in: query`` or ``header``) per member of ``struct`` (whose component
        is not kept)."""
        component = self.components[struct.__name__]
        required = set(component.get("required", ()))
        parameters = []
        for name, schema in component["properties"].items():
            schema = {key: value for key, value in schema.items() if key != "default"}
            parameter = {"name": name, "in": where, "required": name in required, "schema": schema}
            if "description" in schema:
                parameter["description"] = schema.pop("description")
            parameters.append(parameter)
        return parameters

    def kept(self) -> dict[str, Schema]:
        return {name: schema for name, schema in self.components.items() if name not in self.parameter_types}


def _response(reply: Reply, schemas: _Schemas, version_headers: dict[str, Schema], service: str) -> Schema:
    headers: dict[str, Schema] = {"x-openstack-request-id": REQUEST_ID}
    if service == "compute":
        headers["x-compute-request-id"] = REQUEST_ID
    headers |= {name: _header(description) for name, description in reply.headers.items()}
    headers |= version_headers
    answer: Schema = {"description": reply.description or HTTPStatus(reply.status).phrase, "headers": headers}
    if reply.body is not None:
        schema = schemas.of[reply.body] if reply.media_type == JSON else {}
        if reply.alternatives:
            schema = {"oneOf": [schema, *(schemas.of[body] for body in reply.alternatives)]}
        answer["content"] = {reply.media_type: {"schema": schema}}
        if reply.or_empty:  # "potential" payloads (OpenAPI): this answer may also carry none
            answer[EMPTY_TOO] = True
    return answer


def _error_response(route: Route, status: int, schemas: _Schemas) -> Schema:
    """An error answer in the route's service's format (an answer to HEAD has no body)."""
    answer: Schema = {
        "description": f"{HTTPStatus(status).phrase}: {ERROR_RESPONSES[error_format(route.service)]}",
        "headers": {"x-openstack-request-id": REQUEST_ID},
    }
    if route.method != "HEAD":
        answer["content"] = {JSON: {"schema": schemas.of[error_type(route.service, status)]}}
    return answer


def _registered_operation(route: Route, schemas: _Schemas) -> Schema:
    microversioned = route.service in RANGES and not is_legacy(route.path)
    parameters: list[Schema] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": msgspec.json.schema(route.path_types[name]),
        }
        for name in route.path_parameters()
    ]
    if route.query is not None:
        parameters += schemas.parameters(route.query, "query")
    if route.headers is not None:
        parameters += schemas.parameters(route.headers, "header")
    version_headers: dict[str, Schema] = {}
    if microversioned:
        version_parameters, version_headers = _microversion_headers(route.service)
        parameters += version_parameters
    responses: dict[str, Schema] = {
        str(reply.status): _response(reply, schemas, version_headers, route.service)
        for reply in route.replies
    }
    for status in route.error_statuses(microversioned):
        responses[str(status)] = _error_response(route, status, schemas)
    operation: Schema = {
        "operationId": _operation_id(route.method, route.path),
        "summary": route.summary,
        "tags": [route.service],
        "parameters": parameters,
        "responses": dict(sorted(responses.items())),
    }
    if route.description:
        operation["description"] = route.description
    if route.body is not None:
        schema = schemas.of[route.body] if json_based(route.body_media_type) else {}
        content = {route.body_media_type: {"schema": schema}}
        content |= {media: {"schema": schemas.of[body]} for media, body in route.other_bodies.items()}
        operation["requestBody"] = {"required": True, "content": content}
    if route.public:
        operation["security"] = []
    elif route.token_in_query:
        operation["security"] = [{"AuthToken": []}, {"AuthTokenQuery": []}]
    return operation


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``app`` serves."""
    registered: list[Route] = app.get(ROUTES, [])
    schemas = _Schemas(registered)
    paths: dict[str, dict[str, Any]] = {}
    for route in registered:
        paths.setdefault(route.path, {})[route.method.lower()] = _registered_operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aiostack gateway",
            "version": version("aiostack"),
            "description": "OpenStack-shaped REST API: Keystone v3, Nova v2.1, Glance v2, Neutron v2.0, "
            "Cinder v3, and an event WebSocket.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.kept(),
            "headers": {"RequestId": _header("The request's id, also in the gateway's and actors' logs.")},
            "securitySchemes": {
                "AuthToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "AuthTokenQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The token in the query: the event socket only (browsers' WebSockets"
                    " set no headers).",
                },
            },
        },
        "security": [{"AuthToken": []}],
    }


routes = Routes()


@routes.get(PATH, "This OpenAPI document", public=True, replies=[Reply(200, dict[str, Any], "The document.")])
async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``: this app's document."""
    return json_response(openapi_document(request.app))


def add_routes(app: web.Application) -> None:
    routes.add_to(app)
