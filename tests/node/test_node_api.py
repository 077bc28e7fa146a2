"""The node's API (``api.node.Node``) on a test-driver node: typed calls, and arguments checked at
dispatch, before a handler runs (a malformed one is refused naming its field, and changes nothing)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from api.node import Node
from bus import Bus, Conflict, InvalidRequest
from node.actor import NodeActor
from tests.helpers import Api


async def boot_active(api: Api) -> str:
    await api.login()
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    status, body = await api.post(
        "/compute/v2.1/servers",
        {"server": {"name": "vm", "imageRef": images["images"][0]["id"], "flavorRef": "1"}},
    )
    assert status == 202, body
    server_id = body["server"]["id"]
    async with asyncio.timeout(30):
        while (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] != "ACTIVE":
            await asyncio.sleep(0.05)
    return server_id


def the_node(cloud: list[Any]) -> NodeActor:
    (node,) = [actor for actor in cloud if isinstance(actor, NodeActor)]
    return node


async def test_the_node_answers_its_typed_client(cloud, api: Api, bus: Bus) -> None:
    server_id = await boot_active(api)
    node = Node.client(bus, host="node-1")
    [domain] = await node.list_domains()
    assert (domain["uuid"], domain["name"], domain["state"]) == (server_id, f"instance-{server_id}", 1)
    assert domain["project_id"] == api.project_id
    assert await node.get_power_state(instance_uuid=server_id) == {"exists": True, "running": True}
    assert await node.get_power_state(instance_uuid=str(uuid.uuid4())) == {"exists": False, "running": False}
    with pytest.raises(Conflict, match="keeps no console log"):
        await node.get_console_output(instance_uuid=server_id)


ISCSI = {"transport": "iscsi"}
RAW = {"transport": "file", "path": "/volumes/v-1.raw", "format": "raw", "host": "", "port": 0, "export": ""}
VMDK = {**RAW, "format": "vmdk"}


@pytest.mark.parametrize(
    ("method", "arguments", "field"),
    [
        ("reboot_instance", {"reboot_type": "GENTLE"}, "`$.reboot_type`"),
        ("change_power", {"action": "hibernate"}, "`$.action`"),
        ("stop_instance", {"instance_uuid": 7}, "`$.instance_uuid`"),
        ("terminate_instance", {"instance_uuid": None}, "`$.instance_uuid`"),
        ("get_console_output", {"length": -1}, "`$.length`"),
        ("attach_volume", {"volume_id": "v-1", "connection": {**RAW, "path": None}}, "`$.connection.path`"),
        ("attach_volume", {"volume_id": "v", "connection": VMDK}, "`$.connection.format`"),
        ("attach_volume", {"volume_id": "v", "connection": {**RAW, **ISCSI}}, "`$.connection.transport`"),
        ("attach_volume", {"volume_id": "v-1", "connection": RAW, "device": "/dev/../x"}, "`$.device`"),
        ("detach_volume", {"volume_id": "v-1"}, "`connection`"),
        ("start_instance", {"force": True}, "`force`"),
    ],
)  # fmt: skip
async def test_a_malformed_argument_is_refused_naming_the_field_and_changes_nothing(
    cloud, api: Api, bus: Bus, method: str, arguments: dict[str, Any], field: str
) -> None:
    server_id = await boot_active(api)
    node = the_node(cloud)
    client = Node.client(bus, host="node-1")
    xml_before = await node.records.stored_xml(server_id)
    with pytest.raises(InvalidRequest, match=re.escape(f"node.node-1.{method}: ") + ".*" + re.escape(field)):
        # a raw call, as a caller that does not use the typed client could send it (casts included)
        await bus.call(f"node.node-1.{method}", {"instance_uuid": server_id, **arguments})
    await asyncio.sleep(0.2)  # what a handler that ran anyway would have done by now
    assert await client.get_power_state(instance_uuid=server_id) == {"exists": True, "running": True}
    assert await node.records.stored_xml(server_id) == xml_before
    assert not node.records.working
    server = (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", None)


async def test_the_typed_client_is_refused_the_same_way(cloud, api: Api, bus: Bus) -> None:
    server_id = await boot_active(api)
    with pytest.raises(InvalidRequest, match=r"`\$\.length`"):
        await Node.client(bus, host="node-1").get_console_output(instance_uuid=server_id, length=-5)
