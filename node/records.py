"""What a node knows of its instances: its store, and the bookkeeping of the work in its hands.

The store (``<data>/nodes/<host>/node.sqlite``) keeps each domain's persistent XML and the
power state it should be in, so a node whose libvirt lost a domain (a restarted libvirtd with
the test driver, a reinstalled host) defines it again. Beside it, in memory: which domains are
this node's and their projects (several nodes may share one libvirtd), the request each
instance's work belongs to (its events carry that request id), one lock per instance (a build
and a delete of one instance never run at once) and the instances being worked on (the
heartbeat tells the conductor they make progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, TypedDict

from bus import current_request_id
from runtime.store import SqliteStore

MIGRATIONS = [
    """
    CREATE TABLE domains (
        uuid TEXT PRIMARY KEY, project_id TEXT NOT NULL, xml TEXT NOT NULL,
        desired_power TEXT NOT NULL DEFAULT 'running', created_at REAL NOT NULL);
    """,
]

Power = Literal["running", "shutoff"]
STORE_IDLE_CLOSE = 10.0
"""Seconds unused after which the store's connection is closed (a node process may simulate a
thousand hosts, each with its store; the next statement opens it again)."""


class DomainRow(TypedDict):
    uuid: str
    project_id: str
    xml: str
    """The persistent definition, as libvirt last had it."""
    desired_power: Power
    created_at: float


class Records:
    """The node's store of domains and its per-instance bookkeeping (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path, MIGRATIONS, idle_close=STORE_IDLE_CLOSE)
        self.projects: dict[str, str] = {}
        """This node's domains (stored, or built since it started) and their projects."""
        self.request_ids: dict[str, str] = {}
        """The request each instance's current work belongs to ("" for none)."""
        self.working: dict[str, int] = {}
        """Instances in this node's hands: how many tasks of each are running (never 0: deleted)."""
        self.arriving: set[str] = set()
        """Real guests a live migration is bringing here, prepared for (``Builder.prepare_incoming``)
        and not recorded on this host yet: no orphans."""
        self.copying: set[str] = set()
        """Stopped real guests whose disks a cold migration copies from here now, started paused
        for it (``LiveMigrator.copy_stopped``): their lifecycle events are not the conductor's."""
        self._locks: dict[str, asyncio.Lock] = {}

    async def open(self) -> None:
        await self.store.open()
        for row in await self.rows():
            self.projects[row["uuid"]] = row["project_id"]

    async def close(self) -> None:
        await self.store.close()

    # -- the store ---------------------------------------------------------------------------

    async def rows(self) -> list[DomainRow]:
        return await self.store.fetchall("SELECT * FROM domains", row=DomainRow)

    async def uuids(self) -> set[str]:
        return {row["uuid"] for row in await self.store.fetchall("SELECT uuid FROM domains")}

    async def stored_xml(self, instance_uuid: str) -> str | None:
        row = await self.store.fetchone(
            "SELECT * FROM domains WHERE uuid = ?", (instance_uuid,), row=DomainRow
        )
        return row["xml"] if row else None

    async def save(self, instance_uuid: str, project_id: str, xml: str) -> None:
        """A domain about to be defined: it should run."""
        await self.store.execute(
            "INSERT OR REPLACE INTO domains (uuid, project_id, xml, desired_power, created_at)"
            " VALUES (?, ?, ?, 'running', ?)",
            (instance_uuid, project_id, xml, time.time()),
        )
        self.projects[instance_uuid] = project_id

    async def set_xml(self, instance_uuid: str, xml: str) -> None:
        await self.store.execute("UPDATE domains SET xml = ? WHERE uuid = ?", (xml, instance_uuid))

    async def set_desired(self, instance_uuid: str, power: Power) -> None:
        await self.store.execute(
            "UPDATE domains SET desired_power = ? WHERE uuid = ?", (power, instance_uuid)
        )

    async def delete(self, instance_uuid: str) -> None:
        await self.store.execute("DELETE FROM domains WHERE uuid = ?", (instance_uuid,))

    # -- work in hand ------------------------------------------------------------------------

    def note_request(self, instance_uuid: str) -> None:
        """The instance's events from now on belong to the request being handled."""
        self.request_ids[instance_uuid] = current_request_id() or ""

    def lock(self, instance_uuid: str) -> asyncio.Lock:
        """The instance's lock: its build, delete and orphan removal never run at once."""
        lock = self._locks.get(instance_uuid)
        if lock is None:
            lock = self._locks[instance_uuid] = asyncio.Lock()
        return lock

    def forget_lock(self, instance_uuid: str) -> None:
        self._locks.pop(instance_uuid, None)

    @contextlib.asynccontextmanager
    async def working_on(self, instance_uuid: str) -> AsyncIterator[None]:
        """The instance is in this node's hands: its heartbeat tells the conductor so."""
        self.working[instance_uuid] = self.working.get(instance_uuid, 0) + 1
        try:
            yield
        finally:
            self.working[instance_uuid] -= 1
            if not self.working[instance_uuid]:
                del self.working[instance_uuid]
