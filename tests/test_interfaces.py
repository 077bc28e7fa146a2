"""Network interfaces hot-plugged (Nova's os-interface): attach by port or by network, list, show,
detach, the refusals, and an attach whose conductor or node dies half way.

Every actor runs in this process on its own bus connection against a real nats-server, the node
on libvirt's test driver (no device hot-plug: the NIC goes into the persistent definition), the
gateway on a real loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from actors.conductor.states import Action
from aiostack.client import Client
from api.conductor import ConductorOperator
from api.net import Net
from deploy.audit import audit
from tests.helpers import DEMO_PASSWORD, aiostack_cli
from tests.test_access_control import add_user, issue
from tests.test_resize import ResizeCloud

T = TypeVar("T")


class InterfaceCloud(ResizeCloud):
    """A cloud of one test-driver node (``ResizeCloud``'s), the demo user logged in."""

    async def start(self, confirm_window: float = 0.0) -> None:
        await super().start(confirm_window)
        await self.api.login()

    async def network(self, name: str, cidr: str) -> str:
        status, body = await self.api.post("/network/v2.0/networks", {"network": {"name": name}})
        assert status == 201, body
        network_id = str(body["network"]["id"])
        subnet = {"network_id": network_id, "cidr": cidr, "ip_version": 4}
        status, body = await self.api.post("/network/v2.0/subnets", {"subnet": subnet})
        assert status == 201, body
        return network_id

    async def port(self, network_id: str) -> dict[str, Any]:
        status, body = await self.api.post("/network/v2.0/ports", {"port": {"network_id": network_id}})
        assert status == 201, body
        return dict(body["port"])

    async def attach(self, server_id: str, body: Any) -> tuple[int, Any]:
        return await self.api.post(f"/compute/v2.1/servers/{server_id}/os-interface", body)

    async def detach(self, server_id: str, port_id: str) -> tuple[int, Any]:
        return await self.api.delete(f"/compute/v2.1/servers/{server_id}/os-interface/{port_id}")

    async def interfaces(self, server_id: str) -> list[dict[str, Any]]:
        status, body = await self.api.get(f"/compute/v2.1/servers/{server_id}/os-interface")
        assert status == 200, body
        return list(body["interfaceAttachments"])

    async def domain_macs(self, server_id: str) -> list[str]:
        assert self.node is not None
        return await self.node.interfaces.list_interfaces(server_id)

    async def conductor_dies_after(self, server_id: str, action: Action, net_step: Awaitable[T]) -> T:
        """What an attach or detach does before it calls the node (its action recorded, then its
        step with the net actor), then its conductor dies; what the step answered."""
        assert self.conductor is not None
        await self.conductor.core.start_action(server_id, action)
        answer = await net_step
        await self.conductor.stop()
        return answer

    async def until_finished(self, server_id: str, action: str, result: str) -> None:
        """Until the server's ``action`` has finished with ``result`` (the watch settled it)."""
        async with asyncio.timeout(30):
            while (action, result) not in await self.actions(server_id):
                await asyncio.sleep(0.1)

    async def steps(self, server_id: str, action: str) -> list[tuple[str, str]]:
        listed = await ConductorOperator.client(self.bus).list_action_events(instance_uuid=server_id)
        return [(step["event"], step["result"]) for step in listed if step["action"] == action]


@pytest.fixture
async def nic_cloud(start_actor, config, api, bus) -> InterfaceCloud:
    cloud = InterfaceCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


async def test_a_users_port_is_attached_listed_shown_and_detached_kept_unbound(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    [boot_nic] = await cloud.domain_macs(server_id)
    network_id = await cloud.network("extra", "10.20.0.0/24")
    port = await cloud.port(network_id)

    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"port_id": port["id"]}})
    assert status == 200, body
    attached = body["interfaceAttachment"]
    assert attached["port_id"] == port["id"] and attached["net_id"] == network_id
    assert attached["mac_addr"] == port["mac_address"] and attached["port_state"] == "ACTIVE"
    assert attached["fixed_ips"] == [
        {"subnet_id": port["fixed_ips"][0]["subnet_id"], "ip_address": port["fixed_ips"][0]["ip_address"]}
    ]
    assert await cloud.domain_macs(server_id) == [boot_nic, port["mac_address"]]
    bound = (await cloud.api.get(f"/network/v2.0/ports/{port['id']}"))[1]["port"]
    assert bound["device_id"] == server_id and bound["device_owner"] == "compute:nova"
    assert bound["binding:host_id"] == "node-1"
    listed = await cloud.interfaces(server_id)
    assert [nic["mac_addr"] for nic in listed] == [boot_nic, port["mac_address"]]
    status, shown = await cloud.api.get(f"/compute/v2.1/servers/{server_id}/os-interface/{port['id']}")
    assert status == 200 and shown["interfaceAttachment"] == attached
    addresses = (await cloud.server(server_id))["addresses"]
    assert addresses["extra"] == [
        {
            "addr": port["fixed_ips"][0]["ip_address"],
            "version": 4,
            "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
        }
    ]
    assert (await audit(cloud.bus)).problems == {}

    status, body = await cloud.detach(server_id, port["id"])
    assert status == 202, body
    assert await cloud.domain_macs(server_id) == [boot_nic]
    kept = (await cloud.api.get(f"/network/v2.0/ports/{port['id']}"))[1]["port"]
    assert kept["device_id"] == "" and kept["binding:host_id"] == ""
    assert "extra" not in (await cloud.server(server_id))["addresses"]
    status, body = await cloud.detach(server_id, port["id"])
    assert status == 404, body
    assert await cloud.actions(server_id) == [
        ("create", "Success"),
        ("attach_interface", "Success"),
        ("detach_interface", "Success"),
    ]
    assert await cloud.steps(server_id, "attach_interface") == [
        ("bind_port", "Success"),
        ("plugged", "Success"),
    ]
    assert await cloud.steps(server_id, "detach_interface") == [
        ("unbind_port", "Success"),
        ("unplugged", "Success"),
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_port_made_on_a_network_with_a_fixed_ip_is_deleted_by_its_detach(
    nic_cloud: InterfaceCloud, gateway_url: str
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.30.0.0/24")
    ws = await cloud.api.session.ws_connect(f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers)
    try:
        status, body = await cloud.attach(
            server_id,
            {"interfaceAttachment": {"net_id": network_id, "fixed_ips": [{"ip_address": "10.30.0.77"}]}},
        )
        assert status == 200, body
        attached = body["interfaceAttachment"]
        assert attached["fixed_ips"][0]["ip_address"] == "10.30.0.77"
        port = (await cloud.api.get(f"/network/v2.0/ports/{attached['port_id']}"))[1]["port"]
        groups = (await cloud.api.get("/network/v2.0/security-groups?name=default"))[1]["security_groups"]
        assert port["security_groups"] == [groups[0]["id"]]  # the project's default, as Nova's
        assert attached["mac_addr"] in await cloud.domain_macs(server_id)
        assert (await cloud.detach(server_id, attached["port_id"]))[0] == 202
        seen: list[str] = []
        async with asyncio.timeout(10):
            while "instance.interface_detached" not in seen:
                frame = json.loads((await ws.receive()).data)
                if frame["type"] == "event" and frame["event"]["id"] == server_id:
                    seen.append(frame["event"]["type"])
                    if frame["event"]["type"] == "instance.interface_attached":
                        assert "10.30.0.77" in json.dumps(frame["event"]["state"]["addresses"])
        assert seen[-2:] == ["instance.interface_attached", "instance.interface_detached"]
    finally:
        await ws.close()
    status, body = await cloud.api.get(f"/network/v2.0/ports/{attached['port_id']}")
    assert status == 404, body
    assert attached["mac_addr"] not in await cloud.domain_macs(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_bad_bodies_and_busy_ports_are_refused_as_nova_refuses_them(nic_cloud: InterfaceCloud) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    other_id = await cloud.boot("other")
    network_id = await cloud.network("extra", "10.40.0.0/24")
    port = await cloud.port(network_id)
    refusals: list[tuple[Any, int, str]] = [
        ({"interfaceAttachment": {"port_id": port["id"], "net_id": network_id}}, 400, "Must not input both"),
        ({"interfaceAttachment": {"port_id": port["id"], "fixed_ips": [{"ip_address": "10.40.0.9"}]}}, 400,
         "Must input network_id when request IP address"),
        ({"interfaceAttachment": {"net_id": network_id, "tag": "nic1"}}, 400, "tag"),
        ({"interfaceAttachment": {"net_id": network_id, "fixed_ips": []}}, 400, "fixed_ips"),
        ({"interfaceAttachment": {"net_id": network_id, "fixed_ips": [{"ip_address": "10.99.0.9"}]}},
         400, "10.99.0.9"),
        ({"interfaceAttachment": {"port_id": "no-such-port"}}, 404, "no-such-port"),
        ({"interfaceAttachment": {"net_id": "no-such-network"}}, 404, "no-such-network"),
    ]  # fmt: skip
    for body, code, words in refusals:
        status, answer = await cloud.attach(server_id, body)
        assert status == code and words in json.dumps(answer), (body, status, answer)
    assert (await cloud.attach(other_id, {"interfaceAttachment": {"port_id": port["id"]}}))[0] == 200
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"port_id": port["id"]}})
    assert status == 409 and f"Port {port['id']} is still in use." in json.dumps(body), body
    status, body = await cloud.api.get(f"/compute/v2.1/servers/{server_id}/os-interface/{port['id']}")
    assert status == 404 and "does not have a port" in json.dumps(body), body
    assert (await cloud.detach(server_id, port["id"]))[0] == 404

    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"suspend": None}))[0] == 202
    await cloud.until(server_id, "SUSPENDED")
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"net_id": network_id}})
    assert status == 409 and "Cannot 'attach_interface' instance" in json.dumps(body), body
    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"resume": None}))[0] == 202
    await cloud.until(server_id, "ACTIVE")
    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"pause": None}))[0] == 202
    await cloud.until(server_id, "PAUSED")
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"net_id": network_id}})
    assert status == 200, body  # a paused server takes a NIC, as Nova's does
    assert (await cloud.api.post(f"/compute/v2.1/servers/{server_id}/action", {"lock": None}))[0] == 202
    await cloud.api.login("admin", "admin-secret", "admin")
    ports = (await cloud.api.get(f"/network/v2.0/ports?device_id={server_id}"))[1]["ports"]
    await cloud.api.login()
    status, body = await cloud.detach(server_id, ports[-1]["id"])
    assert status == 409 and "locked" in json.dumps(body), body
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"net_id": network_id}})
    assert status == 409 and "locked" in json.dumps(body), body
    assert len(await cloud.interfaces(server_id)) == 2
    assert (await audit(cloud.bus)).problems == {}


async def test_an_attach_whose_conductor_died_after_binding_is_plugged_by_the_next_conductor(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.50.0.0/24")
    port = await cloud.conductor_dies_after(
        server_id,
        Action.ATTACH_INTERFACE,
        Net.client(cloud.bus).attach_port(
            instance_uuid=server_id,
            project_id=str(cloud.api.project_id),
            host="node-1",
            network_id=network_id,
        ),
    )
    assert port is not None and port["mac_address"] not in await cloud.domain_macs(server_id)
    await cloud.start_conductor(0.0)
    await cloud.until_finished(server_id, "attach_interface", "Success")
    assert port["mac_address"] in await cloud.domain_macs(server_id)
    assert ("reconciled", "Success") in await cloud.steps(server_id, "attach_interface")
    assert "extra" in (await cloud.server(server_id))["addresses"]
    assert (await audit(cloud.bus)).problems == {}


async def test_an_attach_whose_node_is_away_gives_the_port_back_and_leaves_no_nic(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.60.0.0/24")
    port = await cloud.port(network_id)
    assert cloud.node is not None
    await cloud.node.stop()
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"port_id": port["id"]}})
    assert status >= 500 or status == 409, (status, body)
    given_back = (await cloud.api.get(f"/network/v2.0/ports/{port['id']}"))[1]["port"]
    assert given_back["device_id"] == ""
    assert ("attach_interface", None) in await cloud.actions(server_id)  # open until the node is asked
    await cloud.start_node()
    await cloud.until_finished(server_id, "attach_interface", "Error")
    assert port["mac_address"] not in await cloud.domain_macs(server_id)
    assert len(await cloud.domain_macs(server_id)) == 1
    assert (await audit(cloud.bus)).problems == {}


async def test_a_detach_whose_conductor_died_after_giving_the_port_back_is_unplugged(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.70.0.0/24")
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {"net_id": network_id}})
    assert status == 200, body
    attached = body["interfaceAttachment"]
    await cloud.conductor_dies_after(
        server_id,
        Action.DETACH_INTERFACE,
        Net.client(cloud.bus).detach_port(instance_uuid=server_id, port_id=attached["port_id"]),
    )
    assert attached["mac_addr"] in await cloud.domain_macs(server_id)
    await cloud.start_conductor(0.0)
    await cloud.until_finished(server_id, "detach_interface", "Success")
    assert attached["mac_addr"] not in await cloud.domain_macs(server_id)
    assert (await cloud.api.get(f"/network/v2.0/ports/{attached['port_id']}"))[0] == 404
    assert (await audit(cloud.bus)).problems == {}


async def test_the_audit_finds_a_port_bound_to_a_server_whose_domain_lacks_its_nic(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.80.0.0/24")
    port = await Net.client(cloud.bus).attach_port(  # bound behind the conductor's back: no attach to settle
        instance_uuid=server_id, project_id=str(cloud.api.project_id), host="node-1", network_id=network_id
    )
    problems = (await audit(cloud.bus, recheck_after=0.1)).problems
    assert list(problems) == [f"nic:{port['id']}"], problems
    assert f"whose domain on node-1 has no NIC {port['mac_address']}" in problems[f"nic:{port['id']}"]
    await Net.client(cloud.bus).detach_port(instance_uuid=server_id, port_id=port["id"])
    assert (await audit(cloud.bus, recheck_after=0.1)).problems == {}


async def test_the_sdk_and_the_cli_add_and_remove_a_servers_nics(
    nic_cloud: InterfaceCloud, gateway_url: str
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    network_id = await cloud.network("extra", "10.90.0.0/24")
    port = await cloud.port(network_id)
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        made = await client.servers.attach_interface(server_id, network="extra", fixed_ip="10.90.0.50")
        assert made.net_id == network_id and made.ip_addresses == ("10.90.0.50",)
        listed = await client.servers.interfaces(server_id)
        assert [nic.port_id for nic in listed][1:] == [made.port_id]
        added = await aiostack_cli(gateway_url, "server", "add", "port", "vm", port["id"])
        assert added.split()[:2] == [port["id"], port["mac_address"]]
        assert port["mac_address"] in await cloud.domain_macs(server_id)
        await aiostack_cli(gateway_url, "server", "remove", "port", "vm", port["id"])
        await client.servers.detach_interface(server_id, made.port_id)
        assert [nic.port_id for nic in await client.servers.interfaces(server_id)] == [listed[0].port_id]
    assert len(await cloud.domain_macs(server_id)) == 1
    assert (await audit(cloud.bus)).problems == {}


async def test_a_reader_lists_a_servers_interfaces_but_may_not_attach_or_detach(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    [boot_nic] = await cloud.interfaces(server_id)
    await add_user(
        cloud.bus, await issue(cloud.bus, "admin", "admin-secret", "admin"), "rita", "demo", "reader"
    )
    await cloud.api.login("rita", "rita-pw", "demo")
    assert await cloud.interfaces(server_id) == [boot_nic]
    status, body = await cloud.attach(server_id, {"interfaceAttachment": {}})
    assert status == 403 and "compute:write" in json.dumps(body), body
    status, body = await cloud.detach(server_id, boot_nic["port_id"])
    assert status == 403 and "compute:write" in json.dumps(body), body
    assert await cloud.interfaces(server_id) == [boot_nic]
    assert await cloud.actions(server_id) == [("create", "Success")]


async def test_with_no_port_or_network_the_nic_joins_the_network_a_boot_would_pick(
    nic_cloud: InterfaceCloud,
) -> None:
    cloud = nic_cloud
    server_id = await cloud.boot()
    [boot_nic] = await cloud.interfaces(server_id)
    status, body = await cloud.attach(server_id, {})  # Nova's body may leave interfaceAttachment out
    assert status == 200, body
    assert body["interfaceAttachment"]["net_id"] == boot_nic["net_id"]  # the shared default network
    assert len(await cloud.domain_macs(server_id)) == 2
    assert (await audit(cloud.bus)).problems == {}
