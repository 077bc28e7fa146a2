"""One actor's store: its tables, on sqlite (one machine, the default) or PostgreSQL (a cluster's
controllers share one database), schema versioned by migrations.

Each actor keeps its own store and no actor reads another's. Code speaks to a ``Db``: the store
itself (each statement its own transaction) or the one ``transaction()`` yields. Statements are
written once, in the SQL both backends run, with ``?`` or ``:name`` parameters; where the two
differ (a migration converting old rows, a trigger) a ``Migration`` gives each its own text.
PostgreSQL types a parameter by its first use, so that use must tell: ``(name = :name OR :name
IS NULL)``, not the other way round; ``IS NOT DISTINCT FROM ?``, not sqlite's ``IS ?``; a
condition is boolean (``shared = 1``, ``1 = 1``), not a bare integer.

A ``transaction()`` is the store's only writer while it runs, against every process that opens
the same store (replicas of one actor, on one machine or on every controller), so a
read-check-write (a claim, an IP allocation) is atomic: on sqlite a ``BEGIN IMMEDIATE``; on
PostgreSQL an advisory lock on the store, taken by the transaction and released with it. A
statement outside a transaction that writes takes the same lock; reads take none.

On PostgreSQL each store is a schema (its name) in the shared database. Tables keep sqlite's
meaning: ``INTEGER`` is 64-bit, ``REAL`` double precision, and each table has sqlite's implicit
``rowid`` (insertion order, left out of ``*`` as sqlite does); PostgreSQL is given sqlite's
``json_group_array`` and ``json_object`` (two pairs) so queries read the same on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload
from urllib.parse import parse_qs, urlsplit

import orjson

from bus.errors import StoreUnavailable

if TYPE_CHECKING:
    import asyncpg

    from runtime.config import Config

log = logging.getLogger(__name__)

Params = Sequence[Any] | Mapping[str, Any]
Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Migration:
    """A schema step written for each backend, where their SQL differs."""

    sqlite: str
    postgresql: str


Step = str | Migration


class ConstraintViolation(Exception):
    """A statement broke a constraint (unique, foreign key, check): nothing of it was kept."""


class Db(ABC):
    """Statements on one store."""

    dialect: ClassVar[str]

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per row of parameters."""

    @abstractmethod
    async def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]: ...

    @overload
    async def fetchone(self, sql: str, params: Params = ()) -> dict[str, Any] | None: ...
    @overload
    async def fetchone(self, sql: str, params: Params = (), *, row: type[Row]) -> Row | None: ...
    async def fetchone(self, sql: str, params: Params = (), *, row: Any = None) -> Any:
        """The first row. ``row`` names the TypedDict the statement's columns make (for the type
        checker: rows are dicts either way)."""
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    @overload
    async def fetchall(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...
    @overload
    async def fetchall(self, sql: str, params: Params = (), *, row: type[Row]) -> list[Row]: ...
    async def fetchall(self, sql: str, params: Params = (), *, row: Any = None) -> Any:
        """Every row; ``row`` as for ``fetchone``."""
        return await self._rows(sql, params)


class Store(Db):
    """An actor's tables. ``migrations[i]`` takes the schema from version i to i+1."""

    def __init__(self, name: str, migrations: Sequence[Step]) -> None:
        self.name = name
        self.migrations = migrations

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store's rows are (no password): its file, or its database and schema."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema to the latest version."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Db]:
        """The store's only writer while it runs; commits on success, rolls back on error."""

    async def migrate(self, db: Db, version: int, record_version: str) -> None:
        """Run, in ``db``'s transaction, the migrations past ``version`` in this store's dialect;
        ``record_version`` is the statement that keeps the new version (``{}`` its number)."""
        for number, step in enumerate(self.migrations[version:], start=version):
            script = step if isinstance(step, str) else getattr(step, self.dialect)
            for statement in (part.strip() for part in script.split(";")):
                if statement:
                    await db.execute(statement)
            await db.execute(record_version.format(number + 1))
            log.info("store %s migrated to schema version %d", self.name, number + 1)


def open_store(config: Config, name: str, migrations: Sequence[Step]) -> Store:
    """The store of actor ``name``: a schema of the shared PostgreSQL database when the config
    names one, a sqlite file in the data directory otherwise. Call ``open()`` before use."""
    if config.database:
        return PostgresStore(config.database, name, migrations)
    return SqliteStore(config.store_path(name), migrations)


# --- sqlite -------------------------------------------------------------------------------------


BUSY_TIMEOUT_S = 30.0
"""Seconds a statement waits for another process's write transaction on the same file (replicas of
one actor), blocking its event loop meanwhile: theirs are short, their statements never wait on
the bus."""


class _SqliteDb(Db):
    """A sqlite connection used on the event loop's thread: a statement on an indexed table takes
    5 to 15 us there, where a hop to a worker thread (aiosqlite's) cost 60 to 200 us of CPU in
    thread wake-ups, more than the statement itself."""

    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _sqlite_constraints(), contextlib.closing(self.connection.execute(sql, params)) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _sqlite_constraints():
            self.connection.executemany(sql, rows).close()

    async def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]:
        """Each row's values zipped with the column names, unless a name repeats: then the first
        column of that name is kept."""
        with _sqlite_constraints(), contextlib.closing(self.connection.execute(sql, params)) as cursor:
            found = cursor.fetchall()
            if not found:
                return []
            names = [column[0] for column in cursor.description]
        if len(set(names)) < len(names):
            first = {name: names.index(name) for name in names}
            return [{name: row[index] for name, index in first.items()} for row in found]
        return [dict(zip(names, row, strict=True)) for row in found]


class SqliteStore(Store):
    """A sqlite file (WAL). Statements run one at a time (the store's lock) on the event loop's
    thread (``_SqliteDb``); another process's write transaction on the same file is waited for
    up to ``BUSY_TIMEOUT_S``.

    With ``idle_close`` (seconds) the connection is closed once nothing used it for that long,
    and opened again by the next statement: a connection holds about 140 KiB, which a node
    process simulating a thousand hosts, each with its store, should not keep for idle hosts.
    """

    dialect = "sqlite"

    def __init__(
        self, path: Path | str, migrations: Sequence[Step], *, idle_close: float | None = None
    ) -> None:
        super().__init__(Path(path).stem, migrations)
        self.path = Path(path)
        self.idle_close = idle_close
        self._db: _SqliteDb | None = None
        self._opened = False
        self._lock = asyncio.Lock()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def location(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        async with self._lock:
            await self._connect()
            self._opened = True
            self._close_when_idle()

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            connection.execute(f"PRAGMA {pragma}").close()
        self._db = _SqliteDb(connection)
        async with _immediate(self._db) as db:
            (row,) = await db.fetchall("PRAGMA user_version")
            await self.migrate(db, int(row["user_version"]), "PRAGMA user_version = {}")

    async def close(self) -> None:
        async with self._lock:
            self._opened = False
            await self._disconnect()
        await asyncio.gather(*self._closing)

    async def _disconnect(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._db is not None:
            db, self._db = self._db, None
            db.connection.close()

    def _close_when_idle(self) -> None:
        """(Re)start the idle countdown; called holding the lock, after each use."""
        if self.idle_close is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self.idle_close, self._idle)

    def _idle(self) -> None:
        self._idle_timer = None
        task = asyncio.create_task(self._close_idle(), name=f"close idle store {self.path}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_idle(self) -> None:
        async with self._lock:
            if self._idle_timer is None:  # nothing used it since the countdown ended
                await self._disconnect()

    @asynccontextmanager
    async def _using(self) -> AsyncIterator[_SqliteDb]:
        """The connection, holding the store's lock (opened again if an idle spell closed it)."""
        async with self._lock:
            if not self._opened:
                raise RuntimeError(f"store {self.path} is not open")
            if self._db is None:
                await self._connect()
            assert self._db is not None
            try:
                yield self._db
            finally:
                self._close_when_idle()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        async with self._using() as connected, _immediate(connected) as db:
            yield db

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._using() as db:
            return await db.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as db:
            await db.executemany(sql, rows)

    async def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]:
        async with self._using() as db:
            return await db._rows(sql, params)


@asynccontextmanager
async def _immediate(db: _SqliteDb) -> AsyncIterator[_SqliteDb]:
    """A ``BEGIN IMMEDIATE`` transaction on ``db``: committed on success, rolled back on error."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


@contextmanager
def _sqlite_constraints() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ConstraintViolation(str(exc)) from None


# --- PostgreSQL ---------------------------------------------------------------------------------

LOCK_SPACE = 0x41494F53
"""The first key of every store's advisory lock ("AIOS"); the second is the store's."""
POOL_SIZE = 4
"""Connections one process keeps to the database per store."""
STATEMENT_TIMEOUT = 15.0
"""Seconds a statement may take before the client gives up on it (a database out of reach)."""
IDLE_IN_TRANSACTION_MS = 5000
"""The database ends a session whose transaction waits this long for its next statement: a
process cut off mid-transaction (a partitioned controller) holds the store's lock that long at
most, and what it wrote is rolled back, not committed when it comes back."""

_COMPATIBLE = [
    "CREATE OR REPLACE AGGREGATE json_group_array(anyelement)"
    " (SFUNC = json_agg_transfn, STYPE = internal, FINALFUNC = json_agg_finalfn)",
    "CREATE OR REPLACE FUNCTION json_object(k1 text, v1 anyelement, k2 text, v2 anyelement) RETURNS json"
    " LANGUAGE sql IMMUTABLE AS $$ SELECT json_build_object(k1, v1, k2, v2) $$",
]
"""sqlite's JSON functions the stores use, given to PostgreSQL."""


class _PostgresDb(Db):
    dialect = "postgresql"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        text, arguments = _postgresql(sql, params)
        with _postgres_errors():
            status = await self.connection.execute(text, *arguments)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        batches = [_postgresql(sql, params) for params in rows]
        if batches:
            with _postgres_errors():
                await self.connection.executemany(batches[0][0], [arguments for _, arguments in batches])

    async def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]:
        text, arguments = _postgresql(sql, params)
        with _postgres_errors():
            return [_row(record) for record in await self.connection.fetch(text, *arguments)]


class PostgresStore(Store):
    """The schema ``name`` of a PostgreSQL database (asyncpg, a small pool per process)."""

    dialect = "postgresql"

    def __init__(self, dsn: str, name: str, migrations: Sequence[Step]) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"a store's name makes a schema: {name!r} is not a plain lower-case name")
        super().__init__(name, migrations)
        self.dsn = dsn
        self.lock_key = zlib.crc32(name.encode()) & 0x7FFFFFFF
        self._pool: asyncpg.Pool | None = None

    @property
    def location(self) -> str:
        where = urlsplit(self.dsn)
        host = where.hostname or parse_qs(where.query).get("host", [""])[0]
        return f"{host}:{where.port or 5432}{where.path} schema {self.name}"

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=POOL_SIZE,
            command_timeout=STATEMENT_TIMEOUT,
            reset=_keep_session,
            server_settings={
                "search_path": self.name,
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
            },
        )
        async with self.transaction() as db:
            await db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.name}")
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            found = await db.fetchone("SELECT version FROM schema_version")
            if found is None:
                await db.execute("INSERT INTO schema_version (version) VALUES (0)")
            for statement in _COMPATIBLE:
                await db.execute(statement)
            await self.migrate(db, found["version"] if found else 0, "UPDATE schema_version SET version = {}")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"store {self.name} is not open")
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        with _postgres_errors():
            connection = await self.pool.acquire()
        try:
            with _postgres_errors():  # one round trip
                await connection.execute(
                    f"BEGIN; SELECT pg_advisory_xact_lock({LOCK_SPACE}, {self.lock_key})"
                )
            try:
                yield _PostgresDb(connection)
            except BaseException:
                with contextlib.suppress(Exception):  # a connection already lost has rolled back
                    await connection.execute("ROLLBACK")
                raise
            with _postgres_errors():
                await connection.execute("COMMIT")
        finally:
            await self.pool.release(connection)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.transaction() as db:
            return await db.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as db:
            await db.executemany(sql, rows)

    async def _rows(self, sql: str, params: Params) -> list[dict[str, Any]]:
        if _writes(sql):
            async with self.transaction() as db:
                return await db._rows(sql, params)
        with _postgres_errors():
            async with self.pool.acquire() as connection:
                return await _PostgresDb(connection)._rows(sql, params)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: nothing (the stores leave no
    cursor, listener, setting or session lock behind, and asyncpg rolls back a transaction left
    open), which saves asyncpg's reset query, a round trip on every use."""


def _writes(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in {"INSERT", "UPDATE", "DELETE"}


@contextmanager
def _postgres_errors() -> Iterator[None]:
    """asyncpg's errors as the store's: a broken constraint, or a database out of reach (the
    connection lost, refused or timed out, the session ended by the server)."""
    import asyncpg

    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise ConstraintViolation(str(exc)) from None
    except (
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.IdleInTransactionSessionTimeoutError,
        asyncpg.OperatorInterventionError,
        OSError,
        TimeoutError,
    ) as exc:
        raise StoreUnavailable(f"the database did not answer: {type(exc).__name__}: {exc}") from None


def _row(record: asyncpg.Record) -> dict[str, Any]:
    """A row as sqlite gives it: no ``rowid`` unless asked by another name, sums as numbers."""
    row = {}
    for key, value in record.items():
        if key == "rowid":
            continue
        if type(value) is Decimal:
            value = int(value) if value == value.to_integral_value() else float(value)
        row[key] = value
    return row


def _postgresql(sql: str, params: Params) -> tuple[str, list[Any]]:
    """The statement in PostgreSQL's words and its arguments in ``$n`` order."""
    text, names = _translate(sql)
    if isinstance(params, Mapping):
        return text, [params[name] for name in names]
    return text, list(params)


_PARAMETER = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
_DDL_TYPES = [
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", re.I),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
]


@functools.lru_cache(maxsize=4096)
def _translate(sql: str) -> tuple[str, tuple[str, ...]]:
    """``?`` and ``:name`` made ``$n`` (the names in order), and a table's definition given
    sqlite's types and implicit ``rowid``."""
    names: list[str] = []
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        token = match.group(0)
        if token == "?":
            positional += 1
            return f"${positional}"
        name = match.group(1)
        if name is None:
            return token
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PARAMETER.sub(number, sql)
    head = text.lstrip()[:12].upper()
    if head.startswith(("CREATE TABLE", "ALTER TABLE")):
        for pattern, replacement in _DDL_TYPES:
            text = pattern.sub(replacement, text)
        if head.startswith("CREATE TABLE"):
            stripped = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", text.rstrip(), flags=re.I)
            if stripped == text.rstrip():
                end = text.rindex(")")
                text = text[:end] + ", rowid BIGINT GENERATED ALWAYS AS IDENTITY" + text[end:]
            else:
                text = stripped
    return text, tuple(names)


def to_json(value: Any) -> str:
    """Compact, keys sorted (orjson: the JSON columns are read and written on every request)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def from_json(text: str | None, default: Any = None) -> Any:
    return orjson.loads(text) if text else default
