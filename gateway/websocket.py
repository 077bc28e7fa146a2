"""The websocket endpoint: the caller's project's events, pushed as they happen.

``GET /ws?kinds=instance,domain`` with ``X-Auth-Token`` (or ``?token=``). Each event comes
as one JSON text frame ``{"type": "event", "subject": ..., "event": {...}}``. The gateway
keeps one NATS subscription on ``<prefix>.evt.>`` and hands each event to the sockets
allowed to see it; every socket has a bounded queue and its own sender task, so a slow
client never slows the others or the bus: when its queue is full it is closed with a
"slow consumer" message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web
from nats.aio.msg import Msg

from bus import BadMessage, Context, decode
from gateway.app import BUS, context_of

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1024
HUB = web.AppKey("event_hub", "EventHub")


@dataclass(eq=False)
class Subscriber:
    context: Context
    kinds: frozenset[str]
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False

    def wants(self, event: dict[str, Any]) -> bool:
        if self.kinds and event.get("kind") not in self.kinds:
            return False
        return self.context.is_admin or event.get("project") == self.context.project_id


class EventHub:
    """Fan-out of bus events to websocket subscribers."""

    def __init__(self) -> None:
        self.subscribers: weakref.WeakSet[Subscriber] = weakref.WeakSet()

    async def on_message(self, msg: Msg) -> None:
        try:
            envelope = decode(msg.data)
        except BadMessage as exc:
            log.warning("gateway: undecodable event on %s: %s", msg.subject, exc)
            return
        event = envelope.body
        if not isinstance(event, dict):
            return
        frame = {"type": "event", "subject": msg.subject, "event": event}
        for subscriber in list(self.subscribers):
            if subscriber.overflowed or not subscriber.wants(event):
                continue
            try:
                subscriber.queue.put_nowait(frame)
            except asyncio.QueueFull:
                subscriber.overflowed = True


async def hub_context(app: web.Application) -> AsyncIterator[None]:
    bus = app[BUS]
    hub = EventHub()
    app[HUB] = hub
    subscription = await bus.subscribe(bus.subject("evt.>"), hub.on_message, pending_msgs_limit=1_000_000)
    yield
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()


async def events_socket(request: web.Request) -> web.WebSocketResponse:
    kinds = frozenset(k for k in request.query.get("kinds", "").split(",") if k)
    subscriber = Subscriber(context_of(request), kinds)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
    hub: EventHub = request.app[HUB]
    hub.subscribers.add(subscriber)  # before the handshake answer: no event after it is missed
    try:
        await ws.prepare(request)
    except BaseException:
        hub.subscribers.discard(subscriber)
        raise
    sender = asyncio.create_task(_send(ws, subscriber))
    try:
        async for _message in ws:
            pass
    finally:
        hub.subscribers.discard(subscriber)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws


async def _send(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    while True:
        if subscriber.overflowed and subscriber.queue.empty():
            break
        frame = await subscriber.queue.get()
        await ws.send_str(json.dumps(frame))
    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"slow consumer: event queue overflowed")


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(hub_context)
    app.router.add_get("/ws", events_socket)
