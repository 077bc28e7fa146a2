"""Network (Neutron v2.0) routes: networks, subnets and ports under ``/network/v2.0``.

Each collection answers GET (list, filtered by any scalar field of its records; ``fields``
picks the fields shown), POST (201), and GET, PUT and DELETE (204) on ``/{id}``, each by
calling the net actor. A body field the resource does not take is a 400 (Neutron's
"Unrecognized attribute(s)"), as is an unknown filter; errors come out as
``{"NeutronError": {type, message, detail}}`` (``gateway.app.error_body``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bus import InvalidRequest
from gateway.http import call, json_body, json_response, public

BASE = "/network/v2.0"


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise InvalidRequest(f"'{text}' cannot be converted to boolean")
    return text.lower() == "true"


@dataclass(frozen=True, slots=True)
class Resource:
    """One Neutron collection and how it maps onto the net actor's handlers.

    ``create`` and ``update`` map body fields to handler arguments (no ``update``: no PUT);
    ``filters`` are the query parameters the actor's list handler filters on, with their
    parsers; filters on other ``scalars`` (fields that are no list) are applied here.
    """

    singular: str
    plural: str
    scalars: frozenset[str]
    create: dict[str, str]
    update: dict[str, str] = field(default_factory=dict)
    filters: dict[str, Callable[[str], Any]] = field(default_factory=dict)


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


_COMMON = (
    "id",
    "name",
    "project_id",
    "tenant_id",
    "created_at",
    "updated_at",
    "description",
    "revision_number",
)
RESOURCES = (
    Resource(
        "network",
        "networks",
        frozenset((*_COMMON, "shared", "status", "admin_state_up", "mtu", "router:external")),
        create=_same("name", "shared", "admin_state_up", "mtu", "description"),
        update=_same("name", "admin_state_up", "description"),
        filters={"name": str, "shared": _boolean, "project_id": str},
    ),
    Resource(
        "subnet",
        "subnets",
        frozenset((*_COMMON, "network_id", "cidr", "ip_version", "gateway_ip", "enable_dhcp")),
        create=_same(
            "network_id",
            "cidr",
            "name",
            "gateway_ip",
            "allocation_pools",
            "ip_version",
            "enable_dhcp",
            "dns_nameservers",
            "description",
        ),
        filters={"network_id": str},
    ),
    Resource(
        "port",
        "ports",
        frozenset(
            (
                *_COMMON,
                "network_id",
                "mac_address",
                "device_id",
                "device_owner",
                "status",
                "admin_state_up",
                "binding:host_id",
                "binding:vif_type",
                "binding:vif_details",
            ),
        ),
        create=_same(
            "network_id",
            "name",
            "mac_address",
            "fixed_ips",
            "device_id",
            "device_owner",
            "admin_state_up",
            "description",
        ),
        update={
            **_same("name", "device_id", "device_owner", "admin_state_up", "description"),
            "binding:host_id": "binding_host",
        },
        filters={"network_id": str, "device_id": str, "device_owner": str},
    ),
)


def _arguments(body: dict[str, Any], allowed: dict[str, str]) -> dict[str, Any]:
    """The handler arguments a request body gives. :raises InvalidRequest: a field not ``allowed``."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    return {allowed[key]: value for key, value in body.items()}


def _matches(record: dict[str, Any], wanted: dict[str, list[str]]) -> bool:
    """Whether the record has one of the wanted values (as query text) of every field."""
    for key, values in wanted.items():
        value = record.get(key)
        if isinstance(value, bool):
            if str(value).lower() not in {text.lower() for text in values}:
                return False
        elif str(value) not in values:
            return False
    return True


class Collection:
    """The five routes of one ``Resource``."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    def _ident(self, request: web.Request) -> dict[str, str]:
        return {f"{self.resource.singular}_id": request.match_info["id"]}

    async def list(self, request: web.Request) -> web.Response:
        resource = self.resource
        arguments: dict[str, Any] = {}
        wanted: dict[str, list[str]] = {}
        for key in set(request.query) - {"fields"}:
            values = request.query.getall(key)
            if key not in resource.scalars:
                raise InvalidRequest(f"[{key}] is invalid attribute for filtering")
            if key in resource.filters and len(values) == 1:
                arguments[key] = resource.filters[key](values[0])
            else:
                wanted[key] = values
        records = [
            record
            for record in await call(request, f"net.list_{resource.plural}", arguments)
            if _matches(record, wanted)
        ]
        shown = request.query.getall("fields", [])
        if shown:
            records = [{key: record[key] for key in shown if key in record} for record in records]
        return json_response({resource.plural: records})

    async def create(self, request: web.Request) -> web.Response:
        singular = self.resource.singular
        arguments = _arguments(await json_body(request, singular), self.resource.create)
        record = await call(request, f"net.create_{singular}", arguments)
        return json_response({singular: record}, status=201)

    async def show(self, request: web.Request) -> web.Response:
        singular = self.resource.singular
        record = await call(request, f"net.get_{singular}", self._ident(request))
        return json_response({singular: record})

    async def update(self, request: web.Request) -> web.Response:
        singular = self.resource.singular
        arguments = _arguments(await json_body(request, singular), self.resource.update)
        record = await call(request, f"net.update_{singular}", {**self._ident(request), **arguments})
        return json_response({singular: record})

    async def delete(self, request: web.Request) -> web.Response:
        await call(request, f"net.delete_{self.resource.singular}", self._ident(request))
        return web.Response(status=204)


@public
async def versions(request: web.Request) -> web.Response:
    """The network API's version document (where clients discover ``/v2.0``)."""
    href = f"{request.scheme}://{request.host}{BASE}/"
    return json_response(
        {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]}
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/network", versions)
    router.add_get("/network/", versions)
    for resource in RESOURCES:
        collection = Collection(resource)
        path = f"{BASE}/{resource.plural}"
        router.add_get(path, collection.list)
        router.add_post(path, collection.create)
        router.add_get(f"{path}/{{id}}", collection.show)
        if resource.update:
            router.add_put(f"{path}/{{id}}", collection.update)
        router.add_delete(f"{path}/{{id}}", collection.delete)
