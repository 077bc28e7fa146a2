"""What a node's metadata service asks (``node/metadata.py``): the ports of the instance holding an
address on a network (``NetForNodes.instance_ports_at``) and what the instance is told of itself
(``ConductorForNodes.get_instance_metadata``), each answered only to the node of the instance's
host, never with the administrator password, and nothing once the instance is gone."""

from __future__ import annotations

import asyncio
import base64

import pytest

from api.conductor import Compute, ConductorForNodes
from api.image import Images
from api.net import Net, NetForNodes
from bus import Actor, Bus, Context, NotFound, request_scope
from tests.actors.test_conductor import issue

USER_DATA = base64.b64encode(b"#!/bin/sh\necho hello\n").decode()


@pytest.mark.nodes(2)
async def test_a_node_finds_its_instance_by_address_and_reads_its_metadata_but_not_its_password(
    bus: Bus, cloud: list[Actor]
) -> None:
    demo: Context = await issue(bus, "demo", "demo-secret", "demo")
    compute = Compute.client(bus)
    with request_scope(context=demo):
        key = await compute.create_keypair(name="mine")
        (image,) = await Images.client(bus).list(name="aiostack-tiny")
        created = await compute.create_instance(
            name="Web 1", flavor_ref="1", image_ref=image["id"], key_name="mine",
            user_data=USER_DATA, admin_pass="Secret-Pass-1", metadata={"role": "web"},
        )  # fmt: skip
        async with asyncio.timeout(30):
            while (server := await compute.get_instance(instance_uuid=created["id"]))["status"] != "ACTIVE":
                await asyncio.sleep(0.05)
    uuid, host = server["id"], str(server["host"])
    other = "node-1" if host == "node-2" else "node-2"
    (port,) = await Net.client(bus).list_ports(device_id=uuid)
    address = port["fixed_ips"][0]["ip_address"]

    metadata = await ConductorForNodes.client(bus, host=host).get_instance_metadata(instance_uuid=uuid)
    assert set(metadata) == {"instance", "user_data", "public_keys"}
    assert (metadata["instance"]["id"], metadata["instance"]["metadata"]) == (uuid, {"role": "web"})
    assert (metadata["user_data"], metadata["public_keys"]) == (USER_DATA, {"mine": key["public_key"]})
    with pytest.raises(NotFound, match=f"on host {other}"):
        await ConductorForNodes.client(bus, host=other).get_instance_metadata(instance_uuid=uuid)

    node_net = NetForNodes.client(bus, host=host)
    found = await node_net.instance_ports_at(network_id=port["network_id"], ip_address=address)
    assert [p["id"] for p in found] == [port["id"]] and found[0]["device_id"] == uuid
    with request_scope(context=demo):
        elsewhere = (await Net.client(bus).create_network(name="elsewhere"))["id"]
    refused = [
        NetForNodes.client(bus, host=other).instance_ports_at(
            network_id=port["network_id"], ip_address=address
        ),
        node_net.instance_ports_at(network_id=port["network_id"], ip_address="10.20.255.254"),
        node_net.instance_ports_at(network_id=elsewhere, ip_address=address),
    ]
    for lookup in refused:
        with pytest.raises(NotFound):
            await lookup

    with request_scope(context=demo):
        await compute.delete_instance(instance_uuid=uuid)
        async with asyncio.timeout(30):
            while await compute.list_instances():
                await asyncio.sleep(0.05)
    with pytest.raises(NotFound):
        await node_net.instance_ports_at(network_id=port["network_id"], ip_address=address)
    with pytest.raises(NotFound):
        await ConductorForNodes.client(bus, host=host).get_instance_metadata(instance_uuid=uuid)
