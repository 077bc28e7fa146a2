"""Tokens and policy are checked in the gateway and again in every actor; projects are isolated."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from api.conductor import Compute
from api.identity import IdentityAdmin, Tokens
from bus import Bus, Context, Forbidden, NotFound, Unauthorized, request_scope
from tests.helpers import Api


async def issue(bus: Bus, username: str, password: str, project: str | None = None) -> Context:
    issued = await Tokens.client(bus).issue(username=username, password=password, project_name=project)
    return Context(
        issued["user"]["id"],
        issued["project"]["id"],
        tuple(r["name"] for r in issued["roles"]),
        issued["token"],
    )


async def add_user(bus: Bus, admin: Context, name: str, project: str, role: str) -> Context:
    directory = IdentityAdmin.client(bus)
    with request_scope(context=admin):
        if project not in {p["name"] for p in await directory.list_projects()}:
            await directory.create_project(name=project)
        await directory.create_user(name=name, password=f"{name}-pw", default_project=project)
        await directory.grant_role(user=name, project=project, role=role)
    return await issue(bus, name, f"{name}-pw", project)


@pytest.fixture
async def admin(bus: Bus, cloud) -> Context:
    return await issue(bus, "admin", "admin-secret", "admin")


@pytest.fixture
async def demo(bus: Bus, cloud) -> Context:
    return await issue(bus, "demo", "demo-secret", "demo")


async def test_a_context_claiming_a_user_without_a_valid_token_is_refused(bus: Bus, demo: Context) -> None:
    for forged in (
        Context(demo.user_id, demo.project_id, ("admin",), None),
        Context(demo.user_id, demo.project_id, ("admin",), "forged-token"),
        Context("someone-else", demo.project_id, ("member",), demo.token),
        Context(demo.user_id, "another-project", ("member",), demo.token),
    ):
        with request_scope(context=forged), pytest.raises(Unauthorized):
            await bus.call("net.create_network", {"name": "sneaky"})
    with request_scope(context=demo):
        assert "sneaky" not in {n["name"] for n in await bus.call("net.list_networks")}


async def test_the_token_decides_the_roles_not_the_claim(bus: Bus, demo: Context) -> None:
    claims_admin = Context(demo.user_id, demo.project_id, ("admin",), demo.token)
    with request_scope(context=claims_admin), pytest.raises(Forbidden):
        await bus.call("net.create_network", {"name": "shared-by-a-member", "shared": True})
    with request_scope(context=claims_admin), pytest.raises(Forbidden):
        await IdentityAdmin.client(bus).create_project(name="not-yours")


async def test_a_reader_can_list_and_show_but_not_change(bus: Bus, admin: Context, gateway_url: str) -> None:
    reader = await add_user(bus, admin, "rita", "demo", "reader")
    with request_scope(context=reader):
        assert await Compute.client(bus).list_instances() == []
        for address, body in (
            ("conductor.create_instance", {"name": "x", "flavor_ref": "1", "image_ref": "x"}),
            ("net.create_network", {"name": "x"}),
            ("volume.create", {"size": 1}),
            ("image.create", {"name": "x"}),
        ):
            with pytest.raises(Forbidden):
                await bus.call(address, body)
    async with aiohttp.ClientSession() as session:
        api = Api(session, gateway_url)
        await api.login("rita", "rita-pw", "demo")
        assert (await api.get("/compute/v2.1/servers"))[0] == 200
        assert (await api.get("/network/v2.0/networks"))[0] == 200
        status, body = await api.post(
            "/compute/v2.1/servers", {"server": {"name": "x", "imageRef": "x", "flavorRef": "1"}}
        )
        assert status == 403 and "compute:write" in body["forbidden"]["message"]
        assert (await api.post("/network/v2.0/networks", {"network": {"name": "x"}}))[0] == 403
        assert (await api.post(f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1}}))[0] == 403
        async with session.ws_connect(f"{gateway_url}/ws", headers=api.headers) as ws:
            assert (await ws.receive_json())["type"] == "subscribed"


async def test_another_projects_resources_are_not_found_over_rest_and_over_the_bus(
    bus: Bus, admin: Context, demo: Context, gateway_url: str
) -> None:
    eve = await add_user(bus, admin, "eve", "eves-project", "member")
    with request_scope(context=eve):
        image = await bus.call("image.create", {"name": "eves-private"})
        network = await bus.call("net.create_network", {"name": "eves-net"})
        await bus.call("net.create_subnet", {"network_id": network["id"], "cidr": "10.99.0.0/24"})
        port = await bus.call("net.create_port", {"network_id": network["id"]})
        volume = await bus.call("volume.create", {"size": 1})
        public = await bus.call("image.list", {"name": "aiostack-tiny"})
        server = await Compute.client(bus).create_instance(
            name="eves-vm", flavor_ref="1", image_ref=public[0]["id"]
        )
    with request_scope(context=demo):
        for address, body in (
            ("conductor.get_instance", {"instance_uuid": server["id"]}),
            ("conductor.delete_instance", {"instance_uuid": server["id"]}),
            ("net.get_port", {"port_id": port["id"]}),
            ("net.get_network", {"network_id": network["id"]}),
            ("volume.get", {"volume_id": volume["id"]}),
            ("volume.delete", {"volume_id": volume["id"]}),
            ("image.get", {"image_id": image["id"]}),
        ):
            with pytest.raises(NotFound):
                await bus.call(address, body)
    async with aiohttp.ClientSession() as session:
        api = Api(session, gateway_url)
        await api.login()
        for path in (
            f"/compute/v2.1/servers/{server['id']}",
            f"/network/v2.0/ports/{port['id']}",
            f"/network/v2.0/networks/{network['id']}",
            f"/volume/v3/{api.project_id}/volumes/{volume['id']}",
            f"/image/v2/images/{image['id']}",
        ):
            status, _ = await api.get(path)
            assert status == 404, path
        assert (await api.delete(f"/compute/v2.1/servers/{server['id']}"))[0] == 404
        _, listed = await api.get("/compute/v2.1/servers?all_tenants=1")
        assert server["id"] not in {s["id"] for s in listed["servers"]}
        await api.login("admin", "admin-secret", "admin")
        _, everything = await api.get("/compute/v2.1/servers?all_tenants=1")
        assert server["id"] in {s["id"] for s in everything["servers"]}
    with request_scope(context=eve):
        await Compute.client(bus).delete_instance(instance_uuid=server["id"])
        async with asyncio.timeout(30):
            while await Compute.client(bus).list_instances():
                await asyncio.sleep(0.05)
