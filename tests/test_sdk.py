"""The async SDK: typed resources, waits on the websocket's events, errors by status, the README example."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiostack import (
    ApiError,
    BuildFailed,
    Client,
    Conflict,
    Image,
    NotFound,
    Server,
    Unauthorized,
    Volume,
)
from bus import Bus
from tests.helpers import DEMO_PASSWORD

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
async def client(gateway_url: str, cloud) -> AsyncIterator[Client]:
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        yield client


async def test_a_server_boots_stops_starts_reboots_and_is_deleted_with_waits(client: Client) -> None:
    server = await client.servers.create("sdk-vm", image="aiostack-tiny", flavor="m1.tiny")
    assert isinstance(server, Server) and server.status == "ACTIVE"
    assert server.addresses["default"] and server.ips[0].startswith("10.")
    assert server.flavor_id == (await client.flavors.get("m1.tiny")).id
    assert server.image_id == (await client.images.get("aiostack-tiny")).id
    assert (await client.servers.stop(server)).status == "SHUTOFF"
    assert (await client.servers.get("sdk-vm")).status == "SHUTOFF"
    assert (await client.servers.start(server)).status == "ACTIVE"
    with pytest.raises(Conflict):
        await client.servers.start(server)
    assert (await client.servers.reboot(server, hard=True)).status == "ACTIVE"
    assert server.id in {s.id for s in await client.servers.list()}
    await client.servers.delete(server)
    with pytest.raises(NotFound):
        await client.servers.get(server.id)


async def test_a_server_is_described_and_gets_a_crash_dump(client: Client) -> None:
    server = await client.servers.create(
        "sdk-described", image="aiostack-tiny", flavor="m1.tiny", description="web"
    )
    assert server.description == "web"
    assert (await client.servers.set_description(server, "db")).description == "db"
    assert (await client.servers.set_description(server, None)).description is None
    await client.servers.trigger_crash_dump(server)
    assert (await client.servers.get(server)).status == "ACTIVE"
    await client.servers.stop(server)
    with pytest.raises(Conflict):
        await client.servers.trigger_crash_dump(server)


async def test_images_upload_get_list_and_delete(client: Client, tmp_path: Path) -> None:
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\1" * 5000)
    image = await client.images.upload("sdk-image", data, properties={"os_distro": "cirros"})
    assert isinstance(image, Image) and image.status == "active" and image.size == 5000
    assert image.properties == {"os_distro": "cirros"} and image.visibility == "private"
    assert await client.images.get("sdk-image") == image
    assert {"sdk-image", "aiostack-tiny"} <= {i.name for i in await client.images.list()}
    await client.images.delete(image)
    with pytest.raises(NotFound):
        await client.images.get(image.id)


async def test_networks_list_create_and_delete(client: Client) -> None:
    assert "default" in {network.name for network in await client.networks.list()}
    network = await client.networks.create("sdk-net", cidr="10.77.0.0/24")
    assert network.name == "sdk-net" and len(network.subnet_ids) == 1
    assert (await client.networks.get("sdk-net")).id == network.id
    await client.networks.delete(network)
    assert "sdk-net" not in {n.name for n in await client.networks.list()}


async def test_a_volume_is_created_with_wait_attached_detached_and_deleted(client: Client) -> None:
    server = await client.servers.create("sdk-disks", image="aiostack-tiny", flavor="m1.tiny")
    volume = await client.volumes.create(1, "sdk-vol")
    assert isinstance(volume, Volume) and volume.status == "available" and volume.size == 1
    attachment = await client.servers.attach_volume(server, "sdk-vol")
    assert (attachment.server_id, attachment.volume_id) == (server.id, volume.id) and attachment.device
    attached = await client.volumes.get(volume)
    assert attached.status == "in-use" and attached.attachments[0].server_id == server.id
    assert (await client.servers.get(server)).volume_ids == (volume.id,)
    await client.servers.detach_volume(server, volume)
    assert (await client.volumes.get(volume)).status == "available"
    await client.volumes.delete(volume)
    assert volume.id not in {v.id for v in await client.volumes.list()}
    await client.servers.delete(server)


async def test_a_server_boots_from_a_volume_made_from_an_image_and_takes_it_along(client: Client) -> None:
    volume = await client.volumes.create(1, "sdk-root", image="aiostack-tiny")
    assert volume.status == "available"
    server = await client.servers.create(
        "sdk-bfv", boot_volume="sdk-root", delete_volume_on_termination=True, flavor="m1.tiny"
    )
    assert server.status == "ACTIVE" and server.volume_ids == (volume.id,)
    assert (await client.volumes.get(volume)).attachments[0].device == "/dev/vda"
    with pytest.raises(ValueError, match="an image or a boot volume"):
        await client.servers.create("both", image="aiostack-tiny", boot_volume="sdk-root", flavor="m1.tiny")
    await client.servers.delete(server)
    for _ in range(100):
        if volume.id not in {v.id for v in await client.volumes.list()}:
            break
        await asyncio.sleep(0.05)
    assert volume.id not in {v.id for v in await client.volumes.list()}


async def test_key_pairs_are_generated_imported_and_given_to_a_server_with_its_user_data(
    client: Client,
) -> None:
    generated = await client.keypairs.create("sdk-key")
    assert generated.private_key and generated.private_key.startswith("-----BEGIN")
    assert generated.public_key.startswith("ssh-") and len(generated.fingerprint) == 47
    imported = await client.keypairs.create("sdk-imported", public_key=generated.public_key)
    assert imported.private_key is None and imported.fingerprint == generated.fingerprint
    assert {k.name for k in await client.keypairs.list()} == {"sdk-key", "sdk-imported"}
    assert (await client.keypairs.get("sdk-key")).private_key is None
    with pytest.raises(Conflict):
        await client.keypairs.create("sdk-key")
    server = await client.servers.create(
        "sdk-keyed",
        image="aiostack-tiny",
        flavor="m1.tiny",
        key_name=generated,
        user_data="#!/bin/sh\ntrue\n",
    )
    assert server.raw["key_name"] == "sdk-key"
    await client.servers.delete(server)
    for name in ("sdk-key", "sdk-imported"):
        await client.keypairs.delete(name)
    with pytest.raises(NotFound):
        await client.keypairs.get("sdk-key")


async def test_a_server_is_booted_in_security_groups_by_the_sdk_and_by_the_cli(
    client: Client, gateway_url: str
) -> None:
    for name in ("sdk-web", "sdk-db"):
        await client.request("POST", "/network/v2.0/security-groups", {"security_group": {"name": name}})
    server = await client.servers.create(
        "sdk-grouped", image="aiostack-tiny", flavor="m1.tiny", security_groups=["sdk-web"]
    )
    assert server.raw["security_groups"] == [{"name": "sdk-web"}]
    environment = {
        **os.environ,
        "AIOSTACK_URL": gateway_url,
        "OS_USERNAME": "demo",
        "OS_PASSWORD": DEMO_PASSWORD,
        "OS_PROJECT_NAME": "demo",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", "server", "create", "cli-grouped",
        "--security-group", "sdk-web", "--security-group", "sdk-db", "--wait",
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode == 0, output
    shown = await client.servers.get("cli-grouped")
    assert sorted(group["name"] for group in shown.raw["security_groups"]) == ["sdk-db", "sdk-web"]
    for grouped in (server, shown):
        await client.servers.delete(grouped)


async def test_errors_are_typed_by_status(client: Client, gateway_url: str) -> None:
    with pytest.raises(NotFound, match="no server named 'no-such-vm'"):
        await client.servers.get("no-such-vm")
    with pytest.raises(NotFound) as missing:
        await client.request("GET", f"/compute/v2.1/servers/{uuid.uuid4()}")
    assert missing.value.status == 404 and missing.value.request_id.startswith("req-")
    with pytest.raises(NotFound):
        await client.ws_request("DELETE", f"/compute/v2.1/servers/{uuid.uuid4()}")
    async with Client(gateway_url) as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.login("demo", "wrong password", "demo")
    assert isinstance(refused.value, ApiError) and refused.value.status == 401


async def test_a_failed_build_raises_build_failed_with_the_fault(client: Client, tmp_path: Path) -> None:
    data = tmp_path / "bogus.raw"
    data.write_bytes(b"\0" * 4096)
    await client.images.upload("bogus-bus", data, properties={"hw_disk_bus": "bogus"})
    with pytest.raises(BuildFailed) as failed:
        await client.servers.create("doomed", image="bogus-bus", flavor="m1.tiny")
    assert "Invalid value for attribute 'bus'" in failed.value.message
    assert failed.value.resource.status == "ERROR" and failed.value.fault["code"] == 500
    assert "doomed" in str(failed.value)
    await client.servers.delete(failed.value.resource)


async def test_the_socket_resumes_after_a_disconnect_and_a_watch_misses_nothing(
    client: Client, bus: Bus
) -> None:
    socket = await client.socket()
    event = {"kind": "volume", "project": client.project_id, "type": "volume.available", "ts": 0.0}
    async with client.watch() as watch:
        await socket._ws.close()  # the connection drops; events go on
        for n in range(3):
            body = {**event, "id": f"v{n}", "request_id": None, "state": {"n": n}}
            await bus.publish_event(f"evt.volume.{client.project_id}.v{n}", body)
        for n in range(3):
            assert (await watch.until(f"v{n}", {"volume.available"}, timeout=10)).state == {"n": n}
    assert await client.socket() is socket
    assert (await client.ws_request("GET", "/compute/v2.1/flavors"))["flavors"]


async def test_the_methods_from_before_the_managers_still_work(client: Client) -> None:
    server = await client.create_server("old-style", image="aiostack-tiny", flavor="m1.tiny", wait=True)
    assert server["status"] == "ACTIVE" and server["addresses"]["default"]
    assert [s["id"] for s in await client.servers()] == [server["id"]]
    await client.server_action("old-style", "stop", wait=True)
    assert (await client.server("old-style"))["status"] == "SHUTOFF"
    with pytest.raises(Conflict, match="keeps no console log"):
        await client.console_output("old-style")
    await client.server_action("old-style", "delete", wait=True)
    assert await client.servers() == []


def readme_example() -> str:
    section = README.read_text().split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the Python SDK section has no python example"
    return match.group(1)


async def test_the_readme_example_runs(gateway_url: str, cloud) -> None:
    environment = {
        **os.environ,
        "AIOSTACK_URL": gateway_url,
        "OS_USERNAME": "demo",
        "OS_PASSWORD": DEMO_PASSWORD,
        "OS_PROJECT_NAME": "demo",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        readme_example(),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode == 0, output
    assert "ACTIVE" in output and "instance.active" in output and "instance.deleted" in output
