"""One actor's sqlite store: a file under the data directory, schema versioned by migrations.

Each actor keeps its own ``Store`` and no actor reads another's. Statements run on
aiosqlite's thread; ``transaction()`` holds the store's lock and a ``BEGIN IMMEDIATE``
so a read-check-write (a claim, an IP allocation) is atomic, also against other
processes that open the same file (replicas of one actor). Every statement is one hop to
aiosqlite's thread, so hot paths prefer one statement (``UPDATE ... RETURNING``) to a
transaction of several.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import aiosqlite
import orjson

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]
Row = TypeVar("Row")


class Store:
    """``MIGRATIONS[i]`` takes the schema from version i to i+1 (``PRAGMA user_version``)."""

    def __init__(self, path: Path | str, migrations: Sequence[str]) -> None:
        self.path = Path(path)
        self.migrations = migrations
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            await self._db.execute(f"PRAGMA {pragma}")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"store {self.path} is not open")
        return self._db

    async def _migrate(self) -> None:
        async with self.transaction() as db:
            (row,) = await db.execute_fetchall("PRAGMA user_version")
            version = int(row[0])
            for number, script in enumerate(self.migrations[version:], start=version):
                for statement in _statements(script):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number + 1}")
                log.info("store %s migrated to schema version %d", self.path.name, number + 1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """An immediate (write-locked) transaction; commits on success, rolls back on error."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    @overload
    async def fetchone(self, sql: str, params: Params = ()) -> dict[str, Any] | None: ...
    @overload
    async def fetchone(self, sql: str, params: Params = (), *, row: type[Row]) -> Row | None: ...
    async def fetchone(self, sql: str, params: Params = (), *, row: Any = None) -> Any:
        """The first row (one thread hop: execute and fetch together). ``row`` names the TypedDict the
        statement's columns make (for the type checker: rows are dicts either way)."""
        async with self._lock:
            rows = list(await self.db.execute_fetchall(sql, params))
        return dict(rows[0]) if rows else None

    @overload
    async def fetchall(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...
    @overload
    async def fetchall(self, sql: str, params: Params = (), *, row: type[Row]) -> list[Row]: ...
    async def fetchall(self, sql: str, params: Params = (), *, row: Any = None) -> Any:
        """Every row; ``row`` as for ``fetchone``."""
        async with self._lock:
            rows = await self.db.execute_fetchall(sql, params)
        return [dict(found) for found in rows]

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in its own transaction; return the number of rows it changed."""
        async with self._lock, self.db.execute(sql, params) as cursor:
            return cursor.rowcount


@overload
async def fetchone(db: aiosqlite.Connection, sql: str, params: Params = ()) -> dict[str, Any] | None: ...
@overload
async def fetchone(
    db: aiosqlite.Connection, sql: str, params: Params = (), *, row: type[Row]
) -> Row | None: ...
async def fetchone(db: aiosqlite.Connection, sql: str, params: Params = (), *, row: Any = None) -> Any:
    """``Store.fetchone`` inside a ``transaction()``."""
    rows = list(await db.execute_fetchall(sql, params))
    return dict(rows[0]) if rows else None


@overload
async def fetchall(db: aiosqlite.Connection, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...
@overload
async def fetchall(
    db: aiosqlite.Connection, sql: str, params: Params = (), *, row: type[Row]
) -> list[Row]: ...
async def fetchall(db: aiosqlite.Connection, sql: str, params: Params = (), *, row: Any = None) -> Any:
    """``Store.fetchall`` inside a ``transaction()``."""
    return [dict(found) for found in await db.execute_fetchall(sql, params)]


def to_json(value: Any) -> str:
    """Compact, keys sorted (orjson: the JSON columns are read and written on every request)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def from_json(text: str | None, default: Any = None) -> Any:
    return orjson.loads(text) if text else default


def _statements(script: str) -> Iterable[str]:
    return (part.strip() for part in script.split(";") if part.strip())
