"""A small async client of the gateway: login, servers, and the event websocket.

async with Client("http://127.0.0.1:8774") as client:
    await client.login("demo", "secret")
    server = await client.create_server("vm1", image="aiostack-tiny", flavor="m1.tiny", wait=True)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp


async def _frames(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        if frame["type"] == "event":
            yield frame["event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One state change, as docs/EVENTS.md describes it; ``seq`` is its place in the event stream."""

    seq: int
    kind: str
    id: str
    project: str
    type: str
    ts: float
    request_id: str | None
    state: dict[str, Any]

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Event:
        event = frame["event"]
        return cls(
            frame["seq"],
            event["kind"],
            event["id"],
            event["project"],
            event["type"],
            event["ts"],
            event.get("request_id"),
            event["state"],
        )


class EventsExpired(Exception):
    """The stream no longer keeps the events after the requested resume point."""

    def __init__(self, requested_seq: int, first_seq: int) -> None:
        super().__init__(f"events after {requested_seq} are gone: the stream now starts at {first_seq}")
        self.requested_seq = requested_seq
        self.first_seq = first_seq


def password_auth(username: str, password: str, project: str | None = None) -> dict[str, Any]:
    """The body of a Keystone v3 password login (``POST /identity/v3/auth/tokens``), domain ``default``."""
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": username, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


class ApiError(Exception):
    """The gateway answered an error: ``status`` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


async def _file_chunks(path: str | os.PathLike[str], size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A file's data, read off the event loop."""
    file = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, size):
            yield chunk
    finally:
        file.close()


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    return await response.json() if response.content_type == "application/json" else None


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(body)


class Client:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.token: str | None = None
        self.project_id: str | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as `async with Client(url) as client`")
        return self._session

    async def login(self, username: str, password: str, project: str | None = None) -> None:
        body = password_auth(username, password, project)
        async with self.session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as response:
            payload = await response.json()
            if response.status != 201:
                raise ApiError(response.status, _error_message(payload))
            self.token = response.headers["X-Subject-Token"]
            self.project_id = payload["token"]["project"]["id"]

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"X-Auth-Token": self.token} if self.token else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            payload = await _json_or_none(response)
            if response.status >= 400:
                raise ApiError(response.status, _error_message(payload))
            return payload

    @asynccontextmanager
    async def subscribe(
        self, kinds: tuple[str, ...] = ("instance",)
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A live subscription: events that happen after this is entered are all in the iterator."""
        async with self.session.ws_connect(
            f"{self.url}/ws?kinds={','.join(kinds)}", headers={"X-Auth-Token": self.token or ""}
        ) as ws:
            yield _frames(ws)

    async def events(
        self,
        kinds: tuple[str, ...] = (),
        *,
        ids: tuple[str, ...] = (),
        types: tuple[str, ...] = (),
        since: int | str = "now",
        until_caught_up: bool = False,
        max_backoff: float = 5.0,
    ) -> AsyncIterator[Event]:
        """The project's events in stream order, resuming by itself after any disconnect.

        ``since``: the last sequence seen (0: all the stream keeps) or ``"now"``. A
        disconnect, a slow-consumer cut-off or a gateway restart is followed by a reconnect
        from the last event delivered, so nothing is missed and nothing repeats. With
        ``until_caught_up`` the iterator ends once it has delivered what was stored when it began.

        :raises EventsExpired: the stream no longer keeps the events after ``since``.
        """
        cursor: int | str = since
        backoff = 0.1
        query = {"kinds": ",".join(kinds), "ids": ",".join(ids), "types": ",".join(types)}
        while True:
            try:
                async with self.session.ws_connect(
                    f"{self.url}/ws",
                    params={**query, "since": str(cursor)},
                    headers={"X-Auth-Token": self.token or ""},
                ) as ws:
                    backoff = 0.1
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = json.loads(message.data)
                        if frame["type"] == "event":
                            cursor = frame["seq"]
                            yield Event.from_frame(frame)
                        elif frame["type"] == "subscribed" and cursor == "now":
                            cursor = frame["since"]
                        elif frame["type"] == "caught_up" and until_caught_up:
                            return
                        elif frame["type"] == "resume_expired":
                            raise EventsExpired(frame["requested_seq"], frame["first_seq"])
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (400, 401, 403, 404):
                    raise ApiError(exc.status, exc.message) from None
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    async def upload_image(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        disk_format: str = "raw",
        container_format: str = "bare",
        visibility: str = "private",
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create an image (Glance v2 extra properties: ``properties``) and upload the file's data."""
        body = {
            "name": name,
            "disk_format": disk_format,
            "container_format": container_format,
            "visibility": visibility,
            **(properties or {}),
        }
        image = await self.request("POST", "/image/v2/images", body)
        headers = {"X-Auth-Token": self.token or "", "Content-Type": "application/octet-stream"}
        async with self.session.put(
            f"{self.url}/image/v2/images/{image['id']}/file", data=_file_chunks(path), headers=headers
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, _error_message(await _json_or_none(response)))
        return await self.request("GET", f"/image/v2/images/{image['id']}")

    async def _find(self, collection_path: str, key: str, name_or_id: str) -> str:
        items = (await self.request("GET", collection_path))[key]
        for item in items:
            if name_or_id in (item["id"], item.get("name")):
                return item["id"]
        raise ApiError(404, f"no {key[:-1]} named {name_or_id!r}")

    async def create_server(
        self,
        name: str,
        *,
        image: str,
        flavor: str,
        network: str | None = None,
        wait: bool = False,
        timeout: float = 300,
    ) -> dict[str, Any]:
        """Boot a server; with ``wait``, return once its ACTIVE (or ERROR) event arrives."""
        body: dict[str, Any] = {
            "name": name,
            "imageRef": await self._find("/image/v2/images?limit=1000", "images", image),
            "flavorRef": await self._find("/compute/v2.1/flavors", "flavors", flavor),
            "networks": [{"uuid": await self._find("/network/v2.0/networks", "networks", network)}]
            if network
            else "auto",
        }
        if not wait:
            return (await self.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]
        return await self._until_event(
            ("instance.active", "instance.error"), timeout, "POST", "/compute/v2.1/servers", {"server": body}
        )

    async def _until_event(
        self,
        types: tuple[str, ...],
        timeout: float,
        method: str,
        path: str,
        body: Any = None,
        server_id: str | None = None,
    ) -> dict[str, Any]:
        """Make a request and wait for one of ``types`` for its server, subscribed before asking."""
        async with self.subscribe(("instance",)) as stream:
            answer = await self.request(method, path, body)
            server_id = server_id or answer["server"]["id"]
            async with asyncio.timeout(timeout):
                async for event in stream:
                    if event["id"] == server_id and event["type"] in types:
                        return event["state"]
        raise ApiError(499, "the event stream closed before the server got there")

    async def servers(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/compute/v2.1/servers/detail"))["servers"]

    async def server(self, server: str) -> dict[str, Any]:
        server_id = await self._find("/compute/v2.1/servers", "servers", server)
        return (await self.request("GET", f"/compute/v2.1/servers/{server_id}"))["server"]

    async def server_action(
        self, server: str, action: str, *, wait: bool = False, timeout: float = 300
    ) -> None:
        """``stop``, ``start``, ``reboot`` (soft), ``reboot-hard`` or ``delete``."""
        server_id = await self._find("/compute/v2.1/servers", "servers", server)
        if action == "delete":
            method, path, body, done = (
                "DELETE",
                f"/compute/v2.1/servers/{server_id}",
                None,
                ("instance.deleted",),
            )
        else:
            body = {
                "stop": {"os-stop": None},
                "start": {"os-start": None},
                "reboot": {"reboot": {"type": "SOFT"}},
                "reboot-hard": {"reboot": {"type": "HARD"}},
            }[action]
            method, path = "POST", f"/compute/v2.1/servers/{server_id}/action"
            done = (
                ("instance.shutoff", "instance.error")
                if action == "stop"
                else ("instance.active", "instance.error")
            )
        if wait:
            await self._until_event(done, timeout, method, path, body, server_id=server_id)
        else:
            await self.request(method, path, body)

    async def console_output(self, server: str, lines: int | None = None) -> str:
        """The server's serial console log (its last ``lines`` lines when given)."""
        server_id = await self._find("/compute/v2.1/servers", "servers", server)
        argument = {} if lines is None else {"length": lines}
        answer = await self.request(
            "POST", f"/compute/v2.1/servers/{server_id}/action", {"os-getConsoleOutput": argument}
        )
        return answer["output"]
