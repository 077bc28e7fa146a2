"""A sqlite store with ``idle_close`` lets its file go while unused and opens it again on the next
statement (node stores, a thousand of them in a simulating process), on real sqlite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from runtime.store import SqliteStore

MIGRATIONS = ["CREATE TABLE things (name TEXT PRIMARY KEY)"]
IDLE = 0.2


def holds_open(path: Path) -> bool:
    return any(Path(opened.path) == path for opened in psutil.Process().open_files())


async def wait_until_closed(path: Path) -> None:
    async with asyncio.timeout(10):
        while holds_open(path):
            await asyncio.sleep(0.05)


async def test_an_idle_store_closes_its_file_and_the_next_statement_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = SqliteStore(path, MIGRATIONS, idle_close=IDLE)
    await store.open()
    try:
        await store.execute("INSERT INTO things (name) VALUES (?)", ("first",))
        assert holds_open(path)
        await wait_until_closed(path)

        assert await store.fetchall("SELECT name FROM things") == [{"name": "first"}]
        assert holds_open(path)
        await store.execute("INSERT INTO things (name) VALUES (?)", ("second",))
        await wait_until_closed(path)
        assert [row["name"] for row in await store.fetchall("SELECT name FROM things ORDER BY name")] == [
            "first",
            "second",
        ]
    finally:
        await store.close()
    assert not holds_open(path)


async def test_a_transaction_longer_than_the_idle_time_keeps_its_connection(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = SqliteStore(path, MIGRATIONS, idle_close=IDLE)
    await store.open()
    try:
        async with store.transaction() as db:
            await db.execute("INSERT INTO things (name) VALUES (?)", ("slow",))
            await asyncio.sleep(IDLE * 3)
            assert holds_open(path)
            await db.execute("INSERT INTO things (name) VALUES (?)", ("slower",))
        assert len(await store.fetchall("SELECT name FROM things")) == 2
    finally:
        await store.close()


async def test_a_store_without_idle_close_keeps_its_file_and_a_closed_one_refuses(tmp_path: Path) -> None:
    path = tmp_path / "conductor.sqlite"
    store = SqliteStore(path, MIGRATIONS)
    await store.open()
    await store.execute("INSERT INTO things (name) VALUES (?)", ("kept",))
    await asyncio.sleep(IDLE * 3)
    assert holds_open(path)
    await store.close()
    assert not holds_open(path)
    with pytest.raises(RuntimeError, match="is not open"):
        await store.execute("SELECT 1")
