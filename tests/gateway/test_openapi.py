"""The OpenAPI document: valid OpenAPI 3.1, the router's routes exactly (every one on the route
registry), served without a token, assembled from the registry (every error status a route can
answer documented, in its service's format), and true to what the gateway answers: real
responses are checked against it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from aiostack.client import password_auth
from bus import Bus
from gateway import openapi
from gateway.app import create_app
from gateway.compute.common import BASE
from gateway.compute.project_routes import PROJECT_IN_URL
from gateway.http import ERROR_NAMES, error_body, error_type
from gateway.routing import ROUTES, route_of
from gateway.versions import LEGACY_BASE
from runtime.config import Config
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import DEMO_PASSWORD

SERVERS = "/compute/v2.1/servers"
SERVER = "/compute/v2.1/servers/{server_id}"
NETWORKS = "/network/v2.0/networks"
NETWORK = "/network/v2.0/networks/{network_id}"
SUBNETS = "/network/v2.0/subnets"
SUBNET = "/network/v2.0/subnets/{subnet_id}"
PORTS = "/network/v2.0/ports"
PORT = "/network/v2.0/ports/{port_id}"
IMAGES = "/image/v2/images"
IMAGE = "/image/v2/images/{image_id}"
VOLUMES = "/volume/v3/{project_id}/volumes"
VOLUME = "/volume/v3/{project_id}/volumes/{volume_id}"
TOKENS = "/identity/v3/auth/tokens"
OCTETS = {"Content-Type": "application/octet-stream"}


class Gateway:
    """The gateway on a loopback server, and requests whose answers must match its document."""

    def __init__(self, app: web.Application, session: aiohttp.ClientSession, base_url: str) -> None:
        self.app = app
        self.session = session
        self.base_url = base_url
        self.document = openapi.openapi_document(app)
        self.headers: dict[str, str] = {}
        self.project_id = ""

    def resolve(self, item: dict[str, Any]) -> dict[str, Any]:
        """``item``, or what its ``$ref`` points to in the document."""
        if "$ref" not in item:
            return item
        target: Any = self.document
        for part in item["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target

    async def request(
        self, method: str, template: str, status: int, ids: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[Any, Any]:
        """``method`` on ``template`` filled with ``ids``: it must answer ``status`` as documented.

        :returns: the body (JSON, else bytes) and the headers.
        """
        responses = self.document["paths"][template][method.lower()]["responses"]
        documented = responses.get(str(status)) or (status >= 400 and responses["default"])
        assert documented, f"{method} {template}: {status} is not documented"
        documented = self.resolve(documented)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        url = self.base_url + template.format(**(ids or {}))
        async with self.session.request(method, url, headers=headers, **kwargs) as response:
            assert response.status == status, (method, url, response.status, await response.text())
            for name, described in documented.get("headers", {}).items():
                assert not self.resolve(described)["required"] or name in response.headers, (url, name)
            raw = await response.read()
            content = documented.get("content")
            if content is None or (raw == b"" and documented.get(openapi.EMPTY_TOO)):
                assert raw == b"", (method, url, raw[:200])
                return raw, response.headers
            assert response.content_type in content, (method, url, response.content_type)
            if response.content_type != "application/json":
                return raw, response.headers
            body = json.loads(raw)
            schema = {"components": self.document["components"], **content["application/json"]["schema"]}
            Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(body)
            return body, response.headers

    async def call(
        self, method: str, template: str, status: int, ids: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """``request``'s body."""
        return (await self.request(method, template, status, ids, **kwargs))[0]

    async def login(
        self, user: str = "demo", password: str = DEMO_PASSWORD, project: str | None = None
    ) -> Any:
        """Issue a token (checked) and send it from now on; the token document."""
        body, headers = await self.request(
            "POST", TOKENS, 201, json=password_auth(user, password, project or user)
        )
        self.headers = {"X-Auth-Token": headers["X-Subject-Token"]}
        self.project_id = body["token"]["project"]["id"]
        return body


@pytest.fixture
async def gateway(config: Config) -> AsyncIterator[Gateway]:
    """The gateway with ``GET /openapi.json`` (added here while ``create_app`` does not add it)."""
    gateway_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name="gateway")
    app = create_app(gateway_bus)
    if not any(route.resource and route.resource.canonical == openapi.PATH for route in app.router.routes()):
        openapi.add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Gateway(app, session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
        await gateway_bus.close()


async def until(gateway: Gateway, template: str, ids: dict[str, str], key: str, status: str) -> Any:
    """Show the resource (each answer checked) until its ``status`` is the one wanted."""
    for _ in range(400):
        body = await gateway.call("GET", template, 200, ids)
        if body[key]["status"] == status:
            return body[key]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{template.format(**ids)} never became {status}: {body}")


def test_the_document_is_valid_openapi_3_1(gateway: Gateway) -> None:
    assert gateway.document["openapi"] == "3.1.0"
    validate(gateway.document, cls=OpenAPIV31SpecValidator)


def test_the_document_has_every_route_served_and_no_other(gateway: Gateway) -> None:
    served = {
        (route.method, route.resource.canonical): route.handler
        for route in gateway.app.router.routes()
        if route.resource is not None and route.method != "*"
    }
    legacy = f"{LEGACY_BASE}/"  # Nova's v2.0: each route there is a documented v2.1 route's twin
    with_project = [f"{base}/{{{PROJECT_IN_URL}}}/" for base in (BASE, LEGACY_BASE)]  # Nova's, 2.18
    projects = {
        key: handler for key, handler in served.items() if any(key[1].startswith(p) for p in with_project)
    }
    twins = {
        key: handler
        for key, handler in served.items()
        if key[1].startswith(legacy) and key[1] != legacy and key not in projects
    }
    handlers = {key: handler for key, handler in served.items() if key not in twins and key not in projects}
    assert len(twins) > 50 and len(projects) == 2 * len(twins)
    for (method, path), handler in twins.items():
        assert handlers[(method, f"{BASE}/{path.removeprefix(legacy)}")] is handler
    for (method, path), handler in projects.items():
        documented = f"{BASE}/{path.split('/', 4)[-1]}"
        assert route_of(handlers[(method, documented)]) is route_of(handler)
    operations = {
        (method.upper(), path): operation
        for path, item in gateway.document["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == set(handlers)
    assert {
        ("POST", SERVERS),
        ("HEAD", TOKENS),
        ("GET", NETWORK),
        ("GET", "/ws"),
        ("GET", openapi.PATH),
    } <= set(handlers)
    for key, operation in operations.items():
        route = route_of(handlers[key])
        assert route is not None, f"{key} is not on the route registry"
        assert (operation.get("security") == []) == route.public, key
    assert operations[("POST", TOKENS)]["security"] == [] and "security" not in operations[("GET", SERVERS)]
    assert {"AuthTokenQuery": []} in operations[("GET", "/ws")]["security"]


def test_the_registry_documents_every_status_in_the_services_error_format(gateway: Gateway) -> None:
    routes = gateway.app[ROUTES]
    assert {route.service for route in routes} == {
        "compute",
        "image",
        "volume",
        "identity",
        "network",
        "ws",
        "metrics",
        "dashboard",
        "openapi.json",
    }
    for route in routes:
        responses = gateway.document["paths"][route.path][route.method.lower()]["responses"]
        assert "default" not in responses, route.path
        for reply in route.replies:
            assert str(reply.status) in responses
        for status in (401, 403) if not route.public else ():
            assert str(status) in responses, (route.method, route.path, status)
        if route.body is not None:
            assert {"400", "415"} <= set(responses), (route.method, route.path)
        for status, response in responses.items():
            if int(status) >= 400 and route.method != "HEAD":  # an answer to HEAD has no body
                name = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert name == error_type(route.service, int(status)).__name__
    for name in gateway.document["components"]["schemas"]:
        assert "." not in name, f"two types are named {name.rsplit('.', 1)[-1]}: name them apart"


def test_error_bodies_are_of_their_documented_types() -> None:
    for service in ("compute", "volume", "image", "identity", "network", "ws"):
        for status in (*ERROR_NAMES, 418):
            body = error_body(service, status, "what went wrong")
            msgspec.convert(body, error_type(service, status))


async def test_the_document_is_served_without_a_token(gateway: Gateway) -> None:
    async with gateway.session.get(gateway.base_url + openapi.PATH) as response:
        assert response.status == 200 and response.content_type == "application/json"
        assert "x-openstack-request-id" in response.headers
        assert await response.json() == json.loads(json.dumps(gateway.document))


async def test_compute_answers_name_the_request_under_novas_header_too(gateway: Gateway) -> None:
    async with gateway.session.get(gateway.base_url + "/compute/v2.1/flavors") as response:
        assert response.headers["x-compute-request-id"] == response.headers["x-openstack-request-id"]
    async with gateway.session.get(gateway.base_url + "/image/v2/images") as response:
        assert "x-compute-request-id" not in response.headers


async def test_version_documents_and_auth_errors_match(gateway: Gateway) -> None:
    for template, status in (
        ("/identity", 300),
        ("/identity/v3/", 200),
        ("/compute/", 200),
        ("/compute/v2.1", 200),
        ("/volume", 300),
        ("/volume/v3/", 200),
        ("/image/", 300),
        ("/network", 200),
        (openapi.PATH, 200),
    ):
        await gateway.call("GET", template, status)
    await gateway.call("GET", SERVERS, 401)
    await gateway.call("GET", NETWORKS, 401)
    await gateway.call("GET", IMAGES, 401)
    await gateway.call("GET", "/compute/v2.1", 406, headers={"OpenStack-API-Version": "compute 9.9"})


async def test_identity_answers_match(gateway: Gateway, cloud: list[Any]) -> None:
    bad = password_auth("demo", "wrong", "demo")
    await gateway.call("POST", TOKENS, 401, json=bad)
    token = await gateway.login()
    assert token["token"]["catalog"] and token["token"]["roles"]
    subject = {"X-Subject-Token": gateway.headers["X-Auth-Token"]}
    await gateway.call("GET", TOKENS, 200, headers=subject)
    await gateway.call("HEAD", TOKENS, 200, headers=subject)
    await gateway.call("GET", "/identity/v3/projects", 403)

    await gateway.login("admin", ADMIN_PASSWORD)
    await gateway.call("GET", TOKENS, 200, headers=subject)
    await gateway.call("GET", "/identity/v3/projects", 200)
    await gateway.call("GET", "/identity/v3/users", 200)
    await gateway.call("GET", "/identity/v3/roles", 200)
    project = await gateway.call("POST", "/identity/v3/projects", 201, json={"project": {"name": "p2"}})
    ident = {"project_id": project["project"]["id"]}
    await gateway.call(
        "PATCH", "/identity/v3/projects/{project_id}", 200, ident, json={"project": {"description": "d"}}
    )
    await gateway.call("DELETE", "/identity/v3/projects/{project_id}", 204, ident)
    await gateway.call("GET", "/identity/v3/projects/{project_id}", 404, ident)
    await gateway.call("DELETE", TOKENS, 204, headers=subject)


async def test_compute_answers_match(gateway: Gateway, cloud: list[Any]) -> None:
    await gateway.login()
    await gateway.call("GET", "/compute/v2.1/flavors", 200)
    await gateway.call("GET", "/compute/v2.1/flavors/detail", 200)
    await gateway.call("GET", "/compute/v2.1/flavors/{flavor_id}", 200, {"flavor_id": "1"})
    images = await gateway.call("GET", IMAGES, 200, params={"name": "aiostack-tiny"})
    server = {"name": "vm", "imageRef": images["images"][0]["id"], "flavorRef": "1", "networks": "auto"}
    created = await gateway.call("POST", SERVERS, 202, json={"server": server})
    ident = {"server_id": created["server"]["id"]}
    await until(gateway, SERVER, ident, "server", "ACTIVE")
    await gateway.call("GET", SERVERS, 200)
    page = await gateway.call("GET", SERVERS, 200, params={"limit": "1"})
    assert page["servers_links"]
    await gateway.call("GET", f"{SERVERS}/detail", 200)
    await gateway.call("POST", f"{SERVER}/action", 202, ident, json={"os-stop": None})
    await gateway.call("POST", f"{SERVER}/action", 400, ident, json={"os-fly": None})
    refused = await gateway.call("POST", SERVERS, 400, json={"server": {**server, "name": 12}})
    assert "`$.server.name`" in refused["badRequest"]["message"]
    await gateway.call("POST", SERVERS, 415, data="x", headers={"Content-Type": "text/plain"})
    async with gateway.session.patch(gateway.base_url + SERVERS, headers=gateway.headers) as response:
        assert response.status == 405 and set(response.headers["Allow"].split(",")) == {"GET", "POST"}
        assert "badMethod" in await response.json()
    await gateway.call("GET", SERVER, 404, {"server_id": "missing"})

    await gateway.login("admin", ADMIN_PASSWORD)
    latest = {"OpenStack-API-Version": "compute latest"}
    shown = await gateway.call("GET", SERVER, 200, ident, headers=latest)
    assert "OS-EXT-SRV-ATTR:root_device_name" in shown["server"] and "host_status" in shown["server"]
    await gateway.call("GET", f"{SERVERS}/detail", 200, headers=latest, params={"all_tenants": "1"})
    await gateway.call("DELETE", SERVER, 204, ident)


async def test_network_answers_match(gateway: Gateway, cloud: list[Any]) -> None:
    await gateway.login()
    [default] = (await gateway.call("GET", NETWORKS, 200))["networks"]
    await gateway.call("GET", NETWORK, 200, {"network_id": default["id"]})
    await gateway.call("GET", SUBNETS, 200, params={"fields": "cidr"})
    network = await gateway.call("POST", NETWORKS, 201, json={"network": {"name": "web"}})
    ident = {"network_id": network["network"]["id"]}
    await gateway.call("PUT", NETWORK, 200, ident, json={"network": {"name": "web-2"}})
    await gateway.call("POST", NETWORKS, 400, json={"network": {"color": "blue"}})
    subnet = {"network_id": ident["network_id"], "cidr": "192.168.7.0/24", "dns_nameservers": ["192.168.7.9"]}
    subnet_id = (await gateway.call("POST", SUBNETS, 201, json={"subnet": subnet}))["subnet"]["id"]
    port = await gateway.call("POST", PORTS, 201, json={"port": {"network_id": ident["network_id"]}})
    port_id = {"port_id": port["port"]["id"]}
    await gateway.call("PUT", PORT, 200, port_id, json={"port": {"device_id": "d", "binding:host_id": "h"}})
    await gateway.call("GET", PORTS, 200)
    await gateway.call("GET", SUBNET, 200, {"subnet_id": subnet_id})
    await gateway.call("DELETE", NETWORK, 409, ident)
    await gateway.call("DELETE", PORT, 204, port_id)
    await gateway.call("DELETE", SUBNET, 204, {"subnet_id": subnet_id})
    await gateway.call("DELETE", NETWORK, 204, ident)
    await gateway.call("GET", NETWORK, 404, ident)


async def test_image_answers_match(gateway: Gateway, cloud: list[Any]) -> None:
    await gateway.login()
    created = await gateway.call(
        "POST", IMAGES, 201, json={"name": "disk", "os_distro": "cirros", "tags": ["a"]}
    )
    ident = {"image_id": created["id"]}
    await gateway.call("GET", f"{IMAGE}/file", 204, ident)
    await gateway.call("PUT", f"{IMAGE}/file", 204, ident, data=b"\0" * 4096, headers=OCTETS)
    image = await gateway.call("GET", IMAGE, 200, ident)
    assert image["status"] == "active" and image["os_distro"] == "cirros"
    data = await gateway.call("GET", f"{IMAGE}/file", 200, ident)
    assert data == b"\0" * 4096
    page = await gateway.call("GET", IMAGES, 200, params={"limit": "1"})
    assert page["next"]
    await gateway.call("POST", IMAGES, 403, json={"name": "x", "status": "active"})
    await gateway.call("DELETE", IMAGE, 204, ident)
    await gateway.call("GET", IMAGE, 404, ident)


async def test_volume_answers_match(gateway: Gateway, cloud: list[Any]) -> None:
    await gateway.login()
    project = {"project_id": gateway.project_id}
    created = await gateway.call("POST", VOLUMES, 202, project, json={"volume": {"size": 1, "name": "data"}})
    ident = {**project, "volume_id": created["volume"]["id"]}
    await until(gateway, VOLUME, ident, "volume", "available")
    await gateway.call("PUT", VOLUME, 200, ident, json={"volume": {"description": "scratch"}})
    await gateway.call("GET", VOLUMES, 200, project)
    await gateway.call("GET", f"{VOLUMES}/detail", 200, project)
    await gateway.call("GET", VOLUMES, 403, {"project_id": "another"})
    await gateway.call("DELETE", VOLUME, 202, ident)
    await gateway.call("GET", VOLUME, 404, {**project, "volume_id": "missing"})


async def test_requests_are_checked_against_their_declared_types(gateway: Gateway, cloud: list[Any]) -> None:
    """The registry checks path, query and body before a handler runs: 400 naming the member."""
    await gateway.login()
    project = {"project_id": gateway.project_id}
    body = await gateway.call("GET", SERVERS, 400, params={"limit": "many"})
    assert "`$.limit`" in body["badRequest"]["message"]
    await gateway.call("GET", SERVER, 400, {"server_id": "x" * 256})
    body = await gateway.call("POST", VOLUMES, 400, project, json={"volume": {"size": 0}})
    assert "`$.volume.size`" in body["badRequest"]["message"]
    body = await gateway.call(
        "PUT", VOLUME, 400, {**project, "volume_id": "v"}, json={"volume": {"color": "b"}}
    )
    assert "unknown field `color`" in body["badRequest"]["message"]
    created = await gateway.call("POST", VOLUMES, 202, project, json={"volume": {"size": 1.0}})
    assert created["volume"]["size"] == 1  # 1.0 is an integer to JSON Schema, and so here
    body = await gateway.call("POST", IMAGES, 400, data=b"{", headers={"Content-Type": "application/json"})
    assert "not valid JSON" in body["error"]["message"]
    await gateway.call("POST", IMAGES, 415, json=None, data=b"{}", headers={"Content-Type": "text/plain"})
    too_big = {"name": "big", "description": "x" * (1 << 20)}
    await gateway.call("POST", IMAGES, 413, json=too_big)
    for header, value, status in (
        ("OpenStack-API-Version", "volume 3.0", 400),
        ("OpenStack-API-Version", "compute 2.99", 406),
        ("X-OpenStack-Nova-API-Version", "2.0", 406),
        ("X-OpenStack-Nova-API-Version", "two", 400),
    ):
        await gateway.call("GET", SERVERS, status, headers={header: value})
    async with gateway.session.request("TRACE", gateway.base_url + SERVERS, headers=gateway.headers) as got:
        assert got.status == 405 and set(got.headers["Allow"].split(",")) == {"GET", "POST"}
    async with gateway.session.options(
        gateway.base_url + f"{SERVERS}/detail", headers=gateway.headers
    ) as got:  # /servers/{server_id}'s methods are not /servers/detail's
        assert got.headers["Allow"] == "GET"


async def test_headers_are_checked_and_a_socket_request_that_does_not_upgrade_is_a_documented_400(
    gateway: Gateway, cloud: list[Any]
) -> None:
    """Header parameters are checked like the rest (400 naming the header); the event socket's GET
    without a WebSocket handshake is answered as its document says, and a refused value is named."""
    await gateway.login()
    body = await gateway.call("GET", TOKENS, 400)
    assert "`X-Subject-Token`" in body["error"]["message"]
    body = await gateway.call("GET", "/ws", 400)
    assert "`Upgrade`" in body["badRequest"]["message"]
    handshake = {
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    body = await gateway.call("GET", "/ws", 400, headers=handshake, params={"since": "yesterday"})
    assert body["badRequest"]["message"].endswith("`$.since`: 'yesterday'")
    async with gateway.session.ws_connect(f"{gateway.base_url}/ws", headers=gateway.headers) as ws:
        assert (await ws.receive_json())["type"] == "subscribed"
    body = await gateway.call(
        "POST", SUBNETS, 400, json={"subnet": {"network_id": "n", "cidr": "10.0.0.0/33"}}
    )
    assert body["NeutronError"]["message"].endswith("`$.subnet.cidr`: '10.0.0.0/33'")
