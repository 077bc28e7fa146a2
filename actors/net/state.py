"""What the net actor's servants share: the bus and the store (``NetState``), who the caller
acts for, and the row writes every resource makes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.net.schema import Kind
from bus import Bus, Conflict, Forbidden, InvalidRequest, NotFound
from runtime.context import caller, sees_all
from runtime.events import publish_event
from runtime.stamps import utcnow
from runtime.store import ConstraintViolation, Db, Store

Db = Db
V = TypeVar("V", bound=Mapping[str, object])


@dataclass(frozen=True, slots=True)
class NetState:
    """The net actor's bus and store, and the reads every servant makes."""

    bus: Bus
    store: Store

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Db]:
        """A store transaction in which a constraint failure (the backstop) answers ``Conflict``."""
        try:
            async with self.store.transaction() as db:
                yield db
        except ConstraintViolation as exc:
            raise Conflict(f"Conflicting concurrent change: {exc}") from None

    async def load(
        self, kind: Kind[V], where: str, params: list[Any], db: Db | None = None, scope: str | None = None
    ) -> list[V]:
        """The records matching ``where`` (on the alias ``r``); with a ``scope``, only those that
        project sees."""
        if scope is not None:
            where, params = f"{where} AND (r.project_id = ? OR {kind.shared})", [*params, scope]
        sql = f"{kind.select} WHERE {where} ORDER BY r.rowid"
        rows = await db.fetchall(sql, params) if db is not None else await self.store.fetchall(sql, params)
        return [kind.view(row) for row in rows]

    async def get(
        self, kind: Kind[V], row_id: str, scope: str | None, db: Db | None = None, *, owned: bool = False
    ) -> V:
        """One record ``scope`` sees; ``owned``: one it may also change.

        :raises NotFound: none, or ``scope`` may not see it (no existence leak).
        :raises Forbidden: ``owned`` was asked of another project's shared network or its subnet.
        """
        found = await self.load(kind, "r.id = ?", [row_id], db, scope)
        if not found:
            raise NotFound(f"{kind.title} {row_id} could not be found.")
        if owned and scope is not None and found[0]["project_id"] != scope:
            raise Forbidden(
                f"{kind.title} {row_id} belongs to another project: only its owner may change it."
            )
        return found[0]

    async def announce(self, event_type: str, state: Mapping[str, Any]) -> None:
        """Publish the event ``<kind>.<change>`` of a resource (a port, router, security group)
        with ``state``, its new state (its last, when deleted), holding its ``id`` and ``project_id``."""
        kind = event_type.partition(".")[0]
        await publish_event(self.bus, kind, state["id"], state["project_id"], event_type, {**state})


def invalid(field: str, reason: str) -> InvalidRequest:
    """Neutron's "Invalid input for <field>. Reason: <reason>." error."""
    return InvalidRequest(f"Invalid input for {field}. Reason: {reason}.")


def scope() -> str | None:
    """The project the caller acts for; None when it sees every project (an admin, a service).

    :raises Forbidden: a member's token is scoped to no project.
    """
    ctx = caller()
    if sees_all(ctx):
        return None
    assert ctx is not None  # sees_all(None) is True
    if not ctx.project_id:
        raise Forbidden("This operation needs a project-scoped token.")
    return ctx.project_id


def caller_project() -> str:
    """The project a new resource of the caller belongs to ('' for a service acting for none)."""
    ctx = caller()
    return scope() or (ctx.project_id if ctx else None) or ""


def where(conditions: dict[str, Any]) -> tuple[str, list[Any]]:
    """``column = ?`` conditions joined by AND, leaving out the None values."""
    used = {column: value for column, value in conditions.items() if value is not None}
    return " AND ".join([f"{column} = ?" for column in used] or ["1 = 1"]), list(used.values())


async def insert(db: Db, table: str, row: dict[str, Any], unless: str | None = None) -> dict[str, Any] | None:
    """Insert ``row`` with its timestamps and answer it; with ``unless`` (a query on the row's
    named values), insert nothing and answer None when that query finds a row."""
    now = utcnow()
    row = {**row, "created_at": now, "updated_at": now}
    values = ", ".join(":" + column for column in row)
    condition = f" WHERE NOT EXISTS ({unless})" if unless else ""
    inserted = await db.execute(f"INSERT INTO {table} ({', '.join(row)}) SELECT {values}{condition}", row)
    return row if inserted else None


async def update(db: Db, table: str, row_id: str, changes: dict[str, Any]) -> None:
    """Set the changes that are not None, and ``updated_at``; bump ``revision_number``."""
    used = {column: value for column, value in changes.items() if value is not None}
    assignments = ", ".join(
        [
            *(f"{column} = :{column}" for column in [*used, "updated_at"]),
            "revision_number = revision_number + 1",
        ]
    )
    await db.execute(
        f"UPDATE {table} SET {assignments} WHERE id = :id", {**used, "updated_at": utcnow(), "id": row_id}
    )
