"""Neutron's external networks, routers and floating IPs over real HTTP: their shapes, CRUD, the
interfaces by subnet and by port, Neutron's refusals (each a 4xx in Neutron's format and message
that changes nothing), quotas and project isolation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.identity.actor import IdentityActor
from actors.net.actor import NetActor
from tests.gateway.test_network_api import bob, create, neutron_error  # noqa: F401 (bob: a fixture)

BASE = "/network/v2.0"
ADMIN_PASSWORD = "admin-secret"  # as tests/conftest.py bootstraps it
NETWORKS, SUBNETS, PORTS, ROUTERS, FLOATINGIPS = (
    f"{BASE}/{kind}" for kind in ("networks", "subnets", "ports", "routers", "floatingips")
)
ROUTER_KEYS = {
    "id", "name", "project_id", "tenant_id", "description", "admin_state_up", "status",
    "external_gateway_info", "routes", "revision_number", "tags", "created_at", "updated_at",
}  # fmt: skip
FLOATINGIP_KEYS = {
    "id", "project_id", "tenant_id", "floating_network_id", "floating_ip_address", "port_id",
    "fixed_ip_address", "router_id", "status", "description", "revision_number", "tags", "created_at",
    "updated_at",
}  # fmt: skip


@pytest.fixture
async def demo(start_actor, config, api: Any) -> Any:
    """The identity and net actors behind the gateway, and ``api`` logged in as demo (a member)."""
    await start_actor(IdentityActor, config)
    await start_actor(NetActor, config)
    await api.login()
    return api


@pytest.fixture
async def admin(demo: Any) -> Any:
    client = type(demo)(demo.session, demo.base_url)
    await client.login("admin", ADMIN_PASSWORD, project="admin")
    return client


@pytest.fixture
async def public(admin: Any) -> dict[str, Any]:
    """An external network (the admin's) with a subnet."""
    network = await create(admin, NETWORKS, "network", {"name": "public", "router:external": True})
    await create(admin, SUBNETS, "subnet", {"network_id": network["id"], "cidr": "203.0.113.0/24"})
    return network


async def private(api: Any, cidr: str = "10.1.0.0/24") -> tuple[dict[str, Any], dict[str, Any]]:
    network = await create(api, NETWORKS, "network", {"name": f"net-{cidr}"})
    subnet = await create(api, SUBNETS, "subnet", {"network_id": network["id"], "cidr": cidr})
    return network, subnet


async def everything(admin: Any) -> dict[str, Any]:
    """What the admin sees of networks, subnets, ports, routers and floating IPs."""
    return {path: (await admin.get(path))[1] for path in (NETWORKS, SUBNETS, PORTS, ROUTERS, FLOATINGIPS)}


async def test_external_networks_are_made_by_admins_and_listed_to_every_project(
    demo: Any, admin: Any, public: dict[str, Any]
) -> None:
    status, body = await demo.post(NETWORKS, {"network": {"name": "mine", "router:external": True}})
    assert status == 403 and neutron_error(body)
    status, body = await demo.get(NETWORKS, params={"router:external": "true"})
    assert status == 200 and [n["id"] for n in body["networks"]] == [public["id"]]
    assert body["networks"][0]["router:external"] is True
    status, body = await demo.get(SUBNETS, params={"network_id": public["id"]})
    assert status == 200 and body["subnets"] == []
    status, body = await demo.get(f"{BASE}/extensions")
    aliases = {extension["alias"] for extension in body["extensions"]}
    assert {"router", "external-net", "ext-gw-mode", "extraroute"} <= aliases


async def test_a_router_is_created_shown_listed_updated_and_deleted(
    demo: Any, public: dict[str, Any]
) -> None:
    asked = {"name": "r1", "admin_state_up": False, "external_gateway_info": {"network_id": public["id"]}}
    router = await create(demo, ROUTERS, "router", asked)
    assert set(router) == ROUTER_KEYS and router["status"] == "ACTIVE" and router["admin_state_up"] is False
    gateway = router["external_gateway_info"]
    assert gateway["network_id"] == public["id"] and gateway["enable_snat"] is True
    assert gateway["external_fixed_ips"][0]["ip_address"].startswith("203.0.113.")
    status, body = await demo.get(f"{ROUTERS}/{router['id']}", params={"fields": ["id", "name"]})
    assert status == 200 and body["router"] == {"id": router["id"], "name": "r1"}
    status, body = await demo.get(ROUTERS, params={"name": "r1"})
    assert [r["id"] for r in body["routers"]] == [router["id"]]
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}",
        {"router": {"name": "r2", "admin_state_up": True, "external_gateway_info": None}},
    )
    assert (
        status == 200 and body["router"]["name"] == "r2" and body["router"]["external_gateway_info"] is None
    )
    assert body["router"]["revision_number"] == 2
    assert (await demo.delete(f"{ROUTERS}/{router['id']}"))[0] == 204
    status, body = await demo.get(f"{ROUTERS}/{router['id']}")
    assert status == 404 and neutron_error(body)["type"] == "RouterNotFound"


async def test_interfaces_are_added_and_removed_by_subnet_and_by_port(demo: Any) -> None:
    network, subnet = await private(demo)
    router = await create(demo, ROUTERS, "router", {"name": "r1"})
    add, remove = (
        f"{ROUTERS}/{router['id']}/add_router_interface",
        f"{ROUTERS}/{router['id']}/remove_router_interface",
    )
    status, interface = await demo.put(add, {"subnet_id": subnet["id"]})
    assert status == 200 and interface["subnet_id"] == subnet["id"] and interface["id"] == router["id"]
    status, body = await demo.get(f"{PORTS}/{interface['port_id']}")
    port = body["port"]
    assert (port["device_id"], port["device_owner"], port["status"]) == (
        router["id"],
        "network:router_interface",
        "ACTIVE",
    )
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.1.0.1"}]
    other, _ = await private(demo, "10.2.0.0/24")
    free = await create(demo, PORTS, "port", {"network_id": other["id"]})
    status, by_port = await demo.put(add, {"port_id": free["id"]})
    assert status == 200 and by_port["port_id"] == free["id"]
    status, body = await demo.get(PORTS, params={"device_id": router["id"]})
    assert {p["id"] for p in body["ports"]} == {interface["port_id"], free["id"]}
    status, body = await demo.delete(f"{ROUTERS}/{router['id']}")
    assert status == 409 and neutron_error(body)["type"] == "RouterInUse"
    status, body = await demo.delete(f"{NETWORKS}/{network['id']}")
    assert status == 409 and neutron_error(body)
    assert (await demo.put(remove, {"port_id": free["id"]}))[0] == 200
    assert (await demo.put(remove, {"subnet_id": subnet["id"]}))[0] == 200
    status, body = await demo.get(PORTS, params={"device_id": router["id"]})
    assert body["ports"] == []
    assert (await demo.delete(f"{ROUTERS}/{router['id']}"))[0] == 204


async def test_bad_router_requests_are_neutrons_errors_and_change_nothing(
    demo: Any, admin: Any, public: dict[str, Any]
) -> None:
    _, subnet = await private(demo)
    overlapping_net, overlapping = await private(demo, "10.1.0.0/16")
    router = await create(demo, ROUTERS, "router", {"name": "r1"})
    add = f"{ROUTERS}/{router['id']}/add_router_interface"
    assert (await demo.put(add, {"subnet_id": subnet["id"]}))[0] == 200
    used = await create(demo, PORTS, "port", {"network_id": overlapping_net["id"], "device_id": "server-1"})
    before = await everything(admin)
    status, body = await demo.put(add, {"subnet_id": overlapping["id"]})
    assert status == 400 and neutron_error(body) == {
        "type": "BadRequest",
        "message": f"Bad router request: Cidr 10.1.0.0/16 of subnet {overlapping['id']} overlaps with cidr"
        f" 10.1.0.0/24 of subnet {subnet['id']}.",
        "detail": "",
    }
    status, body = await demo.put(add, {"port_id": used["id"]})
    assert status == 409 and neutron_error(body)["type"] == "PortInUse"
    status, body = await demo.put(add, {})
    assert status == 400 and neutron_error(body)
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}",
        {"router": {"external_gateway_info": {"network_id": overlapping_net["id"]}}},
    )
    assert status == 400 and neutron_error(body)["message"] == (
        f"Bad router request: Network {overlapping_net['id']} is not an external network."
    )
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}", {"router": {"external_gateway_info": {"network_id": router["id"]}}}
    )
    assert status == 404 and neutron_error(body)
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}",
        {"router": {"routes": [{"destination": "10.9.0.0/16", "nexthop": "10.7.0.1"}]}},
    )
    assert status == 400 and neutron_error(body)["type"] == "InvalidRoutes"
    for path in (f"{ROUTERS}/no-such-router", f"{ROUTERS}/no-such-router/add_router_interface"):
        status, body = await demo.put(
            path, {"router": {"name": "x"}} if path.endswith("router") else {"subnet_id": subnet["id"]}
        )
        assert status == 404 and neutron_error(body)["type"] == "RouterNotFound"
    assert await everything(admin) == before


async def test_another_projects_routers_are_not_found(demo: Any, bob: Any) -> None:  # noqa: F811
    router = await create(demo, ROUTERS, "router", {"name": "r1"})
    _, theirs = await private(bob, "10.5.0.0/24")
    assert (await bob.get(ROUTERS))[1]["routers"] == []
    for status, body in (
        await bob.get(f"{ROUTERS}/{router['id']}"),
        await bob.put(f"{ROUTERS}/{router['id']}", {"router": {"name": "mine"}}),
        await bob.delete(f"{ROUTERS}/{router['id']}"),
        await bob.put(f"{ROUTERS}/{router['id']}/add_router_interface", {"subnet_id": theirs["id"]}),
    ):
        assert status == 404 and neutron_error(body)["type"] == "RouterNotFound"
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}/add_router_interface", {"subnet_id": theirs["id"]}
    )
    assert status == 404 and neutron_error(body)


async def test_floating_ips_are_associated_through_a_router_and_disassociated(
    demo: Any, admin: Any, public: dict[str, Any]
) -> None:
    network, subnet = await private(demo)
    router = await create(
        demo, ROUTERS, "router", {"name": "r1", "external_gateway_info": {"network_id": public["id"]}}
    )
    port = await create(demo, PORTS, "port", {"network_id": network["id"]})
    status, body = await demo.post(
        FLOATINGIPS, {"floatingip": {"floating_network_id": public["id"], "port_id": port["id"]}}
    )
    assert status == 404 and neutron_error(body) == {
        "type": "ExternalGatewayForFloatingIPNotFound",
        "message": f"External network {public['id']} is not reachable from subnet {subnet['id']}.  Therefore,"
        f" cannot associate Port {port['id']} with a Floating IP.",
        "detail": "",
    }
    assert (await demo.put(f"{ROUTERS}/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]}))[
        0
    ] == 200
    floating = await create(demo, FLOATINGIPS, "floatingip", {"floating_network_id": public["id"]})
    assert set(floating) == FLOATINGIP_KEYS and floating["status"] == "DOWN" and floating["port_id"] is None
    path = f"{FLOATINGIPS}/{floating['id']}"
    status, body = await demo.put(path, {"floatingip": {"port_id": port["id"]}})
    assert status == 200 and body["floatingip"]["status"] == "ACTIVE"
    assert body["floatingip"]["router_id"] == router["id"]
    assert body["floatingip"]["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    status, body = await demo.put(
        f"{ROUTERS}/{router['id']}/remove_router_interface", {"subnet_id": subnet["id"]}
    )
    assert status == 409 and neutron_error(body)["type"] == "RouterInterfaceInUseByFloatingIP"
    status, body = await demo.get(FLOATINGIPS, params={"port_id": port["id"]})
    assert [f["id"] for f in body["floatingips"]] == [floating["id"]]
    status, body = await demo.put(path, {"floatingip": {"port_id": None}})
    assert status == 200 and (body["floatingip"]["status"], body["floatingip"]["port_id"]) == ("DOWN", None)
    status, body = await demo.post(FLOATINGIPS, {"floatingip": {"floating_network_id": network["id"]}})
    assert status == 400 and neutron_error(body)["message"] == (
        f"Bad floatingip request: Network {network['id']} is not a valid external network."
    )
    assert (await demo.delete(path))[0] == 204
    status, body = await admin.get(
        PORTS, params={"network_id": public["id"], "device_owner": "network:floatingip"}
    )
    assert body["ports"] == []


async def test_router_and_floating_ip_quotas_are_neutrons_and_enforced(
    demo: Any, admin: Any, public: dict[str, Any]
) -> None:
    status, body = await demo.get(f"{BASE}/quotas/{demo.project_id}")
    assert status == 200 and (body["quota"]["router"], body["quota"]["floatingip"]) == (10, 50)
    quota = f"{BASE}/quotas/{demo.project_id}"
    status, body = await admin.put(quota, {"quota": {"router": 1, "floatingip": 1}})
    assert status == 200 and (body["quota"]["router"], body["quota"]["floatingip"]) == (1, 1)
    await create(demo, ROUTERS, "router", {"name": "one"})
    await create(demo, FLOATINGIPS, "floatingip", {"floating_network_id": public["id"]})
    before = await everything(admin)
    status, body = await demo.post(ROUTERS, {"router": {"name": "two"}})
    assert status == 409 and neutron_error(body)["type"] == "OverQuota"
    status, body = await demo.post(FLOATINGIPS, {"floatingip": {"floating_network_id": public["id"]}})
    assert status == 409 and neutron_error(body)["type"] == "OverQuota"
    assert await everything(admin) == before
