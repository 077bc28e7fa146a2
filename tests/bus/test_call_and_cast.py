"""call / cast / publish over a real nats-server, and the typed errors a caller can get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from bus import (
    Actor,
    Bus,
    CallTimeout,
    Context,
    InvalidRequest,
    NoResponders,
    NoSuchMethod,
    NotFound,
    RemoteError,
    current,
    current_request_id,
    request_scope,
)
from bus.api import ServiceAPI, call, cast
from bus.envelope import Envelope, decode


class EchoAPI(ServiceAPI, address="echo"):
    @call
    async def echo(self, *, value: object, delay: float = 0.0) -> object: ...

    @cast
    async def record(self, *, value: object) -> None: ...

    @call
    async def whoami(self) -> dict[str, object]: ...

    @call
    async def explode(self) -> None: ...

    @call
    async def missing(self, *, thing: str) -> None: ...


class RelayAPI(ServiceAPI, address="relay"):
    @call
    async def relay(self) -> dict[str, object]: ...


class Echo(Actor, EchoAPI):
    name = "echo"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.casts: asyncio.Queue[object] = asyncio.Queue()

    async def echo(self, *, value: object, delay: float = 0.0) -> object:
        await asyncio.sleep(delay)
        return value

    async def record(self, *, value: object) -> None:
        await self.casts.put(value)

    async def whoami(self) -> dict[str, object]:
        cur = current.get()
        assert cur is not None
        ctx = cur.context
        return {
            "rid": cur.request_id,
            "user": ctx.user_id if ctx else None,
            "roles": list(ctx.roles) if ctx else [],
        }

    async def explode(self) -> None:
        raise ValueError("boom: the widget is bent")

    async def missing(self, *, thing: str) -> None:
        raise NotFound(f"no {thing} here")


class Relay(Actor, RelayAPI):
    """Calls the echo actor from inside a handler: one hop further."""

    name = "relay"

    async def relay(self) -> dict[str, object]:
        inner = await EchoAPI.client(self.bus).whoami()
        return {"outer_rid": current_request_id(), "inner": inner}


@pytest.fixture
async def echo(bus: Bus) -> AsyncIterator[Echo]:
    actor = Echo(bus)
    await actor.start()
    yield actor
    await actor.stop()


async def test_call_returns_the_handler_result(bus: Bus, echo: Echo) -> None:
    assert await bus.call("echo.echo", {"value": {"a": [1, 2, b"bytes"]}}) == {"a": [1, 2, b"bytes"]}


async def test_cast_delivers_without_reply(bus: Bus, echo: Echo) -> None:
    assert await bus.cast("echo.record", {"value": 42}) is None
    assert await asyncio.wait_for(echo.casts.get(), 5) == 42


async def test_call_times_out_with_a_typed_error(bus: Bus, echo: Echo) -> None:
    with pytest.raises(CallTimeout) as caught:
        await bus.call("echo.echo", {"value": 1, "delay": 2.0}, timeout=0.2)
    assert isinstance(caught.value, TimeoutError)


async def test_call_with_no_responder_is_told_so_by_the_server(bus: Bus) -> None:
    with pytest.raises(NoResponders):  # the server's answer, not CallTimeout after the timeout
        await bus.call("nobody.home", {}, timeout=30)


async def test_remote_exception_keeps_type_message_and_request_id(bus: Bus, echo: Echo) -> None:
    with request_scope("req-boom-1"), pytest.raises(RemoteError) as caught:
        await bus.call("echo.explode")
    assert caught.value.remote_type == "ValueError"
    assert "boom: the widget is bent" in caught.value.message
    assert caught.value.request_id == "req-boom-1"


async def test_expected_error_is_rebuilt_as_its_class(bus: Bus, echo: Echo) -> None:
    with pytest.raises(NotFound, match="no spoon here") as caught:
        await bus.call("echo.missing", {"thing": "spoon"})
    assert caught.value.remote_type == "NotFound"


async def test_unknown_method_and_bad_arguments_are_typed_errors(bus: Bus, echo: Echo) -> None:
    with pytest.raises(NoSuchMethod):
        await bus.call("echo.nope")
    with pytest.raises(InvalidRequest, match="wrong"):
        await bus.call("echo.echo", {"wrong": 1})
    with pytest.raises(InvalidRequest, match="map of arguments"):
        await bus.call("echo.echo", [1, 2])
    assert await bus.call("echo.echo", {"value": "still serving"}) == "still serving"


async def test_request_id_and_context_are_kept_across_hops(bus: Bus, echo: Echo) -> None:
    relay = Relay(bus)
    await relay.start()
    try:
        ctx = Context(user_id="u1", project_id="p1", roles=("member",), token="tok")
        with request_scope("req-trace-7", ctx):
            answer = await bus.call("relay.relay")
    finally:
        await relay.stop()
    assert answer["outer_rid"] == "req-trace-7"
    assert answer["inner"] == {"rid": "req-trace-7", "user": "u1", "roles": ["member"]}


async def test_publish_reaches_subscribers_as_an_envelope(bus: Bus) -> None:
    from bus import decode

    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_event(msg) -> None:
        await got.put(msg.data)

    await bus.subscribe(bus.subject("evt.test.>"), on_event)
    await bus.flush()
    await bus.publish("evt.test.p1.x1", {"type": "test.happened"})
    envelope = decode(await asyncio.wait_for(got.get(), 5))
    assert envelope.body == {"type": "test.happened"}
    assert envelope.request_id


async def test_ping_answers_on_every_actor(bus: Bus, echo: Echo) -> None:
    pong = await bus.call("echo.ping")
    assert pong["actor"] == "echo"
    assert pong["instance"] == echo.instance_id


class LossyAPI(ServiceAPI, address="lossy"):
    @call(idempotent=True)
    async def lookup(self, *, key: str) -> str: ...

    @call
    async def store(self, *, key: str) -> str: ...


async def lossy_responder(bus: Bus, method: str, copies: list[Envelope]) -> None:
    """A responder of ``lossy.<method>`` whose first answer is lost (it never reaches the caller,
    as when the server it went through died): it answers every later copy."""

    async def answer(msg: Msg) -> None:
        envelope = decode(msg.data)
        copies.append(envelope)
        if len(copies) > 1:
            await bus.reply(msg, envelope.request_id, f"value of {envelope.body['key']}")

    await bus.subscribe(bus.rpc_subject(f"lossy.{method}"), answer)
    await bus.flush()


async def test_an_idempotent_call_whose_reply_is_lost_is_sent_again_and_answered(bus: Bus) -> None:
    copies: list[Envelope] = []
    await lossy_responder(bus, "lookup", copies)
    assert await LossyAPI.client(bus, timeout=5).lookup(key="k") == "value of k"
    assert len(copies) == 2  # the same message, sent again after RESEND_AFTER
    assert copies[0].message_id == copies[1].message_id and copies[0].request_id == copies[1].request_id


async def test_a_call_not_declared_idempotent_is_sent_once(bus: Bus) -> None:
    copies: list[Envelope] = []
    await lossy_responder(bus, "store", copies)
    with pytest.raises(CallTimeout):
        await LossyAPI.client(bus, timeout=2.5).store(key="k")
    assert len(copies) == 1
