"""Malformed, wrong-version, oversized and expired messages get typed error replies."""

from __future__ import annotations

import time

import msgpack
import pytest

from bus import Actor, BadMessage, Bus, Envelope, decode, encode
from bus.api import ServiceAPI, call
from bus.envelope import VERSION


class CounterAPI(ServiceAPI, address="counter"):
    @call
    async def bump(self) -> int: ...


class Counter(Actor, CounterAPI):
    name = "counter"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.calls = 0

    async def bump(self) -> int:
        self.calls += 1
        return self.calls


async def raw_request(bus: Bus, subject: str, payload: bytes) -> Envelope:
    msg = await bus.nc.request(bus.rpc_subject(subject), payload, timeout=5)
    return decode(msg.data)


@pytest.fixture
async def counter(bus: Bus):
    actor = Counter(bus)
    await actor.start()
    yield actor
    await actor.stop()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\xc1\xff garbage, not msgpack", "not a msgpack message"),
        (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
        (msgpack.packb({"v": VERSION + 1, "id": "x", "rid": "y", "body": None}), "version"),
        (
            msgpack.packb({"v": VERSION, "id": 5, "rid": "y", "ctx": None, "dl": None, "body": 1}),
            "id and rid",
        ),
        (
            msgpack.packb(
                {"v": VERSION, "id": "x", "rid": "y", "ctx": {"evil": 1}, "dl": None, "body": None}
            ),
            "ctx",
        ),
        (
            msgpack.packb(
                {"v": VERSION, "id": "x", "rid": "y", "ctx": None, "dl": None, "body": None, "extra": 1}
            ),
            "only ctx, dl, err",
        ),
    ],
)
async def test_malformed_message_is_answered_and_actor_keeps_serving(
    bus: Bus, counter: Counter, payload: bytes, says: str
) -> None:
    reply = await raw_request(bus, "counter.bump", payload)
    assert reply.error is not None
    assert reply.error["code"] == "bad_message"
    assert says in reply.error["message"]
    assert counter.calls == 0
    assert await bus.call("counter.bump") == 1


async def test_oversized_message_is_refused(nats_server) -> None:
    async with await Bus.connect(nats_server.url, max_bytes=4096) as small_bus:
        actor = Counter(small_bus)
        await actor.start()
        try:
            big = encode(Envelope(body=b"x" * 10_000), max_bytes=1 << 20)
            reply = await raw_request(small_bus, "counter.bump", big)
            assert reply.error["code"] == "bad_message"
            assert "over the 4096-byte limit" in reply.error["message"]
            with pytest.raises(BadMessage, match="limit"):
                await small_bus.call("counter.bump", {"pad": b"x" * 10_000})
            assert await small_bus.call("counter.bump") == 1
        finally:
            await actor.stop()


async def test_expired_deadline_is_not_worked_on(bus: Bus, counter: Counter) -> None:
    stale = encode(Envelope(body=None, deadline=time.time() - 1, request_id="req-late"))
    reply = await raw_request(bus, "counter.bump", stale)
    assert reply.error["code"] == "deadline_expired"
    assert reply.error["request_id"] == "req-late"
    assert counter.calls == 0


async def test_envelope_round_trip_keeps_every_field() -> None:
    from bus import Context

    original = Envelope(
        body={"k": [1, 2.5, None, b"\x00"]},
        request_id="rid-1",
        context=Context("u", "p", ("admin",), "tok"),
        deadline=123.5,
    )
    assert decode(encode(original)) == original
