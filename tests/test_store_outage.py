"""An actor whose PostgreSQL goes away answers a typed, transient error and keeps serving; when
the database is back, the same actor answers again without a restart (its pool reconnects)."""

from __future__ import annotations

import asyncio

import pytest

from actors.scheduler import SchedulerActor
from api.scheduler import SchedulerReader
from bus import Bus, EmbeddedNatsServer, StoreUnavailable
from deploy.postgres import LocalPostgres
from runtime.config import Config


async def test_an_actor_answers_store_unavailable_while_its_database_is_away_then_recovers(
    nats_server: EmbeddedNatsServer, bus: Bus, tmp_path
) -> None:
    with LocalPostgres() as postgres:
        config = Config(data_dir=tmp_path / "data", nats_url=nats_server.url, database=postgres.dsn())
        async with await Bus.connect(nats_server.url, name="scheduler") as actor_bus:
            scheduler = SchedulerActor(actor_bus, config)
            await scheduler.start()
            try:
                hosts = SchedulerReader.client(bus, timeout=30)
                assert await hosts.list_hosts() == []
                await asyncio.to_thread(postgres.stop)
                with pytest.raises(StoreUnavailable):  # answered, not a timeout
                    await hosts.list_hosts()
                assert (await SchedulerReader.client(bus).ping())["actor"] == "scheduler"  # still serving
                await asyncio.to_thread(postgres.start)
                async with asyncio.timeout(30):
                    while True:
                        try:
                            assert await hosts.list_hosts() == []
                            break
                        except StoreUnavailable:
                            await asyncio.sleep(0.2)
            finally:
                await scheduler.stop()
