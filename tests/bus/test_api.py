"""Typed service APIs (bus/api.py): facets, typed clients, arguments checked at dispatch, replies checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal, TypedDict

import pytest
from msgspec import Meta

from bus import Actor, Bus, CallTimeout, InvalidRequest, NoSuchMethod, NotFound, RemoteError
from bus.api import ServiceAPI, Topic, call, cast, subjects


class Box(TypedDict):
    name: str
    size: int


class BoxReader(ServiceAPI, address="boxes"):
    """A small facet: what a reader may ask."""

    @call
    async def get(self, *, name: str) -> Box:
        """One box. :raises NotFound:"""


class Boxes(BoxReader, address="boxes"):
    """The whole API, built on the reader's."""

    @call(policy="boxes:write")
    async def put(self, *, name: Annotated[str, Meta(min_length=1)], size: Annotated[int, Meta(ge=0)]) -> Box:
        """Store a box."""

    @cast
    async def shake(self, *, name: str, how: Literal["gently", "hard"] = "gently") -> None:
        """Shake a box; no answer."""

    @call
    async def broken_reply(self) -> Box:
        """Answers something that is not a Box."""

    @call(timeout=0.2)
    async def nap(self, *, seconds: float) -> None:
        """Sleep; a client waits 0.2 s for it unless told otherwise."""


class Shelf(Actor, Boxes):
    name = "boxes"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.boxes: dict[str, Box] = {}
        self.shaken: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def get(self, *, name: str) -> Box:
        if name not in self.boxes:
            raise NotFound(f"no box {name}")
        return self.boxes[name]

    async def put(self, *, name: str, size: int) -> Box:
        self.boxes[name] = {"name": name, "size": size}
        return self.boxes[name]

    async def shake(self, *, name: str, how: str = "gently") -> None:
        await self.shaken.put((name, how))

    async def broken_reply(self) -> Box:
        return {"name": "x"}  # type: ignore[typeddict-item]  # the point of the test

    async def nap(self, *, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture
async def shelf(bus: Bus) -> AsyncIterator[Shelf]:
    actor = Shelf(bus)
    await actor.start()
    yield actor
    await actor.stop()


async def test_a_typed_client_calls_and_casts(bus: Bus, shelf: Shelf) -> None:
    boxes = Boxes.client(bus)
    assert await boxes.put(name="a", size=3) == {"name": "a", "size": 3}
    assert await BoxReader.client(bus).get(name="a") == {"name": "a", "size": 3}
    assert await boxes.shake(name="a", how="hard") is None
    assert await asyncio.wait_for(shelf.shaken.get(), 5) == ("a", "hard")
    assert (await boxes.ping())["address"] == "boxes"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "a", "size": "3"}, "$.size"),
        ({"name": "a", "size": True}, "$.size"),
        ({"name": "a", "size": -1}, "$.size"),
        ({"name": "", "size": 1}, "$.name"),
        ({"name": "a"}, "size"),
        ({"name": "a", "size": 1, "colour": "red"}, "colour"),
    ],
)
async def test_arguments_are_checked_at_dispatch_before_the_handler_runs(
    bus: Bus, shelf: Shelf, body: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidRequest, match=named.replace("$", r"\$")):
        await bus.call("boxes.put", body)
    assert shelf.boxes == {}
    assert await Boxes.client(bus).put(name="still", size=1) == {"name": "still", "size": 1}


async def test_a_cast_with_bad_arguments_runs_nothing(bus: Bus, shelf: Shelf) -> None:
    await bus.cast("boxes.shake", {"name": "a", "how": "violently"})
    await Boxes.client(bus).shake(name="b")
    assert await asyncio.wait_for(shelf.shaken.get(), 5) == ("b", "gently")
    assert shelf.shaken.empty()


async def test_errors_of_meaning_come_back_as_their_class(bus: Bus, shelf: Shelf) -> None:
    with pytest.raises(NotFound, match="no box nothing"):
        await BoxReader.client(bus).get(name="nothing")


async def test_a_reply_that_is_not_its_declared_type_fails_where_replies_are_checked(
    bus: Bus, shelf: Shelf
) -> None:
    shelf.check_replies = True
    with pytest.raises(RemoteError, match="broken_reply"):
        await Boxes.client(bus).broken_reply()
    shelf.check_replies = False
    assert await Boxes.client(bus).broken_reply() == {"name": "x"}


async def test_a_method_has_its_timeout_and_a_client_may_set_another(bus: Bus, shelf: Shelf) -> None:
    with pytest.raises(CallTimeout):
        await Boxes.client(bus).nap(seconds=0.5)
    assert await Boxes.client(bus).options(timeout=2).nap(seconds=0.5) is None


def test_a_handler_whose_parameters_differ_from_the_declaration_is_refused(bus: Bus) -> None:
    class Sloppy(Actor, BoxReader):
        name = "boxes"

        async def get(self, *, name: str, extra: int = 0) -> Box:
            return {"name": name, "size": extra}

    with pytest.raises(TypeError, match=r"differs from BoxReader\.get"):
        Sloppy(bus)


def test_a_facet_method_left_unimplemented_is_refused(bus: Bus) -> None:
    class Half(Actor, BoxReader):
        name = "boxes"

    with pytest.raises(TypeError, match=r"does not implement BoxReader\.get"):
        Half(bus)


def test_a_facet_is_served_only_on_its_address(bus: Bus) -> None:
    class Misplaced(Shelf):
        name = "crates"

    with pytest.raises(TypeError, match="served on 'boxes'"):
        Misplaced(bus)


def test_declared_parameters_must_be_keyword_only() -> None:
    with pytest.raises(TypeError, match="keyword-only"):

        class Positional(ServiceAPI, address="x"):
            @call
            async def get(self, name: str) -> None: ...


class HostAPI(ServiceAPI, address="host.{host}"):
    @call
    async def where(self) -> str: ...


class HostActor(Actor, HostAPI):
    async def where(self) -> str:
        return self.address


async def test_addressed_facets_reach_one_actor_each(bus: Bus) -> None:
    one, two = HostActor(bus, address="host.one"), HostActor(bus, address="host.two")
    await one.start()
    await two.start()
    try:
        assert await HostAPI.client(bus, host="two").where() == "host.two"
        assert await HostAPI.client(bus, host="one").where() == "host.one"
    finally:
        await one.stop()
        await two.stop()
    with pytest.raises(ValueError, match="one token"):
        HostAPI.client(bus, host="a.b")


def test_subjects_are_what_a_client_of_the_facet_may_send_to() -> None:
    assert subjects(BoxReader) == ["boxes.get", "boxes.ping"]
    assert subjects(Boxes) == [
        "boxes.broken_reply", "boxes.get", "boxes.nap", "boxes.ping", "boxes.put", "boxes.shake",
    ]  # fmt: skip
    assert subjects(HostAPI) == ["host.*.ping", "host.*.where"]


class Beat(TypedDict):
    load: int


BEATS = Topic("beat.{host}", Beat)


async def test_a_topic_carries_its_fields_in_the_subject_and_checks_its_body(bus: Bus) -> None:
    got: asyncio.Queue[tuple[dict[str, str], Beat]] = asyncio.Queue()

    async def on_beat(msg) -> None:
        try:
            _, body = BEATS.parse(msg.data, bus.max_bytes)
        except InvalidRequest:
            return
        await got.put((BEATS.fields_of(bus, msg.subject), body))

    await bus.subscribe(bus.subject(BEATS.pattern), on_beat)
    await bus.flush()
    await BEATS.publish(bus, {"load": "high"}, host="h1")  # type: ignore[typeddict-item]  # refused
    await BEATS.publish(bus, {"load": 3}, host="h2")
    assert await asyncio.wait_for(got.get(), 5) == ({"host": "h2"}, {"load": 3})


class ShelfReports(ServiceAPI, address="boxes.from.{host}", caller="host"):
    """What each host tells the shelf: the host is the subject's, only that host may publish there."""

    @call
    async def report(self, *, load: int) -> str:
        """Who reported, as the shelf saw it."""


class ReportingShelf(Shelf, ShelfReports):
    async def report(self, *, load: int, host: str) -> str:
        return f"{host}:{load}"


async def test_a_caller_field_comes_from_the_subject_never_from_the_body(bus: Bus) -> None:
    shelf = ReportingShelf(bus)
    await shelf.start()
    try:
        assert await ShelfReports.client(bus, host="h1").report(load=3) == "h1:3"
        assert (await ShelfReports.client(bus, host="h2").ping())["address"] == "boxes"
        with pytest.raises(InvalidRequest, match="host"):
            await bus.call("boxes.from.h1.report", {"load": 3, "host": "h2"})
        with pytest.raises(NoSuchMethod):
            await bus.call("boxes.report", {"load": 3})
        assert await Boxes.client(bus).put(name="a", size=1) == {"name": "a", "size": 1}
    finally:
        await shelf.stop()
    assert subjects(ShelfReports, host="h1") == ["boxes.from.h1.ping", "boxes.from.h1.report"]
    assert subjects(ShelfReports) == ["boxes.from.*.ping", "boxes.from.*.report"]


def test_a_handler_of_a_caller_facet_must_take_the_caller_field(bus: Bus) -> None:
    class Deaf(Shelf, ShelfReports):
        async def report(self, *, load: int) -> str:
            return str(load)

    with pytest.raises(TypeError, match=r"differs from ShelfReports\.report"):
        Deaf(bus)
