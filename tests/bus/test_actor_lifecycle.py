"""Replicas, backpressure, draining, supervision, nats-server restarts and prefixes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter as Tally
from pathlib import Path

import pytest

from bus import (
    Actor,
    ActorState,
    Bus,
    EmbeddedNatsServer,
    NoResponders,
    Overloaded,
    Supervisor,
)
from bus.api import ServiceAPI, call
from runtime.config import Config


class WorkerAPI(ServiceAPI, address="worker"):
    @call
    async def work(self, *, seconds: float = 0.0) -> str: ...

    @call
    async def fail_soon(self) -> None: ...


class DeferredAPI(ServiceAPI, address="deferred"):
    @call
    async def later(self) -> None: ...


class Worker(Actor, WorkerAPI):
    name = "worker"

    def __init__(self, bus: Bus, *, max_inflight: int | None = None, max_backlog: int | None = None) -> None:
        if max_inflight is not None:
            self.max_inflight = max_inflight  # type: ignore[misc]
        if max_backlog is not None:
            self.max_backlog = max_backlog  # type: ignore[misc]
        super().__init__(bus)
        self.running = 0
        self.peak = 0

    async def work(self, *, seconds: float = 0.0) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        return self.instance_id

    async def fail_soon(self) -> None:
        async def fail() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("background loop broke")

        self.spawn(fail())


async def test_two_replicas_in_one_queue_group_share_load(nats_server: EmbeddedNatsServer) -> None:
    async with (
        await Bus.connect(nats_server.url) as bus_a,
        await Bus.connect(nats_server.url) as bus_b,
        await Bus.connect(nats_server.url) as client,
    ):
        first, second = Worker(bus_a), Worker(bus_b)
        await first.start()
        await second.start()
        try:
            served = Tally(await asyncio.gather(*(client.call("worker.work") for _ in range(200))))
        finally:
            await first.stop()
            await second.stop()
    assert set(served) == {first.instance_id, second.instance_id}
    assert min(served.values()) >= 20


async def test_stop_drains_accepted_calls(bus: Bus) -> None:
    actor = Worker(bus)
    await actor.start()
    calls = [asyncio.create_task(bus.call("worker.work", {"seconds": 0.5})) for _ in range(10)]
    while actor.inflight < 10:
        await asyncio.sleep(0.01)
    await actor.stop()
    assert actor.state is ActorState.STOPPED
    assert await asyncio.gather(*calls) == [actor.instance_id] * 10
    with pytest.raises(NoResponders):
        await bus.call("worker.work")


async def test_inflight_limit_holds_and_overflow_is_refused_not_lost(bus: Bus) -> None:
    actor = Worker(bus, max_inflight=2, max_backlog=3)
    await actor.start()
    try:
        results = await asyncio.gather(
            *(bus.call("worker.work", {"seconds": 0.2}) for _ in range(12)), return_exceptions=True
        )
    finally:
        await actor.stop()
    answered = [r for r in results if r == actor.instance_id]
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert actor.peak == 2
    assert len(answered) + len(refused) == 12
    assert 3 <= len(answered) <= 5  # at most in-flight + backlog are taken at once
    assert refused


def worker_tasks(actor: Actor) -> int:
    return sum(task.get_name() == f"{actor.address}-worker" for task in asyncio.all_tasks())


async def test_workers_start_with_the_work_up_to_the_limit_and_an_idle_actor_keeps_none(bus: Bus) -> None:
    actor = Worker(bus, max_inflight=8)
    await actor.start()
    try:
        assert worker_tasks(actor) == 0
        calls = [asyncio.create_task(bus.call("worker.work", {"seconds": 0.3})) for _ in range(20)]
        async with asyncio.timeout(10):
            while actor.inflight < 8:
                await asyncio.sleep(0.01)
        assert worker_tasks(actor) == 8 and actor.backlog == 12
        assert await asyncio.gather(*calls) == [actor.instance_id] * 20
        assert actor.peak == 8
        async with asyncio.timeout(10):
            while worker_tasks(actor):
                await asyncio.sleep(0.01)
        assert await bus.call("worker.work") == actor.instance_id  # and a new message gets one again
    finally:
        await actor.stop()


async def test_supervisor_restarts_a_crashed_actor(bus: Bus) -> None:
    supervisor = Supervisor(lambda: Worker(bus), backoff_min=0.05)
    await supervisor.start()
    try:
        first = await supervisor.wait_running()
        await bus.call("worker.fail_soon")
        async with asyncio.timeout(10):
            while supervisor.restarts == 0 or supervisor.actor is first:
                await asyncio.sleep(0.01)
        second = await supervisor.wait_running()
        assert first.state is ActorState.CRASHED
        assert await bus.call("worker.work") == second.instance_id
        assert supervisor.restarts == 1
    finally:
        await supervisor.stop()


async def test_client_and_actor_survive_a_nats_server_restart(tmp_path) -> None:
    server = EmbeddedNatsServer(tmp_path)
    await server.start()
    try:
        async with (
            await Bus.connect(server.url) as actor_bus,
            await Bus.connect(server.url) as client,
        ):
            actor = Worker(actor_bus)
            await actor.start()
            assert await client.call("worker.work") == actor.instance_id
            await server.kill()
            await asyncio.sleep(0.5)
            await server.start()
            answer = None
            async with asyncio.timeout(30):
                while answer is None:
                    try:
                        answer = await client.call("worker.work", timeout=0.5)
                    except (NoResponders, TimeoutError):
                        await asyncio.sleep(0.1)
            assert answer == actor.instance_id
            await actor.stop()
    finally:
        await server.stop()


async def test_two_prefixes_on_one_server_do_not_see_each_other(
    nats_server: EmbeddedNatsServer,
) -> None:
    async with (
        await Bus.connect(nats_server.url, prefix="cloud-a") as bus_a,
        await Bus.connect(nats_server.url, prefix="cloud-b") as bus_b,
    ):
        seen_by_a: list[str] = []

        async def spy(msg) -> None:
            seen_by_a.append(msg.subject)

        await bus_a.subscribe("cloud-a.>", spy)
        only_a = Worker(bus_a)
        await only_a.start()
        try:
            with pytest.raises(NoResponders):
                await bus_b.call("worker.work")
            await bus_b.publish("evt.instance.p.i", {"type": "x"})
            await bus_b.flush()
            assert await bus_a.call("worker.work") == only_a.instance_id
        finally:
            await only_a.stop()
        assert seen_by_a and all(s.startswith("cloud-a.") or s.startswith("_INBOX") for s in seen_by_a)


class Deferred(Actor, DeferredAPI):
    name = "deferred"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def later(self) -> None:
        async def work() -> None:
            await asyncio.sleep(1.0)  # well past the request's deadline
            seq = await self.bus.publish_event("evt.test._.later", {"after": "the deadline"})
            await DeferredAPI.client(self.bus).ping()
            self.done.set_result(seq)

        self.spawn(work())


async def test_background_work_outlives_the_deadline_of_the_request_that_started_it(bus: Bus) -> None:
    actor = Deferred(bus)
    await actor.start()
    try:
        await bus.call("deferred.later", timeout=0.25)  # room for a loaded machine to start the handler
        assert await asyncio.wait_for(actor.done, 5) >= 1
        assert actor.state is ActorState.RUNNING
    finally:
        await actor.stop()


async def test_a_supervisor_whose_factory_fails_says_so_at_start(bus: Bus) -> None:
    def broken() -> Actor:
        raise ValueError("invalid host name 'a.b'")

    with pytest.raises(ValueError, match="invalid host name"):
        await Supervisor(broken).start()


class NeverStarts(Actor):
    name = "never-starts"

    def __init__(self, bus: Bus, config: Config) -> None:
        super().__init__(bus)
        self.config = config

    async def on_start(self) -> None:
        raise ConnectionRefusedError("the database is not there yet")


async def test_a_supervisor_still_waiting_names_its_actor_and_never_its_arguments(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(Path("/nonexistent"), "nats://127.0.0.1:1", database="postgresql://u:s3cret-pw@h/db")
    supervisor = Supervisor(functools.partial(NeverStarts, bus, config), backoff_min=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="bus.actor"):
            await supervisor.start(timeout=0.3)
    finally:
        await supervisor.stop()
    assert "no NeverStarts actor serving after 0 s" in caplog.text
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(config)


async def test_a_call_reaching_an_actor_still_starting_is_answered(nats_server: EmbeddedNatsServer) -> None:
    """Its subscription is live before the actor counts as running (it flushes first): a call in
    between is answered once it runs, never refused as ActorStopped."""
    async with await Bus.connect(nats_server.url) as actor_bus, await Bus.connect(nats_server.url) as client:
        subscribed = asyncio.Event()
        release = asyncio.Event()
        flush = actor_bus.flush

        async def slow_flush(timeout: float = 5.0) -> None:
            await flush(timeout)
            subscribed.set()
            await release.wait()

        actor_bus.flush = slow_flush  # type: ignore[method-assign]
        worker = Worker(actor_bus)
        starting = asyncio.create_task(worker.start())
        await asyncio.wait_for(subscribed.wait(), 5)
        assert worker.state is ActorState.STARTING
        answered = asyncio.create_task(WorkerAPI.client(client, timeout=5).work())
        await asyncio.sleep(0.2)
        release.set()
        await starting
        try:
            assert await answered == worker.instance_id
        finally:
            await worker.stop()


async def test_stop_ends_a_background_task_that_lost_its_first_cancellation(bus: Bus) -> None:
    """Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its inner future
    completes; the task runs on as if never cancelled. Stopping cancels it again."""
    actor = Worker(bus)
    await actor.start()
    cancelled = 0

    async def loses_one_cancellation() -> None:
        nonlocal cancelled
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled += 1
                if cancelled > 1:
                    raise

    actor.spawn(loses_one_cancellation(), name="loses-one-cancellation")
    await asyncio.sleep(0)
    await asyncio.wait_for(actor.stop(), 10)
    assert cancelled == 2 and actor.state is ActorState.STOPPED
