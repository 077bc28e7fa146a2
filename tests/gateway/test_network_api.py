"""Neutron v2.0 routes over real HTTP: shapes, status codes, filters, bad input and project isolation."""

from __future__ import annotations

from typing import Any

import pytest
from yarl import URL

from actors.identity.actor import IdentityActor
from actors.net.actor import NetActor
from api.identity import IdentityAdmin, Tokens
from bus import Bus, Context, NotFound, request_scope

NETWORKS = "/network/v2.0/networks"
SUBNETS = "/network/v2.0/subnets"
PORTS = "/network/v2.0/ports"
ADMIN_PASSWORD, DEMO_PASSWORD = "admin-secret", "demo-secret"  # as tests/conftest.py bootstraps them
PORT_KEYS = {
    "id", "name", "network_id", "project_id", "tenant_id", "mac_address", "fixed_ips", "device_id",
    "device_owner", "status", "admin_state_up", "binding:host_id", "binding:vif_type", "binding:vif_details",
    "binding:vnic_type", "binding:profile", "security_groups", "port_security_enabled", "description",
    "revision_number", "tags", "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture
async def demo(start_actor, config, api: Any) -> Any:
    """The identity and net actors behind the gateway, and ``api`` logged in as demo (a member)."""
    await start_actor(IdentityActor, config)
    await start_actor(NetActor, config)
    await api.login()
    return api


@pytest.fixture
async def bob(bus: Bus, demo: Any) -> Any:
    """A member of a second project, made by the admin through the identity actor, logged in."""
    issued = await Tokens.client(bus).issue(username="admin", password=ADMIN_PASSWORD)
    admin = Context(issued["user"]["id"], issued["project"]["id"], ("admin",), issued["token"])
    with request_scope(context=admin):
        directory = IdentityAdmin.client(bus)
        await directory.create_project(name="other")
        await directory.create_user(name="bob", password="bob-pw", default_project="other")
        await directory.grant_role(user="bob", project="other", role="member")
    client = type(demo)(demo.session, demo.base_url)
    await client.login("bob", "bob-pw", project="other")
    return client


def neutron_error(body: Any) -> dict[str, str]:
    """The NeutronError of an error body, checked for Neutron's shape."""
    assert set(body) == {"NeutronError"}, body
    error = body["NeutronError"]
    assert set(error) == {"type", "message", "detail"} and error["message"], error
    return error


async def create(api: Any, path: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.post(path, {key: fields})
    assert status == 201, body
    return body[key]


async def snapshot(api: Any) -> dict[str, Any]:
    """Everything the client sees, to show a refused request changed nothing."""
    return {path: (await api.get(path))[1] for path in (NETWORKS, SUBNETS, PORTS)}


async def test_version_document_needs_no_token(api: Any) -> None:
    status, body = await api.get("/network/")
    assert status == 200
    [version] = body["versions"]
    assert version["id"] == "v2.0" and version["links"][0]["href"].endswith("/network/v2.0/")


async def test_demo_sees_the_default_network(demo: Any) -> None:
    status, body = await demo.get(NETWORKS)
    assert status == 200
    [default] = body["networks"]
    assert default["name"] == "default" and default["shared"] is True and default["router:external"] is False
    status, body = await demo.get(NETWORKS, params={"shared": "true", "name": "default"})
    assert status == 200 and [n["id"] for n in body["networks"]] == [default["id"]]
    status, body = await demo.get(NETWORKS, params={"shared": "false"})
    assert status == 200 and body["networks"] == []
    status, body = await demo.get(
        SUBNETS, params={"network_id": default["id"], "fields": ["cidr", "gateway_ip"]}
    )
    assert status == 200 and body["subnets"] == [{"cidr": "10.20.0.0/16", "gateway_ip": "10.20.0.1"}]


async def test_showing_one_resource_with_fields_shows_only_those(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "trimmed"})
    subnet = await create(
        demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.9.8.0/24", "ip_version": 4}
    )
    port = await create(demo, PORTS, "port", {"network_id": network["id"]})
    for path, key, fields in (
        (f"{NETWORKS}/{network['id']}", "network", ["id", "name"]),
        (f"{SUBNETS}/{subnet['id']}", "subnet", ["cidr"]),
        (f"{PORTS}/{port['id']}", "port", ["mac_address", "fixed_ips"]),
    ):
        status, body = await demo.get(path, params={"fields": fields})
        assert status == 200, body
        assert set(body[key]) == set(fields), body
        status, body = await demo.get(path)
        assert status == 200 and len(body[key]) > len(fields)
    status, body = await demo.get(f"{NETWORKS}/{network['id']}", params={"fields": ["name", "no-such"]})
    assert body == {"network": {"name": "trimmed"}}


async def test_admins_see_each_networks_vxlan_segment_members_do_not(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "segmented"})
    assert not any(key.startswith("provider:") for key in network), network
    admin = type(demo)(demo.session, demo.base_url)
    await admin.login("admin", ADMIN_PASSWORD, project="admin")
    status, body = await admin.get(f"{NETWORKS}/{network['id']}")
    assert status == 200, body
    shown = body["network"]
    assert (shown["provider:network_type"], shown["provider:physical_network"]) == ("vxlan", None)
    status, body = await admin.get(NETWORKS)
    segments = [n["provider:segmentation_id"] for n in body["networks"]]
    assert shown["provider:segmentation_id"] in segments and len(set(segments)) == len(segments) >= 2


async def test_network_subnet_and_port_lifecycle(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "web", "admin_state_up": True})
    assert (
        network["project_id"] == demo.project_id and network["status"] == "ACTIVE" and network["mtu"] == 1500
    )
    subnet = await create(
        demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "192.168.50.0/24", "name": "web-v4"}
    )
    assert subnet["gateway_ip"] == "192.168.50.1" and subnet["ip_version"] == 4
    port = await create(demo, PORTS, "port", {"network_id": network["id"], "name": "web-1"})
    assert set(port) == PORT_KEYS
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "192.168.50.2"}]
    assert port["status"] == "DOWN" and port["mac_address"].startswith("fa:16:3e:")

    status, body = await demo.get(f"{NETWORKS}/{network['id']}")
    assert status == 200 and body["network"]["subnets"] == [subnet["id"]]
    status, body = await demo.put(f"{NETWORKS}/{network['id']}", {"network": {"name": "web-renamed"}})
    assert status == 200 and body["network"]["name"] == "web-renamed"
    status, body = await demo.put(
        f"{PORTS}/{port['id']}", {"port": {"device_id": "vm-1", "binding:host_id": "node-1"}}
    )
    assert (
        status == 200 and body["port"]["status"] == "ACTIVE" and body["port"]["binding:host_id"] == "node-1"
    )
    status, body = await demo.get(PORTS, params={"device_id": "vm-1"})
    assert status == 200 and [p["id"] for p in body["ports"]] == [port["id"]]
    status, body = await demo.get(PORTS, params={"status": "ACTIVE", "network_id": network["id"]})
    assert status == 200 and [p["id"] for p in body["ports"]] == [port["id"]]
    status, body = await demo.get(PORTS, params={"device_id": "vm-2"})
    assert status == 200 and body["ports"] == []

    status, body = await demo.delete(f"{NETWORKS}/{network['id']}")
    assert status == 409 and "still in use" in neutron_error(body)["message"]
    status, body = await demo.delete(f"{SUBNETS}/{subnet['id']}")
    assert status == 409 and "IP allocation" in neutron_error(body)["message"]
    status, _ = await demo.delete(f"{PORTS}/{port['id']}")
    assert status == 204
    status, _ = await demo.delete(f"{NETWORKS}/{network['id']}")
    assert status == 204
    status, body = await demo.get(f"{NETWORKS}/{network['id']}")
    assert status == 404 and network["id"] in neutron_error(body)["message"]
    status, body = await demo.get(f"{SUBNETS}/{subnet['id']}")
    assert status == 404


async def test_projects_get_404_for_each_others_resources(demo: Any, bob: Any, bus: Bus) -> None:
    network = await create(bob, NETWORKS, "network", {"name": "bobs"})
    await create(bob, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.1.0.0/24"})
    port = await create(bob, PORTS, "port", {"network_id": network["id"]})
    assert port["project_id"] == bob.project_id != demo.project_id
    before = await snapshot(demo)
    for method, path, body in (
        ("GET", f"{NETWORKS}/{network['id']}", None),
        ("PUT", f"{NETWORKS}/{network['id']}", {"network": {"name": "mine"}}),
        ("DELETE", f"{NETWORKS}/{network['id']}", None),
        ("GET", f"{PORTS}/{port['id']}", None),
        ("PUT", f"{PORTS}/{port['id']}", {"port": {"name": "mine"}}),
        ("DELETE", f"{PORTS}/{port['id']}", None),
        ("POST", PORTS, {"port": {"network_id": network["id"]}}),
    ):
        status, answer = await demo.request(method, path, json=body)
        assert status == 404, (method, path, answer)
        assert "could not be found" in neutron_error(answer)["message"]
    assert network["id"] not in {n["id"] for n in before[NETWORKS]["networks"]}
    assert before[PORTS]["ports"] == []
    assert await snapshot(demo) == before
    status, body = await bob.get(f"{PORTS}/{port['id']}")
    assert status == 200 and body["port"]["id"] == port["id"]
    issued = await Tokens.client(bus).issue(username="demo", password=DEMO_PASSWORD)
    member = Context(issued["user"]["id"], issued["project"]["id"], ("member",), issued["token"])
    with request_scope(context=member):
        for method, argument in (
            ("get_network", {"network_id": network["id"]}),
            ("get_port", {"port_id": port["id"]}),
        ):
            with pytest.raises(NotFound):
                await bus.call(f"net.{method}", argument)
        assert await bus.call("net.list_ports", {"network_id": network["id"]}) == []


async def test_a_member_cannot_create_a_shared_network(demo: Any) -> None:
    before = await snapshot(demo)
    status, body = await demo.post(NETWORKS, {"network": {"name": "everyone", "shared": True}})
    assert status == 403 and "admin" in neutron_error(body)["message"]
    assert await snapshot(demo) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", SUBNETS, {"subnet": {"cidr": "10.0.0.0/33"}}, 400, "`$.subnet.cidr`"),
        ("POST", SUBNETS, {"subnet": {"cidr": "10.0.0.0/24", "gateway_ip": "10.9.9.1"}}, 400, "gateway_ip"),
        ("POST", SUBNETS, {"subnet": {"cidr": "10.0.0.0/24", "network_id": "nope"}}, 404, "Network nope"),
        ("POST", PORTS, {"port": {"network_id": "nope"}}, 404, "Network nope could not be found"),
        ("POST", PORTS, {"port": {"admin_state_up": "yes"}}, 400, "got `str` - at `$.port.admin_state_up`"),
        ("POST", NETWORKS, {"network": {"name": 5}}, 400, "Expected `str`, got `int` - at `$.network.name`"),
        (
            "POST",
            NETWORKS,
            {"network": {"mtu": "big"}},
            400,
            "Expected `int`, got `str` - at `$.network.mtu`",
        ),
        (
            "POST",
            NETWORKS,
            {"network": {"name": "x", "colour": "blue"}},
            400,
            "unknown field `colour` - at `$.network`",
        ),
        ("POST", NETWORKS, {"name": "x"}, 400, "either `network` (one) or `networks` (several)"),
        ("POST", NETWORKS, {"network": {}, "networks": [{}]}, 400, "either `network`"),
        ("POST", NETWORKS, {"networks": []}, 400, "length >= 1 - at `$.networks`"),
        ("POST", NETWORKS, {"networks": [{"name": 5}]}, 400, "got `int` - at `$.networks[0].name`"),
        ("POST", NETWORKS, b"{not json", 400, "not valid JSON"),
        (
            "PUT",
            f"{PORTS}/nope",
            {"port": {"binding_host": "h"}},
            400,
            "unknown field `binding_host` - at `$.port`",
        ),
        ("PUT", f"{SUBNETS}/nope", {"subnet": {"name": "x"}}, 404, "Subnet nope could not be found"),
        ("PUT", f"{SUBNETS}/nope", {"subnet": {"cidr": "10.0.0.0/24"}}, 400, "unknown field `cidr`"),
        ("GET", f"{NETWORKS}?sort_key=subnets", None, 400, "$.sort_key[0]"),
        ("GET", f"{NETWORKS}?sort_dir=up", None, 400, "$.sort_dir[0]"),
        ("GET", f"{NETWORKS}?limit=0", None, 400, "$.limit"),
        ("GET", f"{NETWORKS}?marker=nope", None, 404, "Marker nope could not be found"),
        ("GET", f"{PORTS}?fixed_ips=mac=x", None, 400, "$.fixed_ips[0]"),
        ("GET", f"{NETWORKS}?colour=blue", None, 400, "unknown field `colour`"),
        ("GET", f"{NETWORKS}?shared=perhaps", None, 400, "Expected `bool`, got `str` - at `$.shared[0]`"),
        ("GET", f"{PORTS}/nope", None, 404, "Port nope could not be found"),
    ],
)
async def test_bad_requests_answer_in_neutron_format_and_change_nothing(
    demo: Any, method: str, path: str, body: Any, status: int, message: str
) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "mine"})
    await create(demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "192.168.60.0/24"})
    if path in (SUBNETS, PORTS) and isinstance(body, dict):
        ((key, fields),) = body.items()
        body = {key: {"network_id": network["id"], **fields}}
    before = await snapshot(demo)
    sent = (
        {"data": body, "headers": {"Content-Type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    got, answer = await demo.request(method, path, **sent)
    assert got == status, answer
    assert message in neutron_error(answer)["message"]
    assert await snapshot(demo) == before


async def test_requests_without_a_token_are_refused(api: Any, demo: Any) -> None:
    status, body = await api.get(NETWORKS, headers={"X-Auth-Token": ""})
    assert status == 401 and neutron_error(body)


async def test_standard_attributes_description_and_revision_number_follow_updates(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "rev", "description": "first"})
    assert (network["description"], network["revision_number"], network["tags"]) == ("first", 1, [])
    status, body = await demo.put(f"{NETWORKS}/{network['id']}", {"network": {"description": "second"}})
    assert status == 200 and body["network"]["description"] == "second"
    assert body["network"]["revision_number"] == 2
    subnet = await create(
        demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.91.0.0/24", "description": "v4"}
    )
    assert (subnet["description"], subnet["revision_number"]) == ("v4", 1)
    port = await create(demo, PORTS, "port", {"network_id": network["id"], "description": "p"})
    assert len(port["security_groups"]) == 1 and port["binding:vnic_type"] == "normal"
    _, renamed = await demo.put(f"{PORTS}/{port['id']}", {"port": {"name": "p2"}})
    assert renamed["port"]["revision_number"] == port["revision_number"] + 1
    status, body = await demo.put(f"{NETWORKS}/{network['id']}", {"network": {"description": 7}})
    assert status == 400 and "description" in body["NeutronError"]["message"]


async def test_the_extensions_list_names_what_is_built(demo: Any) -> None:
    """Neutron's ``/extensions`` (clients ask it before using one: ``openstack port create``)."""
    status, body = await demo.get("/network/v2.0/extensions")
    assert status == 200
    aliases = {extension["alias"] for extension in body["extensions"]}
    assert {"standard-attr-description", "standard-attr-revisions", "net-mtu", "project-id"} <= aliases
    assert {"pagination", "sorting", "ip-substring-filtering", "security-group", "port-security"} <= aliases
    assert not aliases & {"standard-attr-tag", "tag", "binding"}
    for extension in body["extensions"]:
        assert set(extension) == {"name", "alias", "description", "updated", "links"}
    status, body = await demo.get("/network/v2.0/extensions/standard-attr-revisions")
    assert status == 200 and body["extension"]["name"] == "Resource revision numbers"
    status, body = await demo.get("/network/v2.0/extensions/tag-ports-during-bulk-creation")
    assert status == 404 and "tag-ports-during-bulk-creation" in neutron_error(body)["message"]
    status, body = await demo.get("/network/v2.0/extensions", headers={"X-Auth-Token": ""})
    assert status == 401
    # what the listed ones promise: descriptions set and changed, revisions bumped, the MTU shown
    network = await create(demo, NETWORKS, "network", {"name": "ext", "description": "first"})
    assert network["description"] == "first" and network["mtu"] == 1500 and network["project_id"]
    status, body = await demo.put(f"{NETWORKS}/{network['id']}", {"network": {"description": "second"}})
    assert body["network"]["description"] == "second"
    assert body["network"]["revision_number"] > network["revision_number"]


async def test_subnet_update_and_host_routes(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "routed"})
    routes = [{"destination": "10.20.0.0/32", "nexthop": "10.100.1.1"}]
    subnet = await create(
        demo,
        SUBNETS,
        "subnet",
        {
            "network_id": network["id"],
            "cidr": "10.100.0.0/28",
            "gateway_ip": "10.100.0.1",
            "allocation_pools": [{"start": "10.100.0.3", "end": "10.100.0.7"}],
            "dns_nameservers": ["8.8.4.4", "8.8.8.8"],
            "host_routes": routes,
        },
    )
    assert subnet["host_routes"] == routes and subnet["dns_nameservers"] == ["8.8.4.4", "8.8.8.8"]
    port = await create(demo, PORTS, "port", {"network_id": network["id"]})
    assert port["fixed_ips"][0]["ip_address"] == "10.100.0.3"
    change = {
        "name": "renamed",
        "gateway_ip": "10.100.0.2",
        "enable_dhcp": False,
        "dns_nameservers": ["7.8.8.8", "7.8.4.4"],
        "host_routes": [{"destination": "10.20.0.0/32", "nexthop": "10.100.1.2"}],
        "allocation_pools": [{"start": "10.100.0.3", "end": "10.100.0.9"}],
    }
    status, body = await demo.put(f"{SUBNETS}/{subnet['id']}", {"subnet": change})
    assert status == 200, body
    assert {key: body["subnet"][key] for key in change} == change
    status, shown = await demo.get(f"{SUBNETS}/{subnet['id']}")
    assert shown["subnet"] == body["subnet"]
    await create(
        demo, PORTS, "port", {"network_id": network["id"], "fixed_ips": [{"ip_address": "10.100.0.12"}]}
    )
    before = await snapshot(demo)
    for refused, expected, message in (
        ({"gateway_ip": "10.100.0.12"}, 409, "already in use by port"),
        ({"gateway_ip": "10.100.0.5"}, 400, "conflicts with allocation pool"),
        ({"gateway_ip": "10.100.1.1"}, 400, "gateway_ip"),
        ({"allocation_pools": [{"start": "10.100.0.4", "end": "10.100.0.9"}]}, 409, "is allocated"),
        ({"host_routes": [{"destination": "10.20.0.1/24", "nexthop": "10.0.0.1"}]}, 400, "host_routes"),
        ({"host_routes": [{"destination": "10.20.0.0/24"}]}, 400, "missing required field `nexthop`"),
    ):
        status, body = await demo.put(f"{SUBNETS}/{subnet['id']}", {"subnet": refused})
        assert status == expected and message in neutron_error(body)["message"], (refused, body)
        assert await snapshot(demo) == before


async def test_bulk_creates_answer_the_plural_and_make_all_or_none(demo: Any) -> None:
    status, body = await demo.post(NETWORKS, {"networks": [{"name": "bulk-1"}, {"name": "bulk-2"}]})
    assert status == 201 and [n["name"] for n in body["networks"]] == ["bulk-1", "bulk-2"], body
    first, second = body["networks"]
    status, body = await demo.post(
        SUBNETS,
        {
            "subnets": [
                {"network_id": first["id"], "cidr": "10.61.0.0/24", "ip_version": 4},
                {"network_id": second["id"], "cidr": "10.62.0.0/24", "ip_version": 4},
            ]
        },
    )
    assert status == 201 and [s["cidr"] for s in body["subnets"]] == ["10.61.0.0/24", "10.62.0.0/24"], body
    status, body = await demo.post(
        PORTS, {"ports": [{"network_id": first["id"]}, {"network_id": second["id"]}]}
    )
    assert status == 201 and [p["fixed_ips"][0]["ip_address"] for p in body["ports"]] == [
        "10.61.0.2",
        "10.62.0.2",
    ]
    assert all(set(port) == PORT_KEYS for port in body["ports"])
    before = await snapshot(demo)
    for path, refused, expected in (
        (NETWORKS, {"networks": [{"name": "ok"}, {"name": "shared", "shared": True}]}, 403),
        (
            SUBNETS,
            {
                "subnets": [
                    {"network_id": first["id"], "cidr": "10.63.0.0/24"},
                    {"network_id": first["id"], "cidr": "10.63.0.0/16"},
                ]
            },
            400,
        ),
        (PORTS, {"ports": [{"network_id": first["id"]}, {"network_id": "nope"}]}, 404),
        (
            PORTS,
            {
                "ports": [
                    {"network_id": first["id"], "mac_address": "fa:16:3e:00:00:01"},
                    {"network_id": second["id"], "mac_address": "fa:16:3e:00:00:01"},
                ]
            },
            409,
        ),
    ):
        status, body = await demo.post(path, refused)
        assert status == expected and neutron_error(body), (path, body)
        assert await snapshot(demo) == before, path


async def test_port_fixed_ips_are_updated_and_filtered(demo: Any) -> None:
    network = await create(demo, NETWORKS, "network", {"name": "two-subnets"})
    one = await create(demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.71.0.0/24"})
    two = await create(demo, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "10.72.0.0/24"})
    port = await create(
        demo,
        PORTS,
        "port",
        {"network_id": network["id"], "fixed_ips": [{"subnet_id": one["id"]}, {"subnet_id": two["id"]}]},
    )
    other = await create(demo, PORTS, "port", {"network_id": network["id"], "device_owner": "compute:x"})
    status, body = await demo.put(
        f"{PORTS}/{port['id']}", {"port": {"fixed_ips": [{"ip_address": "10.71.0.2"}]}}
    )
    assert status == 200 and body["port"]["fixed_ips"] == [
        {"subnet_id": one["id"], "ip_address": "10.71.0.2"}
    ]
    status, body = await demo.put(
        f"{PORTS}/{port['id']}",
        {
            "port": {
                "fixed_ips": [
                    {"ip_address": "10.71.0.2"},
                    {"subnet_id": two["id"], "ip_address": "10.72.0.9"},
                ]
            }
        },
    )
    assert status == 200 and len(body["port"]["fixed_ips"]) == 2, body
    before = await snapshot(demo)
    status, body = await demo.put(
        f"{PORTS}/{port['id']}",
        {"port": {"fixed_ips": [{"ip_address": other["fixed_ips"][0]["ip_address"]}]}},
    )
    assert status == 409 and "already allocated" in neutron_error(body)["message"]
    assert await snapshot(demo) == before

    async def listed(**params: Any) -> list[str]:
        status, body = await demo.get(PORTS, params=params)
        assert status == 200, body
        return [p["id"] for p in body["ports"]]

    assert await listed(fixed_ips="ip_address=10.72.0.9") == [port["id"]]
    assert await listed(fixed_ips=["ip_address=10.72.0.9", f"subnet_id={one['id']}"]) == []
    assert await listed(fixed_ips=f"subnet_id={one['id']}") == [port["id"], other["id"]]
    assert await listed(fixed_ips="ip_address_substr=72.0") == [port["id"]]
    assert await listed(device_owner="compute:x") == [other["id"]]
    assert await listed(mac_address=other["mac_address"]) == [other["id"]]
    assert await listed(network_id=network["id"], fields="id") == [port["id"], other["id"]]


async def test_listings_sort_and_page_with_links(demo: Any) -> None:
    made = [await create(demo, NETWORKS, "network", {"name": name}) for name in ("b-net", "c-net", "a-net")]
    query = {"sort_key": "name", "sort_dir": "desc", "name": ["a-net", "b-net", "c-net"]}
    status, body = await demo.get(NETWORKS, params=query)
    assert [n["name"] for n in body["networks"]] == ["c-net", "b-net", "a-net"]
    status, body = await demo.get(NETWORKS, params={**query, "limit": "2"})
    assert status == 200 and [n["name"] for n in body["networks"]] == ["c-net", "b-net"]
    [following] = body["networks_links"]
    assert following["rel"] == "next"
    status, body = await demo.get(URL(following["href"]).path_qs)
    assert status == 200 and [n["name"] for n in body["networks"]] == ["a-net"], body
    assert [link["rel"] for link in body["networks_links"]] == ["previous"]
    status, body = await demo.get(NETWORKS, params={**query, "limit": "5", "marker": made[1]["id"]})
    assert [n["name"] for n in body["networks"]] == ["b-net", "a-net"]
    status, body = await demo.get(
        NETWORKS, params={**query, "limit": "1", "marker": made[0]["id"], "page_reverse": "true"}
    )
    assert [n["name"] for n in body["networks"]] == ["c-net"]
    assert [link["rel"] for link in body["networks_links"]] == ["next"]
    status, body = await demo.get(
        NETWORKS, params={"name": ["a-net", "c-net"], "fields": ["name"], "sort_key": "name"}
    )
    assert body == {"networks": [{"name": "a-net"}, {"name": "c-net"}]}


async def test_subnet_pools_give_subnets_their_prefixes(demo: Any) -> None:
    pool = await create(
        demo, "/network/v2.0/subnetpools", "subnetpool", {"name": "pool", "prefixes": ["10.110.0.0/16"]}
    )
    assert pool["prefixes"] == ["10.110.0.0/16"] and pool["min_prefixlen"] == 8 and pool["shared"] is False
    pool_path = f"/network/v2.0/subnetpools/{pool['id']}"
    status, body = await demo.put(pool_path, {"subnetpool": {"name": "renamed", "default_prefixlen": 24}})
    assert status == 200 and body["subnetpool"]["name"] == "renamed", body
    network = await create(demo, NETWORKS, "network", {"name": "from-pool"})
    subnet = await create(demo, SUBNETS, "subnet", {"network_id": network["id"], "subnetpool_id": pool["id"]})
    assert (subnet["cidr"], subnet["subnetpool_id"]) == ("10.110.0.0/24", pool["id"])
    sized = await create(
        demo, SUBNETS, "subnet", {"network_id": network["id"], "subnetpool_id": pool["id"], "prefixlen": 28}
    )
    assert sized["cidr"] == "10.110.1.0/28"
    status, body = await demo.get(SUBNETS, params={"subnetpool_id": pool["id"], "fields": "cidr"})
    assert body["subnets"] == [{"cidr": "10.110.0.0/24"}, {"cidr": "10.110.1.0/28"}]
    status, body = await demo.get("/network/v2.0/subnetpools", params={"name": "renamed"})
    assert status == 200 and [p["id"] for p in body["subnetpools"]] == [pool["id"]]
    status, body = await demo.get("/network/v2.0/extensions/subnet_allocation")
    assert status == 200
    before = await snapshot(demo)
    for method, path, refused, expected in (
        (
            "POST",
            SUBNETS,
            {"subnet": {"network_id": network["id"], "subnetpool_id": pool["id"], "prefixlen": 4}},
            400,
        ),
        (
            "POST",
            SUBNETS,
            {"subnet": {"network_id": network["id"], "subnetpool_id": pool["id"], "cidr": "10.110.0.0/25"}},
            409,
        ),
        ("POST", SUBNETS, {"subnet": {"network_id": network["id"]}}, 400),
        ("POST", SUBNETS, {"subnet": {"network_id": network["id"], "subnetpool_id": "nope"}}, 404),
        ("PUT", pool_path, {"subnetpool": {"prefixes": ["10.111.0.0/16"]}}, 400),
        ("DELETE", pool_path, None, 409),
        (
            "POST",
            "/network/v2.0/subnetpools",
            {"subnetpool": {"prefixes": ["10.0.0.0/8"], "shared": True}},
            403,
        ),
    ):
        status, body = await demo.request(method, path, json=refused)
        assert status == expected and neutron_error(body), (method, refused, body)
        assert await snapshot(demo) == before
    for made in (subnet, sized):
        status, _ = await demo.delete(f"{SUBNETS}/{made['id']}")
        assert status == 204
    status, _ = await demo.delete(pool_path)
    assert status == 204
    status, body = await demo.get(pool_path)
    assert status == 404 and neutron_error(body)
