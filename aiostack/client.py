"""The async SDK: ``Client``, its typed resource managers, and the gateway's websocket.

async with Client("http://127.0.0.1:8774") as client:
    await client.login("demo", "secret", "demo")
    server = await client.servers.create("vm1", image="aiostack-tiny", flavor="m1.tiny")
    print(server.status, server.ips)

``client.servers``, ``client.images``, ``client.networks``, ``client.volumes`` and
``client.flavors`` (aiostack/sdk.py) return frozen dataclasses. Requests go over REST,
except those that wait for an event: they go over the client's one websocket (opened on
first use, resumed by itself after a disconnect) and return when the event arrives on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp

from aiostack.sdk import (
    ApiError,
    BadRequest,
    BuildFailed,
    Event,
    EventsExpired,
    FlavorManager,
    ImageManager,
    KeypairManager,
    NetworkManager,
    OnEvent,
    ServerManager,
    VolumeManager,
    Watch,
    api_error,
    error_message,
)

__all__ = ["Client", "Socket", "password_auth"]

SOCKET_KINDS = "instance,volume"  # the events a client's own socket carries
MAX_BACKOFF = 5.0
RECONNECT_WAIT = 30.0  # how long a request waits for the socket to come back


async def _frames(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        if frame["type"] == "event":
            yield frame["event"]


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


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    return await response.json() if response.content_type == "application/json" else None


class Socket:
    """The client's websocket: request frames answered by id, and the project's instance and volume
    events handed to every open ``Watch``. After a disconnect it reconnects and resumes after the
    last event it got, so a watch misses nothing; requests in flight then fail with ConnectionError.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._url = url
        self._token = token
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._watches: set[Watch] = set()
        self._ids = itertools.count(1)
        self._cursor: int | str = "now"
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    async def open(self) -> None:
        """Connect. :raises ApiError: the gateway refused the token."""
        self._ws = await self._connect()
        self._connected.set()
        self._reader = asyncio.create_task(self._run(self._ws))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        self._fail(ConnectionError("the client closed its socket"))

    @property
    def closed(self) -> bool:
        return self._failure is not None

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        """A REST request made on the socket: the answer's JSON body. :raises ApiError:"""
        try:
            async with asyncio.timeout(RECONNECT_WAIT):
                await self._connected.wait()
        except TimeoutError:
            raise ConnectionError("the gateway's socket closed and could not be opened again") from None
        if self._failure is not None or self._ws is None:
            raise ConnectionError("the gateway's socket is closed") from self._failure
        frame_id = f"r{next(self._ids)}"
        answer = self._pending[frame_id] = asyncio.get_running_loop().create_future()
        frame = {"type": "request", "id": frame_id, "method": method, "path": path, "body": body}
        try:
            await self._ws.send_json({**frame, "headers": headers or {}})
            response = await answer
        finally:
            self._pending.pop(frame_id, None)
        if response["type"] == "error":
            raise BadRequest(400, response["message"])
        if response["status"] >= 400:
            request_id = response["headers"].get("x-openstack-request-id")
            raise api_error(response["status"], error_message(response["body"]), request_id)
        return response["body"]

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[Watch]:
        """Every event that arrives while the block runs (those caused by requests made in it too)."""
        watch = Watch()
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._session.ws_connect(
                f"{self._url}/ws",
                params={"kinds": SOCKET_KINDS, "since": str(self._cursor)},
                headers={"X-Auth-Token": self._token},
                heartbeat=30,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise api_error(exc.status, exc.message) from None

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read frames; after a disconnect, fail what is in flight and resume where the stream was."""
        try:
            while True:
                with suppress(aiohttp.ClientError, OSError):
                    await self._read(ws)
                self._connected.clear()
                self._fail_pending(ConnectionError("the gateway's socket closed before it answered"))
                ws = self._ws = await self._reconnect()
                self._connected.set()
        except Exception as exc:  # a token no longer taken, or a broken frame: nothing more will come
            self._fail(exc)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame["type"] in ("response", "error"):
                answer = self._pending.get(frame.get("id"))
                if answer is not None and not answer.done():
                    answer.set_result(frame)
            elif frame["type"] == "event":
                self._cursor = frame["seq"]
                event = Event.from_frame(frame)
                for watch in self._watches:
                    watch.put(event)
            elif frame["type"] == "subscribed" and self._cursor == "now":
                self._cursor = frame["since"]
            elif frame["type"] == "resume_expired":
                expired = EventsExpired(frame["requested_seq"], frame["first_seq"])
                for watch in self._watches:
                    watch.put(expired)
                self._cursor = "now"

    async def _reconnect(self) -> aiohttp.ClientWebSocketResponse:
        """Connect again, backing off. :raises ApiError: the token is refused (401, 403)."""
        backoff = 0.1
        while True:
            try:
                return await self._connect()
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if isinstance(exc, ApiError) and exc.status in (401, 403):
                    raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _fail_pending(self, error: BaseException) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)

    def _fail(self, error: BaseException) -> None:
        """The socket is done: requests and watches get ``error``, later requests a ConnectionError."""
        if self._failure is None:
            self._failure = error
            self._fail_pending(error)
            for watch in self._watches:
                watch.put(error)
        self._connected.set()


class WebsocketConsole:
    """A server's serial console on its websocket (``aiostack.sdk.SerialConsole``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def read(self) -> bytes:
        """The next bytes the guest wrote; ``b""`` once the console is closed."""
        while True:
            message = await self._ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                return bytes(message.data)
            if message.type == aiohttp.WSMsgType.TEXT:
                return str(message.data).encode()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return b""

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)


class Client:
    """The SDK's entry point: ``async with Client(url) as client: await client.login(...)``.

    An ``https://`` gateway's certificate is checked against the system's CAs, or against
    ``ca_file`` alone (a PEM file: the CA ``aiostack up --tls-cert generate`` made, clouds.yaml's
    ``cacert``)."""

    def __init__(self, url: str, *, ca_file: str | os.PathLike[str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.ca_file = ca_file
        self.token: str | None = None
        self.project_id: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: Socket | None = None
        self._socket_lock = asyncio.Lock()
        self.servers = ServerManager(self)
        self.images = ImageManager(self)
        self.networks = NetworkManager(self)
        self.volumes = VolumeManager(self)
        self.flavors = FlavorManager(self)
        self.keypairs = KeypairManager(self)

    async def __aenter__(self) -> Client:
        trusted = ssl.create_default_context(cafile=self.ca_file) if self.ca_file is not None else True
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close_socket()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as `async with Client(url) as client`")
        return self._session

    async def login(self, username: str, password: str, project: str | None = None) -> None:
        """Get a token (scoped to ``project`` when given); the socket, if open, is reopened with it."""
        body = password_auth(username, password, project)
        async with self.session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as response:
            payload = await _json_or_none(response)
            if response.status != 201:
                request_id = response.headers.get("x-openstack-request-id")
                raise api_error(response.status, error_message(payload), request_id)
            self.token = response.headers["X-Subject-Token"]
            self.project_id = payload["token"].get("project", {}).get("id")
        await self._close_socket()

    async def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """A REST request (with more ``headers`` when given): the answer's JSON body (None when it
        has none). :raises ApiError:"""
        headers = {**(headers or {}), **({"X-Auth-Token": self.token} if self.token else {})}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            payload = await _json_or_none(response)
            if response.status >= 400:
                request_id = response.headers.get("x-openstack-request-id")
                raise api_error(response.status, error_message(payload), request_id)
            return payload

    async def ws_request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        """A REST request made on the client's websocket. :raises ApiError:"""
        return await (await self.socket()).request(method, path, body, headers)

    async def upload(self, path: str, data: AsyncIterator[bytes]) -> None:
        """PUT a stream of bytes (``application/octet-stream``), e.g. an image's data. :raises ApiError:"""
        headers = {"X-Auth-Token": self.token or "", "Content-Type": "application/octet-stream"}
        async with self.session.put(self.url + path, data=data, headers=headers) as response:
            if response.status >= 400:
                raise api_error(
                    response.status,
                    error_message(await _json_or_none(response)),
                    response.headers.get("x-openstack-request-id"),
                )

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[Watch]:
        """The instance and volume events that arrive on the client's socket while the block runs."""
        async with (await self.socket()).watch() as watch:
            yield watch

    @asynccontextmanager
    async def connect_console(self, url: str) -> AsyncIterator[WebsocketConsole]:
        """A serial console's websocket (a ``remote-consoles`` URL). :raises ApiError: refused."""
        try:
            async with self.session.ws_connect(url, protocols=("binary",), max_msg_size=0) as ws:
                yield WebsocketConsole(ws)
        except aiohttp.WSServerHandshakeError as exc:
            raise api_error(exc.status, f"the console refused the connection: {exc.message}") from None

    async def socket(self) -> Socket:
        """The client's websocket, opened on first use (and again after a login)."""
        async with self._socket_lock:
            if self._socket is None or self._socket.closed:
                socket = Socket(self.session, self.url, self.token or "")
                await socket.open()
                self._socket = socket
            return self._socket

    async def _close_socket(self) -> None:
        async with self._socket_lock:
            if self._socket is not None:
                await self._socket.close()
                self._socket = None

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
        max_backoff: float = MAX_BACKOFF,
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
                    raise api_error(exc.status, exc.message) from None
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    # -- the methods from before the managers (the CLI and scripts use them): REST-shaped dicts --

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
        """``images.upload``, as the image's REST body."""
        image = await self.images.upload(
            name,
            path,
            disk_format=disk_format,
            container_format=container_format,
            visibility=visibility,
            properties=properties,
        )
        return image.raw

    async def create_server(
        self,
        name: str,
        *,
        image: str | None = None,
        flavor: str,
        network: str | None = None,
        volume: str | None = None,
        key_name: str | None = None,
        user_data: bytes | None = None,
        security_groups: list[str] | None = None,
        description: str | None = None,
        wait: bool = False,
        timeout: float = 300,
        on_event: OnEvent | None = None,
    ) -> dict[str, Any]:
        """``servers.create`` as the server's REST body; a failed build is returned (status ERROR)."""
        try:
            server = await self.servers.create(
                name,
                image=image,
                flavor=flavor,
                network=network,
                boot_volume=volume,
                key_name=key_name,
                user_data=user_data,
                security_groups=security_groups,
                description=description,
                wait=wait,
                timeout=timeout,
                on_event=on_event,
            )
        except BuildFailed as exc:
            return exc.resource.raw
        return server.raw

    async def server(self, server: str) -> dict[str, Any]:
        """``servers.get`` as the server's REST body."""
        return (await self.servers.get(server)).raw

    async def server_action(
        self,
        server: str,
        action: str,
        *,
        wait: bool = False,
        timeout: float = 300,
        on_event: OnEvent | None = None,
    ) -> None:
        """``stop``, ``start``, ``reboot`` (soft), ``reboot-hard`` or ``delete``; with ``wait``,
        ``on_event`` is called with each of the server's events until the change is done."""
        servers = self.servers
        waiting: dict[str, Any] = {"wait": wait, "timeout": timeout, "on_event": on_event}
        if action == "delete":
            await servers.delete(server, **waiting)
        elif action == "stop":
            await servers.stop(server, **waiting)
        elif action == "start":
            await servers.start(server, **waiting)
        elif action in ("reboot", "reboot-hard"):
            await servers.reboot(server, hard=action == "reboot-hard", **waiting)
        else:
            raise ValueError(f"unknown server action {action!r}")

    async def console_output(self, server: str, lines: int | None = None) -> str:
        """The server's serial console log (its last ``lines`` lines when given)."""
        return await self.servers.console_output(server, lines)
