"""Version discovery documents, microversion negotiation and Keystone's /auth/* as keystoneauth reads them."""

from __future__ import annotations

import pytest

from tests.helpers import Api

SERVER_HEADERS = {"OpenStack-API-Version", "X-OpenStack-Nova-API-Version"}


@pytest.mark.parametrize(
    ("path", "status", "key"),
    [
        ("/identity", 300, "versions"),
        ("/identity/v3", 200, "version"),
        ("/compute", 200, "versions"),
        ("/compute/", 200, "versions"),
        ("/compute/v2.1", 200, "version"),
        ("/compute/v2", 200, "version"),
        ("/image", 300, "versions"),
        ("/network", 200, "versions"),
        ("/volume", 300, "versions"),
        ("/volume/v3", 200, "version"),
    ],
)
async def test_every_service_answers_its_version_document_without_a_token(
    api: Api, gateway_url: str, path: str, status: int, key: str
) -> None:
    got, body = await api.get(path)
    assert got == status, body
    documents = body[key]["values"] if path == "/identity" else body[key]
    document = documents[0] if isinstance(documents, list) else documents
    assert document["status"] in ("stable", "CURRENT", "SUPPORTED")
    assert document["links"][0]["href"].startswith(gateway_url)


async def test_compute_is_also_novas_legacy_v2_without_microversions(
    api: Api, cloud, gateway_url: str
) -> None:
    _, listed = await api.get("/compute")
    assert [version["id"] for version in listed["versions"]] == ["v2.0", "v2.1"]  # Nova's order
    legacy = listed["versions"][0]
    assert (legacy["status"], legacy["version"], legacy["min_version"]) == ("SUPPORTED", "", "")
    assert legacy["links"] == [{"rel": "self", "href": f"{gateway_url}/compute/v2/"}]
    _, document = await api.get("/compute/v2/")
    assert document["version"]["links"] == legacy["links"]
    await api.login("admin", "admin-secret", "admin")
    _, image = await api.get("/image/v2/images?name=aiostack-tiny")
    status, created = await api.post(
        "/compute/v2/servers",
        {"server": {"name": "legacy", "imageRef": image["images"][0]["id"], "flavorRef": "1"}},
    )
    assert status == 202, created
    path = f"/compute/v2/servers/{created['server']['id']}"
    async with api.session.get(
        f"{api.base_url}{path}", headers={**api.headers, "OpenStack-API-Version": "compute 2.16"}
    ) as response:
        assert response.status == 200 and not SERVER_HEADERS & set(response.headers)
        shown = (await response.json())["server"]
    assert shown["name"] == "legacy" and "locked" not in shown  # 2.1's fields: the header is ignored
    _, listed_servers = await api.get("/compute/v2.1/servers")
    assert created["server"]["id"] in {server["id"] for server in listed_servers["servers"]}
    assert (await api.get("/compute/v2/nothing-here"))[0] == 404


async def test_compute_microversions_are_negotiated_and_echoed(api: Api, cloud) -> None:
    await api.login("admin", "admin-secret", "admin")
    _, version = await api.get("/compute/v2.1")
    assert (version["version"]["min_version"], version["version"]["version"]) == ("2.1", "2.20")
    async with api.session.get(f"{api.base_url}/compute/v2.1/flavors", headers=api.headers) as response:
        assert response.headers["OpenStack-API-Version"] == "compute 2.1"
        assert response.headers["X-OpenStack-Nova-API-Version"] == "2.1"
        assert set(response.headers["Vary"].replace(" ", "").split(",")) >= SERVER_HEADERS
    for header, value, echoed in (
        ("OpenStack-API-Version", "compute 2.9", "2.9"),
        ("X-OpenStack-Nova-API-Version", "2.16", "2.16"),
        ("OpenStack-API-Version", "compute latest", "2.20"),
    ):
        async with api.session.get(
            f"{api.base_url}/compute/v2.1/servers", headers={**api.headers, header: value}
        ) as response:
            assert response.status == 200 and response.headers["X-OpenStack-Nova-API-Version"] == echoed
    status, body = await api.get("/compute/v2.1/servers", headers={"OpenStack-API-Version": "compute 2.99"})
    assert status == 406 and "maximum is 2.20" in body["notAcceptable"]["message"]
    status, body = await api.get("/compute/v2.1/servers", headers={"OpenStack-API-Version": "compute two"})
    assert status == 400 and "Invalid API version request" in body["badRequest"]["message"]


async def test_server_fields_follow_the_microversion(api: Api, cloud) -> None:
    await api.login("admin", "admin-secret", "admin")
    _, image = await api.get("/image/v2/images?name=aiostack-tiny")
    status, created = await api.post(
        "/compute/v2.1/servers",
        {"server": {"name": "mv", "imageRef": image["images"][0]["id"], "flavorRef": "1"}},
    )
    assert status == 202 and "name" not in created["server"] and created["server"]["adminPass"]
    path = f"/compute/v2.1/servers/{created['server']['id']}"
    _, at_21 = await api.get(path)
    assert not {"locked", "host_status", "OS-EXT-SRV-ATTR:hostname"} & set(at_21["server"])
    _, at_216 = await api.get(path, headers={"OpenStack-API-Version": "compute 2.16"})
    assert at_216["server"]["locked"] is False and at_216["server"]["OS-EXT-SRV-ATTR:hostname"] == "mv"
    assert at_216["server"]["host_status"] in ("UP", "UNKNOWN", "")


async def test_keystone_auth_catalog_projects_and_domains(api: Api, cloud, gateway_url: str) -> None:
    await api.login()
    _, catalog = await api.get("/identity/v3/auth/catalog")
    types = {entry["type"] for entry in catalog["catalog"]}
    assert {"identity", "compute", "image", "network", "block-storage", "volumev3"} <= types
    compute = next(e for e in catalog["catalog"] if e["type"] == "compute")
    assert {e["interface"] for e in compute["endpoints"]} == {"public", "internal", "admin"}
    assert compute["endpoints"][0]["url"] == f"{gateway_url}/compute/v2.1"
    _, projects = await api.get("/identity/v3/auth/projects")
    assert [p["name"] for p in projects["projects"]] == ["demo"]
    _, domains = await api.get("/identity/v3/auth/domains")
    assert [d["id"] for d in domains["domains"]] == ["default"]


async def test_glance_schemas_describe_every_field_an_image_shows(api: Api, cloud) -> None:
    status, schema = await api.get("/image/v2/schemas/image")
    assert status == 200 and schema["name"] == "image"
    await api.login()
    _, listed = await api.get("/image/v2/images?name=aiostack-tiny")
    image = listed["images"][0]
    assert set(image) - set(schema["properties"]) == set()
    assert image["status"] in schema["properties"]["status"]["enum"]
    status, images_schema = await api.get("/image/v2/schemas/images")
    assert status == 200 and images_schema["properties"]["images"]["items"] == schema


async def test_a_token_in_the_query_counts_only_for_the_event_socket(
    api: Api, cloud, gateway_url: str
) -> None:
    token = await api.login()
    api.headers = {}
    status, _ = await api.get(f"/compute/v2.1/flavors?token={token}")
    assert status == 401
    async with api.session.ws_connect(f"{gateway_url}/ws?token={token}") as ws:
        assert not ws.closed
