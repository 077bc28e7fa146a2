"""Remote consoles (Nova 2.6's ``POST /servers/{server_id}/remote-consoles``): a guest's serial
console, as a websocket this gateway serves.

The POST answers a URL holding a one-time token (random, kept only in this gateway's memory,
bound to the instance, its host and the caller, good for ``GRANT_LIFETIME`` seconds and one
connection); the websocket at ``CONSOLE_PATH`` redeems it and relays bytes both ways between the
client and the guest's serial port until either side closes, as Nova's serialproxy does: raw
binary frames, or base64 text frames when the client asks for websockify's ``base64``
subprotocol. The relay goes through the node's ``NodeConsole`` facet, acting as the caller the
token was given to (the node checks the instance is its own and of the caller's project).
Only ``serial`` is served: other protocols are 400, as Nova answers a console type it has not
enabled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import WSMsgType, web
from msgspec import Meta

from api.node import CONSOLE_CHUNK, NodeConsole
from bus import AiostackError, Conflict, Context, InvalidRequest, NotFound, Unauthorized, request_scope
from gateway.compute.common import BASE, SERVER_ID, compute
from gateway.http import BUS, REQUEST_ID, context_of, json_response
from gateway.routing import Body, Query, Reply, Request, Routes
from gateway.versions import microversion
from gateway.websocket import Handshake

log = logging.getLogger(__name__)

CONSOLE_PATH = "/compute/serial-console"
GRANT_LIFETIME = 600.0
"""Seconds a console URL may wait for its one connection."""
READ_WAIT = 10.0
"""How long each read of the guest's output waits at the node for something to say."""
SUBPROTOCOLS = ("binary", "base64")
"""websockify's: raw bytes in binary frames, or base64 in text frames."""
MAX_FRAME = 1 << 20

Protocol = Literal["vnc", "spice", "rdp", "serial", "mks"]
ConsoleType = Literal["novnc", "xvpvnc", "rdp-html5", "spice-html5", "serial", "webmks"]
ConsoleToken = Annotated[str, Meta(min_length=1, max_length=128)]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a console token lets its one holder open."""

    instance_uuid: str
    host: str
    context: Context
    expires: float
    """``time.monotonic()`` past which the token is void."""


class Grants:
    """The console tokens this gateway handed out and nobody redeemed yet (Nova's console auth tokens)."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    def issue(self, instance_uuid: str, host: str, context: Context) -> str:
        """A new token for one connection to ``instance_uuid``'s console within ``GRANT_LIFETIME``."""
        self._drop_expired()
        token = secrets.token_urlsafe(32)
        self._grants[token] = Grant(instance_uuid, host, context, time.monotonic() + GRANT_LIFETIME)
        return token

    def redeem(self, token: str) -> Grant | None:
        """The token's grant, which it no longer gives; None for an unknown, used or expired one."""
        self._drop_expired()
        return self._grants.pop(token, None)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for token in [token for token, grant in self._grants.items() if grant.expires <= now]:
            del self._grants[token]


GRANTS = web.AppKey("console_grants", Grants)


class RemoteConsoleAsked(Request):
    """Nova's protocols and types are taken; the document names the one served (serial), and
    the others are refused with Nova's 400."""

    protocol: Protocol
    type: ConsoleType
    __schema_extra__: ClassVar[dict[str, Any]] = {
        "properties": {"protocol": {"enum": ["serial"]}, "type": {"enum": ["serial"]}}
    }


class RemoteConsoleRequest(Request):
    remote_console: RemoteConsoleAsked


class RemoteConsole(Body):
    protocol: str
    type: str
    url: str
    """``ws://HOST/compute/serial-console?token=TOKEN`` (``wss`` behind TLS)."""


class RemoteConsoleBody(Body):
    remote_console: RemoteConsole


class ConsoleQuery(Query):
    token: ConsoleToken


routes = Routes()


@routes.post(
    f"{BASE}/servers/{{server_id}}/remote-consoles",
    "Create a remote console (serial)",
    body=RemoteConsoleRequest,
    replies=[Reply(200, RemoteConsoleBody, "The console's websocket URL, with its one-time token.")],
    errors=(404, 409),
    path_types=SERVER_ID,
)
async def create_remote_console(request: web.Request, body: RemoteConsoleRequest) -> web.Response:
    """Microversion 2.6 and later (404 before). 400: a protocol other than serial, or a type that
    is not its; 404: no such server (or another project's); 409: the server is not ACTIVE, or its
    host's driver has no serial console (libvirt's test driver)."""
    if microversion(request) < (2, 6):
        raise NotFound("The resource could not be found.")
    asked = body.remote_console
    if asked.protocol != "serial":
        raise InvalidRequest(f"Unavailable console type {asked.type}.")
    if asked.type != "serial":
        raise InvalidRequest(f"Invalid console type {asked.type}")
    url = await serial_console_url(request, request.match_info["server_id"])
    return json_response(
        RemoteConsoleBody(remote_console=RemoteConsole(protocol="serial", type="serial", url=url))
    )


async def serial_console_url(request: web.Request, server_id: str) -> str:
    """A URL of the server's serial console with a new one-time token (also ``os-getSerialConsole``'s).

    :raises NotFound: no such server, or another project's.
    :raises Conflict: it is not ACTIVE, or its host's driver has no serial console.
    """
    server = await compute(request).get_instance(instance_uuid=server_id)
    host = server["host"]
    if server["status"] != "ACTIVE" or host is None:
        raise Conflict(f"Instance {server_id} is not ready.")
    await NodeConsole.client(request.app[BUS], host=host).check_console(instance_uuid=server_id)
    token = request.app[GRANTS].issue(server_id, host, context_of(request))
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}{CONSOLE_PATH}?token={token}"


@routes.get(
    CONSOLE_PATH,
    "A server's serial console",
    query=ConsoleQuery,
    headers=Handshake,
    public=True,
    replies=[
        Reply(
            101,
            None,
            "Switched to a WebSocket joined to the guest's serial port: binary frames both ways"
            " (subprotocol binary, the default), or base64 in text frames (subprotocol base64).",
            headers={
                "Upgrade": "websocket",
                "Connection": "upgrade",
                "Sec-WebSocket-Accept": "The handshake's answer to Sec-WebSocket-Key.",
            },
        )
    ],
    errors=(401, 404, 409),
)
async def serial_console(
    request: web.Request, query: ConsoleQuery, headers: Handshake
) -> web.WebSocketResponse:
    """The token of a ``remote-consoles`` answer, once: 401 for an unknown, used or expired one;
    404 and 409 when the console cannot be opened (the server is gone, or stopped)."""
    grant = request.app[GRANTS].redeem(query.token)
    if grant is None:
        raise Unauthorized("The console token is unknown, used or expired.")
    node = NodeConsole.client(request.app[BUS], host=grant.host)
    with request_scope(request[REQUEST_ID], grant.context):
        session = (await node.open_console(instance_uuid=grant.instance_uuid))["session"]
        try:
            ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, heartbeat=30, max_msg_size=MAX_FRAME)
            await ws.prepare(request)
            await _relay(ws, node, session, in_base64=ws.ws_protocol == "base64")
        finally:
            with contextlib.suppress(AiostackError):
                await asyncio.shield(node.close_console(session=session))
    return ws


async def _relay(ws: web.WebSocketResponse, node: NodeConsole, session: str, *, in_base64: bool) -> None:
    """Both directions, until the client or the console ends; then the socket is closed."""
    tasks = [
        asyncio.create_task(_guest_to_client(ws, node, session, in_base64)),
        asyncio.create_task(_client_to_guest(ws, node, session, in_base64)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, AiostackError):
                log.info("serial console relay ended: %s", outcome)
            elif isinstance(outcome, Exception):
                log.error("serial console relay failed: %r", outcome)
        await ws.close()


async def _guest_to_client(
    ws: web.WebSocketResponse, node: NodeConsole, session: str, in_base64: bool
) -> None:
    while True:
        read = await node.read_console(session=session, wait=READ_WAIT)
        if read["data"]:
            if in_base64:
                await ws.send_str(base64.b64encode(read["data"]).decode("ascii"))
            else:
                await ws.send_bytes(read["data"])
        if read["closed"]:
            return


async def _client_to_guest(
    ws: web.WebSocketResponse, node: NodeConsole, session: str, in_base64: bool
) -> None:
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            data = message.data
        elif message.type == WSMsgType.TEXT:
            try:
                data = base64.b64decode(message.data, validate=True) if in_base64 else message.data.encode()
            except binascii.Error:
                return
        else:
            return
        for start in range(0, len(data), CONSOLE_CHUNK):
            await node.write_console(session=session, data=data[start : start + CONSOLE_CHUNK])
