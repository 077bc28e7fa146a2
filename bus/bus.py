"""The bus: one NATS connection carrying msgpack envelopes.

``call`` is the overview's rpc.call (request/reply with a deadline), ``cast`` its rpc.cast
(no reply), ``publish`` sends events. Subjects are relative to the bus's prefix:
``call("scheduler.select_destinations", ...)`` goes to ``<prefix>.rpc.scheduler.select_destinations``
and ``publish("evt.instance.p1.i1", ...)`` to ``<prefix>.evt.instance.p1.i1``.
``publish_event`` stores an event in the JetStream stream that keeps ``<prefix>.evt.>`` and
returns its sequence once stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import itertools
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DiscardPolicy, StorageType, StreamConfig, StreamInfo

from bus.envelope import DEFAULT_MAX_BYTES, Context, decode_reply, new_id, pack
from bus.errors import (
    TRANSIENT_ERRORS,
    ActorStopped,
    AiostackError,
    CallTimeout,
    DeadlineExpired,
    NoResponders,
    StoreUnavailable,
)
from bus.metrics import OK, bus_call_seconds
from bus.server import TLS_NAME

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "aiostack"
DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_EVENT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_EVENT_MAX_BYTES = 1024**3
INBOX_PREFIX = "_INBOX"
EVENT_TIMEOUT = 15.0
"""How long an event is offered to the event stream before publishing it fails."""
EVENT_ATTEMPT = 2.0
"""How long one offer waits for the stream's acknowledgement."""
RESEND_AFTER = 1.0
"""Seconds an idempotent call waits for its reply before the request is sent again (then twice
as long each time, at most ``RESEND_MAX_PAUSE``, within the call's timeout)."""
RESEND_MAX_PAUSE = 2.0
TRANSIENT_REPLY_PATIENCE = 3.0
"""Seconds an idempotent call is asked again while replicas answer that they are stopping or
without their database (a replica cut off from the database for a moment gives way
to one that is not; a database that is down for everyone is reported after this long)."""
NO_RESPONDERS_PATIENCE = 3.0
"""Seconds a call is sent again while the server answers that nobody serves its subject (nobody
got it, so any call may be): a server that just restarted knows its routes' subscribers only a
moment after it takes clients back."""
CONNECT_TIMEOUT = 2.0
"""Seconds one attempt to reach a server may take: reconnecting, a server cut off (no answer at
all) costs this much before the next one is tried."""
PING_INTERVAL = 1.0
"""Seconds between a client's pings to its server (nats-py's default is 120)."""
MAX_OUTSTANDING_PINGS = 2
"""Pings unanswered before the server counts as dead and the client moves to another: a dead
server is noticed within ``PING_INTERVAL * (MAX_OUTSTANDING_PINGS + 1)`` seconds."""


def inbox_prefix_for(user: str) -> str:
    """The reply subjects of one NATS user: ``_INBOX_<user>`` (its permissions allow ``_INBOX_<user>.>``)."""
    return f"{INBOX_PREFIX}_{user}"


def event_stream_name(prefix: str) -> str:
    """The JetStream stream that keeps ``<prefix>.evt.>``: ``EVENTS_<prefix>``."""
    return "EVENTS_" + re.sub(r"[^A-Za-z0-9_-]", "_", prefix)


def _without_tls_eof_notice(record: logging.LogRecord) -> bool:
    """Drop asyncio's notice that nats-py's protocol asks to keep a TLS connection half-open
    (harmless: TLS closes both ways), printed at every close of a TLS connection to NATS."""
    return not record.getMessage().startswith("returning true from eof_received()")


def read_credentials(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The user and password in a credentials file (JSON ``{"user": ..., "password": ...}``)."""
    data = _read_credentials_file(path)
    return str(data["user"]), str(data["password"])


def read_trust(path: str | os.PathLike[str]) -> str | None:
    """The CA certificate (PEM) a credentials file trusts for TLS (its ``"ca"``), None without one."""
    ca = _read_credentials_file(path).get("ca")
    return str(ca) if ca else None


def _read_credentials_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not {"user", "password"} <= data.keys():
            raise ValueError("it holds no user and password")
        return data
    except (OSError, ValueError) as exc:
        raise BusAuthFailed(f"cannot read NATS credentials from {path}: {exc}") from None


def nats_servers(url: str) -> list[str]:
    """The servers of a NATS URL that may name several, comma-separated (a cluster)."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError(f"no NATS server in {url!r}")
    return servers


@dataclass(frozen=True, slots=True)
class Current:
    """The request being handled: its id, the caller's context and the deadline."""

    request_id: str
    context: Context | None
    deadline: float | None


current: contextvars.ContextVar[Current | None] = contextvars.ContextVar(
    "aiostack_current_request", default=None
)


def current_request_id() -> str | None:
    cur = current.get()
    return cur.request_id if cur else None


@contextlib.contextmanager
def request_scope(
    request_id: str | None = None, context: Context | None = None, deadline: float | None = None
) -> Iterator[Current]:
    """Make the calls inside this block one request: same request id, context and deadline."""
    scope = Current(request_id or new_id(), context, deadline)
    token = current.set(scope)
    try:
        yield scope
    finally:
        current.reset(token)


class BusClosed(AiostackError):
    code = "bus_closed"
    http_status = 503


class BusAuthFailed(AiostackError):
    """NATS refused this connection's credentials (or they could not be read)."""

    code = "bus_auth_failed"
    http_status = 503


class BusState(enum.Enum):
    CONNECTED = "connected"
    CLOSED = "closed"


class Bus:
    """A NATS connection that speaks envelopes. Open with ``await Bus.connect(url)``."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_bytes: int = DEFAULT_MAX_BYTES,
        inbox_prefix: str = INBOX_PREFIX,
    ) -> None:
        if not prefix or any(c in prefix for c in " *>"):
            raise ValueError(f"invalid subject prefix {prefix!r}")
        self.nc = nc
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.state = BusState.CONNECTED
        self._inbox_prefix = f"{inbox_prefix}.{new_id()}."
        self._inbox: Subscription | None = None
        self._reply_tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._gathering: dict[str, asyncio.Queue[Msg]] = {}
        self._resendable: dict[str, tuple[str, bytes, dict[str, str] | None]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._event_stream_checked = False
        # access control for the actors on this connection (actors.auth.install sets them)
        self.authenticator: Callable[[Context], Awaitable[Context]] | None = None
        self.policy_check: Callable[[str, Context], bool] | None = None
        self.service_token: str | None = None
        """This process's service token (``runtime.auth.keep_service_token`` keeps it fresh): sent
        with every call and cast made for a user, so long work outlives the user's token."""
        self.service_token_keeper: asyncio.Task[None] | None = None
        """The one task keeping ``service_token`` (several node actors may share this connection)."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        credentials: str | os.PathLike[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> Bus:
        """Connect to NATS; reconnect forever afterwards (subscriptions are restored).

        ``url`` may name several servers, comma-separated (a cluster): the client knows them
        all, notices a dead one within seconds (``PING_INTERVAL``) and moves to another.
        With ``credentials`` (a file, see ``read_credentials``) the connection logs in as
        that user and takes its replies on ``_INBOX_<user>.>``, the only inbox its
        permissions allow; a CA certificate in the file (``read_trust``) makes the
        connection TLS, trusting that CA alone.

        :raises BusAuthFailed: the server refused the credentials.
        """
        options: dict[str, Any] = {}
        inbox_prefix = INBOX_PREFIX
        if credentials is not None:
            user, password = read_credentials(credentials)
            inbox_prefix = inbox_prefix_for(user)
            options = {"user": user, "password": password, "inbox_prefix": inbox_prefix}
            ca = read_trust(credentials)
            if ca is not None:
                options["tls"] = ssl.create_default_context(cadata=ca)
                options["tls_hostname"] = TLS_NAME
                logging.getLogger("asyncio").addFilter(_without_tls_eof_notice)
        connected = False

        async def on_error(exc: Exception) -> None:
            if not connected and _refused_credentials(exc):
                raise BusAuthFailed(f"NATS at {url} refused the credentials: {exc}")
            await _log_nats_error(exc)

        made: list[Bus] = []

        async def reconnected() -> None:
            log.info("reconnected to NATS (%s)", name or "bus")
            if made:
                await made[0]._resend_unanswered()

        nc = NatsClient()
        try:
            await nc.connect(
                servers=nats_servers(url),
                name=name,
                connect_timeout=connect_timeout,  # type: ignore[arg-type]  # nats-py annotates seconds as int
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                ping_interval=PING_INTERVAL,  # type: ignore[arg-type]
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                error_cb=on_error,
                disconnected_cb=_log_event("disconnected from NATS", name),
                reconnected_cb=reconnected,
                **options,
            )
        except BusAuthFailed:
            await nc.close()
            raise
        connected = True
        made.append(cls(nc, prefix=prefix, max_bytes=max_bytes, inbox_prefix=inbox_prefix))
        return made[0]

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subject(self, relative: str) -> str:
        return f"{self.prefix}.{relative}"

    def rpc_subject(self, address: str) -> str:
        """``scheduler.ping`` -> ``<prefix>.rpc.scheduler.ping``."""
        return f"{self.prefix}.rpc.{address}"

    def _outgoing(
        self, body: Any, context: Context | None, timeout: float | None, *, inherit_deadline: bool = True
    ) -> bytes:
        """Pack a new message that inherits the request being handled, if any.

        Calls inherit its deadline too (they must not outlive it); events do not carry one. Calls
        and casts for a user carry this process's service token, if it has one; events do not.
        """
        cur = current.get()
        if cur is None:
            request_id, deadline = new_id(), None
        else:
            request_id, deadline = cur.request_id, cur.deadline if inherit_deadline else None
            if context is None:
                context = cur.context
        if (
            inherit_deadline
            and context is not None
            and context.user_id is not None
            and self.service_token is not None
        ):
            context = dataclasses.replace(context, service_token=self.service_token)
        if timeout is not None:
            mine = time.time() + timeout
            deadline = mine if deadline is None or mine < deadline else deadline
        if deadline is not None and deadline <= time.time():
            raise DeadlineExpired("the request's deadline passed before this call", request_id=request_id)
        return pack(request_id, body, context=context, deadline=deadline, max_bytes=self.max_bytes)

    async def call(
        self,
        address: str,
        body: Any = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        context: Context | None = None,
        resend: bool = False,
        target: str | None = None,
    ) -> Any:
        """Request/reply to ``<prefix>.rpc.<address>``; return the reply body or raise its error.

        A call made while handling a request keeps that request's id and context, and never
        waits past its deadline. ``resend`` (idempotent handlers only): a request still
        unanswered after ``RESEND_AFTER`` seconds is sent again, the same message, then after
        twice as long each time (at most ``RESEND_MAX_PAUSE``), and the first reply to any copy
        is the answer. A request or a reply lost with a server that died, or a responder that
        moved to another server, costs a second or two, not the call's timeout; when this
        connection itself moves to another server, its unanswered idempotent calls are sent
        again at once; when a replica answers that it is stopping or without its database, the
        call is asked again (another replica may answer) for up to ``TRANSIENT_REPLY_PATIENCE``
        seconds. ``Overloaded`` is not asked again: it is the callee's backpressure.

        The call is timed (``aiostack_bus_call_seconds``) under ``target``, its address as the
        facet declares it (``node.{host}``: a host's name would make a label value per host), or
        the address's first word when not given (``node`` for ``node.<host>``).

        :raises CallTimeout: no reply within ``timeout`` (or the inherited deadline).
        :raises NoResponders: nobody subscribes to the subject (still, ``NO_RESPONDERS_PATIENCE``
            seconds later).
        :raises AiostackError: the error the remote handler raised, rebuilt by its code.
        """
        began = time.perf_counter()
        outcome = "Cancelled"
        try:
            payload = self._outgoing(body, context, timeout)
            cur = current.get()
            if cur is not None and cur.deadline is not None:
                timeout = min(timeout, max(cur.deadline - time.time(), 0.001))
            subject = f"{self.prefix}.rpc.{address}"
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            patience, pause = loop.time() + min(NO_RESPONDERS_PATIENCE, timeout), 0.05
            asked_again_until = loop.time() + TRANSIENT_REPLY_PATIENCE
            while True:
                msg = await self._request(subject, payload, max(0.001, end - loop.time()), resend=resend)
                if not _no_responders(msg):
                    try:
                        reply = decode_reply(msg.data, self.max_bytes)
                        outcome = OK
                        return reply
                    except (ActorStopped, StoreUnavailable):
                        if not resend or loop.time() + pause > min(end, asked_again_until):
                            raise
                elif loop.time() + pause > patience:
                    raise NoResponders(f"no actor serves {subject}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.4)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            method = address.rpartition(".")[2]
            bus_call_seconds(target or address.partition(".")[0], method, outcome).observe(
                time.perf_counter() - began
            )

    async def call_patiently(
        self,
        address: str,
        body: Any = None,
        *,
        within: float,
        attempt_timeout: float = 5.0,
        resend: bool = False,
        target: str | None = None,
    ) -> Any:
        """``call`` an idempotent handler, asking again while its actor is away, restarting or
        busy (``TRANSIENT_ERRORS``) for up to ``within`` seconds, with backoff 0.2 s doubling to 2 s
        (each attempt timed as a ``call`` under ``target``).

        :raises: the last transient error once ``within`` has passed; any other error at once.
        """
        deadline = time.monotonic() + within
        backoff = 0.2
        while True:
            try:
                timeout = min(attempt_timeout, max(1.0, deadline - time.monotonic()))
                return await self.call(address, body, timeout=timeout, resend=resend, target=target)
            except TRANSIENT_ERRORS:
                if time.monotonic() + backoff > deadline:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _request(
        self,
        subject: str,
        payload: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
        *,
        resend: bool = False,
    ) -> Msg:
        """Publish with a reply subject on this connection's inbox and wait for the answer
        (``resend``: as ``call``'s)."""
        if self._inbox is None:
            self._inbox = await self.nc.subscribe(f"{self._inbox_prefix}*", cb=self._on_reply)
        token = f"{next(self._reply_tokens):x}"
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = waiter
        timer = loop.call_later(timeout, _expire, waiter)
        reply = self._inbox_prefix + token
        resender: asyncio.TimerHandle | None = None

        def send_again(pause: float) -> None:
            nonlocal resender
            if not waiter.done():
                self._sending.add(
                    task := loop.create_task(self._publish_again(subject, payload, token, headers))
                )
                task.add_done_callback(self._sending.discard)
                resender = loop.call_later(pause, send_again, min(pause * 2, RESEND_MAX_PAUSE))

        if resend:
            self._resendable[token] = (subject, payload, headers)
            resender = loop.call_later(RESEND_AFTER, send_again, RESEND_AFTER * 2)
        try:
            await self._publish(subject, payload, reply=reply, headers=headers)
            return await waiter
        except TimeoutError:
            raise CallTimeout(f"no reply from {subject} within {timeout:.3f} s") from None
        finally:
            timer.cancel()
            if resender is not None:
                resender.cancel()
            del self._waiting[token]
            self._resendable.pop(token, None)

    async def _publish_again(
        self, subject: str, payload: bytes, token: str, headers: dict[str, str] | None
    ) -> None:
        with contextlib.suppress(BusClosed):
            await self._publish(subject, payload, reply=self._inbox_prefix + token, headers=headers)

    async def _resend_unanswered(self) -> None:
        """After a reconnect: send the idempotent calls still unanswered again at once (a request
        or reply in flight through the server that was lost is lost with it)."""
        for token, (subject, payload, headers) in list(self._resendable.items()):
            await self._publish_again(subject, payload, token, headers)

    async def request(
        self, relative_subject: str, body: Any = None, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        """Request/reply on ``<prefix>.<subject>`` (not an actor method): the reply body, or its error.

        :raises CallTimeout, NoResponders, AiostackError: as ``call``.
        """
        subject = self.subject(relative_subject)
        msg = await self._request(subject, self._outgoing(body, None, timeout), timeout)
        if _no_responders(msg):
            raise NoResponders(f"nobody answers {subject}")
        return decode_reply(msg.data, self.max_bytes)

    async def gather(
        self, relative_subject: str, body: Any = None, *, within: float, quiet: float
    ) -> list[Any]:
        """Ask every subscriber of ``<prefix>.<subject>`` at once (scatter-gather) and return the
        bodies of their answers: those that came within ``within`` seconds, stopping earlier once
        ``quiet`` seconds passed without one after the first. An error answer, or one that cannot
        be decoded, is left out (logged); nobody subscribing is an empty list."""
        subject = self.subject(relative_subject)
        payload = self._outgoing(body, None, within)
        if self._inbox is None:
            self._inbox = await self.nc.subscribe(f"{self._inbox_prefix}*", cb=self._on_reply)
        token = f"{next(self._reply_tokens):x}"
        answers: asyncio.Queue[Msg] = asyncio.Queue()
        self._gathering[token] = answers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        bodies: list[Any] = []
        try:
            await self._publish(subject, payload, reply=self._inbox_prefix + token)
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(left, quiet) if bodies else left):
                        msg = await answers.get()
                except TimeoutError:
                    break
                if _no_responders(msg):
                    break
                try:
                    bodies.append(decode_reply(msg.data, self.max_bytes))
                except AiostackError as exc:
                    log.warning("an answer to %s left out: %s: %s", subject, exc.code, exc)
            return bodies
        finally:
            del self._gathering[token]

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox_prefix) :]
        waiter = self._waiting.get(token)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)
        elif (answers := self._gathering.get(token)) is not None:
            answers.put_nowait(msg)

    async def cast(self, address: str, body: Any = None, *, context: Context | None = None) -> None:
        """Fire-and-forget to ``<prefix>.rpc.<address>`` (no reply, no delivery guarantee)."""
        await self._publish(self.rpc_subject(address), self._outgoing(body, context, None))

    async def publish(self, relative_subject: str, body: Any) -> None:
        """Publish an envelope on ``<prefix>.<subject>`` with no guarantee (core NATS)."""
        await self._publish(
            self.subject(relative_subject), self._outgoing(body, None, None, inherit_deadline=False)
        )

    @property
    def event_stream(self) -> str:
        """The JetStream stream that keeps ``<prefix>.evt.>``."""
        return event_stream_name(self.prefix)

    async def publish_event(
        self, relative_subject: str, body: Any, timeout: float = EVENT_TIMEOUT, message_id: str | None = None
    ) -> int:
        """Store an event in the event stream; return its sequence once the stream has it.

        The stream is made (with default limits) on this connection's first event if it is
        missing, and again should it vanish later. An event the stream does not acknowledge (its
        leader moving to another server of a cluster answers nothing, or "unavailable", for a
        few seconds) is sent again, with backoff, until ``timeout``: every attempt carries the
        same ``Nats-Msg-Id`` (``message_id``, a new one by default), so the stream keeps it once;
        so does a second publisher giving the same ``message_id`` within the stream's duplicate
        window (2 minutes).

        :raises CallTimeout: the stream did not acknowledge within ``timeout``.
        :raises AiostackError: the stream refused the event.
        """
        payload = self._outgoing(body, None, None, inherit_deadline=False)
        subject = self.subject(relative_subject)
        if not self._event_stream_checked:
            with contextlib.suppress(nats.errors.Error):  # unreachable for now: offered below anyway
                await self.ensure_event_stream()
                self._event_stream_checked = True
        headers = {"Nats-Msg-Id": message_id or new_id()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.05
        while True:
            attempt = min(EVENT_ATTEMPT, max(0.01, deadline - loop.time()))
            try:
                msg: Msg | None = await self._request(subject, payload, attempt, headers)
            except CallTimeout:
                msg = None
            if msg is not None and _no_responders(msg):
                with contextlib.suppress(Exception):  # no stream, or none reachable yet: try again
                    await self.ensure_event_stream()
            elif msg is not None:
                ack = json.loads(msg.data)
                if "error" not in ack:
                    return int(ack["seq"])
                if ack["error"].get("code") != 503:
                    raise AiostackError(f"event stream refused {subject}: {ack['error'].get('description')}")
            if loop.time() + pause >= deadline:
                raise CallTimeout(f"the event stream did not acknowledge {subject} within {timeout:.3f} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def ensure_event_stream(
        self, *, max_age: float | None = None, max_bytes: int | None = None, replicas: int | None = None
    ) -> StreamInfo:
        """Create the event stream if missing; with limits given, apply them to it. ``replicas``:
        how many servers of a cluster keep it (JetStream's R; None: as many as now, 1 when new)."""
        js = self.nc.jetstream()
        config = StreamConfig(
            name=self.event_stream,
            subjects=[self.subject("evt.>")],
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=max_age if max_age is not None else DEFAULT_EVENT_MAX_AGE,
            max_bytes=max_bytes if max_bytes is not None else DEFAULT_EVENT_MAX_BYTES,
            num_replicas=replicas or 1,
        )
        try:
            info = await js.stream_info(self.event_stream)
        except nats.js.errors.NotFoundError:
            return await js.add_stream(config)
        if max_age is not None or max_bytes is not None or replicas is not None:
            config.num_replicas = replicas or info.config.num_replicas or 1
            return await js.update_stream(config)
        return info

    async def _publish(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        try:
            await self.nc.publish(subject, payload, reply=reply, headers=headers)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise BusClosed(f"bus connection is closed: {type(exc).__name__}") from None

    async def reply(
        self, msg: Msg, request_id: str, body: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Answer a request message (nothing is sent when it has no reply subject)."""
        if msg.reply:
            await self._publish(msg.reply, pack(request_id, body, error=error, max_bytes=self.max_bytes))

    async def subscribe(
        self,
        subject: str,
        callback: Callable[[Msg], Awaitable[None]],
        *,
        queue: str = "",
        pending_msgs_limit: int = 65536,
    ) -> Subscription:
        """Subscribe to an absolute subject with a raw-message callback."""
        return await self.nc.subscribe(
            subject, queue=queue, cb=callback, pending_msgs_limit=pending_msgs_limit
        )

    async def flush(self, timeout: float = 5.0) -> None:
        """Return once the server has everything sent so far (subscriptions included).

        nats-py 2.16 writes flush()'s PING straight to the socket, ahead of commands still
        in its pending buffer, so the buffer is pushed out first.
        """
        await self.nc._flush_pending(force_flush=True)
        await self.nc.flush(timeout=timeout)  # type: ignore[arg-type]  # seconds, as a float

    async def close(self) -> None:
        """Flush and close; idempotent."""
        if self.state is BusState.CLOSED:
            return
        self.state = BusState.CLOSED
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.Error, TimeoutError):
                await self.nc.close()


def _no_responders(msg: Msg) -> bool:
    headers = msg.headers
    return headers is not None and headers.get("Status") == "503"


def _expire(waiter: asyncio.Future[Msg]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _refused_credentials(exc: Exception) -> bool:
    """The server's answer to a wrong user or password (nats-py reports it as a plain error)."""
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s: %s", type(exc).__name__, exc)


def _log_event(what: str, name: str | None) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        log.info("%s (%s)", what, name or "bus")

    return callback
