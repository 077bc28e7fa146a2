"""The event websocket: the caller's project's events, live, resumable, and never lost; and
the REST API's requests on the same connection.

``GET /ws?kinds=instance,volume&ids=...&types=instance.active&since=SEQ`` with
``X-Auth-Token`` (or ``?token=``, or, as a browser sends it, the subprotocols
``aiostack.events, aiostack.token.<token>`` in ``Sec-WebSocket-Protocol``: the socket then
answers ``aiostack.events``), a WebSocket handshake. ``since`` is the last sequence the
client saw (``now`` by default, ``0`` for everything the stream keeps); ``since_time`` (ISO
8601) starts at a time instead. The route is on the registry (``gateway.routing``) like every
other: its query and the handshake's headers are checked before the socket opens, so a request
that does not upgrade (no handshake, a bad query) is answered 400 in the REST API's error
format, and ``/openapi.json`` documents it. Frames (JSON text), documented in docs/EVENTS.md:

* ``{"type": "subscribed", "since": S, "first_seq": F, "last_seq": L}``
* ``{"type": "event", "seq": N, "subject": ..., "event": {...}}`` in stream order
* ``{"type": "caught_up", "seq": N}`` once the replay asked for with ``since`` is done
* ``{"type": "slow_consumer", "resume_seq": N}`` then close 4008: the client fell behind
* ``{"type": "resume_expired", "requested_seq": S, "first_seq": F}`` then close 4010
* ``{"type": "response", "id": ..., "status": N, "headers": {...}, "body": ...}`` answers a
  request frame ``{"type": "request", "id": ..., "method": ..., "path": ..., "body": ...,
  "headers": {...}}``; ``{"type": "error", "id": ..., "message": ...}`` refuses a bad frame

One ordered JetStream consumer per gateway feeds a ring of recent events and every live
socket; each event's frame is made once, and its WebSocket frame's bytes too: a live socket that
keeps up (nothing queued for it, its transport's buffer below ``DIRECT_WRITE_LIMIT``, no
compression negotiated) gets those very bytes written to its transport at once, so one event
reaching a thousand sockets costs a thousand writes, not a thousand tasks woken to encode it
again. A resuming socket replays from the ring, or first from the stream itself when the ring
does not reach back far enough. Every socket has a bounded queue and its own sender for what
cannot be written at once: a client that falls behind is cut off with its resume point, so server
memory stays bounded and other clients lose nothing.

Request frames are answered by the gateway's own routes: each one is made over loopback
HTTP to the address the socket came in on, with the socket's token (validated again each
time, so a revoked token stops working), so every route, policy, microversion and error
format is the REST API's. At most ``REQUEST_LIMIT`` run at once per socket; more answer 429.

One user holds at most ``Limits.sockets_per_user`` sockets at once (32 by default): one more is
refused 429 before it costs anything (no stream lookup, no subscriber), so a user opening
hundreds cannot slow the gateway down for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiohttp
import msgspec
import nats.errors
from aiohttp import WSCloseCode, WSMsgType, web
from msgspec import UNSET, Meta, UnsetType
from multidict import CIMultiDict
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from yarl import URL

from api.fields import Id
from bus import BadMessage, Bus, Unauthorized, decode
from gateway.http import BUS, EVENTS_PROTOCOL, LIMITS, TOKENS, context_of, error_body, service_of
from gateway.metrics import EVENT_LAG, EVENT_PENDING
from gateway.routing import Headers, Query, Reply, Routes, TimeParameter, given, moment

log = logging.getLogger(__name__)

RING_SIZE = 4096
QUEUE_LIMIT = 1024
DIRECT_WRITE_LIMIT = 2**16
"""Bytes a socket's transport may hold unsent and still take an event's frame at once (aiohttp's
own limit before a send waits for the buffer to drain); above it, events queue for its sender."""
CLOSE_SLOW_CONSUMER = 4008
CLOSE_RESUME_EXPIRED = 4010
CLOSE_TOKEN_INVALID = 4001
TOKEN_RECHECK = 5.0  # seconds between checks that the socket's token still holds (revoked, expired)
HUB_START_PATIENCE = 60.0
"""Seconds the gateway waits at start for the event stream: right after a server of a NATS
cluster restarted, JetStream may have no leader for a few seconds."""
HUB = web.AppKey("event_hub", "EventHub")
EVENT_QUEUE_LIMIT = web.AppKey("event_queue_limit", int)
SOCKETS = web.AppKey("event_sockets", weakref.WeakSet)
LOOPBACK = web.AppKey("loopback_session", aiohttp.ClientSession)

PROTOCOLS_LENGTH = 4096
"""The longest ``Sec-WebSocket-Protocol`` taken (a token is a few hundred characters; aiohttp refuses
a header field over 8190 bytes before any route sees it)."""
REQUEST_LIMIT = 64  # request frames in flight per socket
REQUEST_TIMEOUT = 300.0
LOOPBACK_CONNECTIONS = 256
REQUEST_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))
# what a request frame may not set: the socket's token and Host, and the HTTP transport's own
FORBIDDEN_HEADERS = frozenset(
    (
        "x-auth-token", "host", "content-length", "transfer-encoding", "connection", "upgrade",
        "keep-alive", "te", "trailer", "expect", "cookie",
    )
)  # fmt: skip
RESPONSE_HEADERS = (
    "x-openstack-request-id",
    "x-compute-request-id",
    "Location",
    "OpenStack-API-Version",
    "X-OpenStack-Nova-API-Version",
    "X-Subject-Token",
    "Allow",
    "Content-Type",
)


class SocketCounts:
    """How many event sockets each user holds open (in this gateway)."""

    def __init__(self) -> None:
        self.held: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, user: str, limit: int) -> Iterator[None]:
        """Hold one of ``user``'s ``limit`` sockets while the block runs.

        :raises web.HTTPTooManyRequests: the user holds ``limit`` already (429).
        """
        if self.held[user] >= limit:
            log.debug("event socket refused: user %s holds %d", user, limit)
            raise web.HTTPTooManyRequests(
                text=f"At most {limit} event sockets are open at once for one user; close one first."
            )
        self.held[user] += 1
        try:
            yield
        finally:
            self.held[user] -= 1
            if not self.held[user]:
                del self.held[user]


SOCKET_COUNTS = web.AppKey("event_socket_counts", SocketCounts)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the gateway keeps it: what filters look at, and its frame, made once (as text,
    and as the bytes of an uncompressed WebSocket text frame)."""

    seq: int
    kind: str
    id: str
    project: str
    type: str
    frame: str
    wire: bytes


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2): what a server sends."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 2**16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a socket gets: its project's (all for an admin), narrowed by kind, id, type."""

    project: str | None
    kinds: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, stored: StoredEvent) -> bool:
        return (
            (self.project is None or stored.project == self.project)
            and (not self.kinds or stored.kind in self.kinds)
            and (not self.ids or stored.id in self.ids)
            and (not self.types or stored.type in self.types)
        )

    def stream_subject(self, prefix: str) -> str:
        """The narrowest stream subject that holds every event this filter can match."""
        kind = next(iter(self.kinds)) if len(self.kinds) == 1 else "*"
        if self.project is None:
            return f"{prefix}.evt.{kind}.>" if kind != "*" else f"{prefix}.evt.>"
        return f"{prefix}.evt.{kind}.{self.project}.>"


def stored_event(msg: Msg) -> StoredEvent | None:
    try:
        body = decode(msg.data).body
    except BadMessage as exc:
        log.warning("gateway: undecodable event on %s: %s", msg.subject, exc)
        return None
    if not isinstance(body, dict):
        return None
    seq = msg.metadata.sequence.stream
    frame = json.dumps({"type": "event", "seq": seq, "subject": msg.subject, "event": body})
    return StoredEvent(
        seq,
        str(body.get("kind")),
        str(body.get("id")),
        str(body.get("project")),
        str(body.get("type")),
        frame,
        text_frame(frame.encode()),
    )


@dataclass(frozen=True, slots=True)
class DirectWrites:
    """A live socket's transport, for frames written from the hub itself (no compression negotiated)."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport

    def write(self, stored: StoredEvent) -> bool:
        """Write the event's frame if the socket is open and keeps up; False: it must be queued."""
        if (
            self.ws.closed
            or self.transport.is_closing()
            or self.transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT
        ):
            return False
        self.transport.write(stored.wire)
        return True


@dataclass(eq=False)
class Subscriber:
    filter: EventFilter
    queue_limit: int = QUEUE_LIMIT
    queue: deque[StoredEvent] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: int = 0
    catching_up: bool = True
    overflowed: bool = False
    sender: asyncio.Task[None] | None = None
    direct: DirectWrites | None = None
    """Set once everything before live events is sent: events may then be written at once."""

    def offer(self, stored: StoredEvent) -> None:
        """Called by the hub for every live event: written at once when nothing is queued before it
        and the socket keeps up, else queued for the sender; a full queue stops the sender at once."""
        if self.catching_up or self.overflowed or not self.filter.matches(stored):
            return
        direct = self.direct
        if not self.queue and direct is not None and stored.seq > self.cursor and direct.write(stored):
            self.cursor = stored.seq
            return
        if len(self.queue) < self.queue_limit:
            self.queue.append(stored)
            self.wakeup.set()
            return
        self.overflowed = True
        self.queue.clear()
        if self.sender is not None:
            self.sender.cancel()


class EventHub:
    """One ordered consumer on the event stream, a ring of recent events, and the live sockets.

    Each event received is measured: its lag (from the stream storing it) and the events the
    consumer has still to receive after it (``gateway.metrics``)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ring: deque[StoredEvent] = deque(maxlen=RING_SIZE)
        self.subscribers: set[Subscriber] = set()
        self.started_after = 0

    async def start(self) -> None:
        """Follow the event stream from its end; ask again (``HUB_START_PATIENCE``) while JetStream
        does not answer."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + HUB_START_PATIENCE, 0.2
        while True:
            try:
                return await self._follow()
            except nats.errors.Error as exc:
                if loop.time() + pause > deadline:
                    raise
                log.warning("the event stream does not answer yet (%s); asking again", type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _follow(self) -> None:
        info = await self.bus.ensure_event_stream()
        self.started_after = info.state.last_seq
        self._subscription = await self.bus.nc.jetstream().subscribe(
            self.bus.subject("evt.>"),
            cb=self._on_message,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.started_after + 1
            ),
            pending_msgs_limit=1_000_000,
        )

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        metadata = msg.metadata
        EVENT_LAG.observe(max(0.0, time.time() - metadata.timestamp.timestamp()))
        EVENT_PENDING.set(metadata.num_pending)
        stored = stored_event(msg)
        if stored is None:
            return
        self.ring.append(stored)
        for subscriber in self.subscribers:
            subscriber.offer(stored)

    @property
    def ring_covers_from(self) -> int:
        """The ring holds every event from this sequence on (it starts where the hub started)."""
        return self.ring[0].seq if len(self.ring) == self.ring.maxlen else self.started_after + 1

    def ring_after(self, seq: int) -> list[StoredEvent] | None:
        """Every event after ``seq`` from the ring, or None when the ring does not reach back to it."""
        if seq + 1 < self.ring_covers_from:
            return None
        return [stored for stored in self.ring if stored.seq > seq]

    async def bounds(self) -> tuple[int, int]:
        """The first and last sequence the stream keeps."""
        state = (await self.bus.ensure_event_stream()).state
        return state.first_seq, state.last_seq

    async def stored_after(
        self, seq: int, event_filter: EventFilter, until: int
    ) -> AsyncIterator[StoredEvent]:
        """Events after ``seq`` up to ``until`` read from the stream itself (an ephemeral consumer)."""
        if seq >= until:
            return
        subscription = await self.bus.nc.jetstream().subscribe(
            event_filter.stream_subject(self.bus.prefix),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1),
        )
        try:
            if await _nothing_to_deliver(subscription):
                return
            while True:
                msg = await subscription.next_msg(timeout=10)
                stored = stored_event(msg)
                if stored is not None:
                    yield stored
                if msg.metadata.sequence.stream >= until or msg.metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def first_after_time(self, since_time: datetime) -> int:
        """The sequence just before the first event at or after ``since_time``."""
        subscription = await self.bus.nc.jetstream().subscribe(
            self.bus.subject("evt.>"),
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=since_time.isoformat().replace("+00:00", "Z"),
            ),
        )
        try:
            if await _nothing_to_deliver(subscription):
                return (await self.bounds())[1]
            msg = await subscription.next_msg(timeout=10)
            return msg.metadata.sequence.stream - 1
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


async def _nothing_to_deliver(subscription: Any) -> bool:
    """A new push consumer that has nothing for us. ``num_pending`` alone is not enough: the
    server may already have pushed every message into our subscription before we ask."""
    info = await subscription.consumer_info()
    return info.num_pending == 0 and info.delivered.consumer_seq == 0


async def hub_context(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[BUS])
    await hub.start()
    app[HUB] = hub
    yield
    await hub.stop()


def _items(listed: str | UnsetType) -> frozenset[str]:
    """The items of a comma-separated list (none when absent)."""
    return (
        frozenset(item for item in (listed or "").split(",") if item) if listed is not UNSET else frozenset()
    )


async def _start_seq(query: EventQuery, hub: EventHub) -> int | None:
    """The last sequence the client saw, from ``since``/``since_time``; None for "now"."""
    if query.since_time is not UNSET:
        since_time = moment(query.since_time)
        if since_time >= datetime.now(UTC):
            return None  # nothing happened after it yet: now
        return await hub.first_after_time(since_time.astimezone(UTC))
    return None if query.since == "now" else int(query.since)


Listed = Annotated[str, Meta(max_length=8192)]


class EventQuery(Query):
    kinds: (
        Annotated[Listed, Meta(description="Comma-separated event kinds (instance, volume, port...).")]
        | UnsetType
    ) = UNSET
    ids: Annotated[Listed, Meta(description="Comma-separated resource ids.")] | UnsetType = UNSET
    types: (
        Annotated[Listed, Meta(description="Comma-separated event types (instance.active...).")] | UnsetType
    ) = UNSET
    since: Annotated[
        str,
        Meta(
            pattern="^([0-9]{1,19}|now)$",
            description="The last sequence the client saw: now (the default), 0 for everything kept.",
        ),
    ] = "now"
    since_time: (
        Annotated[TimeParameter, Meta(description="Start at this time instead (UTC when no offset).")]
        | UnsetType
    ) = UNSET
    project: (
        Annotated[Id, Meta(description="Admins: this project's events only (else every project's).")]
        | UnsetType
    ) = UNSET


class Handshake(Headers):
    """A WebSocket opening handshake (RFC 6455)."""

    upgrade: Annotated[str, Meta(pattern="^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$")] = msgspec.field(
        name="Upgrade"
    )
    connection: Annotated[
        str,
        Meta(
            pattern="(^|,)[\\t ]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][\\t ]*(,|$)",
            max_length=1024,
            description="Names upgrade.",
        ),
    ] = msgspec.field(name="Connection")
    key: Annotated[
        str, Meta(pattern="^[A-Za-z0-9+/]{21}[AQgw]==$", description="16 random bytes in base64.")
    ] = msgspec.field(name="Sec-WebSocket-Key")
    version: Literal["13"] = msgspec.field(name="Sec-WebSocket-Version")


class EventHandshake(Handshake):
    """The event socket's handshake: a browser's WebSocket carries its token in the subprotocols."""

    protocols: (
        Annotated[
            str,
            Meta(
                max_length=PROTOCOLS_LENGTH,
                description="aiostack.events, aiostack.token.<token>: the token where no header can go.",
            ),
        ]
        | UnsetType
    ) = msgspec.field(default=UNSET, name="Sec-WebSocket-Protocol")


class BadFrame(Exception):
    """A frame that is no valid request; ``frame_id`` is its id when it had a usable one."""

    def __init__(self, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


@dataclass(frozen=True, slots=True)
class RequestFrame:
    id: str
    method: str
    path: str
    body: Any
    headers: dict[str, str]


def parse_request(text: str) -> RequestFrame:
    """A request frame, checked. :raises BadFrame: not JSON, or not a request we can make."""
    try:
        frame = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise BadFrame("the frame is not JSON") from None
    except RecursionError:
        raise BadFrame("the frame's arrays and objects are nested too deeply") from None
    if not isinstance(frame, dict):
        raise BadFrame("a frame is a JSON object")
    frame_id = frame.get("id") if isinstance(frame.get("id"), str) else None
    if frame.get("type") != "request":
        raise BadFrame(f'unknown frame type {frame.get("type")!r}: send "request" frames', frame_id)
    if frame_id is None or not 0 < len(frame_id) <= 256:
        raise BadFrame('a request needs an "id": a string of 1 to 256 characters')
    method, path, headers = frame.get("method"), frame.get("path"), frame.get("headers") or {}
    if not isinstance(method, str) or method.upper() not in REQUEST_METHODS:
        raise BadFrame(f'"method" must be one of {", ".join(sorted(REQUEST_METHODS))}', frame_id)
    if not isinstance(path, str) or not path.startswith("/") or not path.isprintable() or len(path) > 8192:
        raise BadFrame('"path" must be a path on the gateway, starting with "/"', frame_id)
    if service_of(URL(f"http://gateway{path}").path) == "ws":
        raise BadFrame("requests cannot open another socket", frame_id)
    if not isinstance(headers, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
    ):
        raise BadFrame('"headers" must map header names to strings', frame_id)
    refused = sorted(name for name in headers if name.lower() in FORBIDDEN_HEADERS)
    if refused:
        raise BadFrame(f"a request frame cannot set {', '.join(refused)}", frame_id)
    return RequestFrame(frame_id, method.upper(), path, frame.get("body"), headers)


async def _response_body(response: aiohttp.ClientResponse) -> Any:
    """JSON as JSON, text as a string; anything else (image data) is not carried: null."""
    if response.content_type == "application/json":
        return await response.json()
    if response.content_type.startswith("text/"):
        return await response.text()
    return None


class RequestRelay:
    """Answers one socket's request frames through the gateway's own routes, over loopback HTTP."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.session = request.app[LOOPBACK]
        host, port = request.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
        self.base = URL.build(scheme="https" if request.secure else "http", host=host, port=port)
        self.headers = {"X-Auth-Token": context_of(request).token or "", "Host": request.host}
        self.in_flight: set[asyncio.Task[None]] = set()

    async def receive(self, message: aiohttp.WSMessage) -> None:
        """Start answering a request frame, or refuse it at once (an error frame, or 429)."""
        if message.type is WSMsgType.BINARY:
            await self._send({"type": "error", "id": None, "message": "binary frames are not taken"})
            return
        if message.type is not WSMsgType.TEXT:
            return
        try:
            frame = parse_request(message.data)
        except BadFrame as exc:
            await self._send({"type": "error", "id": exc.frame_id, "message": str(exc)})
            return
        if len(self.in_flight) >= REQUEST_LIMIT:
            message_text = f"at most {REQUEST_LIMIT} requests are in flight on one socket"
            body = error_body(service_of(frame.path), 429, message_text)
            await self._send({"type": "response", "id": frame.id, "status": 429, "headers": {}, "body": body})
            return
        task = asyncio.create_task(self._answer(frame))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _answer(self, frame: RequestFrame) -> None:
        headers = CIMultiDict(frame.headers)
        headers.update(self.headers)
        data = None
        if frame.body is not None:
            data = msgspec.json.encode(frame.body)
            headers.setdefault("Content-Type", "application/json")
        try:
            async with self.session.request(
                frame.method, URL(f"{self.base}{frame.path}"), data=data, headers=headers
            ) as response:
                status, body = response.status, await _response_body(response)
                shown = {
                    name: response.headers[name] for name in RESPONSE_HEADERS if name in response.headers
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            path = URL(frame.path).path  # not its query, which may hold anything (a token)
            log.warning("socket request %s %s failed: %s", frame.method, path, type(exc).__name__)
            status = 504 if isinstance(exc, TimeoutError) else 502
            failure = "did not answer in time" if status == 504 else "could not be reached"
            message = f"The request failed: the gateway {failure}."
            body, shown = error_body(service_of(path), status, message), {}
        await self._send(
            {"type": "response", "id": frame.id, "status": status, "headers": shown, "body": body}
        )

    async def _send(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.send_json(frame)

    async def close(self) -> None:
        """Cancel what is still in flight: nobody is left to answer."""
        for task in self.in_flight:
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)


async def loopback_context(app: web.Application) -> AsyncIterator[None]:
    # idle connections are let go well before the gateway's header timeout closes them (a request
    # sent on a connection the server is closing would fail); behind TLS the relay speaks it to the
    # very socket it accepted the client on (its own address), so it checks no certificate
    keepalive = min(15.0, app[LIMITS].header_timeout / 2)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=LOOPBACK_CONNECTIONS, keepalive_timeout=keepalive, ssl=False),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        app[LOOPBACK] = session
        yield


routes = Routes()


@routes.get(
    "/ws",
    "The event socket, which also carries requests",
    query=EventQuery,
    headers=EventHandshake,
    policy="events:read",
    token_in_query=True,
    replies=[
        Reply(
            101,
            None,
            "Switched to a WebSocket of JSON frames: the project's events (every project's for an admin),"
            " and the answers to request frames ({type: request, id, method, path, body, headers}), which"
            " reach every operation of this document with the socket's token (docs/EVENTS.md).",
            headers={
                "Upgrade": "websocket",
                "Connection": "upgrade",
                "Sec-WebSocket-Accept": "The handshake's answer to Sec-WebSocket-Key.",
            },
        )
    ],
    errors=(429,),
)
async def events_socket(
    request: web.Request, query: EventQuery, headers: EventHandshake
) -> web.WebSocketResponse:
    """A request that does not upgrade (no WebSocket handshake) is a 400, as is a bad query; 429:
    the user has as many sockets open as one user may (``Limits.sockets_per_user``)."""
    ctx = context_of(request)
    with request.app[SOCKET_COUNTS].slot(ctx.user_id or "", request.app[LIMITS].sockets_per_user):
        return await _event_socket(request, query)


async def _event_socket(request: web.Request, query: EventQuery) -> web.WebSocketResponse:
    ctx = context_of(request)
    project = given(query.project) if ctx.is_admin else ctx.project_id
    event_filter = EventFilter(project, _items(query.kinds), _items(query.ids), _items(query.types))
    hub: EventHub = request.app[HUB]
    since = await _start_seq(query, hub)
    subscriber = Subscriber(event_filter, request.app[EVENT_QUEUE_LIMIT])
    first_seq, last_seq = await hub.bounds()
    if since is None:
        subscriber.cursor = hub.ring[-1].seq if hub.ring else hub.started_after
        subscriber.catching_up = False
    hub.subscribers.add(subscriber)  # before the handshake answer: no event after it is missed
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20, protocols=(EVENTS_PROTOCOL,))
    relay = RequestRelay(ws, request)
    tasks: list[asyncio.Task[None]] = []
    try:
        await ws.prepare(request)
        request.app[SOCKETS].add(ws)
        direct = None
        if not ws.compress and request.transport is not None:  # asyncio's transport or uvloop's
            direct = DirectWrites(ws, request.transport)
        subscriber.sender = asyncio.create_task(
            _serve(ws, hub, subscriber, since, first_seq, last_seq, direct)
        )
        tasks = [
            subscriber.sender,
            asyncio.create_task(_read_requests(ws, relay)),
            asyncio.create_task(_close_when_token_ends(ws, request)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if subscriber.overflowed:
            await _cut_off(ws, subscriber)
    finally:  # also when the handler is cancelled (the gateway stopping): no task outlives it
        hub.subscribers.discard(subscriber)
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("event socket failed: %r", outcome)
        await relay.close()
    return ws


async def _close_when_token_ends(ws: web.WebSocketResponse, request: web.Request) -> None:
    """Events stop when the socket's token is revoked or expires: checked every ``TOKEN_RECHECK``
    seconds (the validator's cache learns of revocations at once), then the socket is closed 4001."""
    token = context_of(request).token or ""
    while True:
        await asyncio.sleep(TOKEN_RECHECK)
        try:
            await request.app[TOKENS].validate(token)
        except Unauthorized as exc:
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "token_invalid", "message": str(exc)})
                await ws.close(code=CLOSE_TOKEN_INVALID, message=b"token revoked or expired")
            return


async def _read_requests(ws: web.WebSocketResponse, relay: RequestRelay) -> None:
    async for message in ws:
        await relay.receive(message)


async def _serve(
    ws: web.WebSocketResponse,
    hub: EventHub,
    subscriber: Subscriber,
    since: int | None,
    first: int,
    last: int,
    direct: DirectWrites | None,
) -> None:
    """Send the socket's opening frames and what it missed, then its live events: from here on
    the hub writes those it can at once (``direct``), this task the ones queued."""
    start = subscriber.cursor if since is None else since
    await ws.send_json({"type": "subscribed", "since": start, "first_seq": first, "last_seq": last})
    if since is not None:
        if 0 < since < first - 1 or since > last:
            await ws.send_json({"type": "resume_expired", "requested_seq": since, "first_seq": first})
            await ws.close(code=CLOSE_RESUME_EXPIRED, message=f"resume point {since} expired".encode())
            return
        await _catch_up(ws, hub, subscriber, since)
    await ws.send_json({"type": "caught_up", "seq": subscriber.cursor})
    subscriber.direct = direct
    while not subscriber.overflowed:
        await subscriber.wakeup.wait()
        subscriber.wakeup.clear()
        while subscriber.queue:
            await _send(ws, subscriber, subscriber.queue.popleft())


async def _cut_off(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    """Tell a client that fell behind where to resume, and close; never wait long on it."""
    resume = subscriber.cursor
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2):
            await ws.send_json({"type": "slow_consumer", "resume_seq": resume})
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2):
            await ws.close(code=CLOSE_SLOW_CONSUMER, message=f"slow consumer; resume from {resume}".encode())
    log.info("event socket fell behind; cut off at seq %d", resume)


async def _catch_up(ws: web.WebSocketResponse, hub: EventHub, subscriber: Subscriber, since: int) -> None:
    """Send what happened after ``since``: from the stream until the ring reaches back, then the ring."""
    subscriber.cursor = since
    while (recent := hub.ring_after(subscriber.cursor)) is None:
        until = hub.ring_covers_from - 1
        async for stored in hub.stored_after(subscriber.cursor, subscriber.filter, until):
            if subscriber.filter.matches(stored):
                await _send(ws, subscriber, stored)
        subscriber.cursor = max(subscriber.cursor, until)
    subscriber.catching_up = False  # with the ring read in the same step: nothing falls between
    for stored in recent:
        if subscriber.filter.matches(stored):
            await _send(ws, subscriber, stored)


async def _send(ws: web.WebSocketResponse, subscriber: Subscriber, stored: StoredEvent) -> None:
    """Send once, in order; the frame is in the socket's buffer before the wait for it to drain."""
    if stored.seq > subscriber.cursor:
        subscriber.cursor = stored.seq
        await ws.send_str(stored.frame)


async def _close_sockets(app: web.Application) -> None:
    """On shutdown: every socket is told the gateway is going away (clients resume elsewhere or later)."""
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")


def add_routes(app: web.Application) -> None:
    app[EVENT_QUEUE_LIMIT] = QUEUE_LIMIT
    app[SOCKETS] = weakref.WeakSet()
    app[SOCKET_COUNTS] = SocketCounts()
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(hub_context)
    app.cleanup_ctx.append(loopback_context)
    routes.add_to(app)
