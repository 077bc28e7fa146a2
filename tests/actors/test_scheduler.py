"""The scheduler actor: spread weighing, atomic claims under load (also across replicas), release,
idempotency, liveness events, exclusions and input checks, on a real nats-server and sqlite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg

from actors.scheduler import BEST_HOST, SchedulerActor
from bus import Bus, InvalidRequest, NoResponders, NotFound, NoValidHost, decode
from runtime.config import Config

SMALL = {"vcpus": 1, "memory_mb": 512, "disk_gb": 10}

# name: (vcpus, memory_mb, disk_gb); with SMALL claims and the default ratios (16, 1, 1)
# RAM binds on c1 (8) and c4 (6), disk on c2 (10), vCPU on c3 (16): 40 claims fit
LIMITED_HOSTS = {
    "c1": (4, 4096, 200),
    "c2": (4, 16384, 100),
    "c3": (1, 65536, 1000),
    "c4": (8, 3072, 500),
}
FITS = 40


class Events:
    """Node events as they arrive on ``evt.node.>``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []

    async def on_message(self, msg: Msg) -> None:
        event = decode(msg.data).body
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def wait_for(self, event_type: str, host: str) -> dict[str, Any]:
        """The next ``event_type`` event of ``host`` (others are skipped)."""
        async with asyncio.timeout(10):
            while True:
                event = await self.queue.get()
                if event["type"] == event_type and event["id"] == host:
                    return event


@pytest.fixture
async def events(bus: Bus) -> AsyncIterator[Events]:
    received = Events()
    subscription = await bus.subscribe(bus.subject("evt.node.>"), received.on_message)
    await bus.flush()
    yield received
    await subscription.unsubscribe()


async def start_scheduler(start_actor, config: Config, bus: Bus, **options: Any) -> SchedulerActor:
    """Start a scheduler and wait until nats-server routes calls to it.

    ``Actor.start()`` can return a moment before the server has the actor's SUB (nats-py
    2.16's ``flush()`` writes its PING ahead of the commands still pending), so a first
    call could otherwise get ``NoResponders``.
    """
    scheduler = await start_actor(SchedulerActor, config, **options)
    async with asyncio.timeout(10):
        while True:
            try:
                await bus.call("scheduler.ping")
            except NoResponders:
                await asyncio.sleep(0.01)
            else:
                return scheduler


async def report(bus: Bus, host: str, vcpus: int, memory_mb: int, disk_gb: int) -> dict[str, Any]:
    return await bus.call(
        "scheduler.report_capacity",
        {"host": host, "vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb},
    )


async def claim(bus: Bus, instance_uuid: str, **overrides: Any) -> str:
    reply = await bus.call(
        "scheduler.select_destinations", {"instance_uuid": instance_uuid, **SMALL, **overrides}
    )
    return reply["host"]


async def hosts(bus: Bus) -> dict[str, dict[str, Any]]:
    return {host["host"]: host for host in await bus.call("scheduler.list_hosts")}


def assert_within_capacity(by_host: dict[str, dict[str, Any]], allocations: list[dict[str, Any]]) -> None:
    """No host is over capacity, and each host's usage is the sum of its allocations."""
    for name, host in by_host.items():
        mine = [allocation for allocation in allocations if allocation["host"] == name]
        assert host["instances"] == len(mine)
        for resource in ("vcpus", "memory_mb", "disk_gb"):
            assert host[f"{resource}_used"] == sum(allocation[resource] for allocation in mine)
            assert host[f"{resource}_free"] >= 0, (name, resource, host)


async def test_claim_spreads_to_the_host_with_most_free_ram(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "small", 8, 2048, 100)
    await report(bus, "big", 8, 4096, 100)
    await report(bus, "medium", 8, 3072, 100)

    assert await claim(bus, "i-1", memory_mb=2048) == "big"
    assert await claim(bus, "i-2", memory_mb=1024) == "medium"
    assert await claim(bus, "i-3", memory_mb=1024) == "small"

    by_host = await hosts(bus)
    assert by_host["big"]["memory_mb_used"] == 2048 and by_host["big"]["memory_mb_free"] == 2048
    assert by_host["big"]["vcpus_free"] == 8 * 16 - 1
    assert by_host["big"]["generation"] == 1 and by_host["big"]["instances"] == 1
    allocation = await bus.call("scheduler.get_allocation", {"instance_uuid": "i-1"})
    assert allocation["host"] == "big" and allocation["memory_mb"] == 2048
    assert [a["instance_uuid"] for a in await bus.call("scheduler.list_allocations")] == ["i-1", "i-2", "i-3"]


async def test_concurrent_claims_never_overcommit(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    for name, totals in LIMITED_HOSTS.items():
        await report(bus, name, *totals)

    results = await asyncio.gather(*(claim(bus, f"i-{n}") for n in range(200)), return_exceptions=True)

    placed = [result for result in results if isinstance(result, str)]
    refused = [result for result in results if not isinstance(result, str)]
    assert len(placed) == FITS
    assert all(isinstance(error, NoValidHost) for error in refused), refused[:3]
    assert "no valid host for 512 MB RAM, 1 vCPU, 10 GB disk: 4 hosts known" in refused[0].message
    assert "short of" in refused[0].message
    by_host = await hosts(bus)
    assert_within_capacity(by_host, await bus.call("scheduler.list_allocations"))
    assert {name: host["instances"] for name, host in by_host.items()} == {
        "c1": 8,
        "c2": 10,
        "c3": 16,
        "c4": 6,
    }


async def test_two_replicas_on_one_store_never_overcommit(bus: Bus, start_actor, config: Config) -> None:
    first = await start_scheduler(start_actor, config, bus)
    second = await start_scheduler(start_actor, config, bus)
    assert first.store is not second.store  # two connections to one sqlite file, or one database
    assert first.store.location == second.store.location
    for name, totals in LIMITED_HOSTS.items():
        await report(bus, name, *totals)

    # half the claims straight to each replica (the bus's queue group would split them at
    # random): two connections race for the same rows
    results = await asyncio.gather(
        *(
            (first if n % 2 else second).select_destinations(instance_uuid=f"i-{n}", **SMALL)
            for n in range(200)
        ),
        return_exceptions=True,
    )

    placed = [result for result in results if isinstance(result, dict)]
    assert len(placed) == FITS
    assert all(isinstance(result, NoValidHost) for result in results if not isinstance(result, dict))
    assert_within_capacity(await hosts(bus), await bus.call("scheduler.list_allocations"))
    # through the bus, whichever replica answers, a placed instance keeps its host
    n = next(n for n, result in enumerate(results) if isinstance(result, dict))
    assert await asyncio.gather(*(claim(bus, f"i-{n}") for _ in range(4))) == [results[n]["host"]] * 4


async def test_release_gives_capacity_back_and_is_idempotent(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "only", 1, 1024, 10)
    assert await claim(bus, "i-1", memory_mb=1024, disk_gb=10) == "only"
    with pytest.raises(NoValidHost):
        await claim(bus, "i-2", memory_mb=1024, disk_gb=10)

    assert await bus.call("scheduler.release", {"instance_uuid": "i-1"}) == {"released": True}
    host = (await hosts(bus))["only"]
    assert [host[key] for key in ("vcpus_used", "memory_mb_used", "disk_gb_used", "instances")] == [0] * 4
    assert host["generation"] == 2
    assert await bus.call("scheduler.release", {"instance_uuid": "i-1"}) == {"released": False}
    assert await bus.call("scheduler.release", {"instance_uuid": "never"}) == {"released": False}
    assert (await hosts(bus))["only"]["generation"] == 2
    with pytest.raises(NotFound):
        await bus.call("scheduler.get_allocation", {"instance_uuid": "i-1"})
    assert await claim(bus, "i-2", memory_mb=1024, disk_gb=10) == "only"


async def test_same_instance_claimed_twice_gets_one_claim(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "a", 4, 4096, 100)
    await report(bus, "b", 4, 4096, 100)

    first = await claim(bus, "i-1")
    again = await asyncio.gather(*(claim(bus, "i-1") for _ in range(10)))

    assert set(again) == {first}
    by_host = await hosts(bus)
    assert sum(host["memory_mb_used"] for host in by_host.values()) == SMALL["memory_mb"]
    assert sum(host["instances"] for host in by_host.values()) == 1
    assert len(await bus.call("scheduler.list_allocations")) == 1


async def test_dead_host_is_skipped_announced_down_and_back_up(
    bus: Bus, start_actor, config: Config, events: Events
) -> None:
    await start_scheduler(start_actor, config, bus, service_down_time=0.3, liveness_interval=0.05)
    await report(bus, "roomy", 8, 8192, 100)
    up = await events.wait_for("node.up", "roomy")
    assert up["kind"] == "node" and up["state"]["alive"] and up["state"]["memory_mb"] == 8192

    down = await events.wait_for("node.down", "roomy")
    assert down["state"]["alive"] is False
    assert (await hosts(bus))["roomy"]["alive"] is False

    await report(bus, "tight", 8, 1024, 100)
    assert await claim(bus, "i-1") == "tight"
    with pytest.raises(NoValidHost) as refused:
        await claim(bus, "i-2", memory_mb=4096)
    assert "1 down" in refused.value.message

    await report(bus, "roomy", 8, 8192, 100)
    back = await events.wait_for("node.up", "roomy")
    assert back["state"]["alive"] is True
    assert await claim(bus, "i-3") == "roomy"


async def test_a_down_host_is_announced_once(bus: Bus, start_actor, config: Config, events: Events) -> None:
    await start_scheduler(start_actor, config, bus, service_down_time=0.1, liveness_interval=0.02)
    await report(bus, "gone", 1, 1024, 10)
    await events.wait_for("node.down", "gone")
    await report(bus, "marker", 1, 1024, 10)
    await events.wait_for("node.down", "marker")
    assert [(event["type"], event["id"]) for event in events.seen] == [
        ("node.up", "gone"),
        ("node.down", "gone"),
        ("node.up", "marker"),
        ("node.down", "marker"),
    ]


async def test_exclude_hosts_is_honoured(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "a", 4, 8192, 100)
    await report(bus, "b", 4, 4096, 100)

    assert await claim(bus, "i-1", exclude_hosts=["a"]) == "b"
    with pytest.raises(NoValidHost) as refused:
        await claim(bus, "i-2", exclude_hosts=["a", "b"])
    assert "2 hosts known, 2 excluded" in refused.value.message


async def test_containers_go_to_hosts_of_containers_and_nothing_else_does(
    bus: Bus, start_actor, config: Config
) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "vm-host", 4, 4096, 100)
    await bus.call(
        "scheduler.report_capacity",
        {"host": "lxc-host", "vcpus": 4, "memory_mb": 8192, "disk_gb": 100, "hypervisor_type": "lxc"},
    )

    assert await claim(bus, "vm-1") == "vm-host"  # though the container host has more free RAM
    assert await claim(bus, "vm-2", hypervisor_type="qemu") == "vm-host"
    assert await claim(bus, "c-1", hypervisor_type="lxc") == "lxc-host"
    with pytest.raises(NoValidHost) as refused:
        await claim(bus, "vm-3", exclude_hosts=["vm-host"])
    assert "2 hosts known, 1 excluded, 1 running containers" in refused.value.message
    with pytest.raises(NoValidHost) as refused:
        await claim(bus, "c-2", hypervisor_type="lxc", memory_mb=8192)
    assert "2 hosts known, 1 running no containers, 1 short of RAM" in refused.value.message
    assert {allocation["instance_uuid"] for allocation in await bus.call("scheduler.list_allocations")} == {
        "vm-1",
        "vm-2",
        "c-1",
    }


async def test_no_hosts_at_all_says_so(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    with pytest.raises(NoValidHost, match="no compute host has reported"):
        await claim(bus, "i-1")


@pytest.mark.parametrize(
    "body",
    [
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": -512, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": 0, "memory_mb": 512, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 512},
        {"instance_uuid": "i-1", "vcpus": "1", "memory_mb": 512, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": True, "memory_mb": 512, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 512.5, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 2**40, "disk_gb": 10},
        {"instance_uuid": "", "vcpus": 1, "memory_mb": 512, "disk_gb": 10},
        {"instance_uuid": 7, "vcpus": 1, "memory_mb": 512, "disk_gb": 10},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 512, "disk_gb": 10, "exclude_hosts": "a"},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 512, "disk_gb": 10, "exclude_hosts": [1]},
        {"instance_uuid": "i-1", "vcpus": 1, "memory_mb": 512, "disk_gb": 10, "flavor": "m1"},
    ],
)
async def test_bad_claims_are_refused_and_change_nothing(
    bus: Bus, start_actor, config: Config, body: dict[str, Any]
) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "a", 4, 4096, 100)
    before = await hosts(bus)

    with pytest.raises(InvalidRequest):
        await bus.call("scheduler.select_destinations", body)

    assert await hosts(bus) == before
    assert await bus.call("scheduler.list_allocations") == []


async def test_bad_capacity_reports_are_refused(bus: Bus, start_actor, config: Config) -> None:
    await start_scheduler(start_actor, config, bus)
    for body in (
        {"host": "a", "vcpus": 4, "memory_mb": -1, "disk_gb": 100},
        {"host": "", "vcpus": 4, "memory_mb": 1024, "disk_gb": 100},
        {"host": "a", "vcpus": 4.0, "memory_mb": 1024, "disk_gb": 100},
        {"host": "a", "vcpus": 4, "memory_mb": 1024},
        {"host": "a", "vcpus": 4, "memory_mb": 1024, "disk_gb": 100, "hypervisor_type": None},
    ):
        with pytest.raises(InvalidRequest):
            await bus.call("scheduler.report_capacity", body)
    for body in ({"instance_uuid": ""}, {}):
        with pytest.raises(InvalidRequest):
            await bus.call("scheduler.release", body)
        with pytest.raises(InvalidRequest):
            await bus.call("scheduler.get_allocation", body)
    assert await bus.call("scheduler.list_hosts") == []


async def test_a_disabled_host_is_not_chosen(bus: Bus, start_actor, config: Config) -> None:
    scheduler = await start_scheduler(start_actor, config, bus)
    await report(bus, "a", 4, 8192, 100)
    await report(bus, "b", 4, 4096, 100)
    await scheduler.store.execute("UPDATE hosts SET enabled = 0 WHERE host = 'a'")

    assert await claim(bus, "i-1") == "b"
    assert (await hosts(bus))["a"]["enabled"] is False


async def test_capacity_change_bumps_generation_but_a_heartbeat_does_not(
    bus: Bus, start_actor, config: Config
) -> None:
    await start_scheduler(start_actor, config, bus)
    first = await report(bus, "a", 4, 4096, 100)
    beat = await report(bus, "a", 4, 4096, 100)
    grown = await report(bus, "a", 8, 4096, 100)

    assert first["generation"] == beat["generation"] == 0
    assert beat["last_seen"] >= first["last_seen"]
    assert grown["generation"] == 1 and grown["vcpus"] == 8 and grown["vcpus_free"] == 8 * 16


async def test_a_scheduler_started_with_other_allocation_ratios_applies_them_to_known_hosts(
    bus: Bus, start_actor, config: Config
) -> None:
    first = await start_scheduler(start_actor, config, bus)
    reported = await report(bus, "a", 8, 4096, 100)
    assert reported["vcpus_free"] == 8 * 16

    second = await start_scheduler(start_actor, config, bus, cpu_allocation_ratio=2.0)

    for replica in (first, second):  # the capacity is the store's, whichever replica reads it
        (host,) = await replica.list_hosts()
        assert host["vcpus_free"] == 8 * 2 and host["generation"] == reported["generation"] + 1
    assert await claim(bus, "i-1", vcpus=16) == "a"
    with pytest.raises(NoValidHost, match="1 short of vCPU"):
        await claim(bus, "i-2", vcpus=1)


async def test_a_claim_reads_the_free_capacity_index_not_every_host(
    bus: Bus, start_actor, config: Config
) -> None:
    scheduler = await start_scheduler(start_actor, config, bus)
    for n in range(50):
        await report(bus, f"h{n:02}", 8, 4096 + n, 100)
    query = BEST_HOST.format(excluding="", kind="<>")
    params = {**SMALL, "since": 0.0}

    async with scheduler.store.transaction() as db:
        if db.dialect == "postgresql":  # a table this small is scanned unless scans are off
            await db.execute("SET LOCAL enable_seqscan = off")
            plan = [row["QUERY PLAN"] for row in await db.fetchall(f"EXPLAIN {query}", params)]
        else:
            plan = [row["detail"] for row in await db.fetchall(f"EXPLAIN QUERY PLAN {query}", params)]

    assert any("hosts_by_free" in line for line in plan), plan
    assert await claim(bus, "i-1") == "h49"


async def test_a_resize_holds_both_claims_until_confirmed_or_reverted(
    bus: Bus, start_actor, config: Config
) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "only", 4, 3072, 100)
    assert await claim(bus, "i-1", vcpus=1, memory_mb=1024, disk_gb=10) == "only"

    async def used() -> list[int]:
        host = (await hosts(bus))["only"]
        return [host["vcpus_used"], host["memory_mb_used"], host["disk_gb_used"]]

    async def claims() -> list[tuple[int, bool]]:
        return sorted(
            (c["memory_mb"], bool(c.get("resize_held"))) for c in await bus.call("scheduler.list_allocations")
        )

    async def resize(**size: int) -> str:
        reply = await bus.call("scheduler.claim_resize", {"instance_uuid": "i-1", **size})
        return str(reply["host"])

    with pytest.raises(NoValidHost, match="its host only short of RAM"):
        await resize(vcpus=1, memory_mb=2560, disk_gb=10)  # 1024 held + 2560 > 3072
    assert await used() == [1, 1024, 10] and await claims() == [(1024, False)]
    with pytest.raises(NotFound):
        await bus.call(
            "scheduler.claim_resize", {"instance_uuid": "never", "vcpus": 1, "memory_mb": 1, "disk_gb": 0}
        )

    assert await resize(vcpus=2, memory_mb=2048, disk_gb=20) == "only"
    assert await resize(vcpus=2, memory_mb=2048, disk_gb=20) == "only"  # sent again: one claim
    assert await used() == [3, 3072, 30] and await claims() == [(1024, True), (2048, False)]
    assert await bus.call("scheduler.revert_resize", {"instance_uuid": "i-1"}) == {"released": True}
    assert await bus.call("scheduler.revert_resize", {"instance_uuid": "i-1"}) == {"released": False}
    assert await used() == [1, 1024, 10] and await claims() == [(1024, False)]

    await resize(vcpus=2, memory_mb=2048, disk_gb=20)
    assert await bus.call("scheduler.confirm_resize", {"instance_uuid": "i-1"}) == {"released": True}
    assert await bus.call("scheduler.confirm_resize", {"instance_uuid": "i-1"}) == {"released": False}
    assert await used() == [2, 2048, 20] and await claims() == [(2048, False)]

    await resize(vcpus=1, memory_mb=512, disk_gb=20)
    assert await bus.call("scheduler.release", {"instance_uuid": "i-1"}) == {"released": True}
    assert await used() == [0, 0, 0] and await claims() == []


async def test_an_evacuate_moves_the_claim_off_its_host_in_one_step(
    bus: Bus, start_actor, config: Config
) -> None:
    await start_scheduler(start_actor, config, bus)
    await report(bus, "a", 4, 8192, 100)
    await report(bus, "b", 4, 4096, 100)
    await report(bus, "c", 4, 1024, 100)
    assert await claim(bus, "i-1", vcpus=1, memory_mb=1024, disk_gb=10) == "a"

    async def evacuate(instance_uuid: str, **extra: Any) -> str:
        size = {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10}
        reply = await bus.call(
            "scheduler.claim_evacuate", {"instance_uuid": instance_uuid, "source_host": "a", **size, **extra}
        )
        return str(reply["host"])

    async def used() -> dict[str, int]:
        return {name: host["memory_mb_used"] for name, host in (await hosts(bus)).items()}

    async def claims() -> list[tuple[str, str]]:
        return sorted((c["instance_uuid"], c["host"]) for c in await bus.call("scheduler.list_allocations"))

    assert await evacuate("i-1") == "b"  # the most free RAM but its own host's
    assert await used() == {"a": 0, "b": 1024, "c": 0} and await claims() == [("i-1", "b")]
    assert await evacuate("i-1") == "b"  # sent again: the claim stays where it went
    assert await used() == {"a": 0, "b": 1024, "c": 0} and await claims() == [("i-1", "b")]

    assert await claim(bus, "i-2", vcpus=1, memory_mb=2048, disk_gb=10) == "a"
    with pytest.raises(NoValidHost, match="the host asked for short of RAM"):
        await evacuate("i-2", memory_mb=2048, host="c")
    with pytest.raises(NoValidHost, match="excluded"):
        await evacuate("i-2", memory_mb=2048, host="a")
    with pytest.raises(NotFound, match=r"Compute host zz not found\."):
        await evacuate("i-2", memory_mb=2048, host="zz")
    assert await used() == {"a": 2048, "b": 1024, "c": 0}  # refused: nothing moved
    assert await evacuate("i-2", memory_mb=2048, host="b") == "b"  # forced
    assert await used() == {"a": 0, "b": 3072, "c": 0}
    assert await evacuate("i-3") == "c"  # an instance with no claim gets one (b and c: as much RAM free)
    assert await claims() == [("i-1", "b"), ("i-2", "b"), ("i-3", "c")]
    assert await used() == {"a": 0, "b": 3072, "c": 1024}
