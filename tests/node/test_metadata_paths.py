"""The metadata service's paths (``node/metadata.py``), served on loopback, asked by aiohttp:
OpenStack's and EC2's, for the guest the lookup finds from the request's source address, 404 for
any other source; and what the node keeps of its lookups."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bus import NotFound
from node.metadata import EC2_VERSIONS, OPENSTACK_VERSIONS, Guest, GuestFinder, MetadataHandler, start_server

UUID = "6f1b3a4e-0c1d-4e2f-9a8b-7c6d5e4f3a2b"
NETWORK = "net-1"
SOURCE = "127.0.0.1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5x mine"


def instance() -> dict[str, Any]:
    return {
        "id": UUID,
        "name": "Web 1",
        "project_id": "p-demo",
        "metadata": {"role": "web"},
        "flavor": {"name": "m1.tiny"},
    }


def port() -> dict[str, Any]:
    return {
        "id": "port-1",
        "network_id": NETWORK,
        "device_id": UUID,
        "mac_address": "fa:16:3e:00:00:01",
        "fixed_ips": [{"subnet_id": "subnet-1", "ip_address": SOURCE}],
    }


def guest(user_data: bytes | None = b"#!/bin/sh\necho hi\n", keys: bool = True) -> Guest:
    metadata: Any = {
        "instance": instance(),
        "user_data": base64.b64encode(user_data).decode() if user_data is not None else None,
        "public_keys": {"mine": KEY} if keys else {},
    }
    return Guest(metadata, [port()], SOURCE)  # type: ignore[list-item]


Get = Callable[[str], Awaitable[tuple[int, str, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Guest | None], Awaitable[Get]]]:
    servers: list[asyncio.Server] = []
    async with aiohttp.ClientSession() as session:

        async def start(found: Guest | None) -> Get:
            async def lookup(network_id: str, address: str) -> Guest | None:
                return found if (network_id, address) == (NETWORK, SOURCE) else None

            sock = socket.create_server((SOURCE, 0))
            server = await start_server(NETWORK, lookup, sock)
            servers.append(server)
            port = sock.getsockname()[1]

            async def get(path: str) -> tuple[int, str, str]:
                async with session.get(f"http://{SOURCE}:{port}{path}") as response:
                    return response.status, response.content_type, await response.text()

            return get

        yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_openstack_paths_answer_the_guest_about_itself_without_a_password(serve: Any) -> None:
    get = await serve(guest())
    assert (await get("/openstack"))[2].split("\n") == list(OPENSTACK_VERSIONS)
    assert (await get("/openstack/"))[2].split("\n")[-1] == "latest"
    listed = (await get("/openstack/latest/"))[2].split("\n")
    assert listed == [
        "meta_data.json",
        "network_data.json",
        "user_data",
        "vendor_data.json",
        "vendor_data2.json",
    ]
    assert (await get("/openstack/2012-08-10"))[2].split("\n") == ["meta_data.json", "user_data"]
    for version in ("latest", "2012-08-10", "2016-06-30"):
        status, content_type, body = await get(f"/openstack/{version}/meta_data.json")
        meta = json.loads(body)
        assert (status, content_type) == (200, "application/json")
        assert (meta["uuid"], meta["name"], meta["hostname"], meta["meta"]) == (
            UUID,
            "Web 1",
            "web-1",
            {"role": "web"},
        )
        assert meta["public_keys"] == {"mine": KEY} and "admin_pass" not in meta
    network = json.loads((await get("/openstack/latest/network_data.json"))[2])
    assert network["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:01"
    assert network["networks"][0]["ip_address"] == SOURCE
    assert await get("/openstack/latest/user_data") == (
        200,
        "application/octet-stream",
        "#!/bin/sh\necho hi\n",
    )
    assert json.loads((await get("/openstack/latest/vendor_data.json"))[2]) == {}
    for missing in (
        "/openstack/2011-01-01/meta_data.json",
        "/openstack/latest/nothing",
        "/openstack/2012-08-10/network_data.json",
    ):
        assert (await get(missing))[0] == 404


async def test_ec2_paths_answer_the_guest_about_itself(serve: Any) -> None:
    get = await serve(guest())
    assert (await get("/"))[2].split("\n") == list(EC2_VERSIONS)
    assert (await get("/latest"))[2].split("\n") == ["meta-data/", "user-data"]
    listed = (await get("/latest/meta-data/"))[2].split("\n")
    assert {"instance-id", "hostname", "local-ipv4", "public-keys/", "placement/"} <= set(listed)
    assert (await get("/latest/meta-data/instance-id"))[2] == UUID
    assert (await get("/2009-04-04/meta-data/hostname"))[2] == "web-1"
    assert (await get("/latest/meta-data/local-ipv4"))[2] == SOURCE
    assert (await get("/latest/meta-data/placement/availability-zone"))[2] == "nova"
    assert (await get("/latest/meta-data/public-keys/"))[2] == "0=mine"
    assert (await get("/latest/meta-data/public-keys/0/"))[2] == "openssh-key"
    assert (await get("/latest/meta-data/public-keys/0/openssh-key"))[2] == KEY
    assert (await get("/latest/user-data"))[2] == "#!/bin/sh\necho hi\n"
    for missing in (
        "/1999-01-01/meta-data/",
        "/latest/meta-data/nothing",
        "/latest/meta-data/public-keys/0/_name",
    ):
        assert (await get(missing))[0] == 404


async def test_a_guest_without_user_data_or_keys_gets_404_for_them(serve: Any) -> None:
    get = await serve(guest(user_data=None, keys=False))
    assert (await get("/openstack/latest/user_data"))[0] == 404
    assert (await get("/latest/user-data"))[0] == 404
    assert (await get("/latest/meta-data/public-keys/"))[0] == 404
    assert "user_data" not in (await get("/openstack/latest"))[2].split("\n")
    assert json.loads((await get("/openstack/latest/meta_data.json"))[2])["public_keys"] == {}


async def test_a_source_that_is_no_guest_is_answered_404_everywhere(serve: Any) -> None:
    get = await serve(None)
    for path in ("/", "/openstack", "/openstack/latest/meta_data.json", "/latest/meta-data/instance-id"):
        assert (await get(path))[0] == 404


class CountingNet:
    def __init__(self) -> None:
        self.asked = 0

    async def instance_ports_at(self, *, network_id: str, ip_address: str) -> list[Any]:
        self.asked += 1
        if (network_id, ip_address) != (NETWORK, SOURCE):
            raise NotFound("no such port")
        return [port()]


class Conductor:
    async def get_instance_metadata(self, *, instance_uuid: str) -> Any:
        return {"instance": instance(), "user_data": None, "public_keys": {}}


async def test_the_finder_keeps_its_answers_until_the_network_changes() -> None:
    net = CountingNet()
    finder = GuestFinder(net, Conductor(), ttl=3600.0)  # type: ignore[arg-type]
    found = await finder(NETWORK, SOURCE)
    assert found is not None and found.metadata["instance"]["id"] == UUID and found.address == SOURCE
    assert await finder(NETWORK, SOURCE) == found and net.asked == 1
    assert await finder(NETWORK, "127.0.0.2") is None and await finder(NETWORK, "127.0.0.2") is None
    assert net.asked == 2
    finder.forget(NETWORK)  # a port came or went: an address may now be another guest's
    assert await finder(NETWORK, SOURCE) == found and net.asked == 3


async def test_only_gets_are_answered_and_a_bad_request_line_is_refused() -> None:
    handler = MetadataHandler(NETWORK, lambda network_id, address: asyncio.sleep(0, guest()))

    async def status_and_body(head: bytes) -> tuple[int, bytes]:
        _method, status, body, _content_type = await handler.respond(head, SOURCE)
        return status, body

    assert (await status_and_body(b"POST /latest HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await status_and_body(b"GET /latest\r\n\r\n"))[0] == 400
    head = b"HEAD /latest/meta-data/instance-id HTTP/1.0\r\n\r\n"
    assert await status_and_body(head) == (200, UUID.encode())
    assert (await status_and_body(b"GET http://169.254.169.254/openstack?x=1 HTTP/1.1\r\n\r\n"))[0] == 200
