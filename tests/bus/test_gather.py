"""Bus.gather: every subscriber of a subject answers one request; the late and the broken are left out."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from bus import Bus, NotFound
from bus.envelope import request_id_of


async def answering(bus: Bus, subject: str, answer: object, *, after: asyncio.Event | None = None) -> None:
    """A subscriber of ``subject`` answering ``answer`` (an error when it is one) once ``after`` is set."""

    async def reply(msg: Msg) -> None:
        if after is not None:
            await after.wait()
        if isinstance(answer, NotFound):
            await bus.reply(msg, request_id_of(msg.data) or "", error=answer.to_wire())
        else:
            await bus.reply(msg, request_id_of(msg.data) or "", answer)

    await bus.subscribe(bus.subject(subject), reply)


async def test_every_subscriber_answers_and_the_late_and_the_broken_are_left_out(bus: Bus) -> None:
    never = asyncio.Event()
    await answering(bus, "census", {"process": "a"})
    await answering(bus, "census", {"process": "b"})
    await answering(bus, "census", NotFound("nothing here"))
    await answering(bus, "census", {"process": "late"}, after=never)
    await bus.flush()
    answers = await bus.gather("census", {}, within=5.0, quiet=0.3)
    assert sorted(answer["process"] for answer in answers) == ["a", "b"]
    never.set()


async def test_nobody_listening_is_no_answer(bus: Bus) -> None:
    assert await bus.gather("nobody.listens", {}, within=5.0, quiet=0.3) == []
