"""The actor base class and its supervisor.

An actor serves the methods of its API facets (``bus.api``) on
``<prefix>.rpc.<address>.<method>`` with one queue-group subscription (queue = address), so
replicas of one actor share the load. It implements them itself (``class SchedulerActor(Actor,
Scheduler)``) or through servant objects handed to ``serve``. A message's body is the map of
the handler's keyword arguments, checked against the facet's annotations before the handler
runs; the handler's return value is the reply body. At most ``max_inflight`` messages are
handled at once, each by a worker task started when a message finds every worker busy and
ending when none waits (an idle actor holds no worker, which matters with a thousand simulated
hosts in one process); up to ``max_backlog`` more wait, and past that a caller gets
``Overloaded`` at once instead of a timeout. ``stop()`` drains: no new messages are taken,
accepted ones are answered.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.api import Method, Pong, ServiceAPI, handlers_of, served_pattern
from bus.bus import Bus, BusClosed, Current, current
from bus.envelope import Envelope, decode, new_id, request_id_of
from bus.errors import (
    ActorStopped,
    AiostackError,
    BadMessage,
    DeadlineExpired,
    Forbidden,
    InvalidRequest,
    NoSuchMethod,
    Overloaded,
    RemoteError,
)
from bus.metrics import ACTOR_LOAD, OK, UNKNOWN_METHOD, actor_handle_seconds, actor_messages

log = logging.getLogger(__name__)
CANCEL_AGAIN_AFTER = 1.0
"""Seconds a stopping actor waits for a cancelled task before cancelling it again."""


class ActorState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    CRASHED = "crashed"


class ActorCrashed(Exception):
    """An actor's background task or start-up failed; its supervisor restarts it."""


class Actor:
    """Base class: subclasses set ``name`` (or are given an address) and serve API facets: their own
    (``class SchedulerActor(Actor, Scheduler)``) or their servants' (``serve``)."""

    name: ClassVar[str] = ""
    max_inflight: ClassVar[int] = 64
    max_backlog: ClassVar[int] = 1024
    drain_timeout: ClassVar[float] = 10.0

    def __init__(self, bus: Bus, *, address: str | None = None) -> None:
        if not (address or self.name):
            raise TypeError(f"{type(self).__name__} needs a name or an address")
        self.bus = bus
        self.address = address or self.name
        self.instance_id = new_id()[:12]
        self.state = ActorState.NEW
        self.inflight = 0
        self._declared_address: str | None = None
        self._routes: dict[str, _Route] = {
            self.address: _Route(self.address, None, {"ping": (ServiceAPI.api_methods["ping"], self.ping)})
        }
        self.check_replies = os.environ.get("AIOSTACK_CHECK_REPLIES") == "1"
        if isinstance(self, ServiceAPI):
            self.serve(self)
        self._queue: asyncio.Queue[tuple[Msg, _Route]] = asyncio.Queue(self.max_backlog)
        self._subscriptions: list[Subscription] = []
        self._workers: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._started = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._failure: BaseException | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._started_at = time.monotonic()

    @property
    def kind(self) -> str:
        """The actor's kind, what its metrics are labelled by: its name (``node`` for every node), or
        the address its facets declare (``volume.storage.{host}``), never one host's address."""
        return self.name or self._declared_address or self.address

    @property
    def backlog(self) -> int:
        """Messages accepted and waiting for a worker."""
        return self._queue.qsize()

    def serve(self, *servants: object) -> None:
        """Serve the facet methods each servant implements (the actor itself, when it is a facet).

        :raises TypeError: a servant's facet is served on another address, a method is missing
            or differs from its declaration, or two servants implement the same method.
        """
        for servant in servants:
            if not isinstance(servant, ServiceAPI):
                raise TypeError(f"{type(servant).__name__} implements no ServiceAPI facet")
            for facet in type(servant).facets():
                self._route_of(facet)
                if facet.caller is None:
                    self._declared_address = self._declared_address or facet.address
            for name, (method, implementation) in handlers_of(servant).items():
                route = self._route_of(method.facet)
                served = route.handlers.get(name)
                if served is not None and served[1] != implementation:
                    raise TypeError(f"actor {self.address}: two servants implement {name}")
                route.handlers[name] = (method, implementation)

    def _route_of(self, facet: type[ServiceAPI]) -> _Route:
        """Where a facet's methods arrive: the actor's address, or for a facet with a caller field
        (``conductor.host.{host}``) a subscription of its own under the actor's address.

        :raises TypeError: the facet is served on another address.
        """
        if facet.caller is None:
            if not _address_matches(facet.address, self.address):
                raise TypeError(f"{facet.__name__} is served on {facet.address!r}, not {self.address!r}")
            return self._routes[self.address]
        pattern = served_pattern(facet)
        if not pattern.startswith(self.address + "."):
            raise TypeError(f"{facet.__name__} is served on {facet.address!r}, not under {self.address!r}")
        route = self._routes.get(pattern)
        if route is None:

            async def ping(**_caller: str) -> Pong:
                return await self.ping()

            route = self._routes[pattern] = _Route(
                pattern, facet.caller, {"ping": (ServiceAPI.api_methods["ping"], ping)}
            )
        return route

    # -- hooks ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Open stores and start background work; runs before the first message."""

    async def on_stop(self) -> None:
        """Close what ``on_start`` opened; runs after the last message is answered."""

    # -- lifecycle ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run background work for this actor; if it raises, the actor crashes.

        The work keeps the request id and context of the request that started it, not its
        deadline: it goes on after that request has been answered.
        """
        context = contextvars.copy_context()
        cur = context.get(current)
        if cur is not None:
            context.run(current.set, Current(cur.request_id, cur.context, None))
        task = asyncio.create_task(coro, name=name or f"{self.address}-background", context=context)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    async def _cancel_all(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Cancel the tasks and wait until each has ended. One that is still running a second
        later is cancelled again: before Python 3.12, ``asyncio.wait_for`` (nats-py's requests
        use it) loses a cancellation that arrives as its inner future completes, and the task
        then runs on as if never cancelled (a stop would wait for it forever)."""
        pending = set(tasks)
        for task in pending:
            task.cancel()
        while pending:
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
            for task in pending:
                log.warning(
                    "actor %s: task %s ignored its cancellation; cancelling it again",
                    self.address,
                    task.get_name(),
                )
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # each one's outcome is retrieved

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.crash(task.exception())  # type: ignore[arg-type]

    def crash(self, exc: BaseException) -> None:
        """Stop at once because of ``exc``; ``run()`` raises ``ActorCrashed`` from it."""
        if self._failure is None:
            self._failure = exc
        self._stop_requested.set()

    async def run(self) -> None:
        """Serve until ``stop()``; raise ``ActorCrashed`` if the actor failed."""
        try:
            await self.on_start()
            self.state = ActorState.STARTING
            for route in self._routes.values():
                self._subscriptions.append(
                    await self.bus.subscribe(
                        f"{self.bus.rpc_subject(route.pattern)}.*",
                        partial(self._on_message, route),
                        queue=self.address,
                        pending_msgs_limit=self.max_backlog * 4,
                    )
                )
            await self.bus.flush()
            self.state = ActorState.RUNNING
            ACTOR_LOAD.actors.add(self)
            self._started_at = time.monotonic()
            self._started.set()
            log.info("actor %s (%s) serving", self.address, self.instance_id)
            await self._stop_requested.wait()
        except Exception as exc:
            self.crash(exc)
        finally:
            await self._shutdown()
        if self._failure is not None:
            raise ActorCrashed(f"actor {self.address} crashed: {self._failure!r}") from self._failure

    async def start(self) -> None:
        """Run in a task of its own; return once the subscription is live."""
        if self._run_task is not None:
            raise RuntimeError(f"actor {self.address} already started")
        self._run_task = asyncio.create_task(self.run(), name=f"{self.address}-run")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({self._run_task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await self._run_task

    async def stop(self) -> None:
        """Drain and stop; idempotent."""
        self._stop_requested.set()
        if self._run_task is not None:
            try:
                await asyncio.shield(self._run_task)
            except ActorCrashed:
                log.debug("actor %s had crashed before stop", self.address)

    async def wait_started(self) -> None:
        await self._started.wait()

    async def _shutdown(self) -> None:
        crashed = self._failure is not None
        ACTOR_LOAD.actors.discard(self)
        self.state = ActorState.DRAINING
        for subscription in self._subscriptions:
            try:
                if crashed:
                    await subscription.unsubscribe()
                else:
                    await subscription.drain()
            except Exception as exc:
                log.warning("actor %s: unsubscribe failed: %r", self.address, exc)
        self._subscriptions.clear()
        if not crashed:
            try:
                async with asyncio.timeout(self.drain_timeout):
                    await self._queue.join()
            except TimeoutError:
                log.warning("actor %s: drain timed out with %d in flight", self.address, self.inflight)
        while not self._queue.empty():
            await self._answer_error(
                self._queue.get_nowait()[0],
                ActorStopped(f"actor {self.address} stopped before handling the message"),
            )
        await self._cancel_all([*self._workers, *self._background])
        self._workers.clear()
        try:
            await self.on_stop()
        except Exception as exc:
            log.exception("actor %s: on_stop failed", self.address)
            if self._failure is None:
                self._failure = exc
            crashed = True
        finally:
            self.state = ActorState.CRASHED if crashed else ActorState.STOPPED
            log.info("actor %s (%s) %s", self.address, self.instance_id, self.state.value)

    # -- message handling -----------------------------------------------------------------

    async def _on_message(self, route: _Route, msg: Msg) -> None:
        if self.state not in (ActorState.STARTING, ActorState.RUNNING, ActorState.DRAINING):
            self._count(route, msg, "ActorStopped")
            await self._answer_error(msg, ActorStopped(f"actor {self.address} is not running"))
            return
        try:
            self._queue.put_nowait((msg, route))
        except asyncio.QueueFull:
            self._count(route, msg, "Overloaded")
            await self._answer_error(
                msg, Overloaded(f"actor {self.address} has {self.inflight} in flight and a full backlog")
            )
            return
        starting = len(self._workers) - self.inflight  # workers not yet at a message
        if starting < self._queue.qsize() and len(self._workers) < self.max_inflight:
            worker = asyncio.create_task(self._worker(), name=f"{self.address}-worker")
            self._workers.add(worker)

    def _count(self, route: _Route, msg: Msg, outcome: str) -> str:
        """Count one message's outcome; return its method label."""
        method = msg.subject.rpartition(".")[2]
        if method not in route.handlers:
            method = UNKNOWN_METHOD
        actor_messages(self.kind, method, outcome).inc()
        return method

    async def _worker(self) -> None:
        """Answer waiting messages until none waits, then end (leaving ``_workers`` at once, so a
        message queued after the last look starts another worker)."""
        while not self._queue.empty():
            msg, route = self._queue.get_nowait()
            self.inflight += 1
            try:
                await self._handle(msg, route)
            except asyncio.CancelledError:
                await self._answer_error(
                    msg, ActorStopped(f"actor {self.address} stopped while handling the message")
                )
                raise
            except Exception:
                log.exception("actor %s: failure answering %s", self.address, msg.subject)
            finally:
                self.inflight -= 1
                self._queue.task_done()
        self._workers.discard(asyncio.current_task())

    async def _handle(self, msg: Msg, route: _Route) -> None:
        """Answer one message; count it by how it went (``ok``, or the error's type) and time it."""
        began = time.perf_counter()
        outcome = ActorStopped.__name__  # unless it is answered: cancelled while handling it
        head, _, method = msg.subject.rpartition(".")
        caller = {route.caller: head.rpartition(".")[2]} if route.caller is not None else {}
        try:
            try:
                envelope = decode(msg.data, self.bus.max_bytes)
            except BadMessage as exc:
                log.warning("actor %s: refused message on %s: %s", self.address, msg.subject, exc)
                outcome = type(exc).__name__
                await self._answer_error(msg, exc)
                return
            token = current.set(Current(envelope.request_id, envelope.context, envelope.deadline))
            try:
                served = route.handlers.get(method)
                if served is None:
                    raise NoSuchMethod(f"actor {self.address} has no method {method!r} on {route.pattern}")
                await self._authorize(served[0], envelope)
                result = await self._dispatch(served, envelope, caller)
            except AiostackError as exc:
                outcome = type(exc).__name__
                exc.request_id = envelope.request_id
                log.info(
                    "actor %s.%s rid=%s: %s: %s", self.address, method, envelope.request_id, exc.code, exc
                )
                await self._answer_error(msg, exc)
            except Exception as exc:
                outcome = type(exc).__name__
                log.exception("actor %s.%s rid=%s failed", self.address, method, envelope.request_id)
                await self._answer_error(
                    msg,
                    RemoteError(
                        f"{type(exc).__name__}: {exc}",
                        request_id=envelope.request_id,
                        remote_type=type(exc).__name__,
                    ),
                )
            else:
                outcome = OK
                if msg.reply:
                    try:
                        await self.bus.reply(msg, envelope.request_id, result)
                    except BadMessage as exc:
                        outcome = type(exc).__name__
                        exc.request_id = envelope.request_id
                        await self._answer_error(msg, exc)
            finally:
                current.reset(token)
        finally:
            label = self._count(route, msg, outcome)
            actor_handle_seconds(self.kind, label).observe(time.perf_counter() - began)

    async def _dispatch(self, served: Served, envelope: Envelope, caller: dict[str, str]) -> Any:
        declaration, method_handler = served
        if envelope.expired():
            raise DeadlineExpired(f"{self.address}.{declaration.name}: deadline passed before work started")
        try:
            arguments = declaration.parse(envelope.body)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{self.address}.{exc}") from None
        result = await method_handler(**arguments, **caller)
        if self.check_replies:
            try:
                declaration.check_reply(result)
            except TypeError as exc:
                log.error("actor %s: %s", self.address, exc)
                raise RemoteError(str(exc), remote_type="TypeError") from None
        return result

    async def _authorize(self, declaration: Method, envelope: Envelope) -> None:
        """A call that acts for a user must carry that user's valid token, and the policy must allow it.

        The checked context (with the token's roles, not the claimed ones) replaces the claim.
        """
        claimed = envelope.context
        if claimed is None or claimed.user_id is None or self.bus.authenticator is None:
            return
        ctx = await self.bus.authenticator(claimed)
        current.set(Current(envelope.request_id, ctx, envelope.deadline))
        policy = declaration.policy
        if (
            policy is not None
            and self.bus.policy_check is not None
            and not self.bus.policy_check(policy, ctx)
        ):
            raise Forbidden(f"Policy doesn't allow {policy} to be performed.")

    async def _answer_error(self, msg: Msg, error: AiostackError) -> None:
        if not msg.reply:
            return
        if error.request_id is None:
            error.request_id = request_id_of(msg.data) or new_id()
        try:
            await self.bus.reply(msg, error.request_id, error=error.to_wire())
        except BusClosed:
            log.debug("actor %s: cannot answer %s, bus closed", self.address, msg.subject)

    # -- handlers every actor has ---------------------------------------------------------

    async def ping(self) -> Pong:
        """Liveness: who answered, since when, and how busy it is."""
        return {
            "actor": self.name or self.address,
            "address": self.address,
            "instance": self.instance_id,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self._started_at, 3),
            "inflight": self.inflight,
            "backlog": self._queue.qsize(),
        }


Served = tuple[Method, Callable[..., Awaitable[Any]]]
"""A method's declaration and the handler that serves it."""


@dataclass(frozen=True, slots=True)
class _Route:
    """One subscription of an actor: ``<prefix>.rpc.<pattern>.*`` and the handlers reached by it.

    ``caller`` names the field a wildcard of the pattern carries (``conductor.host.*``: the
    calling host), handed to those handlers from the subject."""

    pattern: str
    caller: str | None
    handlers: dict[str, Served]


def _address_matches(template: str, address: str) -> bool:
    """Whether a facet's address (``node.{host}``) names this actor's (``node.node-1``)."""
    pattern = re.sub(r"\\\{[^}]*\\\}", "[^.]+", re.escape(template))
    return re.fullmatch(pattern, address) is not None


def factory_name(factory: Callable[[], Actor]) -> str:
    """The name of what a factory makes, never its arguments (a partial's may hold secrets: a
    database DSN with its password)."""
    made = factory.func if isinstance(factory, functools.partial) else factory
    return getattr(made, "__qualname__", type(made).__name__)


class Supervisor:
    """Runs the actor ``factory`` makes; when it crashes, makes and runs a new one after a backoff.

    Backoff doubles from ``backoff_min`` to ``backoff_max`` and is reset once an actor has
    run for ``stable_after`` seconds.
    """

    def __init__(
        self,
        factory: Callable[[], Actor],
        *,
        backoff_min: float = 0.1,
        backoff_max: float = 10.0,
        stable_after: float = 30.0,
    ) -> None:
        self.factory = factory
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.restarts = 0
        self.actor: Actor | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()

    async def run(self) -> None:
        backoff = self.backoff_min
        while not self._stopping.is_set():
            actor = self.factory()
            self.actor = actor
            self._running.set()
            began = time.monotonic()
            try:
                await actor.run()
                return
            except ActorCrashed as exc:
                log.error("%s; restarting in %.2f s", exc, backoff, exc_info=exc.__cause__)
            self._running.clear()
            if time.monotonic() - began >= self.stable_after:
                backoff = self.backoff_min
            self.restarts += 1
            try:
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            except TimeoutError:
                backoff = min(backoff * 2, self.backoff_max)

    async def start(self, timeout: float = 30.0) -> None:
        """Start supervising; return once an actor serves (or after ``timeout``, still trying).

        :raises Exception: what ended supervision at once (the factory itself failed).
        """
        self._task = asyncio.create_task(self.run(), name="supervisor")
        serving = asyncio.create_task(self.wait_running(timeout))
        await asyncio.wait({serving, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            serving.cancel()
            self._task.result()
        elif serving.exception() is not None:
            log.warning(
                "no %s actor serving after %.0f s; the supervisor keeps trying",
                factory_name(self.factory),
                timeout,
            )

    async def wait_running(self, timeout: float = 30.0) -> Actor:
        """Wait until an actor instance is serving and return it."""
        async with asyncio.timeout(timeout):
            while True:
                await self._running.wait()
                actor = self.actor
                assert actor is not None
                if actor.state is ActorState.RUNNING:
                    return actor
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping.set()
        if self.actor is not None:
            await self.actor.stop()
        if self._task is not None:
            await self._task
