"""Requests on the event websocket: the REST API's routes with the socket's token, beside its events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import gateway.websocket
from tests.helpers import Api


class Socket:
    """A raw /ws connection: sends frames, and reads until the answer it wants, keeping the events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.anonymous_errors: list[dict[str, Any]] = []

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def request(self, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        frame_id = str(uuid.uuid4())
        frame = {"type": "request", "id": frame_id, "method": method, "path": path, "body": body}
        await self.send({**frame, "headers": headers})
        return await self.answer(frame_id)

    async def next_frame(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=30)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame = json.loads(message.data)
        if frame["type"] == "event":
            self.events.append(frame["event"])
        elif frame["type"] in ("response", "error"):
            if frame["id"] is None:
                self.anonymous_errors.append(frame)
            else:
                assert frame["id"] not in self.answers, f"answered twice: {frame}"
                self.answers[frame["id"]] = frame
        return frame

    async def answer(self, frame_id: str) -> dict[str, Any]:
        while frame_id not in self.answers:
            await self.next_frame()
        return self.answers[frame_id]

    async def event(self, resource_id: str, event_type: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event["id"] == resource_id and event["type"] == event_type:
                    return event
            await self.next_frame()


@pytest.fixture
async def socket(api: Api, gateway_url: str, cloud) -> AsyncIterator[Socket]:
    await api.login()
    async with api.session.ws_connect(f"{gateway_url}/ws", headers=api.headers) as ws:
        yield Socket(ws)


async def test_flavors_are_listed_over_the_socket(socket: Socket) -> None:
    answer = await socket.request("GET", "/compute/v2.1/flavors/detail")
    assert answer["type"] == "response" and answer["status"] == 200
    assert "m1.tiny" in {flavor["name"] for flavor in answer["body"]["flavors"]}
    assert answer["headers"]["x-openstack-request-id"].startswith("req-")
    assert answer["headers"]["OpenStack-API-Version"] == "compute 2.1"


async def test_a_server_created_over_the_socket_reports_active_on_it(socket: Socket) -> None:
    images = await socket.request("GET", "/image/v2/images?name=aiostack-tiny")
    body = {"server": {"name": "over-ws", "imageRef": images["body"]["images"][0]["id"], "flavorRef": "1"}}
    created = await socket.request("POST", "/compute/v2.1/servers", body)
    assert created["status"] == 202, created
    server_id = created["body"]["server"]["id"]
    assert created["headers"]["Location"].endswith(f"/compute/v2.1/servers/{server_id}")
    active = await socket.event(server_id, "instance.active")
    assert active["state"]["status"] == "ACTIVE"
    shown = await socket.request(
        "GET", f"/compute/v2.1/servers/{server_id}", **{"OpenStack-API-Version": "compute 2.9"}
    )
    assert shown["headers"]["OpenStack-API-Version"] == "compute 2.9"
    assert shown["body"]["server"]["status"] == "ACTIVE" and shown["body"]["server"]["locked"] is False
    deleted = await socket.request("DELETE", f"/compute/v2.1/servers/{server_id}")
    assert (deleted["status"], deleted["body"]) == (204, None)
    await socket.event(server_id, "instance.deleted")


async def test_every_method_and_the_rest_error_formats_come_back(socket: Socket) -> None:
    missing = await socket.request("GET", f"/compute/v2.1/servers/{uuid.uuid4()}")
    assert missing["status"] == 404
    assert set(missing["body"]) == {"itemNotFound"} and missing["body"]["itemNotFound"]["code"] == 404
    assert missing["headers"]["x-openstack-request-id"].startswith("req-")
    network = await socket.request("POST", "/network/v2.0/networks", {"network": {"name": "ws-net"}})
    assert network["status"] == 201
    path = f"/network/v2.0/networks/{network['body']['network']['id']}"
    renamed = await socket.request("PUT", path, {"network": {"name": "ws-net-2"}})
    assert renamed["body"]["network"]["name"] == "ws-net-2"
    assert (await socket.request("DELETE", path))["status"] == 204
    gone = await socket.request("GET", path)
    assert gone["status"] == 404 and "NeutronError" in gone["body"]
    not_allowed = await socket.request("PATCH", "/compute/v2.1/flavors")
    assert not_allowed["status"] == 405 and "GET" in not_allowed["headers"]["Allow"]


async def test_bad_frames_get_error_frames_and_the_socket_keeps_working(socket: Socket) -> None:
    request = {"type": "request", "method": "GET", "path": "/compute/v2.1/flavors"}
    refused = {
        "no-method": {**request, "method": None},
        "bad-method": {**request, "method": "TRACE"},
        "relative": {**request, "path": "compute/v2.1/flavors"},
        "socket": {**request, "path": "/ws"},
        "socket-disguised": {**request, "path": "/compute/../%77s?since=0"},
        "own-token": {**request, "headers": {"x-auth-token": "someone-elses"}},
        "bad-headers": {**request, "headers": {"OpenStack-API-Version": 2}},
        "not-a-request": {"type": "hello"},
    }
    for frame_id, frame in refused.items():
        await socket.send({**frame, "id": frame_id})
    for frame_id in refused:
        answer = await socket.answer(frame_id)
        assert answer["type"] == "error" and answer["message"], answer
    for frame in ("not json", json.dumps(request), "[1, 2]"):
        await socket.send(frame)
    await socket.ws.send_bytes(b"\x00\x01")
    while len(socket.anonymous_errors) < 4:
        await socket.next_frame()
    assert all(error["type"] == "error" for error in socket.anonymous_errors)
    assert (await socket.request("GET", "/compute/v2.1/flavors"))["status"] == 200


async def test_a_revoked_token_gets_401_on_later_request_frames(api: Api, socket: Socket) -> None:
    assert (await socket.request("GET", "/compute/v2.1/flavors"))["status"] == 200
    token = api.headers["X-Auth-Token"]
    revoked = await socket.request("DELETE", "/identity/v3/auth/tokens", **{"X-Subject-Token": token})
    assert revoked["status"] == 204, revoked
    refused = await socket.request("GET", "/compute/v2.1/flavors")
    assert refused["status"] == 401 and refused["body"]["unauthorized"]["code"] == 401


async def test_requests_in_flight_are_bounded(socket: Socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.websocket, "REQUEST_LIMIT", 2)
    ids = [f"burst-{n}" for n in range(20)]
    for frame_id in ids:
        await socket.send(
            {"type": "request", "id": frame_id, "method": "GET", "path": "/compute/v2.1/flavors"}
        )
    statuses = [(await socket.answer(frame_id))["status"] for frame_id in ids]
    assert set(statuses) == {200, 429} and statuses[:2] == [200, 200]
    too_many = next(socket.answers[i] for i in ids if socket.answers[i]["status"] == 429)
    assert too_many["body"]["overLimit"]["code"] == 429


async def test_a_socket_whose_token_is_revoked_is_closed(
    api: Api, gateway_url: str, cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.websocket, "TOKEN_RECHECK", 0.2)
    await api.login()
    token = api.headers["X-Auth-Token"]
    async with api.session.ws_connect(f"{gateway_url}/ws", headers=api.headers) as ws:
        socket = Socket(ws)
        assert (await socket.next_frame())["type"] == "subscribed"
        await api.delete("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        frames = []
        async with asyncio.timeout(10):
            while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(message.data)["type"])
        assert "token_invalid" in frames and ws.close_code == gateway.websocket.CLOSE_TOKEN_INVALID
